"""Fisher-weighted averaging (FisherAvg; Matena & Raffel 2022): theta = sum_k F_k theta_k / sum_k F_k."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .fedavg import fedavg


def fisher_merge(params: Sequence[Tensor], fishers: Sequence[Tensor],
                 fallback_weights: Sequence[float] | None = None) -> Tensor:
    """Element-wise Fisher-weighted mean of same-shape tensors, in float64, returned in the dtype of params.

    Entries whose Fisher is zero on every client (parameters no client's loss touches, e.g. head rows of
    other tasks' classes) carry no information: they get the ``fallback_weights`` FedAvg (uniform if None),
    which leaves entries identical on all clients unchanged."""
    params, fishers = list(params), list(fishers)
    if not params or len(params) != len(fishers):
        raise ValueError(f"fisher_merge: need one Fisher per tensor, got {len(params)} tensors, {len(fishers)} Fishers")
    shape = params[0].shape
    for i, (p, f) in enumerate(zip(params, fishers)):
        if p.shape != shape or f.shape != shape:
            raise ValueError(f"fisher_merge: client {i} has shape {tuple(p.shape)} / Fisher {tuple(f.shape)}, "
                             f"expected {tuple(shape)}")
        if bool((f < 0).any()):
            raise ValueError(f"fisher_merge: client {i} has negative Fisher entries")
    total = torch.zeros(shape, dtype=torch.float64, device=params[0].device)
    weighted = torch.zeros_like(total)
    for p, f in zip(params, fishers):
        f64 = f.to(total)
        total += f64
        weighted += f64 * p.to(total)
    fallback = fedavg(params, fallback_weights).to(total)
    informed = total > 0
    merged = torch.where(informed, weighted / torch.where(informed, total, torch.ones_like(total)), fallback)
    return merged.to(params[0].dtype)
