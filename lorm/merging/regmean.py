"""RegMean merging: shrinkage of Gram matrices, the closed-form merge, and the classifier-head merge.

Spec sections 1 (shrinkage R_alpha), 2 (objective), 3 (numerics), 6 (head), 15 Q10 (solve with pinv
fallback). Pure linear algebra: torch tensors in, tensors out, float64 inside, results cast back to the
dtype of the merged parameters. No nn.Module, no I/O.

A "gram" for a layer is either a 1-D tensor (d_in,) of diagonal energies sum_tokens x_j^2 ("diagonal
statistics") or a 2-D (d_in, d_in) matrix X^T X ("full statistics"). A list of grams passed to one function
is uniformly one kind; the kind is detected from ndim and diagonals never get expanded to d_in x d_in.

The private helpers below (`_check_*`, `_sum_grams64`, `_right_solve`, ...) are shared by lorm.py and
accumulate.py.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from .fedavg import fedavg

__all__ = ["SingularGramWarning", "shrink", "sum_grams", "regmean_merge", "merge_head"]

_EPS64 = torch.finfo(torch.float64).eps
_SOLVERS = ("solve", "pinv")


class SingularGramWarning(RuntimeWarning):
    """A Gram sum was singular to working precision, so a "solve" merge fell back to the pseudo-inverse."""


# --------------------------------------------------------------------------------------------------
# validation and shared numerics (private)


def _check_solver(solver: str) -> None:
    if solver not in _SOLVERS:
        raise ValueError(f"solver: expected one of {_SOLVERS}, got {solver!r}")


def _check_factors(tensors: Sequence[Tensor], what: str) -> tuple[torch.Size, torch.dtype, torch.device]:
    """Non-empty list of equally shaped floating 2-D tensors -> (shape, promoted dtype, device of the first)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{what}: empty list, nothing to merge")
    dtype = None
    for k, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise ValueError(f"{what}[{k}]: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{what}[{k}]: expected a 2-D tensor, got shape {tuple(t.shape)}")
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"{what}: shape mismatch, {what}[0] has shape {tuple(tensors[0].shape)} "
                f"but {what}[{k}] has {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{what}[{k}]: expected a floating-point tensor, got {t.dtype}")
        dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return tensors[0].shape, dtype, tensors[0].device


def _check_gram(gram: Tensor, d_in: int | None, what: str) -> bool:
    """Validate one gram; True if it is diagonal (1-D). d_in=None skips the size check."""
    if not isinstance(gram, Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor, got {type(gram).__name__}")
    if gram.ndim == 1:
        if d_in is not None and gram.shape[0] != d_in:
            raise ValueError(f"{what}: diagonal gram of length {gram.shape[0]} does not match d_in = {d_in}")
        if bool((gram < 0).any()):
            raise ValueError(f"{what}: diagonal energies must be non-negative")
        return True
    if gram.ndim == 2:
        if gram.shape[0] != gram.shape[1]:
            raise ValueError(f"{what}: full gram must be square, got shape {tuple(gram.shape)}")
        if d_in is not None and gram.shape[0] != d_in:
            raise ValueError(f"{what}: full gram of size {gram.shape[0]} does not match d_in = {d_in}")
        return False
    raise ValueError(f"{what}: expected a 1-D (diagonal) or 2-D (full) gram, got shape {tuple(gram.shape)}")


def _check_grams(grams: Sequence[Tensor], d_in: int | None, n: int | None = None, what: str = "grams") -> bool:
    """Validate a uniform list of grams (optionally of length n); True if diagonal."""
    grams = list(grams)
    if not grams:
        raise ValueError(f"{what}: empty list")
    if n is not None and len(grams) != n:
        raise ValueError(f"{what}: expected {n} grams (one per client), got {len(grams)}")
    kinds = {_check_gram(g, d_in, f"{what}[{k}]") for k, g in enumerate(grams)}
    if len(kinds) != 1:
        raise ValueError(f"{what}: mixes diagonal (1-D) and full (2-D) grams; use one kind per call")
    if d_in is None and len({tuple(g.shape) for g in grams}) != 1:
        raise ValueError(f"{what}: shape mismatch between grams")
    return kinds.pop()


def _as64(t: Tensor, device: torch.device) -> Tensor:
    return t.detach().to(device=device, dtype=torch.float64)


def _sum_grams64(grams: Sequence[Tensor], device: torch.device, what: str = "grams") -> Tensor:
    total = None
    for g in grams:
        g64 = _as64(g, device)
        total = g64.clone() if total is None else total.add_(g64)
    if not bool(torch.isfinite(total).all()):
        raise ValueError(f"{what}: the gram sum contains non-finite values")
    return total


def _gram_weighted_sum(Ws: Sequence[Tensor], grams: Sequence[Tensor], diag: bool, device: torch.device) -> Tensor:
    """sum_k W_k G_k in float64 (diagonal: column scaling W_k * d_k, no d_in x d_in matrix)."""
    M = None
    for W, g in zip(Ws, grams):
        W64, g64 = _as64(W, device), _as64(g, device)
        term = W64 * g64 if diag else W64 @ g64
        M = term if M is None else M.add_(term)
    return M


def _cholesky_right_solve(M: Tensor, G: Tensor) -> Tensor | None:
    """M G^{-1} for symmetric positive definite G via Cholesky; None if G is singular to working precision.

    "Singular" = Cholesky fails, or its smallest pivot L_ii^2 (an upper bound on lambda_min, so the test
    max(G_ii) / min(L_ii^2) is a lower bound on cond(G)) is below d * eps * max_i G_ii -- the same relative
    cut-off torch.linalg.pinv uses by default. Catching numerically singular sums matters: a plain LU
    solve on a rank-deficient X^T X returns a finite but huge-norm solution without complaint.
    """
    d = G.shape[0]
    gmax = G.diagonal().max()
    if not bool(gmax > 0):
        return None
    L, info = torch.linalg.cholesky_ex(G)
    if int(info) != 0:
        return None
    if bool(L.diagonal().square().min() <= d * _EPS64 * gmax):
        return None
    X = torch.cholesky_solve(M.mT, L).mT  # solve the transposed system G X^T = M^T
    if not bool(torch.isfinite(X).all()):
        return None
    return X


def _right_solve(M: Tensor, G: Tensor, *, solver: str, caller: str, stacklevel: int = 3) -> Tensor:
    """M G^+ (solver "pinv") or M G^{-1} with pinv fallback and SingularGramWarning (solver "solve").

    M (m, d) and G ((d,) diagonal or (d, d) symmetric PSD) are float64. Diagonal G: column j of M divided
    by G[j], and 0 where G[j] == 0 (pseudo-inverse semantics; the zero columns are exactly the features
    with no energy on any client, where M is 0 too).
    """
    if G.ndim == 1:
        pos = G > 0
        if solver == "solve" and not bool(pos.all()):
            n_zero = int((~pos).sum())
            warnings.warn(
                f"{caller}: diagonal gram sum is singular ({n_zero} of {G.shape[0]} input features have zero "
                "energy); falling back to the pseudo-inverse (those columns are set to 0)",
                SingularGramWarning,
                stacklevel=stacklevel,
            )
        out = M / torch.where(pos, G, torch.ones_like(G))
        if not bool(pos.all()):
            out.masked_fill_(~pos, 0.0)  # broadcast over rows: columns with zero energy
        return out
    G = 0.5 * (G + G.mT)  # exact symmetry for Cholesky / eigh (both read one triangle)
    if solver == "solve":
        X = _cholesky_right_solve(M, G)
        if X is not None:
            return X
        warnings.warn(
            f"{caller}: gram sum ({G.shape[0]}x{G.shape[0]}) is singular to working precision; "
            "falling back to the pseudo-inverse (torch.linalg.pinv)",
            SingularGramWarning,
            stacklevel=stacklevel,
        )
    return M @ torch.linalg.pinv(G, hermitian=True)


def _regmean_core(Ws: Sequence[Tensor], grams: Sequence[Tensor], *, solver: str, what: str, caller: str) -> Tensor:
    _check_solver(solver)
    Ws, grams = list(Ws), list(grams)
    shape, dtype, device = _check_factors(Ws, what)
    diag = _check_grams(grams, shape[1], n=len(Ws))
    M = _gram_weighted_sum(Ws, grams, diag, device)
    G = _sum_grams64(grams, device)
    return _right_solve(M, G, solver=solver, caller=caller, stacklevel=4).to(dtype)


# --------------------------------------------------------------------------------------------------
# public API


def shrink(gram: Tensor, alpha: float, *, as_diagonal: bool = False) -> Tensor:
    """RegMean shrinkage R_alpha(G) = alpha * G + (1 - alpha) * Diag(G)  (spec section 1).

    Scales the off-diagonal entries by alpha and keeps the diagonal exactly: alpha = 1 is the full Gram,
    alpha = 0 keeps only the per-feature energies (what every README run uses for the backbone, section 4).
    A full gram keeps its (d, d) shape unless `as_diagonal=True` (allowed only for alpha == 0), which
    returns the 1-D diagonal. A 1-D (diagonal) gram is already shrunk for every alpha and is returned
    unchanged. Computed in float64, returned in the gram's dtype.
    Raises ValueError unless 0 <= alpha <= 1.
    """
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha: must satisfy 0 <= alpha <= 1, got {alpha!r}")
    if _check_gram(gram, None, "gram"):
        return gram
    if as_diagonal:
        if a != 0.0:
            raise ValueError(
                f"as_diagonal=True needs alpha == 0 (got alpha = {alpha!r}): only then is R_alpha(G) diagonal"
            )
        return gram.diagonal().clone()
    g64 = gram.detach().to(torch.float64)
    out = g64 * a
    out.diagonal().copy_(g64.diagonal())  # alpha*G_jj + (1-alpha)*G_jj = G_jj, kept exact
    return out.to(gram.dtype)


def sum_grams(grams: Sequence[Tensor]) -> Tensor:
    """G = sum_k G_k in float64 (spec sections 1 and 7: the Gram sum every merge divides by).

    Diagonal grams sum to a (d_in,) vector, full grams to (d_in, d_in). Raises ValueError on an empty list,
    mixed kinds, mismatched sizes or a non-finite sum.
    """
    grams = list(grams)
    _check_grams(grams, None)
    return _sum_grams64(grams, grams[0].device)


def regmean_merge(Ws: Sequence[Tensor], grams: Sequence[Tensor], *, solver: str = "solve") -> Tensor:
    """RegMean  W* = (sum_k W_k G_k)(sum_k G_k)^{-1}  (spec sections 2, 6; Jin et al. 2023).

    The minimiser of sum_k ||W X_k^T - W_k X_k^T||_F^2 given G_k = X_k^T X_k. Ws are (d_out, d_in).
    solver "solve": float64 Cholesky solve of the transposed system G W*^T = (sum_k W_k G_k)^T (no explicit
    inverse); if the sum is singular to working precision (see `_cholesky_right_solve`) it falls back to
    the pseudo-inverse and emits SingularGramWarning (spec section 15, Q10). solver "pinv": always
    (sum_k W_k G_k) G^+ (the minimum-norm minimiser). Diagonal grams: column-wise weighted average
    W*[:, j] = sum_k d_k[j] W_k[:, j] / sum_k d_k[j], 0 where the total energy is 0 (with a warning under
    solver "solve"). Result in the promoted dtype of Ws.
    """
    return _regmean_core(Ws, grams, solver=solver, what="Ws", caller="regmean_merge")


def merge_head(
    Hs: Sequence[Tensor],
    bs: Sequence[Tensor],
    grams: Sequence[Tensor],
    n_samples: Sequence[float] | Tensor,
) -> tuple[Tensor, Tensor]:
    """Server merge of the classifier head (spec section 6): H by RegMean, b by sample-weighted FedAvg.

    H* = regmean_merge(Hs, grams, solver="solve") (pinv fallback with a warning); the grams are the
    clients' already shrunk (alpha_head) Grams of the head input. b* = sum_k n_k b_k / sum_k n_k.
    Rows of H (and entries of b) that are identical on all clients -- old and future classes -- are
    returned bit-exactly: RegMean maps them to themselves in exact arithmetic (W_i G G^{-1} = W_i), and
    copying them avoids rounding drift over rounds and, under the pinv fallback, their projection onto
    the range of the current task's Gram.
    """
    Hs, bs = list(Hs), list(bs)
    shape, _, _ = _check_factors(Hs, "Hs")
    if len(bs) != len(Hs):
        raise ValueError(f"bs: expected {len(Hs)} biases (one per client), got {len(bs)}")
    for k, b in enumerate(bs):
        if not isinstance(b, Tensor) or tuple(b.shape) != (shape[0],):
            got = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"bs[{k}]: expected shape ({shape[0]},), got {got}")
    n = len(n_samples)
    if n != len(Hs):
        raise ValueError(f"n_samples: expected {len(Hs)} counts (one per client), got {n}")
    H = _regmean_core(Hs, grams, solver="solve", what="Hs", caller="merge_head")
    b = fedavg(bs, n_samples)
    device = H.device
    H_stack = torch.stack([h.detach().to(device) for h in Hs])
    same_rows = (H_stack == H_stack[0]).all(dim=2).all(dim=0)
    H[same_rows] = H_stack[0][same_rows].to(H.dtype)
    b_stack = torch.stack([v.detach().to(b.device) for v in bs])
    same_b = (b_stack == b_stack[0]).all(dim=0)
    b[same_b] = b_stack[0][same_b].to(b.dtype)
    return H, b
