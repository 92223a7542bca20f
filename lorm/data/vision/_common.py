"""The one assembly path of every vision loader: registry, layout errors, torchvision calls, decoding, splits.

Each data set registers (:func:`register`) a source ``source(req: Request) -> Parts`` (class ids; per split, image
paths or a uint8 array, and labels); :func:`load` does the checks, the validation split, threaded decoding and the
Dataset dict.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import pathlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lorm.data import DataError

RESIZE_MODES = ("stretch", "center_crop")
VAL_SPLIT_MODES = ("auto", "official", "test-permutation")
VAL_FRACTION = 0.2
PROGRESS_MIN_IMAGES = 500  # no progress bar below this many images (tests, miniature copies)
_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC (== torchvision interpolation=3)
_RESIZE_TEXT = {"stretch": "bicubic to SxS (PIL)", "center_crop": "bicubic shorter side to S, centre crop SxS (PIL)"}
_COMMON = ("strict", "expected_classes", "resize_mode", "progress", "num_workers")
_VAL = ("val_split", "val_fraction", "val_permutation")


@dataclass
class Spec:
    source: Callable
    layout: str
    url: str
    classes: int
    sizes: dict  # official split sizes checked when strict
    options: tuple
    resize: str
    val: str | None  # None: train/test only; else the default val policy ("official" or "test-permutation")
    classnames: Callable | None  # (name, class ids) -> readable names, returned as ds["classnames"]


#: name -> Spec; filled by the loader modules (each data set registered once).
REGISTRY: dict[str, Spec] = {}


def register(name, *, layout, url, classes, sizes=None, options=(), resize="stretch", val=None, classnames=None):
    def wrap(source):
        opts = _COMMON + tuple(options) + (_VAL if val else ())
        REGISTRY[name] = Spec(source, layout, url, classes, dict(sizes or {}), opts, resize, val, classnames)
        return source
    return wrap


def one_line(text) -> str:
    return " ".join(str(text).split())


def data_error(name: str, what: str) -> DataError:
    """One-line DataError: what went wrong, the expected layout and where to get the data."""
    spec = REGISTRY[name]
    return DataError(one_line(f"dataset {name}: {what}; expected the {spec.layout} (download: {spec.url})"))


def read_error(name: str, path, exc: Exception) -> DataError:
    return DataError(one_line(f"dataset {name}: cannot read {path}: {exc}"))


def first(candidates, test=os.path.exists):
    return next((c for c in candidates if test(c)), None)


def list_dirs(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_lines(name: str, path: pathlib.Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise read_error(name, path, exc) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass
class Parts:
    """A source's result; the class-count check reports ``found`` (default: len(classes)) ``what`` in ``where``."""
    classes: list
    splits: dict
    info: dict
    where: pathlib.Path
    what: str = "class folders"
    found: int | None = None
    postprocess: Callable | None = None


@dataclass
class Request:
    """What a source gets: the data root (an existing folder), the seed and the loader options."""
    name: str
    root: pathlib.Path
    seed: int
    options: dict

    def opt(self, key, default=None):
        return self.options.get(key, default)

    def choice(self, key: str, allowed: tuple):
        """The option ``key`` (default "auto"), which must be one of ``allowed``."""
        value = self.opt(key, "auto")
        if value not in allowed:
            raise ValueError(f"dataset {self.name}: {key} must be one of {allowed}, got {value!r}")
        return value

    def error(self, what: str) -> DataError:
        return data_error(self.name, what)

    def find(self, *names: str, test=os.path.exists):
        """The first of ``root/<name>`` and the root itself (when called like one of ``names``) passing ``test``."""
        return first([self.root / n for n in names] + ([self.root] if self.root.name in names else []), test)

    def require(self, *paths: pathlib.Path) -> None:
        """DataError naming the first missing path (skipped with ``download=True``: torchvision fetches them)."""
        if not self.opt("download"):
            missing = first(paths, lambda p: not p.exists())
            if missing is not None:
                raise self.error(f"{missing} not found")

    def tv(self, cls, *args, **kwargs):
        """A ``torchvision.datasets`` class (or its name) instantiated, never downloading unless ``download=True``;
        its errors become a DataError."""
        if isinstance(cls, str):
            cls = getattr(importlib.import_module("torchvision.datasets"), cls)
        if self.opt("download") and "download" in inspect.signature(cls).parameters:
            kwargs["download"] = True
        try:
            return cls(*args, **kwargs)
        except DataError:
            raise
        except (RuntimeError, OSError, KeyError, ValueError, TypeError, AssertionError, IndexError) as exc:
            where = args[0] if args else self.root
            raise self.error(f"torchvision {cls.__name__} cannot read {where}: {type(exc).__name__} "
                             f"{exc or ''}".rstrip()) from None

    def image_folder(self, folder: pathlib.Path, classes=None):
        """(its classes, paths, labels) of ImageFolder ``folder/<class>/*``; with ``classes`` (e.g. the train
        folders) its folders must be among them and the labels index them. Empty class folders are an error."""
        ds = self.tv("ImageFolder", str(folder), allow_empty=True)
        unknown = sorted(set(ds.classes) - set(classes or ds.classes))
        if unknown:
            raise self.error(f"{folder} holds class folder(s) {unknown[:3]} missing from the train folder")
        empty = sorted(set(range(len(ds.classes))) - set(ds.targets))
        if empty:
            raise self.error(f"class folder(s) {', '.join(str(folder / ds.classes[c]) for c in empty[:3])} hold "
                             f"no images")
        index = {c: i for i, c in enumerate(classes or ds.classes)}
        return list(ds.classes), [p for p, _ in ds.samples], [index[ds.classes[y]] for y in ds.targets]

    def split_folders(self, folder: pathlib.Path, **info) -> Parts:
        """ImageFolder splits ``folder/{train,[val,]test}/<class>/*``, labelled by the sorted train class folders."""
        classes, *train = self.image_folder(folder / "train")
        self.require(folder / "test")
        splits = {"train": tuple(train)}
        for split in ("val", "test"):
            if (folder / split).is_dir():
                splits[split] = tuple(self.image_folder(folder / split, classes)[1:])
        return Parts(classes, splits, {"source": str(folder), "split": "folders", "label_order": "sorted class folders",
                                       **info}, folder / "train")


def val_size(n: int, fraction: float = VAL_FRACTION) -> int:
    """floor(fraction * n), exactly (0.2 * 26,032 -> 5,206)."""
    return math.floor(Fraction(fraction).limit_denominator(1_000_000) * int(n))


def _load_permutation(name: str, source, n: int) -> np.ndarray:
    """A permutation of 0..n-1 from an array-like or a file (.pt via torch.load(weights_only=True), .npy, text)."""
    where = "val_permutation"
    if isinstance(source, (str, os.PathLike)):
        path = where = pathlib.Path(os.path.expanduser(str(source)))
        if not path.is_file():
            raise DataError(f"dataset {name}: val_permutation file {path} not found (a .pt/.npy/.txt permutation "
                            f"of the official test indices)")
        try:
            if path.suffix in (".pt", ".pth"):
                import torch

                source = np.asarray(torch.load(str(path), map_location="cpu", weights_only=True))
            else:
                source = np.load(path, allow_pickle=False) if path.suffix == ".npy" else \
                    np.array(path.read_text(encoding="utf-8").replace(",", " ").split(), dtype=np.int64)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a one-line data error
            raise read_error(name, path, exc) from None
    perm = np.asarray(source)
    if perm.ndim != 1 or perm.size != n or not np.issubdtype(perm.dtype, np.integer) or \
            not np.array_equal(np.sort(perm), np.arange(n)):
        raise DataError(one_line(f"dataset {name}: {where} must be a permutation of 0..{n - 1} (the official test "
                                 f"set has {n} images), got shape {perm.shape} dtype {perm.dtype}"))
    return perm.astype(np.int64)


def permuted_val_split(n: int, seed: int = 0, fraction: float = VAL_FRACTION, permutation=None,
                       name: str = "dataset"):
    """(val indices, test indices, description) into an official test set of ``n`` items: the first
    floor(fraction * n) entries of ``numpy.random.default_rng(seed).permutation(n)`` (or of the given
    ``permutation``) and the rest, in permutation order."""
    if permutation is None:
        perm = np.random.default_rng(int(seed)).permutation(int(n))
        method = (f"seeded permutation of the official test set: numpy.random.default_rng({int(seed)})"
                  f".permutation(N); val = first floor({fraction} N), test = the rest (NOT the official "
                  f"shuffled_idxs files)")
    else:
        perm = _load_permutation(name, permutation, int(n))
        given = permutation if isinstance(permutation, (str, os.PathLike)) else "array"
        method = (f"given permutation of the official test set ({given}); val = first floor({fraction} N), "
                  f"test = the rest")
    k = val_size(n, fraction)
    return perm[:k], perm[k:], method


def carve_val(name, splits: dict, files: dict, seed, fraction, permutation) -> dict:
    """Replace splits["test"] (and files["test"]) by val + test cut from the test permutation; returns the info."""
    sources, labels = splits.pop("test")
    test_files = files.pop("test", None)
    val_idx, test_idx, method = permuted_val_split(len(labels), seed, fraction, permutation, name=name)
    for split, idx in (("val", val_idx), ("test", test_idx)):
        part = sources[idx] if isinstance(sources, np.ndarray) else [sources[int(i)] for i in idx]
        splits[split] = (part, [int(labels[int(i)]) for i in idx])
        if test_files is not None:
            files[split] = [test_files[int(i)] for i in idx]
    return {"method": "test-permutation", "description": method, "seed": int(seed), "fraction": float(fraction),
            "official_test_size": len(labels), "val_index": [int(i) for i in val_idx],
            "test_index": [int(i) for i in test_idx]}


def _resolve_val(name, parts: Parts, files: dict, opts: dict, seed, default: str) -> dict:
    """Apply the ``val_split`` policy (own val split of the layout, or a cut of the test permutation)."""
    policy, has_own = opts.get("val_split", "auto"), "val" in parts.splits
    if (policy == "official" or (policy == "auto" and default == "official")) and has_own:
        return {"method": "official", "description": "the data set's own validation split"}
    if policy == "official":
        raise data_error(name, "val_split='official' but the layout has no validation split (use val_split='auto' "
                               "or 'test-permutation')")
    parts.splits.pop("val", None)
    files.pop("val", None)
    info = carve_val(name, parts.splits, files, seed, opts.get("val_fraction", VAL_FRACTION),
                     opts.get("val_permutation"))
    info["reason"] = ("val_split='test-permutation'" if policy == "test-permutation" else
                      "no official validation split in this layout" if default == "official" else
                      "spec 8.2: no official validation split")
    return info


def _resized(img, size: int, mode: str):
    """Bicubic resize of a PIL image: to size x size ("stretch", torchvision Resize((s, s))), or shorter side
    to size then centre crop ("center_crop", torchvision Resize(s) + CenterCrop(s))."""
    w, h = img.size
    if mode == "stretch":
        return img.resize((size, size), _BICUBIC)  # PIL returns a copy when the size is already right
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((new_w, new_h), _BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def decode(name: str, sources, size: int, mode: str, *, progress=None, num_workers=None, desc="") -> np.ndarray:
    """uint8 (N, size, size, 3) from a list of image paths (decoded by ``num_workers`` threads) or from a uint8
    pixel array (N, H, W[, 3]). Missing or unreadable files raise a one-line DataError."""
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    if isinstance(sources, np.ndarray) and sources.shape[1:3] == (size, size):  # no resampling needed
        return np.ascontiguousarray(sources if sources.ndim == 4 else np.repeat(sources[..., None], 3, axis=-1))
    n = len(sources)
    out = np.empty((n, size, size, 3), dtype=np.uint8)

    def work(i: int) -> None:
        src = sources[i]
        try:
            with Image.fromarray(src) if isinstance(sources, np.ndarray) else Image.open(src) as img:
                out[i] = np.asarray(_resized(img.convert("RGB"), size, mode), dtype=np.uint8)
        except FileNotFoundError:
            raise data_error(name, f"image {src} not found") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(one_line(f"dataset {name}: cannot decode image {src}: {exc}")) from None

    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    show = progress if progress is not None else n >= PROGRESS_MIN_IMAGES
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and n > 1 else None
    try:
        with tqdm(total=n, desc=desc or f"decoding {name}", unit="img", disable=not show, leave=False) as bar:
            for _ in (pool.map(work, range(n)) if pool else map(work, range(n))):
                bar.update()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return out


def _check_options(req: Request) -> None:
    size, frac, k = req.opt("image_size"), req.opt("val_fraction", VAL_FRACTION), req.opt("partition", 1)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"dataset {req.name}: image_size must be a positive integer, got {size!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 10:
        raise ValueError(f"dataset {req.name}: partition must be an integer in 1..10, got {k!r}")
    req.choice("resize_mode", RESIZE_MODES)
    req.choice("val_split", VAL_SPLIT_MODES)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise ValueError(f"dataset {req.name}: val_fraction must be in (0, 1), got {frac!r}")


def _check_counts(name: str, spec: Spec, parts: Parts, opts: dict) -> None:
    found, where, what = len(parts.classes) if parts.found is None else parts.found, parts.where, parts.what
    strict, explicit = opts.get("strict", True), opts.get("expected_classes")
    expected = explicit if explicit is not None else (spec.classes if strict else None)
    if found < 1:
        raise data_error(name, f"no {what} found in {where}")
    if expected is not None and found != int(expected):
        hint = "" if explicit is not None else " (incomplete copy? pass strict=False for a subset)"
        raise data_error(name, f"found {found} {what} in {where}, expected {int(expected)}{hint}")
    if strict and explicit is None:
        for split, n_expected in spec.sizes.items():
            n = len(parts.splits[split][1])
            if n != n_expected:
                what = "official test set" if split == "test" else split
                raise data_error(name, f"{parts.info.get('source')} holds {n} {what} images, expected {n_expected} "
                                       f"(incomplete copy? pass strict=False for a subset)")


def load(name: str, root, image_size: int = 224, seed: int = 0, **options) -> dict:
    """The Dataset dict of a registered data set (see :mod:`lorm.data.vision`; "classnames" and "val" where set)."""
    spec = REGISTRY[name]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(f"load_{name.replace('-', '_')}() got unexpected option(s) {unknown}")
    opts = {"image_size": image_size, "resize_mode": spec.resize, **options}
    req = Request(name, pathlib.Path(os.path.expanduser(str(root or ""))), int(seed), opts)
    _check_options(req)
    size, mode = int(image_size), opts["resize_mode"]
    if root is None or str(root) == "":
        raise data_error(name, "no data root given (config key dataset.root)")
    if not req.root.is_dir():
        raise data_error(name, f"data root {req.root} not found")
    parts = spec.source(req)
    _check_counts(name, spec, parts, opts)
    source = pathlib.Path(parts.info["source"])
    files = {s: [os.path.relpath(p, source).replace(os.sep, "/") for p in srcs]
             for s, (srcs, _) in parts.splits.items() if not isinstance(srcs, np.ndarray)}
    files.update(parts.info.pop("files", {}))
    if spec.val:
        parts.info["val_split"] = _resolve_val(name, parts, files, opts, seed, spec.val)
    classes = [str(c) for c in parts.classes]
    result = {"name": name, "modality": "image", "classes": classes}
    if spec.classnames is not None:
        result["classnames"] = list(spec.classnames(name, classes))
    info = {"split": "official train / test", **parts.info,  # "split": unless the source says otherwise
            "seed": int(seed), "image_size": size, "resize": _RESIZE_TEXT[mode]}
    for split in (s for s in ("train", "val", "test") if s in parts.splits):
        sources, labels = parts.splits[split]
        labels = [int(y) for y in labels]
        if any(not 0 <= y < len(classes) for y in labels):
            raise data_error(name, f"{split} labels outside 0..{len(classes) - 1}")
        per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
        empty = [classes[c] for c in np.flatnonzero(per_class == 0)]
        if split == "train" and empty:
            raise data_error(name, f"no train images for class(es) {', '.join(empty[:5])}"
                                   f"{' ...' if len(empty) > 5 else ''} in {source}")
        images = decode(name, sources, size, mode, progress=opts.get("progress"),
                        num_workers=opts.get("num_workers"), desc=f"{name} {split}")
        if parts.postprocess is not None:
            images = parts.postprocess(images)
        result[split] = {"images": images, "label": labels}
        info.update({f"num_{split}": len(labels), f"per_class_{split}": [int(c) for c in per_class]})
        if split != "train":
            info[f"classes_without_{split}"] = empty
    if files:
        info["files"] = files
    result["info"] = info
    return result


def make_loader(name: str) -> Callable:
    def loader(root, image_size: int = 224, seed: int = 0, **options) -> dict:
        return load(name, root, image_size=image_size, seed=seed, **options)

    loader.__name__ = loader.__qualname__ = f"load_{name.replace('-', '_')}"
    loader.__doc__ = f"The {name} Dataset dict (see lorm.data.vision; options: {', '.join(REGISTRY[name].options)})."
    return loader


def make_loaders(names, what: str) -> tuple[dict, Callable]:
    """``{name: load_<name>}`` of ``names``, and the loader of any of them by name."""
    loaders = {n: make_loader(n) for n in names}

    def load_by_name(name: str, root, image_size: int = 224, seed: int = 0, **options) -> dict:
        """``load_<name>(root, ...)``, ignoring options it does not know or set to None (config dicts hold all)."""
        if name not in loaders:
            raise KeyError(f"unknown {what} {name!r}; available: {', '.join(loaders)}")
        kwargs = {k: v for k, v in options.items() if k in REGISTRY[name].options and v is not None}
        return load(name, root, image_size=image_size, seed=seed, **kwargs)
    return loaders, load_by_name
