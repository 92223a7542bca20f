"""Sources of the six data sets of the paper (CIFAR-100, ImageNet-R/-A, EuroSAT, CUB-200, Cars-196).

Read by ``torchvision.datasets`` (CUB-200-2011 by hand); the optional split files (Mammoth's ImageNet-R yaml,
``{train,test}.txt``, the CoOp EuroSAT json) or a seeded per-class split are applied to the sample lists.
"""

from __future__ import annotations

import importlib
import json
import math
import pathlib
import pickle
import re
import zlib

import numpy as np

from lorm.data.vision._common import Parts, first, one_line, read_error, read_lines, register

#: What a CIFAR pickle may load (old pickles name numpy.core, which numpy >= 2 keeps in numpy._core).
_ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        new = "numpy._core" + module[len("numpy.core"):] if module.startswith("numpy.core") else module
        if (new, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        return getattr(importlib.import_module(new), name)


def _safe_pickle(path):
    try:
        with open(path, "rb") as fh:
            return _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise read_error("cifar100", path, exc) from None


def _under(req, *names: str, marker: str = "") -> pathlib.Path:
    """``root/<name>`` of the first of ``names`` holding ``marker``, or the root itself when it is named so."""
    found = req.find(*names, test=lambda c: (c / marker).exists())
    if found is None:
        raise req.error(f"{req.root / names[0] / marker} not found".replace("/ not found", " not found"))
    return found


@register("cifar100", classes=100, sizes={"train": 50_000, "test": 10_000}, options=("download",),
          layout="CIFAR-100 python layout <root>/cifar-100-python/{train,test,meta} (read by torchvision CIFAR100)",
          url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, or download=True")
def _cifar100(req) -> Parts:
    from torchvision.datasets import CIFAR100  # subclassed below

    checked = set()

    class SafeCIFAR100(CIFAR100):
        """Miniature copies welcome (no md5 of the official files), code in a pickle never run."""

        def _check_integrity(self):
            files = [pathlib.Path(self.root, self.base_folder, f) for f, _ in self.train_list + self.test_list]
            if not all(p.is_file() for p in files):
                return False
            for p in set(files) - checked:
                _safe_pickle(p)
                checked.add(p)
            return True

        def _load_meta(self):
            meta = _safe_pickle(pathlib.Path(self.root, self.base_folder, self.meta["filename"]))
            meta = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in meta.items()}
            self.classes = [str(c) for c in meta[self.meta["key"]]]

    base = req.root / "cifar-100-python" if req.root.name != "cifar-100-python" else req.root
    req.require(base / "meta", base / "train", base / "test")
    sets = {s: req.tv(SafeCIFAR100, str(base.parent), train=s == "train") for s in ("train", "test")}
    splits = {s: (np.ascontiguousarray(d.data), list(d.targets)) for s, d in sets.items()}
    info = {"source": str(base), "layout": "cifar-100-python pickles", "split": "official train/test"}
    return Parts(sets["train"].classes, splits, info, base / "meta", "classes")


def _from_lists(req, base, rows: dict, listing, classes=None):
    """(classes, {split: (paths, labels)}) of split-file rows ``{split: [(path, label)]}``; paths may carry any
    prefix up to ``<base name>/``. With ``classes`` (the class folders) the label is the folder's index, else the
    rows' labels must be 0..C-1, one class folder each. Every file must exist, none be in both splits."""
    def rel(raw) -> str:
        parts = pathlib.PurePosixPath(str(raw).strip().replace("\\", "/")).parts
        parts = parts[len(parts) - parts[::-1].index(base.name):] if base.name in parts else parts
        if len(parts) < 2:
            raise req.error(f"split entry {raw!r} in {listing} is not <class folder>/<file>")
        return "/".join(parts)

    rels = {split: [rel(raw) for raw, _ in items] for split, items in rows.items()}
    pairs = [(rel.split("/")[0], t) for s in rows for rel, (_, t) in zip(rels[s], rows[s])]
    if classes is not None:
        unknown = sorted({c for c, _ in pairs} - set(classes))
        if unknown:
            raise req.error(f"{listing} names class folder(s) {unknown[:3]} missing from {base}")
        labels = {s: [classes.index(r.split("/")[0]) for r in rels[s]] for s in rels}
    else:
        owner = {}
        for c, t in pairs:
            if owner.setdefault(t, c) != c:
                raise req.error(f"{listing}: label {t} is given to both {owner[t]} and {c}")
        if sorted(owner) != list(range(len(owner))):
            raise req.error(f"{listing}: labels must be 0..C-1, one per class folder")
        classes, labels = [owner[t] for t in range(len(owner))], {s: [t for _, t in rows[s]] for s in rows}
    missing = next((base / r for items in rels.values() for r in items if not (base / r).is_file()), None)
    if missing is not None:
        raise req.error(f"image {missing} listed in {listing} not found")
    both = set(rels["train"]) & set(rels["test"])
    if both:
        raise req.error(f"{len(both)} image(s) listed in both train and test of {listing}, e.g. {sorted(both)[0]}")
    return classes, {s: ([str(base / r) for r in rels[s]], labels[s]) for s in rels}


def _txt_rows(req, path) -> list:
    """Lines "<path>" or "<path> <label>" (the label is ignored: the class folder gives it)."""
    return [(line.rsplit(None, 1)[0] if re.fullmatch(r".+\s-?\d+", line) else line, None)
            for line in read_lines(req.name, path)]


def _yaml_rows(req, path) -> list:
    """Mammoth's ``{"data": [paths], "targets": [labels]}``."""
    import yaml

    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return list(zip(doc["data"], (int(t) for t in doc["targets"]), strict=True))
    except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
        raise req.error(f"{path} must hold equally long lists 'data' (paths) and 'targets' (labels) "
                        f"({one_line(exc)})") from None


def _seeded(req, classes, paths, labels, fractions) -> dict:
    """Per-class (train, test) split of the ImageFolder samples in sorted file order: ``default_rng([seed, crc32(class
    folder)])`` permutes a class's sorted files; sizes round half up, at least one image each, the rest is dropped."""
    out = {"train": ([], []), "test": ([], [])}
    for label, c in enumerate(classes):
        own = sorted(pathlib.Path(p) for p, y in zip(paths, labels) if y == label)
        n = len(own)
        if n < 2:
            raise req.error(f"{own[0].parent}: class {c!r} has {n} image(s); a train/test split needs at least 2")
        n_test = max(1, math.floor(n * fractions[1] + 0.5))
        n_train = min(max(1, math.floor(n * fractions[0] + 0.5)), n - n_test)
        perm = np.random.default_rng([req.seed, zlib.crc32(c.encode("utf-8"))]).permutation(n)
        for split, idx in (("train", perm[n_test:n_test + n_train]), ("test", perm[:n_test])):
            out[split][0].extend(str(own[i]) for i in sorted(idx))
            out[split][1].extend([label] * len(idx))
    return out


def _descriptions(base: pathlib.Path, classes) -> list[str]:
    """wnid -> readable name from the README.txt shipped with ImageNet-R/-A (optional)."""
    lines = read_lines("imagenet", base / "README.txt") if (base / "README.txt").is_file() else []
    names = dict(m.groups() for m in (re.match(r"^(n\d{8})\s+(.+?)$", x) for x in lines) if m)
    return [names.get(c, c) for c in classes]


_SPLIT_FILES = {"mammoth": ("imagenet-r_train.yaml", "imagenet-r_test.yaml"), "files": ("train.txt", "test.txt")}
_SPLIT_MODES = {"imagenet-r": ("auto", "mammoth", "files", "seeded"),
                "imagenet-a": ("auto", "folders", "files", "seeded")}


def _imagenet(req) -> Parts:
    """Class folders (ImageFolder, labels = sorted wnids); split: ImageNet-A's {train,test}/ folders, Mammoth's
    ImageNet-R yaml (which defines the labels), {train,test}.txt, or a seeded per-class 80/20 split."""
    modes = _SPLIT_MODES[req.name]
    mode = req.choice("split", modes)
    base = _under(req, req.name)
    info = {"source": str(base), "layout": f"{req.name}/<wnid>/*", "label_order": "sorted wnids"}
    has_folders = "folders" in modes and (base / "train").is_dir() and (base / "test").is_dir()
    if mode == "folders" and not has_folders:
        raise req.error(f"{base / 'train'} and {base / 'test'} not found (split='folders')")
    if has_folders and mode in ("auto", "folders"):
        parts = req.split_folders(base, split="mammoth-imagefolder", label_order="sorted wnids")
        parts.info["class_descriptions"] = _descriptions(base, parts.classes)
        return parts
    classes, paths, labels = req.image_folder(base)
    found = len(classes)
    for kind in (k for k in ("mammoth", "files") if k in modes and mode in ("auto", k)):
        pair = [base / f for f in _SPLIT_FILES[kind]]  # train and test split files: both or neither
        if pair[0].is_file() != pair[1].is_file():
            raise req.error(f"{pair[0] if pair[1].is_file() else pair[1]} not found (its counterpart exists)")
        if not pair[0].is_file() and mode == kind:
            raise req.error(f"{pair[0]} not found (split={mode!r})")
        if pair[0].is_file():
            reader, known = (_yaml_rows, None) if kind == "mammoth" else (_txt_rows, classes)
            rows = {split: reader(req, path) for split, path in zip(("train", "test"), pair)}
            classes, splits = _from_lists(req, base, rows, pair[0], known)
            info.update(split="mammoth-yaml" if kind == "mammoth" else "split-files",
                        label_order="Mammoth yaml targets (not sorted wnids)" if kind == "mammoth" else "sorted wnids")
            info["split_files"] = [str(p) for p in pair]
            break
    else:
        splits = _seeded(req, classes, paths, labels, (0.8, 0.2))
        info["split"] = f"seeded per-class 80/20 (seed={req.seed})"
    info["class_descriptions"] = _descriptions(base, classes)
    return Parts(classes, splits, info, base, found=found)


register("imagenet-r", classes=200, options=("split",),
         layout="ImageNet-R layout <root>/imagenet-r/<wnid>/*.jpg (200 class folders, read by torchvision "
                "ImageFolder; optional split files imagenet-r_{train,test}.yaml of Mammoth or {train,test}.txt)",
         url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar")(_imagenet)
register("imagenet-a", classes=200, options=("split",),
         layout="ImageNet-A layout <root>/imagenet-a/<wnid>/*.jpg (200 class folders) or <root>/imagenet-a/"
                "{train,test}/<wnid>/*.jpg (torchvision ImageFolder; optional split files {train,test}.txt)",
         url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar")(_imagenet)


@register("eurosat", classes=10, options=("split", "download"),
          layout="EuroSAT RGB layout <root>/EuroSAT_RGB/<ClassName>/*.jpg or torchvision's <root>/eurosat/2750/ (10 "
                 "class folders, ImageFolder; optional CoOp split EuroSAT_RGB/split.json or split_zhou_EuroSAT.json)",
          url="https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip, or download=True (torchvision EuroSAT)")
def _eurosat(req) -> Parts:
    mode = req.choice("split", ("auto", "json", "seeded"))
    if req.opt("download") and not any((req.root / d).is_dir() for d in ("EuroSAT_RGB", "eurosat/2750")):
        req.tv("EuroSAT", str(req.root))
    base = _under(req, "EuroSAT_RGB", "eurosat/2750", "2750", "eurosat/EuroSAT_RGB")
    folders, paths, labels = req.image_folder(base)
    cands = (base / "split.json", base / "split_zhou_EuroSAT.json", base.parent / "split_zhou_EuroSAT.json")
    json_path = first(cands) if mode in ("auto", "json") else None
    if mode == "json" and json_path is None:
        raise req.error(f"{base / 'split.json'} not found (split='json')")
    info = {"source": str(base), "layout": f"{base.name}/<ClassName>/*.jpg"}
    if json_path is None:
        splits = _seeded(req, folders, paths, labels, (0.5, 0.3))  # CoOp proportions; the 20 % val is dropped
        info.update(split=f"seeded per-class 50/20/30 train/val(dropped)/test (seed={req.seed})",
                    class_folders=folders, label_order="sorted folder names")
        return Parts(folders, splits, info, base)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        rows = {s: [(str(e[0]), int(e[1]), str(e[2])) for e in doc[s]] for s in ("train", "test")}
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise req.error(f"{json_path} must hold lists 'train' and 'test' of [relpath, label, classname] "
                        f"({one_line(exc)})") from None
    class_folders, splits = _from_lists(req, base, {s: [r[:2] for r in v] for s, v in rows.items()}, json_path)
    names = {t: n for v in rows.values() for _, t, n in v}
    classes = [names[t] for t in range(len(names))]
    info.update(split="coop-json (train/test; val dropped)", split_files=[str(json_path)], label_order="json labels",
                val_dropped=len(doc.get("val") or []), class_folders=class_folders)
    return Parts(classes, splits, info, base, found=len(folders))


def _id_table(req, path, as_int=True) -> dict:
    out = {}
    for line in read_lines(req.name, path):
        key, _, value = line.partition(" ")
        try:
            out[int(key)] = int(value) if as_int else value.strip()
        except ValueError:
            raise req.error(f"{path} line {line[:60]!r} is not '<id> <value>'") from None
    return out


@register("cub200", classes=200, sizes={"train": 5_994, "test": 5_794}, options=("cub_int8_wrap",),
          layout="CUB-200-2011 layout <root>/CUB_200_2011/{images.txt,image_class_labels.txt,train_test_split.txt,"
                 "classes.txt,images/<class>/<file>.jpg}", url="https://www.vision.caltech.edu/datasets/cub_200_2011/")
def _cub200(req) -> Parts:
    """No torchvision reader: the txt files (1-based labels, 1 = train) in image-id order. ``cub_int8_wrap`` (spec
    Q5) applies the official loader's int8 cast, (256 - x) mod 256, to the decoded uint8 images."""
    base = _under(req, "CUB_200_2011", marker="images.txt")
    names = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    req.require(*(base / n for n in names))
    paths, labels, is_train, class_names = (_id_table(req, base / n, n != "images.txt" and n != "classes.txt")
                                            for n in names)
    if sorted(class_names) != list(range(1, len(class_names) + 1)):
        raise req.error(f"{base / 'classes.txt'}: class ids must be 1..C")
    if labels.keys() != paths.keys() or is_train.keys() != paths.keys():
        raise req.error(f"{base} image_class_labels.txt / train_test_split.txt and images.txt list different ids")
    splits = {"train": ([], []), "test": ([], [])}
    for image_id in sorted(paths):
        path = base / "images" / paths[image_id]
        if not path.is_file():
            raise req.error(f"image {path} listed in {base / 'images.txt'} not found")
        split = splits["train" if is_train[image_id] == 1 else "test"]
        split[0].append(str(path))
        split[1].append(labels[image_id] - 1)
    wrap = bool(req.opt("cub_int8_wrap", False))
    info = {"source": str(base), "layout": "CUB_200_2011 txt files + images/", "cub_int8_wrap": wrap,
            "split": "official train_test_split.txt"}
    return Parts([class_names[c] for c in sorted(class_names)], splits, info, base / "classes.txt", "classes",
                 postprocess=(lambda x: np.negative(x, out=x)) if wrap else None)


@register("cars196", classes=196, sizes={"train": 8_144, "test": 8_041}, resize="center_crop",
          layout="Stanford Cars layout of torchvision StanfordCars <root>/stanford_cars/{cars_train/*.jpg,"
                 "cars_test/*.jpg,devkit/cars_train_annos.mat,devkit/cars_meta.mat,cars_test_annos_withlabels.mat} "
                 "(needs scipy)", url="https://ai.stanford.edu/~jkrause/cars/car_dataset.html (offline; use a mirror)")
def _cars196(req) -> Parts:
    """Official devkit split; centre crop by default (fed-mammoth ``seq-cars``); bounding boxes unused."""
    base = req.root if req.root.name == "stanford_cars" else req.root / "stanford_cars"
    req.require(base / "devkit" / "cars_meta.mat", base / "devkit" / "cars_train_annos.mat", base / "cars_train",
                base / "cars_test_annos_withlabels.mat", base / "cars_test")
    sets = {s: req.tv("StanfordCars", str(base.parent), split=s) for s in ("train", "test")}
    splits = {s: ([p for p, _ in d._samples], [int(y) for _, y in d._samples]) for s, d in sets.items()}
    info = {"source": str(base), "layout": "Stanford Cars devkit (.mat annotations)", "split": "official devkit"}
    return Parts(sets["train"].classes, splits, info, base / "devkit" / "cars_meta.mat", "classes")
