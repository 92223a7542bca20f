"""Loaders of the KnOTS vision tasks not covered by the LoRM loaders (spec 8.2): DTD, GTSRB, MNIST, RESISC45,
SUN397 and SVHN, each reading its official on-disk layout (or the common variants listed below). Stanford Cars and
EuroSAT are read by :func:`lorm.data.vision.load_cars196` / :func:`~lorm.data.vision.load_eurosat`; give them the
KnOTS validation split with :func:`add_val_split`.

Every loader is ``load_<name>(root, image_size=224, seed=0, *, strict=True, expected_classes=None,
resize_mode="center_crop", val_split="auto", val_fraction=0.2, val_permutation=None, progress=None,
num_workers=None, ...) -> Dataset dict`` with ::

    {"name", "modality": "image", "classes": [ids], "classnames": [readable names, label order],
     "train": {"images": uint8 (N, S, S, 3), "label": [int]}, "val": {...}, "test": {...}, "info": {...}}

Images are decoded once (PIL, ``convert("RGB")``, bicubic resize to S = ``image_size``) and kept as uint8, as in
the other loaders (:mod:`lorm.data.vision._common`); grey MNIST digits are replicated to 3 channels. The default
``resize_mode="center_crop"`` (shorter side to S, centre crop) is the geometry of the CLIP image processor that the
KnOTS code applies (spec 8.2); ``"stretch"`` gives S x S. CLIP normalisation happens per batch downstream.

========= ================================================================ =========================================
name      layout under ``root`` (first match wins)                         val / test
========= ================================================================ =========================================
mnist     ``MNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,    seeded permutation of the official test
          t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}`` (torchvision;   set (10,000)
          or ``.gz``; also ``mnist/raw``, ``MNIST/``, ``root`` itself)
svhn      ``svhn/{train_32x32.mat,test_32x32.mat}`` (cropped digits,       seeded permutation of test (26,032)
          MATLAB v5; also ``SVHN/``, ``root`` itself); X (32,32,3,N),
          y (N,1) with 10 = digit 0
gtsrb     ``gtsrb/GTSRB/Training/<00000..00042>/*.ppm`` (torchvision; or   seeded permutation of test (12,630)
          ``GTSRB/Final_Training/Images/``), ``gtsrb/GTSRB/Final_Test/
          Images/*.ppm`` + ``gtsrb/GT-final_test.csv`` (``;``-separated,
          ``Filename`` and ``ClassId`` columns; also in ``GTSRB/`` or next
          to the test images)
dtd       ``dtd/images/<class>/*.jpg`` + ``dtd/labels/{train,val,test}<k>  official ``val<k>.txt`` / ``test<k>.txt``
          .txt`` (official release, partition k = 1; also ``dtd/dtd/`` as  (task-vectors: the ``val/``, ``test/``
          torchvision extracts it) or ``dtd/{train,val,test}/<class>/``    folders)
          (task-vectors)
resisc45  ``resisc45/NWPU-RESISC45/<class>/*.jpg`` + ``resisc45/            official ``resisc45-{val,test}.txt``
          resisc45-{train,val,test}.txt`` (one file name per line, class
          = name without the trailing ``_NNN``; split files may also sit
          in ``NWPU-RESISC45/``)
sun397    ``SUN397/<letter>/<class>[/<sub>]/*.jpg`` + ``ClassName.txt`` +  seeded permutation of the official test
          ``Training_<k>.txt``, ``Testing_<k>.txt`` (k = 1; in ``SUN397/``, partition (19,850)
          ``SUN397/Partitions/`` or ``<root>/Partitions/``; lines like
          ``/a/abbey/sun_x.jpg``) or ``sun397/{train,[val,]test}/<class>/``
          (task-vectors)
========= ================================================================ =========================================

Validation split (spec 8.2). The KnOTS code takes, for the data sets without a validation split, the first
floor(0.2 N) indices of a FIXED permutation of the official test set (``dataset/shuffled_idxs/<ds>_shuffled_idxs.pt``)
as validation and the rest as test. Those files are not available here, so by default the permutation is
**seeded**: ``numpy.random.default_rng(seed).permutation(N)`` over the official test order (IDX / .mat / csv /
partition-file order; sorted class folders then sorted files for folder layouts); val = its first
``floor(val_fraction * N)`` entries and test = the rest, both in permutation order (like a ``Subset``). The
indices are recorded in ``info["val_split"]``. This does NOT reproduce the official split; pass the official file
as ``val_permutation`` (``.pt`` / ``.npy`` / ``.txt``, a permutation of 0..N-1) to reproduce it exactly.
``val_split``: "auto" (default: the data set's own val split for DTD and RESISC45, the test permutation otherwise,
also as the fallback when a layout has no val split), "official" (own val split, DataError if there is none) or
"test-permutation" (always carve val out of test).

``strict=True`` (default) enforces the real class counts (:data:`KNOTS_EXPECTED_CLASSES`) and the official split
sizes of :data:`KNOTS_EXPECTED_SIZES` (test sizes before the val split); ``strict=False`` accepts miniature copies;
``expected_classes`` enforces an explicit count whatever ``strict`` says. Nothing is downloaded. A missing or
incomplete layout raises a one-line :class:`lorm.data.DataError` naming the expected path and layout.

Class names for the CLIP heads: ``"classnames"`` in the Dataset dict (derived at load time from the data on disk
where the names come from it), :data:`CLASSNAMES` (the fixed lists) and :func:`classnames_for`.
"""

from __future__ import annotations

import csv
import functools
import gzip
import math
import os
import pathlib
import re
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from lorm.data import DataError
from lorm.data.vision._common import check_args, decode, list_dirs, list_images, one_line

# --------------------------------------------------------------------------------------------- constants
#: Number of classes of the real data sets (asserted when ``strict=True``).
KNOTS_EXPECTED_CLASSES = {"dtd": 47, "gtsrb": 43, "mnist": 10, "resisc45": 45, "sun397": 397, "svhn": 10}

#: Official split sizes asserted when ``strict=True`` ("test" = the official test set BEFORE the val split; spec
#: 8.2 gives the test sizes; the MNIST and SVHN train sizes are those of the distributions).
KNOTS_EXPECTED_SIZES = {
    "mnist": {"train": 60_000, "test": 10_000},
    "svhn": {"train": 73_257, "test": 26_032},
    "gtsrb": {"test": 12_630},
    "sun397": {"test": 19_850},
}

#: Expected (val, test) sizes after the default 20 % split, spec 8.2 table (for reference and tests).
KNOTS_VAL_TEST_SIZES = {"gtsrb": (2_526, 10_104), "mnist": (2_000, 8_000), "sun397": (3_970, 15_880),
                        "svhn": (5_206, 20_826), "cars196": (1_608, 6_433)}

VAL_FRACTION = 0.2
VAL_SPLIT_MODES = ("auto", "official", "test-permutation")

#: name -> (expected layout, where to get it); used in every layout error message.
KNOTS_LAYOUTS = {
    "mnist": ("MNIST IDX layout <root>/MNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,"
              "t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}[.gz] (torchvision; also <root>/mnist/raw, "
              "<root>/MNIST or <root> itself)",
              "https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/ (offline; use a "
              "mirror)"),
    "svhn": ("SVHN cropped-digits layout <root>/svhn/{train_32x32.mat,test_32x32.mat} (MATLAB v5, read with "
             "scipy.io.loadmat; also <root>/SVHN or <root> itself)",
             "http://ufldl.stanford.edu/housenumbers/ (offline; use a mirror)"),
    "gtsrb": ("GTSRB torchvision layout <root>/gtsrb/GTSRB/Training/<00000..00042>/*.ppm (or "
              "GTSRB/Final_Training/Images/<class>/), <root>/gtsrb/GTSRB/Final_Test/Images/*.ppm and "
              "<root>/gtsrb/GT-final_test.csv (Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId)",
              "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/ (GTSRB-Training_fixed.zip, "
              "GTSRB_Final_Test_Images.zip, GTSRB_Final_Test_GT.zip; offline)"),
    "dtd": ("DTD layout <root>/dtd/images/<class>/*.jpg + <root>/dtd/labels/{train1,val1,test1}.txt (official "
            "release; also <root>/dtd/dtd/) or <root>/dtd/{train,val,test}/<class>/*.jpg (task-vectors)",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz; offline)"),
    "resisc45": ("RESISC45 layout <root>/resisc45/NWPU-RESISC45/<class>/*.jpg + "
                 "<root>/resisc45/resisc45-{train,val,test}.txt (one file name per line, e.g. airplane_001.jpg)",
                 "NWPU-RESISC45.rar (Cheng et al. 2017) + https://storage.googleapis.com/"
                 "remote_sensing_representations/resisc45-{train,val,test}.txt (offline)"),
    "sun397": ("SUN397 layout <root>/SUN397/<letter>/<class>[/<sub>]/*.jpg + SUN397/ClassName.txt + "
               "Training_01.txt/Testing_01.txt (in SUN397/, SUN397/Partitions/ or <root>/Partitions/) or "
               "<root>/sun397/{train,val,test}/<class>/*.jpg (task-vectors)",
               "https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz, Partitions.zip; offline)"),
}

#: The 43 GTSRB class names of the CLIP prompts (data/prompts.md), as used by task-vectors/KnOTS, by ClassId.
GTSRB_CLASSNAMES = [
    "red and white circle 20 kph speed limit",
    "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit",
    "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit",
    "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit",
    "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit",
    "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing",
    "red and white triangle road intersection warning",
    "white and yellow diamond priority road",
    "red and white upside down triangle yield right-of-way",
    "stop",
    "empty red and white circle",
    "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry",  # sic ("horizonal"), as in the CLIP prompts
    "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning",
    "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning",
    "red and white triangle with bicyle warning",  # sic ("bicyle")
    "red and white triangle with snowflake / ice warning",
    "red and white triangle with deer warning",
    "white circle with gray strike bar no speed limit",
    "blue circle with white right turn arrow mandatory",
    "blue circle with white left turn arrow mandatory",
    "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory",
    "blue circle with white keep right arrow mandatory",
    "blue circle with white keep left arrow mandatory",
    "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
]

#: EuroSAT folder -> the CLIP/task-vectors class name (the folder name split at capitals otherwise).
EUROSAT_CLIP_NAMES = {
    "AnnualCrop": "annual crop land", "Forest": "forest", "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road", "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land", "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments", "River": "river", "SeaLake": "lake or sea",
}

#: The class folders of the complete copies in label order (sorted), for the fixed class-name lists below.
DTD_FOLDERS = (
    "banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline dotted fibrous "
    "flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike lined marbled matted "
    "meshed paisley perforated pitted pleated polka-dotted porous potholed scaly smeared spiralled sprinkled "
    "stained stratified striped studded swirly veined waffled woven wrinkled zigzagged").split()
RESISC45_FOLDERS = (
    "airplane airport baseball_diamond basketball_court beach bridge chaparral church circular_farmland cloud "
    "commercial_area dense_residential desert forest freeway golf_course ground_track_field harbor "
    "industrial_area intersection island lake meadow medium_residential mobile_home_park mountain overpass "
    "palace parking_lot railway railway_station rectangular_farmland river roundabout runway sea_ice ship "
    "snowberg sparse_residential stadium storage_tank tennis_court terrace thermal_power_station "
    "wetland").split()
EUROSAT_FOLDERS = tuple(EUROSAT_CLIP_NAMES)


def classnames_for(name: str, classes: Sequence[str]) -> list[str]:
    """Human-readable class names (label order) from the class ids/folder names a loader returns as "classes".

    mnist/svhn: the digits; gtsrb: :data:`GTSRB_CLASSNAMES` by ClassId (``"00014"`` -> "stop"); eurosat: the
    CLIP/task-vectors names of :data:`EUROSAT_CLIP_NAMES` (unknown folders: split at capitals, lower case);
    dtd/resisc45: underscores to spaces; sun397: the path without its letter level, ``/`` and ``_`` to spaces
    (``/a/abbey`` -> "abbey", ``/a/apartment_building/outdoor`` -> "apartment building outdoor"; the task-vectors
    folder ``a_apartment_building_outdoor`` gives the same); anything else (cars196, ...): unchanged.
    """
    classes = [str(c) for c in classes]
    if name in ("mnist", "svhn"):
        return [str(int(c)) for c in classes]
    if name == "gtsrb":
        return [GTSRB_CLASSNAMES[int(c)] if c.isdigit() and int(c) < len(GTSRB_CLASSNAMES) else c for c in classes]
    if name == "eurosat":
        return [EUROSAT_CLIP_NAMES.get(c) or " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", c)).lower() or c
                for c in classes]
    if name in ("dtd", "resisc45"):
        return [c.replace("_", " ") for c in classes]
    if name == "sun397":
        return [_sun397_readable(c) for c in classes]
    return list(classes)


def _sun397_readable(c: str) -> str:
    parts = [p for p in c.strip().split("/") if p]
    if len(parts) >= 2 and len(parts[0]) == 1:  # official "/a/abbey[/sub]"
        parts = parts[1:]
    elif len(parts) == 1 and re.fullmatch(r"[a-z]_.+", parts[0]) and parts[0][0] == parts[0][2]:
        parts = [parts[0][2:]]  # task-vectors folder "a_abbey"
    return " ".join(parts).replace("_", " ")


#: Fixed human-readable class names per data set, in label order (those of complete copies; the loaders derive
#: the names from the data on disk and return them as ``ds["classnames"]``). SUN397's names come from its
#: ClassName.txt / class folders only (None here); Cars' from the devkit (cars_meta.mat).
CLASSNAMES = {
    "mnist": [str(d) for d in range(10)],
    "svhn": [str(d) for d in range(10)],
    "gtsrb": list(GTSRB_CLASSNAMES),
    "eurosat": classnames_for("eurosat", EUROSAT_FOLDERS),
    "dtd": classnames_for("dtd", DTD_FOLDERS),
    "resisc45": classnames_for("resisc45", RESISC45_FOLDERS),
    "sun397": None,
}


# --------------------------------------------------------------------------------------------- errors, lookup
def _error(name: str, what: str) -> DataError:
    """One-line DataError: what went wrong, the expected layout and where to get the data."""
    layout, url = KNOTS_LAYOUTS[name]
    return DataError(one_line(f"dataset {name}: {what}; expected the {layout} (download: {url})"))


def _root(name: str, root) -> pathlib.Path:
    if root is None or str(root) == "":
        raise _error(name, "no data root given (config key dataset.root)")
    path = pathlib.Path(os.path.expanduser(str(root)))
    if not path.is_dir():
        raise _error(name, f"data root {path} not found")
    return path


def _first(candidates: Sequence[pathlib.Path], test) -> pathlib.Path | None:
    return next((c for c in candidates if test(c)), None)


def _check_count(name, found, where, strict, expected_classes, what="classes"):
    expected = expected_classes if expected_classes is not None else (
        KNOTS_EXPECTED_CLASSES[name] if strict else None)
    if found < 1:
        raise _error(name, f"no {what} found in {where}")
    if expected is not None and found != int(expected):
        hint = "" if expected_classes is not None else " (incomplete copy? pass strict=False for a subset)"
        raise _error(name, f"found {found} {what} in {where}, expected {int(expected)}{hint}")


def _check_size(name, split, found, where, strict, expected_classes):
    expected = KNOTS_EXPECTED_SIZES.get(name, {}).get(split)
    if strict and expected_classes is None and expected is not None and found != expected:
        what = "official test set" if split == "test" else split
        raise _error(name, f"{where} holds {found} {what} images, expected {expected} (incomplete copy? pass "
                           f"strict=False for a subset)")


def _check_options(name, val_split, val_fraction):
    if val_split not in VAL_SPLIT_MODES:
        raise ValueError(f"dataset {name}: val_split must be one of {VAL_SPLIT_MODES}, got {val_split!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"dataset {name}: val_fraction must be in (0, 1), got {val_fraction!r}")


def _read_lines(name: str, path: pathlib.Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc}")) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _loadmat(name: str, path: pathlib.Path) -> dict:
    try:
        import scipy.io
    except ImportError:
        raise DataError(f"dataset {name}: reading {path.name} needs scipy (pip install scipy)") from None
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc} (expected the MATLAB v5 file of the "
                                 f"official release)")) from None
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc}")) from None


# --------------------------------------------------------------------------------------------- validation split
def val_size(n: int, fraction: float = VAL_FRACTION) -> int:
    """floor(fraction * n), exactly (0.2 * 26,032 -> 5,206)."""
    return math.floor(Fraction(fraction).limit_denominator(1_000_000) * int(n))


def _load_permutation(name: str, source, n: int) -> np.ndarray:
    """A permutation of 0..n-1 from an array-like or a file (.pt via torch.load(weights_only=True), .npy,
    otherwise whitespace/comma-separated text)."""
    where = "val_permutation"
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(os.path.expanduser(str(source)))
        where = str(path)
        if not path.is_file():
            raise DataError(f"dataset {name}: val_permutation file {path} not found (a .pt/.npy/.txt permutation "
                            f"of the official test indices)")
        try:
            if path.suffix in (".pt", ".pth"):
                import torch

                source = torch.load(str(path), map_location="cpu", weights_only=True)
                source = source.numpy() if hasattr(source, "numpy") else np.asarray(source)
            elif path.suffix == ".npy":
                source = np.load(path, allow_pickle=False)
            else:
                source = np.array(path.read_text(encoding="utf-8").replace(",", " ").split(), dtype=np.int64)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a one-line data error
            raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc}")) from None
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



def _take(sources, idx):
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(sources, np.ndarray):
        return sources[idx]
    return [sources[int(i)] for i in idx]


def _carve(name, splits, seed, fraction, permutation, reason):
    """Replace splits["test"] by (val, test) from the test permutation; returns the info entry."""
    sources, labels = splits["test"]
    n = len(labels)
    val_idx, test_idx, method = permuted_val_split(n, seed, fraction, permutation, name=name)
    splits["val"] = (_take(sources, val_idx), [labels[int(i)] for i in val_idx])
    splits["test"] = (_take(sources, test_idx), [labels[int(i)] for i in test_idx])
    return {"method": "test-permutation", "description": method, "reason": reason, "seed": int(seed),
            "fraction": float(fraction), "official_test_size": int(n),
            "val_index": [int(i) for i in val_idx], "test_index": [int(i) for i in test_idx]}


def _resolve_val(name, splits, has_own_val, val_split, seed, fraction, permutation, default="official"):
    """Apply the ``val_split`` policy to splits with or without an own "val" entry; returns info["val_split"]."""
    want_own = val_split == "official" or (val_split == "auto" and default == "official")
    if want_own and has_own_val:
        return {"method": "official", "description": "the data set's own validation split"}
    if val_split == "official":
        raise _error(name, "val_split='official' but the layout has no validation split (use val_split='auto' "
                           "or 'test-permutation')")
    splits.pop("val", None)
    reason = ("val_split='test-permutation'" if val_split == "test-permutation" else
              "no official validation split in this layout" if default == "official" else
              "spec 8.2: no official validation split")
    return _carve(name, splits, seed, fraction, permutation, reason)


def add_val_split(ds: dict, seed: int = 0, fraction: float = VAL_FRACTION, permutation=None) -> dict:
    """A train/test Dataset dict (e.g. from load_cars196 / load_eurosat) with "val" carved out of "test" as in
    spec 8.2 (first floor(fraction N) of a seeded permutation, or of ``permutation``); returns a new dict."""
    name = ds.get("name", "dataset")
    test = ds["test"]
    labels = list(test["label"])
    val_idx, test_idx, method = permuted_val_split(len(labels), seed, fraction, permutation, name=name)
    out = {k: v for k, v in ds.items() if k not in ("test", "info")}
    out["val"] = {"images": np.asarray(test["images"])[val_idx], "label": [int(labels[i]) for i in val_idx]}
    out["test"] = {"images": np.asarray(test["images"])[test_idx], "label": [int(labels[i]) for i in test_idx]}
    info = dict(ds.get("info") or {})
    if isinstance(info.get("files"), dict) and "test" in info["files"]:
        files = list(info["files"]["test"])
        info["files"] = {**info["files"], "val": [files[i] for i in val_idx], "test": [files[i] for i in test_idx]}
    info["val_split"] = {"method": "test-permutation", "description": method, "seed": int(seed),
                         "fraction": float(fraction), "official_test_size": len(labels),
                         "val_index": [int(i) for i in val_idx], "test_index": [int(i) for i in test_idx]}
    info["num_val"], info["num_test"] = len(out["val"]["label"]), len(out["test"]["label"])
    out["info"] = info
    if "classnames" not in out:
        out["classnames"] = classnames_for(name, info.get("class_folders") or ds.get("classes", []))
    return out


# --------------------------------------------------------------------------------------------- decoding
_RESIZE_TEXT = {"stretch": "bicubic to SxS (PIL)",
                "center_crop": "bicubic shorter side to S, centre crop SxS (PIL; CLIP image processor geometry)"}


def _array_image(arr: np.ndarray, i: int):
    from PIL import Image

    return Image.fromarray(arr[i])


def _decode_any(name, sources, size, mode, progress, num_workers, desc) -> np.ndarray:
    """uint8 (N, S, S, 3) from a list of paths/callables or from a uint8 pixel array (N, H, W[, 3])."""
    if isinstance(sources, np.ndarray):
        arr = sources
        if arr.shape[1:3] == (size, size):  # already at the working size: no resampling (PIL would be a no-op)
            return np.ascontiguousarray(arr if arr.ndim == 4 else np.repeat(arr[..., None], 3, axis=-1))
        sources = [functools.partial(_array_image, arr, i) for i in range(len(arr))]
    else:
        missing = next((s for s in sources if not callable(s) and not os.path.isfile(s)), None)
        if missing is not None:
            raise _error(name, f"image {missing} not found")
    return decode(name, sources, size, mode, progress=progress, num_workers=num_workers, desc=desc)


def _assemble(name, classes, classnames, splits, *, size, resize_mode, info, progress, num_workers) -> dict:
    """Decode every split (train, val, test) and return the Dataset dict. Every class must have training images;
    classes without val/test images are listed in ``info["classes_without_<split>"]``."""
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    result = {"name": name, "modality": "image", "classes": classes, "classnames": list(classnames)}
    extra = {}
    for split in ("train", "val", "test"):
        sources, labels = splits[split]
        labels = [int(y) for y in labels]
        if len(labels) != len(sources):
            raise AssertionError("internal: sources and labels differ in length")
        if any(not 0 <= y < n_classes for y in labels):
            raise _error(name, f"{split} labels outside 0..{n_classes - 1}")
        per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
        empty = [classes[c] for c in np.flatnonzero(per_class == 0)]
        if split == "train" and empty:
            raise _error(name, f"no train images for class(es) {', '.join(empty[:5])}"
                               f"{' ...' if len(empty) > 5 else ''} in {info.get('source')}")
        images = _decode_any(name, sources, size, resize_mode, progress, num_workers, f"{name} {split}")
        result[split] = {"images": images, "label": labels}
        extra[f"num_{split}"] = len(labels)
        extra[f"per_class_{split}"] = [int(c) for c in per_class]
        if split != "train":
            extra[f"classes_without_{split}"] = empty
    result["info"] = {**info, "image_size": size, "resize": _RESIZE_TEXT[resize_mode], **extra}
    return result


def _prologue(name, image_size, resize_mode, val_split, val_fraction) -> int:
    size = check_args(name, image_size, resize_mode)
    _check_options(name, val_split, val_fraction)
    return size


# --------------------------------------------------------------------------------------------- MNIST
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_path(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / cand).is_file():
            return folder / cand
    return None


def read_idx(path, name: str = "mnist") -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000 08 <ndim>, then ndim big-endian uint32 sizes, then the data in C
    order), plain or gzipped, as a uint8 array. Malformed files raise a one-line DataError."""
    path = pathlib.Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc}")) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] == 0:
        raise DataError(one_line(f"dataset {name}: {path} is not an IDX file of unsigned bytes (magic "
                                 f"{data[:4].hex() or 'missing'}, expected 000008<ndim>: 00000803 for images, "
                                 f"00000801 for labels)"))
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"dataset {name}: {path} is truncated (header of {ndim} dimensions incomplete)")
    dims = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    if len(data) != header + math.prod(dims):
        raise DataError(one_line(f"dataset {name}: {path} holds {len(data) - header} data bytes, its header "
                                 f"{dims} says {math.prod(dims)}"))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
               expected_classes: int | None = None, resize_mode: str = "center_crop", val_split: str = "auto",
               val_fraction: float = VAL_FRACTION, val_permutation=None, progress: bool | None = None,
               num_workers: int | None = None) -> dict:
    """MNIST from the IDX files (torchvision ``MNIST/raw/``, plain or ``.gz``; also ``mnist/raw``, ``MNIST/`` or the
    root itself). Train = the 60,000 official training digits; val/test = a seeded permutation split of the
    10,000 official test digits (see the module docstring). Grey digits are replicated to 3 channels."""
    name = "mnist"
    size = _prologue(name, image_size, resize_mode, val_split, val_fraction)
    base = _root(name, root)
    cands = [base / "MNIST" / "raw", base / "mnist" / "raw", base / "MNIST", base / "mnist", base / "raw", base]
    folder = _first(cands, lambda c: c.is_dir() and _idx_path(c, _MNIST_FILES["train"][0]) is not None)
    if folder is None:
        raise _error(name, f"{base / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'} (or .gz) not found")
    splits, files = {}, {}
    for split, (img_stem, lab_stem) in _MNIST_FILES.items():
        img_path, lab_path = _idx_path(folder, img_stem), _idx_path(folder, lab_stem)
        for stem, path in ((img_stem, img_path), (lab_stem, lab_path)):
            if path is None:
                raise _error(name, f"{folder / stem} (or .gz) not found")
        images, labels = read_idx(img_path, name), read_idx(lab_path, name)
        if images.ndim != 3 or labels.ndim != 1:
            raise _error(name, f"{img_path} must hold (N, H, W) images and {lab_path} (N,) labels, got "
                               f"{images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise _error(name, f"{img_path} holds {len(images)} images but {lab_path} {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise _error(name, f"{lab_path} holds label {int(labels.max())} outside 0..9")
        _check_size(name, split, len(labels), img_path, strict, expected_classes)
        splits[split] = (images, labels.astype(np.int64).tolist())
        files[split] = [str(img_path), str(lab_path)]
    present = len(np.unique(splits["train"][1]))
    _check_count(name, present, files["train"][1], strict, expected_classes, what="digit classes")
    val_info = _resolve_val(name, splits, False, val_split, seed, val_fraction, val_permutation,
                            default="test-permutation")
    classes = [str(d) for d in range(10)]
    info = {"source": str(folder), "layout": "MNIST IDX files", "split": "official train / test", "seed": int(seed),
            "idx_files": files, "val_split": val_info}
    return _assemble(name, classes, classnames_for(name, classes), splits, size=size, resize_mode=resize_mode,
                     info=info, progress=progress, num_workers=num_workers)


# --------------------------------------------------------------------------------------------- SVHN
def _svhn_split(name, path: pathlib.Path) -> tuple[np.ndarray, list[int]]:
    mat = _loadmat(name, path)
    if "X" not in mat or "y" not in mat:
        raise _error(name, f"{path} has no 'X' and 'y' variables")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.size:
        raise _error(name, f"{path}: X must be (32, 32, 3, N) with N = len(y) = {y.size}, got {x.shape}")
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise _error(name, f"{path}: X values outside 0..255 (dtype {x.dtype})")
        x = x.astype(np.uint8)
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise _error(name, f"{path}: y values outside 1..10 (10 = digit 0)")
    labels[labels == 10] = 0
    return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))), labels.tolist()


def load_svhn(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
              expected_classes: int | None = None, resize_mode: str = "center_crop", val_split: str = "auto",
              val_fraction: float = VAL_FRACTION, val_permutation=None, progress: bool | None = None,
              num_workers: int | None = None) -> dict:
    """SVHN cropped digits from ``svhn/{train,test}_32x32.mat`` (MATLAB v5 via scipy.io.loadmat; ``X`` (32, 32, 3,
    N), ``y`` (N, 1), label 10 = digit 0; also ``SVHN/`` or the root itself; ``extra_32x32.mat`` is not used, as
    in torchvision's default). Val/test = a seeded permutation split of the 26,032 official test digits."""
    name = "svhn"
    size = _prologue(name, image_size, resize_mode, val_split, val_fraction)
    base = _root(name, root)
    folder = _first([base / "svhn", base / "SVHN", base], lambda c: (c / "train_32x32.mat").is_file())
    if folder is None:
        raise _error(name, f"{base / 'svhn' / 'train_32x32.mat'} not found")
    splits = {}
    for split in ("train", "test"):
        path = folder / f"{split}_32x32.mat"
        if not path.is_file():
            raise _error(name, f"{path} not found")
        splits[split] = _svhn_split(name, path)
        _check_size(name, split, len(splits[split][1]), path, strict, expected_classes)
    _check_count(name, len(set(splits["train"][1])), folder / "train_32x32.mat", strict, expected_classes,
                 what="digit classes")
    val_info = _resolve_val(name, splits, False, val_split, seed, val_fraction, val_permutation,
                            default="test-permutation")
    classes = [str(d) for d in range(10)]
    info = {"source": str(folder), "layout": "SVHN cropped digits (.mat)", "split": "official train / test",
            "seed": int(seed), "label_map": "y == 10 -> 0", "val_split": val_info}
    return _assemble(name, classes, classnames_for(name, classes), splits, size=size, resize_mode=resize_mode,
                     info=info, progress=progress, num_workers=num_workers)


# --------------------------------------------------------------------------------------------- GTSRB
def _is_ppm(p: pathlib.Path) -> bool:
    return p.is_file() and p.suffix.lower() == ".ppm" and not p.name.startswith(".")


def load_gtsrb(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
               expected_classes: int | None = None, resize_mode: str = "center_crop", val_split: str = "auto",
               val_fraction: float = VAL_FRACTION, val_permutation=None, progress: bool | None = None,
               num_workers: int | None = None) -> dict:
    """GTSRB in torchvision's layout: train = ``gtsrb/GTSRB/Training/<5-digit ClassId>/*.ppm`` (or the original
    ``GTSRB/Final_Training/Images/``; the per-class GT-<class>.csv files are not needed; label = index of the
    sorted class folder = ClassId for the complete set), test = ``GTSRB/Final_Test/Images/<Filename>`` with
    ``ClassId`` from ``gtsrb/GT-final_test.csv`` (``;``-separated, csv order). No ROI crop (as torchvision).
    Val/test = a seeded permutation split of the 12,630 official test images."""
    name = "gtsrb"
    size = _prologue(name, image_size, resize_mode, val_split, val_fraction)
    base = _root(name, root)
    cands = [base / "gtsrb" / "GTSRB", base / "GTSRB"] + ([base] if base.name == "GTSRB" else [])
    gdir = _first(cands, lambda c: (c / "Training").is_dir() or (c / "Final_Training" / "Images").is_dir())
    if gdir is None:
        raise _error(name, f"{base / 'gtsrb' / 'GTSRB' / 'Training'} not found")
    train_dir = gdir / "Training" if (gdir / "Training").is_dir() else gdir / "Final_Training" / "Images"
    folders = list_dirs(train_dir)
    bad = [f for f in folders if not f.isdigit()]
    if bad:
        raise _error(name, f"{train_dir} holds class folder(s) {bad[:3]} that are not ClassIds like 00000")
    _check_count(name, len(folders), train_dir, strict, expected_classes, what="class folders")
    id_to_label = {int(f): i for i, f in enumerate(folders)}
    train_src, train_lab, rel_train = [], [], []
    for label, f in enumerate(folders):
        ppms = sorted(p.name for p in (train_dir / f).iterdir() if _is_ppm(p))
        if not ppms:
            raise _error(name, f"class folder {train_dir / f} holds no .ppm images")
        train_src.extend(str(train_dir / f / p) for p in ppms)
        train_lab.extend([label] * len(ppms))
        rel_train.extend(f"{f}/{p}" for p in ppms)
    test_dir = gdir / "Final_Test" / "Images"
    if not test_dir.is_dir():
        raise _error(name, f"{test_dir} not found")
    csv_cands = [gdir.parent / "GT-final_test.csv", gdir / "GT-final_test.csv", test_dir / "GT-final_test.csv",
                 gdir / "Final_Test" / "GT-final_test.csv"]
    csv_path = _first(csv_cands, lambda c: c.is_file())
    if csv_path is None:
        hint = (" (GT-final_test.test.csv has no ClassId column: use GT-final_test.csv of GTSRB_Final_Test_GT.zip)"
                if (test_dir / "GT-final_test.test.csv").is_file() else "")
        raise _error(name, f"{csv_cands[0]} not found{hint}")
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter=";", skipinitialspace=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(one_line(f"dataset {name}: cannot read {csv_path}: {exc}")) from None
    if not rows or "Filename" not in rows[0] or "ClassId" not in rows[0]:
        raise _error(name, f"{csv_path} must be ';'-separated with a header holding Filename and ClassId")
    test_src, test_lab, rel_test = [], [], []
    for k, row in enumerate(rows):
        try:
            class_id = int(str(row["ClassId"]).strip())
        except (TypeError, ValueError):
            raise _error(name, f"{csv_path} row {k + 2}: ClassId {row.get('ClassId')!r} is not an integer") from None
        if class_id not in id_to_label:
            raise _error(name, f"{csv_path} row {k + 2}: ClassId {class_id} has no class folder in {train_dir}")
        fname = str(row["Filename"]).strip()
        test_src.append(str(test_dir / fname))
        test_lab.append(id_to_label[class_id])
        rel_test.append(fname)
    _check_size(name, "test", len(test_lab), csv_path, strict, expected_classes)
    splits = {"train": (train_src, train_lab), "test": (test_src, test_lab)}
    val_info = _resolve_val(name, splits, False, val_split, seed, val_fraction, val_permutation,
                            default="test-permutation")
    files = {"train": rel_train, "test": [rel_test[i] for i in val_info["test_index"]],
             "val": [rel_test[i] for i in val_info["val_index"]]}
    info = {"source": str(gdir), "layout": f"GTSRB {train_dir.relative_to(gdir)}/<ClassId>/*.ppm + "
                                           f"Final_Test/Images + {csv_path.name}",
            "split": "official train / test", "seed": int(seed), "class_ids": [int(f) for f in folders],
            "test_csv": str(csv_path), "label_order": "sorted ClassId folders", "val_split": val_info,
            "files": files}
    return _assemble(name, folders, classnames_for(name, folders), splits, size=size, resize_mode=resize_mode,
                     info=info, progress=progress, num_workers=num_workers)


# --------------------------------------------------------------------------------------------- folder helpers
def _split_folders(name: str, folder: pathlib.Path, strict, expected_classes):
    """Classes (the folders of ``train/``, count checked) and {split: (relative paths, labels)} of the
    task-vectors layout ``<folder>/{train,val,test}/<class>/*`` for the splits present."""
    classes = list_dirs(folder / "train")
    _check_count(name, len(classes), folder / "train", strict, expected_classes, what="class folders")
    rel_splits = {}
    for split in ("train", "val", "test"):
        if (folder / split).is_dir():
            rels, labels = _folder_split(name, folder / split, classes)
            rel_splits[split] = ([f"{split}/{r}" for r in rels], labels)
    return classes, rel_splits


def _folder_split(name, split_dir: pathlib.Path, classes: list[str]):
    """(relative paths "<class>/<file>", labels) of an ImageFolder split whose classes must be among ``classes``."""
    present = list_dirs(split_dir)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise _error(name, f"{split_dir} holds class folder(s) {unknown[:3]} missing from the train folder")
    index = {c: i for i, c in enumerate(classes)}
    rels, labels = [], []
    for c in present:
        for f in list_images(split_dir / c):
            rels.append(f"{c}/{f}")
            labels.append(index[c])
    return rels, labels


def _check_partition(name, partition) -> int:
    if isinstance(partition, bool) or not isinstance(partition, (int, np.integer)) or not 1 <= partition <= 10:
        raise ValueError(f"dataset {name}: partition must be an integer in 1..10, got {partition!r}")
    return int(partition)


def _check_layout(name, layout):
    if layout not in ("auto", "official", "folders"):
        raise ValueError(f"dataset {name}: layout must be 'auto', 'official' or 'folders', got {layout!r}")


def _finish_files(name, folder, classes, classnames, rel_splits, info, val_info, size, resize_mode, progress,
                  num_workers):
    splits = {s: ([str(folder / r) for r in rels], labels) for s, (rels, labels) in rel_splits.items()}
    info = {**info, "source": str(folder), "val_split": val_info,
            "files": {s: list(rels) for s, (rels, _) in rel_splits.items()}}
    return _assemble(name, classes, classnames, splits, size=size, resize_mode=resize_mode, info=info,
                     progress=progress, num_workers=num_workers)


# --------------------------------------------------------------------------------------------- DTD
def load_dtd(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
             expected_classes: int | None = None, resize_mode: str = "center_crop", layout: str = "auto",
             partition: int = 1, val_split: str = "auto", val_fraction: float = VAL_FRACTION, val_permutation=None,
             progress: bool | None = None, num_workers: int | None = None) -> dict:
    """DTD (47 textures). ``layout``: "auto" (task-vectors folders if ``dtd/train/`` exists, else the official
    release), "official" (``dtd/images/<class>/`` + ``dtd/labels/{train,val,test}<partition>.txt``, lines like
    ``banded/banded_0002.jpg``; also under ``dtd/dtd/``) or "folders" (``dtd/{train,val,test}/<class>/``).
    Labels = sorted class folders (ImageFolder order). Val = the official val split (``val<partition>.txt`` /
    ``val/``); without one (``val_split="auto"``) a seeded permutation of test. Note: task-vectors' own DTD code
    evaluates on the ``val/`` folder; here "test" is ``test/``."""
    name = "dtd"
    size = _prologue(name, image_size, resize_mode, val_split, val_fraction)
    _check_layout(name, layout)
    k = _check_partition(name, partition)
    base = _root(name, root)
    cands = [base / "dtd", base / "dtd" / "dtd"] + ([base] if base.name == "dtd" else [])
    folders_dir = _first(cands, lambda c: (c / "train").is_dir()) if layout != "official" else None
    official_dir = _first(cands, lambda c: (c / "images").is_dir() and (c / "labels").is_dir()) \
        if layout != "folders" and folders_dir is None else None
    if folders_dir is not None:
        dtd = folders_dir
        classes, rel_splits = _split_folders(name, dtd, strict, expected_classes)
        if "test" not in rel_splits:
            raise _error(name, f"{dtd / 'test'} not found (its counterpart {dtd / 'train'} exists)")
        info = {"layout": "dtd/{train,val,test}/<class>/*.jpg (task-vectors)", "split": "folders"}
    elif official_dir is not None:
        dtd = official_dir
        classes = list_dirs(dtd / "images")
        _check_count(name, len(classes), dtd / "images", strict, expected_classes, what="class folders")
        index = {c: i for i, c in enumerate(classes)}
        rel_splits = {}
        for split in ("train", "val", "test"):
            path = dtd / "labels" / f"{split}{k}.txt"
            if not path.is_file():
                if split == "val":
                    continue
                raise _error(name, f"{path} not found")
            rels, labels = [], []
            for line in _read_lines(name, path):
                rel = line.replace("\\", "/").lstrip("/")
                rel = rel[len("images/"):] if rel.startswith("images/") else rel
                c = rel.split("/")[0]
                if "/" not in rel or c not in index:
                    raise _error(name, f"{path}: entry {line!r} does not name a class folder of {dtd / 'images'}")
                rels.append(f"images/{rel}")
                labels.append(index[c])
            rel_splits[split] = (rels, labels)
        info = {"layout": f"dtd/images/<class>/*.jpg + labels/{{train,val,test}}{k}.txt (official)",
                "split": f"official partition {k}"}
    else:
        expected = base / "dtd" / ("train" if layout == "folders" else "images")
        raise _error(name, f"{expected} not found" + (" (nor dtd/train/)" if layout == "auto" else ""))
    val_info = _resolve_val(name, rel_splits, "val" in rel_splits, val_split, seed, val_fraction, val_permutation)
    info.update(seed=int(seed), label_order="sorted class folders")
    return _finish_files(name, dtd, classes, classnames_for(name, classes), rel_splits, info, val_info, size,
                         resize_mode, progress, num_workers)


# --------------------------------------------------------------------------------------------- RESISC45
_RESISC_SUFFIX = re.compile(r"_\d+$")


def load_resisc45(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
                  expected_classes: int | None = None, resize_mode: str = "center_crop", val_split: str = "auto",
                  val_fraction: float = VAL_FRACTION, val_permutation=None, progress: bool | None = None,
                  num_workers: int | None = None) -> dict:
    """NWPU-RESISC45 (45 scene classes, 256 x 256): images ``resisc45/NWPU-RESISC45/<class>/*.jpg``, splits from
    ``resisc45/resisc45-{train,val,test}.txt`` (the "In-domain representation learning for remote sensing"
    splits used by torchgeo/task-vectors; one file name per line, class = name without the trailing ``_NNN``;
    the files may also sit in ``NWPU-RESISC45/``). Labels = sorted class folders; images in ImageFolder order
    (class, then file name). Without resisc45-val.txt (``val_split="auto"``) val = a seeded permutation of test."""
    name = "resisc45"
    size = _prologue(name, image_size, resize_mode, val_split, val_fraction)
    base = _root(name, root)
    rdir = _first([base / "resisc45", base], lambda c: (c / "NWPU-RESISC45").is_dir())
    if rdir is None:
        raise _error(name, f"{base / 'resisc45' / 'NWPU-RESISC45'} not found")
    img_dir = rdir / "NWPU-RESISC45"
    classes = list_dirs(img_dir)
    _check_count(name, len(classes), img_dir, strict, expected_classes, what="class folders")
    index = {c: i for i, c in enumerate(classes)}
    rel_splits, split_files = {}, []
    for split in ("train", "val", "test"):
        path = _first([rdir / f"resisc45-{split}.txt", img_dir / f"resisc45-{split}.txt"], lambda c: c.is_file())
        if path is None:
            if split == "val":
                continue
            raise _error(name, f"{rdir / f'resisc45-{split}.txt'} not found")
        split_files.append(str(path))
        entries = []
        for line in _read_lines(name, path):
            fname = line.replace("\\", "/").split("/")[-1]
            c = _RESISC_SUFFIX.sub("", pathlib.PurePosixPath(fname).stem)
            if c not in index:
                raise _error(name, f"{path}: {fname!r} names class {c!r}, which has no folder in {img_dir}")
            entries.append((index[c], fname))
        entries.sort()
        rel_splits[split] = ([f"{classes[y]}/{f}" for y, f in entries], [y for y, _ in entries])
    val_info = _resolve_val(name, rel_splits, "val" in rel_splits, val_split, seed, val_fraction, val_permutation)
    info = {"layout": "resisc45/NWPU-RESISC45/<class>/*.jpg + resisc45-{train,val,test}.txt",
            "split": "official split files", "split_files": split_files, "seed": int(seed),
            "label_order": "sorted class folders"}
    return _finish_files(name, img_dir, classes, classnames_for(name, classes), rel_splits, info, val_info, size,
                         resize_mode, progress, num_workers)


# --------------------------------------------------------------------------------------------- SUN397
def load_sun397(root, image_size: int = 224, seed: int = 0, *, strict: bool = True,
                expected_classes: int | None = None, resize_mode: str = "center_crop", layout: str = "auto",
                partition: int = 1, val_split: str = "auto", val_fraction: float = VAL_FRACTION,
                val_permutation=None, progress: bool | None = None, num_workers: int | None = None) -> dict:
    """SUN397 (397 scene classes). ``layout``: "auto" (the official layout if found, else task-vectors folders),
    "official" (``SUN397/<letter>/<class>[/<sub>]/*.jpg``; classes = the lines of ``ClassName.txt`` in file order,
    e.g. ``/a/abbey``; train / test = ``Training_<partition>.txt`` / ``Testing_<partition>.txt``, lines like
    ``/a/abbey/sun_aaalbzqrimafwbiv.jpg``; ClassName.txt and the partition files in ``SUN397/``,
    ``SUN397/Partitions/`` or ``<root>/Partitions/``) or "folders" (``sun397/{train,[val,]test}/<class>/``, labels =
    sorted folders, e.g. ``a_abbey``, as ImageFolder). Val (spec 8.2) = a seeded permutation split of the test set
    (19,850 for partition 1) even when a ``val/`` folder exists (``val_split="official"`` uses that folder)."""
    name = "sun397"
    size = _prologue(name, image_size, resize_mode, val_split, val_fraction)
    _check_layout(name, layout)
    k = _check_partition(name, partition)
    base = _root(name, root)
    sun = None
    if layout != "folders":
        for cand in (base / "SUN397", base / "sun397" / "SUN397", base):
            meta = [cand, cand / "Partitions", cand.parent / "Partitions"]
            class_file = _first([m / "ClassName.txt" for m in meta], lambda c: c.is_file())
            if cand.is_dir() and class_file is not None:
                sun = cand
                break
    folders_dir = None
    if sun is None and layout != "official":
        cands = [base / "sun397"] + ([base] if base.name == "sun397" else [])
        folders_dir = _first(cands, lambda c: (c / "train").is_dir() and (c / "test").is_dir())
    if sun is not None:
        meta = [sun, sun / "Partitions", sun.parent / "Partitions"]
        raw_classes = _read_lines(name, class_file)
        classes = ["/" + c.strip("/") for c in raw_classes]
        if len(set(classes)) != len(classes):
            raise _error(name, f"{class_file} lists a class twice")
        _check_count(name, len(classes), class_file, strict, expected_classes)
        index = {c: i for i, c in enumerate(classes)}
        rel_splits, part_files = {}, []
        for split, stem in (("train", "Training"), ("test", "Testing")):
            fname = f"{stem}_{k:02d}.txt"
            path = _first([m / fname for m in meta], lambda c: c.is_file())
            if path is None:
                raise _error(name, f"{sun / fname} (or Partitions/{fname}) not found")
            part_files.append(str(path))
            rels, labels = [], []
            for line in _read_lines(name, path):
                rel = "/" + line.replace("\\", "/").strip("/")
                c = rel.rsplit("/", 1)[0]
                if c not in index:
                    raise _error(name, f"{path}: entry {line!r} names class {c!r}, which is not in {class_file}")
                rels.append(rel.lstrip("/"))
                labels.append(index[c])
            rel_splits[split] = (rels, labels)
        folder = sun
        info = {"layout": "SUN397/<letter>/<class>[/<sub>]/*.jpg + ClassName.txt + partition files (official)",
                "split": f"official partition {k}", "class_file": str(class_file), "partition_files": part_files,
                "label_order": "ClassName.txt order"}
    elif folders_dir is not None:
        folder = folders_dir
        classes, rel_splits = _split_folders(name, folder, strict, expected_classes)
        info = {"layout": "sun397/{train,val,test}/<class>/*.jpg (task-vectors)", "split": "folders",
                "label_order": "sorted class folders"}
    else:
        expected = base / "sun397" / "train" if layout == "folders" else base / "SUN397" / "ClassName.txt"
        raise _error(name, f"{expected} not found" + (" (nor sun397/{train,test}/)" if layout == "auto" else ""))
    _check_size(name, "test", len(rel_splits["test"][1]), folder, strict, expected_classes)
    val_info = _resolve_val(name, rel_splits, "val" in rel_splits, val_split, seed, val_fraction, val_permutation,
                            default="test-permutation")
    info["seed"] = int(seed)
    return _finish_files(name, folder, classes, classnames_for(name, classes), rel_splits, info, val_info, size,
                         resize_mode, progress, num_workers)


# --------------------------------------------------------------------------------------------- registry
#: name -> loader
KNOTS_LOADERS = {"dtd": load_dtd, "gtsrb": load_gtsrb, "mnist": load_mnist, "resisc45": load_resisc45,
                 "sun397": load_sun397, "svhn": load_svhn}

_COMMON_OPTIONS = ("strict", "expected_classes", "resize_mode", "val_split", "val_fraction", "val_permutation",
                   "progress", "num_workers")
#: Loader options a config may set (besides root, image_size, seed), per data set.
KNOTS_OPTIONS = {name: _COMMON_OPTIONS + (("layout", "partition") if name in ("dtd", "sun397") else ())
                 for name in KNOTS_LOADERS}


def load_knots_dataset(name: str, root, image_size: int = 224, seed: int = 0, **options) -> dict:
    """Dispatch to ``KNOTS_LOADERS[name]``; options the loader does not know (or None) are ignored."""
    if name not in KNOTS_LOADERS:
        raise KeyError(f"unknown KnOTS vision dataset {name!r}; available: {', '.join(KNOTS_LOADERS)}")
    kwargs = {k: v for k, v in options.items() if k in KNOTS_OPTIONS[name] and v is not None}
    return KNOTS_LOADERS[name](root, image_size=image_size, seed=seed, **kwargs)


__all__ = ["CLASSNAMES", "GTSRB_CLASSNAMES", "KNOTS_EXPECTED_CLASSES", "KNOTS_EXPECTED_SIZES", "KNOTS_LAYOUTS",
           "KNOTS_LOADERS", "KNOTS_OPTIONS", "KNOTS_VAL_TEST_SIZES", "add_val_split", "classnames_for",
           "load_dtd", "load_gtsrb", "load_knots_dataset", "load_mnist", "load_resisc45", "load_sun397",
           "load_svhn", "read_idx", "permuted_val_split", "val_size"]
