"""Data: WordNet-40 reader, federated class-incremental partitions, synthetic images, dataset registry.

Importing ``lorm.data`` is cheap (no torch, no numpy): the error classes live here and the public
functions of the submodules are exported lazily (PEP 562), so ``from lorm.data import DataError`` works
in any process, and ``from lorm.data import partition_fcil`` imports ``lorm.data.partition`` on demand.
"""

from __future__ import annotations

import importlib


class DataError(RuntimeError):
    """A data file or folder is missing or malformed. The message is a single line and says how to fix it."""


class PartitionError(DataError, ValueError):
    """No federated partition satisfying the constraints could be drawn (one-line message with the fix).

    A ``ValueError`` (bad combination of arguments) and also a ``DataError`` so that a CLI that turns
    ``DataError`` into a one-line message handles it too.
    """


_LAZY = {
    # wordnet
    "WORDNET40_CLASSES": "wordnet",
    "LEXNAMES": "wordnet",
    "find_wordnet_dir": "wordnet",
    "read_glosses": "wordnet",
    "build_wordnet40": "wordnet",
    # partition
    "class_order_from": "partition",
    "class_incremental_split": "partition",
    "dirichlet_partition": "partition",
    "split_test_proportional": "partition",
    "partition_fcil": "partition",
    "save_partition": "partition",
    "load_partition": "partition",
    "validate_partition": "partition",
    # synthetic
    "make_synthetic_images": "synthetic",
    # registry
    "DATASETS": "datasets",
    "build_dataset": "datasets",
    "save_dataset": "datasets",
    "load_dataset": "datasets",
}

__all__ = ["DataError", "PartitionError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lorm.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lorm.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
