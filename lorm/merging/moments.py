"""Pooling per-class feature moments of several clients (CCVR, FedProto): exact, from counts and sums."""

from __future__ import annotations

from typing import Sequence

import torch


def pool_class_moments(moments: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Global per-class count, mean and population variance from clients' {"classes", "counts", "mean", "var"}.

    mean_c = sum_k n_kc mu_kc / N_c and var_c = sum_k n_kc (var_kc + mu_kc^2) / N_c - mean_c^2 (float64), i.e.
    the moments of the union of the clients' features. Same format as the inputs, classes sorted; without
    "var" in every input (prototypes only) the result has no "var" either."""
    count, first, second = {}, {}, {}
    with_var = all("var" in m for m in moments)
    for m in moments:
        for j, c in enumerate(m["classes"].tolist()):
            n = float(m["counts"][j])
            mu = m["mean"][j].double()
            count[c] = count.get(c, 0.0) + n
            first[c] = first.get(c, 0) + n * mu
            if with_var:
                second[c] = second.get(c, 0) + n * (m["var"][j].double() + mu * mu)
    if not count:
        raise ValueError("pool_class_moments: no class statistics given")
    classes = sorted(count)
    n = torch.tensor([count[c] for c in classes], dtype=torch.float64)
    mean = torch.stack([first[c].cpu() for c in classes]) / n[:, None]
    out = {"classes": torch.tensor(classes, dtype=torch.long), "counts": n.float(), "mean": mean.float()}
    if with_var:
        out["var"] = (torch.stack([second[c].cpu() for c in classes]) / n[:, None] - mean * mean).clamp_min(0).float()
    return out
