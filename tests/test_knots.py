"""Tests of KnOTS (lorm.merging.knots), the task-vector merges it wraps (lorm.merging.task_merging) and the
CKA alignment analysis (lorm.analysis.alignment), on small handmade examples and seeded random data."""

from __future__ import annotations

import pytest
import torch

from lorm.analysis.alignment import linear_cka, update_alignment
from lorm.merging.fedavg import fedavg
from lorm.merging.knots import auto_path, knots_align, knots_align_dense, knots_merge, knots_merge_aligned
from lorm.merging.task_merging import (
    dare,
    disjoint_merge,
    elect_signs,
    merge_deltas,
    merge_vectors,
    ties_mask,
    trim_mask,
)

F64 = torch.float64
F32 = torch.float32


# ---------------------------------------------------------------------------------------------------
# helpers


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lora(g, O, I, ks, scale=0.1, dtype=F64):
    """Per-model LoRA factors with ranks ks; model i gets its own update scale so the models differ."""
    Bs = [scale * (1 + i) * torch.randn(O, k, generator=g, dtype=F64) for i, k in enumerate(ks)]
    As = [torch.randn(k, I, generator=g, dtype=F64) / I**0.5 for k in ks]
    return [B.to(dtype) for B in Bs], [A.to(dtype) for A in As]


def lora_layers(g, n=4, shapes=None, k=3):
    """name -> (Bs, As) for a few layers of different shapes (names deliberately not in sorted order)."""
    shapes = shapes or {"blk1.qkv": (24, 10), "blk0.proj": (10, 10), "blk0.fc": (16, 10)}
    return {name: lora(g, O, I, [k] * n) for name, (O, I) in shapes.items()}


def products(layers):
    """Per-model dicts of dense products B_i A_i."""
    n = len(next(iter(layers.values()))[0])
    return [{name: Bs[i] @ As[i] for name, (Bs, As) in layers.items()} for i in range(n)]


def align_signs(U, Rs, U_ref):
    """Flip the columns of U (and rows of the R_i) to match U_ref's column signs."""
    sg = torch.sign((U * U_ref).sum(0))
    return U * sg, [R * sg.unsqueeze(1) for R in Rs]


def max_dict_diff(a, b):
    assert sorted(a) == sorted(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------------
# alignment paths


CASES = [
    (64, 48, [4] * 5),  # sum k = 20 < O: auto -> qr (the spec's own check: O = 64, I = 48, k = 4, n = 5)
    (16, 40, [4] * 5),  # sum k = 20 >= O = 16: auto -> gram, U is a full rotation
    (30, 20, [1, 3, 8, 2]),  # heterogeneous ranks
    (10, 3, [5, 5]),  # k > I: A_i^T has more columns than rows
]


@pytest.mark.parametrize("O,I,ks", CASES)
def test_align_paths_agree(O, I, ks):
    """dense / qr / gram: same kept rank, same U U^T, same sign-aligned R_i, same products U R_i (1e-10)."""
    Bs, As = lora(gen(O + I), O, I, ks)
    Ud, Rd = knots_align(Bs, As, path="dense")
    assert Ud.dtype == F64 and Ud.shape == (O, min(O, sum(ks), len(ks) * I))
    assert torch.allclose(Ud.T @ Ud, torch.eye(Ud.shape[1], dtype=F64), atol=1e-12)
    for i, (B, A) in enumerate(zip(Bs, As)):
        assert torch.allclose(Ud @ Rd[i], B @ A, atol=1e-12)  # every dW_i lies in span(U)
        assert torch.allclose(Rd[i], Ud.T @ (B @ A), atol=1e-12)  # R_i = S V_i^T = U^T dW_i
    for path in ("qr", "gram"):
        U, Rs = knots_align(Bs, As, path=path)
        assert U.shape == Ud.shape and all(R.shape == (Ud.shape[1], I) for R in Rs)
        assert float((U @ U.T - Ud @ Ud.T).abs().max()) < 1e-10
        U, Rs = align_signs(U, Rs, Ud)
        assert float((U - Ud).abs().max()) < 1e-10
        for R, R_ref in zip(Rs, Rd):
            assert float((R - R_ref).abs().max()) < 1e-10


def test_align_dense_deltas_matches_factors():
    Bs, As = lora(gen(1), 20, 12, [2, 3, 4])
    U, Rs = knots_align(Bs, As, path="dense")
    U2, Rs2 = knots_align_dense([B @ A for B, A in zip(Bs, As)])
    assert torch.allclose(U @ U.T, U2 @ U2.T, atol=1e-12)
    assert all(torch.allclose(U @ R, U2 @ R2, atol=1e-12) for R, R2 in zip(Rs, Rs2))


def test_auto_picks_qr_below_O_and_gram_otherwise():
    assert auto_path([4] * 5, 64) == "qr"
    assert auto_path([4] * 5, 21) == "qr"
    assert auto_path([4] * 5, 20) == "gram"  # sum k == O counts as "not below"
    assert auto_path([4] * 5, 16) == "gram"
    # knots_align(auto) runs exactly the chosen path: bit-identical outputs
    for O, expected in ((64, "qr"), (20, "gram"), (16, "gram")):
        Bs, As = lora(gen(O), O, 12, [4] * 5)
        U, Rs = knots_align(Bs, As, path="auto")
        U2, Rs2 = knots_align(Bs, As, path=expected)
        assert torch.equal(U, U2) and all(torch.equal(R, R2) for R, R2 in zip(Rs, Rs2))


def test_threshold_drops_zero_and_tiny_components():
    """Kept rank = rank of M: a zero model adds nothing; s <= eps is dropped on every path."""
    g = gen(2)
    Bs, As = lora(g, 12, 9, [2, 2])
    Bs.append(torch.zeros(12, 3, dtype=F64))
    As.append(torch.randn(3, 9, generator=g, dtype=F64))
    for path in ("dense", "qr", "gram"):
        U, Rs = knots_align(Bs, As, path=path)
        assert U.shape[1] == 4
        assert float(Rs[2].abs().max()) < 1e-12
    big_eps = float(torch.linalg.svdvals(torch.cat([B @ A for B, A in zip(Bs, As)], 1))[1])
    for path in ("dense", "qr", "gram"):
        assert knots_align(Bs, As, path=path, eps=big_eps * 1.0001)[0].shape[1] == 1


# ---------------------------------------------------------------------------------------------------
# KnOTS merges


@pytest.mark.parametrize("merging_type", ["sum", "mean"])
@pytest.mark.parametrize("path", ["dense", "qr", "gram"])
def test_knots_ta_equals_ta_over_products(merging_type, path):
    layers = lora_layers(gen(3), n=5)
    knots = knots_merge(layers, "ta", lam=0.7, merging_type=merging_type, path=path)
    plain = merge_deltas(products(layers), "ta", lam=0.7, merging_type=merging_type)
    n = 5
    for name, (Bs, As) in layers.items():
        ref = 0.7 * sum(B @ A for B, A in zip(Bs, As)) / (n if merging_type == "mean" else 1)
        assert torch.allclose(plain[name], ref, atol=1e-14)
    assert max_dict_diff(knots, plain) < 1e-12


def test_weighted_knots_ta_is_fedavg_over_products():
    """weights p_c with 'mean': lam (1/n) sum_c n p_c dW_c = lam sum_c p_c dW_c (FedAvg of products, not factors)."""
    layers = lora_layers(gen(4), n=4)
    p = [0.1, 0.2, 0.3, 0.4]
    knots = knots_merge(layers, "ta", lam=1.0, merging_type="mean", weights=p)
    for name, (Bs, As) in layers.items():
        ref = fedavg([B @ A for B, A in zip(Bs, As)], p)
        assert torch.allclose(knots[name], ref, atol=1e-12)
        # FedAvg over factors is something else (cross-terms B_c A_c')
        factor_avg = fedavg(Bs, p) @ fedavg(As, p)
        assert float((factor_avg - ref).abs().max()) > 1e-3


def test_knots_ties_invariant_to_model_order():
    layers = lora_layers(gen(5), n=5)
    ref = knots_merge(layers, "ties", lam=0.6, topk=20)
    perm = [3, 0, 4, 2, 1]
    permuted = {name: ([Bs[i] for i in perm], [As[i] for i in perm]) for name, (Bs, As) in layers.items()}
    for path in ("dense", "qr", "gram"):
        out = knots_merge(permuted, "ties", lam=0.6, topk=20, path=path)
        assert max_dict_diff(out, ref) < 1e-10


@pytest.mark.parametrize("method,kw", [("ties", {"topk": 30}), ("dare-ties", {"dare_p": 0.3, "seed": 7}),
                                        ("ties", {"topk": 30, "merging_type": "sum"})])
def test_knots_merge_invariant_to_singular_pair_sign_flips(method, kw):
    layers = lora_layers(gen(6), n=4)
    aligned = {name: knots_align(Bs, As) for name, (Bs, As) in layers.items()}
    ref = knots_merge_aligned(aligned, method, lam=0.5, **kw)
    g = gen(60)
    flipped = {}
    for name, (U, Rs) in aligned.items():
        sg = torch.where(torch.rand(U.shape[1], generator=g) < 0.5, -1.0, 1.0).to(F64)
        assert (sg < 0).any()
        flipped[name] = (U * sg, [R * sg.unsqueeze(1) for R in Rs])
    out = knots_merge_aligned(flipped, method, lam=0.5, **kw)
    assert max_dict_diff(out, ref) < 1e-13
    # and knots_merge = align + knots_merge_aligned
    assert max_dict_diff(knots_merge(layers, method, lam=0.5, **kw), ref) < 1e-13


def test_knots_ties_differs_from_plain_ties():
    layers = lora_layers(gen(7), n=5)
    knots = knots_merge(layers, "ties", lam=1.0, topk=20)
    plain = merge_deltas(products(layers), "ties", lam=1.0, topk=20)
    scale = max(float(v.abs().max()) for v in plain.values())
    assert max_dict_diff(knots, plain) > 0.05 * scale
    # at topk 100 both are TIES without trim: still different (sign election per coordinate system)
    assert max_dict_diff(knots_merge(layers, "ties", lam=1.0, topk=100),
                         merge_deltas(products(layers), "ties", lam=1.0, topk=100)) > 1e-3 * scale


def test_knots_heterogeneous_ranks_all_paths_agree():
    g = gen(8)
    layers = {"a": lora(g, 30, 20, [1, 3, 8, 2]), "b": lora(g, 9, 14, [4, 1, 2, 6])}  # b: sum k >= O
    for method, kw in (("ties", {"topk": 25}), ("dare-ties", {"dare_p": 0.2, "seed": 3}), ("ta", {})):
        ref = knots_merge(layers, method, lam=0.8, path="dense", **kw)
        for path in ("qr", "gram", "auto"):
            assert max_dict_diff(knots_merge(layers, method, lam=0.8, path=path, **kw), ref) < 1e-10
    ta = merge_deltas(products(layers), "ta", lam=0.8)
    assert max_dict_diff(knots_merge(layers, "ta", lam=0.8), ta) < 1e-12
    U, _ = knots_align(*layers["a"])
    assert U.shape[1] == 14  # sum of the ranks


def test_knots_merge_dtype_and_aligned_dtype():
    g = gen(9)
    layers = {"x": lora(g, 12, 8, [2, 2, 2], dtype=F32)}
    out = knots_merge(layers, "ties", lam=1.0, topk=50)
    assert out["x"].dtype == F32 and out["x"].shape == (12, 8)
    aligned = {"x": knots_align(*layers["x"])}
    assert aligned["x"][0].dtype == F64
    assert knots_merge_aligned(aligned, "ties", lam=1.0, topk=50)["x"].dtype == F64
    assert knots_merge_aligned(aligned, "ties", lam=1.0, topk=50, dtype=F32)["x"].dtype == F32


def test_knots_dare_acts_on_aligned_parts():
    """KnOTS-DARE-TIES = DARE on the R_i (model order, then sorted layer order), then TIES without trim."""
    layers = lora_layers(gen(10), n=3)
    names = sorted(layers)
    aligned = {name: knots_align(Bs, As) for name, (Bs, As) in layers.items()}
    g = gen(11)
    dropped = dare([aligned[name][1][i] for i in range(3) for name in names], 0.4, g)
    per_model = [{name: dropped[i * len(names) + j] for j, name in enumerate(names)} for i in range(3)]
    merged = merge_deltas(per_model, "ties", lam=0.9, topk=100)
    ref = {name: aligned[name][0] @ merged[name] for name in names}
    out = knots_merge(layers, "dare-ties", lam=0.9, dare_p=0.4, seed=11)
    assert max_dict_diff(out, ref) < 1e-13


# ---------------------------------------------------------------------------------------------------
# building blocks on handmade examples


def test_trim_threshold_keeps_ties():
    X = torch.tensor([[3.0, -1.0, 2.0, -2.0, 0.5]], dtype=F64)
    # D = 5, K = 0.4: q = 5 - floor(2) = 3; tau = 3rd smallest |x| = 2; |x| >= 2 keeps 3 entries (tie kept)
    expected = torch.tensor([[True, False, True, True, False]])
    assert torch.equal(trim_mask(X, 40), expected)
    assert torch.equal(trim_mask(X, 0.4), expected)  # 40 and 0.4 mean the same
    assert torch.equal(trim_mask(X, 100), torch.ones_like(expected))
    assert torch.equal(trim_mask(X, 1), torch.ones_like(expected))  # 1 = 100 % (values > 1 are percent)
    assert torch.equal(trim_mask(X, 250), torch.ones_like(expected))
    # distinct magnitudes: floor(D K) + 1 entries survive (official count); thresholds are per row
    Y = torch.stack([torch.arange(1.0, 11.0, dtype=F64), -10 * torch.arange(10.0, 0.0, -1.0, dtype=F64)])
    m = trim_mask(Y, 25)  # D = 10: floor(2.5) = 2, q = 8 -> 3 largest per row
    assert m.sum(1).tolist() == [3, 3]
    assert torch.equal(m[0], Y[0].abs() >= 8) and torch.equal(m[1], Y[1].abs() >= 80)
    assert trim_mask(Y, 27).sum(1).tolist() == [3, 3]  # floor(2.7) = 2, not rounded
    # floor(D K) in double precision, like the official int(d * K): 0.29 * 100 = 28.999... -> 28 -> 29 kept
    Z = torch.arange(1.0, 101.0, dtype=F64).unsqueeze(0)
    assert int(trim_mask(Z, 29).sum()) == 29 and int(trim_mask(Z, 30).sum()) == 31


def test_sign_election_with_zero_column_sum():
    Xt = torch.tensor([[1.0, -2.0, 3.0, 1.0], [-1.0, 1.0, 1.0, 1.0]], dtype=F64)
    # column sums [0, -1, 4, 2]: signs [0, -1, 1, 1]; majority sign(1) = +1 fills the zero
    assert elect_signs(Xt).tolist() == [1.0, -1.0, 1.0, 1.0]
    # in the TIES mask (no trim) column 0 keeps only the positive entry
    m = ties_mask(Xt, 100)
    assert m.tolist() == [[True, True, True, True], [False, False, True, True]]
    # majority negative: the zero-sum column goes negative
    Xn = torch.tensor([[1.0, -2.0, -3.0], [-1.0, 1.0, 1.0]], dtype=F64)
    assert elect_signs(Xn).tolist() == [-1.0, -1.0, -1.0]
    assert ties_mask(Xn, 100).tolist() == [[False, True, True], [True, False, False]]


def test_ties_mask_elects_on_trimmed_values_and_zeros_never_agree():
    X = torch.tensor([[10.0, 0.1, 0.0, 5.0], [-0.2, -0.3, 0.0, -6.0], [-0.3, 0.2, 0.0, 4.0]], dtype=F64)
    # topk 50 (D = 4: q = 2, keep the 3 largest |x| per row): row 0 keeps 10, 0.1, 5 (0 dropped), row 1
    # keeps -0.2, -0.3, -6 and row 2 -0.3, 0.2, 4. Trimmed column sums: [9.5, 0.0, 0, 3.0]; column 1 sum
    # 0.1 - 0.3 + 0.2 = 0 -> majority sign; column 2 is all zero (zeros never agree).
    t = trim_mask(X, 50)
    assert t.tolist() == [[True, True, False, True], [True, True, False, True], [True, True, False, True]]
    sigma = elect_signs(torch.where(t, X, 0.0))
    assert sigma.tolist()[0] == 1.0 and sigma.tolist()[3] == 1.0
    m = ties_mask(X, 50)
    assert m[:, 2].tolist() == [False, False, False]
    assert m[:, 0].tolist() == [True, False, False]
    assert m[:, 3].tolist() == [True, False, True]


def test_sign_is_elected_on_trimmed_values_only():
    X = torch.tensor([[1.0, 9.0, 8.0, 7.0], [-2.0, 0.1, 8.0, 7.0], [1.5, 9.0, 0.2, 7.0]], dtype=F64)
    # topk 50 (q = 2): each row keeps its 3 largest |x|. Column 0 untrimmed sums to +0.5, but the 1.0 of
    # row 0 is trimmed away, so the vote is -2 + 1.5 < 0: only row 1 survives there.
    assert trim_mask(X, 50)[:, 0].tolist() == [False, True, True]
    m = ties_mask(X, 50)
    assert m[:, 0].tolist() == [False, True, False]
    assert merge_vectors(X, "ties", lam=1.0, topk=50)[0].item() == -2.0


def test_disjoint_merge_counts_only_surviving_nonzeros():
    X = torch.tensor([[1.0, 2.0, 0.0, 4.0], [3.0, -2.0, 0.0, 0.0], [5.0, 7.0, 0.0, 1.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, True], [True, True, True, True], [False, False, True, False]])
    # col0: (1 + 3) / 2; col1: (2 - 2) / 2 = 0; col2: 0 / max(1, 0) = 0; col3: 4 / 1 (the zero is not counted)
    assert disjoint_merge(X, mask, 0.5, "mean").tolist() == [1.0, 0.0, 0.0, 2.0]
    assert disjoint_merge(X, mask, 0.5, "sum").tolist() == [2.0, 0.0, 0.0, 2.0]
    # TIES end to end: mean over the agreeing models only
    Y = torch.tensor([[1.0, -1.0], [3.0, 2.0], [-1.0, 3.0]], dtype=F64)
    assert merge_vectors(Y, "ties", lam=1.0, topk=100).tolist() == [2.0, 2.5]
    assert merge_vectors(Y, "ties", lam=2.0, topk=100, merging_type="sum").tolist() == [8.0, 10.0]
    # TA 'mean' is a plain 1/n mean (no count)
    Z = torch.tensor([[2.0, 0.0], [4.0, 3.0]], dtype=F64)
    assert merge_vectors(Z, "ta", lam=1.0).tolist() == [3.0, 1.5]
    assert merge_vectors(Z, "ta", lam=0.5, merging_type="sum").tolist() == [3.0, 1.5]


def test_dare_rescale_expectation_and_determinism():
    x = torch.linspace(-1.0, 2.0, 40, dtype=F64).unsqueeze(0)
    p = 0.6
    one = merge_vectors(x, "dare", lam=1.0, dare_p=p, seed=123, merging_type="sum")
    assert torch.equal(one, merge_vectors(x, "dare", lam=1.0, dare_p=p, seed=123, merging_type="sum"))
    assert not torch.equal(one, merge_vectors(x, "dare", lam=1.0, dare_p=p, seed=124, merging_type="sum"))
    kept = one != 0
    assert torch.allclose(one[kept], x[0][kept] / (1 - p), atol=1e-15)  # survivors rescaled exactly
    S = 2000
    mean = sum(merge_vectors(x, "dare", lam=1.0, dare_p=p, seed=s, merging_type="sum") for s in range(S)) / S
    sd = x[0].abs() * (p / (1 - p)) ** 0.5 / S**0.5  # std of the mean over seeds
    assert bool(((mean - x[0]).abs() <= 5 * sd + 1e-12).all())
    # the same seed gives the same mask; p = 0 is TA; the dare() building block is the same draw
    X = torch.randn(3, 50, generator=gen(12), dtype=F64)
    assert torch.equal(merge_vectors(X, "dare", lam=0.3, dare_p=0.0, seed=0), merge_vectors(X, "ta", lam=0.3))
    dropped = dare(X, 0.5, gen(5))
    assert torch.allclose(merge_vectors(X, "dare", lam=1.0, dare_p=0.5, seed=5), dropped.mean(0), atol=1e-15)
    assert 0.35 < float((dropped != 0).double().mean()) < 0.65


def test_merge_deltas_dare_mask_order_model_then_sorted_layer():
    g = gen(13)
    deltas = [{"z": torch.randn(3, 4, generator=g, dtype=F64), "a": torch.randn(5, generator=g, dtype=F64)}
              for _ in range(3)]
    out = merge_deltas(deltas, "dare", lam=1.0, dare_p=0.5, seed=21, merging_type="sum")
    dropped = dare([d[name] for d in deltas for name in ("a", "z")], 0.5, gen(21))
    assert torch.allclose(out["a"], dropped[0] + dropped[2] + dropped[4], atol=1e-15)
    assert torch.allclose(out["z"], dropped[1] + dropped[3] + dropped[5], atol=1e-15)


def test_merge_deltas_flattens_sorted_layers_with_global_topk():
    g = gen(14)
    n = 3
    # layer "b" (12 entries) is large, layer "a" (12 entries) tiny. D = 24, topk 46 %: floor(11.04) + 1 = 12
    # entries survive per model, globally: exactly all of "b" and nothing of "a" (a per-layer trim would
    # keep about half of each)
    deltas = [{"b": 10 + torch.rand(4, 3, generator=g, dtype=F64), "a": 0.01 * torch.randn(12, generator=g, dtype=F64)}
              for _ in range(n)]
    out = merge_deltas(deltas, "ties", lam=1.0, topk=46)
    assert torch.equal(out["a"], torch.zeros(12, dtype=F64))
    assert torch.allclose(out["b"], sum(d["b"] for d in deltas) / n, atol=1e-14)
    # identical to merge_vectors on the concatenation in sorted name order, whatever the dict order
    X = torch.stack([torch.cat([d["a"].reshape(-1), d["b"].reshape(-1)]) for d in deltas])
    flat = merge_vectors(X, "ties", lam=1.0, topk=30)
    reordered = [{"a": d["a"], "b": d["b"]} for d in deltas]
    for ds in (deltas, reordered):
        o = merge_deltas(ds, "ties", lam=1.0, topk=30)
        assert torch.equal(torch.cat([o["a"].reshape(-1), o["b"].reshape(-1)]), flat)
    # per-layer trimming would have been different
    per_layer = merge_vectors(torch.stack([d["a"] for d in deltas]), "ties", lam=1.0, topk=30)
    assert not torch.equal(per_layer, flat[:12])


def test_dtype_and_weights():
    X = torch.randn(4, 30, generator=gen(15))
    for method, kw in (("ta", {}), ("ties", {"topk": 20}), ("dare", {"dare_p": 0.1, "seed": 1}),
                       ("dare-ties", {"dare_p": 0.1, "seed": 1})):
        out = merge_vectors(X, method, lam=0.5, **kw)
        assert out.dtype == F32 and out.shape == (30,)
        # uniform weights are the paper's unweighted merge
        assert torch.allclose(merge_vectors(X, method, lam=0.5, weights=[2, 2, 2, 2], **kw), out, atol=1e-6)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    X64 = X.double()
    scaled = X64 * (4 * w).unsqueeze(1)
    assert torch.allclose(merge_vectors(X64, "ties", lam=0.5, topk=20, weights=w),
                          merge_vectors(scaled, "ties", lam=0.5, topk=20), atol=1e-15)
    assert torch.allclose(merge_vectors(X64, "ta", lam=1.0, weights=w), (w.unsqueeze(1) * X64).sum(0), atol=1e-14)
    # a list of 1-D rows is accepted too
    assert torch.equal(merge_vectors(list(X64), "ties", lam=0.5, topk=20), merge_vectors(X64, "ties", lam=0.5, topk=20))


# ---------------------------------------------------------------------------------------------------
# errors


def test_errors_are_clear():
    X = torch.randn(3, 10, generator=gen(16), dtype=F64)
    with pytest.raises(ValueError, match="seed"):
        merge_vectors(X, "dare", lam=1.0, dare_p=0.3)
    with pytest.raises(ValueError, match="seed"):
        merge_vectors(X, "dare-ties", lam=1.0, dare_p=0.3, seed=None)
    with pytest.raises(ValueError, match="seed"):
        merge_vectors(X, "dare", lam=1.0, dare_p=0.3, seed=1.5)
    with pytest.raises(ValueError, match="per-model"):
        merge_vectors(X, "ties", lam=[0.5, 0.6, 0.7], topk=20)
    with pytest.raises(ValueError, match="per-model"):
        merge_vectors(X, "ta", lam=torch.tensor([0.5, 0.6, 0.7]))
    with pytest.raises(ValueError, match="per-model"):
        knots_merge(lora_layers(gen(1)), "ta", lam=(0.1, 0.2, 0.3, 0.4))
    with pytest.raises(ValueError, match="topk"):
        merge_vectors(X, "ties", lam=1.0)
    with pytest.raises(ValueError, match="topk"):
        merge_vectors(X, "ties", lam=1.0, topk=0)
    with pytest.raises(ValueError, match="topk"):
        merge_vectors(X, "ta", lam=1.0, topk=20)
    with pytest.raises(ValueError, match="topk"):
        merge_vectors(X, "dare-ties", lam=1.0, topk=20, dare_p=0.1, seed=0)
    with pytest.raises(ValueError, match="dare_p"):
        merge_vectors(X, "dare", lam=1.0, dare_p=1.0, seed=0)
    with pytest.raises(ValueError, match="dare_p"):
        merge_vectors(X, "ties", lam=1.0, topk=20, dare_p=0.1)
    with pytest.raises(ValueError, match="method"):
        merge_vectors(X, "tsvm", lam=1.0)
    with pytest.raises(ValueError, match="merging_type"):
        merge_vectors(X, "ta", lam=1.0, merging_type="max")
    with pytest.raises(ValueError, match="weights"):
        merge_vectors(X, "ta", lam=1.0, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        merge_vectors(torch.tensor([[1.0, float("nan")]]), "ta", lam=1.0)
    # mismatched shapes / names
    a = {"l1": torch.zeros(2, 3), "l2": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        merge_deltas([a, {"l1": torch.zeros(3, 2), "l2": torch.zeros(4)}], "ta", lam=1.0)
    with pytest.raises(ValueError, match="layer names differ"):
        merge_deltas([a, {"l1": torch.zeros(2, 3)}], "ta", lam=1.0)
    g = gen(17)
    Bs, As = lora(g, 8, 6, [2, 3])
    with pytest.raises(ValueError, match="rank mismatch"):
        knots_align(Bs, [As[0], As[0]])
    with pytest.raises(ValueError, match="out_features"):
        knots_align([Bs[0], torch.zeros(7, 3, dtype=F64)], As)
    with pytest.raises(ValueError, match="in_features"):
        knots_align(Bs, [As[0], torch.zeros(3, 5, dtype=F64)])
    with pytest.raises(ValueError, match="path"):
        knots_align(Bs, As, path="svd")
    with pytest.raises(ValueError, match=r"layers\['y'\]: 1 models"):
        knots_merge({"x": (Bs, As), "y": (Bs[:1], As[:1])}, "ta", lam=1.0)
    with pytest.raises(ValueError, match=r"layers\['x'\].*rank mismatch"):
        knots_merge({"x": (Bs, [As[1], As[0]])}, "ta", lam=1.0)


# ---------------------------------------------------------------------------------------------------
# CKA


def test_linear_cka_identity_and_invariances():
    g = gen(18)
    X = torch.randn(200, 6, generator=g, dtype=F64) @ torch.randn(6, 6, generator=g, dtype=F64)
    Y = X[:, :4] @ torch.randn(4, 5, generator=g, dtype=F64) + 0.5 * torch.randn(200, 5, generator=g, dtype=F64)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-14)
    c = linear_cka(X, Y)
    assert 0.0 < c < 1.0
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    assert linear_cka(X @ Q, Y) == pytest.approx(c, abs=1e-12)
    assert linear_cka(3.7 * X, 0.01 * Y) == pytest.approx(c, abs=1e-12)
    assert linear_cka(X + 5.0, Y - 2.0) == pytest.approx(c, abs=1e-12)  # columns are centred
    assert linear_cka(Y, X) == pytest.approx(c, abs=1e-12)
    # matches the kernel (HSIC) form on a small N
    H = torch.eye(200, dtype=F64) - 1.0 / 200
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    assert c == pytest.approx(float((K * L).sum() / ((K * K).sum() * (L * L).sum()).sqrt()), abs=1e-12)
    with pytest.raises(ValueError, match="zero variance"):
        linear_cka(X, torch.ones(200, 3, dtype=F64))
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(X, Y[:100])


def test_update_alignment_lora_knots_scaled_and_knots():
    g = gen(19)
    n, N = 4, 300
    shapes = {"q": (12, 10), "v": (9, 10)}
    deltas = [{name: (0.5 + i) * torch.randn(O, 2, generator=g, dtype=F64) @ torch.randn(2, I, generator=g, dtype=F64)
               for name, (O, I) in shapes.items()} for i in range(n)]
    # shared structure so that the alignment is neither 0 nor 1
    common = {name: torch.randn(O, I, generator=g, dtype=F64) for name, (O, I) in shapes.items()}
    deltas = [{name: d[name] + 0.7 * common[name] * (1 + i) for name in d} for i, d in enumerate(deltas)]
    inputs = {name: torch.randn(N, I, generator=g, dtype=F64) * torch.linspace(0.2, 3, I, dtype=F64)
              for name, (_, I) in shapes.items()}
    inputs["unused"] = torch.zeros(3, 3)
    lo = update_alignment(deltas, inputs, "lora")
    assert lo.shape == (n, n) and torch.allclose(lo, lo.T) and torch.allclose(lo.diagonal(), torch.ones(n, dtype=F64))
    # brute force: average over layers of linear CKA of the activations dW_i x
    ref = torch.zeros(n, n, dtype=F64)
    for name in shapes:
        for i in range(n):
            for j in range(n):
                ref[i, j] += linear_cka(inputs[name] @ deltas[i][name].T, inputs[name] @ deltas[j][name].T) / 2
    assert torch.allclose(lo, ref, atol=1e-12)
    # isometry (spec section 10): U^T dW_i x has exactly the CKA of dW_i x
    assert torch.allclose(update_alignment(deltas, inputs, "knots-scaled"), lo, atol=1e-10)
    kn = update_alignment(deltas, inputs, "knots")
    assert float((kn - lo).abs().max()) > 1e-2
    # brute force of the unscaled reading: V_i^T x with V_i^T = S^-1 U^T dW_i
    ref_kn = torch.zeros(n, n, dtype=F64)
    for name in shapes:
        M = torch.cat([d[name] for d in deltas], dim=1)
        _, s, vh = torch.linalg.svd(M, full_matrices=False)
        vh = vh[s > 1e-5]
        I = shapes[name][1]
        for i in range(n):
            for j in range(n):
                ref_kn[i, j] += linear_cka(inputs[name] @ vh[:, i * I:(i + 1) * I].T,
                                           inputs[name] @ vh[:, j * I:(j + 1) * I].T) / 2
    assert torch.allclose(kn, ref_kn, atol=1e-10)
    with pytest.raises(ValueError, match="representation"):
        update_alignment(deltas, inputs, "svd")
    with pytest.raises(ValueError, match="no activations"):
        update_alignment(deltas, {"q": inputs["q"]})
