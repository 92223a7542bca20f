"""Tests of lorm.merging against brute-force least squares (numpy lstsq) on seeded random data."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch

from lorm.merging import (
    SingularGramWarning,
    TaskAccumulator,
    fedavg,
    lorm_merge_A,
    lorm_merge_B,
    merge_head,
    regmean_merge,
    shrink,
    sum_grams,
)

F64 = torch.float64
F32 = torch.float32


# ---------------------------------------------------------------------------------------------------
# helpers


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def client_tokens(g: torch.Generator, K: int, d_in: int, n_min: int, n_max: int) -> list[torch.Tensor]:
    """K token matrices X_k (n_k, d_in), n_k varying, features on different scales, client-specific shift."""
    scales = torch.exp(randn(g, d_in))
    Xs = []
    for _ in range(K):
        n = int(torch.randint(n_min, n_max + 1, (1,), generator=g))
        Xs.append((randn(g, n, d_in) + randn(g, 1, d_in)) * scales)
    return Xs


def full_grams(Xs):
    return [X.T @ X for X in Xs]


def diag_grams(Xs):
    return [(X**2).sum(0) for X in Xs]


def virtual_tokens(gram: torch.Tensor) -> torch.Tensor:
    """Z with Z^T Z = gram, so ||dW Z^T||^2 = tr(dW gram dW^T): the lstsq form of a (shrunk or diagonal) gram."""
    if gram.ndim == 1:
        return torch.diag(gram.sqrt())
    evals, evecs = torch.linalg.eigh(gram)
    return (evecs * evals.clamp_min(0).sqrt()).T


def lstsq(M: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(M, rhs, rcond=None)[0]


def rel(a, b) -> float:
    a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    b = b.detach().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def brute_regmean(Zs, Ws) -> np.ndarray:
    """argmin_W sum_k ||Z_k W^T - Z_k W_k^T||_F^2 by lstsq on the stacked system (minimum norm)."""
    Z = np.vstack([z.numpy() for z in Zs])
    Y = np.vstack([(z @ W.T).numpy() for z, W in zip(Zs, Ws)])
    return lstsq(Z, Y).T


def brute_A(Zs, B, As) -> np.ndarray:
    """argmin_A sum_k ||B A Z_k^T - B A_k Z_k^T||^2 over vec(A) (column-major vec: vec(B A C) = (C^T kron B) vec A)."""
    Bn = B.numpy()
    rows = [np.kron(z.numpy(), Bn) for z in Zs]
    rhs = [(B @ A_k @ z.T).numpy().flatten(order="F") for z, A_k in zip(Zs, As)]
    v = lstsq(np.vstack(rows), np.concatenate(rhs))
    return v.reshape(As[0].shape, order="F")


def brute_B(Zs, A, Bs) -> np.ndarray:
    """argmin_B sum_k ||B A Z_k^T - B_k A Z_k^T||^2 over vec(B) (vec(B C) = (C^T kron I) vec B)."""
    d_out = Bs[0].shape[0]
    rows = [np.kron((z @ A.T).numpy(), np.eye(d_out)) for z in Zs]
    rhs = [(B_k @ A @ z.T).numpy().flatten(order="F") for z, B_k in zip(Zs, Bs)]
    v = lstsq(np.vstack(rows), np.concatenate(rhs))
    return v.reshape(Bs[0].shape, order="F")


# ---------------------------------------------------------------------------------------------------
# RegMean


@pytest.mark.parametrize("solver", ["solve", "pinv"])
def test_regmean_full_matches_lstsq(solver):
    g = gen(0)
    K, d_in, d_out = 4, 7, 5
    Xs = client_tokens(g, K, d_in, 3, 12)  # single clients may be rank deficient, the sum is not
    Ws = [randn(g, d_out, d_in) for _ in range(K)]
    expected = brute_regmean(Xs, Ws)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W = regmean_merge(Ws, full_grams(Xs), solver=solver)
    assert W.dtype == F64 and W.shape == (d_out, d_in)
    assert rel(W, expected) < 1e-8
    assert rel(fedavg(Ws), expected) > 1e-2  # the test can tell RegMean from a plain mean


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_regmean_shrunk_matches_lstsq(alpha):
    g = gen(1)
    K, d_in, d_out = 3, 6, 4
    Xs = client_tokens(g, K, d_in, 4, 9)
    Ws = [randn(g, d_out, d_in) for _ in range(K)]
    grams = [shrink(G, alpha) for G in full_grams(Xs)]
    expected = brute_regmean([virtual_tokens(G) for G in grams], Ws)
    assert rel(regmean_merge(Ws, grams), expected) < 1e-8


def test_regmean_diagonal_is_columnwise_average_and_least_squares():
    g = gen(2)
    K, d_in, d_out = 3, 6, 4
    Xs = client_tokens(g, K, d_in, 2, 8)
    Ws = [randn(g, d_out, d_in) for _ in range(K)]
    ds = diag_grams(Xs)
    W = regmean_merge(Ws, ds)
    for j in range(d_in):
        col = sum(ds[k][j] * Ws[k][:, j] for k in range(K)) / sum(ds[k][j] for k in range(K))
        assert torch.allclose(W[:, j], col, rtol=1e-12, atol=0)
    assert rel(W, brute_regmean([virtual_tokens(d) for d in ds], Ws)) < 1e-8


def test_regmean_identical_clients_return_the_client():
    g = gen(3)
    W0 = randn(g, 5, 6)
    Xs = client_tokens(g, 3, 6, 4, 10)
    for grams in (full_grams(Xs), diag_grams(Xs)):
        assert rel(regmean_merge([W0.clone() for _ in Xs], grams), W0) < 1e-10


def test_regmean_exactly_singular_sum_falls_back_to_pinv_with_warning():
    g = gen(4)
    K, d_in, d_out = 3, 6, 4
    Xs = client_tokens(g, K, d_in, 5, 9)
    for X in Xs:
        X[:, 2] = 0.0  # a feature nobody ever activates: zero row and column in every gram
    Ws = [randn(g, d_out, d_in) for _ in range(K)]
    grams = full_grams(Xs)
    with pytest.warns(SingularGramWarning, match="pseudo-inverse"):
        W = regmean_merge(Ws, grams, solver="solve")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W_pinv = regmean_merge(Ws, grams, solver="pinv")  # pinv never warns
    assert torch.isfinite(W).all()
    assert rel(W, W_pinv) < 1e-12
    assert rel(W, brute_regmean(Xs, Ws)) < 1e-8  # minimum-norm least squares
    assert W[:, 2].abs().max() < 1e-12 * W.abs().max()  # the unused feature's column is 0


def test_regmean_numerically_singular_sum_falls_back_to_pinv_with_warning():
    # fewer tokens (6) than features (10): the sum is rank deficient but no pivot is exactly 0
    g = gen(5)
    K, d_in, d_out = 3, 10, 4
    Xs = [randn(g, 2, d_in) for _ in range(K)]
    Ws = [randn(g, d_out, d_in) for _ in range(K)]
    with pytest.warns(SingularGramWarning, match="pseudo-inverse"):
        W = regmean_merge(Ws, full_grams(Xs))
    assert rel(W, brute_regmean(Xs, Ws)) < 1e-8
    assert W.abs().max() < 1e3 * max(w.abs().max() for w in Ws)  # not a huge-norm LU solution


def test_regmean_solve_uses_the_pinv_cutoff_even_when_cholesky_succeeds():
    # Cholesky of diag(.., 1e-20) succeeds, but 1e-20 is below pinv's cut-off d * eps * max: same answer as pinv
    g = gen(7)
    energies = [torch.rand(4, generator=g, dtype=F64) + 0.5 for _ in range(2)]
    for e in energies:
        e[3] = 1e-20
    grams = [torch.diag(e) for e in energies]
    Ws = [randn(g, 3, 4) for _ in range(2)]
    with pytest.warns(SingularGramWarning):
        W = regmean_merge(Ws, grams)
    assert torch.equal(W[:, 3], torch.zeros(3, dtype=F64))
    assert rel(W, regmean_merge(Ws, grams, solver="pinv")) < 1e-12


def test_regmean_diagonal_zero_energy_warns_under_solve_only():
    g = gen(6)
    ds = [torch.rand(5, generator=g, dtype=F64) for _ in range(2)]
    for d in ds:
        d[3] = 0.0
    Ws = [randn(g, 4, 5) for _ in range(2)]
    with pytest.warns(SingularGramWarning):
        W = regmean_merge(Ws, ds, solver="solve")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W_pinv = regmean_merge(Ws, ds, solver="pinv")
    assert torch.equal(W, W_pinv)
    assert torch.all(W[:, 3] == 0)


# ---------------------------------------------------------------------------------------------------
# LoRM A-merge


def test_lorm_merge_A_full_matches_lstsq_over_A():
    g = gen(10)
    K, d_in, d_out, r = 3, 5, 6, 3
    Xs = client_tokens(g, K, d_in, 3, 9)
    B = randn(g, d_out, r)  # full column rank (generic)
    As = [randn(g, r, d_in) for _ in range(K)]
    A = lorm_merge_A(As, full_grams(Xs))
    expected = brute_A(Xs, B, As)
    assert A.shape == (r, d_in) and A.dtype == F64
    assert rel(A, expected) < 1e-8
    assert rel(fedavg(As), expected) > 1e-2


def test_lorm_merge_A_rank_deficient_gram_gives_minimum_norm_optimum():
    g = gen(11)
    K, d_in, d_out, r = 2, 8, 5, 2
    Xs = [randn(g, 2, d_in) for _ in range(K)]  # 4 tokens < 8 features
    B = randn(g, d_out, r)
    As = [randn(g, r, d_in) for _ in range(K)]
    assert rel(lorm_merge_A(As, full_grams(Xs)), brute_A(Xs, B, As)) < 1e-8


def test_lorm_merge_A_solver_solve_agrees_with_pinv_when_well_conditioned():
    g = gen(12)
    Xs = client_tokens(g, 4, 6, 5, 10)
    As = [randn(g, 3, 6) for _ in Xs]
    grams = full_grams(Xs)
    assert rel(lorm_merge_A(As, grams, solver="solve"), lorm_merge_A(As, grams)) < 1e-10


def test_lorm_merge_A_diagonal_is_per_column_weighted_average():
    g = gen(13)
    K, d_in, r = 4, 7, 3
    Xs = client_tokens(g, K, d_in, 2, 6)
    for X in Xs:
        X[:, 1] = 0.0  # zero energy on every client -> merged column is 0
    Xs[0][:, 4] = 0.0  # zero energy on one client only -> that client gets weight 0 there
    Xs[2][:, 4] = 0.0
    ds = diag_grams(Xs)
    As = [randn(g, r, d_in) for _ in range(K)]
    A = lorm_merge_A(As, ds)
    expected = torch.zeros(r, d_in, dtype=F64)
    for j in range(d_in):
        total = 0.0
        for k in range(K):
            total += float(ds[k][j])
            expected[:, j] += ds[k][j] * As[k][:, j]
        if total > 0:
            expected[:, j] /= total
    assert torch.allclose(A, expected, rtol=1e-12, atol=1e-15)
    assert torch.all(A[:, 1] == 0)
    assert torch.allclose(A[:, 4], (ds[1][4] * As[1][:, 4] + ds[3][4] * As[3][:, 4]) / (ds[1][4] + ds[3][4]))
    # and it is the least-squares optimum of the diagonal objective (B fixed)
    B = randn(g, 5, r)
    assert rel(A, brute_A([virtual_tokens(d) for d in ds], B, As)) < 1e-8


# ---------------------------------------------------------------------------------------------------
# LoRM B-merge


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_lorm_merge_B_matches_constrained_lstsq(kind):
    g = gen(20)
    K, d_in, d_out, r = 3, 7, 5, 3
    Xs = client_tokens(g, K, d_in, 3, 9)
    A = randn(g, r, d_in)
    Bs = [randn(g, d_out, r) for _ in range(K)]
    grams = full_grams(Xs) if kind == "full" else diag_grams(Xs)
    # full: Z_k = X_k; diagonal: the objective sum_k tr((B - B_k) A D_k A^T (B - B_k)^T), Z_k = D_k^(1/2)
    Zs = Xs if kind == "full" else [virtual_tokens(d) for d in grams]
    B = lorm_merge_B(Bs, A, grams)
    expected = brute_B(Zs, A, Bs)
    assert B.shape == (d_out, r) and B.dtype == F64
    assert rel(B, expected) < 1e-8
    assert rel(fedavg(Bs), expected) > 1e-2


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_lorm_merge_B_rank_deficient_A_gives_minimum_norm_optimum(kind):
    g = gen(21)
    K, d_in, d_out, r = 3, 6, 4, 3
    Xs = client_tokens(g, K, d_in, 4, 8)
    A = randn(g, r, d_in)
    A[2] = 2.0 * A[0]  # rank 2: A G A^T is singular
    Bs = [randn(g, d_out, r) for _ in range(K)]
    grams = full_grams(Xs) if kind == "full" else diag_grams(Xs)
    Zs = Xs if kind == "full" else [virtual_tokens(d) for d in grams]
    assert rel(lorm_merge_B(Bs, A, grams), brute_B(Zs, A, Bs)) < 1e-8


def test_lorm_merges_identical_clients_and_common_gram_scale():
    g = gen(22)
    K, d_in, d_out, r = 3, 6, 5, 2
    Xs = client_tokens(g, K, d_in, 4, 8)
    A, B = randn(g, r, d_in), randn(g, d_out, r)
    As = [randn(g, r, d_in) for _ in range(K)]
    Bs = [randn(g, d_out, r) for _ in range(K)]
    for grams in (full_grams(Xs), diag_grams(Xs)):
        assert rel(lorm_merge_B([B] * K, A, grams), B) < 1e-10
        assert rel(lorm_merge_A([A] * K, grams), A) < 1e-10
        scaled = [2.0 * G for G in grams]  # e.g. two statistics passes (spec section 3): cancels
        assert rel(lorm_merge_A(As, scaled), lorm_merge_A(As, grams)) < 1e-12
        assert rel(lorm_merge_B(Bs, A, scaled), lorm_merge_B(Bs, A, grams)) < 1e-12


# ---------------------------------------------------------------------------------------------------
# shrink and sum_grams


def test_shrink():
    g = gen(30)
    X = randn(g, 9, 5)
    G = X.T @ X
    assert torch.equal(shrink(G, 1.0), G)
    assert torch.equal(shrink(G, 0.0), torch.diag(G.diagonal()))
    assert torch.equal(shrink(G, 0, as_diagonal=True), G.diagonal())
    S = shrink(G, 0.3)
    assert torch.allclose(S, 0.3 * G + 0.7 * torch.diag(G.diagonal()), rtol=1e-14, atol=0)
    assert torch.equal(S.diagonal(), G.diagonal())
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.allclose(S[off], 0.3 * G[off], rtol=1e-14, atol=0)
    d = G.diagonal().clone()
    assert shrink(d, 0.5) is d and shrink(d, 0.0, as_diagonal=True) is d
    assert shrink(G.float(), 0.5).dtype == F32


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "x", None])
def test_shrink_rejects_bad_alpha(alpha):
    G = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="alpha"):
        shrink(G, alpha)


def test_shrink_as_diagonal_needs_alpha_zero_and_square_gram():
    with pytest.raises(ValueError, match="alpha"):
        shrink(torch.eye(3, dtype=F64), 0.5, as_diagonal=True)
    with pytest.raises(ValueError, match="square"):
        shrink(torch.ones(3, 4, dtype=F64), 0.5)


def test_sum_grams():
    g = gen(31)
    Gs = [randn(g, 4, 4, dtype=F32) for _ in range(3)]
    S = sum_grams(Gs)
    assert S.dtype == F64 and torch.allclose(S, sum(G.double() for G in Gs), rtol=1e-15, atol=0)
    ds = [torch.rand(4, generator=g) for _ in range(3)]
    assert sum_grams(ds).shape == (4,)
    with pytest.raises(ValueError, match="mixes"):
        sum_grams([Gs[0], ds[0]])
    with pytest.raises(ValueError, match="empty"):
        sum_grams([])
    with pytest.raises(ValueError):
        sum_grams([torch.eye(3), torch.eye(4)])


# ---------------------------------------------------------------------------------------------------
# FedAvg and head


def test_fedavg():
    g = gen(40)
    ts = [randn(g, 3, 2) for _ in range(3)]
    assert torch.allclose(fedavg(ts), (ts[0] + ts[1] + ts[2]) / 3, rtol=1e-15)
    w = [1.0, 2.0, 5.0]
    expected = (ts[0] + 2 * ts[1] + 5 * ts[2]) / 8
    assert torch.allclose(fedavg(ts, w), expected, rtol=1e-14)
    assert torch.allclose(fedavg(ts, [10 * x for x in w]), expected, rtol=1e-14)
    assert torch.allclose(fedavg(ts, torch.tensor(w)), expected, rtol=1e-14)
    assert torch.allclose(fedavg(ts, [0, 1, 0]), ts[1], rtol=1e-15)
    assert fedavg([t.float() for t in ts], w).dtype == F32


@pytest.mark.parametrize(
    "tensors, weights, match",
    [
        ([], None, "empty"),
        ([torch.zeros(2), torch.zeros(3)], None, "shape"),
        ([torch.zeros(2), torch.zeros(2)], [0.0, 0.0], "total"),
        ([torch.zeros(2), torch.zeros(2)], [1.0, -1.0], "non-negative"),
        ([torch.zeros(2), torch.zeros(2)], [1.0], "2 weights"),
        ([torch.zeros(2), torch.zeros(2)], [1.0, float("inf")], "finite"),
    ],
)
def test_fedavg_errors(tensors, weights, match):
    with pytest.raises(ValueError, match=match):
        fedavg(tensors, weights)


def test_merge_head():
    g = gen(41)
    K, C, d = 3, 9, 6
    feats = client_tokens(g, K, d, 8, 20)  # CLS features per client
    n_samples = [f.shape[0] for f in feats]
    grams = [shrink(G, 0.5) for G in full_grams(feats)]
    base_H, base_b = randn(g, C, d), randn(g, C)
    Hs, bs = [], []
    for _ in range(K):
        H, b = base_H.clone(), base_b.clone()
        H[3:6] = randn(g, 3, d)  # only the current task's rows 3..5 differ between clients
        b[3:6] = randn(g, 3)
        Hs.append(H)
        bs.append(b)
    H, b = merge_head(Hs, bs, grams, n_samples)
    N = sum(n_samples)
    assert torch.allclose(b, sum(n * bk for n, bk in zip(n_samples, bs)) / N, rtol=1e-13, atol=1e-15)
    same = [0, 1, 2, 6, 7, 8]
    assert torch.equal(H[same], base_H[same]) and torch.equal(b[same], base_b[same])
    reg = regmean_merge(Hs, grams)
    assert torch.allclose(H[3:6], reg[3:6], rtol=0, atol=0)
    # the RegMean merge itself maps rows identical on all clients to themselves (up to 1e-10 in float64)
    assert (reg[same] - base_H[same]).abs().max() < 1e-10 * base_H.abs().max()
    assert rel(reg[3:6], base_H[3:6]) > 1e-2
    with pytest.raises(ValueError, match="n_samples"):
        merge_head(Hs, bs, grams, n_samples[:2])


# ---------------------------------------------------------------------------------------------------
# TaskAccumulator


def test_task_accumulator_diagonal_property():
    g = gen(50)
    T, d_out, d_in = 3, 4, 6
    acc = TaskAccumulator()
    dWs = [randn(g, d_out, d_in) for _ in range(T)]
    gs = [torch.rand(d_in, generator=g, dtype=F64) * 10 for _ in range(T)]
    for gt in gs:
        gt[2] = 0.0  # no energy in any task -> 0
    gs[1][4] = 0.0  # no energy in task 1 only
    for t in range(T):
        acc.add("blocks.0.attn.qkv", dWs[t], gs[t])
        acc.end_task()
    assert acc.num_tasks == T and acc.names() == ["blocks.0.attn.qkv"] and acc.is_diagonal("blocks.0.attn.qkv")
    delta = acc.delta("blocks.0.attn.qkv")
    assert delta.dtype == F32
    expected = torch.zeros(d_out, d_in, dtype=F64)
    for j in range(d_in):
        total = sum(float(gs[t][j]) for t in range(T))
        if total > 0:
            expected[:, j] = sum(dWs[t][:, j] * gs[t][j] for t in range(T)) / total
    assert torch.allclose(acc.delta("blocks.0.attn.qkv", dtype=F64), expected, rtol=1e-12, atol=1e-15)
    assert torch.allclose(delta, expected.float(), rtol=1e-6, atol=0)
    assert torch.all(delta[:, 2] == 0)


def test_task_accumulator_full_equals_regmean_of_task_deltas():
    g = gen(51)
    T, d_out, d_in = 3, 5, 6
    Xs = client_tokens(g, T, d_in, 3, 8)  # per-task tokens (summed over clients)
    dWs = [randn(g, d_out, 2) @ randn(g, 2, d_in) for _ in range(T)]  # low-rank task deltas B_t A_t
    grams = [shrink(G, 0.7) for G in full_grams(Xs)]
    acc = TaskAccumulator()
    for dW, G in zip(dWs, grams):
        acc.add("fc", dW, G)
    delta = acc.delta("fc", dtype=F64)
    assert rel(delta, regmean_merge(dWs, grams, solver="pinv")) < 1e-10
    assert rel(delta, brute_regmean([virtual_tokens(G) for G in grams], dWs)) < 1e-8
    assert torch.linalg.matrix_rank(delta) > 2  # the deployed delta is not low rank
    assert rel(acc.delta("fc", solver="solve", dtype=F64), delta) < 1e-10


def test_task_accumulator_state_dict_round_trip():
    g = gen(52)
    acc = TaskAccumulator()
    for t in range(2):
        acc.add("blocks.0.mlp.fc1", randn(g, 4, 3), torch.rand(3, generator=g, dtype=F64))
        X = randn(g, 6, 5)
        acc.add("blocks.0.mlp.fc2", randn(g, 2, 5, dtype=F32), X.T @ X)
        acc.end_task()
    buf = io.BytesIO()
    torch.save(acc.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # plain dict of tensors
    acc2 = TaskAccumulator()
    acc2.load_state_dict(state)
    assert acc2.num_tasks == 2 and acc2.names() == acc.names()
    for name in acc.names():
        assert torch.equal(acc2.delta(name), acc.delta(name))
        assert acc2.is_diagonal(name) == acc.is_diagonal(name)
    # the copies are independent and continue identically
    dW, d = randn(g, 4, 3), torch.rand(3, generator=g, dtype=F64)
    before = acc2.delta("blocks.0.mlp.fc1")
    acc.add("blocks.0.mlp.fc1", dW, d)
    assert torch.equal(acc2.delta("blocks.0.mlp.fc1"), before)
    acc2.add("blocks.0.mlp.fc1", dW, d)
    assert torch.equal(acc2.delta("blocks.0.mlp.fc1"), acc.delta("blocks.0.mlp.fc1"))
    with pytest.raises(ValueError):
        TaskAccumulator().load_state_dict({"num_tasks": torch.tensor(0), "S.x": torch.zeros(2, 2)})


def test_task_accumulator_errors():
    acc = TaskAccumulator()
    acc.add("a", torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="diagonal"):
        acc.add("a", torch.zeros(2, 3), torch.eye(3))
    with pytest.raises(ValueError, match="shape"):
        acc.add("a", torch.zeros(3, 3), torch.ones(3))
    with pytest.raises(ValueError, match="d_in"):
        acc.add("b", torch.zeros(2, 3), torch.ones(4))
    with pytest.raises(KeyError):
        acc.delta("nope")


# ---------------------------------------------------------------------------------------------------
# dtypes, validation, scale


def test_float32_in_float32_out():
    g = gen(60)
    Xs = client_tokens(g, 3, 5, 6, 9)
    Gf = [G.float() for G in full_grams(Xs)]
    df = [d.float() for d in diag_grams(Xs)]
    Ws = [randn(g, 4, 5, dtype=F32) for _ in range(3)]
    As = [randn(g, 2, 5, dtype=F32) for _ in range(3)]
    Bs = [randn(g, 4, 2, dtype=F32) for _ in range(3)]
    for grams in (Gf, df):
        assert regmean_merge(Ws, grams).dtype == F32
        assert lorm_merge_A(As, grams).dtype == F32
        assert lorm_merge_B(Bs, As[0], grams).dtype == F32
        # float32 results are the float64 computation rounded once
        ref = regmean_merge([w.double() for w in Ws], [G.double() for G in grams])
        assert rel(regmean_merge(Ws, grams), ref) < 1e-6
    H, b = merge_head(Ws, [w[:, 0] for w in Ws], Gf, [1, 2, 3])
    assert H.dtype == F32 and b.dtype == F32


def test_float64_inside_on_badly_conditioned_grams():
    # cond(G) ~ 1e7: float32 accumulation + solve loses ~all digits, float64 inside loses none
    g = gen(61)
    K, d_in, d_out = 3, 12, 4
    Q, _ = torch.linalg.qr(randn(g, d_in, d_in))
    Gs = []
    for _ in range(K):
        spec = torch.logspace(0, -7, d_in, dtype=F64) * (1 + torch.rand(d_in, generator=g, dtype=F64))
        Gs.append(((Q * spec) @ Q.T).float())
    Ws = [randn(g, d_out, d_in, dtype=F32) for _ in range(K)]
    ref = regmean_merge([w.double() for w in Ws], [G.double() for G in Gs])  # same float32 data, float64 math
    out = regmean_merge(Ws, Gs)
    assert out.dtype == F32
    assert rel(out, ref) < 1e-6
    M32 = sum(w @ G for w, G in zip(Ws, Gs))
    naive = torch.linalg.solve(sum(Gs), M32.T).T  # what float32 inside would give
    assert rel(naive, ref) > 1e-3


def test_diagonal_paths_never_build_d_in_squared():
    # d_in = 2^20: a dense d_in x d_in float64 matrix would be 8 TiB, so any densification fails loudly
    g = gen(62)
    d_in, d_out, r, K = 2**20, 3, 2, 2
    ds = [torch.rand(d_in, generator=g, dtype=F64) for _ in range(K)]
    As = [randn(g, r, d_in) for _ in range(K)]
    Bs = [randn(g, d_out, r) for _ in range(K)]
    A = lorm_merge_A(As, ds)
    j = 12345
    assert torch.allclose(A[:, j], (ds[0][j] * As[0][:, j] + ds[1][j] * As[1][:, j]) / (ds[0][j] + ds[1][j]))
    B = lorm_merge_B(Bs, A, ds)
    C = [(A * d) @ A.T for d in ds]
    assert torch.allclose(B, (Bs[0] @ C[0] + Bs[1] @ C[1]) @ torch.linalg.inv(C[0] + C[1]), rtol=1e-9)
    assert regmean_merge(As, ds).shape == (r, d_in)
    assert sum_grams(ds).shape == (d_in,) and shrink(ds[0], 0.5) is ds[0]
    acc = TaskAccumulator()
    acc.add("x", Bs[0] @ As[0], ds[0])
    assert acc.delta("x").shape == (d_out, d_in)


def test_input_validation():
    G, d = torch.eye(3, dtype=F64), torch.ones(3, dtype=F64)
    W = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="mixes"):
        regmean_merge([W, W], [G, d])
    with pytest.raises(ValueError, match="d_in"):
        regmean_merge([W], [torch.eye(4, dtype=F64)])
    with pytest.raises(ValueError, match="one per client"):
        lorm_merge_A([W, W], [G])
    with pytest.raises(ValueError, match="non-negative"):
        lorm_merge_A([W], [-d])
    with pytest.raises(ValueError, match="non-finite"):
        regmean_merge([W], [G * math.inf])
    with pytest.raises(ValueError, match="solver"):
        regmean_merge([W], [G], solver="inverse")
    with pytest.raises(ValueError, match="shape"):
        regmean_merge([W, torch.zeros(3, 3, dtype=F64)], [G, G])
    with pytest.raises(ValueError, match="A"):
        lorm_merge_B([torch.zeros(2, 2, dtype=F64)], torch.zeros(3, 3, dtype=F64), [G])
    with pytest.raises(ValueError, match="empty"):
        lorm_merge_A([], [])
