"""End-to-end FCIL runs on tiny shapes (random-init timm ViT + fabricated images; MiniLM + WordNet glosses),
and the simulator's bookkeeping: phases, what is uploaded, byte counts, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lorm.config import load_config
from lorm.data.datasets import build_dataset
from lorm.federated.simulator import run_experiment
from lorm.methods import METHODS
from lorm.methods.lorm import LoRM

REPO = Path(__file__).resolve().parents[1]


def tiny_image_config(**fcil):
    return load_config(None, {
        "experiment": "tiny-vit",
        "dataset": {"name": "synthetic-images", "train_per_class": 12, "test_per_class": 4, "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": 5, "num_clients": 3, "rounds": 2, "local_epochs": 1, "min_samples": 1, **fcil},
        "optim": {"lr": 1e-2},
        "coda": {"layers": [0, 1]},  # the tiny ViT has 2 blocks
        "runtime": {"threads": 2, "progress": False},
        # TARGET's server synthesis shrunk to a few steps (the defaults run 2,400 generator steps per task)
        "method_params": {"target": {"target": {"syn_rounds": 2, "g_steps": 2, "warmup": 1, "student_kd_steps": 2,
                                                "batch_size": 4}}},
    })


@pytest.fixture(scope="module")
def image_setup():
    cfg = tiny_image_config()
    return cfg, build_dataset(cfg["dataset"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_tiny_vit(image_setup, method):
    cfg, ds = image_setup
    m = run_experiment(cfg, method, seed=0, beta=0.5, dataset=ds)
    T = cfg["fcil"]["num_tasks"]
    if METHODS[method].federated:
        assert m["eval_after_task"] == list(range(T))
        assert [len(r) for r in m["accuracy_matrix"]] == list(range(1, T + 1))
        assert m["avg_forgetting"] is not None
        assert m["communication"]["client_rounds"] == T * cfg["fcil"]["rounds"] * cfg["fcil"]["num_clients"]
        assert m["communication"]["upload_bytes_per_client_round"] > 0
    else:
        assert m["eval_after_task"] == [T - 1] and len(m["accuracy_matrix"][0]) == T
        assert m["communication"]["upload_bytes_total"] == 0
    assert all(0.0 <= a <= 100.0 for row in m["accuracy_matrix"] for a in row)
    assert m["final_avg_accuracy"] == pytest.approx(np.mean(m["accuracy_matrix"][-1]))
    assert sum(m["task_test_sizes"]) == len(ds["test"]["label"])
    json.dumps(m)  # serialisable


def test_joint_learns_the_fabricated_images(image_setup):
    """The fabricated classes are separable: the upper bound must clearly beat chance (10%)."""
    cfg, ds = image_setup
    cfg = load_config(None, {**cfg, "fcil": {**cfg["fcil"], "rounds": 4}})
    m = run_experiment(cfg, "joint", seed=0, beta=0.5, dataset=ds)
    assert m["final_avg_accuracy"] > 50.0


def test_same_seed_same_metrics_different_seed_differs(image_setup):
    cfg, ds = image_setup
    a = run_experiment(cfg, "lorm", seed=3, beta=0.5, dataset=ds)
    b = run_experiment(cfg, "lorm", seed=3, beta=0.5, dataset=ds)
    c = run_experiment(cfg, "lorm", seed=4, beta=0.5, dataset=ds)
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert a["communication"] == b["communication"]
    assert a["partition"] != c["partition"] or a["accuracy_matrix"] != c["accuracy_matrix"]


class Recorder(LoRM):
    """LoRM that records the phase of each round, the upload keys and the merged factors."""

    log: list = []

    def client_update(self, client, task, rnd, state):
        up = super().client_update(client, task, rnd, state)
        Recorder.log.append(("upload", task, rnd, self.phase(task, rnd),
                             {f for layer in up["factors"].values() for f in layer}, set(up)))
        return up


def test_lorm_alternates_b_a_b_and_uploads_only_the_trained_factor(image_setup, monkeypatch):
    cfg, ds = image_setup
    cfg = load_config(None, {**cfg, "fcil": {**cfg["fcil"], "rounds": 3, "num_tasks": 2}})
    monkeypatch.setitem(METHODS, "lorm", Recorder)
    Recorder.log = []
    m = run_experiment(cfg, "lorm", seed=0, beta=0.5, dataset=ds)
    phases = [(t, r, p) for _, t, r, p, _, _ in Recorder.log]
    per_round = sorted(set(phases))
    assert [p for _, _, p in per_round] == [("B",), ("A",), ("B",)] * 2
    for _, _, _, phase, factors, keys in Recorder.log:
        assert factors == set(phase)  # the frozen factor is never uploaded
        assert {"grams", "head_gram", "head", "num_samples", "factors"} <= keys

    # Byte count of one B-round upload, computed from the shapes: B factors + head + diagonal stats
    # + upper triangle of the head Gram + the sample count.
    from lorm.models.backbones import build_classifier
    from lorm.models.lora import lora_layers

    model = build_classifier(cfg["model"], 10)
    layers = lora_layers(model).values()
    r = cfg["model"]["lora_rank"]
    d = model.head.in_features
    b_round = 4 * (sum(l.out_features * r + l.in_features for l in layers) + 10 * d + 10 + d * (d + 1) // 2) + 8
    a_round = 4 * (sum(r * l.in_features + l.in_features for l in layers) + 10 * d + 10 + d * (d + 1) // 2) + 8
    expected = (2 * b_round + a_round) / 3  # B, A, B in each task
    assert m["communication"]["upload_bytes_per_client_round"] == pytest.approx(expected)


def test_lorm_deploys_the_accumulated_merge(image_setup, monkeypatch):
    """After task 2 the evaluated layer is W0 + S Gamma^+ with the accumulator of both tasks' deltas."""
    cfg, ds = image_setup
    cfg = load_config(None, {**cfg, "fcil": {**cfg["fcil"], "num_tasks": 2}})
    seen = {}

    class Probe(LoRM):
        def deploy(self):
            super().deploy()
            name, layer = next(iter(self.layers.items()))
            seen[self.accumulator.num_tasks] = (layer.effective_weight() - layer.base.weight).detach().clone(), \
                self.task_delta(name).float(), self.accumulator.delta(name).float(), float(layer.lora_B.abs().sum())

    monkeypatch.setitem(METHODS, "lorm", Probe)
    run_experiment(cfg, "lorm", seed=0, beta=0.5, dataset=ds)
    deployed1, delta1, _, lora_b1 = seen[1]
    torch.testing.assert_close(deployed1, delta1, atol=1e-6, rtol=1e-4)  # task 0: W0 + B0 A0
    deployed2, _, acc2, lora_b2 = seen[2]
    torch.testing.assert_close(deployed2, acc2, atol=1e-6, rtol=1e-4)
    assert lora_b1 == 0.0 and lora_b2 == 0.0  # factors zeroed: only the deployed delta acts


@pytest.mark.slow
def test_text_path_end_to_end_cli(tmp_path):
    """MiniLM + WordNet-40 glosses through the command line with a truncated config."""
    from lorm.data.wordnet import find_wordnet_dir

    try:
        find_wordnet_dir()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"WordNet not installed: {exc}")
    out = tmp_path / "m.json"
    cmd = [sys.executable, "-m", "lorm", "run", "--config", str(REPO / "config" / "test.yaml"), "--method", "lorm",
           "--seed", "0", "--beta", "0.5", "--out", str(out), "--no-progress",
           "--set", "fcil.num_tasks=2", "--set", "fcil.task_sizes=[20,20]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(out.read_text())
    assert m["method"] == "lorm" and len(m["accuracy_matrix"]) == 2
    assert m["communication"]["upload_bytes_total"] > 0
    assert 0 <= m["final_avg_accuracy"] <= 100


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fcil:\n  roundz: 3\n")
    proc = subprocess.run([sys.executable, "-m", "lorm", "run", "--config", str(bad), "--method", "lorm",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "roundz" in lines[0], proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_cli_help_explains():
    proc = subprocess.run([sys.executable, "-m", "lorm", "run", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("--method", "--seed", "--beta", "--partition", "--set"):
        assert word in proc.stdout


def _tiny_resume_config(tmp_path):
    import yaml

    cfg = tiny_image_config(num_tasks=5, rounds=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items()}))
    return path


@pytest.mark.slow
# ewc: Fisher + anchor; lwf: teacher; coda-p: task-start components drawn from the restored pools;
# target: the synthetic pool in the checkpoint
@pytest.mark.parametrize("method", ["lorm", "fedavg-lora", "ewc", "lwf", "coda-p", "target"])
def test_killed_run_resumes_with_identical_metrics(tmp_path, method):
    """Kill the process (SIGKILL) once it has checkpointed task 2 of 5, start it again with the same command,
    and compare with an uninterrupted run: the metrics must be exactly equal (wall times aside)."""
    import signal
    import time

    config = _tiny_resume_config(tmp_path)

    def cmd(out):
        return [sys.executable, "-m", "lorm", "run", "--config", str(config), "--method", method, "--seed", "1",
                "--out", str(out), "--no-progress"]

    ref_out = tmp_path / "ref.json"
    subprocess.run(cmd(ref_out), check=True, capture_output=True, timeout=600)

    out = tmp_path / "killed.json"
    ckpt = Path(str(out) + ".ckpt")
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["next_task"] >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("run finished before it could be killed: " + proc.stderr.read().decode()[-500:])
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and ckpt.exists()

    resumed = subprocess.run(cmd(out), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    assert not ckpt.exists()  # removed once the metrics are written
    a, b = json.loads(ref_out.read_text()), json.loads(out.read_text())
    assert b["resumed_after_task"] >= 2 and a["resumed_after_task"] is None
    for key in ("accuracy_matrix", "final_avg_accuracy", "final_avg_accuracy_weighted", "avg_forgetting",
                "communication", "task_test_sizes"):
        assert a[key] == b[key], key


def test_checkpoint_of_another_run_is_ignored(tmp_path, image_setup, caplog):
    """A checkpoint left by a different run (e.g. params edited after a kill) must not be resumed."""
    from lorm.federated.checkpoint import save_checkpoint

    cfg, ds = image_setup
    cfg = load_config(None, {**cfg, "fcil": {**cfg["fcil"], "num_tasks": 2}})
    ckpt = tmp_path / "x.ckpt"
    save_checkpoint(ckpt, {"fingerprint": "someone else's run", "next_task": 1})
    with caplog.at_level("WARNING", logger="lorm"):
        m = run_experiment(cfg, "lorm", seed=0, beta=0.5, dataset=ds, checkpoint=str(ckpt))
    assert "different run" in caplog.text
    assert m["resumed_after_task"] is None and len(m["accuracy_matrix"]) == 2


def test_tasks_that_do_not_divide_the_classes_are_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {name: synthetic-images, train_per_class: 4, test_per_class: 2}\n"
                   "model: {backbone: vit-tiny-test}\nfcil: {num_tasks: 4}\n")
    proc = subprocess.run([sys.executable, "-m", "lorm", "run", "--config", str(bad), "--method", "lorm",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fcil" in proc.stderr and "task_sizes" in proc.stderr


def test_lorm_on_a_fabricated_cifar100_layout_with_augmentation(tmp_path):
    """The paper path on tiny shapes: CIFAR-100 pickles on disk -> the real loader -> per-batch RRC/flip
    transforms (training and, as in the official code, statistics passes) -> tiny ViT -> LoRM."""
    from test_vision_data import _fake_cifar

    _fake_cifar(tmp_path, n_classes=4, train_per=8, test_per=3)
    cfg = load_config(None, {
        "dataset": {"name": "cifar100", "root": str(tmp_path), "image_size": 32, "strict": False},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": 2, "num_clients": 2, "rounds": 2, "min_samples": 1},
        "lorm": {"stats_passes": 2},
        "runtime": {"threads": 2, "progress": False},
    })
    ds = build_dataset(cfg["dataset"])
    assert ds["train"]["images"].shape == (32, 32, 32, 3)
    a = run_experiment(cfg, "lorm", seed=0, beta=0.5, dataset=ds)
    b = run_experiment(cfg, "lorm", seed=0, beta=0.5, dataset=ds)
    assert a["accuracy_matrix"] == b["accuracy_matrix"]  # augmentation draws are seeded too
    assert len(a["accuracy_matrix"]) == 2 and a["task_test_sizes"] == [6, 6]


def test_timm_backbone_loads_local_weights_and_fails_fast_offline(tmp_path, monkeypatch):
    """model.weights is read from disk (same path as ViT-B/16's local file); offline without weights the
    pretrained backbone fails at once with the fix, not after the hub's retry loop."""
    import time

    from lorm.models.backbones import BackboneError, build_classifier

    reference = build_classifier({"backbone": "vit-tiny-test", "lora_rank": 2}, 10)
    state = {k.removeprefix("encoder.vit."): v for k, v in reference.state_dict().items()
             if k.startswith("encoder.vit.") and "lora_" not in k}
    state = {k.replace(".base.", "."): v for k, v in state.items()}
    weights = tmp_path / "tiny.pth"
    torch.save(state, weights)
    loaded = build_classifier({"backbone": "vit-tiny-test", "lora_rank": 2, "weights": str(weights)}, 10)
    torch.testing.assert_close(loaded.encoder.vit.blocks[0].attn.qkv.base.weight,
                               reference.encoder.vit.blocks[0].attn.qkv.base.weight)
    with pytest.raises(BackboneError, match="model.weights"):
        build_classifier({"backbone": "vit-tiny-test", "lora_rank": 2, "weights": str(tmp_path / "none.pth")}, 10)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE"):
        build_classifier({"backbone": "vit_base_patch16_224.augreg_in21k", "lora_rank": 2}, 10)
    assert time.perf_counter() - start < 5


def test_mixed_precision_path_runs_on_cpu_bf16(image_setup):
    """The autocast path used on GPUs (bf16) exercised on the CPU: statistics stay float32, metrics valid."""
    from lorm.federated.training import Runtime, resolve_amp

    cfg, ds = image_setup
    assert resolve_amp("auto", torch.device("cpu")) is None  # CPU default: fp32
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    assert Runtime(torch.device("cpu"), torch.float16).grad_scaler().is_enabled() is False  # scaling: CUDA fp16 only
    cfg = load_config(None, {**cfg, "runtime": {**cfg["runtime"], "amp": "bf16"},
                             "fcil": {**cfg["fcil"], "num_tasks": 2, "rounds": 2, "num_clients": 2},
                             "dataset": {**cfg["dataset"], "train_per_class": 4, "test_per_class": 2}})
    ds = build_dataset(cfg["dataset"])  # bf16 matmuls are slow on CPUs without native support: keep it tiny
    m = run_experiment(cfg, "lorm", seed=0, beta=0.5, dataset=ds)
    assert len(m["accuracy_matrix"]) == 2 and all(0 <= a <= 100 for a in m["accuracy_matrix"][-1])
