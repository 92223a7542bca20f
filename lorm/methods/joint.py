"""Joint training (upper bound): the same LoRA model trained centrally on all classes at once.

The simulator presents it as one task holding every class and one client holding all training data, so it
runs through the same training loop; nothing is communicated."""

from lorm.methods.fedavg_lora import FedAvgLoRA


class Joint(FedAvgLoRA):
    name = "joint"
    federated = False
