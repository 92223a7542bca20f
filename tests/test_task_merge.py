"""The model-merging aggregators (ta, ties, dare-ties, knots-ties, knots-dare-ties) inside the FCIL simulator."""

from __future__ import annotations

import pytest
import torch

from lorm.federated.comm import payload_bytes
from lorm.merging import merge_deltas

from test_baselines import make_method, setup  # noqa: F401  (the tiny ViT fixture)


def _round(algo, task=0, rnd=0, clients=2):
    state = algo.broadcast(task, rnd)
    uploads = [algo.client_update(k, task, rnd, state) for k in range(clients)]
    return state, uploads


def _products(uploads, name):
    return [u["factors"][name]["B"].double() @ u["factors"][name]["A"].double() for u in uploads]


def test_ta_is_the_average_of_the_products_not_of_the_factors(setup):
    algo = make_method(setup, "ta")
    algo.begin_task(0)
    _, uploads = _round(algo)
    algo.aggregate(0, 0, uploads)
    name = next(iter(algo.layers))
    expected = sum(_products(uploads, name)) / len(uploads)
    torch.testing.assert_close(algo.running[name].double(), expected, rtol=1e-5, atol=1e-7)
    # with factors far apart (not one short round from the same A) the factor average is visibly wrong
    gen = torch.Generator().manual_seed(0)
    for u in uploads:
        for f in u["factors"].values():
            f["A"], f["B"] = torch.randn(f["A"].shape, generator=gen), torch.randn(f["B"].shape, generator=gen)
    algo.begin_task(0)
    algo.aggregate(0, 0, uploads)
    expected = sum(_products(uploads, name)) / len(uploads)
    torch.testing.assert_close(algo.running[name].double(), expected, rtol=1e-5, atol=1e-6)
    factor_avg = (sum(u["factors"][name]["B"] for u in uploads) / 2).double() @ \
        (sum(u["factors"][name]["A"] for u in uploads) / 2).double()
    assert float((factor_avg - expected).norm()) > 0.1 * float(expected.norm())  # cross terms B_c A_c'


def test_clients_restart_lora_on_top_of_the_running_update(setup):
    algo = make_method(setup, "knots-ties")
    algo.begin_task(0)
    _, uploads = _round(algo)
    algo.aggregate(0, 0, uploads)
    state = algo.broadcast(0, 1)
    assert "A" not in state and set(state["update"]) == set(algo.layers)
    algo.load_state(state)
    for name, layer in algo.layers.items():
        assert torch.count_nonzero(layer.lora_B) == 0
        torch.testing.assert_close(layer.effective_weight(), layer.base.weight + algo.running[name])


@pytest.mark.parametrize("method, aligned", [("ta", True), ("knots-ties", True), ("knots-dare-ties", True),
                                             ("ties", False), ("dare-ties", False)])
def test_what_the_server_sends_back(setup, method, aligned):
    algo = make_method(setup, method)
    algo.begin_task(0)
    _, uploads = _round(algo)
    algo.aggregate(0, 0, uploads)
    name, layer = next(iter(algo.layers.items()))
    update = algo.last_update[name]
    if aligned:  # the exact rank-r factors (U, R), r <= sum of the client ranks
        rank_sum = sum(u["factors"][name]["A"].shape[0] for u in uploads)
        assert update["U"].shape[1] <= rank_sum and update["R"].shape[1] == layer.in_features
        torch.testing.assert_close(update["U"] @ update["R"], algo.running[name], rtol=1e-4, atol=1e-6)
        assert payload_bytes(update) < 4 * layer.out_features * layer.in_features
    else:  # dense: trimming / sign election do not keep the low rank
        assert update.shape == layer.base.weight.shape
        assert payload_bytes(update) == 4 * layer.out_features * layer.in_features


def test_ties_aggregator_matches_the_pure_merge_and_differs_from_knots(setup):
    plain, knots = make_method(setup, "ties"), make_method(setup, "knots-ties")
    for algo in (plain, knots):
        algo.begin_task(0)
    _, uploads = _round(plain)
    plain.aggregate(0, 0, uploads)
    knots.aggregate(0, 0, uploads)
    names = list(plain.layers)
    products = [{n: u["factors"][n]["B"].double() @ u["factors"][n]["A"].double() for n in names} for u in uploads]
    expected = merge_deltas(products, "ties", lam=1.0, topk=20, merging_type="mean")
    for n in names:
        torch.testing.assert_close(plain.running[n].double(), expected[n], rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(plain.running[n], knots.running[n], atol=1e-6) for n in names)


def test_dare_seed_is_per_round_and_reproducible(setup):
    algo = make_method(setup, "dare-ties")
    a = algo.merge_kwargs(0, 0, [])["seed"]
    assert a == algo.merge_kwargs(0, 0, [])["seed"] != algo.merge_kwargs(0, 1, [])["seed"]


def test_weighted_option_scales_clients_by_their_samples(setup):
    algo = make_method(setup, "ta", task_merge={"weighted": True})
    algo.begin_task(0)
    _, uploads = _round(algo)
    uploads[0]["num_samples"], uploads[1]["num_samples"] = 3, 1
    algo.aggregate(0, 0, uploads)
    name = next(iter(algo.layers))
    p = _products(uploads, name)
    torch.testing.assert_close(algo.running[name].double(), 0.75 * p[0] + 0.25 * p[1], rtol=1e-5, atol=1e-7)
