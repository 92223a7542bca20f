"""CIFAR-100, python version: ``<root>/cifar-100-python/{train,test,meta}`` (the extracted official tarball).

``train``/``test`` are pickled dicts with ``data`` (N x 3072 uint8: the R, G and B planes of a 32x32 image,
each row-major) and ``fine_labels``; ``meta`` holds ``fine_label_names`` (index = label). The files are Python 2
pickles, so keys are ``str`` when read with ``encoding="latin1"`` (as torchvision does) and ``bytes`` with
``encoding="bytes"``; both are accepted. They are read with a restricted unpickler that only resolves numpy's
array reconstruction helpers (no arbitrary code from a pickle).
"""

from __future__ import annotations

import importlib
import pickle

import numpy as np

from lorm.data import DataError
from lorm.data.vision._common import (check_args, check_class_count, check_sizes, data_error, finish, locate,
                                      one_line, require_file)

NAME = "cifar100"
FOLDER = "cifar-100-python"

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        if module.startswith("numpy.core"):  # old pickles; numpy >= 2 keeps the code in numpy._core
            try:
                return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _read_pickle(path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(one_line(f"dataset {NAME}: cannot read {path}: {exc}")) from None
    if not isinstance(obj, dict):
        raise data_error(NAME, f"{path} does not hold a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _key(d: dict, key: str, path):
    if key not in d:
        raise data_error(NAME, f"{path} has no {key!r} entry")
    return d[key]


def _download(root) -> None:
    import torchvision

    torchvision.datasets.CIFAR100(str(root), train=True, download=True)


class _ArraySources:
    """Lazy sequence of callables turning row i of an (N, 32, 32, 3) array into a PIL image."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return lambda: Image.fromarray(self.images[i])


def load_cifar100(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
                  expected_classes: int | None = None, resize_mode: str = "stretch", download: bool = False,
                  progress: bool | None = None, num_workers: int | None = None) -> dict:
    """CIFAR-100 Dataset dict; 32x32 images resized bicubically to ``image_size`` (no resize when 32).

    ``download=True`` fetches the official archive into ``root`` with torchvision when the folder is missing
    (never used in tests). ``seed`` is accepted for a uniform signature; the split is the official one.
    """
    size = check_args(NAME, image_size, resize_mode)
    if download and root is not None:
        try:
            locate(NAME, root, FOLDER, marker="meta")
        except DataError:
            _download(root)
    base = locate(NAME, root, FOLDER, marker="meta")
    meta_path = require_file(NAME, base / "meta")
    names = [str(n) for n in _key(_read_pickle(meta_path), "fine_label_names", meta_path)]
    check_class_count(NAME, len(names), meta_path, strict, expected_classes)
    splits, sizes = {}, []
    for split in ("train", "test"):
        path = require_file(NAME, base / split)
        d = _read_pickle(path)
        data = np.asarray(_key(d, "data", path))
        labels = [int(y) for y in _key(d, "fine_labels", path)]
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise data_error(NAME, f"{path}: 'data' must be uint8 of shape (N, 3072) with one fine label per row, "
                                   f"got {data.dtype} {data.shape} and {len(labels)} labels")
        images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # RGB planes -> HWC
        splits[split] = (_ArraySources(images), labels)
        sizes.append(len(labels))
    check_sizes(NAME, sizes[0], sizes[1], base, strict, expected_classes)
    info = {"source": str(base), "layout": "cifar-100-python pickles", "split": "official train/test",
            "seed": int(seed)}
    return finish(NAME, names, splits, image_size=size, resize_mode=resize_mode, info=info, progress=progress,
                  num_workers=num_workers)

