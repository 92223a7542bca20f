"""Federated class-incremental partitions (spec section 9.3). numpy only; every draw uses an explicit Generator.

* ``class_incremental_split`` cuts a class order into tasks (equal, or uneven with ``task_sizes``).
* ``dirichlet_partition`` splits ONE task's training samples over K clients: per class c,
  p_c ~ Dirichlet(beta * 1_K), each sample of c goes to a client drawn from Categorical(p_c); if any client
  holds fewer than ``min_samples`` samples of the task, the whole task is redrawn (at most ``max_redraws``
  times, then :class:`PartitionError`).
* ``split_test_proportional`` gives every test sample of the task to exactly one client, per class in
  proportion to the clients' training shares (exact integer largest-remainder rounding, ties -> lower client
  index; within a class, client 0 gets the first block of test indices in ascending order, client 1 the next...).
  A class without any training sample in the task is split equally.
* ``partition_fcil`` does all tasks with ``np.random.default_rng(seed)`` consumed task by task in order and
  returns the JSON-serialisable Partition dict of docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from lorm.data import DataError, PartitionError

PARTITION_KEYS = ("beta", "seed", "num_clients", "min_samples", "class_order", "tasks")
TASK_KEYS = ("classes", "train", "test", "redraws")
#: Classes per task of the paper's image data sets (spec 9.2): the ``task_sizes`` of :func:`class_incremental_split`.
TASK_SPLITS = {"cifar100": [10] * 10, "imagenet-r": [20] * 10, "imagenet-a": [20] * 10, "eurosat": [2] * 5,
               "cub200": [20] * 10, "cars196": [20] * 9 + [16]}


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _as_labels(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integer labels, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def class_order_from(spec, num_classes: int, rng: np.random.Generator | int | None = None) -> list[int]:
    """"natural" -> 0..C-1; "shuffled" -> a permutation drawn from ``rng`` (Generator or int seed);
    or an explicit list, which must be a permutation of range(num_classes)."""
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if isinstance(spec, str):
        if spec == "natural":
            return list(range(num_classes))
        if spec == "shuffled":
            if rng is None:
                raise ValueError('class_order "shuffled" needs a numpy Generator or an integer seed (rng=...)')
            gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            return [int(c) for c in gen.permutation(num_classes)]
        raise ValueError(f'class_order must be "natural", "shuffled" or a list of class ids, got {spec!r}')
    try:
        order = list(spec)
    except TypeError:
        raise ValueError(f'class_order must be "natural", "shuffled" or a list of class ids, got {spec!r}') from None
    if not all(_is_int(c) for c in order) or sorted(int(c) for c in order) != list(range(num_classes)):
        raise ValueError(
            f"class_order must be a permutation of 0..{num_classes - 1} (each class id exactly once), "
            f"got {order!r}"
        )
    return [int(c) for c in order]


def class_incremental_split(
    class_order: Sequence[int], num_tasks: int, task_sizes: Sequence[int] | None = None
) -> list[list[int]]:
    """Consecutive chunks of ``class_order``: equal chunks, or chunks of ``task_sizes`` (e.g. 9 x 20 + 16)."""
    order = [int(c) for c in class_order]
    n = len(order)
    if len(set(order)) != n:
        raise ValueError(f"class_order contains repeated class ids: {order!r}")
    if not _is_int(num_tasks) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
    num_tasks = int(num_tasks)
    if task_sizes is None:
        if n % num_tasks:
            raise ValueError(
                f"{n} classes cannot be split into {num_tasks} equal tasks; choose a num_tasks dividing {n} "
                f"or give task_sizes (a list of {num_tasks} positive integers summing to {n})"
            )
        sizes = [n // num_tasks] * num_tasks
    else:
        sizes = list(task_sizes)
        if (len(sizes) != num_tasks or not all(_is_int(s) and s >= 1 for s in sizes) or sum(sizes) != n):
            raise ValueError(
                f"task_sizes must be {num_tasks} positive integers summing to the {n} classes, got {sizes!r}"
            )
    tasks, start = [], 0
    for size in sizes:
        tasks.append(order[start:start + int(size)])
        start += int(size)
    return tasks


def dirichlet_partition(
    labels,
    classes: Iterable[int],
    num_clients: int,
    beta: float,
    rng: np.random.Generator,
    min_samples: int = 6,
    max_redraws: int = 1000,
) -> tuple[list[np.ndarray], int]:
    """Split the training samples of ``classes`` over ``num_clients`` clients (one task).

    Returns (sorted int64 index arrays into ``labels``, one per client; number of redraws, 0 = first draw).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not _is_int(num_clients) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    if not _is_int(min_samples) or min_samples < 0:
        raise ValueError(f"min_samples must be a non-negative integer, got {min_samples!r}")
    if not _is_int(max_redraws) or max_redraws < 0:
        raise ValueError(f"max_redraws must be a non-negative integer, got {max_redraws!r}")
    labels = _as_labels(labels, "labels")
    classes = [int(c) for c in classes]
    k = int(num_clients)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    task_idx = np.concatenate(per_class) if per_class else np.zeros(0, np.int64)
    n_total = task_idx.size

    def fail(reason: str) -> PartitionError:
        return PartitionError(
            f"cannot give each of {k} clients >= {min_samples} training samples of task classes {classes} "
            f"({n_total} samples, beta={beta}): {reason}; use a larger beta, fewer clients, more samples per "
            f"class or a smaller min_samples"
        )

    if n_total < k * min_samples:
        raise fail(f"impossible, {n_total} < {k} x {min_samples}")
    alpha = np.full(k, float(beta))
    for redraws in range(max_redraws + 1):
        owner = np.empty(n_total, dtype=np.int64)
        start = 0
        for idx in per_class:
            p = rng.dirichlet(alpha)
            cdf = np.cumsum(p)
            u = rng.random(idx.size) * cdf[-1]
            owner[start:start + idx.size] = np.minimum(np.searchsorted(cdf, u, side="right"), k - 1)
            start += idx.size
        if np.bincount(owner, minlength=k).min() >= min_samples:
            return [np.sort(task_idx[owner == j]) for j in range(k)], redraws
    raise fail(f"no valid draw after {max_redraws} redraws")


def _largest_remainder(total: int, weights: Sequence[int]) -> np.ndarray:
    """Integer shares of ``total`` proportional to integer ``weights`` (exact; ties -> lower index)."""
    w = np.asarray(weights, dtype=np.int64)
    s = int(w.sum())
    if s == 0:
        w, s = np.ones_like(w), w.size
    base = (total * w) // s
    rem = (total * w) % s
    left = total - int(base.sum())
    order = sorted(range(w.size), key=lambda j: (-int(rem[j]), j))
    base[order[:left]] += 1
    return base


def split_test_proportional(test_labels, classes, train_parts, train_labels) -> list[np.ndarray]:
    """Give every test sample of ``classes`` to exactly one client, per class proportional to training shares."""
    test_labels = _as_labels(test_labels, "test_labels")
    train_labels = _as_labels(train_labels, "train_labels")
    parts = [np.asarray(p, dtype=np.int64) for p in train_parts]
    if not parts:
        raise ValueError("train_parts must hold one index array per client (got none)")
    out: list[list[np.ndarray]] = [[] for _ in parts]
    for c in (int(c) for c in classes):
        idx = np.flatnonzero(test_labels == c)
        shares = [int(np.count_nonzero(train_labels[p] == c)) for p in parts]
        counts = _largest_remainder(idx.size, shares)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for j in range(len(parts)):
            out[j].append(idx[bounds[j]:bounds[j + 1]])
    return [np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64) for chunks in out]


def partition_fcil(
    train_labels,
    test_labels,
    class_order: Sequence[int],
    num_tasks: int,
    num_clients: int,
    beta: float,
    seed: int,
    min_samples: int = 6,
    max_redraws: int = 1000,
    task_sizes: Sequence[int] | None = None,
) -> dict:
    """Partition dict (docs/architecture.md): per task its classes, per-client train/test indices, redraws."""
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    train_labels = _as_labels(train_labels, "train_labels")
    test_labels = _as_labels(test_labels, "test_labels")
    tasks_classes = class_incremental_split(class_order, num_tasks, task_sizes)
    rng = np.random.default_rng(int(seed))
    tasks = []
    for classes in tasks_classes:
        train_parts, redraws = dirichlet_partition(
            train_labels, classes, num_clients, beta, rng, min_samples=min_samples, max_redraws=max_redraws
        )
        test_parts = split_test_proportional(test_labels, classes, train_parts, train_labels)
        tasks.append({
            "classes": [int(c) for c in classes],
            "train": [[int(i) for i in p] for p in train_parts],
            "test": [[int(i) for i in p] for p in test_parts],
            "redraws": int(redraws),
        })
    return {
        "beta": float(beta),
        "seed": int(seed),
        "num_clients": int(num_clients),
        "min_samples": int(min_samples),
        "class_order": [int(c) for c in class_order],
        "tasks": tasks,
    }


def validate_partition(obj, train_labels=None, test_labels=None, source: str = "partition") -> None:
    """Light structural check (raises :class:`DataError` naming ``source``).

    Keys present; tasks' classes concatenate to class_order; per task one train and one test list per client,
    no index given twice. With ``train_labels`` / ``test_labels``: each task's indices are exactly the
    samples of its classes.
    """
    def bad(reason: str) -> DataError:
        return DataError(f"invalid partition {source}: {reason}")

    if not isinstance(obj, dict):
        raise bad("top level is not a JSON object")
    missing = [key for key in PARTITION_KEYS if key not in obj]
    if missing:
        raise bad(f"missing keys {missing}")
    k = obj["num_clients"]
    if not _is_int(k) or k < 1:
        raise bad(f"num_clients {k!r} is not a positive integer")
    if not isinstance(obj["tasks"], list) or not obj["tasks"]:
        raise bad("tasks is not a non-empty list")
    seen_classes: list = []
    for t, task in enumerate(obj["tasks"]):
        if not isinstance(task, dict) or any(key not in task for key in TASK_KEYS):
            raise bad(f"task {t} lacks one of the keys {list(TASK_KEYS)}")
        seen_classes += list(task["classes"])
        for split, labels in (("train", train_labels), ("test", test_labels)):
            lists = task[split]
            if not isinstance(lists, list) or len(lists) != k:
                raise bad(f"task {t} {split} must hold one index list per client ({k})")
            try:
                flat = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in lists])
            except (TypeError, ValueError):
                raise bad(f"task {t} {split} holds non-integer indices") from None
            if flat.size and flat.min() < 0:
                raise bad(f"task {t} {split} holds negative indices")
            if np.unique(flat).size != flat.size:
                raise bad(f"task {t} {split}: some index is given to more than one client (or twice)")
            if labels is not None:
                labels = np.asarray(labels)
                if flat.size and flat.max() >= labels.size:
                    raise bad(f"task {t} {split}: index {int(flat.max())} out of range ({labels.size} samples)")
                expected = np.flatnonzero(np.isin(labels, np.asarray(task["classes"], dtype=np.int64)))
                if not np.array_equal(np.sort(flat), expected):
                    raise bad(f"task {t} {split}: indices are not exactly the samples of classes {task['classes']}")
    if seen_classes != list(obj["class_order"]):
        raise bad("the tasks' classes do not concatenate to class_order")


def save_partition(obj: dict, path: str | os.PathLike) -> pathlib.Path:
    """Write the Partition dict as JSON (parent folders created; written to a temp file then renamed)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, separators=(",", ":"))
        fh.write("\n")
    os.replace(tmp, path)
    return path


def load_partition(path: str | os.PathLike, train_labels=None, test_labels=None) -> dict:
    """Read and validate a Partition JSON file (see :func:`validate_partition`); DataError naming the file."""
    path = pathlib.Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"partition file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read partition file {path}: {str(exc).splitlines()[0]}") from None
    validate_partition(obj, train_labels, test_labels, source=str(path))
    return obj
