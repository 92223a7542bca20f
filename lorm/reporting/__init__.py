"""Tables and figures from run metrics files (``results/runs/.../metrics.json``).

Reporting reads the metrics JSON only (see docs/architecture.md, "Metrics"); it never touches models or data.

- :func:`lorm.reporting.table.write_tables` — CSV + Markdown table, mean ± std over seeds.
- :func:`lorm.reporting.figures.make_figures` — the seaborn figures of one experiment (PNG + PDF); the notebook
  ``workflow/notebooks/figures.ipynb`` redraws every figure with :func:`lorm.reporting.figures.regenerate`.
- :func:`lorm.reporting.readme.write_readme_results` — the README's results block (``snakemake readme_results``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["MetricsError", "REQUIRED_KEYS", "as_float", "get_key", "load_run", "load_runs"]


class MetricsError(ValueError):
    """A metrics file is missing or lacks a required key; ``str(error)`` is one line naming the file."""


# dotted keys every metrics file must have (values may be null where noted in docs/architecture.md)
REQUIRED_KEYS = (
    "experiment",
    "method",
    "seed",
    "beta",
    "eval_after_task",
    "accuracy_matrix",
    "final_avg_accuracy",
    "final_avg_accuracy_weighted",
    "avg_forgetting",
    "communication.upload_bytes_per_client_round",
    "communication.download_bytes_per_client_round",
    "wall_time_s.train",
)

_MISSING = object()


def get_key(data: dict, dotted: str, default: Any = _MISSING) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; raises KeyError(dotted) when absent and no default is given."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
        node = node[part]
    return node


def load_run(path: str | os.PathLike) -> dict:
    """Read and check one metrics file; the returned dict has an extra ``"_path"`` entry."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise MetricsError(f"{path}: metrics file not found") from None
    except json.JSONDecodeError as exc:
        raise MetricsError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise MetricsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key in REQUIRED_KEYS:
        try:
            get_key(data, key)
        except KeyError:
            raise MetricsError(f"{path}: missing key '{key}' in the metrics JSON") from None
    rows, after = data["accuracy_matrix"], data["eval_after_task"]
    if not isinstance(rows, list) or not isinstance(after, list) or len(rows) != len(after) or not rows:
        raise MetricsError(f"{path}: 'accuracy_matrix' must have one row per entry of 'eval_after_task'")
    for row, t in zip(rows, after):
        if not isinstance(row, list) or not isinstance(t, int) or len(row) != t + 1:
            raise MetricsError(
                f"{path}: row of 'accuracy_matrix' after task {t} must hold {t + 1 if isinstance(t, int) else '?'}"
                " accuracies (tasks 0..t)"
            )
    data["_path"] = path
    return data


def load_runs(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Load several metrics files; an empty list or two files of the same run are errors."""
    runs = [load_run(p) for p in paths]
    if not runs:
        raise MetricsError("no metrics files given")
    seen: dict[tuple, str] = {}
    for run in runs:
        ident = (run["experiment"], float(run["beta"]), run["method"], run["seed"])
        if ident in seen:
            raise MetricsError(
                f"{run['_path']}: same experiment, beta, method and seed as {seen[ident]} (pass each run once)"
            )
        seen[ident] = run["_path"]
    return runs


def as_float(value: Any) -> float:
    """Float for numbers, NaN for null (e.g. the joint run's forgetting)."""
    if value is None:
        return math.nan
    return float(value)
