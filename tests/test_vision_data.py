"""Loaders of the six paper image data sets (on miniature copies fabricated in each OFFICIAL on-disk layout) and
the batch transforms. Nothing is downloaded."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lorm.data import DataError
from lorm.data.datasets import DATASETS, build_dataset, load_dataset, save_dataset
from lorm.data.partition import TASK_SPLITS, class_incremental_split
from lorm.data import transforms as T
from lorm.data.vision import (EXPECTED_CLASSES, load_cars196, load_cifar100, load_cub200, load_eurosat, load_imagenet_a,
                              load_imagenet_r)

S = 16  # working resolution of the loader tests


def _jpeg(path: pathlib.Path, seed: int, size=(20, 24)) -> np.ndarray:
    """A random smooth-ish RGB JPEG (w, h) = size at ``path``; returns its pixels as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize(size, Image.BILINEAR)
    img.save(path, quality=95)
    return np.asarray(img)


def _assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def _check_images(ds: dict, n_train: int, n_test: int, size: int = S) -> None:
    assert ds["modality"] == "image"
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = ds[split]["images"]
        assert imgs.dtype == np.uint8 and imgs.shape == (n, size, size, 3)
        assert len(ds[split]["label"]) == n and all(isinstance(y, int) for y in ds[split]["label"])


# --------------------------------------------------------------------------------------------- task splits
def test_task_splits_sum_to_class_counts_and_cars_split():
    assert set(TASK_SPLITS) == set(EXPECTED_CLASSES)
    for name, sizes in TASK_SPLITS.items():
        assert sum(sizes) == EXPECTED_CLASSES[name]
    assert {n: len(s) for n, s in TASK_SPLITS.items()} == {"cifar100": 10, "imagenet-r": 10, "imagenet-a": 10,
                                                          "eurosat": 5, "cub200": 10, "cars196": 10}
    tasks = class_incremental_split(list(range(196)), 10, TASK_SPLITS["cars196"])
    assert [len(t) for t in tasks] == [20] * 9 + [16]
    assert tasks[0] == list(range(20)) and tasks[-1] == list(range(180, 196))


# --------------------------------------------------------------------------------------------- CIFAR-100
def _fake_cifar(root: pathlib.Path, n_classes=3, train_per=2, test_per=1) -> dict:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, per in (("train", train_per), ("test", test_per)):
        labels = [c for c in range(n_classes) for _ in range(per)]
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        # str keys, as the official (Python 2) pickles read with encoding="latin1" (torchvision CIFAR100)
        with open(base / split, "wb") as fh:
            pickle.dump({"filenames": [f"img{i}.png" for i in range(len(labels))], "batch_label": "x",
                         "fine_labels": labels, "coarse_labels": [0] * len(labels), "data": data}, fh, protocol=2)
        out[split] = (data, labels)
    with open(base / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"class{c}" for c in range(n_classes)],
                     "coarse_label_names": ["all"]}, fh, protocol=2)
    return out


def test_cifar100_reads_pickles_planes_to_hwc(tmp_path):
    raw = _fake_cifar(tmp_path)
    ds = load_cifar100(tmp_path, image_size=32, strict=False)
    _check_images(ds, 6, 3, size=32)
    assert ds["name"] == "cifar100" and ds["classes"] == ["class0", "class1", "class2"]
    assert ds["train"]["label"] == [0, 0, 1, 1, 2, 2] and ds["test"]["label"] == [0, 1, 2]
    data, _ = raw["train"]
    img0 = ds["train"]["images"][0]
    assert np.array_equal(img0[:, :, 0].ravel(), data[0, :1024])  # R plane, row-major
    assert np.array_equal(img0[:, :, 2].ravel(), data[0, 2048:])  # B plane
    big = load_cifar100(tmp_path / "cifar-100-python", image_size=S, strict=False)  # root may be the folder
    _check_images(big, 6, 3)
    with pytest.raises(DataError) as exc:
        load_cifar100(tmp_path, image_size=S)  # strict: 3 != 100 classes
    _assert_one_line(exc, "found 3 classes", "expected 100")


def test_cifar100_refuses_code_in_pickles(tmp_path):
    _fake_cifar(tmp_path)
    with open(tmp_path / "cifar-100-python" / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": pathlib.Path("x")}, fh)  # any non-numpy global
    with pytest.raises(DataError, match="refusing"):
        load_cifar100(tmp_path, image_size=S, strict=False)


def test_missing_root_and_files_are_one_line_errors(tmp_path):
    missing = tmp_path / "nowhere"
    for loader in (load_cifar100, load_imagenet_r, load_imagenet_a, load_eurosat, load_cub200, load_cars196):
        with pytest.raises(DataError) as exc:
            loader(missing, image_size=S, strict=False)
        _assert_one_line(exc, str(missing), "expected the", "download:")
    with pytest.raises(DataError) as exc:
        load_cifar100(tmp_path, image_size=S)
    _assert_one_line(exc, str(tmp_path / "cifar-100-python" / "meta"), "cifar-100-python/{train,test,meta}")
    with pytest.raises(DataError) as exc:
        load_cub200(tmp_path)
    _assert_one_line(exc, str(tmp_path / "CUB_200_2011" / "images.txt"), "CUB-200-2011 layout",
                     "https://www.vision.caltech.edu/datasets/cub_200_2011/")
    with pytest.raises(DataError) as exc:
        load_cars196(tmp_path)
    _assert_one_line(exc, str(tmp_path / "stanford_cars" / "devkit" / "cars_meta.mat"))


# --------------------------------------------------------------------------------------------- ImageNet-R / -A
WNIDS = ["n01443537", "n01484850", "n02051845"]


def _fake_class_folders(base: pathlib.Path, classes=WNIDS, per_class=5, seed=0) -> None:
    for c_i, c in enumerate(classes):
        for j in range(per_class):
            _jpeg(base / c / f"art_{j}.jpg", seed=seed + 100 * c_i + j)


def test_imagenet_r_seeded_split_is_deterministic_and_disjoint(tmp_path):
    _fake_class_folders(tmp_path / "imagenet-r")
    (tmp_path / "imagenet-r" / "README.txt").write_text("n01443537 goldfish\nn01484850 great_white_shark\n")
    a = load_imagenet_r(tmp_path, image_size=S, seed=3, strict=False)
    b = load_imagenet_r(tmp_path, image_size=S, seed=3, strict=False)
    _check_images(a, 12, 3)  # 5 per class -> 4 / 1
    assert a["classes"] == WNIDS and a["info"]["split"].startswith("seeded")
    assert a["info"]["class_descriptions"] == ["goldfish", "great_white_shark", "n02051845"]
    assert a["train"]["label"] == [0] * 4 + [1] * 4 + [2] * 4 and a["test"]["label"] == [0, 1, 2]
    assert a["info"]["files"] == b["info"]["files"]
    assert np.array_equal(a["train"]["images"], b["train"]["images"])
    train, test = set(a["info"]["files"]["train"]), set(a["info"]["files"]["test"])
    assert not train & test and len(train | test) == 15
    others = [load_imagenet_r(tmp_path, image_size=S, seed=s, strict=False)["info"]["files"] for s in range(4, 8)]
    assert any(o["test"] != a["info"]["files"]["test"] for o in others)
    for f in a["info"]["files"]["test"]:  # the label is the class folder
        assert a["classes"][a["test"]["label"][a["info"]["files"]["test"].index(f)]] == f.split("/")[0]


def test_imagenet_r_split_files_and_mammoth_yaml(tmp_path):
    base = tmp_path / "imagenet-r"
    _fake_class_folders(base, per_class=3)
    (base / "train.txt").write_text("\n".join(f"{c}/art_{j}.jpg" for c in WNIDS for j in (0, 1)) + "\n")
    (base / "test.txt").write_text("\n".join(f"imagenet-r/{c}/art_2.jpg 7" for c in WNIDS) + "\n")
    ds = load_imagenet_r(tmp_path, image_size=S, strict=False)
    assert ds["info"]["split"] == "split-files" and ds["classes"] == WNIDS
    assert ds["train"]["label"] == [0, 0, 1, 1, 2, 2] and ds["test"]["label"] == [0, 1, 2]
    # Mammoth's yaml wins and defines the label ids (not the sorted-wnid order)
    order = [WNIDS[2], WNIDS[0], WNIDS[1]]
    for split, files in (("train", (0, 1)), ("test", (2,))):
        data = [f"data/imagenet-r/{c}/art_{j}.jpg" for c in WNIDS for j in files]
        targets = [order.index(c) for c in WNIDS for _ in files]
        (base / f"imagenet-r_{split}.yaml").write_text(
            "data:\n" + "".join(f"- {d}\n" for d in data) + "targets:\n" + "".join(f"- {t}\n" for t in targets))
    ds = load_imagenet_r(tmp_path, image_size=S, strict=False)
    assert ds["info"]["split"] == "mammoth-yaml" and ds["classes"] == order
    assert ds["test"]["label"] == [1, 2, 0]
    forced = load_imagenet_r(tmp_path, image_size=S, strict=False, split="seeded")
    assert forced["classes"] == WNIDS and forced["info"]["split"].startswith("seeded")
    (base / "imagenet-r_train.yaml").rename(base / "mammoth_train.yaml")
    (base / "test.txt").write_text(f"{WNIDS[0]}/art_2.jpg\n{WNIDS[1]}/art_2.jpg\n")  # no test image of class 2
    ds = load_imagenet_r(tmp_path, image_size=S, strict=False, split="files")
    assert ds["info"]["classes_without_test"] == [WNIDS[2]] and ds["info"]["per_class_test"] == [1, 1, 0]
    (base / "test.txt").write_text("n01443537/art_9.jpg\n")
    with pytest.raises(DataError) as exc:
        load_imagenet_r(tmp_path, image_size=S, strict=False, split="files")
    _assert_one_line(exc, str(base / "n01443537" / "art_9.jpg"), "not found")


def test_imagenet_r_incomplete_layout(tmp_path):
    _fake_class_folders(tmp_path / "imagenet-r", per_class=2)
    with pytest.raises(DataError) as exc:
        load_imagenet_r(tmp_path, image_size=S)  # strict: 200 class folders
    _assert_one_line(exc, "found 3 class folders", str(tmp_path / "imagenet-r"), "expected 200")
    with pytest.raises(DataError) as exc:
        load_imagenet_r(tmp_path, image_size=S, expected_classes=4)
    _assert_one_line(exc, "expected 4")
    assert len(load_imagenet_r(tmp_path, image_size=S, expected_classes=3)["classes"]) == 3


def test_imagenet_a_folder_split_and_seeded_fallback(tmp_path):
    base = tmp_path / "imagenet-a"
    _fake_class_folders(base / "train", per_class=3)
    _fake_class_folders(base / "test", per_class=2, seed=50)
    ds = load_imagenet_a(tmp_path, image_size=S, strict=False)
    _check_images(ds, 9, 6)
    assert ds["info"]["split"] == "mammoth-imagefolder" and ds["classes"] == WNIDS
    assert ds["test"]["label"] == [0, 0, 1, 1, 2, 2]
    flat = tmp_path / "flat" / "imagenet-a"
    _fake_class_folders(flat, per_class=5)
    ds = load_imagenet_a(tmp_path / "flat", image_size=S, seed=1, strict=False)
    _check_images(ds, 12, 3)
    assert ds["info"]["split"].startswith("seeded")
    (base / "test" / WNIDS[0] / "art_0.jpg").unlink()
    (base / "test" / WNIDS[0] / "art_1.jpg").unlink()
    with pytest.raises(DataError) as exc:
        load_imagenet_a(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(base / "test" / WNIDS[0]), "no images")


# --------------------------------------------------------------------------------------------- EuroSAT
EURO = ["AnnualCrop", "Forest", "SeaLake"]


def test_eurosat_coop_json_and_seeded(tmp_path):
    base = tmp_path / "EuroSAT_RGB"
    for c_i, c in enumerate(EURO):
        for j in range(4):
            _jpeg(base / c / f"{c}_{j + 1}.jpg", seed=10 * c_i + j, size=(64, 64))
    names = ["Annual Crop Land", "Forest", "Sea or Lake"]
    split = {s: [[f"{c}/{c}_{j}.jpg", i, names[i]] for i, c in enumerate(EURO) for j in js]
             for s, js in (("train", (1, 2)), ("val", (3,)), ("test", (4,)))}
    ds = load_eurosat(tmp_path, image_size=S, strict=False)  # no json: seeded, sorted folders
    _check_images(ds, 6, 3)  # 4 per class: 2 train, 1 val (dropped), 1 test
    assert ds["classes"] == EURO and ds["info"]["split"].startswith("seeded")
    (base / "split.json").write_text(json.dumps(split))
    ds = load_eurosat(tmp_path, image_size=S, strict=False)
    _check_images(ds, 6, 3)
    assert ds["classes"] == names and ds["info"]["val_dropped"] == 3 and ds["info"]["class_folders"] == EURO
    assert ds["info"]["files"]["test"] == [f"{c}/{c}_4.jpg" for c in EURO]
    with pytest.raises(DataError) as exc:
        load_eurosat(tmp_path, image_size=S)
    _assert_one_line(exc, "found 3 class folders", "expected 10")


# --------------------------------------------------------------------------------------------- CUB-200-2011
def _fake_cub(root: pathlib.Path) -> dict:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    rows, pixels = [], {}
    image_id = 0
    for c_i, c in enumerate(classes):
        for j in range(3):
            image_id += 1
            rel = f"{c}/{c.split('.')[1]}_{j:04d}_{image_id}.jpg"
            pixels[image_id] = _jpeg(base / "images" / rel, seed=image_id, size=(S, S))
            rows.append((image_id, rel, c_i + 1, 1 if j < 2 else 0))
    (base / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    (base / "classes.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
    return {"classes": classes, "rows": rows, "pixels": pixels}


def test_cub200_official_split_and_int8_wrap(tmp_path):
    fake = _fake_cub(tmp_path)
    ds = load_cub200(tmp_path, image_size=S, strict=False)
    _check_images(ds, 6, 3)
    assert ds["classes"] == fake["classes"]
    assert ds["train"]["label"] == [0, 0, 1, 1, 2, 2] and ds["test"]["label"] == [0, 1, 2]
    train_ids = [i for i, _, _, t in fake["rows"] if t == 1]
    for k, image_id in enumerate(train_ids):  # same size on disk: decoded without resampling, in id order
        assert np.array_equal(ds["train"]["images"][k], np.asarray(Image.open(
            tmp_path / "CUB_200_2011" / "images" / fake["rows"][image_id - 1][1]).convert("RGB")))
    wrapped = load_cub200(tmp_path, image_size=S, strict=False, cub_int8_wrap=True)
    expect = ((256 - ds["test"]["images"].astype(np.int64)) % 256).astype(np.uint8)
    assert np.array_equal(wrapped["test"]["images"], expect) and wrapped["info"]["cub_int8_wrap"] is True
    with pytest.raises(DataError) as exc:
        load_cub200(tmp_path, image_size=S)
    _assert_one_line(exc, "found 3 classes", "expected 200")
    missing = tmp_path / "CUB_200_2011" / "images" / fake["rows"][4][1]
    missing.unlink()
    with pytest.raises(DataError) as exc:
        load_cub200(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(missing), "images.txt")


# --------------------------------------------------------------------------------------------- Cars-196
def _fake_cars(root: pathlib.Path) -> None:
    sio = pytest.importorskip("scipy.io")
    (root / "devkit").mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    sio.savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    dtype = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for split, classes, out in (("train", [1, 1, 2, 3, 3], root / "devkit" / "cars_train_annos.mat"),
                                ("test", [3, 2, 1], root / "cars_test_annos_withlabels.mat")):
        annos = np.zeros((1, len(classes)), dtype=dtype)
        for k, c in enumerate(classes):
            fname = f"{k + 1:05d}.jpg"
            _jpeg(root / f"cars_{split}" / fname, seed=k + (0 if split == "train" else 50), size=(30, 20))
            annos[0, k] = (np.uint8(1), np.uint8(2), np.uint16(29), np.uint16(19), np.uint8(c), fname)
        sio.savemat(out, {"annotations": annos})


def test_cars196_devkit_mat_files(tmp_path):
    _fake_cars(tmp_path / "stanford_cars")
    ds = load_cars196(tmp_path, image_size=S, strict=False)
    _check_images(ds, 5, 3)
    assert ds["classes"][1] == "Acura RL Sedan 2012" and len(ds["classes"]) == 3
    assert ds["train"]["label"] == [0, 0, 1, 2, 2] and ds["test"]["label"] == [2, 1, 0]
    assert "centre crop" in ds["info"]["resize"]
    stretched = load_cars196(tmp_path / "stanford_cars", image_size=S, strict=False, resize_mode="stretch")
    assert not np.array_equal(stretched["train"]["images"], ds["train"]["images"])
    with pytest.raises(DataError) as exc:
        load_cars196(tmp_path, image_size=S)
    _assert_one_line(exc, "found 3 classes", "expected 196")
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DataError) as exc:
        load_cars196(tmp_path, image_size=S, strict=False)
    _assert_one_line(exc, str(tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat"), "not found")


# --------------------------------------------------------------------------------------------- registry
def test_registry_builds_vision_datasets_from_config(tmp_path):
    assert {"cifar100", "imagenet-r", "imagenet-a", "eurosat", "cub200", "cars196"} <= set(DATASETS)
    _fake_cub(tmp_path)
    cfg = {"name": "cub200", "root": str(tmp_path), "image_size": S, "seed": 0, "strict": False,
           "cub_int8_wrap": True, "train_per_class": 40, "max_length": 32, "split": "seeded"}  # extra keys ignored
    ds = build_dataset(cfg)
    _check_images(ds, 6, 3)
    assert ds["info"]["cub_int8_wrap"] is True
    path = save_dataset(ds, tmp_path / "out" / "dataset.npz")  # the info is JSON-serialisable
    back = load_dataset(path)
    assert back["info"] == json.loads(json.dumps(ds["info"])) and back["classes"] == ds["classes"]
    assert np.array_equal(back["train"]["images"], ds["train"]["images"])
    with pytest.raises(DataError) as exc:
        build_dataset({"name": "imagenet-r", "root": None})
    _assert_one_line(exc, "no data root given")


# --------------------------------------------------------------------------------------------- transforms
def _batch(b=4, h=256, w=256, seed=0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["intended", "official", "official-default"])
def test_batch_transform_shapes(mode):
    x = _batch()
    for name in TASK_SPLITS:
        for train in (True, False):
            out = T.make_batch_transform(name, train, mode)(x, torch.Generator().manual_seed(0))
            assert out.shape == (4, 3, 224, 224) and out.dtype == torch.float32
    small = T.make_batch_transform("cifar100", True, mode, image_size=32)(_batch(2, 32, 32), None)
    assert small.shape == (2, 3, 32, 32)


def test_flip_is_a_flip():
    x = _batch(8, 12, 10)
    assert torch.equal(T.random_horizontal_flip(x, torch.Generator().manual_seed(0), p=1.0), x.flip(-1))
    assert torch.equal(T.random_horizontal_flip(x, torch.Generator().manual_seed(0), p=0.0), x)
    out = T.random_horizontal_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    assert all(f or torch.equal(o, xi) for f, o, xi in zip(flipped, out, x)) and 0 < sum(flipped) < 8


def test_random_resized_crop_inside_and_reproducible():
    g = torch.Generator().manual_seed(0)
    for h, w, scale, ratio in ((256, 256, (0.08, 1.0), (3 / 4, 4 / 3)), (40, 300, (0.05, 1.0), (3 / 4, 4 / 3)),
                               (224, 224, (0.9, 1.0), (3.0, 4.0))):
        boxes = T.random_resized_crop_params(500, h, w, scale, ratio, g)
        top, left, bh, bw = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (bh >= 1).all() and (bw >= 1).all()
        assert (top + bh <= h).all() and (left + bw <= w).all()
    x = _batch(3)
    a = T.random_resized_crop(x, 224, generator=torch.Generator().manual_seed(5))
    b = T.random_resized_crop(x, 224, generator=torch.Generator().manual_seed(5))
    c = T.random_resized_crop(x, 224, generator=torch.Generator().manual_seed(6))
    assert a.shape == (3, 3, 224, 224) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    tf = T.make_batch_transform("imagenet-r", True)
    assert torch.equal(tf(x, torch.Generator().manual_seed(2)), tf(x, torch.Generator().manual_seed(2)))


def test_resize_center_crop_and_normalisation():
    x = _batch(2)
    assert torch.equal(T.resize_center_crop(x, 256, 224), x[..., 16:240, 16:240])
    const = torch.full((2, 3, 8, 8), 0.25)
    out = T.normalise(const, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert torch.allclose(out[:, 0], torch.tensor(-0.5)) and torch.allclose(out[:, 1], torch.tensor(0.0))
    assert torch.allclose(out[:, 2], torch.tensor(0.25))
    c224 = torch.full((2, 3, 224, 224), 0.7)
    for name in TASK_SPLITS:
        y = T.make_batch_transform(name, False, "intended")(c224)
        assert torch.allclose(y, torch.tensor((0.7 - 0.5) / 0.5), atol=1e-5)  # mean = std = 0.5 everywhere
    y = T.make_batch_transform("cub200", False, "official")(c224)
    expect = (0.7 - torch.tensor(T.IMAGENET_MEAN)) / torch.tensor(T.IMAGENET_STD)
    assert torch.allclose(y.mean((0, 2, 3)), expect, atol=1e-5)


def test_official_differs_from_intended_where_the_spec_says():
    x = _batch(4, 224, 224)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # LoRM-EuroSAT: identity, no normalisation (official) vs RRC + flip + 0.5/0.5 (intended)
    assert torch.equal(T.make_batch_transform("eurosat", True, "official")(x, g()), x)
    assert torch.equal(T.make_batch_transform("eurosat", False, "official")(x), x)
    assert not torch.allclose(T.make_batch_transform("eurosat", True, "intended")(x, g()), (x - 0.5) / 0.5)
    assert T.OFFICIAL_DEFAULT["eurosat"]["mean"] == T.CLIP_MEAN and T.OFFICIAL_DEFAULT["eurosat"]["train"]
    # Cars: no normalisation officially; same flip draws
    assert torch.equal(T.make_batch_transform("cars196", False, "official")(x), x)
    off = T.make_batch_transform("cars196", True, "official")(x, g())
    assert torch.allclose(T.make_batch_transform("cars196", True, "intended")(x, g()), (off - 0.5) / 0.5)
    # CIFAR-100 / ImageNet-R: identical; CUB / ImageNet-A: ImageNet statistics
    for name in ("cifar100", "imagenet-r"):
        assert T.OFFICIAL[name] == T.PREPROCESSING[name]
    for name in ("cub200", "imagenet-a"):
        assert T.OFFICIAL[name]["mean"] == T.IMAGENET_MEAN and T.PREPROCESSING[name]["mean"] == (0.5,) * 3
        assert T.OFFICIAL[name]["train"] == T.PREPROCESSING[name]["train"]
    assert T.make_batch_transform("cifar100", True).describe()["steps"][0]["op"] == "random_resized_crop"
    with pytest.raises(ValueError):
        T.make_batch_transform("eurosat", True, "weird")
