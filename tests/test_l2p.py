"""L2P (baselines2-spec section 3): the key matching against the frozen query, the surrogate loss's gradient to
the keys (Q20 switch), and end-to-end runs (tiny ViT, MiniLM) with the lean payload counted by the ledger."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lorm.config import load_config
from lorm.data.datasets import build_dataset
from lorm.federated.comm import payload_bytes
from lorm.federated.simulator import run_experiment

from conftest import tiny_text_setup
from test_baselines import make_method, setup  # noqa: F401  (the tiny-ViT fixture of the baselines' tests)

REPO = Path(__file__).resolve().parents[1]


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_selected_prompts_are_the_top_n_keys_of_the_frozen_query_most_similar_first(setup):  # noqa: F811
    algo = make_method(setup, "l2p")
    encoder, pool = algo.model.encoder, algo.pool
    assert pool.prompts.shape == (10, 5, 192) and pool.keys.shape == (10, 192)
    assert pool.prompts.abs().max() <= 1 and pool.keys.abs().max() <= 1 and pool.keys.min() < -0.9
    images = _images(3, 1)
    encoder.train()
    query = encoder.query(images)
    encoder.backbone.eval()
    torch.testing.assert_close(query, encoder.backbone(images))  # the unprompted backbone's CLS feature
    tokens = pool(query)
    assert tokens.shape == (3, 5 * 5, 192)
    total = 0.0
    for b in range(3):
        q = query[b].double().tolist()
        sims = []
        for m in range(10):
            k = pool.keys[m].double().tolist()
            dot = sum(x * y for x, y in zip(q, k))
            sims.append(dot / math.sqrt(sum(x * x for x in q)) / math.sqrt(sum(y * y for y in k)))
        order = sorted(range(10), key=lambda m: -sims[m])[:5]
        assert pool.selected[b].tolist() == order
        torch.testing.assert_close(tokens[b], torch.cat([pool.prompts[m] for m in order]))
        total += sum(sims[m] for m in order)
    assert float(pool.reduce_sim.detach()) == pytest.approx(total / 3, rel=1e-5)
    # the classifier reads the mean of the prompt outputs (l2p.pool: prompts)
    hidden, _, count = encoder.hidden_states(images, tokens)
    torch.testing.assert_close(encoder(images), hidden[:, 1:1 + count].mean(1))


@pytest.mark.parametrize("pull", [0.1, 0.0])
def test_keys_get_a_gradient_only_from_the_surrogate_loss(setup, pull):  # noqa: F811
    algo = make_method(setup, "l2p", l2p={"pull_coeff": pull})
    pool = algo.pool
    images, labels = _images(4, 2), torch.tensor([0, 1, 0, 1])
    algo.model.train()
    features = algo.model.features(images)
    logits = algo.model.head(features)
    loss = F.cross_entropy(logits[:, :2], labels)
    extra = algo.regulariser(0, 0)
    if pull:
        loss = loss + extra(inputs=images, labels=labels, features=features, logits=logits)
    else:
        assert extra is None
    loss.backward()
    assert pool.prompts.grad is not None and pool.prompts.grad.abs().sum() > 0
    if pull:
        assert pool.keys.grad.abs().sum() > 0
        # only the selected keys are pulled
        unselected = sorted(set(range(10)) - set(pool.selected.flatten().tolist()))
        assert all(pool.keys.grad[m].abs().sum() == 0 for m in unselected)
    else:
        assert pool.keys.grad is None

    # through a whole client round: the keys move only with the surrogate
    algo = make_method(setup, "l2p", l2p={"pull_coeff": pull})
    start = {n: p.clone() for n, p in algo.global_params.items()}
    upload = algo.client_update(0, 0, 0, algo.broadcast(0, 0))
    assert not torch.equal(upload["params"]["encoder.prompt.prompts"], start["encoder.prompt.prompts"])
    assert torch.equal(upload["params"]["encoder.prompt.keys"], start["encoder.prompt.keys"]) == (pull == 0)


def _lean_bytes(M: int, Lp: int, d: int, C: int) -> int:
    """Prompts + keys + the whole head (fp32): spec section 8."""
    return 4 * (M * Lp * d + M * d + C * (d + 1))


def test_l2p_runs_end_to_end_on_the_tiny_vit_with_the_lean_payload():
    cfg = load_config(None, {
        "experiment": "tiny-l2p",
        "dataset": {"name": "synthetic-images", "train_per_class": 8, "test_per_class": 2, "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": 2, "num_clients": 2, "rounds": 2, "local_epochs": 1, "min_samples": 1},
        "l2p": {"pool": "cls+prompts"},
        "runtime": {"threads": 1, "progress": False},
    })
    m = run_experiment(cfg, "l2p", seed=0, beta=0.5, dataset=build_dataset(cfg["dataset"]))
    assert [len(r) for r in m["accuracy_matrix"]] == [1, 2]
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    comm = m["communication"]
    assert comm["client_rounds"] == 2 * 2 * 2
    lean = _lean_bytes(10, 5, 192, 10)
    assert comm["download_bytes_per_client_round"] == lean
    assert comm["upload_bytes_per_client_round"] == lean + 8  # + the sample count


def test_l2p_runs_end_to_end_on_the_text_path():
    """MiniLM + WordNet glosses: 384-d prompts at the word-embedding level, 38,440 floats each way (spec 8)."""
    cfg, ds = tiny_text_setup({"num_tasks": 2, "rounds": 1})
    m = run_experiment(cfg, "l2p", seed=0, beta=0.5, dataset=ds)
    assert len(m["accuracy_matrix"]) == 2 and m["communication"]["client_rounds"] == 2 * 2
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    lean = _lean_bytes(10, 5, 384, 40)
    assert lean == 4 * 38_440
    assert m["communication"]["download_bytes_per_client_round"] == lean
    assert m["communication"]["upload_bytes_per_client_round"] == lean + 8


def test_l2p_config_errors_name_the_key(setup):  # noqa: F811
    with pytest.raises(ValueError, match="l2p.top_n"):
        make_method(setup, "l2p", l2p={"top_n": 11})
    algo = make_method(setup, "l2p")
    assert payload_bytes(algo.broadcast(0, 0)) == _lean_bytes(10, 5, 192, 10)
