"""Class-incremental split and Dirichlet federated partition (spec section 9.3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorm.data import DataError, PartitionError
from lorm.data.partition import (
    class_incremental_split,
    class_order_from,
    dirichlet_partition,
    load_partition,
    partition_fcil,
    save_partition,
    split_test_proportional,
    validate_partition,
)


def _labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Class-balanced labels in a shuffled order (so indices are not class-contiguous)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


# ----------------------------------------------------------------------------------------------- class order
def test_class_order_from():
    assert class_order_from("natural", 5) == [0, 1, 2, 3, 4]
    a = class_order_from("shuffled", 20, np.random.default_rng(1))
    assert sorted(a) == list(range(20)) and a != list(range(20))
    assert a == class_order_from("shuffled", 20, np.random.default_rng(1)) == class_order_from("shuffled", 20, 1)
    assert class_order_from([2, 0, 1], 3) == [2, 0, 1]
    assert class_order_from(np.array([1, 0]), 2) == [1, 0]
    assert all(type(c) is int for c in class_order_from(np.array([1, 0]), 2))


@pytest.mark.parametrize("spec, n", [([0, 1, 1], 3), ([0, 1], 3), ([0, 1, 3], 3), ([0, 1.5, 2], 3),
                                     ("random", 3), (7, 3), ([True, False], 2)])
def test_class_order_validation(spec, n):
    with pytest.raises(ValueError) as exc:
        class_order_from(spec, n)
    assert "\n" not in str(exc.value)


def test_shuffled_needs_rng():
    with pytest.raises(ValueError, match="Generator"):
        class_order_from("shuffled", 4)


# ----------------------------------------------------------------------------------------------- tasks
def test_class_incremental_split_equal_and_uneven():
    order = list(range(40))
    tasks = class_incremental_split(order, 10)
    assert tasks[0] == [0, 1, 2, 3] and tasks[9] == [36, 37, 38, 39] and len(tasks) == 10
    cars = class_incremental_split(list(range(196)), 10, [20] * 9 + [16])
    assert [len(t) for t in cars] == [20] * 9 + [16] and sum(cars, []) == list(range(196))
    assert class_incremental_split([3, 1, 2, 0], 2) == [[3, 1], [2, 0]]


@pytest.mark.parametrize("order, num_tasks, sizes", [
    (list(range(10)), 3, None), (list(range(10)), 2, [5, 4]), (list(range(10)), 2, [5, 4, 1]),
    (list(range(10)), 2, [10, 0]), (list(range(10)), 0, None), ([0, 0, 1, 2], 2, None),
])
def test_class_incremental_split_errors(order, num_tasks, sizes):
    with pytest.raises(ValueError) as exc:
        class_incremental_split(order, num_tasks, sizes)
    assert "\n" not in str(exc.value)


# ----------------------------------------------------------------------------------------------- dirichlet
def test_dirichlet_partition_covers_task_exactly_once():
    labels = _labels(12, 40)
    classes = [3, 7, 11, 0]
    parts, redraws = dirichlet_partition(labels, classes, 10, 0.5, np.random.default_rng(0), min_samples=6)
    assert len(parts) == 10 and redraws >= 0
    flat = np.concatenate(parts)
    assert np.array_equal(np.sort(flat), np.flatnonzero(np.isin(labels, classes)))  # each exactly once
    assert set(labels[flat].tolist()) <= set(classes)  # nothing from other classes
    assert all(p.size >= 6 for p in parts)
    assert all(np.array_equal(p, np.sort(p)) and p.dtype == np.int64 for p in parts)


def test_dirichlet_partition_is_non_iid_for_small_beta():
    labels = _labels(2, 500)
    parts, _ = dirichlet_partition(labels, [0, 1], 5, 0.1, np.random.default_rng(0), min_samples=0)
    shares = np.array([[np.mean(labels[p] == 0) if p.size else 0.5 for p in parts]])
    assert (np.abs(shares - 0.5) > 0.2).any()
    parts, _ = dirichlet_partition(labels, [0, 1], 5, 1000.0, np.random.default_rng(0), min_samples=0)
    assert all(abs(np.mean(labels[p] == 0) - 0.5) < 0.15 for p in parts)


def test_dirichlet_uses_only_the_given_generator():
    labels = _labels(4, 40)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = dirichlet_partition(labels, [0, 1], 4, 0.5, np.random.default_rng(5))
    assert np.array_equal(np.random.get_state()[1], state)  # global RNG untouched
    b = dirichlet_partition(labels, [0, 1], 4, 0.5, np.random.default_rng(5))
    assert a[1] == b[1] and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    with pytest.raises(TypeError):
        dirichlet_partition(labels, [0, 1], 4, 0.5, 5)


def _seed_needing_redraws(labels, classes, k, beta, min_samples):
    for seed in range(200):
        _, r = dirichlet_partition(labels, classes, k, beta, np.random.default_rng(seed), min_samples=min_samples)
        if r >= 2:
            return seed, r
    raise AssertionError("no seed needed redraws")


def test_redraw_counter():
    labels = _labels(2, 12)
    seed, r = _seed_needing_redraws(labels, [0, 1], 4, 0.5, 4)
    parts, r2 = dirichlet_partition(labels, [0, 1], 4, 0.5, np.random.default_rng(seed), min_samples=4,
                                    max_redraws=r)
    assert r2 == r and all(p.size >= 4 for p in parts)  # exactly r redraws are enough ...
    with pytest.raises(PartitionError):  # ... and r - 1 are not
        dirichlet_partition(labels, [0, 1], 4, 0.5, np.random.default_rng(seed), min_samples=4, max_redraws=r - 1)
    # the successful draw is the (r+1)-th attempt: replay r failing attempts by hand
    rng = np.random.default_rng(seed)
    for _ in range(r):
        _, zero = dirichlet_partition(labels, [0, 1], 4, 0.5, rng, min_samples=0, max_redraws=0)
        assert zero == 0
    replay, _ = dirichlet_partition(labels, [0, 1], 4, 0.5, rng, min_samples=0, max_redraws=0)
    assert all(np.array_equal(x, y) for x, y in zip(parts, replay))


def test_partition_error_one_line_with_fix():
    labels = _labels(1, 100)
    with pytest.raises(PartitionError) as exc:
        dirichlet_partition(labels, [0], 10, 0.01, np.random.default_rng(0), min_samples=8, max_redraws=20)
    msg = str(exc.value)
    assert "\n" not in msg and "after 20 redraws" in msg
    for hint in ("larger beta", "fewer clients", "more samples per class", "smaller min_samples"):
        assert hint in msg
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, DataError)
    with pytest.raises(PartitionError, match="impossible"):  # 20 samples cannot give 4 clients 6 each
        dirichlet_partition(_labels(1, 20), [0], 4, 1.0, np.random.default_rng(0), min_samples=6)


# ----------------------------------------------------------------------------------------------- test split
def test_split_test_proportional_exact_cover_and_proportions():
    train = _labels(6, 40, seed=1)
    test = _labels(6, 13, seed=2)
    classes = [1, 4, 5]
    parts, _ = dirichlet_partition(train, classes, 7, 0.3, np.random.default_rng(3), min_samples=2)
    tparts = split_test_proportional(test, classes, parts, train)
    flat = np.concatenate(tparts)
    assert np.array_equal(np.sort(flat), np.flatnonzero(np.isin(test, classes)))  # every test sample once
    for c in classes:
        n_train = np.array([np.sum(train[p] == c) for p in parts])
        n_test = np.array([np.sum(test[p] == c) for p in tparts])
        assert n_test.sum() == 13
        assert np.all(np.abs(n_test - 13 * n_train / n_train.sum()) < 1)  # largest-remainder rounding
        assert np.all(n_test[n_train == 0] == 0)
    assert all(np.array_equal(p, np.sort(p)) for p in tparts)
    again = split_test_proportional(test, classes, parts, train)
    assert all(np.array_equal(a, b) for a, b in zip(tparts, again))


def test_split_test_proportional_rounding_and_zero_share():
    # class 0: train shares 1:1:0 of 3 test samples -> 2/1/0 (tie -> lower client), never to client 2
    train = np.array([0, 0, 1])
    parts = [np.array([0]), np.array([1]), np.array([2])]
    test = np.array([0, 0, 0, 1, 1])
    tparts = split_test_proportional(test, [0, 1], parts, train)
    assert [p.tolist() for p in tparts] == [[0, 1], [2], [3, 4]]
    # a class with no training sample in the task is split equally
    tparts = split_test_proportional(np.array([2, 2, 2, 2]), [2], parts, train)
    assert [p.size for p in tparts] == [2, 1, 1]


# ----------------------------------------------------------------------------------------------- fcil
def _default_fcil(seed: int, per_class: int = 40, **kw):
    train = _labels(40, per_class, seed=100)
    test = _labels(40, 12, seed=101)
    kw = {"num_tasks": 10, "num_clients": 10, "beta": 0.5, "min_samples": 6} | kw
    return train, test, partition_fcil(train, test, list(range(40)), seed=seed, **kw)


def test_partition_fcil_contract():
    train, test, part = _default_fcil(0)
    assert set(part) == {"beta", "seed", "num_clients", "min_samples", "class_order", "tasks"}
    assert part["beta"] == 0.5 and part["seed"] == 0 and part["num_clients"] == 10 and part["min_samples"] == 6
    assert part["class_order"] == list(range(40)) and len(part["tasks"]) == 10
    for t, task in enumerate(part["tasks"]):
        assert task["classes"] == list(range(4 * t, 4 * t + 4))
        assert len(task["train"]) == 10 and len(task["test"]) == 10 and isinstance(task["redraws"], int)
        flat = np.concatenate([np.asarray(p, dtype=int) for p in task["train"]])
        assert np.array_equal(np.sort(flat), np.flatnonzero(np.isin(train, task["classes"])))
        assert all(len(p) >= 6 for p in task["train"])
        tflat = np.concatenate([np.asarray(p, dtype=int) for p in task["test"]])
        assert np.array_equal(np.sort(tflat), np.flatnonzero(np.isin(test, task["classes"])))
        assert all(type(i) is int for p in task["train"] + task["test"] for i in p)
    assert json.loads(json.dumps(part)) == part
    validate_partition(part, train, test)


def test_partition_fcil_determinism_and_seed_dependence():
    _, _, a = _default_fcil(0)
    _, _, b = _default_fcil(0)
    _, _, c = _default_fcil(1)
    assert a == b
    assert a["tasks"][0]["train"] != c["tasks"][0]["train"]


def test_partition_fcil_consumes_one_rng_task_by_task():
    train, test, part = _default_fcil(7)
    rng = np.random.default_rng(7)
    for task in part["tasks"]:
        parts, redraws = dirichlet_partition(train, task["classes"], 10, 0.5, rng, min_samples=6)
        assert [p.tolist() for p in parts] == task["train"] and redraws == task["redraws"]


def test_partition_fcil_uneven_tasks_and_shuffled_order():
    train, test = _labels(10, 30), _labels(10, 5)
    order = class_order_from("shuffled", 10, np.random.default_rng(0))
    part = partition_fcil(train, test, order, num_tasks=3, num_clients=4, beta=1.0, seed=0, task_sizes=[4, 4, 2])
    assert [t["classes"] for t in part["tasks"]] == [order[:4], order[4:8], order[8:]]
    validate_partition(part, train, test)
    with pytest.raises(ValueError):
        partition_fcil(train, test, order, num_tasks=3, num_clients=4, beta=1.0, seed=0)


# ----------------------------------------------------------------------------------------------- io
def test_save_load_roundtrip_and_validation(tmp_path):
    train, test, part = _default_fcil(0)
    path = save_partition(part, tmp_path / "beta0.5" / "seed0.json")
    assert load_partition(path) == part
    assert load_partition(path, train, test) == part

    dup = json.loads(json.dumps(part))
    dup["tasks"][2]["train"][1].append(dup["tasks"][2]["train"][0][0])
    bad = save_partition(dup, tmp_path / "dup.json")
    with pytest.raises(DataError) as exc:
        load_partition(bad)
    assert str(bad) in str(exc.value) and "task 2" in str(exc.value) and "\n" not in str(exc.value)

    lost = json.loads(json.dumps(part))
    lost["tasks"][0]["train"][0].pop()
    save_partition(lost, tmp_path / "lost.json")
    load_partition(tmp_path / "lost.json")  # structurally fine ...
    with pytest.raises(DataError, match="exactly the samples"):  # ... but not against the labels
        load_partition(tmp_path / "lost.json", train, test)

    missing = {k: v for k, v in part.items() if k != "min_samples"}
    save_partition(missing, tmp_path / "missing.json")
    with pytest.raises(DataError, match="min_samples"):
        load_partition(tmp_path / "missing.json")
    (tmp_path / "garbage.json").write_text("{oops")
    with pytest.raises(DataError, match="garbage.json"):
        load_partition(tmp_path / "garbage.json")
    with pytest.raises(DataError, match="not found"):
        load_partition(tmp_path / "nope.json")
