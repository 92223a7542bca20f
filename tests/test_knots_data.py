"""Loaders of the KnOTS vision tasks (DTD, GTSRB, MNIST, RESISC45, SUN397, SVHN) on miniature copies fabricated in
each real on-disk format (IDX, MATLAB v5 .mat, .ppm + ';' csv, split .txt files, class folders). Nothing is
downloaded."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from lorm.data import DataError
from lorm.data.vision.knots_sets import (KNOTS_EXPECTED_CLASSES, KNOTS_LOADERS, add_val_split, load_dtd, load_gtsrb,
                                         load_knots_dataset, load_mnist, load_resisc45, load_sun397, load_svhn,
                                         permuted_val_split, val_size)
from lorm.models.clip_classnames import CLASSNAMES, GTSRB_CLASSNAMES, classnames_for

S = 16  # working resolution of the loader tests
#: Expected (val, test) sizes after the default 20 % split, spec 8.2 table.
KNOTS_VAL_TEST_SIZES = {"gtsrb": (2_526, 10_104), "mnist": (2_000, 8_000), "sun397": (3_970, 15_880),
                        "svhn": (5_206, 20_826), "cars196": (1_608, 6_433)}


# --------------------------------------------------------------------------------------------- helpers
def _image(path: pathlib.Path, seed: int, size=(20, 24), fmt=None) -> np.ndarray:
    """A random smooth-ish RGB image (w, h) = size at ``path`` (format from the suffix); returns its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
    img.save(path, format=fmt, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return np.asarray(img)


def _assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def _check(ds: dict, name: str, n: dict, size: int = S) -> None:
    assert ds["name"] == name and ds["modality"] == "image"
    assert len(ds["classnames"]) == len(ds["classes"])
    for split in ("train", "val", "test"):
        imgs, labels = ds[split]["images"], ds[split]["label"]
        assert imgs.dtype == np.uint8 and imgs.shape == (n[split], size, size, 3), (split, imgs.shape)
        assert len(labels) == n[split] and all(isinstance(y, int) for y in labels)
        assert all(0 <= y < len(ds["classes"]) for y in labels)
        assert ds["info"][f"num_{split}"] == n[split]
    json.dumps(ds["info"])  # JSON-serialisable (save_dataset writes it as the npz header)


def _check_permuted(ds: dict, official_labels: list[int], seed: int) -> None:
    """val = first floor(0.2 N) of default_rng(seed).permutation(N) of the official test set, test = the rest."""
    n = len(official_labels)
    perm = np.random.default_rng(seed).permutation(n)
    k = n // 5
    vs = ds["info"]["val_split"]
    assert vs["method"] == "test-permutation" and vs["official_test_size"] == n and vs["seed"] == seed
    assert vs["val_index"] == perm[:k].tolist() and vs["test_index"] == perm[k:].tolist()
    assert ds["val"]["label"] == [official_labels[i] for i in perm[:k]]
    assert ds["test"]["label"] == [official_labels[i] for i in perm[k:]]


def _idx(path: pathlib.Path, arr: np.ndarray, magic: int | None = None) -> None:
    """Write ``arr`` (uint8) as an IDX file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = (0x0800 | arr.ndim) if magic is None else magic
    data = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    path.write_bytes(data)


# --------------------------------------------------------------------------------------------- split helper
def test_val_size_and_permutation_split_match_the_spec():
    for name, (n_val, n_test) in KNOTS_VAL_TEST_SIZES.items():
        assert val_size(n_val + n_test) == n_val, name
    assert val_size(26_032) == 5_206 and val_size(12_630) == 2_526 and val_size(9) == 1
    val, test, how = permuted_val_split(50, seed=7)
    perm = np.random.default_rng(7).permutation(50)
    assert val.tolist() == perm[:10].tolist() and test.tolist() == perm[10:].tolist()
    assert "default_rng(7)" in how and "NOT the official" in how
    val2, _, _ = permuted_val_split(50, seed=8)
    assert val2.tolist() != val.tolist()
    given = np.arange(10)[::-1].copy()
    val, test, _ = permuted_val_split(10, permutation=given)
    assert val.tolist() == [9, 8] and test.tolist() == list(range(7, -1, -1))
    with pytest.raises(DataError) as exc:
        permuted_val_split(10, permutation=np.arange(9))
    _assert_one_line(exc, "permutation of 0..9")


def test_add_val_split_for_cars_and_eurosat_dicts():
    ds = {"name": "eurosat", "modality": "image", "classes": ["Forest", "River"],
          "train": {"images": np.zeros((2, S, S, 3), np.uint8), "label": [0, 1]},
          "test": {"images": np.arange(11, dtype=np.uint8)[:, None, None, None] * np.ones((1, S, S, 3), np.uint8),
                   "label": [k % 2 for k in range(11)]},
          "info": {"class_folders": ["Forest", "River"], "files": {"test": [f"f{k}" for k in range(11)]}}}
    out = add_val_split(ds, seed=3)
    perm = np.random.default_rng(3).permutation(11)
    assert out["val"]["label"] == [int(k % 2) for k in perm[:2]] and len(out["test"]["label"]) == 9
    assert out["val"]["images"][:, 0, 0, 0].tolist() == perm[:2].tolist()  # pixels follow their labels
    assert out["info"]["files"]["val"] == [f"f{k}" for k in perm[:2]]
    assert out["classnames"] == ["forest", "river"] and "val" not in ds and len(ds["test"]["label"]) == 11


# --------------------------------------------------------------------------------------------- MNIST
def _fake_mnist(root: pathlib.Path) -> dict:
    raw = root / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    out = {}
    for prefix, labels in (("train", [d for d in range(10) for _ in range(2)]), ("t10k", [3, 1, 4, 1, 5, 9, 2, 6,
                                                                                          5, 3, 5, 8])):
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)  # uncompressed, as torchvision MNIST reads them
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.array(labels, dtype=np.uint8))
        out[prefix] = (images, labels)
    return out


def test_mnist_idx_files_and_permuted_val(tmp_path):
    raw = _fake_mnist(tmp_path)
    ds = load_mnist(tmp_path, image_size=28, seed=1, strict=False)
    _check(ds, "mnist", {"train": 20, "val": 2, "test": 10}, size=28)
    assert ds["classes"] == [str(d) for d in range(10)] and ds["classnames"] == CLASSNAMES["mnist"]
    assert ds["train"]["label"] == raw["train"][1]
    assert np.array_equal(ds["train"]["images"][:, :, :, 1], raw["train"][0])  # grey -> 3 equal channels
    assert np.array_equal(ds["train"]["images"][..., 0], ds["train"]["images"][..., 2])
    _check_permuted(ds, raw["t10k"][1], seed=1)
    perm = np.random.default_rng(1).permutation(12)
    assert np.array_equal(ds["val"]["images"][..., 0], raw["t10k"][0][perm[:2]])
    again = load_mnist(tmp_path / "MNIST", image_size=S, seed=1, strict=False)  # root may be MNIST/ itself
    _check(again, "mnist", {"train": 20, "val": 2, "test": 10})
    assert again["info"]["val_split"]["val_index"] == ds["info"]["val_split"]["val_index"]
    others = [load_mnist(tmp_path, image_size=S, seed=s, strict=False)["info"]["val_split"] for s in (2, 3, 4)]
    assert any(o["val_index"] != ds["info"]["val_split"]["val_index"] for o in others)


def test_mnist_strict_malformed_and_missing(tmp_path):
    _fake_mnist(tmp_path)
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, image_size=S)  # strict: 60,000 training digits
    _assert_one_line(exc, "holds 20 train images, expected 60000", "strict=False")
    raw = tmp_path / "MNIST" / "raw"
    _idx(raw / "t10k-labels-idx1-ubyte", np.zeros(12, np.uint8), magic=0x0803)  # image magic on a label file
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, "torchvision MNIST cannot read", str(tmp_path))
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(raw / "t10k-labels-idx1-ubyte"), "not found", "MNIST IDX layout", "download:")


# --------------------------------------------------------------------------------------------- SVHN
def _fake_svhn(root: pathlib.Path) -> dict:
    sio = pytest.importorskip("scipy.io")
    folder = root / "svhn"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for split, digits in (("train", [10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1]), ("test", [10, 2, 2, 7, 1, 9, 3, 10, 5,
                                                                                         4, 6, 8, 1, 1, 2])):
        x = rng.integers(0, 256, (32, 32, 3, len(digits)), dtype=np.uint8)
        sio.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": np.array(digits, dtype=np.uint8)[:, None]})
        out[split] = (x, [0 if d == 10 else d for d in digits])
    return out


def test_svhn_mat_files(tmp_path):
    raw = _fake_svhn(tmp_path)
    ds = load_svhn(tmp_path, image_size=32, seed=5, strict=False)
    _check(ds, "svhn", {"train": 12, "val": 3, "test": 12}, size=32)
    assert ds["train"]["label"] == raw["train"][1] and ds["train"]["label"][0] == 0  # 10 -> digit 0
    assert np.array_equal(ds["train"]["images"][4], raw["train"][0][:, :, :, 4])  # (32,32,3,N) -> (N,32,32,3)
    _check_permuted(ds, raw["test"][1], seed=5)
    assert ds["classnames"] == [str(d) for d in range(10)]
    small = load_svhn(tmp_path / "svhn", image_size=S, seed=5, strict=False, resize_mode="stretch")
    _check(small, "svhn", {"train": 12, "val": 3, "test": 12})
    with pytest.raises(DataError) as exc:
        load_svhn(tmp_path, image_size=S)
    _assert_one_line(exc, "expected 73257")
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    with pytest.raises(DataError) as exc:
        load_svhn(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(tmp_path / "svhn" / "test_32x32.mat"), "SVHN cropped-digits layout")


# --------------------------------------------------------------------------------------------- GTSRB
GTSRB_IDS = ["00000", "00001", "00014"]


def _fake_gtsrb(root: pathlib.Path) -> list[int]:
    g = root / "gtsrb" / "GTSRB"
    for c_i, c in enumerate(GTSRB_IDS):
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for j in range(2):
            fname = f"00000_{j:05d}.ppm"
            _image(g / "Training" / c / fname, seed=10 * c_i + j, size=(30 + j, 29), fmt="PPM")
            rows.append(f"{fname};{30 + j};29;5;5;25;24;{int(c)}")
        (g / "Training" / c / f"GT-{c}.csv").write_text("\n".join(rows) + "\n")
    class_ids = [14, 0, 1, 14, 1, 0, 0, 14, 1, 14, 0]
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for k, cid in enumerate(class_ids):
        fname = f"{k:05d}.ppm"
        _image(g / "Final_Test" / "Images" / fname, seed=100 + k, size=(40, 33), fmt="PPM")
        rows.append(f"{fname};40;33;5;5;35;28;{cid}")
    (root / "gtsrb" / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return [GTSRB_IDS.index(f"{cid:05d}") for cid in class_ids]


def test_gtsrb_ppm_folders_csv_and_permuted_val(tmp_path):
    official = _fake_gtsrb(tmp_path)
    ds = load_gtsrb(tmp_path, image_size=S, seed=2, strict=False)
    _check(ds, "gtsrb", {"train": 6, "val": 2, "test": 9})
    assert ds["classes"] == GTSRB_IDS and ds["info"]["class_ids"] == [0, 1, 14]
    assert ds["classnames"] == [GTSRB_CLASSNAMES[0], GTSRB_CLASSNAMES[1], "stop"]
    assert ds["train"]["label"] == [0, 0, 1, 1, 2, 2]
    _check_permuted(ds, official, seed=2)
    perm = np.random.default_rng(2).permutation(11)
    assert ds["info"]["files"]["val"] == [f"{k:05d}.ppm" for k in perm[:2]]
    with Image.open(tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / f"{perm[0]:05d}.ppm") as im:
        # 40 x 33 -> 19 x 16 (int(16 * 40 / 33)), left = round(1.5) = 2
        expect = np.asarray(im.convert("RGB").resize((19, S), Image.BICUBIC).crop((2, 0, 18, S)))
    assert np.array_equal(ds["val"]["images"][0], expect)  # CLIP geometry: shorter side to S, centre crop
    assert len(GTSRB_CLASSNAMES) == 43 == KNOTS_EXPECTED_CLASSES["gtsrb"]
    with pytest.raises(DataError) as exc:
        load_gtsrb(tmp_path, image_size=S)
    _assert_one_line(exc, "found 3 class folders", "expected 43")
    assert len(load_gtsrb(tmp_path, image_size=S, expected_classes=3)["classes"]) == 3  # explicit count, no sizes
    csv_path = tmp_path / "gtsrb" / "GT-final_test.csv"
    csv_path.write_text(csv_path.read_text().replace(";14\n", ";15\n", 1))
    with pytest.raises(DataError) as exc:
        load_gtsrb(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, "ClassId 15 has no class folder")
    csv_path.unlink()
    with pytest.raises(DataError) as exc:
        load_gtsrb(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(csv_path), "not found", "GTSRB torchvision layout")


# --------------------------------------------------------------------------------------------- DTD
DTD = ["banded", "polka-dotted", "zigzagged"]


def _fake_dtd_official(root: pathlib.Path, with_val: bool = True) -> None:
    base = root / "dtd" / "dtd"  # the release extracted into <root>/dtd/, as torchvision DTD reads it
    for c_i, c in enumerate(DTD):
        for j in range(1, 5):
            _image(base / "images" / c / f"{c}_{j:04d}.jpg", seed=10 * c_i + j, size=(24, 20))
    (base / "labels").mkdir()
    for split, js in (("train", (1, 2)), ("val", (3,)), ("test", (4,))):
        if split == "val" and not with_val:
            continue
        (base / "labels" / f"{split}1.txt").write_text("".join(f"{c}/{c}_{j:04d}.jpg\n" for c in DTD for j in js))


def test_dtd_official_release_and_task_vectors_folders(tmp_path):
    _fake_dtd_official(tmp_path)
    ds = load_dtd(tmp_path, image_size=S, strict=False)
    _check(ds, "dtd", {"train": 6, "val": 3, "test": 3})
    assert ds["classes"] == DTD and ds["classnames"] == DTD and ds["info"]["val_split"]["method"] == "official"
    assert ds["val"]["label"] == [0, 1, 2] and ds["info"]["files"]["test"][0] == "images/banded/banded_0004.jpg"
    forced = load_dtd(tmp_path, image_size=S, seed=4, strict=False, val_split="test-permutation")
    _check(forced, "dtd", {"train": 6, "val": 0, "test": 3})  # floor(0.2 * 3) = 0
    assert forced["info"]["val_split"]["method"] == "test-permutation"
    with pytest.raises(DataError) as exc:
        load_dtd(tmp_path, image_size=S)
    _assert_one_line(exc, "found 3 class folders", "expected 47")
    folders = tmp_path / "tv" / "dtd"  # task-vectors restructured copy
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for c_i, c in enumerate(DTD):
            for j in range(n):
                _image(folders / split / c / f"{c}_{split}{j}.jpg", seed=c_i + 7 * j, size=(S, S))
    tv = load_dtd(tmp_path / "tv", image_size=S, strict=False)
    _check(tv, "dtd", {"train": 9, "val": 3, "test": 6})
    assert tv["info"]["split"] == "folders" and tv["test"]["label"] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DataError) as exc:
        load_dtd(tmp_path / "tv", image_size=S, strict=False, layout="official")
    _assert_one_line(exc, str(tmp_path / "tv" / "dtd" / "dtd" / "images"), "not found", "DTD layout")


def test_dtd_without_val_falls_back_to_the_test_permutation(tmp_path):
    _fake_dtd_official(tmp_path, with_val=False)
    ds = load_dtd(tmp_path, image_size=S, seed=0, strict=False)
    assert ds["info"]["val_split"]["method"] == "test-permutation"
    assert "no official validation split" in ds["info"]["val_split"]["reason"]
    with pytest.raises(DataError) as exc:
        load_dtd(tmp_path, image_size=S, strict=False, val_split="official")
    _assert_one_line(exc, "val_split='official'")


# --------------------------------------------------------------------------------------------- RESISC45
RESISC = ["airplane", "baseball_diamond", "sea_ice"]


def test_resisc45_split_files(tmp_path):
    img_dir = tmp_path / "resisc45" / "NWPU-RESISC45"
    for c_i, c in enumerate(RESISC):
        for j in range(1, 6):
            _image(img_dir / c / f"{c}_{j:03d}.jpg", seed=c_i * 10 + j, size=(S, S))
    for split, js in (("train", (3, 1, 2)), ("val", (4,)), ("test", (5,))):
        names = [f"{c}_{j:03d}.jpg" for c in reversed(RESISC) for j in js]  # any order in the file
        (tmp_path / "resisc45" / f"resisc45-{split}.txt").write_text("\n".join(names) + "\n")
    ds = load_resisc45(tmp_path, image_size=S, strict=False)
    _check(ds, "resisc45", {"train": 9, "val": 3, "test": 3})
    assert ds["classes"] == RESISC and ds["classnames"] == ["airplane", "baseball diamond", "sea ice"]
    assert ds["train"]["label"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds["info"]["files"]["train"][:3] == [f"airplane/airplane_{j:03d}.jpg" for j in (1, 2, 3)]
    assert CLASSNAMES["resisc45"][2] == "baseball diamond" and len(CLASSNAMES["resisc45"]) == 45
    with pytest.raises(DataError) as exc:
        load_resisc45(tmp_path, image_size=S)
    _assert_one_line(exc, "expected 45")
    (tmp_path / "resisc45" / "resisc45-test.txt").write_text("harbor_001.jpg\n")
    with pytest.raises(DataError) as exc:
        load_resisc45(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, "names class 'harbor'")
    (tmp_path / "resisc45" / "resisc45-test.txt").write_text("sea_ice_009.jpg\n")
    with pytest.raises(DataError) as exc:
        load_resisc45(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(img_dir / "sea_ice" / "sea_ice_009.jpg"), "not found")
    (tmp_path / "resisc45" / "resisc45-test.txt").unlink()
    with pytest.raises(DataError) as exc:
        load_resisc45(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(tmp_path / "resisc45" / "resisc45-test.txt"), "RESISC45 layout")


# --------------------------------------------------------------------------------------------- SUN397
SUN = ["/b/beach", "/a/abbey", "/a/apartment_building/outdoor"]  # ClassName.txt order defines the labels


def test_sun397_official_partitions_and_task_vectors_folders(tmp_path):
    sun = tmp_path / "SUN397"
    for c_i, c in enumerate(SUN):
        for j in range(4):
            _image(sun / c.strip("/") / f"sun_{c_i}{j}.jpg", seed=c_i * 10 + j, size=(30, 22))
    (sun / "ClassName.txt").write_text("\n".join(SUN) + "\n")
    (sun / "Partitions").mkdir()
    for stem, js in (("Training", (0, 1)), ("Testing", (2, 3))):
        lines = [f"{c}/sun_{c_i}{j}.jpg" for j in js for c_i, c in enumerate(SUN)]
        (sun / "Partitions" / f"{stem}_01.txt").write_text("\n".join(lines) + "\n")
    ds = load_sun397(tmp_path, image_size=S, seed=6, strict=False)
    _check(ds, "sun397", {"train": 6, "val": 1, "test": 5})
    assert ds["classes"] == SUN and ds["classnames"] == ["beach", "abbey", "apartment building outdoor"]
    assert ds["train"]["label"] == [0, 1, 2, 0, 1, 2]
    _check_permuted(ds, [0, 1, 2, 0, 1, 2], seed=6)
    assert ds["info"]["files"]["val"] == [f"{SUN[i % 3].strip('/')}/sun_{i % 3}{2 + i // 3}.jpg"
                                          for i in ds["info"]["val_split"]["val_index"]]
    with pytest.raises(DataError) as exc:
        load_sun397(tmp_path, image_size=S)
    _assert_one_line(exc, "found 3 classes", "expected 397")
    perm_file = tmp_path / "sun397_shuffled_idxs.npy"
    np.save(perm_file, np.array([5, 4, 3, 2, 1, 0]))
    given = load_sun397(tmp_path, image_size=S, strict=False, val_permutation=str(perm_file))
    assert given["info"]["val_split"]["val_index"] == [5] and given["test"]["label"] == [1, 0, 2, 1, 0]
    folders = tmp_path / "tv" / "sun397"
    for split in ("train", "test"):
        for c_i, c in enumerate(["a_abbey", "a_apartment_building_outdoor", "b_beach"]):
            for j in range(2 if split == "train" else 5):
                _image(folders / split / c / f"sun_{split}{j}.jpg", seed=c_i + 3 * j, size=(S, S))
    tv = load_sun397(tmp_path / "tv", image_size=S, seed=6, strict=False)
    _check(tv, "sun397", {"train": 6, "val": 3, "test": 12})
    assert tv["classnames"] == ["abbey", "apartment building outdoor", "beach"] and tv["info"]["split"] == "folders"
    (sun / "Partitions" / "Testing_01.txt").unlink()
    with pytest.raises(DataError) as exc:
        load_sun397(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(sun / "Testing_01.txt"), "not found", "SUN397 layout")


# --------------------------------------------------------------------------------------------- registry, errors
def test_missing_layouts_are_one_line_errors_naming_the_path(tmp_path):
    expected = {"mnist": tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", "svhn": tmp_path / "svhn" /
                "train_32x32.mat", "gtsrb": tmp_path / "gtsrb" / "GTSRB" / "Training", "dtd": tmp_path / "dtd" /
                "dtd" / "images", "resisc45": tmp_path / "resisc45" / "NWPU-RESISC45", "sun397": tmp_path / "SUN397" /
                "ClassName.txt"}
    assert set(KNOTS_LOADERS) == set(expected) == set(KNOTS_EXPECTED_CLASSES)
    for name, loader in KNOTS_LOADERS.items():
        with pytest.raises(DataError) as exc:
            loader(tmp_path, image_size=S, strict=False)
        _assert_one_line(exc, f"dataset {name}", str(expected[name]), "not found", "expected the", "download:")
        with pytest.raises(DataError) as exc:
            loader(tmp_path / "nowhere", image_size=S)
        _assert_one_line(exc, str(tmp_path / "nowhere"), "data root")
    assert KNOTS_EXPECTED_CLASSES == {"dtd": 47, "gtsrb": 43, "mnist": 10, "resisc45": 45, "sun397": 397,
                                      "svhn": 10}


def test_dispatch_ignores_foreign_options_and_checks_arguments(tmp_path):
    _fake_mnist(tmp_path)
    ds = load_knots_dataset("mnist", tmp_path, image_size=S, seed=0, strict=False, cub_int8_wrap=True,
                            layout=None, train_per_class=3)
    _check(ds, "mnist", {"train": 20, "val": 2, "test": 10})
    with pytest.raises(KeyError):
        load_knots_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError):
        load_mnist(tmp_path, image_size=S, strict=False, val_split="weird")
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, image_size=S, strict=False, val_split="official")
    _assert_one_line(exc, "no validation split")


def test_classnames_for_heads():
    assert classnames_for("eurosat", ["AnnualCrop", "SeaLake", "NewClass"]) == ["annual crop land", "lake or sea",
                                                                               "new class"]
    assert len(CLASSNAMES["eurosat"]) == 10 and CLASSNAMES["eurosat"][2] == "brushland or shrubland"
    assert len(CLASSNAMES["dtd"]) == 47 and len(set(CLASSNAMES["dtd"])) == 47
    assert classnames_for("sun397", ["/a/abbey", "/a/apartment_building/outdoor", "a_airplane_cabin"]) == [
        "abbey", "apartment building outdoor", "airplane cabin"]
    assert classnames_for("gtsrb", ["00014", "00042"]) == ["stop", GTSRB_CLASSNAMES[42]]
    assert classnames_for("cars196", ["Acura RL Sedan 2012"]) == ["Acura RL Sedan 2012"]


def test_permutation_file_errors_are_one_line(tmp_path):
    with pytest.raises(DataError) as exc:
        add_val_split({"name": "cars196", "classes": ["a"], "test": {"images": np.zeros((3, 2, 2, 3), np.uint8),
                                                                     "label": [0, 0, 0]}},
                      permutation=tmp_path / "cars_shuffled_idxs.pt")
    _assert_one_line(exc, "dataset cars196", str(tmp_path / "cars_shuffled_idxs.pt"), "not found")
    (tmp_path / "p.txt").write_text("2 0 1\n")
    val, test, _ = permuted_val_split(3, permutation=tmp_path / "p.txt")
    assert val.tolist() == [] and test.tolist() == [2, 0, 1]
