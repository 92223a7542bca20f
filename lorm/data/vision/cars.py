"""Stanford Cars-196 in the original devkit layout (also torchvision's ``<root>/stanford_cars/``).

``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (in the data folder or in ``devkit/``)
hold a 1 x N struct array ``annotations`` with fields ``bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname``;
``class`` is 1-based (-> label = class - 1). ``devkit/cars_meta.mat`` holds ``class_names`` (1 x 196 cell).
Images: ``cars_train/<fname>`` and ``cars_test/<fname>`` (8,144 / 8,041). Read with ``scipy.io.loadmat``.

Official preprocessing (fed-mammoth ``seq-cars``): bicubic resize of the shorter side to 224 and a centre crop,
hence ``resize_mode="center_crop"`` by default here (the other loaders stretch to S x S like their official
``Resize((224, 224))``). Bounding boxes are not used (nor by the official code).
"""

from __future__ import annotations

import pathlib

import numpy as np

from lorm.data import DataError
from lorm.data.vision._common import (check_args, check_class_count, check_sizes, data_error, finish, locate,
                                      one_line)

NAME = "cars196"
ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def _loadmat(path) -> dict:
    try:
        import scipy.io
    except ImportError:
        raise DataError(f"dataset {NAME}: reading the devkit .mat files needs scipy (pip install scipy)") from None
    try:
        return scipy.io.loadmat(str(path), squeeze_me=False)
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise DataError(one_line(f"dataset {NAME}: cannot read {path}: {exc}")) from None


def _scalar(value):
    """A MATLAB cell/struct entry (array of shape (1,), (1, 1), ...) -> its single element."""
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.size != 1:
        raise ValueError(f"expected one value, got shape {arr.shape}")
    return arr.reshape(-1)[0]


def _annotations(path) -> tuple[list[str], list[int]]:
    mat = _loadmat(path)
    annos = mat.get("annotations")
    fields = getattr(getattr(annos, "dtype", None), "names", None) or ()
    if annos is None or "fname" not in fields:
        raise data_error(NAME, f"{path} has no 'annotations' struct with a 'fname' field")
    if "class" not in fields:
        raise data_error(NAME, f"{path} has no 'class' field (the unlabelled cars_test_annos.mat? use "
                               f"cars_test_annos_withlabels.mat)")
    annos = annos.reshape(-1)
    try:
        fnames = [str(_scalar(a["fname"])) for a in annos]
        classes = [int(_scalar(a["class"])) for a in annos]
    except (ValueError, TypeError) as exc:
        raise data_error(NAME, f"{path}: malformed annotation entry ({exc})") from None
    return fnames, classes


def load_cars196(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
                 expected_classes: int | None = None, resize_mode: str = "center_crop",
                 progress: bool | None = None, num_workers: int | None = None) -> dict:
    """Stanford Cars Dataset dict with the official train/test split (``seed`` unused: the split is fixed)."""
    size = check_args(NAME, image_size, resize_mode)
    try:
        base = locate(NAME, root, "stanford_cars", marker="devkit/cars_meta.mat")
    except DataError as exc:
        if "data root" in str(exc):
            raise
        expected = pathlib.Path(str(root)).expanduser() / "devkit" / "cars_meta.mat"
        raise data_error(NAME, f"{expected} not found") from None
    meta_path = base / "devkit" / "cars_meta.mat"
    meta = _loadmat(meta_path)
    if "class_names" not in meta:
        raise data_error(NAME, f"{meta_path} has no 'class_names'")
    try:
        class_names = [str(_scalar(c)) for c in np.asarray(meta["class_names"], dtype=object).reshape(-1)]
    except (ValueError, TypeError) as exc:
        raise data_error(NAME, f"{meta_path}: malformed class_names ({exc})") from None
    check_class_count(NAME, len(class_names), meta_path, strict, expected_classes)
    train_annos = base / "devkit" / "cars_train_annos.mat"
    test_candidates = (base / "cars_test_annos_withlabels.mat", base / "devkit" / "cars_test_annos_withlabels.mat")
    test_annos = next((p for p in test_candidates if p.is_file()), test_candidates[0])
    splits = {}
    for split, annos_path, folder in (("train", train_annos, "cars_train"), ("test", test_annos, "cars_test")):
        if not annos_path.is_file():
            raise data_error(NAME, f"{annos_path} not found")
        if not (base / folder).is_dir():
            raise data_error(NAME, f"{base / folder} not found")
        fnames, classes = _annotations(annos_path)
        bad = [c for c in classes if not 1 <= c <= len(class_names)]
        if bad:
            raise data_error(NAME, f"{annos_path}: class {bad[0]} outside 1..{len(class_names)}")
        paths = [base / folder / f for f in fnames]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise data_error(NAME, f"image {missing} listed in {annos_path} not found")
        splits[split] = ([str(p) for p in paths], [c - 1 for c in classes])
    check_sizes(NAME, len(splits["train"][1]), len(splits["test"][1]), base, strict, expected_classes)
    info = {"source": str(base), "layout": "Stanford Cars devkit (.mat annotations)", "split": "official devkit",
            "seed": int(seed), "annotations": [str(train_annos), str(test_annos)]}
    return finish(NAME, class_names, splits, image_size=size, resize_mode=resize_mode, info=info,
                  progress=progress, num_workers=num_workers)
