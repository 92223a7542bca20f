"""LoRM closed-form merges of one LoRA factor with the other frozen and shared (spec sections 2 and 3).

dW = B @ A with B (d_out, r), A (r, d_in). Each round only one factor is trained (B in the first round of a
task, then alternating), so the server's least-squares merge of the layer responses is linear in the
trained factor and has the closed forms below. Float64 inside, result in the dtype of the client factors,
pseudo-inverses without ridge (official numerics, section 3). Grams are 1-D diagonals or full matrices,
already shrunk by the clients (see regmean.shrink).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .regmean import _as64, _check_factors, _check_grams, _regmean_core

__all__ = ["lorm_merge_A", "lorm_merge_B"]


def lorm_merge_A(As: Sequence[Tensor], grams: Sequence[Tensor], *, solver: str = "pinv") -> Tensor:
    """A-round merge (B frozen, shared):  A* = (sum_k A_k G_k) G^+,  G = sum_k G_k  (spec section 3).

    Zero gradient of sum_k ||B (A - A_k) X_k^T||^2 gives B^T B (A G - sum_k A_k G_k) = 0, and B cancels when
    B^T B is invertible; so this is RegMean applied to the A factors. Diagonal grams: the column-wise
    weighted average A*[:, j] = sum_k d_k[j] A_k[:, j] / sum_k d_k[j], 0 where sum_k d_k[j] == 0.
    solver "pinv" (default) is the official torch.pinverse semantics; "solve" uses the faster Cholesky
    solve with pinv fallback of regmean_merge (identical whenever the Gram sum is well conditioned).
    As are (r, d_in); the result has the promoted dtype of As.
    """
    return _regmean_core(As, grams, solver=solver, what="As", caller="lorm_merge_A")


def lorm_merge_B(Bs: Sequence[Tensor], A: Tensor, grams: Sequence[Tensor]) -> Tensor:
    """B-round merge (A frozen, shared):  B* = (sum_k B_k (A G_k A^T)) (A G A^T)^+  (spec section 3).

    Zero gradient of sum_k ||(B - B_k) A X_k^T||^2 gives B (A G A^T) = sum_k B_k A G_k A^T. Only r x r
    products are formed, C_k = A G_k A^T (diagonal grams: (A * d_k) @ A^T), never B_k A G_k (d_out x d_in);
    A G A^T is accumulated as sum_k C_k. The r x r pseudo-inverse gives the minimum-norm B when A is rank
    deficient. Bs are (d_out, r), A is (r, d_in); the result has the promoted dtype of Bs.
    """
    Bs, grams = list(Bs), list(grams)
    (d_out, r), dtype, device = _check_factors(Bs, "Bs")
    if not isinstance(A, Tensor) or A.ndim != 2 or A.shape[0] != r:
        got = tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__
        raise ValueError(f"A: expected shape ({r}, d_in) matching Bs of shape ({d_out}, {r}), got {got}")
    diag = _check_grams(grams, A.shape[1], n=len(Bs))
    A64 = _as64(A, device)
    M = torch.zeros(d_out, r, dtype=torch.float64, device=device)
    C = torch.zeros(r, r, dtype=torch.float64, device=device)
    for B, g in zip(Bs, grams):
        g64 = _as64(g, device)
        AG = A64 * g64 if diag else A64 @ g64  # (r, d_in)
        Ck = AG @ A64.mT  # (r, r)
        C.add_(Ck)
        M.add_(_as64(B, device) @ Ck)
    if not bool(torch.isfinite(C).all()):
        raise ValueError("grams: A G A^T contains non-finite values")
    C = 0.5 * (C + C.mT)
    return (M @ torch.linalg.pinv(C, hermitian=True)).to(dtype)
