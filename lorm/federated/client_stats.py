"""Client-side statistics of the baselines: diagonal Fisher information and per-class feature moments.

Both are computed in eval mode (no dropout) on un-augmented inputs — normalised like the training inputs, or
raw in [0, 1] with ``raw=True`` (spec Q13: the official CCVR/FedProto/FisherAvg use raw images).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lorm.data.tensors import EncodedSplit, iterate_batches
from lorm.federated.training import Runtime


def diagonal_fisher(model: torch.nn.Module, data: EncodedSplit, indices, params: dict[str, torch.nn.Parameter],
                    class_range: tuple[int, int], runtime: Runtime, raw: bool = False) -> dict[str, torch.Tensor]:
    """sum_i p(y_i|x_i) * (d log p(y_i|x_i) / d theta)^2 over the client's samples, per parameter (fp32).

    The likelihood is the training objective's: softmax over the logits of ``class_range``. Squared gradients
    are per sample (one backward each; the square of a batch gradient is not the Fisher), weighted by the
    predicted probability of the true class as in the official EWC. The *sum* over samples is returned, so a
    client's Fisher grows with its data (FisherAvg with per-sample-equal Fishers = sample-weighted FedAvg)."""
    lo, hi = class_range
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for i in np.asarray(indices, dtype=np.int64):  # one sample at a time: no padding beyond its own length
        inputs, labels = data.batch(torch.tensor([i]), runtime.device, raw=raw)
        model.zero_grad(set_to_none=True)
        with runtime.autocast():
            log_p = F.log_softmax(model(inputs)[:, lo:hi].float(), dim=1)[0, labels[0] - lo]
        log_p.backward()
        weight = float(log_p.detach().exp())
        for n, p in params.items():
            if p.grad is not None:
                fisher[n].addcmul_(p.grad.float(), p.grad.float(), value=weight)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher


@torch.no_grad()
def class_feature_moments(model: torch.nn.Module, data: EncodedSplit, indices, runtime: Runtime,
                          raw: bool = False) -> dict[str, torch.Tensor]:
    """Per-class count, mean and (population) variance of the pooled features over the client's samples.

    Returns {"classes": (m,) model output indices, "counts": (m,), "mean": (m, d), "var": (m, d)} for the m
    classes present; float64 sums, float32 results."""
    model.eval()
    indices = np.asarray(indices, dtype=np.int64)
    ordered = indices[data.length_order(indices)]
    sums, squares, counts = {}, {}, {}
    for idx in iterate_batches(ordered, runtime.eval_batch_size):
        inputs, labels = data.batch(idx, runtime.device, raw=raw)
        with runtime.autocast():
            feats = model.features(inputs).double()
        for c in labels.unique().tolist():
            f = feats[labels == c]
            sums[c] = sums.get(c, 0) + f.sum(0)
            squares[c] = squares.get(c, 0) + (f * f).sum(0)
            counts[c] = counts.get(c, 0) + len(f)
    classes = sorted(counts)
    n = torch.tensor([counts[c] for c in classes], dtype=torch.float64, device=runtime.device)
    mean = torch.stack([sums[c] for c in classes]) / n[:, None]
    var = (torch.stack([squares[c] for c in classes]) / n[:, None] - mean * mean).clamp_min(0)
    return {"classes": torch.tensor(classes, dtype=torch.long), "counts": n.float(), "mean": mean.float(),
            "var": var.float()}
