"""PILoRA (baselines2-spec section 6): prototype logits, the orthogonality loss, the server's prototype
re-weighting, the frozen old LoRA slots, the coupled-decay Adam of train_local, and end-to-end runs (tiny ViT,
MiniLM) with their communication and a resume after a crash."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lorm.config import load_config
from lorm.data.datasets import build_dataset
from lorm.federated.simulator import run_experiment
from lorm.federated.training import Runtime, generator, train_local
from lorm.methods.pilora import PILoRA, PrototypeHead, QKVWithQVLoRA, orthogonality_loss, reweight_prototypes
from lorm.models.backbones import build_classifier
from lorm.models.lora import LoRALinear

from conftest import run_until_crash, tiny_text_setup
from test_baselines import make_method, setup  # noqa: F401  (the tiny-ViT fixture of the baselines' tests)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ model pieces


def test_logits_are_minus_scaled_distances_to_the_prototypes():
    gen = torch.Generator().manual_seed(0)
    table, f = torch.randn(5, 4, generator=gen), torch.randn(3, 4, generator=gen)
    head = PrototypeHead(table, temperature=0.5)
    logits = head(f)
    for b in range(3):
        for c in range(5):
            dist = math.sqrt(sum((float(f[b, i]) - float(table[c, i])) ** 2 for i in range(4)) / 4)
            assert float(logits[b, c]) == pytest.approx(-dist / 0.5, rel=1e-5)
    # a trainable block replaces rows [lo, hi) of the table in the forward; only it gets a gradient
    head.load(table, block=(2, 4))
    with torch.no_grad():
        head.current.add_(1.0)
    moved = table.clone()
    moved[2:4] += 1.0
    torch.testing.assert_close(head(f), PrototypeHead(moved, 0.5)(f))
    head(f).sum().backward()
    assert head.current.grad is not None and float(head.current.grad.abs().sum()) > 0
    assert not head.table.requires_grad and [n for n, p in head.named_parameters()] == ["current"]


def test_orthogonality_loss_is_zero_for_orthogonal_down_projections_and_positive_otherwise():
    eye = torch.eye(6)
    current, old = eye[:2], [eye[2:4], eye[4:6]]
    assert float(orthogonality_loss(current, old)) == 0.0
    assert float(orthogonality_loss(current, [])) == 0.0
    gen = torch.Generator().manual_seed(1)
    a, b1, b2 = (torch.randn(2, 6, generator=gen) for _ in range(3))
    expected = sum(abs(float(a[i] @ b[j])) for b in (b1, b2) for i in range(2) for j in range(2))
    assert float(orthogonality_loss(a, [b1, b2])) == pytest.approx(expected, rel=1e-5) and expected > 0


def _hand_reweight(P: np.ndarray, F_: np.ndarray, soft_temp: float) -> np.ndarray:
    """Spec 6.3 for one class, written out with loops: P (K, d) the clients' prototypes, F_ (n_c, d) the means."""
    s = [sum(math.sqrt(sum((P[k, i] - F_[j, i]) ** 2 for i in range(P.shape[1]))) for j in range(len(F_)))
         for k in range(len(P))]
    r = [1.0 / (x + 1e-10) for x in s]
    lo, hi = min(r), max(r)
    norm = [(x - lo) / (hi - lo) for x in r]
    e = [math.exp(soft_temp * x) for x in norm]
    w = [x / sum(e) for x in e]
    return sum(w[k] * P[k] for k in range(len(P)))


def test_server_reweighting_equals_the_hand_computation_of_the_spec():
    gen = torch.Generator().manual_seed(2)
    K, n, d, lo = 3, 2, 5, 6
    protos = torch.randn(K, n, d, generator=gen, dtype=torch.float64)
    previous = torch.randn(n, d, generator=gen, dtype=torch.float64)
    m = torch.randn(3, d, generator=gen, dtype=torch.float64)
    means = [{"classes": torch.tensor([6]), "mean": m[:1]},            # client 0: class 6
             {"classes": torch.tensor([6, 7]), "mean": m[1:3]},        # client 1: classes 6 and 7
             {"classes": torch.tensor([], dtype=torch.long), "mean": m[:0]}]  # client 2: nothing above min_count
    out = reweight_prototypes(protos, means, lo, previous, soft_temp=5.0)
    P = protos.numpy()
    np.testing.assert_allclose(out[0].numpy(), _hand_reweight(P[:, 0], m[:2].numpy(), 5.0), rtol=1e-10)
    np.testing.assert_allclose(out[1].numpy(), _hand_reweight(P[:, 1], m[2:3].numpy(), 5.0), rtol=1e-10)
    # the weights favour the client whose prototype is nearest the means
    assert not torch.allclose(out[1], protos[:, 1].mean(0))


def test_server_reweighting_unreported_classes_official_index_and_equidistant_clients():
    gen = torch.Generator().manual_seed(3)
    K, n, d, lo = 2, 4, 3, 6  # offset 6 is not a multiple of the task size 4: official slot = y mod 4
    protos = torch.randn(K, n, d, generator=gen, dtype=torch.float64)
    previous = torch.randn(n, d, generator=gen, dtype=torch.float64)
    mean = torch.randn(1, d, generator=gen, dtype=torch.float64)
    means = [{"classes": torch.tensor([6]), "mean": mean}, {"classes": torch.tensor([6]), "mean": mean}]
    kept = reweight_prototypes(protos, means, lo, previous)
    torch.testing.assert_close(kept[1:], previous[1:])  # unreported: the server's previous value (Q36)
    assert not torch.allclose(kept[0], previous[0])
    averaged = reweight_prototypes(protos, means, lo, previous, unreported="mean")
    torch.testing.assert_close(averaged[1:], protos[:, 1:].mean(0))
    torch.testing.assert_close(averaged[0], kept[0])
    official = reweight_prototypes(protos, means, lo, previous, official_index=True)  # 6 mod 4 = 2 (Q34)
    torch.testing.assert_close(official[2], kept[0].new_tensor(
        _hand_reweight(protos[:, 2].numpy(), mean.numpy(), 5.0)))
    torch.testing.assert_close(official[0], previous[0])
    # every client equally far from the means (here: identical copies): uniform weights, no NaN (Q35)
    same = protos[:1].expand(K, n, d).clone()
    out = reweight_prototypes(same, means, lo, previous)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], same[0, 0])
    mirrored = torch.stack([mean[0] + 1.0, mean[0] - 1.0]).unsqueeze(1).expand(K, n, d).clone()  # distinct, equidistant
    torch.testing.assert_close(reweight_prototypes(mirrored, means, lo, previous)[0], mean[0])
    with pytest.raises(ValueError):
        reweight_prototypes(protos, [{"classes": torch.tensor([2]), "mean": mean}], lo, previous)


# ------------------------------------------------------------------------------------------------ the method


def _finish_task_with_random_slot(algo: PILoRA, task: int, seed: int) -> None:
    """Pretend task ``task`` was trained: random merged factors (B != 0), then the task ends."""
    gen = torch.Generator().manual_seed(seed)
    algo.begin_task(task)
    for f in algo.factors.values():
        f["A"] = torch.randn(f["A"].shape, generator=gen) * 0.1
        f["B"] = torch.randn(f["B"].shape, generator=gen) * 0.1
    algo.end_task(task)


def test_placement_is_q_and_v_of_block_0_only_with_the_fused_qkv_reproduced(setup):  # noqa: F811
    cfg, *_ = setup
    torch.manual_seed(0)  # timm's random init draws from the global RNG, as in make_method
    plain = build_classifier(cfg["model"], 10, generator=generator(0, 0), lora=False)
    qkv = plain.encoder.vit.blocks[0].attn.qkv
    algo = make_method(setup, "pilora")
    assert sorted(algo.layers) == ["encoder.vit.blocks.0.attn.qkv.q", "encoder.vit.blocks.0.attn.qkv.v"]
    assert all(isinstance(m, LoRALinear) for m in algo.layers.values())
    assert all(layer.rank == 4 for layer in algo.layers.values())
    wrapped = algo.model.encoder.vit.blocks[0].attn.qkv
    assert isinstance(wrapped, QKVWithQVLoRA) and isinstance(algo.model.encoder.vit.blocks[1].attn.qkv, torch.nn.Linear)
    assert isinstance(algo.model.head, PrototypeHead)
    x = torch.randn(2, 7, qkv.in_features, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(wrapped(x), qkv(x))  # zero B: the fused layer
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (wrapped.q, wrapped.v):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen))
    d = qkv.out_features // 3
    expected = qkv(x).clone()
    expected[..., :d] += x @ (wrapped.q.lora_B @ wrapped.q.lora_A).T
    expected[..., 2 * d:] += x @ (wrapped.v.lora_B @ wrapped.v.lora_A).T
    torch.testing.assert_close(wrapped(x), expected)  # k untouched


def test_old_slots_stay_in_the_forward_frozen_and_only_the_current_prototypes_train(setup):  # noqa: F811
    cfg, train, ranges, clients, _ = setup
    algo = make_method(setup, "pilora", pilora={"lr": 0.05, "min_count": 0})
    _finish_task_with_random_slot(algo, 0, seed=5)
    algo.begin_task(1)
    state = algo.broadcast(1, 0)
    saved = copy.deepcopy(state)
    algo.load_state(state, block=ranges[1])
    for name, layer in algo.layers.items():  # W_eff = W0 + B^0 A^0, the current pair on top
        old = state["old"][0][name]
        torch.testing.assert_close(layer.effective_weight() - layer.base.weight, old["B"] @ old["A"])
    x, y = train.batch(torch.as_tensor(clients[1][0]))
    with_old = algo.model.features(x)
    algo.load_state({**state, "old": []}, block=ranges[1])
    assert not torch.allclose(with_old, algo.model.features(x))  # the old slot changes the features
    algo.load_state(state, block=ranges[1])
    algo.model.train()
    algo.model.zero_grad()
    with torch.no_grad():
        for layer in algo.layers.values():
            layer.lora_B.normal_(0, 0.1, generator=torch.Generator().manual_seed(6))  # so A gets a gradient
    F.cross_entropy(algo.model(x), y).backward()
    with_grad = {n for n, p in algo.model.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    assert with_grad == {f"{n}.lora_{f}" for n in algo.layers for f in "AB"} | {"head.current"}
    assert not any(b.requires_grad for b in algo.model.buffers())  # deltas and the prototype table are buffers
    # a client round: rows outside the current block, and the old slot, are what the server sent
    upload = algo.client_update(0, 1, 0, copy.deepcopy(saved))
    lo, hi = ranges[1]
    table = algo.model.head.table
    torch.testing.assert_close(table[:lo], saved["prototypes"][:lo], rtol=0, atol=0)
    torch.testing.assert_close(table[hi:], saved["prototypes"][hi:], rtol=0, atol=0)
    assert not torch.allclose(algo.model.head.current, saved["prototypes"][lo:hi])
    assert upload["prototypes"].shape == (hi - lo, table.shape[1])
    assert set(upload["means"]["classes"].tolist()) <= set(range(lo, hi)) and len(upload["means"]["classes"]) > 0
    for name in algo.layers:
        for f in "AB":
            torch.testing.assert_close(algo.old[0][name][f], saved["old"][0][name][f], rtol=0, atol=0)
    # the server's merge writes the current block only
    before = algo.prototypes.clone()
    algo.aggregate(1, 0, [upload, algo.client_update(1, 1, 0, copy.deepcopy(saved))])
    torch.testing.assert_close(algo.prototypes[:lo], before[:lo], rtol=0, atol=0)
    torch.testing.assert_close(algo.prototypes[hi:], before[hi:], rtol=0, atol=0)
    assert not torch.allclose(algo.prototypes[lo:hi], before[lo:hi])


def test_client_loss_is_unmasked_cross_entropy_plus_the_spec_terms_under_adam(setup, monkeypatch):  # noqa: F811
    """What a client hands to train_local: CE over all classes, Adam with the coupled decay, LoRA at lr_back and
    the current prototypes at lr; and the extra loss = pl * mean d_y + ort * sum|A_t A_i^T| + l1 * |A_t|_1."""
    cfg, train, ranges, clients, num_classes = setup
    algo = make_method(setup, "pilora", pilora={"lr": 0.02, "lr_back": 1e-4, "weight_decay": 1e-5, "l1": 0.03,
                                                "ort_weight": 0.7, "pl_weight": 0.1, "temperature": 2.0})
    _finish_task_with_random_slot(algo, 0, seed=7)
    algo.begin_task(1)
    seen = {}

    def fake_train_local(model, data, indices, groups, **kwargs):
        seen.update(kwargs, groups=groups)
        return {}

    monkeypatch.setattr("lorm.methods.pilora.train_local", fake_train_local)
    algo.client_update(0, 1, 0, algo.broadcast(1, 0))
    assert seen["class_range"] == (0, num_classes) and seen["optimizer"] == "adam"
    assert seen["weight_decay"] == 1e-5
    lora = [p for layer in algo.layers.values() for p in (layer.lora_A, layer.lora_B)]
    assert [g["lr"] for g in seen["groups"]] == [1e-4, 0.02]
    assert seen["groups"][0]["params"] == lora and seen["groups"][1]["params"] == [algo.model.head.current]

    # the extra loss on a hand-made batch
    lo, hi = ranges[1]
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for layer in algo.layers.values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen))
    old_A = {n: [algo.old[0][n]["A"]] for n in algo.layers}
    sums, counts = torch.zeros(hi - lo, 192), torch.zeros(hi - lo)
    labels = torch.tensor([lo, lo + 1, lo])
    features, logits = torch.randn(3, 192, generator=gen), -torch.rand(3, num_classes, generator=gen)
    value = algo.regulariser(1, old_A, sums, counts)(inputs=None, labels=labels, features=features, logits=logits)
    d_y = [-2.0 * float(logits[b, labels[b]]) for b in range(3)]
    expected = 0.1 * sum(d_y) / 3
    for n, layer in algo.layers.items():
        A, A0 = layer.lora_A.detach(), old_A[n][0]
        expected += 0.7 * sum(abs(float(A[i] @ A0[j])) for i in range(4) for j in range(4))
        expected += 0.03 * float(A.abs().sum())
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(counts, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(sums, torch.stack([features[0] + features[2], features[1]]))


def test_class_means_are_the_means_of_every_batch_features(setup):  # noqa: F811
    """With a vanishing lr the model does not move, and without augmentation every batch's features are the
    un-augmented ones: the uploaded means are the class means (2 epochs count every sample twice), and only
    classes with more than min_count features are uploaded."""
    cfg, train, ranges, clients, _ = setup
    algo = make_method(setup, "pilora", pilora={"lr": 1e-12, "weight_decay": 0.0, "min_count": 0})
    algo.ctx.train = dataclasses.replace(train, train_transform=train.test_transform)  # no augmentation
    algo.ctx.cfg["fcil"]["local_epochs"] = 2
    algo.begin_task(0)
    upload = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    lo, hi = ranges[0]
    idx = torch.as_tensor(clients[0][0])
    labels = train.labels[idx]
    assert upload["means"]["classes"].tolist() == sorted(set(labels.tolist()))
    algo.model.eval()
    with torch.no_grad():
        feats = algo.model.features(train.batch(idx)[0])
    for c, mean in zip(upload["means"]["classes"].tolist(), upload["means"]["mean"]):
        assert mean.dtype == torch.float32
        torch.testing.assert_close(mean, feats[labels == c].mean(0), rtol=1e-4, atol=1e-5)
    counts = torch.bincount(labels - lo, minlength=hi - lo)
    algo.cfg["min_count"] = int(2 * counts[counts > 0].min())  # the rarest class has exactly this many features
    upload = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    assert upload["means"]["classes"].tolist() == [lo + i for i in range(hi - lo)
                                                    if 2 * counts[i] > algo.cfg["min_count"]]


def test_train_local_adam_couples_the_weight_decay_into_the_gradient(setup):  # noqa: F811
    """A parameter with zero loss gradient: AdamW only shrinks it by lr * wd * p; Adam (coupled L2) sees the
    gradient wd * p and takes a full normalised step of size ~lr."""
    cfg, train, ranges, clients, _ = setup
    model = build_classifier(cfg["model"], 10, generator=generator(0, 0), lora=False)
    runtime = Runtime.from_config(cfg["runtime"], cfg["fcil"]["batch_size"])
    indices = clients[0][0][:4]  # one batch = one step

    def step(optimizer: str) -> torch.Tensor:
        z = torch.nn.Parameter(torch.full((3,), 4.0))
        kwargs = {} if optimizer is None else {"optimizer": optimizer}
        train_local(model, train, indices, [{"params": [z], "lr": 0.1}], epochs=1, class_range=ranges[0],
                    runtime=runtime, gen=torch.Generator().manual_seed(0), weight_decay=0.01,
                    extra_loss=lambda **_: 0.0 * z.sum(), **kwargs)
        return z.detach()

    torch.testing.assert_close(step(None), torch.full((3,), 4.0 * (1 - 0.1 * 0.01)))  # default = AdamW
    torch.testing.assert_close(step("adamw"), torch.full((3,), 4.0 * (1 - 0.1 * 0.01)))
    grad = 0.01 * 4.0  # coupled: g = 0 + wd * p; first Adam step = lr * g / (|g| + eps)
    torch.testing.assert_close(step("adam"), torch.full((3,), 4.0 - 0.1 * grad / (grad + 1e-8)))
    with pytest.raises(ValueError, match="optimizer"):
        step("sgd")


# ------------------------------------------------------------------------------------------------ end to end


def _tiny_vit_config(**pilora):
    return load_config(None, {
        "experiment": "tiny-pilora",
        "dataset": {"name": "synthetic-images", "train_per_class": 12, "test_per_class": 4, "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": 5, "num_clients": 2, "rounds": 2, "local_epochs": 1, "min_samples": 1},
        "pilora": {"lr": 0.01, "min_count": 1, **pilora},
        "runtime": {"threads": 1, "progress": False},
    })


def _lean_download_bytes(T: int, C: int, d: int, r: int) -> float:
    """Per client-round: current pairs (q and v: A r x d + B d x r each) + t old slots + all C prototypes."""
    pair = 2 * 2 * r * d
    return float(np.mean([4 * (pair * (1 + t) + C * d) for t in range(T)]))


@pytest.fixture(scope="module")
def vit_run():
    cfg = _tiny_vit_config()
    ds = build_dataset(cfg["dataset"])
    return cfg, ds, run_experiment(cfg, "pilora", seed=0, beta=0.5, dataset=ds)


def test_pilora_runs_end_to_end_on_the_tiny_vit_with_lean_communication(vit_run):
    cfg, ds, m = vit_run
    T, K, R = 5, 2, 2
    assert m["eval_after_task"] == list(range(T)) and [len(r) for r in m["accuracy_matrix"]] == list(range(1, T + 1))
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    assert m["accuracy_matrix"][0][0] > 50.0  # 2 classes after task 0: better than chance
    comm = m["communication"]
    assert comm["client_rounds"] == T * K * R
    d, C, r = 192, 10, 4  # vit-tiny-test width, synthetic-images classes, pilora.rank
    assert comm["download_bytes_per_client_round"] == _lean_download_bytes(T, C, d, r)
    # upload: pairs + the task's 2 prototypes + the sample count, plus <= 2 class means and their int64 ids
    low = 4 * (2 * 2 * r * d + 2 * d) + 8
    assert low < comm["upload_bytes_per_client_round"] <= low + 2 * (4 * d + 8)
    assert set(m["diagnostics"]["task_update_rel_norm"][0]) == {"encoder.vit.blocks.0.attn.qkv.q",
                                                                 "encoder.vit.blocks.0.attn.qkv.v"}


def test_pilora_resumes_after_a_crash_with_identical_metrics(vit_run, tmp_path, monkeypatch):
    """A run that dies after checkpointing task 3 of 5 (a fresh model, method and ledger on restart) ends with
    exactly the metrics of the uninterrupted run."""
    cfg, ds, reference = vit_run
    ckpt = tmp_path / "run.ckpt"
    assert run_until_crash(PILoRA, "pilora", cfg, ds, ckpt, monkeypatch, at_task=3)["next_task"] == 3
    resumed = run_experiment(copy.deepcopy(cfg), "pilora", seed=0, beta=0.5, dataset=ds, checkpoint=str(ckpt))
    assert resumed["resumed_after_task"] == 3 and reference["resumed_after_task"] is None
    for key in ("accuracy_matrix", "final_avg_accuracy", "final_avg_accuracy_weighted", "avg_forgetting",
                "communication", "diagnostics"):
        assert resumed[key] == reference[key], key


def test_pilora_runs_end_to_end_on_the_text_path():
    """MiniLM + WordNet glosses: LoRA on layer 0's query and value, 384-d prototypes, lean payload."""
    cfg, ds = tiny_text_setup({"num_tasks": 5, "rounds": 1}, pilora={"lr": 0.003, "min_count": 0})
    m = run_experiment(cfg, "pilora", seed=0, beta=0.5, dataset=ds)
    T, C, d = 5, 40, 384
    assert len(m["accuracy_matrix"]) == T and m["communication"]["client_rounds"] == T * 2
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    assert m["communication"]["download_bytes_per_client_round"] == _lean_download_bytes(T, C, d, 4)
    assert set(m["diagnostics"]["task_update_rel_norm"][0]) == {
        "encoder.bert.encoder.layer.0.attention.self.query", "encoder.bert.encoder.layer.0.attention.self.value"}
    assert all(v > 0 for v in m["diagnostics"]["task_update_rel_norm"][-1].values())  # the LoRA pairs trained
