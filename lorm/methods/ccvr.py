"""CCVR: FedAvg with full fine-tuning + classifier calibration with virtual representations (Luo et al. 2021;
spec section 13). After every round's FedAvg the clients send per-class feature mean and diagonal variance of
the new global model on their task data; the server pools them, samples ``ccvr.virtual_per_class`` features per
class of the current task from N(mu_c, diag sigma_c^2) and retrains the head on them (SGD with momentum, cosine
schedule, logit-normalised cross-entropy on the current task's logits). Only the head changes.

The statistics exchange needs the merged model on the clients, so it is a second download per round (counted
under ``calibration``). The official code computes the features on raw images (quirk Q13)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorm.federated.client_stats import class_feature_moments
from lorm.federated.training import generator
from lorm.merging import pool_class_moments
from lorm.methods.full import FederatedFull, RunContext


def logit_norm_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """LogitNorm cross-entropy (Wei et al. 2022): CE of logits / (temperature * ||logits||)."""
    norms = logits.norm(dim=1, keepdim=True).clamp_min(1e-7)
    return F.cross_entropy(logits / (norms * temperature), labels)


def sample_virtual_features(pooled: dict, per_class: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` draws from N(mean_c, diag var_c) for every pooled class; (features, class indices)."""
    mean, std = pooled["mean"], pooled["var"].sqrt()
    noise = torch.randn((len(mean), per_class, mean.shape[1]), generator=gen)
    feats = mean[:, None, :] + noise * std[:, None, :]
    labels = pooled["classes"][:, None].expand(-1, per_class)
    return feats.reshape(-1, mean.shape[1]), labels.reshape(-1)


class CCVR(FederatedFull):
    name = "ccvr"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.cfg = ctx.cfg["ccvr"]

    def local_lr(self) -> float:
        return self.cfg["local_lr"] if self.cfg["local_lr"] is not None else self.lr

    def after_merge(self, task: int, rnd: int) -> None:
        ctx = self.ctx
        self.load_global()
        moments = []
        for client, indices in enumerate(ctx.client_indices[task]):
            ctx.ledger.download({"params": self.global_params}, kind="calibration")
            with ctx.timers("statistics"):
                m = class_feature_moments(self.model, ctx.train, indices, ctx.runtime, raw=self.raw_stats)
            ctx.ledger.upload(m, kind="calibration")
            moments.append(m)
        with ctx.timers("merge"):
            weight, bias = self.calibrate_head(pool_class_moments(moments), task, rnd)
            self.global_params["head.weight"], self.global_params["head.bias"] = weight, bias

    def calibrate_head(self, pooled: dict, task: int, rnd: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train a copy of the global head on virtual features of the current task's classes."""
        cfg, device = self.cfg, self.ctx.runtime.device
        lo, hi = self.ctx.task_ranges[task]
        gen = generator(self.ctx.seed, 8, task, rnd)
        feats, labels = sample_virtual_features(pooled, cfg["virtual_per_class"], gen)
        feats, labels = feats.to(device), labels.to(device)
        head = torch.nn.Linear(feats.shape[1], self.global_params["head.weight"].shape[0]).to(device)
        with torch.no_grad():
            head.weight.copy_(self.global_params["head.weight"])
            head.bias.copy_(self.global_params["head.bias"])
        optimizer = torch.optim.SGD(head.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
        for _ in range(cfg["epochs"]):
            for idx in torch.randperm(len(labels), generator=gen).split(cfg["batch_size"]):
                idx = idx.to(device)
                loss = logit_norm_loss(head(feats[idx])[:, lo:hi], labels[idx] - lo, cfg["temperature"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
        return head.weight.detach().clone(), head.bias.detach().clone()
