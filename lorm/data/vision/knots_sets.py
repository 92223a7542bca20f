"""The KnOTS vision tasks not covered by the paper loaders (spec 8.2): DTD, GTSRB, MNIST, RESISC45, SUN397, SVHN.

Loaders as in :mod:`lorm.data.vision` (RESISC45 read by hand), plus a "val" split and the ``"classnames"`` of the
CLIP heads (:mod:`lorm.models.clip_classnames`); default ``resize_mode="center_crop"`` (the KnOTS CLIP geometry).
``val_split``: "auto" (own val split for DTD and RESISC45, else the test permutation), "official" (own val split or
DataError) or "test-permutation" (:func:`permuted_val_split` of the official test set: seeded, unless
``val_permutation`` names e.g. the official ``<ds>_shuffled_idxs.pt``). ``strict`` checks the test size before the cut.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from lorm.data.vision._common import (REGISTRY, VAL_FRACTION, Parts, carve_val, first, list_dirs, make_loaders,
                                      read_lines, register)
from lorm.data.vision._common import permuted_val_split, val_size  # noqa: F401 - re-exported (mergebench, tests)
from lorm.models.clip_classnames import classnames_for

_DIGITS = [str(d) for d in range(10)]


def knots(name: str, val: str = "test-permutation", **kwargs):
    """Register a KnOTS source: val split, CLIP-geometry resize, readable class names."""
    return register(name, resize="center_crop", val=val, classnames=classnames_for, **kwargs)


@knots("mnist", classes=10, sizes={"train": 60_000, "test": 10_000}, options=("download",),
       layout="MNIST IDX layout of torchvision MNIST <root>/MNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,"
              "t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte} (uncompressed IDX files; <root> may also be MNIST/)",
       url="https://ossci-datasets.s3.amazonaws.com/mnist/ (offline; use a mirror), or download=True")
def _mnist(req) -> Parts:
    """Train = the 60,000 official digits; val/test = a cut of the 10,000 official test digits."""
    root = req.root.parent if req.root.name == "MNIST" else req.root
    raw = root / "MNIST" / "raw"
    req.require(*(raw / f"{s}-{kind}-ubyte" for s in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")))
    sets = {s: req.tv("MNIST", str(root), train=s == "train") for s in ("train", "test")}
    splits = {s: (d.data.numpy(), d.targets.tolist()) for s, d in sets.items()}
    info = {"source": str(raw), "layout": "MNIST IDX files"}
    return Parts(_DIGITS, splits, info, raw / "train-labels-idx1-ubyte", "digit classes", len(set(splits["train"][1])))


@knots("svhn", classes=10, sizes={"train": 73_257, "test": 26_032}, options=("download",),
       layout="SVHN cropped-digits layout <root>/svhn/{train_32x32.mat,test_32x32.mat} (MATLAB v5, read by "
              "torchvision SVHN; also <root>/SVHN or <root> itself)",
       url="http://ufldl.stanford.edu/housenumbers/ (offline; use a mirror), or download=True")
def _svhn(req) -> Parts:
    """Cropped digits (label 10 = digit 0, as torchvision maps it); ``extra_32x32.mat`` is not used."""
    from torchvision.datasets import SVHN  # subclassed below

    class AnySVHN(SVHN):  # miniature copies welcome: no md5 of the official files
        def _check_integrity(self):
            return os.path.isfile(os.path.join(self.root, self.filename))

    folder = first([req.root / "svhn", req.root / "SVHN", req.root], lambda c: (c / "train_32x32.mat").is_file())
    folder = folder or req.root / "svhn"
    req.require(folder / "train_32x32.mat", folder / "test_32x32.mat")
    sets = {s: req.tv(AnySVHN, str(folder), split=s) for s in ("train", "test")}
    splits = {s: (np.ascontiguousarray(d.data.transpose(0, 2, 3, 1)), d.labels.tolist()) for s, d in sets.items()}
    info = {"source": str(folder), "layout": "SVHN cropped digits (.mat)", "label_map": "y == 10 -> 0"}
    return Parts(_DIGITS, splits, info, folder / "train_32x32.mat", "digit classes", len(set(splits["train"][1])))


@knots("gtsrb", classes=43, sizes={"test": 12_630}, options=("download",),
       layout="GTSRB torchvision layout <root>/gtsrb/{GTSRB/Training/<00000..00042>/*.ppm,GTSRB/Final_Test/Images/"
              "*.ppm,GT-final_test.csv} (csv: Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId)",
       url="https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/ (GTSRB-Training_fixed.zip, "
           "GTSRB_Final_Test_Images.zip, GTSRB_Final_Test_GT.zip; offline), or download=True")
def _gtsrb(req) -> Parts:
    """Labels = the sorted ClassId folders of Training/ (= ClassId for the complete set); test ClassIds of the csv
    are mapped to them. No ROI crop (as torchvision)."""
    base = req.root if req.root.name == "gtsrb" else req.root / "gtsrb"
    train_dir, test_dir = base / "GTSRB" / "Training", base / "GTSRB" / "Final_Test" / "Images"
    req.require(train_dir, test_dir, base / "GT-final_test.csv")
    sets = {s: req.tv("GTSRB", str(base.parent), split=s) for s in ("train", "test")}
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
            "GT-final_test.csv", "class_ids": [int(f) for f in folders], "test_csv": str(base / "GT-final_test.csv"),
            "label_order": "sorted ClassId folders", "files": files}
    return Parts(folders, splits, info, train_dir)


@knots("dtd", classes=47, options=("layout", "partition", "download"), val="official",
       layout="DTD layout of torchvision DTD <root>/dtd/dtd/{images/<class>/*.jpg,labels/{train1,val1,test1}.txt} "
              "(the release extracted into <root>/dtd/) or <root>/dtd/{train,val,test}/<class>/*.jpg (task-vectors)",
       url="https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz; offline), or download=True")
def _dtd(req) -> Parts:
    """Labels = sorted class folders of images/ (ImageFolder order); val = the official ``val<k>.txt`` / ``val/``.
    Note: task-vectors' own DTD code evaluates on the ``val/`` folder; here "test" is ``test/``."""
    layout, k = req.choice("layout", ("auto", "official", "folders")), int(req.opt("partition", 1))
    folders = req.find("dtd", test=lambda c: (c / "train").is_dir()) if layout != "official" else None
    if folders is not None:
        return req.split_folders(folders)
    base = req.find("dtd", test=lambda c: (c / "dtd" / "images").is_dir()) if layout != "folders" else None
    if base is None and req.opt("download") and layout != "folders":
        base = req.root / "dtd" if req.tv("DTD", str(req.root)) else None
    if base is None:
        expected = req.root / "dtd" / ("train" if layout == "folders" else "dtd/images")
        raise req.error(f"{expected} not found" + (" (nor dtd/train/)" if layout == "auto" else ""))
    data = base / "dtd"
    req.require(*(data / "labels" / f"{s}{k}.txt" for s in ("train", "test")))
    classes = list_dirs(data / "images")
    splits = {}
    for split in ("train", "val", "test"):
        if (data / "labels" / f"{split}{k}.txt").is_file():
            d = req.tv("DTD", str(base.parent), split=split, partition=k)
            unknown = sorted(set(d.classes) - set(classes))
            if unknown:
                raise req.error(f"{data / 'labels' / f'{split}{k}.txt'} names class(es) {unknown[:3]} without a "
                                f"folder in {data / 'images'}")
            splits[split] = ([str(p) for p in d._image_files], [classes.index(d.classes[y]) for y in d._labels])
    info = {"source": str(data), "layout": f"dtd/dtd/images/<class>/*.jpg + labels/{{train,val,test}}{k}.txt",
            "split": f"official partition {k}", "label_order": "sorted class folders"}
    return Parts(classes, splits, info, data / "images")


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
    return Parts(classes, splits, info, img_dir)


@knots("sun397", classes=397, sizes={"test": 19_850}, options=("layout", "partition", "download"),
       layout="SUN397 layout of torchvision SUN397 <root>/SUN397/<letter>/<class>[/<sub>]/sun_*.jpg + "
              "SUN397/ClassName.txt, with Training_01.txt/Testing_01.txt (in SUN397/, SUN397/Partitions/ or "
              "<root>/Partitions/) or <root>/sun397/{train,val,test}/<class>/*.jpg (task-vectors)",
       url="https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz, Partitions.zip; offline)")
def _sun397(req) -> Parts:
    """Official: classes in ClassName.txt order (``/a/abbey``), train / test = the partition files; val (spec 8.2) =
    a cut of the test permutation even when a ``val/`` folder exists (``val_split="official"`` uses that folder)."""
    layout, k = req.choice("layout", ("auto", "official", "folders")), int(req.opt("partition", 1))
    sun = req.find("SUN397", test=lambda c: (c / "ClassName.txt").is_file()) if layout != "folders" else None
    if sun is None and req.opt("download") and layout != "folders":
        sun = req.root / "SUN397"  # torchvision SUN397 fetches it (the partition files are not part of it)
    if sun is None:
        folders = req.find("sun397", test=lambda c: (c / "train").is_dir() and (c / "test").is_dir()) \
            if layout != "official" else None
        if folders is not None:
            return req.split_folders(folders)
        expected = req.root / "sun397" / "train" if layout == "folders" else req.root / "SUN397" / "ClassName.txt"
        raise req.error(f"{expected} not found" + (" (nor sun397/{train,test}/)" if layout == "auto" else ""))
    d = req.tv("SUN397", str(sun.parent))
    classes = [f"/{c[0]}/{c}" for c in d.classes]
    if len(set(classes)) != len(classes):
        raise req.error(f"{sun / 'ClassName.txt'} lists a class twice")
    found = {p.relative_to(sun).as_posix(): (str(p), y) for p, y in zip(d._image_files, d._labels)}
    splits, part_files = {}, []
    for split, stem in (("train", "Training"), ("test", "Testing")):
        fname = f"{stem}_{k:02d}.txt"
        path = first([sun / fname, sun / "Partitions" / fname, sun.parent / "Partitions" / fname])
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
    return Parts(classes, splits, info, sun / "ClassName.txt", "classes")


KNOTS_NAMES = ("dtd", "gtsrb", "mnist", "resisc45", "sun397", "svhn")
KNOTS_EXPECTED_CLASSES = {n: REGISTRY[n].classes for n in KNOTS_NAMES}
KNOTS_LOADERS, load_knots_dataset = make_loaders(KNOTS_NAMES, "KnOTS vision dataset")
load_dtd, load_gtsrb, load_mnist, load_resisc45, load_sun397, load_svhn = KNOTS_LOADERS.values()


def add_val_split(ds: dict, seed: int = 0, fraction: float = VAL_FRACTION, permutation=None) -> dict:
    """A train/test Dataset dict (e.g. from load_cars196 / load_eurosat) with "val" carved out of "test" as in
    spec 8.2 (first floor(fraction N) of a seeded permutation, or of ``permutation``); returns a new dict."""
    name, info = ds.get("name", "dataset"), dict(ds.get("info") or {})
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

