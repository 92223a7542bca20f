"""The full-fine-tuning baselines: each one's distinctive mechanism, checked directly on a tiny random ViT.

(That every method runs a whole task sequence end to end is tests/test_fcil.py::test_every_method_runs_on_tiny_vit.)
"""

from __future__ import annotations

import copy

import pytest
import torch

from lorm.config import method_config
from lorm.federated.client_stats import class_feature_moments, diagonal_fisher
from lorm.federated.comm import payload_bytes
from lorm.federated.training import Runtime, generator
from lorm.merging import fedavg, fisher_merge, pool_class_moments
from lorm.methods import METHODS
from lorm.methods.base import RunContext
from lorm.methods.lwf import distillation_loss
from lorm.models.backbones import build_classifier
from lorm.models.lora import lora_layers

from conftest import tiny_image_setup


@pytest.fixture(scope="module")
def setup():
    return tiny_image_setup("tiny-baselines", train_per_class=6, test_per_class=2, rounds=2, threads=2)


def make_method(setup, name: str, **overrides):
    cfg, train, ranges, clients, num_classes = setup
    cfg = method_config(copy.deepcopy(cfg), name)
    for section, values in overrides.items():
        cfg[section].update(values)
    torch.manual_seed(0)
    model = build_classifier(cfg["model"], num_classes, generator=generator(0, 0), lora=METHODS[name].uses_lora)
    runtime = Runtime.from_config(cfg["runtime"], cfg["fcil"]["batch_size"])
    ctx = RunContext(model, train, cfg, runtime, 0, ranges, clients)
    return METHODS[name](ctx)


def perturbed(params: dict, scale: float, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: p + scale * torch.randn(p.shape, generator=gen) for n, p in params.items()}


# ------------------------------------------------------------------------------------------------ full FT base


def test_full_fine_tuning_has_no_lora_and_trains_every_parameter(setup):
    algo = make_method(setup, "fedavg")
    assert lora_layers(algo.model) == {}
    before = {n: p.clone() for n, p in algo.global_params.items()}
    upload = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    changed = [n for n in before if not torch.equal(before[n], upload["params"][n])]
    assert any(n.startswith("encoder.") for n in changed) and "head.weight" in changed
    # the upload is every parameter (fp32) plus the sample count: that is what the ledger counts
    num_params = sum(p.numel() for p in algo.model.parameters())
    assert payload_bytes(upload) == 4 * num_params + 8


def test_fedavg_is_the_sample_weighted_mean(setup):
    algo = make_method(setup, "fedavg")
    a, b = perturbed(algo.global_params, 0.1, 1), perturbed(algo.global_params, 0.1, 2)
    algo.aggregate(0, 0, [{"params": a, "num_samples": 3}, {"params": b, "num_samples": 1}])
    for n in a:
        torch.testing.assert_close(algo.global_params[n], 0.75 * a[n] + 0.25 * b[n])


# ------------------------------------------------------------------------------------------------ EWC


def test_ewc_penalty_gradient_is_2_lambda_F_times_the_displacement(setup):
    algo = make_method(setup, "ewc", ewc={"lambda": 0.7})
    gen = torch.Generator().manual_seed(3)
    algo.fisher = {n: torch.rand(p.shape, generator=gen) for n, p in algo.params.items()}
    algo.anchor = perturbed(algo.global_params, 0.05, 4)
    algo.model.zero_grad()
    algo.regulariser(1, 0)(inputs=None, labels=None, features=None, logits=None).backward()
    for n, p in algo.params.items():
        expected = 2 * 0.7 * algo.fisher[n] * (p.detach() - algo.anchor[n])
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7)


def test_ewc_has_no_penalty_in_the_first_task_and_decays_the_fisher(setup):
    algo = make_method(setup, "ewc", ewc={"gamma": 0.5})
    assert algo.regulariser(0, 0) is None and "fisher" not in algo.broadcast(0, 0)
    algo.end_task(0)
    first = {n: f.clone() for n, f in algo.fisher.items()}
    assert all(torch.equal(algo.anchor[n], algo.global_params[n]) for n in algo.anchor)
    assert "fisher" in algo.broadcast(1, 0) and "fisher" not in algo.broadcast(1, 1)  # downloaded once per task
    algo.end_task(0)  # the same task again: F = 0.5 F + F
    for n in first:
        torch.testing.assert_close(algo.fisher[n], 1.5 * first[n])


def test_diagonal_fisher_is_the_probability_weighted_sum_of_per_sample_squared_gradients(setup):
    algo = make_method(setup, "ewc")
    cfg, train, ranges, clients, _ = setup
    model, params, indices = algo.model, algo.params, clients[0][0][:3]
    fisher = diagonal_fisher(model, train, indices, params, ranges[0], algo.ctx.runtime)
    lo, hi = ranges[0]
    model.eval()
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in indices:
        x, y = train.batch(torch.tensor([i]))
        model.zero_grad()
        log_p = torch.log_softmax(model(x)[:, lo:hi], 1)[0, y[0] - lo]
        log_p.backward()
        for n, p in params.items():
            expected[n] += log_p.exp().item() * p.grad ** 2
    for n in params:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-10)
    assert sum(float(f.sum()) for f in fisher.values()) > 0


# ------------------------------------------------------------------------------------------------ LwF


def test_lwf_loss_is_zero_when_the_model_equals_its_teacher(setup):
    algo = make_method(setup, "lwf")
    algo.begin_task(1)  # teacher = the current global model = the model itself
    cfg, train, ranges, clients, _ = setup
    x, y = train.batch(torch.as_tensor(clients[1][0]))
    algo.model.eval()
    logits = algo.model(x)
    loss = algo.regulariser(1, 0)(inputs=x, labels=y, features=None, logits=logits)
    assert abs(float(loss.detach())) < 1e-6
    # a different student is penalised, and only through the old classes' logits
    moved = logits.detach().clone()
    moved[:, ranges[1][0]:] += 5.0
    assert abs(float(algo.regulariser(1, 0)(inputs=x, labels=y, features=None, logits=moved))) < 1e-6
    moved[:, 0] += 3.0
    assert float(algo.regulariser(1, 0)(inputs=x, labels=y, features=None, logits=moved)) > 1e-3


def test_lwf_distils_old_classes_by_default_and_the_current_slice_on_request(setup):
    ranges = setup[2]
    assert make_method(setup, "lwf").distill_range(2) == (0, ranges[2][0])
    assert make_method(setup, "lwf", lwf={"distill_slice": "current"}).distill_range(2) == ranges[2]
    assert make_method(setup, "lwf").regulariser(0, 0) is None


def test_distillation_loss_is_kl_of_power_softened_probabilities():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    T = 2.0
    smooth = lambda z: (torch.softmax(z, 1) ** (1 / T)) / (torch.softmax(z, 1) ** (1 / T)).sum(1, keepdim=True)
    p_t, p_s = smooth(t), smooth(s)
    expected = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    torch.testing.assert_close(distillation_loss(s, t, T), expected)


# ------------------------------------------------------------------------------------------------ FisherAvg


def test_fisher_merge_with_equal_per_sample_fishers_is_fedavg():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 4, generator=gen) for _ in range(3)]
    per_sample = torch.rand(5, 4, generator=gen) + 0.1
    counts = [3, 1, 6]
    merged = fisher_merge(params, [n * per_sample for n in counts], counts)
    torch.testing.assert_close(merged, fedavg(params, counts))
    # entries no client's loss touches fall back to FedAvg; an informed entry follows its Fisher
    fishers = [torch.zeros(5, 4) for _ in range(3)]
    fishers[1][0, 0] = 2.0
    merged = fisher_merge(params, fishers, counts)
    assert merged[0, 0] == params[1][0, 0]
    torch.testing.assert_close(merged[1:], fedavg(params, counts)[1:])


def test_fisheravg_uploads_a_fisher_per_parameter_and_merges_with_it(setup):
    algo = make_method(setup, "fisheravg")
    upload = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    assert set(upload["fisher"]) == set(algo.params)
    other = {**upload, "params": perturbed(upload["params"], 0.1, 5)}
    algo.aggregate(0, 0, [upload, other])
    name = "head.bias"
    lo, hi = algo.ctx.task_ranges[0]
    f = upload["fisher"][name][lo:hi]
    expected = (f * upload["params"][name][lo:hi] + f * other["params"][name][lo:hi]) / (2 * f)
    torch.testing.assert_close(algo.global_params[name][lo:hi], expected)


# ------------------------------------------------------------------------------------------------ RegMean


def test_regmean_of_identical_clients_returns_the_client(setup):
    algo = make_method(setup, "regmean")
    upload = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    assert set(upload["grams"]) == set(algo.linears) and "head" in upload["grams"]
    algo.aggregate(0, 0, [upload, copy.deepcopy(upload)])
    for n, p in upload["params"].items():
        torch.testing.assert_close(algo.global_params[n], p, rtol=1e-4, atol=1e-5)


def test_regmean_merges_adapted_linears_by_their_grams_and_the_rest_by_fedavg(setup):
    algo = make_method(setup, "regmean")
    a = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    b = algo.client_update(1, 0, 0, algo.broadcast(0, 0))
    algo.aggregate(0, 0, [a, b])
    linear = next(n for n in algo.linears if n != "head")
    weights = [a["num_samples"], b["num_samples"]]
    fed = fedavg([a["params"][f"{linear}.weight"], b["params"][f"{linear}.weight"]], weights)
    assert not torch.allclose(algo.global_params[f"{linear}.weight"], fed, atol=1e-6)
    torch.testing.assert_close(algo.global_params[f"{linear}.bias"],
                               fedavg([a["params"][f"{linear}.bias"], b["params"][f"{linear}.bias"]], weights))


# ------------------------------------------------------------------------------------------------ CCVR


def test_ccvr_calibration_changes_only_the_head(setup):
    algo = make_method(setup, "ccvr")
    algo.aggregate(0, 0, [algo.client_update(k, 0, 0, algo.broadcast(0, 0)) for k in range(2)])
    merged = {n: p.clone() for n, p in algo.global_params.items()}
    algo.global_params = copy.deepcopy(merged)
    algo.after_merge(0, 1)
    changed = {n for n in merged if not torch.equal(merged[n], algo.global_params[n])}
    assert changed == {"head.weight", "head.bias"}
    # only the rows of the current task's classes move
    lo, hi = algo.ctx.task_ranges[0]
    assert torch.equal(algo.global_params["head.weight"][hi:], merged["head.weight"][hi:])
    assert algo.ctx.ledger.totals[("upload", "calibration")] > 0


def test_pooled_class_moments_are_those_of_the_union():
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in (4, 7)]
    labels = [torch.tensor([0, 0, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 2, 2])]
    moments = []
    for f, y in zip(feats, labels):
        cs = y.unique()
        moments.append({"classes": cs, "counts": torch.tensor([float((y == c).sum()) for c in cs]),
                        "mean": torch.stack([f[y == c].mean(0) for c in cs]),
                        "var": torch.stack([f[y == c].var(0, unbiased=False) for c in cs])})
    pooled = pool_class_moments(moments)
    allf, ally = torch.cat(feats), torch.cat(labels)
    assert pooled["classes"].tolist() == [0, 1, 2]
    for j, c in enumerate([0, 1, 2]):
        torch.testing.assert_close(pooled["mean"][j], allf[ally == c].mean(0).float())
        torch.testing.assert_close(pooled["var"][j], allf[ally == c].var(0, unbiased=False).float())


# ------------------------------------------------------------------------------------------------ FedProto


def test_fedproto_prototypes_are_class_means_of_the_features(setup):
    algo = make_method(setup, "fedproto")
    cfg, train, ranges, clients, _ = setup
    indices = clients[0][0]
    protos = algo.client_statistics(0, 0, 0, indices)["prototypes"]
    algo.model.eval()
    with torch.no_grad():
        x, y = train.batch(torch.as_tensor(indices))
        feats = algo.model.features(x)
    for j, c in enumerate(protos["classes"].tolist()):
        torch.testing.assert_close(protos["mean"][j], feats[y == c].mean(0), rtol=1e-4, atol=1e-5)
        assert protos["counts"][j] == (y == c).sum()


def test_fedproto_regularises_towards_the_global_prototypes_after_the_first_round(setup):
    algo = make_method(setup, "fedproto", fedproto={"lambda": 0.5})
    assert algo.regulariser(0, 0) is None
    uploads = [algo.client_update(k, 0, 0, algo.broadcast(0, 0)) for k in range(2)]
    algo.aggregate(0, 0, uploads)
    assert "prototypes" in algo.broadcast(0, 1)
    proto = algo.prototypes
    labels = proto["classes"][:2]
    feats = proto["mean"][:2] + 1.0  # every feature one unit away from its prototype
    loss = algo.regulariser(0, 1)(inputs=None, labels=labels, features=feats, logits=None)
    assert float(loss) == pytest.approx(0.5 * 1.0)
    algo.begin_task(1)
    assert algo.regulariser(1, 0) is None  # prototypes are per task


def test_fedproto_uniform_average_on_request(setup):
    uploads = [{"num_samples": 3}, {"num_samples": 1}]
    assert make_method(setup, "fedproto").model_weights(uploads) == [3, 1]
    assert make_method(setup, "fedproto", fedproto={"uniform_avg": True}).model_weights(uploads) == [1.0, 1.0]


# ------------------------------------------------------------------------------------------------ inputs


def test_raw_statistics_inputs_skip_only_the_normalisation(setup):
    train = setup[1]
    idx = torch.arange(3)
    normalised, _ = train.batch(idx)
    raw, _ = train.batch(idx, raw=True)
    torch.testing.assert_close(normalised, (raw - 0.5) / 0.5)
    algo = make_method(setup, "ccvr", baselines={"stats_on_raw_inputs": True})
    m_raw = class_feature_moments(algo.model, train, idx.numpy(), algo.ctx.runtime, raw=True)
    m = class_feature_moments(algo.model, train, idx.numpy(), algo.ctx.runtime)
    assert not torch.allclose(m_raw["mean"], m["mean"])


def test_ewc_penalty_is_added_to_every_local_step_after_the_first_task(setup, monkeypatch):
    """The penalty reaches the shared loop: evaluated once per step (its gradient is 0 at theta = theta*, so a
    round's first step is plain FedAvg; see the closing note of issue 4 on lambda = 1)."""
    algo = make_method(setup, "ewc")
    steps, calls = [], []
    real_penalty, real_train = algo.penalty, __import__("lorm.methods.full", fromlist=["x"]).train_local

    def counting_penalty():
        calls.append(1)
        return real_penalty()

    def counting_train(*args, **kw):
        out = real_train(*args, **kw)
        steps.append(out["steps"])
        return out

    monkeypatch.setattr(algo, "penalty", counting_penalty)
    monkeypatch.setattr("lorm.methods.full.train_local", counting_train)
    algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    assert calls == [] and steps  # no Fisher yet: no penalty in the first task
    algo.end_task(0)
    algo.client_update(0, 1, 0, algo.broadcast(1, 0))
    assert len(calls) == steps[-1] > 0
