"""Continual-learning metrics from the accuracy matrix (LoRM spec section 11)."""

from __future__ import annotations

import numpy as np


def final_average_accuracy(last_row: list[float]) -> float:
    """FAA, task mean: (1/T) sum_j a_{T,j}."""
    return float(np.mean(last_row))


def final_average_accuracy_weighted(last_row: list[float], task_test_sizes: list[int]) -> float:
    """FAA, sample weighted: sum_j n_j a_{T,j} / sum_j n_j (what the official code prints as 'Mean accuracy')."""
    n = np.asarray(task_test_sizes[: len(last_row)], dtype=float)
    return float(np.dot(n, last_row) / n.sum())


def average_forgetting(matrix: list[list[float]], eval_after_task: list[int]) -> float | None:
    """Mean over tasks j < T-1 of a_{j,j} - a_{T-1,j}: accuracy when a task was learnt minus at the end.
    The last task is left out (its forgetting is zero by definition). None when not defined (one task, or a
    run evaluated only once such as joint training)."""
    rows = {t: row for t, row in zip(eval_after_task, matrix)}
    last = eval_after_task[-1]
    drops = [rows[j][j] - rows[last][j] for j in range(last) if j in rows]
    if not drops or len(rows) < 2:
        return None
    return float(np.mean(drops))


def average_forgetting_official(matrix: list[list[float]], eval_after_task: list[int]) -> float | None:
    """The official code's convention (fed-mammoth ``compute_forgetting``): the mean over all T tasks, the last
    one (forgetting 0) included, i.e. (T-1)/T times :func:`average_forgetting`."""
    value = average_forgetting(matrix, eval_after_task)
    return None if value is None else value * eval_after_task[-1] / (eval_after_task[-1] + 1)


def summarise(matrix: list[list[float]], eval_after_task: list[int], task_test_sizes: list[int]) -> dict:
    last = matrix[-1]
    return {
        "final_avg_accuracy": final_average_accuracy(last),
        "final_avg_accuracy_weighted": final_average_accuracy_weighted(last, task_test_sizes),
        "avg_forgetting": average_forgetting(matrix, eval_after_task),
        "avg_forgetting_official": average_forgetting_official(matrix, eval_after_task),
    }
