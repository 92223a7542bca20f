"""FedAvg with full fine-tuning: every parameter trains locally; the server takes the sample-weighted average
of every parameter every round (fed-mammoth's ``fedavg``, spec section 13). The base of the other baselines."""

from lorm.methods.full import FederatedFull


class FedAvg(FederatedFull):
    name = "fedavg"
