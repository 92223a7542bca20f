"""FedProto: FedAvg + lambda * MSE between a sample's features and the global prototype of its class
(Tan et al. 2022; spec section 13). After local training each client sends the feature mean and count of every
class of the current task it holds; the server's prototypes are their sample-weighted means (= the class means
of the union) and are broadcast with the next round, so the first round of a task trains without the term.
The official code averages models uniformly (quirk Q14, ``fedproto.uniform_avg``) and computes prototypes on
raw images (quirk Q13)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorm.federated.client_stats import class_feature_moments
from lorm.merging import pool_class_moments
from lorm.methods.full import FederatedFull, RunContext


class FedProto(FederatedFull):
    name = "fedproto"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        cfg = ctx.cfg["fedproto"]
        self.lam, self.uniform = cfg["lambda"], cfg["uniform_avg"]
        self.prototypes: dict[str, torch.Tensor] | None = None  # {"classes", "counts", "mean"} of the current task

    def begin_task(self, task: int) -> None:
        self.prototypes = None  # prototypes of the current task's classes only

    def model_weights(self, uploads: list[dict]) -> list[float]:
        return [1.0] * len(uploads) if self.uniform else super().model_weights(uploads)

    def broadcast(self, task: int, rnd: int) -> dict:
        state = super().broadcast(task, rnd)
        if self.prototypes is not None:
            state["prototypes"] = {"classes": self.prototypes["classes"], "mean": self.prototypes["mean"]}
        return state

    def regulariser(self, task: int, rnd: int):
        if self.prototypes is None:
            return None
        device = self.ctx.runtime.device
        num_classes = self.global_params["head.bias"].shape[0]
        table = torch.zeros(num_classes, self.prototypes["mean"].shape[1], device=device)
        known = torch.zeros(num_classes, dtype=torch.bool, device=device)
        classes = self.prototypes["classes"].to(device)
        table[classes], known[classes] = self.prototypes["mean"].to(device), True

        def loss(*, labels, features, **_):
            sel = known[labels]
            if not bool(sel.any()):
                return features.new_zeros(())
            return self.lam * F.mse_loss(features[sel].float(), table[labels[sel]])

        return loss

    def client_statistics(self, client: int, task: int, rnd: int, indices) -> dict:
        m = class_feature_moments(self.model, self.ctx.train, indices, self.ctx.runtime, raw=self.raw_stats)
        return {"prototypes": {"classes": m["classes"], "counts": m["counts"], "mean": m["mean"]}}

    def merge(self, task: int, rnd: int, uploads: list[dict]):
        self.prototypes = pool_class_moments([u["prototypes"] for u in uploads])
        return super().merge(task, rnd, uploads)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "prototypes": self.prototypes}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prototypes = state["prototypes"]
