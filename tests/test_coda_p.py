"""CODA-Prompt (baselines2-spec section 4): Gram–Schmidt components at task start, frozen old components, the
attention-weighted prompt by hand, the orthogonality penalty (Q24 switch), and end-to-end runs (tiny ViT, MiniLM)
with the lean sliced payload counted by the ledger, plus a resume after a crash."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lorm.config import load_config
from lorm.data.datasets import build_dataset
from lorm.federated.simulator import run_experiment
from lorm.methods.coda_p import CODAP, ortho_penalty

from conftest import run_until_crash, tiny_text_setup
from test_baselines import make_method, setup  # noqa: F401  (the tiny-ViT fixture of the baselines' tests)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"pool_size": 10, "layers": [0, 1]}  # 5 tasks: 2 components per task; the tiny ViT has 2 blocks


def _flat(algo, layer: int, tensor: str) -> torch.Tensor:
    t = algo.global_params[f"encoder.prompt.pools.{layer}.{tensor}"]
    return t.reshape(t.shape[0], -1).double()


def test_new_components_are_orthonormal_and_orthogonal_to_the_old_ones(setup):  # noqa: F811
    algo = make_method(setup, "coda-p", coda=SMALL)
    assert algo.per_task == 2
    algo.begin_task(0)
    for layer in (0, 1):
        for tensor in ("P", "K", "A"):
            X = _flat(algo, layer, tensor)
            torch.testing.assert_close(X[:2] @ X[:2].T, torch.eye(2, dtype=torch.float64))
            assert X[2:].abs().sum() == 0  # components of later tasks: zero until their task
    # "train" task 0: the old components are no longer orthonormal
    gen = torch.Generator().manual_seed(5)
    for p in algo.global_params.values():
        p.add_(0.3 * torch.randn(p.shape, generator=gen))
    old = {n: p.clone() for n, p in algo.global_params.items()}
    algo.begin_task(1)
    for layer in (0, 1):
        for tensor in ("P", "K", "A"):
            X = _flat(algo, layer, tensor)
            name = f"encoder.prompt.pools.{layer}.{tensor}"
            torch.testing.assert_close(algo.global_params[name][:2], old[name][:2], rtol=0, atol=0)  # kept
            torch.testing.assert_close(X[2:4] @ X[2:4].T, torch.eye(2, dtype=torch.float64))
            torch.testing.assert_close(X[2:4] @ X[:2].T, torch.zeros(2, 2, dtype=torch.float64), atol=1e-6, rtol=0)
    # the draw depends on the run seed, task, layer and tensor only (server and a restarted run agree)
    first, second = (make_method(setup, "coda-p", coda=SMALL) for _ in range(2))
    first.begin_task(0)
    second.begin_task(0)
    torch.testing.assert_close(_flat(first, 0, "K"), _flat(second, 0, "K"), rtol=0, atol=0)
    assert not torch.allclose(_flat(first, 0, "K")[:2], _flat(first, 1, "K")[:2])  # layers draw independently


def _query_and_pools(setup, task: int):  # noqa: F811
    algo = make_method(setup, "coda-p", coda=SMALL)
    for t in range(task + 1):
        algo.begin_task(t)
    algo.load_global()
    return algo


def test_prompt_is_the_attention_weighted_sum_of_the_components(setup):  # noqa: F811
    algo = _query_and_pools(setup, 1)  # components [0, 4) in use
    pool = algo.pool
    assert (pool.start, pool.end) == (2, 4)
    query = torch.randn(2, 192, generator=torch.Generator().manual_seed(3))
    prefixes = pool(query)
    assert set(prefixes) == {0, 1}
    for layer in (0, 1):
        P, K, A = (getattr(pool.pools[str(layer)], n).detach().double() for n in ("P", "K", "A"))
        for b in range(2):
            q = query[b].double()
            expected = torch.zeros(8, 192, dtype=torch.float64)
            for m in range(4):
                qa = [float(x) * float(a) for x, a in zip(q, A[m])]
                k = K[m].tolist()
                alpha = sum(x * y for x, y in zip(qa, k)) / math.sqrt(sum(x * x for x in qa)) / math.sqrt(
                    sum(y * y for y in k))
                expected += alpha * P[m]
            key, value = prefixes[layer]
            torch.testing.assert_close(key[b].double(), expected[:4], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(value[b].double(), expected[4:], atol=1e-5, rtol=1e-4)
    # components >= f take no part: changing them changes nothing
    with torch.no_grad():
        pool.pools["0"].P[4:] = 7.0
    torch.testing.assert_close(pool(query)[0][0], prefixes[0][0])


def test_old_components_get_no_gradient_and_the_penalty_is_the_spec_term(setup):  # noqa: F811
    algo = _query_and_pools(setup, 1)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 0, 1])
    algo.model.train()
    logits = algo.model(images)
    lo, hi = algo.ctx.task_ranges[1]
    loss = F.cross_entropy(logits[:, lo:hi], labels) + algo.regulariser(1, 0)(inputs=images, labels=labels,
                                                                              features=None, logits=logits)
    loss.backward()
    for layer in (0, 1):
        for tensor in ("P", "K", "A"):
            grad = getattr(algo.pool.pools[str(layer)], tensor).grad
            assert grad[:2].abs().sum() == 0, (layer, tensor)  # task 0's components: frozen
            assert grad[2:4].abs().sum() > 0, (layer, tensor)  # the current task's
            assert grad[4:].abs().sum() == 0, (layer, tensor)  # unused
    head = algo.model.head.weight.grad
    assert head[lo:hi].abs().sum() > 0 and head[:lo].abs().sum() == 0 and head[hi:].abs().sum() == 0

    # penalty = mu * sum over layers and P, K, A of mean((X X^T - I)^2), X = components [0, 4)
    expected = 0.0
    for layer in (0, 1):
        for tensor in ("P", "K", "A"):
            X = _flat(algo, layer, tensor)[:4]
            expected += float(((X @ X.T - torch.eye(4, dtype=torch.float64)) ** 2).mean())
    assert float(algo.regulariser(1, 0)().detach()) == pytest.approx(0.1 * expected, rel=1e-5)
    assert float(ortho_penalty(torch.eye(3))) == 0.0
    assert make_method(setup, "coda-p", coda={**SMALL, "ortho_mu": 0.0}).regulariser(1, 0) is None  # Q24


def test_coda_config_errors_name_the_key(setup):  # noqa: F811
    with pytest.raises(ValueError, match="coda.layers"):
        make_method(setup, "coda-p", coda={"layers": [0, 2]})
    with pytest.raises(ValueError, match="coda.pool_size"):
        make_method(setup, "coda-p", coda={"pool_size": 4, "layers": [0]})


# ------------------------------------------------------------------------------------------------ end to end


def _lean_bytes(T: int, pt: int, layers: int, L: int, d: int, c: int) -> tuple[float, float]:
    """(download, upload) bytes per client-round: components [0, f) resp. [s, f) of P, K, A in every layer and
    the c head rows of the task (weight + bias); the upload adds the sample count."""
    component = L * d + 2 * d
    rows = c * (d + 1)
    download = float(np.mean([4 * (layers * (t + 1) * pt * component + rows) for t in range(T)]))
    return download, 4 * (layers * pt * component + rows) + 8.0


def _tiny_vit_config():
    return load_config(None, {
        "experiment": "tiny-coda",
        "dataset": {"name": "synthetic-images", "train_per_class": 8, "test_per_class": 2, "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": 5, "num_clients": 2, "rounds": 2, "local_epochs": 1, "min_samples": 1},
        "coda": {"pool_size": 10, "layers": [0, 1], "lr": 0.01},
        "runtime": {"threads": 1, "progress": False},
    })


@pytest.fixture(scope="module")
def vit_run():
    cfg = _tiny_vit_config()
    ds = build_dataset(cfg["dataset"])
    return cfg, ds, run_experiment(cfg, "coda-p", seed=0, beta=0.5, dataset=ds)


def test_coda_p_runs_end_to_end_on_the_tiny_vit_with_the_lean_payload(vit_run):
    cfg, ds, m = vit_run
    assert [len(r) for r in m["accuracy_matrix"]] == [1, 2, 3, 4, 5]
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    comm = m["communication"]
    assert comm["client_rounds"] == 5 * 2 * 2
    download, upload = _lean_bytes(T=5, pt=2, layers=2, L=8, d=192, c=2)
    assert comm["download_bytes_per_client_round"] == download
    assert comm["upload_bytes_per_client_round"] == upload


def test_coda_p_resumes_after_a_crash_with_identical_metrics(vit_run, tmp_path, monkeypatch):
    """A run that dies after checkpointing task 3 of 5 (a fresh model, method and ledger on restart; task 3's
    components drawn from the restored pools) ends with exactly the metrics of the uninterrupted run."""
    cfg, ds, reference = vit_run
    ckpt = tmp_path / "run.ckpt"
    assert run_until_crash(CODAP, "coda-p", cfg, ds, ckpt, monkeypatch, at_task=3)["next_task"] == 3
    resumed = run_experiment(copy.deepcopy(cfg), "coda-p", seed=0, beta=0.5, dataset=ds, checkpoint=str(ckpt))
    assert resumed["resumed_after_task"] == 3 and reference["resumed_after_task"] is None
    for key in ("accuracy_matrix", "final_avg_accuracy", "final_avg_accuracy_weighted", "avg_forgetting",
                "communication"):
        assert resumed[key] == reference[key], key


def test_coda_p_runs_end_to_end_on_the_text_path():
    """MiniLM + WordNet glosses: prefixes in layers 0-4 of 6 (12 heads x 32), 384-d components."""
    cfg, ds = tiny_text_setup({"num_tasks": 2, "rounds": 1}, coda={"pool_size": 20})
    m = run_experiment(cfg, "coda-p", seed=0, beta=0.5, dataset=ds)
    assert len(m["accuracy_matrix"]) == 2 and m["communication"]["client_rounds"] == 2 * 2
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    download, upload = _lean_bytes(T=2, pt=10, layers=5, L=8, d=384, c=20)
    assert m["communication"]["download_bytes_per_client_round"] == download
    assert m["communication"]["upload_bytes_per_client_round"] == upload
    # spec section 8 (T = 10, 4 classes a task): 193,540 floats up
    assert _lean_bytes(T=10, pt=10, layers=5, L=8, d=384, c=4)[1] == 4 * 193_540 + 8


@pytest.mark.parametrize("method", ["coda-p", "l2p"])
def test_prompt_methods_run_under_bf16_autocast(method):
    """The GPU autocast path (bf16) on the CPU: prefixes / prompt tokens, surrogate and penalty in mixed dtypes."""
    cfg = load_config(None, {**_tiny_vit_config(), "runtime": {"threads": 1, "progress": False, "amp": "bf16"}})
    cfg["fcil"].update(num_tasks=2, rounds=1)
    cfg["dataset"].update(train_per_class=4, test_per_class=2)
    m = run_experiment(cfg, method, seed=0, beta=0.5, dataset=build_dataset(cfg["dataset"]))
    assert len(m["accuracy_matrix"]) == 2 and all(0 <= a <= 100 for a in m["accuracy_matrix"][-1])
