"""LoRM's fidelity options and ablations: the official filler statistics model (spec Q1), the FedAvg head
diagnostic, the official A-only ablation (a linear probe) and its random-B variant, and method variants."""

from __future__ import annotations

import copy

import pytest
import torch

from lorm.config import ConfigError, base_method, load_config, method_config
from lorm.federated.comm import payload_bytes
from lorm.federated.training import collect_statistics
from lorm.merging import lorm_merge_A

from test_baselines import make_method, setup  # noqa: F401  (the tiny ViT fixture)


def _run_task(algo, task: int, clients: int = 2) -> list[dict]:
    algo.begin_task(task)
    uploads = []
    for rnd in range(algo.ctx.cfg["fcil"]["rounds"]):
        state = algo.broadcast(task, rnd)
        uploads = [algo.client_update(k, task, rnd, state) for k in range(clients)]
        algo.aggregate(task, rnd, uploads)
    algo.end_task(task)
    return uploads


def _hand_built_filler_grams(algo, indices, old_deltas: list[dict], own: dict) -> dict:
    """Statistics of W0 + (sum of old deltas + own) / (t + 1), built by hand on a deep copy of the model."""
    model = copy.deepcopy(algo.model)
    layers = {n: model.get_submodule(n) for n in algo.layers}
    t = len(old_deltas)
    with torch.no_grad():
        for name, layer in layers.items():
            layer.set_delta((sum(d[name] for d in old_deltas) + own[name]) / (t + 1))
            layer.lora_A.zero_()
            layer.lora_B.zero_()
    modules = {**layers, "head": model.head}
    kinds = {**{n: "diag" for n in layers}, "head": "full"}
    stats, _ = collect_statistics(model, algo.ctx.train, indices, modules, kinds, runtime=algo.ctx.runtime)
    return stats


def test_filler_statistics_equal_a_hand_built_filler_model(setup):
    algo = make_method(setup, "lorm", lorm={"stats_model": "filler", "alpha_head": 1.0, "stats_augment": False})
    finished = []
    for task in range(2):
        _run_task(algo, task)
        finished.append({n: d.clone() for n, d in algo.finished_task_update().items()})
    assert algo.old_deltas.count == 2
    # a client's round in task 2: its trained factors, then the statistics the method computes
    algo.begin_task(2)
    state = algo.broadcast(2, 0)
    upload = algo.client_update(0, 2, 0, state)
    indices = algo.ctx.client_indices[2][0]
    algo.load_state(state)
    from lorm.models.lora import set_factors
    set_factors(algo.model, {n: {"A": state["factors"][n]["A"], "B": upload["factors"][n]["B"]} for n in algo.layers})
    own = {n: layer.lora_B.detach().double() @ layer.lora_A.detach().double() for n, layer in algo.layers.items()}
    assert any(float(o.norm()) > 0 for o in own.values())
    expected = _hand_built_filler_grams(algo, indices, finished, own)
    for name in algo.layers:
        torch.testing.assert_close(upload["grams"][name], expected[name], rtol=1e-5, atol=1e-6)
    # ... and they differ from the trained model's statistics (the switch changes something)
    trained = make_method(setup, "lorm", lorm={"alpha_head": 1.0, "stats_augment": False})
    trained.load_state(state)
    set_factors(trained.model, {n: {"A": state["factors"][n]["A"], "B": upload["factors"][n]["B"]}
                                for n in trained.layers})
    grams, _ = trained._backbone_grams(indices, with_head=False, stream=(0,))
    assert any(not torch.allclose(grams[n], expected[n], rtol=1e-3) for n in algo.layers)
    # the factors the client uploads are untouched by the filler pass
    assert all(torch.equal(algo.layers[n].lora_B, upload["factors"][n]["B"]) for n in algo.layers)


def test_filler_end_of_task_statistics_use_the_mean_of_all_task_deltas(setup):
    algo = make_method(setup, "lorm", lorm={"stats_model": "filler", "stats_augment": False})
    _run_task(algo, 0)
    first = {n: d.clone() for n, d in algo.finished_task_update().items()}
    added = {}
    original_add = algo.accumulator.add
    algo.accumulator.add = lambda name, delta, gram: (added.__setitem__(name, gram), original_add(name, delta, gram))
    _run_task(algo, 1)
    merged = algo.finished_task_update()
    expected = [_hand_built_filler_grams(algo, ix, [first], merged) for ix in algo.ctx.client_indices[1]]
    for name in algo.layers:
        torch.testing.assert_close(added[name].double(), sum(e[name] for e in expected).double(), rtol=1e-5, atol=1e-6)


def test_filler_delta_download_is_counted_once_per_client_and_task(setup):
    algo = make_method(setup, "lorm", lorm={"stats_model": "filler"})
    _run_task(algo, 0)
    assert ("download", "filler_delta") not in algo.ctx.ledger.totals  # task 0 has no earlier delta
    _run_task(algo, 1)
    dense = sum(4 * layer.out_features * layer.in_features for layer in algo.layers.values())
    assert algo.ctx.ledger.totals[("download", "filler_delta")] == 2 * dense  # 2 clients, once each
    trained = make_method(setup, "lorm")
    assert trained.old_deltas is None and "old_deltas" not in trained.state_dict()


def test_fedavg_head_merge_sends_no_head_gram_and_averages(setup):
    algo = make_method(setup, "lorm", lorm={"head_merge": "fedavg"})
    uploads = _run_task(algo, 0)
    assert all("head_gram" not in u for u in uploads)
    weights = torch.tensor([u["num_samples"] for u in uploads], dtype=torch.float64)
    expected = sum(w * u["head"]["weight"].double() for w, u in zip(weights, uploads)) / weights.sum()
    torch.testing.assert_close(algo.head["weight"].double(), expected, rtol=1e-5, atol=1e-7)
    regmean = make_method(setup, "lorm")
    assert payload_bytes(_run_task(regmean, 0)[0]) > payload_bytes(uploads[0])


def test_official_a_only_ablation_is_a_linear_probe(setup):
    algo = make_method(setup, "lorm-a-only")
    head0 = algo.head["weight"].clone()
    _run_task(algo, 0)
    for name in algo.layers:  # B stays 0, A never moves: no backbone update at all
        assert torch.count_nonzero(algo.factors[name]["B"]) == 0
        assert float(algo.finished_task_update()[name].abs().max()) == 0.0
    assert not torch.equal(algo.head["weight"], head0)  # ... while the head does learn


def test_random_b_variant_trains_a(setup):
    algo = make_method(setup, "lorm-a-only-random-b")
    algo.begin_task(0)
    name = next(iter(algo.layers))
    assert torch.count_nonzero(algo.factors[name]["A"]) == 0 and torch.count_nonzero(algo.factors[name]["B"]) > 0
    state = algo.broadcast(0, 0)
    uploads = [algo.client_update(k, 0, 0, state) for k in range(2)]
    assert any(torch.count_nonzero(u["factors"][name]["A"]) > 0 for u in uploads)
    algo.aggregate(0, 0, uploads)
    torch.testing.assert_close(algo.factors[name]["A"],
                               lorm_merge_A([u["factors"][name]["A"] for u in uploads],
                                            [u["grams"][name] for u in uploads]))


# ------------------------------------------------------------------------------------------------ variants


def _variant_config(**extra):
    return load_config(None, {
        "methods": ["lorm", "lorm-filler", "lorm-r1"],
        "method_params": {"lorm": {"optim": {"lr": 0.01}}, "lorm-r1": {"optim": {"lr_A": 0.002}}},
        "variants": {"lorm-filler": {"of": "lorm", "lorm": {"stats_model": "filler"}},
                     "lorm-r1": {"of": "lorm", "model": {"lora_rank": 1}, "optim": {"lr_A": 0.001}}},
        **extra,
    })


def test_variant_sees_its_method_params_then_its_overrides():
    cfg = _variant_config()
    assert base_method(cfg, "lorm-filler") == "lorm" and base_method(cfg, "lorm") == "lorm"
    filler = method_config(cfg, "lorm-filler")
    assert filler["lorm"]["stats_model"] == "filler" and filler["optim"]["lr"] == 0.01  # lorm's params apply
    r1 = method_config(cfg, "lorm-r1")
    assert r1["model"]["lora_rank"] == 1 and r1["optim"]["lr_A"] == 0.002  # the variant's own params win
    assert method_config(cfg, "lorm")["lorm"]["stats_model"] == "trained"


@pytest.mark.parametrize("extra, message", [
    ({"methods": ["lorm", "lorm-filer"]}, "config key methods[1]: 'lorm-filer' is not allowed (did you mean 'lorm-filler'?"),
    ({"variants": {"lorm": {"of": "lorm"}}}, "config key variants.lorm: 'lorm' is the name of a method"),
    ({"variants": {"x": {"of": "nope"}}}, "config key variants.x.of: 'nope' is not allowed"),
    ({"variants": {"x": {"lorm": {}}}}, "config key variants.x: "),
    ({"method_params": {"lorm-filer": {}}}, "config key method_params.lorm-filer: unknown method (did you mean"),
])
def test_bad_variants_are_one_line_errors(extra, message):
    with pytest.raises(ConfigError) as err:
        _variant_config(**extra)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)
