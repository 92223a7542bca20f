"""KnOTS merge benchmark (lorm.mergebench): task split, fine-tuning files, merge identities, greedy search,
joint Hits@k, the CLIP path end to end on fabricated digits, CKA alignment and the report. Nothing downloads:
the vision mechanics run on the random tiny ViT / tiny CLIP and fabricated images."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from lorm.config import ConfigError  # noqa: E402
from lorm.data.synthetic import make_synthetic_images  # noqa: E402
from lorm.mergebench import cli  # noqa: E402
from lorm.mergebench.config import BenchError, fingerprint, load_merge_config  # noqa: E402
from lorm.mergebench.evaluate import Evaluator, Merger, load_finetuned, run_alignment, run_merge  # noqa: E402
from lorm.mergebench.finetune import finetune_task, lr_at, save_finetuned  # noqa: E402
from lorm.mergebench.report import alignment_figure, load_paper, write_report  # noqa: E402
from lorm.mergebench.search import Coordinate, coordinates_for, greedy_search, start_for  # noqa: E402
from lorm.mergebench.tasks import build_tasks, class_split, resolve_task, task_names  # noqa: E402

# the workflow's copy of the reference table (../shared/reference/paper-tables-knots.csv)
REAL_PAPER_CSV = pathlib.Path(__file__).resolve().parents[1] / "workflow" / "resources" / "paper-tables-knots.csv"

FAST_MERGE = {"lambda_grid": [0.5, 1.0], "topk_grid": [20, 100], "dare_p_grid": [0.5, 0.1], "dare_seeds": [1, 2]}
RUNTIME = {"device": "cpu", "threads": 1, "progress": False, "eval_batch_size": 32}


def tiny_vision_cfg(num_tasks: int = 2, **extra) -> dict:
    """vit-tiny-test on fabricated synthetic images, class-split into tasks of 3 classes, trained heads."""
    over = {
        "experiment": "mb-test", "seed": 3,
        "tasks": {"source": "class-split", "num_tasks": num_tasks, "classes_per_task": 3},
        "dataset": {"name": "synthetic-images", "num_classes": 6, "train_per_class": 12, "test_per_class": 10,
                    "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2, "head": "trained"},
        "train": {"lr": 0.01, "head_lr": 0.01, "batch_size": 8, "max_steps": 8, "warmup_steps": 2,
                  "eval_every": 4, "patience": 2},
        "merge": FAST_MERGE, "runtime": RUNTIME,
    }
    for key, value in extra.items():
        over[key] = {**over.get(key, {}), **value} if isinstance(value, dict) else value
    return load_merge_config(None, over)


@pytest.fixture(scope="module")
def vision2(tmp_path_factory):
    """Two fine-tuned tiny-ViT tasks: (cfg, [paths])."""
    cfg = tiny_vision_cfg(2)
    folder = tmp_path_factory.mktemp("ft2")
    paths = []
    for t in range(2):
        path = folder / f"task{t}.pt"
        save_finetuned(finetune_task(cfg, t, progress=False), path)
        paths.append(str(path))
    return cfg, paths


# ------------------------------------------------------------------------------------------------ config
def test_config_defaults_are_the_offline_benchmark_and_errors_are_one_line():
    cfg = load_merge_config()
    assert cfg["tasks"] == {"source": "class-split", "num_tasks": 8, "classes_per_task": 5, "datasets": [],
                            "val_fraction": 0.2, "val_permutation_dir": None}
    assert cfg["dataset"]["name"] == "wordnet40" and cfg["model"]["backbone"] == "minilm"
    assert cfg["merge"]["methods"] == ["ta", "ties", "dare-ties", "knots-ta", "knots-ties", "knots-dare-ties"]
    assert cfg["search"]["per_task"] == {"start": {"lam": 0.1, "topk": 20, "dare_p": 0.2}, "tie": "ge"}
    assert cfg["search"]["joint"]["tie"] == "gt" and cfg["search"]["joint"]["start"]["lam"] == 0.6
    with pytest.raises(ConfigError, match=r"^config key train\.lrr: unknown key") as err:
        load_merge_config(None, {"train": {"lrr": 1.0}})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="text heads need a CLIP backbone"):
        load_merge_config(None, {"model": {"head": "text"}})
    root = pathlib.Path(__file__).resolve().parent.parent / "config"
    for name in ("merge.yaml", "merge-paper.yaml"):
        if (root / name).is_file():
            load_merge_config(root / name)
    paper = load_merge_config(root / "merge-paper.yaml")
    assert paper["model"]["backbone"] == "clip-vit-b32" and paper["model"]["head"] == "text"
    assert paper["tasks"]["datasets"] == ["cars196", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "sun397", "svhn"]
    assert (paper["train"]["lr"], paper["train"]["weight_decay"], paper["train"]["batch_size"],
            paper["model"]["lora_rank"]) == (3e-4, 0.1, 32, 16)


# ------------------------------------------------------------------------------------------------ tasks
def test_wordnet_split_into_8_tasks_of_5_consecutive_classes_with_seeded_val_test():
    from lorm.data.wordnet import build_wordnet40

    try:
        ds = build_wordnet40(train_per_class=3, test_per_class=10, seed=0)
    except Exception as exc:  # noqa: BLE001 - WordNet files not installed
        pytest.skip(f"WordNet not available: {exc}")
    plan = class_split(ds["train"]["label"], ds["test"]["label"], 8, 5, seed=0)
    assert len(plan) == 8
    test_labels = np.asarray(ds["test"]["label"])
    for t, task in enumerate(plan):
        assert task["classes"] == list(range(5 * t, 5 * t + 5))  # natural order, consecutive
        rows = np.flatnonzero(np.isin(test_labels, task["classes"]))
        assert len(task["val"]) == int(np.floor(0.2 * len(rows)))
        assert sorted(task["val"].tolist() + task["test"].tolist()) == rows.tolist()  # a partition of the test rows
        assert set(np.asarray(ds["train"]["label"])[task["train"]]) == set(task["classes"])
    again = class_split(ds["train"]["label"], ds["test"]["label"], 8, 5, seed=0)
    other = class_split(ds["train"]["label"], ds["test"]["label"], 8, 5, seed=1)
    assert all(np.array_equal(a["val"], b["val"]) for a, b in zip(plan, again))
    assert any(not np.array_equal(a["val"], b["val"]) for a, b in zip(plan, other))
    assert plan[0]["val"].tolist() != sorted(plan[0]["val"].tolist()) or len(plan[0]["val"]) < 2  # permuted
    cfg = load_merge_config()
    assert task_names(cfg) == [f"task{t}" for t in range(8)]
    assert resolve_task(cfg, "task3") == 3 and resolve_task(cfg, "5") == 5
    with pytest.raises(Exception, match="unknown task"):
        resolve_task(cfg, "task9")


# ------------------------------------------------------------------------------------------------ search
def test_greedy_search_stops_at_first_non_improvement_and_respects_ties():
    table = {0.1: 1.0, 0.2: 2.0, 0.3: 2.0, 0.4: 3.0, 0.5: 0.0}
    calls = []

    def score(hp):
        calls.append(dict(hp))
        return table[hp["lam"]] + (0.5 if hp.get("topk") == 30 else 0.0)

    coords = [Coordinate("lam", (0.1, 0.2, 0.3, 0.4, 0.5)), Coordinate("topk", (10, 20, 30, 40))]
    ge = greedy_search(score, coords, {"lam": 0.9, "topk": 20}, tie="ge")
    lam_calls = [c["lam"] for c in calls if c["topk"] == 20][:5]
    assert lam_calls == [0.1, 0.2, 0.3, 0.4, 0.5]  # the equal 0.3 counts as improvement, 0.5 stops
    assert all(c["topk"] == 20 for c in calls[:5])  # topK keeps its start value while lambda is swept
    assert ge["chosen"] == {"lam": 0.4, "topk": 30} and ge["score"] == 3.5
    assert [s["value"] for s in ge["steps"] if s["param"] == "topk"] == [10, 20, 30, 40]  # 40 < 30 stops at the end

    calls.clear()
    gt = greedy_search(score, coords, {"lam": 0.9, "topk": 20}, tie="gt")
    assert [c["lam"] for c in calls[:3]] == [0.1, 0.2, 0.3] and 0.4 not in [c["lam"] for c in calls]
    assert gt["chosen"]["lam"] == 0.2  # strict: the tie at 0.3 ends the sweep
    # topK sweep under gt: 10 (2.0) then 20 (2.0, not strictly better) -> stop; 30 is never tried
    assert [s["value"] for s in gt["steps"] if s["param"] == "topk"] == [10, 20] and gt["chosen"]["topk"] == 10

    seeds = greedy_search(lambda hp: {1: 0.0, 2: 5.0, 3: 1.0}[hp["seed"]], [Coordinate("seed", (1, 2, 3), False)],
                          {"seed": 1}, tie="gt")
    assert [s["value"] for s in seeds["steps"]] == [1, 2, 3] and seeds["chosen"]["seed"] == 2  # no early stop

    mcfg = load_merge_config()["merge"]
    assert [c.name for c in coordinates_for("knots-dare-ties", mcfg)] == ["lam", "dare_p", "seed"]
    assert [c.name for c in coordinates_for("ties", mcfg)] == ["lam", "topk"]
    assert start_for("dare-ties", {"lam": 0.1, "topk": 20, "dare_p": 0.2}, mcfg) == \
        {"lam": 0.1, "dare_p": 0.2, "seed": 421}
    assert lr_at(0, {"warmup_steps": 4, "max_steps": 10, "schedule": "cosine"}) == 0.25
    assert lr_at(4, {"warmup_steps": 4, "max_steps": 10, "schedule": "cosine"}) == 1.0
    assert lr_at(10, {"warmup_steps": 4, "max_steps": 10, "schedule": "cosine"}) < 1e-12


# ------------------------------------------------------------------------------------------------ fine-tuning
def test_finetune_saves_factors_head_and_denominators(vision2):
    cfg, paths = vision2
    recs = [torch.load(p, weights_only=True) for p in paths]
    for t, rec in enumerate(recs):
        assert rec["task"] == f"task{t}" and rec["fingerprint"] == fingerprint(cfg)
        assert rec["factors"] and all(isinstance(v, tuple) and len(v) == 2 for v in rec["factors"].values())
        for name, (A, B) in rec["factors"].items():
            assert A.shape[0] == B.shape[1] == 2 and B.abs().sum() > 0  # trained B
            assert not torch.equal(A, rec["init_A"][name])  # A trained too
        assert rec["head"]["kind"] == "trained" and rec["head"]["weight"].shape[0] == 3
        assert rec["head"]["bias"].shape == (3,)
        assert 0.0 <= rec["val_acc"] <= 100.0 and 0.0 <= rec["test_acc"] <= 100.0
        assert rec["sizes"] == {"train": 36, "val": 6, "test": 24}
        assert rec["train"]["updates"] <= 8 and rec["train"]["history"]
    assert all(torch.equal(recs[0]["init_A"][n], recs[1]["init_A"][n]) for n in recs[0]["init_A"])  # shared init
    assert load_finetuned(cfg, paths[::-1])[0]["task"] == "task0"  # sorted by task
    with pytest.raises(BenchError, match="no fine-tuned file"):
        load_finetuned(cfg, paths[:1])
    with pytest.raises(BenchError, match="another configuration"):
        load_finetuned(tiny_vision_cfg(2, seed=4), paths)


def test_single_task_merge_equals_the_finetuned_model(tmp_path):
    cfg = tiny_vision_cfg(1, merge={"lambda_grid": [1.0], "topk_grid": [100]})
    path = tmp_path / "task0.pt"
    save_finetuned(finetune_task(cfg, 0, progress=False), path)
    rec = torch.load(path, weights_only=True)
    for method in ("ta", "ties", "knots-ta", "knots-ties"):
        merger = Merger([rec], method, cfg)
        deltas = merger.merge({"lam": 1.0, "topk": 100})
        for name, (A, B) in rec["factors"].items():
            torch.testing.assert_close(deltas[name], B @ A, rtol=1e-5, atol=1e-6)
        out = run_merge(cfg, method, [path], progress=False)
        assert out["per_task"]["chosen"]["lam"] == 1.0
        assert out["per_task"]["test"]["normalised"]["task0"] == pytest.approx(100.0)
        assert out["per_task"]["val"]["mean_normalised"] == pytest.approx(100.0)
    fin = run_merge(cfg, "finetuned", [path], progress=False)
    assert fin["per_task"]["test"]["mean_normalised"] == pytest.approx(100.0)
    assert fin["checks"]["finetuned_reproduces_denominators"]["max_abs_diff_points"] < 1e-9


def test_knots_ta_equals_ta_and_metrics_file(vision2):
    cfg, paths = vision2
    ta = run_merge(cfg, "ta", paths, progress=False)
    kta = run_merge(cfg, "knots-ta", paths, progress=False)
    check = kta["checks"]["knots_ta_equals_ta"]
    assert check["equal"] and check["relative_frobenius"] < 1e-6
    assert ta["per_task"]["chosen"] == kta["per_task"]["chosen"]
    scores = [s["score"] for s in ta["per_task"]["steps"]]
    assert scores == pytest.approx([s["score"] for s in kta["per_task"]["steps"]])
    assert ta["per_task"]["test"]["normalised"] == pytest.approx(kta["per_task"]["test"]["normalised"])
    for step in ta["per_task"]["steps"]:
        assert {"param", "value", "hp", "score", "improved", "val"} <= set(step)
    assert ta["joint"]["test"]["hits"].keys() == {"1", "3", "5", "10"}
    assert {"merge_mean", "alignment", "search", "total"} <= set(kta["wall_time_s"])
    dts = run_merge(cfg, "knots-dare-ties", paths, progress=False)
    assert {"lam", "dare_p", "seed"} == set(dts["per_task"]["chosen"])
    assert [s["param"] for s in dts["per_task"]["steps"]][-2:] == ["seed", "seed"]  # both seeds tried
    json.dumps(dts)  # JSON-serialisable as written by the CLI


def test_joint_hits_on_stacked_task_heads(vision2):
    from lorm.federated.training import Runtime
    from lorm.models.clip import hits_at_k

    cfg, paths = vision2
    records = load_finetuned(cfg, paths)
    tasks = build_tasks(cfg, splits=("val", "test"))
    ev = Evaluator(cfg, records, tasks, Runtime(torch.device("cpu"), None, 8, 32))
    assert ev.joint.num_labels == 6  # 2 tasks x 3 classes, nothing shared
    torch.testing.assert_close(ev.joint.weight, torch.cat([records[0]["head"]["weight"], records[1]["head"]["weight"]]))
    torch.testing.assert_close(ev.joint_bias, torch.cat([records[0]["head"]["bias"], records[1]["head"]["bias"]]))
    feats = ev.features("test")
    labels = torch.cat([tasks[0].splits["test"].labels, tasks[1].splits["test"].labels + 3])
    assert torch.equal(ev.joint_labels["test"], labels)
    scores = torch.cat([torch.cat([f @ r["head"]["weight"].T + r["head"]["bias"] for r in records], 1)
                        for f in feats])
    manual = hits_at_k(scores, labels, (1, 3, 5, 10))
    got = ev.metrics(feats, "test")["hits"]
    assert got == {str(k): pytest.approx(100.0 * v) for k, v in manual.items()}
    assert got["10"] == 100.0 and got["1"] <= got["3"] <= got["5"]


# ------------------------------------------------------------------------------------------------ alignment
def test_alignment_json_is_symmetric_with_unit_diagonal(vision2, tmp_path):
    cfg, paths = vision2
    res = run_alignment(cfg, paths, progress=False)
    for key in ("lora", "knots"):
        m = np.asarray(res[key])
        assert m.shape == (2, 2)
        np.testing.assert_allclose(m, m.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
        assert ((m >= -1e-12) & (m <= 1 + 1e-9)).all()
    assert res["num_layers"] == 8 and res["representations"]["knots"] == "knots" and "V_i^T x" in res["caption"]
    scaled = run_alignment({**cfg, "alignment": {**cfg["alignment"], "knots_representation": "knots-scaled"}}, paths,
                           progress=False)
    np.testing.assert_allclose(scaled["knots"], scaled["lora"], atol=1e-9)  # isometry: equals the LoRA heatmap
    alignment_figure(res, tmp_path / "cka.png")
    assert (tmp_path / "cka.png").stat().st_size > 0
    assert (tmp_path / "cka.pdf").read_bytes()[:5] == b"%PDF-"  # the PDF beside the PNG


# ------------------------------------------------------------------------------------------------ CLIP path
def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)  # uncompressed, as torchvision MNIST reads it
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _fabricate_digits(root: pathlib.Path) -> None:
    """MNIST (IDX, grey 28 px) and SVHN (.mat, 32 px) with learnable class templates, 10 digits each."""
    import scipy.io as sio

    for name, size, seed in (("mnist", 28, 1), ("svhn", 32, 2)):
        ds = make_synthetic_images(10, 8, 10, image_size=size, seed=seed, noise=6.0, amplitude=90.0)
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images, labels = ds[split]["images"], np.asarray(ds[split]["label"])
            if name == "mnist":
                raw = root / "MNIST" / "raw"
                _write_idx(raw / f"{prefix}-images-idx3-ubyte", images.mean(axis=3).astype(np.uint8))
                _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
            else:
                folder = root / "svhn"
                folder.mkdir(parents=True, exist_ok=True)
                y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
                sio.savemat(folder / f"{split}_32x32.mat", {"X": np.transpose(images, (1, 2, 3, 0)), "y": y})


def test_clip_path_end_to_end_with_text_heads_and_shared_digits(tmp_path, capsys):
    pytest.importorskip("scipy")
    _fabricate_digits(tmp_path / "data")
    cfg_path = tmp_path / "clip.yaml"
    cfg_path.write_text(json.dumps({
        "experiment": "mb-clip-test", "seed": 0,
        "tasks": {"source": "datasets", "datasets": ["mnist", "svhn"]},
        "dataset": {"root": str(tmp_path / "data"), "image_size": 32, "strict": False},
        "model": {"backbone": "clip-tiny-test", "lora_rank": 2, "head": "text"},
        "train": {"lr": 0.01, "batch_size": 10, "max_steps": 12, "warmup_steps": 1, "eval_every": 4, "patience": None},
        "merge": FAST_MERGE, "runtime": RUNTIME}))  # JSON is YAML
    ft = []
    for name in ("mnist", "svhn"):
        out = tmp_path / f"{name}.pt"
        assert cli.main(["finetune", "--config", str(cfg_path), "--task", name, "--out", str(out),
                         "--no-progress"]) == 0
        ft.append(str(out))
    rec = torch.load(ft[0], weights_only=True)
    assert rec["head"]["kind"] == "text" and rec["head"]["bias"] is None
    assert rec["classnames"] == [str(d) for d in range(10)]
    assert rec["sizes"] == {"train": 80, "val": 20, "test": 80}  # floor(0.2 * 100) carved out of test
    torch.testing.assert_close(rec["head"]["weight"].norm(dim=1), torch.full((10,), 100.0))
    svhn = torch.load(ft[1], weights_only=True)
    torch.testing.assert_close(rec["head"]["weight"], svhn["head"]["weight"])  # same digit prompt
    runs = []
    for method in ("knots-ties", "ties", "finetuned"):
        out = tmp_path / f"{method}.json"
        assert cli.main(["merge", "--config", str(cfg_path), "--method", method, "--finetuned", *ft,
                         "--out", str(out), "--no-progress"]) == 0
        runs.append(str(out))
    m = json.loads(pathlib.Path(runs[0]).read_text())
    assert m["num_joint_labels"] == 10  # SVHN shares MNIST's digits (spec 9.2)
    assert set(m["per_task"]["test"]["normalised"]) == {"mnist", "svhn"}
    assert m["joint"]["selection"] == "validation Hits@3" and m["joint"]["tie"] == "gt"
    assert m["knots_rank"]["max"] <= 4  # 2 tasks x rank 2
    assert cli.main(["alignment", "--config", str(cfg_path), "--finetuned", *ft, "--out-json",
                     str(tmp_path / "a.json"), "--out-png", str(tmp_path / "a.png"), "--no-progress"]) == 0
    paper = REAL_PAPER_CSV if REAL_PAPER_CSV.is_file() else _paper_csv(tmp_path)
    assert cli.main(["report", "--runs", *runs, "--paper", str(paper), "--md", str(tmp_path / "r.md"),
                     "--csv", str(tmp_path / "r.csv"), "--figure", str(tmp_path / "r.png"),
                     "--alignment", str(tmp_path / "a.json")]) == 0
    assert "KnOTS-TIES" in (tmp_path / "r.md").read_text()
    # one-line errors with exit code 2
    capsys.readouterr()
    assert cli.main(["merge", "--config", str(cfg_path), "--method", "ties", "--finetuned", ft[0],
                     "--out", str(tmp_path / "x.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lorm.mergebench merge: error: no fine-tuned file for task(s) svhn")
    assert cli.main(["finetune", "--set", "train.lr=-1", "--task", "0", "--out", str(tmp_path / "y.pt")]) == 2
    assert "config key train.lr" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ report
PAPER_ROWS = [
    ("Table1", "CLIP ViT-B/32 LoRA r16", "Fine-tuned (individual LoRA models)", "Avg", "abs_acc", "84.1", "stated"),
    ("Table1", "CLIP ViT-B/32 LoRA r16", "TA", "Avg", "normalized_acc", "63.7", "paper"),
    ("Table1", "CLIP ViT-B/32 LoRA r16", "TIES", "Avg", "normalized_acc", "63.7", "paper"),
    ("Table1", "CLIP ViT-B/32 LoRA r16", "DARE-TIES", "Avg", "normalized_acc", "63.7", "paper"),
    ("Table1", "CLIP ViT-B/32 LoRA r16", "KnOTS-TIES", "Avg", "normalized_acc", "68.0", "paper, reprinted"),
    ("Table1", "CLIP ViT-B/32 LoRA r16", "KnOTS-DARE-TIES", "Avg", "normalized_acc", "63.9", "paper"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "TIES", "Joint-748", "hits@1", "43.6", "s"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "TIES", "Joint-748", "hits@3", "65.3", "s"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "TIES", "Joint-748", "hits@5", "73.9", "s"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "KnOTS-TIES", "Joint-748", "hits@1", "46.8", "s"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "KnOTS-TIES", "Joint-748", "hits@3", "68.1", "s"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "KnOTS-TIES", "Joint-748", "hits@5", "76.3", "s"),
    ("Table4", "CLIP ViT-B/32 LoRA r16 (joint 748-label head)", "Ensemble (8 fine-tuned models, max over models)",
     "Joint-748", "hits@1", "40.7", "s"),
]


def _paper_csv(folder: pathlib.Path) -> pathlib.Path:
    import csv

    path = folder / "paper.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["table", "model", "method", "dataset", "metric", "value", "source_note"])
        w.writerows(PAPER_ROWS)
    return path


@pytest.mark.parametrize("source", ["fabricated", "real"])
def test_report_renders_the_papers_numbers_verbatim_and_labels_them(vision2, tmp_path, source):
    if source == "real" and not REAL_PAPER_CSV.is_file():
        pytest.skip("paper-tables-knots.csv not available")
    cfg, paths = vision2
    runs = []
    for method in ("finetuned", "ta", "knots-ties", "base"):
        out = tmp_path / f"{method}.json"
        out.write_text(json.dumps(run_merge(cfg, method, paths, progress=False)))
        runs.append(out)
    paper = REAL_PAPER_CSV if source == "real" else _paper_csv(tmp_path)
    rows = load_paper(paper)
    assert any(r["value"] == "68.0" for r in rows)
    write_report(runs, paper, tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "r.png")
    md = (tmp_path / "r.md").read_text()
    assert "paper† (CLIP ViT-B/32 LoRA r16, 8 vision tasks)" in md and "NOT comparable" in md
    lines = {}
    for line in md.splitlines():  # the first table: methods beside the paper
        if line.startswith("| "):
            lines.setdefault(line.split(" | ")[0].lstrip("| "), line)
    assert "| 68.0 | 46.8 / 68.1 / 76.3 |" in lines["KnOTS-TIES"]  # verbatim strings, not re-formatted numbers
    assert "| 63.7 | not found |" in lines["TA"] or "| 63.7 | ? / ? / ? |" in lines["TA"]
    assert "84.1 (abs.)" in lines["Fine-tuned (individual LoRA models) (ensemble for Hits@k)"]
    assert "40.7 / ? / ?" in lines["Fine-tuned (individual LoRA models) (ensemble for Hits@k)"]
    assert "## The paper's numbers used" in md
    import csv

    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        table = {r["method"]: r for r in csv.DictReader(fh)}
    assert list(table) == ["base", "finetuned", "ta", "knots-ties"]
    assert table["knots-ties"]["paper_normalized_acc"] == "68.0" and table["knots-ties"]["paper_hits@3"] == "68.1"
    assert table["ta"]["paper_setting"] == "paper: CLIP ViT-B/32 LoRA r16, 8 vision tasks"
    assert float(table["finetuned"]["norm_mean"]) == pytest.approx(100.0)
    assert (tmp_path / "r.png").stat().st_size > 0
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"
