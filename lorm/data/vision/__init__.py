"""Loaders of the six image data sets of the paper, each reading its OFFICIAL on-disk layout.

Every loader is ``load_<name>(root, image_size=224, seed=0, **options) -> Dataset dict`` with
``{"name", "modality": "image", "classes", "train": {"images": uint8 (N, S, S, 3), "label": [int]}, "test",
"info"}``. Images are decoded once (PIL, ``convert("RGB")``, bicubic resize to S = ``image_size``; the official
pipeline also resizes to 224 on the CPU before its GPU augmentation) and kept as uint8; augmentation and
normalisation happen per batch (:mod:`lorm.data.transforms`). Labels are the original class ids; the class order
is the natural label order of the official code (task t holds classes [t*c, (t+1)*c), sizes in
:data:`TASK_SPLITS`).

Common options: ``strict`` (default True: the real class count of :data:`EXPECTED_CLASSES`, and the official
split sizes where they are fixed, are enforced; False accepts miniature copies), ``expected_classes`` (an
explicit class count, enforced whatever ``strict`` says), ``resize_mode`` ("stretch" = S x S, "center_crop" =
shorter side to S + centre crop; default = the official one: centre crop for Cars, stretch otherwise),
``progress`` (tqdm bar; default on from 500 images), ``num_workers`` (decoding threads). Nothing is ever
downloaded, except CIFAR-100 with ``download=True``. A missing or incomplete layout raises a one-line
:class:`lorm.data.DataError` naming the expected path and layout.

=========== ============================================ ======================================================
name        layout under ``root``                        split
=========== ============================================ ======================================================
cifar100    ``cifar-100-python/{train,test,meta}``       official
imagenet-r  ``imagenet-r/<wnid>/*``                      Mammoth yaml > {train,test}.txt > seeded 80/20
imagenet-a  ``imagenet-a/<wnid>/*`` or ``{train,test}/`` Mammoth folders > {train,test}.txt > seeded 80/20
eurosat     ``EuroSAT_RGB/<Class>/*.jpg``                CoOp split json > seeded 50/30 (CoOp proportions)
cub200      ``CUB_200_2011/{images.txt,...}``            official ``train_test_split.txt``; ``cub_int8_wrap``
cars196     ``{cars_train,cars_test,devkit}/...``        official devkit .mat files (needs scipy)
=========== ============================================ ======================================================
"""

from __future__ import annotations

from lorm.data.vision._common import EXPECTED_CLASSES, EXPECTED_SIZES, LAYOUTS
from lorm.data.vision.cars import load_cars196
from lorm.data.vision.cifar import load_cifar100
from lorm.data.vision.cub import load_cub200
from lorm.data.vision.folders import load_eurosat, load_imagenet_a, load_imagenet_r

#: Classes per task (spec 9.2): task t holds the next TASK_SPLITS[name][t] classes of the natural order.
TASK_SPLITS = {
    "cifar100": [10] * 10,
    "imagenet-r": [20] * 10,
    "imagenet-a": [20] * 10,
    "eurosat": [2] * 5,
    "cub200": [20] * 10,
    "cars196": [20] * 9 + [16],
}

#: name -> loader
LOADERS = {
    "cifar100": load_cifar100,
    "imagenet-r": load_imagenet_r,
    "imagenet-a": load_imagenet_a,
    "eurosat": load_eurosat,
    "cub200": load_cub200,
    "cars196": load_cars196,
}

#: Loader options a config may set (besides root, image_size, seed), per data set.
OPTIONS = {
    "cifar100": ("strict", "expected_classes", "resize_mode", "download", "progress", "num_workers"),
    "imagenet-r": ("strict", "expected_classes", "resize_mode", "split", "progress", "num_workers"),
    "imagenet-a": ("strict", "expected_classes", "resize_mode", "split", "progress", "num_workers"),
    "eurosat": ("strict", "expected_classes", "resize_mode", "split", "progress", "num_workers"),
    "cub200": ("strict", "expected_classes", "resize_mode", "cub_int8_wrap", "progress", "num_workers"),
    "cars196": ("strict", "expected_classes", "resize_mode", "progress", "num_workers"),
}


def load_vision_dataset(name: str, root, image_size: int = 224, seed: int = 0, **options) -> dict:
    """Dispatch to ``LOADERS[name]``; options the loader does not know are ignored (config dicts carry keys of
    every data set)."""
    if name not in LOADERS:
        raise KeyError(f"unknown vision dataset {name!r}; available: {', '.join(LOADERS)}")
    kwargs = {k: v for k, v in options.items() if k in OPTIONS[name] and v is not None}
    return LOADERS[name](root, image_size=image_size, seed=seed, **kwargs)


__all__ = ["EXPECTED_CLASSES", "EXPECTED_SIZES", "LAYOUTS", "LOADERS", "OPTIONS", "TASK_SPLITS", "load_cars196",
           "load_cifar100", "load_cub200", "load_eurosat", "load_imagenet_a", "load_imagenet_r",
           "load_vision_dataset"]
