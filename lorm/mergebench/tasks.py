"""Tasks of the merge benchmark: names, class sets, train / val / test splits, encoded tensors.

Two sources (config ``tasks.source``):

* ``class-split`` (offline default): one data set (``dataset.name``, WordNet-40 by default) cut into
  ``num_tasks`` tasks of ``classes_per_task`` consecutive classes in the natural class order (task t holds
  classes [t c, (t + 1) c)), named ``task0``, ``task1``, ... Each task's training rows are its training set.
  Its validation set is the first floor(val_fraction N) entries of a SEEDED permutation of the task's N test
  rows (``numpy.random.default_rng(derive_seed(seed, 101, t)).permutation(N)``), the rest is its test set --
  the spec 8.2 convention, with a seeded permutation instead of the official index files.
* ``datasets`` (the 8-vision benchmark): one task per data set of ``tasks.datasets``, named after the data set,
  read from ``dataset.root`` in its official layout. MNIST, SVHN, GTSRB, SUN397 (lorm.data.vision.knots_sets)
  and Cars-196, EuroSAT (lorm.data.vision + ``add_val_split``) carve val out of test with the seeded
  permutation ``default_rng(seed)`` (or the official ``<ds>_shuffled_idxs.pt`` from ``tasks.val_permutation_dir``);
  DTD and RESISC45 use their own validation splits.

Labels are local to the task (0 .. C_t - 1). Images of CLIP backbones get the CLIP normalisation and no
augmentation (spec 8.2); other image backbones the data set's intended preprocessing.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import numpy as np

from lorm.data import DataError
from lorm.data.tensors import EncodedSplit, encode_split, image_transforms
from lorm.federated.training import derive_seed

__all__ = ["TaskData", "task_names", "resolve_task", "class_split", "build_tasks", "template_key", "SPLITS"]

SPLITS = ("train", "val", "test")
#: Data set -> key of lorm.models.clip.CLIP_TEMPLATES where the names differ.
TEMPLATE_KEYS = {"cars196": "stanford_cars"}
_VAL_SEED_TAG = 101


@dataclass
class TaskData:
    """One task: metadata always, encoded splits for the requested splits (None otherwise)."""

    index: int
    name: str
    dataset: str
    classes: list
    classnames: list[str]
    splits: dict[str, EncodedSplit] = field(default_factory=dict)
    split_info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def template_key(dataset: str) -> str:
    return TEMPLATE_KEYS.get(dataset, dataset)


def task_names(cfg: dict) -> list[str]:
    t = cfg["tasks"]
    if t["source"] == "datasets":
        return list(t["datasets"])
    return [f"task{i}" for i in range(t["num_tasks"])]


def resolve_task(cfg: dict, ref) -> int:
    """Task index from a name (``task3``, ``mnist``) or an index (``3``); DataError listing the names otherwise."""
    names = task_names(cfg)
    text = str(ref)
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise DataError(f"unknown task {text!r}; tasks of this config: {', '.join(names)} "
                    f"(or an index 0..{len(names) - 1})")


def class_split(train_labels, test_labels, num_tasks: int, classes_per_task: int, seed: int,
                val_fraction: float = 0.2) -> list[dict]:
    """Per task: ``classes`` (consecutive, natural order), ``train`` / ``val`` / ``test`` row indices into the
    data set's train and test splits, and a description of the seeded val/test permutation (spec 8.2).

    The val/test cut uses :func:`lorm.data.vision.knots_sets.permuted_val_split` over the task's test rows (in
    data-set order) with seed ``derive_seed(seed, 101, t)``: val = the first floor(val_fraction N) entries of
    the permutation, test = the rest, both in permutation order."""
    from lorm.data.vision.knots_sets import permuted_val_split

    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    num_classes = int(max(train_labels.max(initial=-1), test_labels.max(initial=-1)) + 1)
    needed = num_tasks * classes_per_task
    if needed > num_classes:
        raise DataError(f"tasks: {num_tasks} tasks x {classes_per_task} classes = {needed} classes, but the data set "
                        f"has {num_classes} (config keys tasks.num_tasks / tasks.classes_per_task)")
    out = []
    for t in range(num_tasks):
        classes = list(range(t * classes_per_task, (t + 1) * classes_per_task))
        train_rows = np.flatnonzero(np.isin(train_labels, classes))
        test_rows = np.flatnonzero(np.isin(test_labels, classes))
        if len(train_rows) == 0 or len(test_rows) < 2:
            raise DataError(f"task {t} (classes {classes[0]}-{classes[-1]}): {len(train_rows)} training and "
                            f"{len(test_rows)} test rows; need >= 1 and >= 2")
        seed_t = derive_seed(seed, _VAL_SEED_TAG, t)
        val_pos, test_pos, method = permuted_val_split(len(test_rows), seed_t, val_fraction, name=f"task{t}")
        if len(val_pos) == 0:
            raise DataError(f"task {t}: {len(test_rows)} test rows leave no validation rows at val_fraction "
                            f"{val_fraction} (raise dataset.test_per_class)")
        out.append({"classes": classes, "train": train_rows, "val": test_rows[val_pos], "test": test_rows[test_pos],
                    "description": method, "seed": int(seed_t)})
    return out


def _subset(split: dict, rows: np.ndarray) -> dict:
    key = "text" if "text" in split else "images"
    data = split[key]
    picked = [data[int(i)] for i in rows] if isinstance(data, list) else np.asarray(data)[rows]
    return {key: picked, "label": [int(split["label"][int(i)]) for i in rows]}


def _transforms(cfg: dict, dataset: str, image_size: int):
    from lorm.mergebench.config import CLIP_BACKBONES

    if cfg["model"]["backbone"] in CLIP_BACKBONES:
        from lorm.data.transforms import BatchTransform
        from lorm.models.clip import CLIP_MEAN, CLIP_STD

        plain = BatchTransform([], CLIP_MEAN, CLIP_STD, image_size, description=f"{dataset} (CLIP, no augmentation)")
        return plain, plain
    return image_transforms(dataset, "intended", image_size)


class _Encoder:
    """Encodes split dicts for the config's backbone (tokenizer loaded once)."""

    def __init__(self, cfg: dict):
        from lorm.models.backbones import BACKBONES, load_tokenizer

        self.cfg = cfg
        self.spec = BACKBONES[cfg["model"]["backbone"]]
        self.tokenizer = load_tokenizer(cfg["model"]) if self.spec.modality == "text" else None

    def __call__(self, split: dict, dataset: str, label_map: np.ndarray) -> EncodedSplit:
        if self.spec.modality == "text":
            return encode_split(split, "text", label_map, tokenizer=self.tokenizer,
                                max_length=self.cfg["dataset"]["max_length"])
        return encode_split(split, "image", label_map,
                            transforms=_transforms(self.cfg, dataset, self.spec.image_size))


def _class_split_tasks(cfg, only, splits, encoder) -> list[TaskData]:
    from lorm.data.datasets import build_dataset

    tcfg, dcfg = cfg["tasks"], cfg["dataset"]
    ds = build_dataset({**dcfg, "seed": cfg["seed"]})
    plan = class_split(ds["train"]["label"], ds["test"]["label"], tcfg["num_tasks"], tcfg["classes_per_task"],
                       cfg["seed"], tcfg["val_fraction"])
    names = ds.get("classnames") or [str(c) for c in ds["classes"]]
    num_classes = len(ds["classes"])
    out = []
    for t, p in enumerate(plan):
        label_map = np.full(num_classes, -1, dtype=np.int64)
        label_map[p["classes"]] = np.arange(len(p["classes"]))
        task = TaskData(t, f"task{t}", ds["name"], list(p["classes"]), [names[c] for c in p["classes"]],
                        split_info={"method": "test-permutation", "description": p["description"],
                                    "seed": p["seed"], "fraction": tcfg["val_fraction"],
                                    "val_rows": p["val"].tolist(), "test_rows": p["test"].tolist(),
                                    "sizes": {s: int(len(p[s])) for s in SPLITS}})
        if only is None or t in only:
            for s in splits:
                source = ds["train"] if s == "train" else ds["test"]
                task.splits[s] = encoder(_subset(source, p[s]), ds["name"], label_map)
        out.append(task)
    return out


def _permutation_file(cfg: dict, name: str):
    folder = cfg["tasks"]["val_permutation_dir"]
    if not folder:
        return None
    stems = [name] + (["stanford_cars", "cars"] if name == "cars196" else [])
    for stem in stems:
        path = pathlib.Path(folder).expanduser() / f"{stem}_shuffled_idxs.pt"
        if path.is_file():
            return str(path)
    return None


def load_task_dataset(cfg: dict, name: str) -> dict:
    """The Dataset dict of one vision task with train / val / test and ``classnames`` (datasets source)."""
    from lorm.data.vision import LOADERS, load_vision_dataset
    from lorm.data.vision.knots_sets import KNOTS_LOADERS, add_val_split, load_knots_dataset

    dcfg, tcfg, seed = cfg["dataset"], cfg["tasks"], cfg["seed"]
    perm = _permutation_file(cfg, name)
    common = {"strict": dcfg["strict"], "num_workers": dcfg["num_workers"]}
    if name in KNOTS_LOADERS:
        return load_knots_dataset(name, dcfg["root"], image_size=dcfg["image_size"], seed=seed,
                                  val_fraction=tcfg["val_fraction"], val_permutation=perm, **common)
    if name in LOADERS:
        ds = load_vision_dataset(name, dcfg["root"], image_size=dcfg["image_size"], seed=seed, **common)
        return add_val_split(ds, seed=seed, fraction=tcfg["val_fraction"], permutation=perm)
    raise DataError(f"unknown vision task data set {name!r}")


def _dataset_tasks(cfg, only, splits, encoder, datasets) -> list[TaskData]:
    out = []
    for t, name in enumerate(cfg["tasks"]["datasets"]):
        if only is not None and t not in only:
            out.append(TaskData(t, name, name, [], []))
            continue
        ds = datasets[name] if datasets and name in datasets else load_task_dataset(cfg, name)
        for s in SPLITS:
            if s not in ds:
                raise DataError(f"dataset {name}: no {s} split")
        classnames = list(ds.get("classnames") or ds["classes"])
        label_map = np.arange(len(classnames), dtype=np.int64)
        info = dict((ds.get("info") or {}).get("val_split") or {})
        info = {k: v for k, v in info.items() if k not in ("val_index", "test_index")}
        info["sizes"] = {s: len(ds[s]["label"]) for s in SPLITS}
        task = TaskData(t, name, name, list(ds["classes"]), classnames, split_info=info)
        for s in splits:
            task.splits[s] = encoder(ds[s], name, label_map)
        out.append(task)
    return out


def build_tasks(cfg: dict, only=None, splits=SPLITS, datasets: dict | None = None) -> list[TaskData]:
    """Every task of the config in order; the data of the tasks in ``only`` (indices; None = all) encoded for
    ``splits``. ``datasets`` ({name: Dataset dict with train / val / test}) replaces the loading of those
    vision data sets (tests, or data already in memory)."""
    only = None if only is None else {int(t) for t in only}
    encoder = _Encoder(cfg)
    if cfg["tasks"]["source"] == "datasets":
        tasks = _dataset_tasks(cfg, only, tuple(splits), encoder, datasets)
    else:
        tasks = _class_split_tasks(cfg, only, tuple(splits), encoder)
    return tasks
