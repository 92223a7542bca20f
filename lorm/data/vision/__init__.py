"""Loaders of the image data sets, each reading its official on-disk layout (mostly via ``torchvision.datasets``).

Every loader is ``load_<name>(root, image_size=224, seed=0, **options) -> Dataset dict`` with
``{"name", "modality": "image", "classes", "train": {"images": uint8 (N, S, S, 3), "label": [int]}, "test",
"info"}`` (the KnOTS sets of :mod:`lorm.data.vision.knots_sets` add "val" and "classnames"). Images are decoded
once (PIL, ``convert("RGB")``, bicubic resize to S = ``image_size``; the official pipeline also resizes to 224 on
the CPU before its GPU augmentation) and kept as uint8; augmentation and normalisation happen per batch
(:mod:`lorm.data.transforms`). Labels are the original class ids in the natural label order of the official code
(task t holds classes [t*c, (t+1)*c), sizes in :data:`TASK_SPLITS`). All of them share one assembly path
(:func:`lorm.data.vision._common.load`).

Common options: ``strict`` (default True: the real class count of :data:`EXPECTED_CLASSES`, and the official
split sizes where they are fixed, are enforced; False accepts miniature copies), ``expected_classes`` (an
explicit class count, enforced whatever ``strict`` says), ``resize_mode`` ("stretch" = S x S, "center_crop" =
shorter side to S + centre crop; default = the official one: centre crop for Cars, stretch otherwise),
``progress`` (tqdm bar; default on from 500 images), ``num_workers`` (decoding threads). Nothing is ever
downloaded unless ``download=True`` (CIFAR-100, EuroSAT and the torchvision-read KnOTS sets). A missing or
incomplete layout raises a one-line :class:`lorm.data.DataError` naming the expected path and layout. The
layouts and their split sources are listed in config/README.md ("Image data sets").
"""

from __future__ import annotations

from lorm.data.vision import knots_sets as _knots  # noqa: F401 - registers the KnOTS sets
from lorm.data.vision import lorm_sets as _lorm  # noqa: F401 - registers the paper's sets
from lorm.data.vision._common import REGISTRY, dispatch, make_loader

NAMES = ("cifar100", "imagenet-r", "imagenet-a", "eurosat", "cub200", "cars196")
#: Number of classes of the real data sets (asserted when ``strict=True``).
EXPECTED_CLASSES = {n: REGISTRY[n].classes for n in NAMES}
#: (train, test) sizes of the data sets whose split is fixed by the distribution (asserted when ``strict=True``).
EXPECTED_SIZES = {n: (REGISTRY[n].sizes["train"], REGISTRY[n].sizes["test"]) for n in NAMES if REGISTRY[n].sizes}
#: name -> (expected layout, where to get it); used in every layout error message.
LAYOUTS = {n: (REGISTRY[n].layout, REGISTRY[n].url) for n in NAMES}

#: Classes per task (spec 9.2): task t holds the next TASK_SPLITS[name][t] classes of the natural order.
TASK_SPLITS = {"cifar100": [10] * 10, "imagenet-r": [20] * 10, "imagenet-a": [20] * 10, "eurosat": [2] * 5,
               "cub200": [20] * 10, "cars196": [20] * 9 + [16]}

#: name -> loader
LOADERS = {n: make_loader(n) for n in NAMES}
load_cifar100, load_imagenet_r, load_imagenet_a, load_eurosat, load_cub200, load_cars196 = LOADERS.values()

#: Loader options a config may set (besides root, image_size, seed), per data set.
OPTIONS = {n: REGISTRY[n].options for n in NAMES}


def load_vision_dataset(name: str, root, image_size: int = 224, seed: int = 0, **options) -> dict:
    """Dispatch to ``LOADERS[name]``; options the loader does not know are ignored."""
    return dispatch(LOADERS, "vision dataset", name, root, image_size=image_size, seed=seed, **options)


__all__ = ["EXPECTED_CLASSES", "EXPECTED_SIZES", "LAYOUTS", "LOADERS", "OPTIONS", "TASK_SPLITS", "load_cars196",
           "load_cifar100", "load_cub200", "load_eurosat", "load_imagenet_a", "load_imagenet_r",
           "load_vision_dataset"]
