"""Loaders of the image data sets, each reading its official on-disk layout (mostly via ``torchvision.datasets``).

``load_<name>(root, image_size=224, seed=0, **options)`` returns ``{"name", "modality": "image", "classes", "train":
{"images": uint8 (N, S, S, 3), "label": [int]}, "test", "info"}``: images decoded once and resized to S =
``image_size`` (augmentation and normalisation: per batch, :mod:`lorm.data.transforms`), labels in the official
code's class order. Options: ``strict`` (default True: the real class count and the fixed official split sizes;
False accepts miniature copies), ``expected_classes``, ``resize_mode`` ("stretch" = S x S or "center_crop" = shorter
side to S + centre crop; default: the official one), ``progress``, ``num_workers`` (decoding threads) and
``download`` (default False). Layouts and their one-line errors: config/README.md, "Image data sets".
"""

from __future__ import annotations

from lorm.data.vision import knots_sets as _knots  # noqa: F401 - registers the KnOTS sets
from lorm.data.vision import lorm_sets as _lorm  # noqa: F401 - registers the paper's sets
from lorm.data.vision._common import REGISTRY, make_loaders

NAMES = ("cifar100", "imagenet-r", "imagenet-a", "eurosat", "cub200", "cars196")
#: Number of classes of the real data sets (asserted when ``strict=True``; the split sizes: ``REGISTRY[n].sizes``).
EXPECTED_CLASSES = {n: REGISTRY[n].classes for n in NAMES}
LOADERS, load_vision_dataset = make_loaders(NAMES, "vision dataset")
load_cifar100, load_imagenet_r, load_imagenet_a, load_eurosat, load_cub200, load_cars196 = LOADERS.values()

