"""Class-folder data sets: ImageNet-R, ImageNet-A, EuroSAT (RGB).

Split sources, in the order tried by ``split="auto"`` (the one used is recorded in ``info["split"]``):

* ImageNet-R: Mammoth's ``imagenet-r/imagenet-r_{train,test}.yaml`` (``{"data": [".../imagenet-r/<wnid>/<f>",
  ...], "targets": [int, ...]}``; the official split AND label ids, whose order is not the sorted-wnid order);
  then ``imagenet-r/{train,test}.txt`` (one path relative to ``imagenet-r/`` per line, labels = sorted wnids);
  then a seeded 80/20 split per class.
* ImageNet-A: Mammoth's ImageFolder split ``imagenet-a/{train,test}/<wnid>/*`` (labels = sorted wnids, the
  same class folders in both); then ``{train,test}.txt``; then a seeded 80/20 split per class.
* EuroSAT: the CoOp split ``EuroSAT_RGB/split.json`` (what fed-mammoth downloads; the same Drive file as CoOp's
  ``split_zhou_EuroSAT.json``, also accepted) with ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``
  -- train and test are used, val is dropped as in the official code; labels and class names from the json.
  Without it: a seeded per-class split with the CoOp proportions (50 % train, 20 % val dropped, 30 % test),
  class order = sorted folder names.

Seeded splits depend only on (seed, class folder name, file names): see ``_common.seeded_split``.
"""

from __future__ import annotations

import json
import pathlib
import re

from lorm.data import DataError
from lorm.data.vision._common import (check_args, check_class_count, data_error, finish, list_dirs, list_images,
                                      locate, one_line, require_file, seeded_split)

FOLDER_SPLIT_FRACTIONS = (0.8, 0.2)  # ImageNet-R / ImageNet-A seeded split (train, test)
EUROSAT_SPLIT_FRACTIONS = (0.5, 0.3)  # CoOp proportions (train, test); the 20 % val share is dropped
_WNID_LINE = re.compile(r"^\s*(n\d{8})\s+(.+?)\s*$")


# --------------------------------------------------------------------------------------------- helpers
def _class_files(name: str, base: pathlib.Path, classes: list[str]) -> dict[str, list[str]]:
    files = {c: list_images(base / c) for c in classes}
    empty = [c for c, f in files.items() if not f]
    if empty:
        raise data_error(name, f"class folder(s) {', '.join(str(base / c) for c in empty[:3])} hold no images")
    return files


def _descriptions(base: pathlib.Path) -> dict[str, str]:
    """wnid -> readable name from the README.txt shipped with ImageNet-R/-A (optional)."""
    readme = base / "README.txt"
    out = {}
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _WNID_LINE.match(line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def _relative(name: str, raw: str, folder: str) -> str:
    """Path below the dataset folder: drop any prefix up to and including ``<folder>/``."""
    parts = pathlib.PurePosixPath(raw.strip().replace("\\", "/")).parts
    if folder in parts:
        parts = parts[len(parts) - 1 - parts[::-1].index(folder) + 1:]
    if len(parts) < 2:
        raise data_error(name, f"split entry {raw!r} is not <class folder>/<file>")
    return "/".join(parts)


def _read_list_file(name: str, path: pathlib.Path, folder: str) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) > 1 and re.fullmatch(r"-?\d+", tokens[-1]):  # "path label" lines: the label is ignored
            line = line.rsplit(None, 1)[0]
        out.append(_relative(name, line, folder))
    return out


def _check_listed(name: str, base: pathlib.Path, rels: dict[str, list[str]], listing: pathlib.Path):
    for split, items in rels.items():
        for rel in items:
            if not (base / rel).is_file():
                raise data_error(name, f"image {base / rel} listed in {listing} not found")
    both = set(rels["train"]) & set(rels["test"])
    if both:
        raise data_error(name, f"{len(both)} image(s) listed in both train and test split files near {listing}, "
                               f"e.g. {sorted(both)[0]}")


def _pair(name: str, base: pathlib.Path, train_name: str, test_name: str):
    """(train, test) paths when both exist, None when neither; DataError when only one does."""
    tr, te = base / train_name, base / test_name
    if tr.is_file() and te.is_file():
        return tr, te
    if tr.is_file() or te.is_file():
        missing = te if tr.is_file() else tr
        raise data_error(name, f"{missing} not found (its counterpart exists)")
    return None


def _split_from_lists(name, base, folder, pair, classes):
    rels = {split: _read_list_file(name, path, folder) for split, path in zip(("train", "test"), pair)}
    _check_listed(name, base, rels, pair[0])
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, items in rels.items():
        unknown = sorted({r.split("/")[0] for r in items} - set(index))
        if unknown:
            raise data_error(name, f"{pair[0].parent} split files name class folder(s) {unknown[:3]} missing "
                                   f"from {base}")
        out[split] = (items, [index[r.split("/")[0]] for r in items])
    return out


def _split_seeded(name, base, classes, seed, fractions):
    files = _class_files(name, base, classes)
    out = {"train": ([], []), "test": ([], [])}
    for label, c in enumerate(classes):
        try:
            train, test = seeded_split(files[c], c, seed, *fractions)
        except ValueError as exc:
            raise data_error(name, f"{base / c}: {exc}") from None
        for split, items in (("train", train), ("test", test)):
            out[split][0].extend(f"{c}/{f}" for f in items)
            out[split][1].extend([label] * len(items))
    return out


def _check_mode(name, split, allowed):
    if split not in allowed:
        raise ValueError(f"dataset {name}: split must be one of {allowed}, got {split!r}")


def _finish_folder(name, base, classes, rel_splits, info, image_size, resize_mode, progress, num_workers,
                   image_root=None):
    image_root = image_root or base
    splits = {s: ([str(image_root / r) for r in rels], labels) for s, (rels, labels) in rel_splits.items()}
    info = {**info, "source": str(base), "files": {s: list(rels) for s, (rels, _) in rel_splits.items()}}
    return finish(name, classes, splits, image_size=image_size, resize_mode=resize_mode, info=info,
                  progress=progress, num_workers=num_workers)


# --------------------------------------------------------------------------------------------- ImageNet-R
def _split_mammoth_yaml(name, base, folder, pair):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    rels, targets = {}, {}
    for split, path in zip(("train", "test"), pair):
        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.load(fh, Loader=loader)
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc}")) from None
        ok = isinstance(doc, dict) and isinstance(doc.get("data"), list) and isinstance(doc.get("targets"), list)
        if not ok or len(doc["data"]) != len(doc["targets"]):
            raise data_error(name, f"{path} must hold equally long lists 'data' (paths) and 'targets' (labels)")
        rels[split] = [_relative(name, str(p), folder) for p in doc["data"]]
        targets[split] = [int(t) for t in doc["targets"]]
    _check_listed(name, base, rels, pair[0])
    label_to_class: dict[int, str] = {}
    for split in rels:
        for rel, t in zip(rels[split], targets[split]):
            c = rel.split("/")[0]
            if label_to_class.setdefault(t, c) != c:
                raise data_error(name, f"{pair[0].parent}: label {t} is given to both {label_to_class[t]} and {c}")
    n = len(label_to_class)
    if sorted(label_to_class) != list(range(n)) or len(set(label_to_class.values())) != n:
        raise data_error(name, f"{pair[0].parent}: yaml targets must be 0..C-1, one per class folder")
    classes = [label_to_class[t] for t in range(n)]
    return classes, {s: (rels[s], targets[s]) for s in rels}


def load_imagenet_r(root, image_size: int = 224, seed: int = 0, *, split: str = "auto", strict: bool = True,
                    expected_classes: int | None = None, resize_mode: str = "stretch",
                    progress: bool | None = None, num_workers: int | None = None) -> dict:
    """ImageNet-R Dataset dict. ``split``: "auto" | "mammoth" (yaml) | "files" (txt) | "seeded" (80/20)."""
    name, folder = "imagenet-r", "imagenet-r"
    size = check_args(name, image_size, resize_mode)
    _check_mode(name, split, ("auto", "mammoth", "files", "seeded"))
    base = locate(name, root, folder)
    folders = list_dirs(base)
    check_class_count(name, len(folders), base, strict, expected_classes, what="class folders")
    yaml_pair = (_pair(name, base, "imagenet-r_train.yaml", "imagenet-r_test.yaml")
                 if split in ("auto", "mammoth") else None)
    txt_pair = _pair(name, base, "train.txt", "test.txt") if split in ("auto", "files") else None
    if split == "mammoth" and yaml_pair is None:
        raise data_error(name, f"{base / 'imagenet-r_train.yaml'} not found (split='mammoth')")
    if split == "files" and txt_pair is None:
        raise data_error(name, f"{base / 'train.txt'} not found (split='files')")
    info = {"layout": "imagenet-r/<wnid>/*", "seed": int(seed)}
    if yaml_pair is not None:
        classes, rel_splits = _split_mammoth_yaml(name, base, folder, yaml_pair)
        check_class_count(name, len(classes), yaml_pair[0], strict, expected_classes)
        info.update(split="mammoth-yaml", split_files=[str(p) for p in yaml_pair],
                    label_order="Mammoth yaml targets (not sorted wnids)")
    elif txt_pair is not None:
        classes, rel_splits = folders, _split_from_lists(name, base, folder, txt_pair, folders)
        info.update(split="split-files", split_files=[str(p) for p in txt_pair], label_order="sorted wnids")
    else:
        classes = folders
        rel_splits = _split_seeded(name, base, classes, seed, FOLDER_SPLIT_FRACTIONS)
        info.update(split=f"seeded per-class 80/20 (seed={int(seed)})", label_order="sorted wnids")
    descriptions = _descriptions(base)
    info["class_descriptions"] = [descriptions.get(c, c) for c in classes]
    return _finish_folder(name, base, classes, rel_splits, info, size, resize_mode, progress, num_workers)


# --------------------------------------------------------------------------------------------- ImageNet-A
def load_imagenet_a(root, image_size: int = 224, seed: int = 0, *, split: str = "auto", strict: bool = True,
                    expected_classes: int | None = None, resize_mode: str = "stretch",
                    progress: bool | None = None, num_workers: int | None = None) -> dict:
    """ImageNet-A Dataset dict. ``split``: "auto" | "folders" (train/ test/ ImageFolders) | "files" | "seeded"."""
    name, folder = "imagenet-a", "imagenet-a"
    size = check_args(name, image_size, resize_mode)
    _check_mode(name, split, ("auto", "folders", "files", "seeded"))
    base = locate(name, root, folder)
    has_folders = (base / "train").is_dir() and (base / "test").is_dir()
    if split == "folders" and not has_folders:
        raise data_error(name, f"{base / 'train'} and {base / 'test'} not found (split='folders')")
    info = {"layout": "imagenet-a/<wnid>/*", "seed": int(seed)}
    if has_folders and split in ("auto", "folders"):
        classes = list_dirs(base / "train")
        test_classes = list_dirs(base / "test")
        if classes != test_classes:
            diff = sorted(set(classes) ^ set(test_classes))
            raise data_error(name, f"{base / 'train'} and {base / 'test'} hold different class folders "
                                   f"(e.g. {diff[:3]}), so ImageFolder labels would disagree")
        check_class_count(name, len(classes), base / "train", strict, expected_classes, what="class folders")
        rel_splits = {}
        for s in ("train", "test"):
            files = _class_files(name, base / s, classes)
            rel_splits[s] = ([f"{s}/{c}/{f}" for c in classes for f in files[c]],
                             [i for i, c in enumerate(classes) for _ in files[c]])
        info.update(layout="imagenet-a/{train,test}/<wnid>/*", split="mammoth-imagefolder",
                    label_order="sorted wnids")
    else:
        classes = list_dirs(base, exclude=("train", "test") if has_folders else ())
        check_class_count(name, len(classes), base, strict, expected_classes, what="class folders")
        txt_pair = _pair(name, base, "train.txt", "test.txt") if split in ("auto", "files") else None
        if split == "files" and txt_pair is None:
            raise data_error(name, f"{base / 'train.txt'} not found (split='files')")
        if txt_pair is not None:
            rel_splits = _split_from_lists(name, base, folder, txt_pair, classes)
            info.update(split="split-files", split_files=[str(p) for p in txt_pair], label_order="sorted wnids")
        else:
            rel_splits = _split_seeded(name, base, classes, seed, FOLDER_SPLIT_FRACTIONS)
            info.update(split=f"seeded per-class 80/20 (seed={int(seed)})", label_order="sorted wnids")
    descriptions = _descriptions(base)
    info["class_descriptions"] = [descriptions.get(c, c) for c in classes]
    return _finish_folder(name, base, classes, rel_splits, info, size, resize_mode, progress, num_workers)


# --------------------------------------------------------------------------------------------- EuroSAT
def _eurosat_dir(name, root) -> pathlib.Path:
    return locate(name, root, "EuroSAT_RGB", alternatives=("2750", "eurosat/2750", "eurosat/EuroSAT_RGB"))


def _split_coop_json(name, base, path):
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(one_line(f"dataset {name}: cannot read {path}: {exc}")) from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(s), list) for s in ("train", "test")):
        raise data_error(name, f"{path} must hold lists 'train' and 'test' of [relpath, label, classname]")
    rels, labels, label_to_name = {}, {}, {}
    for split in ("train", "test"):
        rels[split], labels[split] = [], []
        for entry in doc[split]:
            if not (isinstance(entry, (list, tuple)) and len(entry) >= 3):
                raise data_error(name, f"{path}: {split} entry {entry!r} is not [relpath, label, classname]")
            rel, label, cname = _relative(name, str(entry[0]), base.name), int(entry[1]), str(entry[2])
            if label_to_name.setdefault(label, cname) != cname:
                raise data_error(name, f"{path}: label {label} is named both {label_to_name[label]!r} and {cname!r}")
            rels[split].append(rel)
            labels[split].append(label)
    _check_listed(name, base, rels, path)
    n = len(label_to_name)
    if sorted(label_to_name) != list(range(n)):
        raise data_error(name, f"{path}: labels must be 0..C-1")
    folders = {}
    for split in rels:
        for rel, label in zip(rels[split], labels[split]):
            folders.setdefault(label, rel.split("/")[0])
    classes = [label_to_name[t] for t in range(n)]
    return classes, {s: (rels[s], labels[s]) for s in rels}, len(doc.get("val") or []), [folders[t] for t in range(n)]


def load_eurosat(root, image_size: int = 224, seed: int = 0, *, split: str = "auto", strict: bool = True,
                 expected_classes: int | None = None, resize_mode: str = "stretch",
                 progress: bool | None = None, num_workers: int | None = None) -> dict:
    """EuroSAT (RGB, 64x64) Dataset dict. ``split``: "auto" | "json" (CoOp split file) | "seeded"."""
    name = "eurosat"
    size = check_args(name, image_size, resize_mode)
    _check_mode(name, split, ("auto", "json", "seeded"))
    base = _eurosat_dir(name, root)
    folders = list_dirs(base)
    check_class_count(name, len(folders), base, strict, expected_classes, what="class folders")
    json_path = None
    if split in ("auto", "json"):
        for cand in (base / "split.json", base / "split_zhou_EuroSAT.json", base.parent / "split_zhou_EuroSAT.json"):
            if cand.is_file():
                json_path = cand
                break
        if split == "json" and json_path is None:
            raise data_error(name, f"{base / 'split.json'} not found (split='json')")
    info = {"layout": f"{base.name}/<ClassName>/*.jpg", "seed": int(seed)}
    if json_path is not None:
        classes, rel_splits, n_val, class_folders = _split_coop_json(name, base, require_file(name, json_path))
        check_class_count(name, len(classes), json_path, strict, expected_classes)
        info.update(split="coop-json (train/test; val dropped)", split_files=[str(json_path)],
                    val_dropped=n_val, class_folders=class_folders, label_order="json labels")
    else:
        classes = folders
        rel_splits = _split_seeded(name, base, classes, seed, EUROSAT_SPLIT_FRACTIONS)
        info.update(split=f"seeded per-class 50/20/30 train/val(dropped)/test (seed={int(seed)})",
                    class_folders=list(folders), label_order="sorted folder names")
    return _finish_folder(name, base, classes, rel_splits, info, size, resize_mode, progress, num_workers)
