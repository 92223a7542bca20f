"""FedAvg: weighted mean of client tensors (spec section 6: the head bias; section 13: FedAvg baselines).

Pure tensor arithmetic: float64 inside, result cast back to the inputs' dtype.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["fedavg"]


def _normalised_weights(weights: Sequence[float] | Tensor | None, n: int) -> list[float]:
    """Weights as python floats summing to 1; ValueError on bad input (what = `weights`)."""
    if weights is None:
        return [1.0 / n] * n
    if isinstance(weights, Tensor):
        if weights.ndim != 1:
            raise ValueError(f"weights: expected a 1-D tensor, got shape {tuple(weights.shape)}")
        w = [float(x) for x in weights.detach().to("cpu", torch.float64)]
    else:
        w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"weights: expected {n} weights (one per tensor), got {len(w)}")
    if not all(math.isfinite(x) for x in w):
        raise ValueError(f"weights: must be finite, got {w}")
    if any(x < 0 for x in w):
        raise ValueError(f"weights: must be non-negative, got {w}")
    total = math.fsum(w)
    if not total > 0:
        raise ValueError(f"weights: total weight must be positive, got {total}")
    return [x / total for x in w]


def fedavg(tensors: Sequence[Tensor], weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """Weighted mean  sum_k w_k T_k / sum_k w_k  (weights normalised to sum 1; None = uniform).

    FedAvg (McMahan et al.); LoRM uses it for the head bias with w_k = n_k, the local sample count
    (spec section 6). Accumulated in float64; returned in the promoted dtype of `tensors`.

    Raises ValueError on an empty list, mismatched shapes, a weight count different from the tensor
    count, negative or non-finite weights, or a non-positive total weight.
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("tensors: empty list, nothing to average")
    shape = tensors[0].shape
    for k, t in enumerate(tensors):
        if t.shape != shape:
            raise ValueError(
                f"tensors: shape mismatch, tensor 0 has shape {tuple(shape)} but tensor {k} has {tuple(t.shape)}"
            )
    w = _normalised_weights(weights, len(tensors))
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device
    out = torch.zeros(shape, dtype=torch.float64, device=device)
    for wk, t in zip(w, tensors):
        out.add_(t.detach().to(device=device, dtype=torch.float64), alpha=wk)
    return out.to(dtype)
