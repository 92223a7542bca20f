"""Shared machinery of the vision loaders: layout errors, folder lookup, decoding, seeded splits, checks.

Every loader builds, per split, a list of *sources* (file paths, or callables returning a PIL image) and labels,
then :func:`finish` decodes each source once (PIL, ``convert("RGB")``, bicubic resize to the working resolution)
into one uint8 array (N, S, S, 3) and assembles the Dataset dict of docs/architecture.md.
"""

from __future__ import annotations

import math
import os
import pathlib
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lorm.data import DataError

#: Number of classes of the real data sets (asserted when ``strict=True``).
EXPECTED_CLASSES = {"cifar100": 100, "imagenet-r": 200, "imagenet-a": 200, "eurosat": 10, "cub200": 200,
                    "cars196": 196}
#: (train, test) sizes of the data sets whose split is fixed by the distribution (asserted when ``strict=True``).
EXPECTED_SIZES = {"cifar100": (50_000, 10_000), "cub200": (5_994, 5_794), "cars196": (8_144, 8_041)}

#: name -> (expected layout, where to get it); used in every layout error message.
LAYOUTS = {
    "cifar100": ("CIFAR-100 python layout <root>/cifar-100-python/{train,test,meta}",
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, or download=True"),
    "imagenet-r": ("ImageNet-R layout <root>/imagenet-r/<wnid>/*.jpg (200 class folders; optional split files "
                   "imagenet-r_{train,test}.yaml of Mammoth or {train,test}.txt)",
                   "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"),
    "imagenet-a": ("ImageNet-A layout <root>/imagenet-a/<wnid>/*.jpg (200 class folders) or "
                   "<root>/imagenet-a/{train,test}/<wnid>/*.jpg (optional split files {train,test}.txt)",
                   "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar"),
    "eurosat": ("EuroSAT RGB layout <root>/EuroSAT_RGB/<ClassName>/*.jpg (10 class folders; optional CoOp split "
                "<root>/EuroSAT_RGB/split.json or split_zhou_EuroSAT.json)",
                "https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip"),
    "cub200": ("CUB-200-2011 layout <root>/CUB_200_2011/{images.txt,image_class_labels.txt,train_test_split.txt,"
               "classes.txt,images/<class>/<file>.jpg}", "https://www.vision.caltech.edu/datasets/cub_200_2011/"),
    "cars196": ("Stanford Cars devkit layout <root>/{cars_train/*.jpg,cars_test/*.jpg,devkit/cars_train_annos.mat,"
                "devkit/cars_meta.mat,cars_test_annos_withlabels.mat} (or the same under <root>/stanford_cars/)",
                "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (offline; use a mirror)"),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_MODES = ("stretch", "center_crop")
_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC (== torchvision interpolation=3)
PROGRESS_MIN_IMAGES = 500  # no progress bar below this many images (tests, miniature copies)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def data_error(name: str, what: str) -> DataError:
    """One-line DataError: what went wrong, the expected layout and where to get the data."""
    layout, url = LAYOUTS[name]
    return DataError(one_line(f"dataset {name}: {what}; expected the {layout} (download: {url})"))


def check_args(name: str, image_size, resize_mode: str) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"dataset {name}: image_size must be a positive integer, got {image_size!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"dataset {name}: resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    return int(image_size)


def locate(name: str, root, folder: str, marker: str | None = None, alternatives: Sequence[str] = ()) -> pathlib.Path:
    """The dataset folder: ``root/<folder>`` (or an alternative sub path), or ``root`` itself when it already
    is that folder. ``marker`` (a file inside the folder) must exist when given. DataError otherwise."""
    if root is None or str(root) == "":
        raise data_error(name, "no data root given (config key dataset.root)")
    root = pathlib.Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise data_error(name, f"data root {root} not found")
    for cand in [root / folder, *(root / alt for alt in alternatives), root]:
        if cand.is_dir() and (marker is None or (cand / marker).is_file()):
            if cand == root and marker is None and root.name not in (folder, *alternatives):
                continue  # a bare root only counts when it is named like the dataset folder
            return cand
    missing = root / folder / marker if marker else root / folder
    raise data_error(name, f"{missing} not found")


def require_file(name: str, path: pathlib.Path) -> pathlib.Path:
    if not path.is_file():
        raise data_error(name, f"{path} not found")
    return path


def list_dirs(folder: pathlib.Path, exclude: Sequence[str] = ()) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in exclude)


def list_images(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def check_class_count(name: str, found: int, where, strict: bool, expected_classes: int | None, what="classes"):
    """``expected_classes`` (if given) or, with ``strict``, the real count of the data set must match."""
    expected = expected_classes if expected_classes is not None else (EXPECTED_CLASSES[name] if strict else None)
    if found < 1:
        raise data_error(name, f"no {what} found in {where}")
    if expected is not None and found != int(expected):
        hint = "" if expected_classes is not None else " (incomplete copy? pass strict=False for a subset)"
        raise data_error(name, f"found {found} {what} in {where}, expected {int(expected)}{hint}")


def check_sizes(name: str, n_train: int, n_test: int, where, strict: bool, expected_classes):
    if strict and expected_classes is None and name in EXPECTED_SIZES:
        exp_train, exp_test = EXPECTED_SIZES[name]
        if (n_train, n_test) != (exp_train, exp_test):
            raise data_error(name, f"{where} lists {n_train} train / {n_test} test images, expected "
                                   f"{exp_train} / {exp_test} (incomplete copy? pass strict=False for a subset)")


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def seeded_split(items: Sequence[str], key: str, seed: int, train_fraction: float, test_fraction: float):
    """Deterministic per-class split of the sorted ``items``: (train items, test items), each in sorted order.

    The permutation is drawn from ``default_rng([seed, crc32(key)])``, so a class's split depends only on the
    seed, the class key and its files (not on which other classes are present). Sizes are rounded half up and
    clamped so that both splits get at least one item; the rest (``1 - train - test``) is dropped.
    """
    items = sorted(items)
    n = len(items)
    if n < 2:
        raise ValueError(f"class {key!r} has {n} image(s); a train/test split needs at least 2")
    n_train = max(1, round_half_up(n * train_fraction))
    n_test = max(1, round_half_up(n * test_fraction))
    if n_train + n_test > n:
        n_train = n - n_test
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    perm = rng.permutation(n)
    test = sorted(int(i) for i in perm[:n_test])
    train = sorted(int(i) for i in perm[n_test:n_test + n_train])
    return [items[i] for i in train], [items[i] for i in test]


def _resized(img, size: int, mode: str):
    """Bicubic resize of a PIL image: to size x size ("stretch", torchvision Resize((s, s))), or shorter side
    to size then centre crop ("center_crop", torchvision Resize(s) + CenterCrop(s))."""
    w, h = img.size
    if mode == "stretch":
        return img if (w, h) == (size, size) else img.resize((size, size), _BICUBIC)
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def decode(name: str, sources: Sequence, size: int, mode: str, *, progress: bool | None = None,
           num_workers: int | None = None, desc: str = "") -> np.ndarray:
    """Decode every source once into a uint8 (N, size, size, 3) array. A source is a path (opened with PIL) or
    a zero-argument callable returning a PIL image. Missing or unreadable files raise a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    n = len(sources)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    if n == 0:
        return out

    def work(i: int) -> None:
        src = sources[i]
        try:
            if callable(src):
                img = src()
            else:
                with Image.open(src) as opened:
                    img = opened.convert("RGB")
            if img.mode != "RGB":
                img = img.convert("RGB")
            out[i] = np.asarray(_resized(img, size, mode), dtype=np.uint8)
        except FileNotFoundError:
            raise data_error(name, f"image {src} not found") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(one_line(f"dataset {name}: cannot decode image {src}: {exc}")) from None

    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    show = progress if progress is not None else n >= PROGRESS_MIN_IMAGES
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=desc or f"decoding {name}", unit="img", disable=not show, leave=False)
    try:
        if workers <= 1:
            for i in range(n):
                work(i)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(work, i) for i in range(n)]
                try:
                    for fut in futures:
                        fut.result()
                        bar.update()
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    return out


def finish(name: str, classes: Sequence[str], splits: dict[str, tuple[Sequence, Sequence[int]]], *,
           image_size: int, resize_mode: str, info: dict, progress: bool | None = None,
           num_workers: int | None = None, postprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Decode the sources of every split and return the Dataset dict. Every class must have training images
    (DataError otherwise); classes without test images are listed in ``info["classes_without_test"]``."""
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    result = {"name": name, "modality": "image", "classes": classes}
    counts = {}
    for split in ("train", "test"):
        sources, labels = splits[split]
        labels = [int(y) for y in labels]
        if len(labels) != len(sources):
            raise AssertionError("internal: sources and labels differ in length")
        if any(not 0 <= y < n_classes for y in labels):
            raise data_error(name, f"{split} labels outside 0..{n_classes - 1}")
        per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
        empty = [classes[c] for c in np.flatnonzero(per_class == 0)]
        if split == "test":
            without_test = empty
        elif empty:
            raise data_error(name, f"no {split} images for class(es) {', '.join(empty[:5])}"
                                   f"{' ...' if len(empty) > 5 else ''} in {info.get('source')}")
        counts[split] = [int(c) for c in per_class]
        images = decode(name, sources, image_size, resize_mode, progress=progress, num_workers=num_workers,
                        desc=f"{name} {split}")
        if postprocess is not None:
            images = postprocess(images)
        result[split] = {"images": images, "label": labels}
    result["info"] = {**info, "image_size": image_size,
                      "resize": {"stretch": "bicubic to SxS (PIL)",
                                 "center_crop": "bicubic shorter side to S, centre crop SxS (PIL)"}[resize_mode],
                      "num_train": len(result["train"]["label"]), "num_test": len(result["test"]["label"]),
                      "per_class_train": counts["train"], "per_class_test": counts["test"],
                      "classes_without_test": without_test}
    return result
