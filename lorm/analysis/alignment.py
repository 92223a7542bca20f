"""CKA alignment of task updates (KnOTS paper section 3; spec section 10).

The paper's argument for KnOTS: LoRA updates of different tasks are poorly "aligned", measured by linear
CKA between the activations the updates alone produce, dW_i x, on the same inputs. CKA compares what two
maps compute up to an orthogonal transform and a global scale, so (unlike the cosine of flattened task
vectors) it is not fooled by updates that are orthogonal as parameter vectors but act on the same
features.

Representations for `update_alignment` (spec section 10; the KnOTS heatmap's exact definition is
UNCERTAIN):
- 'lora': dW_i x (the LoRA branch output, O-dimensional).
- 'knots': V_i^T x = S^-1 U^T dW_i x (unscaled right singular block of the shared SVD, r-dimensional).
  This is the spec's chosen reading of the paper's KnOTS heatmap: the same re-weighting S^-1 for all
  models, which does change CKA.
- 'knots-scaled': S V_i^T x = U^T dW_i x = R_i x. U has orthonormal columns spanning every dW_i's column
  space, so this is an isometric copy of dW_i x and its CKA equals the 'lora' CKA exactly -- which is why
  the paper's heatmap cannot have been this one. Kept as an option (and as a test of the derivation).

Float64 inside. Linear CKA only (the spec leaves linear vs RBF open; linear is the cheap one): never an
N x N kernel, only feature-space (cross-)covariances, so N (tokens) can be large.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from lorm.merging.knots import _align_dense_with_s

__all__ = ["REPRESENTATIONS", "linear_cka", "update_alignment"]

REPRESENTATIONS = ("lora", "knots", "knots-scaled")
F64 = torch.float64


def _check_activations(X: Tensor, what: str) -> None:
    if not isinstance(X, Tensor) or X.ndim != 2 or not X.is_floating_point():
        got = (tuple(X.shape), X.dtype) if isinstance(X, Tensor) else type(X).__name__
        raise ValueError(f"{what}: expected a floating 2-D (N, features) tensor, got {got}")
    if X.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 samples (rows) to centre, got {X.shape[0]}")


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear CKA of two representations of the same N inputs (Kornblith et al. 2019; spec section 10).

    X (N, p), Y (N, q); columns are centred, then CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), in
    [0, 1]. Equal to HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with centred K = X X^T, L = Y Y^T, but
    computed through the p x q, p x p and q x q (cross-)covariances, O(N (p + q)^2), never N x N.
    Invariant to orthogonal transforms and isotropic scaling of either representation. Float64 inside.
    Raises ValueError if N differs, N < 2, or a representation is constant (zero variance: CKA undefined).
    """
    _check_activations(X, "X")
    _check_activations(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X, Y: need the same inputs (rows), got N = {X.shape[0]} and {Y.shape[0]}")
    Xc = X.detach().to(F64)
    Yc = Y.detach().to(device=Xc.device, dtype=F64)
    Xc = Xc - Xc.mean(dim=0, keepdim=True)
    Yc = Yc - Yc.mean(dim=0, keepdim=True)
    nx = torch.linalg.matrix_norm(Xc.mT @ Xc)
    ny = torch.linalg.matrix_norm(Yc.mT @ Yc)
    for norm, what in ((nx, "X"), (ny, "Y")):
        if not bool(norm > 0):
            raise ValueError(f"{what}: representation has zero variance after centring; CKA is undefined")
    return float(torch.linalg.matrix_norm(Yc.mT @ Xc).square() / (nx * ny))


def _maps(deltas: list[Tensor], representation: str, eps: float) -> list[Tensor]:
    """Per model the linear map P_i (q, I) whose output P_i x is the compared representation."""
    if representation == "lora":
        return deltas
    _, s, Rs = _align_dense_with_s(deltas, eps=eps)
    if representation == "knots-scaled":
        return Rs
    return [R / s.unsqueeze(1) for R in Rs]  # V_i^T = S^-1 R_i


def update_alignment(
    deltas_per_model: Sequence[Mapping[str, Tensor]],
    inputs: Mapping[str, Tensor],
    representation: str = "lora",
    *,
    eps: float = 1e-5,
) -> Tensor:
    """(n, n) matrix of pairwise linear CKA between the models' update outputs, averaged over layers.

    deltas_per_model[i][name] is model i's update dW_i (O, I) of layer `name` (every model the same layers
    and shapes); inputs[name] (N, I) are the layer's inputs x on a common set of N samples (tokens), shared
    by all models (extra entries in `inputs` are ignored). For each layer the representation of model i
    is P_i x with P_i = dW_i ('lora'), V_i^T = S^-1 U^T dW_i ('knots', the spec's reading of the KnOTS
    heatmap) or S V_i^T = U^T dW_i ('knots-scaled', equal to 'lora' by isometry), U S V^T the thin SVD of
    [dW_1 ... dW_n] with s > eps (see the module docstring). With the centred input covariance
    C = X_c^T X_c (I x I) every CKA needs only P_j C P_i^T: no N x O activations are formed.
    Returns float64 (n, n), symmetric, ones on the diagonal. ValueError on inconsistent layers/shapes,
    missing inputs, or an update that is zero (CKA undefined).
    """
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation: expected one of {REPRESENTATIONS}, got {representation!r}")
    models = list(deltas_per_model)
    if not models:
        raise ValueError("deltas_per_model: empty list")
    names = sorted(models[0])
    if not names:
        raise ValueError("deltas_per_model[0]: no layers")
    for k, d in enumerate(models[1:], start=1):
        if sorted(d) != names:
            raise ValueError(f"deltas_per_model[{k}]: layer names differ from deltas_per_model[0]")
    n = len(models)
    total = torch.zeros((n, n), dtype=F64)
    for name in names:
        if name not in inputs:
            raise ValueError(f"inputs: no activations for layer {name!r}")
        X = inputs[name]
        _check_activations(X, f"inputs[{name!r}]")
        deltas = [m[name] for m in models]
        for k, d in enumerate(deltas):
            if not isinstance(d, Tensor) or d.ndim != 2 or d.shape != deltas[0].shape:
                got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(
                    f"deltas_per_model[{k}][{name!r}]: expected shape {tuple(deltas[0].shape)} (O, I), got {got}"
                )
        if deltas[0].shape[1] != X.shape[1]:
            raise ValueError(
                f"inputs[{name!r}]: {X.shape[1]} features, but the updates take I = {deltas[0].shape[1]} inputs"
            )
        device = X.device
        X64 = X.detach().to(F64)
        Xc = X64 - X64.mean(dim=0, keepdim=True)
        C = Xc.mT @ Xc
        d64 = [d.detach().to(device=device, dtype=F64) for d in deltas]
        P = _maps(d64, representation, eps)
        PC = [p @ C for p in P]
        self_norm = torch.stack([torch.linalg.matrix_norm(PC[i] @ P[i].mT) for i in range(n)])
        for i in range(n):
            if not bool(self_norm[i] > 0):
                raise ValueError(
                    f"deltas_per_model[{i}][{name!r}]: the update's output has zero variance on these inputs; "
                    "CKA is undefined"
                )
        cka = torch.eye(n, dtype=F64)
        for i in range(n):
            for j in range(i + 1, n):
                v = torch.linalg.matrix_norm(PC[j] @ P[i].mT).square() / (self_norm[i] * self_norm[j])
                cka[i, j] = cka[j, i] = v.cpu()
        total += cka
    return total / len(names)
