"""Figures from run metrics files.

``make_figures(run_paths, out_dir)`` writes, per beta:

- ``accuracy_per_task.png``: average accuracy on the tasks seen so far after each task (mean of each row of the
  accuracy matrix), one line per method (mean over seeds, ±std band with several seeds); methods evaluated only
  after the last task (joint) are drawn as a horizontal dashed line.
- ``accuracy_matrix.png``: one lower-triangular heatmap per method (seed mean), shared colour scale 0–100.

With several betas every file name gets the suffix ``_beta<beta>`` (see :func:`figure_paths`). Figures are drawn
with matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from lorm.config import beta_label
from lorm.reporting import MetricsError, load_runs

__all__ = ["FIGURE_STEMS", "DPI", "figure_paths", "make_figures"]

FIGURE_STEMS = ("accuracy_per_task", "accuracy_matrix")
DPI = 150
_ANNOTATE_MAX_TASKS = 10


def figure_paths(betas, out_dir: str = "figures", stems=FIGURE_STEMS) -> list[str]:
    """Paths :func:`make_figures` writes for runs with these betas (no suffix when there is a single beta).

    ``stems`` selects figures (default: all, in :data:`FIGURE_STEMS` order); the order is beta-major.
    """
    unknown = [s for s in stems if s not in FIGURE_STEMS]
    if unknown:
        raise ValueError(f"unknown figure {unknown[0]!r} (known: {', '.join(FIGURE_STEMS)})")
    labels: list[str] = []
    for b in betas:
        if beta_label(b) not in labels:
            labels.append(beta_label(b))
    if len(labels) == 1:
        return [f"{out_dir}/{stem}.png" for stem in stems]
    return [f"{out_dir}/{stem}_beta{label}.png" for label in labels for stem in stems]


def _matrix(run: dict, num_tasks: int) -> np.ndarray:
    """The run's accuracy matrix as a num_tasks x num_tasks array (NaN where not evaluated)."""
    out = np.full((num_tasks, num_tasks), np.nan)
    for t, row in zip(run["eval_after_task"], run["accuracy_matrix"]):
        out[t, : len(row)] = [np.nan if v is None else float(v) for v in row]
    return out


def _nanmean_std(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof = 1) over axis 0, ignoring NaN; std NaN where fewer than two values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0)
        count = np.sum(~np.isnan(stack), axis=0)
        std = np.full(mean.shape, np.nan)
        if stack.shape[0] > 1:
            std = np.where(count > 1, np.nanstd(stack, axis=0, ddof=1), np.nan)
    return mean, std


def _is_final_only(runs: list[dict], num_tasks: int) -> bool:
    return num_tasks > 1 and all(len(r["eval_after_task"]) == 1 for r in runs)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_per_task(groups: dict[str, list[dict]], num_tasks: int, title: str, path: str) -> None:
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    x = np.arange(1, num_tasks + 1)
    # ten colours, then the same colours dashed with square markers (13 methods with the baselines)
    styles = iter((f"C{i % 10}", "-" if i < 10 else "--", "o" if i < 10 else "s") for i in range(1000))
    several_seeds = any(len(runs) > 1 for runs in groups.values())
    lo, hi = math.inf, -math.inf
    for method, runs in groups.items():
        stack = np.stack([_matrix(r, num_tasks) for r in runs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            row_means = np.nanmean(stack, axis=2)  # seeds x tasks: average accuracy on seen tasks
        mean, std = _nanmean_std(row_means)
        band = np.nan_to_num(std, nan=0.0)
        n = len(runs)
        if _is_final_only(runs, num_tasks):
            value, spread = mean[-1], band[-1]
            label = f"{method} (upper bound)" if method == "joint" else f"{method} (after the last task)"
            colour = "black" if method == "joint" else next(styles)[0]
            ax.axhline(value, color=colour, linestyle="--", linewidth=1.5, label=f"{label}, n={n}")
            if spread > 0:
                ax.axhspan(value - spread, value + spread, color=colour, alpha=0.12, linewidth=0)
            lo, hi = min(lo, value - spread), max(hi, value + spread)
            continue
        colour, linestyle, marker = next(styles)
        ok = ~np.isnan(mean)
        ax.plot(x[ok], mean[ok], marker=marker, markersize=4, color=colour, linestyle=linestyle,
                label=f"{method}, n={n}")
        if n > 1:
            ax.fill_between(x[ok], (mean - band)[ok], (mean + band)[ok], color=colour, alpha=0.2, linewidth=0)
        if ok.any():
            lo, hi = min(lo, np.min((mean - band)[ok])), max(hi, np.max((mean + band)[ok]))
    if math.isfinite(lo):
        ax.set_ylim(max(0.0, lo - 5.0), min(101.0, hi + 5.0))
    ax.set_xticks(x)
    ax.set_xlim(0.7, num_tasks + 0.3)
    ax.set_xlabel("After task")
    ax.set_ylabel("Average accuracy on seen tasks (%)")
    ax.set_title(title + ("\nmean ± std over n seeds" if several_seeds else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, frameon=False)
    fig.savefig(path, dpi=DPI)


def _plot_matrices(groups: dict[str, list[dict]], num_tasks: int, title: str, path: str) -> None:
    names = list(groups)
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    cell = 3.4 if num_tasks <= 10 else 3.0
    fig = _new_figure(cell * ncols + 1.0, cell * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    ticks = np.arange(num_tasks)
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_axis_off()
            continue
        method = names[k]
        runs = groups[method]
        mean, _ = _nanmean_std(np.stack([_matrix(r, num_tasks) for r in runs]))
        mean = np.where(np.tril(np.ones_like(mean, dtype=bool)), mean, np.nan)
        image = ax.imshow(np.ma.masked_invalid(mean), vmin=0, vmax=100, cmap="viridis", aspect="equal")
        if num_tasks <= _ANNOTATE_MAX_TASKS:
            size = 9 if num_tasks <= 5 else 6.5
            for i in range(num_tasks):
                for j in range(i + 1):
                    if not np.isnan(mean[i, j]):
                        colour = "white" if mean[i, j] < 55 else "black"
                        ax.text(j, i, f"{mean[i, j]:.0f}", ha="center", va="center", fontsize=size, color=colour)
        label = "joint (upper bound)" if method == "joint" else method
        ax.set_title(f"{label} (n={len(runs)})", fontsize=10)
        step = 1 if num_tasks <= 10 else math.ceil(num_tasks / 10)
        ax.set_xticks(ticks[::step], [str(t + 1) for t in ticks[::step]])
        ax.set_yticks(ticks[::step], [str(t + 1) for t in ticks[::step]])
        ax.set_xlabel("Evaluated task")
        ax.set_ylabel("After task")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="Accuracy (%)", shrink=0.9)
    fig.suptitle(title)
    fig.savefig(path, dpi=DPI)


def make_figures(run_paths: list[str], out_dir: str) -> list[str]:
    """Write the accuracy figures for the given metrics files into ``out_dir``; returns the written paths."""
    runs = load_runs(run_paths)
    experiments = list(dict.fromkeys(str(r["experiment"]) for r in runs))
    if len(experiments) > 1:
        raise MetricsError(
            f"{runs[0]['_path']}: runs of several experiments ({', '.join(experiments)}): make figures per experiment"
        )
    betas = list(dict.fromkeys(float(r["beta"]) for r in runs))
    paths = figure_paths(betas, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for k, beta in enumerate(betas):
        groups: dict[str, list[dict]] = {}
        for run in runs:
            if float(run["beta"]) == beta:
                groups.setdefault(str(run["method"]), []).append(run)
        num_tasks = max(max(r["eval_after_task"]) + 1 for rs in groups.values() for r in rs)
        where = f"{experiments[0]}, β = {beta_label(beta)}"
        per_task, matrix = paths[2 * k], paths[2 * k + 1]
        _plot_per_task(groups, num_tasks, f"Accuracy after each task ({where})", per_task)
        _plot_matrices(groups, num_tasks, f"Accuracy matrix, seed mean ({where})", matrix)
        written += [per_task, matrix]
    return written
