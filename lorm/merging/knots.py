"""KnOTS: align LoRA task updates through one shared SVD per layer, then merge the aligned parts
(Stoica et al., ICLR 2025; KnOTS spec sections 3, 5, 6, 11).

Per layer, with dW_i = B_i A_i (O x I) for models i = 1..n:
    M = [dW_1 ... dW_n] (O x nI, column-wise),  M = U S [V_1^T ... V_n^T]  (thin SVD, s > eps kept),
    R_i = S V_i^T = U^T dW_i  (r x I),   dW_merged = U . Merge({R_i}).
The R_i of all layers are flattened per model (sorted layer names) and merged by task_merging, so TIES'
top-K trim and sign election, and DARE's masks, act on the aligned coordinates. Why it helps: LoRA updates
of different tasks use unrelated bases; in the shared basis U the same direction is the same coordinate
for every model, so trimming and sign votes compare like with like. Linear merges are unchanged:
KnOTS-TA is exactly TA, because U U^T dW_i = dW_i (spec section 5).

Three exactly equivalent ways to get U and the R_i (spec section 6), all float64:
- 'dense': thin SVD of M (the official implementation; the test oracle; O(min(O, nI)^2 max(O, nI))).
- 'qr': QR of B_cat = [B_1 ... B_n] and of every A_i^T, SVD of a small (sum k_i)-sized core; never forms
  M or any dW_i. Cheapest when sum_i k_i < O.
- 'gram': eigendecomposition of G = sum_i B_i (A_i A_i^T) B_i^T (O x O, accumulated model by model),
  s = sqrt(lambda), R_i = (U^T B_i) A_i. Cost independent of n beyond the accumulation; for sum k_i >= O.
'auto' picks 'qr' if sum_i k_i < O, else 'gram'. U is determined up to the sign of each column (and the
R_i rows with it); every merge here is invariant to those signs (spec section 5).

The LoRA scale alpha / k is not applied here: pass B_i already multiplied by it (spec K1; a no-op in the
paper's alpha = k runs). Pass B_i A_i - B_0 A_0 differences as factors of the difference if the common
initialisation is not B_0 = 0.
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import torch
from torch import Tensor

from .task_merging import merge_deltas

__all__ = ["PATHS", "auto_path", "knots_align", "knots_align_dense", "knots_merge", "knots_merge_aligned"]

PATHS = ("auto", "dense", "qr", "gram")
F64 = torch.float64
_EPS64 = torch.finfo(F64).eps


# --------------------------------------------------------------------------------------------------
# validation (private)


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(float(eps)) or eps < 0:
        raise ValueError(f"eps: expected a finite singular-value threshold >= 0, got {eps!r}")
    return float(eps)


def _check_lora(Bs: Sequence[Tensor], As: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], int, int]:
    """Validate the factors of one layer -> (Bs, As, O, I); ranks may differ between models."""
    Bs, As = list(Bs), list(As)
    if not Bs:
        raise ValueError("Bs: empty list, nothing to align")
    if len(As) != len(Bs):
        raise ValueError(f"As: expected {len(Bs)} factors (one per model, like Bs), got {len(As)}")
    O = I = None
    for i, (B, A) in enumerate(zip(Bs, As)):
        for t, what in ((B, f"Bs[{i}]"), (A, f"As[{i}]")):
            if not isinstance(t, Tensor):
                raise ValueError(f"{what}: expected a torch.Tensor, got {type(t).__name__}")
            if t.ndim != 2:
                raise ValueError(f"{what}: expected a 2-D tensor, got shape {tuple(t.shape)}")
            if not t.is_floating_point():
                raise ValueError(f"{what}: expected a floating-point tensor, got {t.dtype}")
        if B.shape[1] != A.shape[0]:
            raise ValueError(
                f"Bs[{i}] / As[{i}]: rank mismatch, B is {tuple(B.shape)} (O x k) but A is {tuple(A.shape)} (k x I)"
            )
        if O is None:
            O, I = B.shape[0], A.shape[1]
        elif B.shape[0] != O:
            raise ValueError(f"Bs[{i}]: out_features {B.shape[0]} differs from Bs[0]'s {O}")
        elif A.shape[1] != I:
            raise ValueError(f"As[{i}]: in_features {A.shape[1]} differs from As[0]'s {I}")
    return Bs, As, O, I


def _check_dense(deltas: Sequence[Tensor]) -> list[Tensor]:
    deltas = list(deltas)
    if not deltas:
        raise ValueError("deltas: empty list, nothing to align")
    for i, d in enumerate(deltas):
        if not isinstance(d, Tensor) or d.ndim != 2 or not d.is_floating_point():
            got = (tuple(d.shape), d.dtype) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"deltas[{i}]: expected a floating 2-D (O, I) tensor, got {got}")
        if d.shape != deltas[0].shape:
            raise ValueError(f"deltas[{i}]: shape {tuple(d.shape)} differs from deltas[0]'s {tuple(deltas[0].shape)}")
    return deltas


def _keep(s: Tensor, eps: float, max_rank: int) -> Tensor:
    """Indices of the kept components of descending singular values s: s > eps, at most max_rank of them
    (the exact rank bound min(O, sum k_i, n I): anything beyond it is rounding noise)."""
    return torch.nonzero(s > eps).flatten()[:max_rank]


# --------------------------------------------------------------------------------------------------
# the three alignment paths (float64 in, float64 out)


def _align_dense64(deltas64: list[Tensor], eps: float, max_rank: int) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Thin SVD of M = [dW_1 ... dW_n]; R_i = diag(s) V_i^T (the official computation)."""
    I = deltas64[0].shape[1]
    u, s, vh = torch.linalg.svd(torch.cat(deltas64, dim=1), full_matrices=False)
    idx = _keep(s, eps, max_rank)
    U, s = u[:, idx], s[idx]
    SVh = s.unsqueeze(1) * vh[idx]
    return U, s, [SVh[:, i * I:(i + 1) * I] for i in range(len(deltas64))]


def _align_qr64(Bs64: list[Tensor], As64: list[Tensor], eps: float, max_rank: int):
    """QR / core path: M = Q_B T_B blockdiag(T_i^T) blockdiag(Q_i^T) with B_cat = Q_B T_B, A_i^T = Q_i T_i.

    Q_B has orthonormal columns and blockdiag(Q_i^T) orthonormal rows, so the SVD of the small core
    C = T_B blockdiag(T_i^T) = U_c S V_c^T gives an SVD of M: U = Q_B U_c, and model i's block of V^T is
    (its columns of V_c^T) Q_i^T. Reduced QRs, so k_i > I or sum k_i > O are fine too (then Q_i is I x I or
    Q_B is O x O and the T factors are rectangular).
    """
    QB, TB = torch.linalg.qr(torch.cat(Bs64, dim=1), mode="reduced")
    Qs, Ts = [], []
    for A in As64:
        Q, T = torch.linalg.qr(A.mT, mode="reduced")  # A^T (I x k) = Q (I x m) T (m x k), m = min(I, k)
        Qs.append(Q)
        Ts.append(T)
    core = TB @ torch.block_diag(*[T.mT for T in Ts])
    uc, s, vch = torch.linalg.svd(core, full_matrices=False)
    idx = _keep(s, eps, max_rank)
    U, s = QB @ uc[:, idx], s[idx]
    SVc = s.unsqueeze(1) * vch[idx]
    Rs, start = [], 0
    for Q in Qs:
        m = Q.shape[1]
        Rs.append(SVc[:, start:start + m] @ Q.mT)
        start += m
    return U, s, Rs


def _align_gram64(Bs64: list[Tensor], As64: list[Tensor], eps: float, max_rank: int):
    """Gram / streaming path: G = sum_i B_i (A_i A_i^T) B_i^T = M M^T = U S^2 U^T.

    Only O x O and k_i x k_i matrices are formed (one model at a time). The Gram squares the condition
    number, so besides s > eps a component must clear the Gram's own rounding floor,
    lambda > O * eps64 * lambda_max (i.e. s > s_max sqrt(O eps64), about 4e-7 s_max for O = 768): below
    it an eigenvalue is rounding noise and its eigenvector arbitrary. This only matters if s_max > ~25,
    far above LoRA update scales (spec section 11.3 numerics note).
    """
    O = Bs64[0].shape[0]
    G = torch.zeros((O, O), dtype=F64, device=Bs64[0].device)
    for B, A in zip(Bs64, As64):
        G.addmm_(B @ (A @ A.mT), B.mT)
    G = 0.5 * (G + G.mT)
    lam, vecs = torch.linalg.eigh(G)
    lam, vecs = lam.flip(0), vecs.flip(1)  # descending, like the SVD paths
    floor = O * _EPS64 * float(lam[0]) if O else 0.0
    s = lam.clamp(min=0.0).sqrt()
    s = torch.where(lam > floor, s, torch.zeros_like(s))
    idx = _keep(s, eps, max_rank)
    U, s = vecs[:, idx], s[idx]
    Ut = U.mT
    return U, s, [(Ut @ B) @ A for B, A in zip(Bs64, As64)]


def auto_path(ranks: Sequence[int], out_features: int) -> str:
    """The 'auto' choice of spec section 6: 'qr' if sum_i k_i < O, else 'gram' (dense SVD only as oracle)."""
    total = sum(int(k) for k in ranks)
    return "qr" if total < int(out_features) else "gram"


def _align64(Bs, As, path: str, eps: float):
    """Validated alignment of one layer -> (U, s, Rs), all float64 on the device of Bs[0], plus the dtype."""
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS}, got {path!r}")
    eps = _check_eps(eps)
    Bs, As, O, I = _check_lora(Bs, As)
    dtype = Bs[0].dtype
    for t in Bs + As:
        dtype = torch.promote_types(dtype, t.dtype)
    device = Bs[0].device
    Bs64 = [B.detach().to(device=device, dtype=F64) for B in Bs]
    As64 = [A.detach().to(device=device, dtype=F64) for A in As]
    ranks = [B.shape[1] for B in Bs]
    max_rank = min(O, sum(ranks), len(Bs) * I)
    if path == "auto":
        path = auto_path(ranks, O)
    if path == "dense":
        U, s, Rs = _align_dense64([B @ A for B, A in zip(Bs64, As64)], eps, max_rank)
    elif path == "qr":
        U, s, Rs = _align_qr64(Bs64, As64, eps, max_rank)
    else:
        U, s, Rs = _align_gram64(Bs64, As64, eps, max_rank)
    return U, s, Rs, dtype


# --------------------------------------------------------------------------------------------------
# public API


def knots_align(
    Bs: Sequence[Tensor], As: Sequence[Tensor], *, path: str = "auto", eps: float = 1e-5
) -> tuple[Tensor, list[Tensor]]:
    """Shared basis of one layer: U (O, r) and R_i = U^T B_i A_i (r, I) for every model (spec sections 3, 6).

    Bs[i] is (O, k_i), As[i] is (k_i, I); ranks k_i may differ. U holds the left singular vectors of
    M = [B_1 A_1 ... B_n A_n] with singular value > eps (absolute, in float64, as the official code; at
    most min(O, sum k_i, n I) of them), in descending order of singular value; R_i = S V_i^T is model i's
    block of S V^T, so sum_i R_i R_i^T = S^2. path: 'dense' (thin SVD of M, the oracle), 'qr' (core path),
    'gram' (eigh of sum_i B_i A_i A_i^T B_i^T), 'auto' (= auto_path: 'qr' if sum k_i < O else 'gram');
    all give the same U up to column signs and the same R_i up to the matching row signs.
    Returns float64 tensors on the device of Bs[0]; raises ValueError for inconsistent shapes.
    """
    U, _, Rs, _ = _align64(Bs, As, path, eps)
    return U, Rs


def knots_align_dense(deltas: Sequence[Tensor], *, eps: float = 1e-5) -> tuple[Tensor, list[Tensor]]:
    """`knots_align` for dense updates dW_i (O, I) (full fine-tuning or precomputed products): thin SVD of
    M = [dW_1 ... dW_n] in float64, s > eps kept; returns (U (O, r), [R_i = U^T dW_i (r, I)]) in float64."""
    U, _, Rs = _align_dense_with_s(deltas, eps=eps)
    return U, Rs


def _align_dense_with_s(deltas: Sequence[Tensor], *, eps: float = 1e-5) -> tuple[Tensor, Tensor, list[Tensor]]:
    """(U, s, Rs) of the dense path (lorm.analysis needs s for the unscaled V_i^T = S^-1 R_i)."""
    eps = _check_eps(eps)
    deltas = _check_dense(deltas)
    device = deltas[0].device
    d64 = [d.detach().to(device=device, dtype=F64) for d in deltas]
    O, I = d64[0].shape
    return _align_dense64(d64, eps, min(O, len(d64) * I))


def knots_merge_aligned(
    aligned: Mapping[str, tuple[Tensor, Sequence[Tensor]]],
    method: str,
    *,
    lam,
    topk=None,
    dare_p=None,
    seed: int | None = None,
    merging_type: str = "mean",
    weights=None,
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Merge already aligned layers: aligned[name] = (U, [R_1 ... R_n]) as returned by `knots_align`.

    Per model, the R_i of all layers are flattened in sorted name order and merged with
    task_merging.merge_deltas(method, lam=..., ...) (so the TIES trim is global over the layers and DARE
    masks are drawn model by model, layer by layer in sorted order, on the aligned R_i; spec section 3
    steps 5-8); then dW_merged[name] = U R_merged. Use it to reuse one alignment for a hyperparameter
    search (spec section 3 step 4). Float64 inside; returned in `dtype` (None = float64).
    """
    if not isinstance(aligned, Mapping) or not aligned:
        raise ValueError("aligned: expected a non-empty mapping layer name -> (U, Rs)")
    names = sorted(aligned)
    n = None
    per_model: list[dict[str, Tensor]] = []
    Us = {}
    for name in names:
        entry = aligned[name]
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"aligned[{name!r}]: expected a pair (U, Rs)")
        U, Rs = entry[0], list(entry[1])
        if not isinstance(U, Tensor) or U.ndim != 2:
            raise ValueError(f"aligned[{name!r}]: U must be a 2-D (O, r) tensor")
        if n is None:
            n = len(Rs)
            if n == 0:
                raise ValueError(f"aligned[{name!r}]: no models")
            per_model = [{} for _ in range(n)]
        elif len(Rs) != n:
            raise ValueError(f"aligned[{name!r}]: {len(Rs)} models, but aligned[{names[0]!r}] has {n}")
        for i, R in enumerate(Rs):
            if not isinstance(R, Tensor) or R.ndim != 2 or R.shape[0] != U.shape[1]:
                got = tuple(R.shape) if isinstance(R, Tensor) else type(R).__name__
                raise ValueError(f"aligned[{name!r}]: R_{i} must be ({U.shape[1]}, I) to match U, got {got}")
            per_model[i][name] = R.detach().to(device=U.device, dtype=F64)
        Us[name] = U.detach().to(F64)
    merged = merge_deltas(per_model, method, lam=lam, topk=topk, dare_p=dare_p, seed=seed,
                          merging_type=merging_type, weights=weights)
    out_dtype = F64 if dtype is None else dtype
    return {name: (Us[name] @ merged[name]).to(out_dtype) for name in names}


def knots_merge(
    layers: Mapping[str, tuple[Sequence[Tensor], Sequence[Tensor]]],
    method: str,
    *,
    lam,
    topk=None,
    dare_p=None,
    seed: int | None = None,
    merging_type: str = "mean",
    weights=None,
    path: str = "auto",
    eps: float = 1e-5,
) -> dict[str, Tensor]:
    """KnOTS-X merge of n LoRA models: layers[name] = (Bs, As) -> {name: dW_merged (O, I)} (spec section 3).

    Every layer is aligned with `knots_align(path, eps)`, then `knots_merge_aligned` merges the R_i with
    method 'ta' | 'ties' | 'dare' | 'dare-ties' and the hyperparameters of task_merging.merge_vectors
    (single lam, topk in percent, dare_p with an explicit integer seed, merging_type 'mean' | 'sum',
    optional per-model weights). In one line: dW = U . lam . DisjointMean_i(mask_i * (U^T dW_i)).
    KnOTS-TA equals TA over the products B_i A_i (up to rounding). Every layer must have the same number
    of models, in the same order. Float64 inside; each merged layer is returned in the promoted dtype of
    its factors (float32 LoRA factors -> float32 update), on the device of its first B.
    """
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError("layers: expected a non-empty mapping layer name -> (Bs, As)")
    aligned, dtypes = {}, {}
    n = None
    for name in sorted(layers):
        entry = layers[name]
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"layers[{name!r}]: expected a pair (Bs, As) of per-model factor lists")
        Bs, As = list(entry[0]), list(entry[1])
        if n is None:
            n = len(Bs)
        elif len(Bs) != n:
            raise ValueError(f"layers[{name!r}]: {len(Bs)} models, but the first layer has {n}")
        try:
            U, _, Rs, dtypes[name] = _align64(Bs, As, path, eps)
        except ValueError as e:
            raise ValueError(f"layers[{name!r}]: {e}") from None
        aligned[name] = (U, Rs)
    merged = knots_merge_aligned(aligned, method, lam=lam, topk=topk, dare_p=dare_p, seed=seed,
                                 merging_type=merging_type, weights=weights)
    return {name: merged[name].to(dtypes[name]) for name in merged}
