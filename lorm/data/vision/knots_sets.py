"""The KnOTS vision tasks not covered by the paper loaders (spec 8.2): DTD, GTSRB, MNIST, RESISC45, SUN397, SVHN.

MNIST, SVHN, GTSRB, DTD and SUN397 are read by ``torchvision.datasets`` (their layouts: config/README.md, "Image
data sets"); RESISC45 has no torchvision reader and is read here. Every loader is ``load_<name>(root,
image_size=224, seed=0, **options)`` and returns the Dataset dict of :mod:`lorm.data.vision` with a "val" split and
``"classnames"`` (readable names in label order, for the CLIP heads). Default ``resize_mode="center_crop"``: the
geometry of the CLIP image processor of the KnOTS code. Grey MNIST digits are replicated to 3 channels.

Validation split (spec 8.2): the KnOTS code takes the first floor(0.2 N) indices of a fixed permutation of the
official test set (``shuffled_idxs/<ds>_shuffled_idxs.pt``) as val and the rest as test. Without those files the
permutation is seeded, ``numpy.random.default_rng(seed).permutation(N)`` (NOT the official split; pass the file as
``val_permutation`` to reproduce it). ``val_split``: "auto" (the data set's own val split for DTD and RESISC45,
else the test permutation), "official" (own val split or DataError) or "test-permutation". ``strict=True`` checks
the real class counts and the official split sizes (test sizes before the val cut).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from lorm.data.vision._common import (REGISTRY, VAL_FRACTION, VAL_SPLIT_MODES, Parts, carve_val, dispatch, first,
                                      list_dirs, make_loader, permuted_val_split, read_lines, register, val_size)

KNOTS_EXPECTED_SIZES = {"mnist": {"train": 60_000, "test": 10_000}, "svhn": {"train": 73_257, "test": 26_032},
                        "gtsrb": {"test": 12_630}, "sun397": {"test": 19_850}}
#: Expected (val, test) sizes after the default 20 % split, spec 8.2 table (for reference and tests).
KNOTS_VAL_TEST_SIZES = {"gtsrb": (2_526, 10_104), "mnist": (2_000, 8_000), "sun397": (3_970, 15_880),
                        "svhn": (5_206, 20_826), "cars196": (1_608, 6_433)}

#: The 43 GTSRB class names of the CLIP prompts (data/prompts.md), as used by task-vectors/KnOTS, by ClassId.
GTSRB_CLASSNAMES = [n.strip() for n in (
    "red and white circle 20 kph speed limit | red and white circle 30 kph speed limit | "
    "red and white circle 50 kph speed limit | red and white circle 60 kph speed limit | "
    "red and white circle 70 kph speed limit | red and white circle 80 kph speed limit | "
    "end / de-restriction of 80 kph speed limit | red and white circle 100 kph speed limit | "
    "red and white circle 120 kph speed limit | red and white circle red car and black car no passing | "
    "red and white circle red truck and black car no passing | "
    "red and white triangle road intersection warning | white and yellow diamond priority road | "
    "red and white upside down triangle yield right-of-way | stop | empty red and white circle | "
    "red and white circle no truck entry | red circle with white horizonal stripe no entry | "
    "red and white triangle with exclamation mark warning | "
    "red and white triangle with black left curve approaching warning | "
    "red and white triangle with black right curve approaching warning | "
    "red and white triangle with black double curve approaching warning | "
    "red and white triangle rough / bumpy road warning | "
    "red and white triangle car skidding / slipping warning | "
    "red and white triangle with merging / narrow lanes warning | "
    "red and white triangle with person digging / construction / road work warning | "
    "red and white triangle with traffic light approaching warning | "
    "red and white triangle with person walking warning | "
    "red and white triangle with child and person walking warning | "
    "red and white triangle with bicyle warning | red and white triangle with snowflake / ice warning | "
    "red and white triangle with deer warning | white circle with gray strike bar no speed limit | "
    "blue circle with white right turn arrow mandatory | blue circle with white left turn arrow mandatory | "
    "blue circle with white forward arrow mandatory | "
    "blue circle with white forward or right turn arrow mandatory | "
    "blue circle with white forward or left turn arrow mandatory | "
    "blue circle with white keep right arrow mandatory | blue circle with white keep left arrow mandatory | "
    "blue circle with white arrows indicating a traffic circle | "
    "white circle with gray strike bar indicating no passing for cars has ended | "
    "white circle with gray strike bar indicating no passing for trucks has ended"
).split("|")]  # sic: "horizonal", "bicyle", as in the CLIP prompts

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




def knots(name: str, **kwargs):
    """Register a KnOTS source: val split (default ``val``), CLIP-geometry resize, readable class names."""
    def wrap(source):
        def with_names(req) -> Parts:
            parts = source(req)
            parts.classnames = classnames_for(name, parts.classes)
            return parts
        register(name, resize="center_crop", val=kwargs.pop("val", "test-permutation"),
                 sizes=KNOTS_EXPECTED_SIZES.get(name), **kwargs)(with_names)
        return source
    return wrap


# --------------------------------------------------------------------------------------------- MNIST, SVHN
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


@knots("mnist", classes=10, options=("download",),
       layout="MNIST IDX layout of torchvision MNIST <root>/MNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,"
              "t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte} (uncompressed IDX files; <root> may also be MNIST/)",
       url="https://ossci-datasets.s3.amazonaws.com/mnist/ (offline; use a mirror), or download=True")
def _mnist(req) -> Parts:
    """Train = the 60,000 official digits; val/test = a cut of the 10,000 official test digits."""
    from torchvision.datasets import MNIST

    root = req.root.parent if req.root.name == "MNIST" else req.root
    raw = root / "MNIST" / "raw"
    req.require(*(raw / f for f in _MNIST_FILES))
    sets = {s: req.tv(MNIST, str(root), train=s == "train") for s in ("train", "test")}
    splits = {s: (d.data.numpy(), d.targets.tolist()) for s, d in sets.items()}
    info = {"source": str(raw), "layout": "MNIST IDX files", "split": "official train / test"}
    return Parts([str(d) for d in range(10)], splits, info,
                 (len(set(splits["train"][1])), raw / _MNIST_FILES[1], "digit classes"))


@knots("svhn", classes=10, options=("download",),
       layout="SVHN cropped-digits layout <root>/svhn/{train_32x32.mat,test_32x32.mat} (MATLAB v5, read by "
              "torchvision SVHN; also <root>/SVHN or <root> itself)",
       url="http://ufldl.stanford.edu/housenumbers/ (offline; use a mirror), or download=True")
def _svhn(req) -> Parts:
    """Cropped digits (label 10 = digit 0, as torchvision maps it); ``extra_32x32.mat`` is not used."""
    from torchvision.datasets import SVHN

    class AnySVHN(SVHN):  # miniature copies welcome: no md5 of the official files
        def _check_integrity(self):
            return os.path.isfile(os.path.join(self.root, self.filename))

    folder = first([req.root / "svhn", req.root / "SVHN", req.root], lambda c: (c / "train_32x32.mat").is_file())
    folder = folder or req.root / "svhn"
    req.require(folder / "train_32x32.mat", folder / "test_32x32.mat")
    sets = {s: req.tv(AnySVHN, str(folder), split=s) for s in ("train", "test")}
    splits = {s: (np.ascontiguousarray(d.data.transpose(0, 2, 3, 1)), d.labels.tolist()) for s, d in sets.items()}
    info = {"source": str(folder), "layout": "SVHN cropped digits (.mat)", "split": "official train / test",
            "label_map": "y == 10 -> 0"}
    return Parts([str(d) for d in range(10)], splits, info,
                 (len(set(splits["train"][1])), folder / "train_32x32.mat", "digit classes"))


# --------------------------------------------------------------------------------------------- GTSRB
@knots("gtsrb", classes=43, options=("download",),
       layout="GTSRB torchvision layout <root>/gtsrb/GTSRB/Training/<00000..00042>/*.ppm, "
              "<root>/gtsrb/GTSRB/Final_Test/Images/*.ppm and <root>/gtsrb/GT-final_test.csv "
              "(Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId)",
       url="https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/ (GTSRB-Training_fixed.zip, "
           "GTSRB_Final_Test_Images.zip, GTSRB_Final_Test_GT.zip; offline), or download=True")
def _gtsrb(req) -> Parts:
    """Labels = the sorted ClassId folders of Training/ (= ClassId for the complete set); test ClassIds of the csv
    are mapped to them. No ROI crop (as torchvision)."""
    from torchvision.datasets import GTSRB

    base = req.root if req.root.name == "gtsrb" else req.root / "gtsrb"
    train_dir, test_dir = base / "GTSRB" / "Training", base / "GTSRB" / "Final_Test" / "Images"
    req.require(train_dir, test_dir, base / "GT-final_test.csv")
    sets = {s: req.tv(GTSRB, str(base.parent), split=s) for s in ("train", "test")}
    folders = list_dirs(train_dir)
    if not all(f.isdigit() for f in folders):
        raise req.error(f"{train_dir} holds class folder(s) {[f for f in folders if not f.isdigit()][:3]} that are "
                        f"not ClassIds like 00000")
    id_to_label = {int(f): i for i, f in enumerate(folders)}
    unknown = next((y for _, y in sets["test"]._samples if y not in id_to_label), None)
    if unknown is not None:
        raise req.error(f"{base / 'GT-final_test.csv'}: ClassId {unknown} has no class folder in {train_dir}")
    splits = {"train": ([p for p, _ in sets["train"]._samples], [y for _, y in sets["train"]._samples]),
              "test": ([p for p, _ in sets["test"]._samples], [id_to_label[y] for _, y in sets["test"]._samples])}
    files = {s: [os.path.relpath(p, d).replace(os.sep, "/") for p in splits[s][0]]
             for s, d in (("train", train_dir), ("test", test_dir))}
    info = {"source": str(base / "GTSRB"), "layout": "GTSRB Training/<ClassId>/*.ppm + Final_Test/Images + "
            "GT-final_test.csv", "split": "official train / test", "class_ids": [int(f) for f in folders],
            "test_csv": str(base / "GT-final_test.csv"), "label_order": "sorted ClassId folders", "files": files}
    return Parts(folders, splits, info, (len(folders), train_dir, "class folders"))


# --------------------------------------------------------------------------------------------- DTD
def _layout_args(req) -> tuple[str, int]:
    layout, k = req.opt("layout", "auto"), req.opt("partition", 1)
    if layout not in ("auto", "official", "folders"):
        raise ValueError(f"dataset {req.name}: layout must be 'auto', 'official' or 'folders', got {layout!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 10:
        raise ValueError(f"dataset {req.name}: partition must be an integer in 1..10, got {k!r}")
    return layout, int(k)


@knots("dtd", classes=47, options=("layout", "partition", "download"), val="official",
       layout="DTD layout of torchvision DTD <root>/dtd/dtd/images/<class>/*.jpg + <root>/dtd/dtd/labels/"
              "{train1,val1,test1}.txt (the release extracted into <root>/dtd/) or <root>/dtd/{train,val,test}/"
              "<class>/*.jpg (task-vectors)",
       url="https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz; offline), or download=True")
def _dtd(req) -> Parts:
    """Labels = sorted class folders of images/ (ImageFolder order); val = the official ``val<k>.txt`` / ``val/``.
    Note: task-vectors' own DTD code evaluates on the ``val/`` folder; here "test" is ``test/``."""
    from torchvision.datasets import DTD

    layout, k = _layout_args(req)
    cands = [req.root / "dtd"] + ([req.root] if req.root.name == "dtd" else [])
    folders = first(cands, lambda c: (c / "train").is_dir()) if layout != "official" else None
    if folders is not None:
        return req.split_folders(folders)
    tv_root = first([req.root] + ([req.root.parent] if req.root.name == "dtd" else []),
                    lambda c: (c / "dtd" / "dtd" / "images").is_dir()) if layout != "folders" else None
    if tv_root is None and req.opt("download") and layout != "folders":
        tv_root = req.root if req.tv(DTD, str(req.root)) else None
    if tv_root is None:
        expected = req.root / "dtd" / ("train" if layout == "folders" else "dtd/images")
        raise req.error(f"{expected} not found" + (" (nor dtd/train/)" if layout == "auto" else ""))
    data = tv_root / "dtd" / "dtd"
    req.require(*(data / "labels" / f"{s}{k}.txt" for s in ("train", "test")))
    classes = list_dirs(data / "images")
    splits = {}
    for split in ("train", "val", "test"):
        if (data / "labels" / f"{split}{k}.txt").is_file():
            d = req.tv(DTD, str(tv_root), split=split, partition=k)
            unknown = sorted(set(d.classes) - set(classes))
            if unknown:
                raise req.error(f"{data / 'labels' / f'{split}{k}.txt'} names class(es) {unknown[:3]} without a "
                                f"folder in {data / 'images'}")
            splits[split] = ([str(p) for p in d._image_files], [classes.index(d.classes[y]) for y in d._labels])
    info = {"source": str(data), "layout": f"dtd/dtd/images/<class>/*.jpg + labels/{{train,val,test}}{k}.txt",
            "split": f"official partition {k}", "label_order": "sorted class folders"}
    return Parts(classes, splits, info, (len(classes), data / "images", "class folders"))


# --------------------------------------------------------------------------------------------- RESISC45
@knots("resisc45", classes=45, val="official",
       layout="RESISC45 layout <root>/resisc45/NWPU-RESISC45/<class>/*.jpg + <root>/resisc45/resisc45-{train,val,"
              "test}.txt (one file name per line, e.g. airplane_001.jpg)",
       url="NWPU-RESISC45.rar (Cheng et al. 2017) + https://storage.googleapis.com/remote_sensing_representations/"
           "resisc45-{train,val,test}.txt (offline)")
def _resisc45(req) -> Parts:
    """No torchvision reader. Splits of torchgeo/task-vectors: class = file name without the trailing ``_NNN``;
    the split files may also sit in ``NWPU-RESISC45/``. Samples in ImageFolder order (class, then file name)."""
    rdir = first([req.root / "resisc45", req.root], lambda c: (c / "NWPU-RESISC45").is_dir())
    req.require((rdir or req.root / "resisc45") / "NWPU-RESISC45")
    img_dir = rdir / "NWPU-RESISC45"
    classes = list_dirs(img_dir)
    splits, split_files = {}, []
    for split in ("train", "val", "test"):
        path = first([rdir / f"resisc45-{split}.txt", img_dir / f"resisc45-{split}.txt"])
        if path is None and split != "val":
            req.require(rdir / f"resisc45-{split}.txt")
        entries = []
        for line in read_lines(req.name, path) if path else ():
            fname = line.replace("\\", "/").split("/")[-1]
            c = re.sub(r"_\d+$", "", pathlib.PurePosixPath(fname).stem)
            if c not in classes:
                raise req.error(f"{path}: {fname!r} names class {c!r}, which has no folder in {img_dir}")
            entries.append((classes.index(c), fname))
        if path:
            split_files.append(str(path))
            splits[split] = ([str(img_dir / classes[y] / f) for y, f in sorted(entries)], sorted(y for y, _ in entries))
    info = {"source": str(img_dir), "layout": "resisc45/NWPU-RESISC45/<class>/*.jpg + resisc45-{train,val,test}.txt",
            "split": "official split files", "split_files": split_files, "label_order": "sorted class folders"}
    return Parts(classes, splits, info, (len(classes), img_dir, "class folders"))


# --------------------------------------------------------------------------------------------- SUN397
@knots("sun397", classes=397, options=("layout", "partition", "download"),
       layout="SUN397 layout of torchvision SUN397 <root>/SUN397/<letter>/<class>[/<sub>]/sun_*.jpg + "
              "SUN397/ClassName.txt, with Training_01.txt/Testing_01.txt (in SUN397/, SUN397/Partitions/ or "
              "<root>/Partitions/) or <root>/sun397/{train,val,test}/<class>/*.jpg (task-vectors)",
       url="https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz, Partitions.zip; offline)")
def _sun397(req) -> Parts:
    """Official: classes = ClassName.txt order (e.g. ``/a/abbey``), images found by torchvision SUN397, train /
    test = the partition files (lines like ``/a/abbey/sun_x.jpg``). Val (spec 8.2) = a cut of the test
    permutation even when a ``val/`` folder exists (``val_split="official"`` uses that folder)."""
    from torchvision.datasets import SUN397

    layout, k = _layout_args(req)
    tv_root = first([req.root] + ([req.root.parent] if req.root.name == "SUN397" else []),
                    lambda c: (c / "SUN397" / "ClassName.txt").is_file()) if layout != "folders" else None
    if tv_root is None and req.opt("download") and layout != "folders":
        tv_root = req.root  # torchvision SUN397 fetches SUN397/ below (the partition files are not part of it)
    if tv_root is None:
        folders = first([req.root / "sun397"] + ([req.root] if req.root.name == "sun397" else []),
                        lambda c: (c / "train").is_dir() and (c / "test").is_dir()) if layout != "official" else None
        if folders is not None:
            return req.split_folders(folders)
        expected = req.root / "sun397" / "train" if layout == "folders" else req.root / "SUN397" / "ClassName.txt"
        raise req.error(f"{expected} not found" + (" (nor sun397/{train,test}/)" if layout == "auto" else ""))
    sun = tv_root / "SUN397"
    d = req.tv(SUN397, str(tv_root))
    classes = [f"/{c[0]}/{c}" for c in d.classes]
    if len(set(classes)) != len(classes):
        raise req.error(f"{sun / 'ClassName.txt'} lists a class twice")
    found = {p.relative_to(sun).as_posix(): (str(p), y) for p, y in zip(d._image_files, d._labels)}
    splits, part_files = {}, []
    for split, stem in (("train", "Training"), ("test", "Testing")):
        fname = f"{stem}_{k:02d}.txt"
        path = first([sun / fname, sun / "Partitions" / fname, tv_root / "Partitions" / fname])
        if path is None:
            raise req.error(f"{sun / fname} (or Partitions/{fname}) not found")
        part_files.append(str(path))
        rels = [line.replace("\\", "/").strip("/") for line in read_lines(req.name, path)]
        missing = next((r for r in rels if r not in found), None)
        if missing is not None:
            raise req.error(f"{path}: entry {missing!r} is not an image of a class of {sun / 'ClassName.txt'}")
        splits[split] = ([found[r][0] for r in rels], [found[r][1] for r in rels])
    info = {"source": str(sun), "layout": "SUN397/<letter>/<class>[/<sub>]/*.jpg + ClassName.txt + partition files",
            "split": f"official partition {k}", "class_file": str(sun / "ClassName.txt"),
            "partition_files": part_files, "label_order": "ClassName.txt order"}
    return Parts(classes, splits, info, (len(classes), sun / "ClassName.txt", "classes"))


# --------------------------------------------------------------------------------------------- public API
KNOTS_NAMES = ("dtd", "gtsrb", "mnist", "resisc45", "sun397", "svhn")
KNOTS_EXPECTED_CLASSES = {n: REGISTRY[n].classes for n in KNOTS_NAMES}
#: name -> (expected layout, where to get it); used in every layout error message.
KNOTS_LAYOUTS = {n: (REGISTRY[n].layout, REGISTRY[n].url) for n in KNOTS_NAMES}
#: name -> loader
KNOTS_LOADERS = {n: make_loader(n) for n in KNOTS_NAMES}
#: Loader options a config may set (besides root, image_size, seed), per data set.
KNOTS_OPTIONS = {n: REGISTRY[n].options for n in KNOTS_NAMES}
load_dtd, load_gtsrb, load_mnist, load_resisc45, load_sun397, load_svhn = KNOTS_LOADERS.values()


def load_knots_dataset(name: str, root, image_size: int = 224, seed: int = 0, **options) -> dict:
    """Dispatch to ``KNOTS_LOADERS[name]``; options the loader does not know (or None) are ignored."""
    return dispatch(KNOTS_LOADERS, "KnOTS vision dataset", name, root, image_size=image_size, seed=seed, **options)


def add_val_split(ds: dict, seed: int = 0, fraction: float = VAL_FRACTION, permutation=None) -> dict:
    """A train/test Dataset dict (e.g. from load_cars196 / load_eurosat) with "val" carved out of "test" as in
    spec 8.2 (first floor(fraction N) of a seeded permutation, or of ``permutation``); returns a new dict."""
    name = ds.get("name", "dataset")
    info = dict(ds.get("info") or {})
    splits = {"test": (np.asarray(ds["test"]["images"]), list(ds["test"]["label"]))}
    files = {k: list(v) for k, v in (info.get("files") or {}).items()} if isinstance(info.get("files"), dict) else {}
    info["val_split"] = carve_val(name, splits, files, seed, fraction, permutation)
    out = {k: v for k, v in ds.items() if k not in ("test", "info")}
    out.update({s: {"images": splits[s][0], "label": splits[s][1]} for s in ("val", "test")})
    if files:
        info["files"] = files
    info["num_val"], info["num_test"] = len(out["val"]["label"]), len(out["test"]["label"])
    out["info"] = info
    out.setdefault("classnames", classnames_for(name, info.get("class_folders") or ds.get("classes", [])))
    return out


__all__ = ["CLASSNAMES", "GTSRB_CLASSNAMES", "KNOTS_EXPECTED_CLASSES", "KNOTS_EXPECTED_SIZES", "KNOTS_LAYOUTS",
           "KNOTS_LOADERS", "KNOTS_OPTIONS", "KNOTS_VAL_TEST_SIZES", "VAL_FRACTION", "VAL_SPLIT_MODES",
           "add_val_split", "classnames_for", "load_dtd", "load_gtsrb", "load_knots_dataset", "load_mnist",
           "load_resisc45", "load_sun397", "load_svhn", "permuted_val_split", "val_size"]
