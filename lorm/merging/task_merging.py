"""Merges of flattened task vectors: Task Arithmetic, TIES, DARE, DARE-TIES (KnOTS spec section 4).

Row i of an (n, D) matrix X is model i's task vector: all of its merged layers flattened into one vector
(`merge_deltas` builds it in sorted layer-name order). The same functions merge the dense updates dW_i
(the plain baselines) and the KnOTS-aligned parts R_i = U^T dW_i (knots.py); KnOTS changes only what the
rows are, not how they are merged.

Why everything is global over the flattened vector: TIES' top-K trim keeps the K % largest entries of the
whole model, not of each layer, so layers with large updates keep more entries (official behaviour,
spec section 3 step 5). Float64 inside, results cast back to the input dtype; no nn.Module, no I/O.

Hyperparameters (spec sections 4 and 12):
- `lam`: a single scaling coefficient for every model. The official code silently uses only the first
  entry of a per-model list (quirk K2); here a list is rejected instead.
- `topk`: percent of entries kept by the trim; values > 1 are divided by 100, so 20 and 0.2 both mean
  20 % (and 1 means 100 %, i.e. no trim).
- `merging_type`: 'mean' or 'sum' (TA: plain 1/n mean or sum; TIES: disjoint mean or sum). Always
  explicit: lambda means different things under the two (quirk K3).
- DARE needs an explicit integer `seed` (quirk K6); masks come from a private
  torch.Generator().manual_seed(seed), never from the global RNG.
- `weights`: optional per-model weights p_i (e.g. FL client sample fractions), normalised to sum 1; row i
  is scaled by n * p_i before anything else (trim, DARE, sign election, mean). Uniform weights are a
  no-op, and TA-'mean' then becomes sum_i p_i x_i (FedAvg over task vectors). Not in the paper, whose
  disjoint mean is unweighted (documented FL extension, spec section 11.1); None = the paper.
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import torch
from torch import Tensor

from .fedavg import _normalised_weights

__all__ = ["METHODS", "MERGING_TYPES", "trim_mask", "elect_signs", "ties_mask", "disjoint_merge", "dare",
           "merge_vectors", "merge_deltas"]

METHODS = ("ta", "ties", "dare", "dare-ties")
MERGING_TYPES = ("mean", "sum")

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# validation (private; knots.py reuses some of it)


def _check_matrix(X: Tensor, what: str = "X") -> None:
    if not isinstance(X, Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (n_models, D) tensor, got shape {tuple(X.shape)}")
    if X.shape[0] < 1:
        raise ValueError(f"{what}: no models (0 rows), nothing to merge")
    if not X.is_floating_point():
        raise ValueError(f"{what}: expected a floating-point tensor, got {X.dtype}")


def _check_finite(X: Tensor, what: str) -> None:
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{what}: contains non-finite values (NaN or inf)")


def _topk_fraction(topk) -> float:
    """topk in percent or as a fraction -> fraction K in (0, inf); values > 1 are divided by 100."""
    if isinstance(topk, bool) or not isinstance(topk, numbers.Real):
        raise ValueError(f"topk: expected a number (percent, e.g. 20, or fraction, e.g. 0.2), got {topk!r}")
    k = float(topk)
    if not math.isfinite(k) or k <= 0:
        raise ValueError(f"topk: must be a finite number > 0 (percent or fraction), got {topk!r}")
    return k / 100.0 if k > 1 else k


def _check_lam(lam) -> float:
    """A single scaling coefficient; per-model lists are rejected (spec quirk K2)."""
    if isinstance(lam, Tensor):
        if lam.numel() != 1:
            raise ValueError(
                f"lam: expected a single scaling coefficient for all models, got a tensor of shape "
                f"{tuple(lam.shape)}; per-model lambdas are not supported (the official code silently uses "
                "only the first one, spec K2)"
            )
        lam = float(lam)
    if isinstance(lam, (list, tuple)) or (not isinstance(lam, numbers.Real) and hasattr(lam, "__len__")):
        raise ValueError(
            f"lam: expected a single scaling coefficient for all models, got a sequence of {len(lam)} values "
            f"{list(lam)!r}; per-model lambdas are not supported (the official code silently uses only the "
            "first one, spec K2)"
        )
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise ValueError(f"lam: expected a number, got {lam!r}")
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lam: must be finite, got {lam!r}")
    return lam


def _check_merging_type(merging_type: str) -> None:
    if merging_type not in MERGING_TYPES:
        raise ValueError(f"merging_type: expected one of {MERGING_TYPES}, got {merging_type!r}")


def _check_dare_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ValueError(f"dare_p: expected a drop probability in [0, 1), got {p!r}")
    p = float(p)
    if not 0.0 <= p < 1.0:  # also rejects NaN
        raise ValueError(f"dare_p: drop probability must satisfy 0 <= p < 1, got {p!r}")
    return p


def _check_seed(seed, method: str) -> int:
    if seed is None:
        raise ValueError(
            f"seed: method {method!r} drops entries at random and needs an explicit integer seed "
            "(spec K6: always set and log the DARE seed)"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------------------------------
# building blocks (public)


def trim_mask(X: Tensor, topk) -> Tensor:
    """TIES top-K trim mask (n, D), per model and global over the whole row (spec section 4).

    K = topk / 100 if topk > 1 else topk. K >= 1 keeps everything. Otherwise q = D - floor(D * K) and
    tau_i = the q-th smallest |x_i| (1-indexed); entries with |x_i| >= tau_i are kept. For distinct
    magnitudes that is floor(D * K) + 1 entries (the official count), and entries tied with tau_i are all
    kept, so a row can keep more. floor(D * K) is evaluated in double precision exactly like the official
    `int(d * K)` (e.g. D = 100, topk = 29 gives 28, since 0.29 * 100 = 28.999...).
    Returns a bool tensor on X's device; raises ValueError for bad X or topk.
    """
    _check_matrix(X)
    K = _topk_fraction(topk)
    n, D = X.shape
    if K >= 1.0 or D == 0:
        return torch.ones((n, D), dtype=torch.bool, device=X.device)
    q = D - int(D * K)  # >= 1 because D * K < D
    mag = X.detach().to(F64).abs()
    tau = mag.kthvalue(q, dim=1, keepdim=True).values
    return mag >= tau


def elect_signs(X_trimmed: Tensor) -> Tensor:
    """TIES sign election by sum of values (spec section 4; every released config uses it).

    sigma = sign(sum_i x_i) per entry over the (already trimmed) rows; entries where the sum is exactly 0
    get the majority sign sign(sum_entries sigma), so ties go with the direction most of the vector voted
    for. If that is 0 too (the votes cancel exactly), those entries stay 0, and the agreement rule then
    treats them as negative ("[x < 0] where sigma is not > 0", as the official code does).
    Returns a (D,) tensor of -1/0/+1 in X_trimmed's dtype.
    """
    _check_matrix(X_trimmed, "X_trimmed")
    sigma = torch.sign(X_trimmed.detach().to(F64).sum(dim=0))
    majority = torch.sign(sigma.sum())
    sigma[sigma == 0] = majority
    return sigma.to(X_trimmed.dtype)


def _agree(X64: Tensor, sigma: Tensor) -> Tensor:
    """a_i = [x_i > 0] where sigma > 0 and [x_i < 0] elsewhere; zeros never agree."""
    return torch.where(sigma.unsqueeze(0) > 0, X64 > 0, X64 < 0)


def ties_mask(X: Tensor, topk) -> Tensor:
    """Final TIES mask m_i = t_i AND a_i: top-K trim, then agreement with the elected sign (spec section 4).

    The sign is elected on the trimmed values t_i * x_i, so trimmed-away entries do not vote. topk >= 100 %
    gives the no-trim mask of DARE-TIES. Returns a bool (n, D) tensor.
    """
    t = trim_mask(X, topk)
    X64 = X.detach().to(F64)
    trimmed = torch.where(t, X64, torch.zeros((), dtype=F64, device=X64.device))
    sigma = elect_signs(trimmed)
    return t & _agree(trimmed, sigma)


def disjoint_merge(X: Tensor, mask: Tensor, lam, merging_type: str = "mean") -> Tensor:
    """TIES' disjoint merge of the masked rows, scaled by a single lambda (spec section 4).

    'mean': y = sum_i lam m_i x_i / max(1, #{i : m_i x_i != 0}) entry-wise, i.e. lam times the average over
    the models that survived (and are non-zero) at that entry: a value kept by one model is not diluted
    by the models that were trimmed there. 'sum': y = lam sum_i m_i x_i.
    Returns (D,) in X's dtype.
    """
    _check_matrix(X)
    if not isinstance(mask, Tensor) or mask.shape != X.shape:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a tensor of X's shape {tuple(X.shape)}, got {got}")
    lam = _check_lam(lam)
    _check_merging_type(merging_type)
    X64 = X.detach().to(F64)
    return _disjoint64(X64, mask.to(device=X64.device, dtype=torch.bool), lam, merging_type).to(X.dtype)


def _disjoint64(X64: Tensor, mask: Tensor, lam: float, merging_type: str) -> Tensor:
    sel = torch.where(mask, X64, torch.zeros((), dtype=F64, device=X64.device))
    total = sel.sum(dim=0)
    if merging_type == "mean":
        count = (sel != 0).sum(dim=0).clamp_(min=1).to(F64)
        total = total / count
    return total.mul_(lam)


def _dare_chunks64(X64: Tensor, chunks: Sequence[int], p: float, gen: torch.Generator) -> Tensor:
    """DARE on X64 (n, D) in place: for each row (model order), for each chunk (layer order) in turn, draw a
    keep mask Bernoulli(1 - p) from `gen`, zero the dropped entries and divide the survivors by (1 - p)."""
    if p == 0.0:
        return X64
    keep_p, scale = 1.0 - p, 1.0 / (1.0 - p)
    for i in range(X64.shape[0]):
        start = 0
        for size in chunks:
            if size:
                keep = torch.rand(size, generator=gen, dtype=F64) < keep_p
                seg = X64[i, start:start + size]
                seg.mul_(keep.to(device=X64.device, dtype=F64)).mul_(scale)
            start += size
    return X64


def dare(X_or_list: Tensor | Sequence[Tensor], p, generator: torch.Generator) -> Tensor | list[Tensor]:
    """DARE drop-and-rescale (Yu et al. 2024; spec section 4): keep each entry with probability 1 - p,
    zero the rest and divide the survivors by 1 - p, so the expectation of every entry is unchanged.

    A single tensor gets one mask of its shape, drawn in row-major order (for an (n, D) matrix: model
    order); a list of tensors gets one mask per tensor, in list order. Masks are drawn from `generator`
    (a CPU torch.Generator; the caller seeds it, see `merge_vectors`). Float64 inside, each output in its
    input's dtype. Raises ValueError unless 0 <= p < 1.
    """
    p = _check_dare_p(p)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    single = isinstance(X_or_list, Tensor)
    tensors = [X_or_list] if single else list(X_or_list)
    out = []
    for k, t in enumerate(tensors):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"X_or_list[{k}]: expected a floating-point torch.Tensor, got {got}")
        flat = t.detach().to(F64).reshape(1, -1).clone()
        _dare_chunks64(flat, [flat.shape[1]], p, generator)
        out.append(flat.reshape(t.shape).to(t.dtype))
    return out[0] if single else out


# --------------------------------------------------------------------------------------------------
# merges


def _merge64(
    X64: Tensor,
    chunks: Sequence[int],
    method: str,
    *,
    lam,
    topk,
    dare_p,
    seed,
    merging_type: str,
    weights,
) -> Tensor:
    """Validated merge of a float64 (n, D) matrix that the function may modify in place."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    lam = _check_lam(lam)
    _check_merging_type(merging_type)
    n = X64.shape[0]
    # hyperparameters that a method does not use are rejected rather than silently ignored
    if method == "ties":
        if topk is None:
            raise ValueError("topk: method 'ties' needs topk (percent kept by the trim, e.g. 20)")
        _topk_fraction(topk)
    elif method == "dare-ties":
        if topk is not None and _topk_fraction(topk) < 1.0:
            raise ValueError(
                f"topk: method 'dare-ties' does not trim (TIES with topK = 100 after DARE), got topk={topk!r}; "
                "leave it None"
            )
    elif topk is not None:
        raise ValueError(f"topk: method {method!r} has no trim step, got topk={topk!r}; leave it None")
    uses_dare = method in ("dare", "dare-ties")
    if uses_dare:
        if dare_p is None:
            raise ValueError(f"dare_p: method {method!r} needs the DARE drop probability dare_p in [0, 1)")
        p = _check_dare_p(dare_p)
        seed = _check_seed(seed, method)
    elif dare_p is not None:
        raise ValueError(f"dare_p: method {method!r} does not use DARE, got dare_p={dare_p!r}; leave it None")

    _check_finite(X64, "X")
    if weights is not None:
        w = torch.tensor(_normalised_weights(weights, n), dtype=F64, device=X64.device)
        X64.mul_((n * w).unsqueeze(1))
    if uses_dare:
        _dare_chunks64(X64, chunks, p, torch.Generator().manual_seed(seed))

    if method in ("ta", "dare"):
        out = X64.sum(dim=0)
        if merging_type == "mean":
            out.div_(n)
        return out.mul_(lam)
    mask = ties_mask(X64, topk if method == "ties" else 100)
    return _disjoint64(X64, mask, lam, merging_type)


def merge_vectors(
    X: Tensor | Sequence[Tensor],
    method: str,
    *,
    lam,
    topk=None,
    dare_p=None,
    seed: int | None = None,
    merging_type: str = "mean",
    weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Merge n flattened task vectors (rows of X, or a list of equally long 1-D tensors) into one (D,) vector.

    method (spec section 4):
    - 'ta': Task Arithmetic, lam * sum_i x_i ('sum') or lam * (1/n) sum_i x_i ('mean', a plain mean).
    - 'ties': trim to topk -> elect signs -> agreement mask -> lam * disjoint mean / sum.
    - 'dare': DARE with drop probability dare_p, then the TA merge of `merging_type` (plain 1/n mean, not
      the disjoint mean: DARE's 1/(1-p) rescale already compensates for the dropped entries).
    - 'dare-ties': DARE, then TIES without trim (topK = 100): sign election, agreement, disjoint merge.
    DARE masks come from torch.Generator().manual_seed(seed), one row (model) after the other; `seed` must
    be an explicit integer. `weights` (optional, one per model, normalised to sum 1) scale row i by n * p_i
    first (see the module docstring). Hyperparameters a method does not use (topk for 'ta'/'dare', dare_p
    outside DARE) raise ValueError rather than being silently ignored; `seed` is ignored without DARE.
    Float64 inside; the result has X's dtype.
    """
    if not isinstance(X, Tensor):
        rows = list(X)
        if not rows:
            raise ValueError("X: empty list, nothing to merge")
        for k, r in enumerate(rows):
            if not isinstance(r, Tensor) or r.ndim != 1:
                got = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
                raise ValueError(f"X[{k}]: expected a 1-D tensor (one flattened model), got {got}")
            if r.shape != rows[0].shape:
                raise ValueError(f"X: length mismatch, X[0] has {rows[0].numel()} entries but X[{k}] has {r.numel()}")
        X = torch.stack([r.detach().to(rows[0].device) for r in rows])
    _check_matrix(X)
    X64 = X.detach().to(F64, copy=True)
    out = _merge64(X64, [X64.shape[1]], method, lam=lam, topk=topk, dare_p=dare_p, seed=seed,
                   merging_type=merging_type, weights=weights)
    return out.to(X.dtype)


def _check_deltas(deltas: Sequence[Mapping[str, Tensor]], what: str = "deltas"):
    """Same layer names and shapes in every model -> (sorted names, shapes, per-layer dtypes, device)."""
    deltas = list(deltas)
    if not deltas:
        raise ValueError(f"{what}: empty list, nothing to merge")
    for k, d in enumerate(deltas):
        if not isinstance(d, Mapping):
            raise ValueError(f"{what}[{k}]: expected a mapping layer name -> tensor, got {type(d).__name__}")
    names = sorted(deltas[0])
    if not names:
        raise ValueError(f"{what}[0]: no layers")
    shapes, dtypes = {}, {}
    for name in names:
        t = deltas[0][name]
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{what}[0][{name!r}]: expected a floating-point tensor, got {got}")
        shapes[name], dtypes[name] = t.shape, t.dtype
    for k, d in enumerate(deltas[1:], start=1):
        if sorted(d) != names:
            missing, extra = sorted(set(names) - set(d)), sorted(set(d) - set(names))
            raise ValueError(
                f"{what}[{k}]: layer names differ from {what}[0] (missing {missing}, unexpected {extra}); every "
                "model must have the same layers"
            )
        for name in names:
            t = d[name]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                got = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{what}[{k}][{name!r}]: expected a floating-point tensor, got {got}")
            if t.shape != shapes[name]:
                raise ValueError(
                    f"{what}[{k}][{name!r}]: shape {tuple(t.shape)} differs from {what}[0][{name!r}] "
                    f"{tuple(shapes[name])}"
                )
            dtypes[name] = torch.promote_types(dtypes[name], t.dtype)
    device = deltas[0][names[0]].device
    return deltas, names, shapes, dtypes, device


def merge_deltas(deltas: Sequence[Mapping[str, Tensor]], method: str, **kw) -> dict[str, Tensor]:
    """Merge per-layer task updates of n models: {name: tensor} per model -> {name: merged tensor}.

    Each model's layers are flattened in sorted name order into one vector (the official layout, spec
    section 3 steps 0 and 5), the n vectors are merged with `merge_vectors(method, **kw)`, and the result
    is cut back into the layers' shapes. So TIES' top-K is global over all layers of a model, and DARE
    masks are drawn model by model, layer by layer in sorted name order. Every model must have the same
    layer names and shapes (ValueError otherwise). Float64 inside; each merged layer has the promoted
    dtype of that layer over the models, on the device of the first model's first layer.
    """
    deltas, names, shapes, dtypes, device = _check_deltas(deltas)
    sizes = [math.prod(shapes[name]) for name in names]
    X64 = torch.empty((len(deltas), sum(sizes)), dtype=F64, device=device)
    for i, d in enumerate(deltas):
        start = 0
        for name, size in zip(names, sizes):
            X64[i, start:start + size] = d[name].detach().to(device=device, dtype=F64).reshape(-1)
            start += size
    allowed = {"lam", "topk", "dare_p", "seed", "merging_type", "weights"}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ValueError(f"merge_deltas: unexpected keyword arguments {unknown}; allowed: {sorted(allowed)}")
    if "lam" not in kw:
        raise ValueError("lam: missing; merge_deltas needs the scaling coefficient lam")
    kw.setdefault("topk", None)
    kw.setdefault("dare_p", None)
    kw.setdefault("seed", None)
    kw.setdefault("merging_type", "mean")
    kw.setdefault("weights", None)
    merged = _merge64(X64, sizes, method, **kw)
    out, start = {}, 0
    for name, size in zip(names, sizes):
        out[name] = merged[start:start + size].reshape(shapes[name]).to(dtypes[name])
        start += size
    return out
