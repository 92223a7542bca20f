"""Dataset registry and on-disk format.

``build_dataset(cfg)`` looks ``cfg["name"]`` up in :data:`DATASETS`; every builder takes the config dict
(keys: name, root, train_per_class, test_per_class, seed, image_size, ...) and ignores keys it does not use.

On disk (``save_dataset`` / ``load_dataset``; the format follows the modality, not the file name):

* text  -> one UTF-8 JSON file holding the Dataset dict of docs/architecture.md;
* image -> one ``.npz`` file (``numpy.savez``, uncompressed: decoded pixels compress poorly and a 224-px CIFAR-100 is 9 GB; no pickles) with arrays ``train_images``,
  ``train_label``, ``test_images``, ``test_label`` (uint8 N,H,W,C / int64) and ``header``: a 0-d unicode
  array holding the JSON of everything else (name, modality, classes, info). Loading returns the in-memory
  form (images as uint8 arrays, labels as lists of int).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable

import numpy as np

from lorm.data import DataError

SPLITS = ("train", "test")


def _build_wordnet40(cfg: dict) -> dict:
    from lorm.data.wordnet import build_wordnet40

    return build_wordnet40(
        root=cfg.get("root"),
        train_per_class=cfg.get("train_per_class", 40),
        test_per_class=cfg.get("test_per_class", 12),
        seed=cfg.get("seed", 0),
        evaluate_on=cfg.get("evaluate_on", "test"),
    )


def _build_synthetic_images(cfg: dict) -> dict:
    from lorm.data.synthetic import make_synthetic_images

    return make_synthetic_images(
        num_classes=cfg.get("num_classes", 10),
        train_per_class=cfg.get("train_per_class", 20),
        test_per_class=cfg.get("test_per_class", 5),
        image_size=cfg.get("image_size", 32),
        seed=cfg.get("seed", 0),
    )


def _vision_builder(name: str) -> Callable[[dict], dict]:
    """Builder of one of the six paper image data sets (lorm.data.vision), read from ``cfg["root"]`` in its
    official layout; passes image_size (default 224), seed and the loader's own options (strict,
    cub_int8_wrap, split, ...), ignoring the other keys."""

    def build(cfg: dict) -> dict:
        from lorm.data.vision import load_vision_dataset

        options = {k: v for k, v in cfg.items() if k not in ("name", "root", "image_size", "seed")}
        return load_vision_dataset(name, cfg.get("root"), image_size=cfg.get("image_size", 224),
                                   seed=cfg.get("seed", 0), **options)

    build.__name__ = build.__qualname__ = f"_build_{name.replace('-', '_')}"
    return build


#: The paper's image data sets (lorm.data.vision.LOADERS; listed here so that importing this module stays cheap).
VISION_DATASETS = ("cifar100", "imagenet-r", "imagenet-a", "eurosat", "cub200", "cars196")

#: name -> builder(cfg_dataset) -> Dataset dict
DATASETS: dict[str, Callable[[dict], dict]] = {
    "wordnet40": _build_wordnet40,
    "synthetic-images": _build_synthetic_images,
    **{name: _vision_builder(name) for name in VISION_DATASETS},
}


def build_dataset(cfg_dataset: dict) -> dict:
    """Build the Dataset dict named by ``cfg_dataset["name"]``; unknown name -> DataError listing the names."""
    name = cfg_dataset.get("name") if isinstance(cfg_dataset, dict) else None
    builder = DATASETS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    cfg = {k: v for k, v in cfg_dataset.items() if v is not None}
    evaluate_on = cfg.pop("evaluate_on", "test")  # only the WordNet-40 builder takes it (and checks its value)
    if name == "wordnet40":
        cfg["evaluate_on"] = evaluate_on
    elif evaluate_on != "test":
        raise DataError(f"dataset.evaluate_on: {evaluate_on} is implemented for wordnet40 only, not {name}; "
                        f"set dataset.evaluate_on: test")
    return builder(cfg)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _atomic_path(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def save_dataset(ds: dict, path: str | os.PathLike) -> pathlib.Path:
    """Write a Dataset dict (text -> JSON, image -> npz with a JSON header; see module docstring)."""
    path = pathlib.Path(path)
    modality = ds.get("modality")
    tmp = _atomic_path(path)
    if modality == "text":
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(ds), fh, ensure_ascii=False, separators=(",", ":"))
            fh.write("\n")
    elif modality == "image":
        header = {k: v for k, v in ds.items() if k not in SPLITS}
        arrays = {"header": np.array(json.dumps(_jsonable(header), ensure_ascii=False))}
        for split in SPLITS:
            arrays[f"{split}_images"] = np.asarray(ds[split]["images"], dtype=np.uint8)
            arrays[f"{split}_label"] = np.asarray(ds[split]["label"], dtype=np.int64)
        with open(tmp, "wb") as fh:  # a file object keeps numpy from appending ".npz" to the name
            np.savez(fh, **arrays)
    else:
        raise ValueError(f"dataset modality must be 'text' or 'image', got {modality!r}")
    os.replace(tmp, path)
    return path


def _check(ds: dict, path: pathlib.Path) -> dict:
    def bad(reason: str) -> DataError:
        return DataError(f"invalid dataset file {path}: {reason}")

    if not isinstance(ds, dict):
        raise bad("top level is not an object")
    missing = [k for k in ("name", "modality", "classes", *SPLITS) if k not in ds]
    if missing:
        raise bad(f"missing keys {missing}")
    field = "text" if ds["modality"] == "text" else "images"
    n_classes = len(ds["classes"])
    for split in SPLITS:
        part = ds[split]
        if not isinstance(part, dict) or field not in part or "label" not in part:
            raise bad(f"{split} must hold {field!r} and 'label'")
        if len(part[field]) != len(part["label"]):
            raise bad(f"{split}: {len(part[field])} {field} but {len(part['label'])} labels")
        if any(not isinstance(y, int) or not 0 <= y < n_classes for y in part["label"]):
            raise bad(f"{split}: labels must be integers in 0..{n_classes - 1}")
    ds.setdefault("info", {})
    return ds


def load_dataset(path: str | os.PathLike, labels_only: bool = False) -> dict:
    """Read a file written by :func:`save_dataset` (format detected from the content); DataError on problems.
    ``labels_only`` skips the image arrays (an npz member is read only when accessed): partitioning needs the
    labels alone, and a 224-px image set is gigabytes."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"PK":  # zip container -> npz
            with np.load(path, allow_pickle=False) as z:
                ds = json.loads(str(z["header"][()]))
                for split in SPLITS:
                    labels = [int(y) for y in z[f"{split}_label"]]
                    images = np.zeros((len(labels), 0, 0, 3), np.uint8) if labels_only else z[f"{split}_images"]
                    ds[split] = {"images": images, "label": labels}
        else:
            with open(path, encoding="utf-8") as fh:
                ds = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"dataset file {path} not found (run `lorm prepare-data` first)") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read dataset file {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return _check(ds, path)
