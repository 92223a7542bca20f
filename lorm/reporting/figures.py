"""Figures of the pipeline, drawn with seaborn from the run metrics files (and ``results/tables/paper.csv``).

One function per figure; each takes loaded runs (:func:`lorm.reporting.load_runs`) or a data frame and an output
path *stem*, and writes ``<stem>.png`` and ``<stem>.pdf``:

- :func:`accuracy_per_task` — average accuracy on the tasks seen so far after each task, mean ± std band over seeds;
  methods evaluated only after the last task (joint) are a horizontal dashed line;
- :func:`accuracy_matrices` — one lower-triangular heatmap per method (seed mean), shared colour scale 0–100;
- :func:`accuracy_vs_communication` — final accuracy against the total bytes a client exchanged (log x axis);
- :func:`forgetting_and_accuracy` — grouped bars of FAA and forgetting per method, seed std error bars;
- :func:`faa_vs_beta` — FAA against the Dirichlet β per method (experiments with several β);
- :func:`paper_parity` — our FAA against the paper's, one point per method × data set, diagonal drawn.

Every figure shares one theme (:func:`theme`), one method order (:func:`method_order`) and one colour per method
(:func:`method_style`, Okabe–Ito-like seaborn ``colorblind`` palette); LoRM is drawn thicker, on top and in bold.
:func:`make_figures` writes the figures of one experiment (the Snakemake ``figures`` rule and ``lorm figures``);
:func:`regenerate` writes every figure of ``results/`` in the workflow's layout (the notebook
``workflow/notebooks/figures.ipynb``). Figures use matplotlib's Agg canvas directly (no pyplot, no global state).
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from lorm.config import beta_label
from lorm.methods.names import METHOD_NAMES
from lorm.reporting import MetricsError, as_float, load_runs
from lorm.reporting.table import total_bytes_per_client

__all__ = [
    "BETA_FIGURE", "DPI", "FIGURE_STEMS", "FORMATS", "HIGHLIGHT", "PAPER_FIGURE", "accuracy_matrices",
    "accuracy_per_task", "accuracy_vs_communication", "faa_vs_beta", "figure_paths", "forgetting_and_accuracy",
    "make_figures", "method_order", "method_style", "paper_parity", "per_seed_frame", "regenerate", "theme",
]

#: figures drawn once per β (file suffix ``_beta<β>`` when an experiment has several β)
FIGURE_STEMS = ("accuracy_per_task", "accuracy_matrix", "accuracy_vs_communication", "forgetting_and_accuracy")
#: drawn once per experiment, only when it has several β
BETA_FIGURE = "faa_vs_beta"
#: drawn from results/tables/paper.csv (paper experiments)
PAPER_FIGURE = "paper_parity"
FORMATS = ("png", "pdf")
DPI = 150
HIGHLIGHT = "lorm"
_ANNOTATE_MAX_TASKS = 10
LEGEND_INSIDE_MAX = 8  # more legend entries than this go outside the axes
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "p")


# ------------------------------------------------------------------------------------------- shared style


def theme():
    """Context manager: the seaborn theme of every figure (whitegrid, paper context, colour-blind palette)."""
    import seaborn as sns

    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("paper", font_scale=1.1))
    stack.enter_context(sns.color_palette("colorblind"))
    # PDFs with embedded TrueType fonts (editable text) and no creation date (byte-stable output)
    import matplotlib as mpl

    stack.enter_context(mpl.rc_context({"pdf.fonttype": 42, "svg.hashsalt": "lorm"}))
    return stack


def method_order(methods) -> list[str]:
    """Known methods in the order of :data:`lorm.methods.names.METHOD_NAMES` (LoRM first), then the others
    (variants) in alphabetical order: the same order in every figure whatever subset a run has."""
    methods = list(dict.fromkeys(methods))
    known = [m for m in METHOD_NAMES if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_NAMES)


# colour slots: the default's LoRA methods and the model-merging aggregators first, so that the nine colours of the
# palette besides LoRM's are distinct for them; later methods reuse colours with other markers
_COLOUR_SLOTS = ("lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora", "ta", "knots-ties", "knots-dare-ties",
                 "ties", "dare-ties") + tuple(m for m in METHOD_NAMES if m not in
                                              ("lorm", "joint", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora",
                                               "ta", "knots-ties", "knots-dare-ties", "ties", "dare-ties"))


def method_style(method: str) -> dict:
    """Colour, marker, line width and z-order of a method, fixed across figures and runs.

    LoRM takes the palette's vermillion alone, joint (the upper bound) a neutral grey; every other method a colour
    from the rest of the colour-blind palette by its slot in :data:`_COLOUR_SLOTS` (variants: a stable hash of the
    name), and a marker, so that two methods sharing a colour still differ.
    """
    import seaborn as sns

    palette = sns.color_palette("colorblind", 10)
    if method == HIGHLIGHT:
        return {"color": palette[3], "marker": "o", "linewidth": 2.8, "markersize": 7, "zorder": 10, "bold": True}
    if method == "joint":
        return {"color": (0.25, 0.25, 0.25), "marker": "s", "linewidth": 1.5, "markersize": 5, "zorder": 3,
                "bold": False}
    others = [palette[k] for k in (0, 1, 2, 4, 5, 6, 8, 9, 7)]  # without LoRM's; the palette's grey last (joint's)
    index = _COLOUR_SLOTS.index(method) if method in _COLOUR_SLOTS else zlib.crc32(method.encode()) % 97
    return {"color": others[index % len(others)], "marker": _MARKERS[(index + 1) % len(_MARKERS)], "linewidth": 1.5,
            "markersize": 5, "zorder": 4, "bold": False}


def _palette(methods) -> dict:
    return {m: method_style(m)["color"] for m in methods}


def _bold_highlight(labels) -> None:
    for label in labels:
        if label.get_text() == HIGHLIGHT:
            label.set_fontweight("bold")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, stem) -> list[str]:
    """Write <stem>.png and <stem>.pdf (through a temporary file each: never a half-written figure)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        out = stem.with_name(f"{stem.name}.{fmt}")
        tmp = stem.with_name(f"{stem.name}.tmp.{fmt}")
        fig.savefig(tmp, dpi=DPI, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else {"Software": None})
        os.replace(tmp, out)
        written.append(str(out))
    return written


def _plain_log_ticks(ax) -> None:
    """Log axis labelled 20, 50, 100 instead of 2x10^1 (minor labels overlapped)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _legend(ax, **kwargs) -> None:
    """The axes' legend inside it; with more than LEGEND_INSIDE_MAX entries (config/baselines.yaml draws 25
    methods) outside on the right, the figure widened so that the axes keep their size."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > LEGEND_INSIDE_MAX:
        fig = ax.get_figure()
        ncol = 1 if len(labels) <= 2 * LEGEND_INSIDE_MAX else 2
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + 2.4 * ncol, max(height, 0.2 * math.ceil(len(labels) / ncol) + 0.8))
        if ax.get_legend() is not None:  # seaborn draws one inside by itself
            ax.get_legend().remove()
        legend = fig.legend(handles, labels, loc="outside right upper", ncol=ncol, frameon=False, fontsize=8)
    else:
        legend = ax.legend(frameon=False, fontsize=8, **kwargs)
    if legend is not None:
        _bold_highlight(legend.get_texts())


# --------------------------------------------------------------------------------------------------- data


def _matrix(run: dict, num_tasks: int) -> np.ndarray:
    """The run's accuracy matrix as a num_tasks x num_tasks array (NaN where not evaluated)."""
    out = np.full((num_tasks, num_tasks), np.nan)
    for t, row in zip(run["eval_after_task"], run["accuracy_matrix"]):
        out[t, : len(row)] = [np.nan if v is None else float(v) for v in row]
    return out


def _num_tasks(runs: list[dict]) -> int:
    return max(max(r["eval_after_task"]) + 1 for r in runs)


def per_seed_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per run: experiment, beta, method, seed, faa, faa_weighted, forgetting, total_mb (MB per client)."""
    records = []
    for run in runs:
        try:
            total = total_bytes_per_client(run) * 1e-6
        except KeyError as exc:
            raise MetricsError(f"{run['_path']}: missing key {exc} in the metrics JSON") from None
        records.append({
            "experiment": str(run["experiment"]), "beta": float(run["beta"]), "method": str(run["method"]),
            "seed": int(run["seed"]), "faa": as_float(run["final_avg_accuracy"]),
            "faa_weighted": as_float(run["final_avg_accuracy_weighted"]),
            "forgetting": as_float(run["avg_forgetting"]), "total_mb": total,
        })
    return pd.DataFrame.from_records(records)


def _runs_of(runs) -> list[dict]:
    """Loaded runs from paths or already loaded dicts."""
    runs = list(runs)
    if runs and isinstance(runs[0], dict):
        return runs
    return load_runs(runs)


def _single_beta(runs: list[dict], what: str) -> float:
    betas = sorted({float(r["beta"]) for r in runs})
    if len(betas) != 1:
        raise MetricsError(f"{runs[0]['_path']}: {what} needs the runs of one β, got {len(betas)}")
    return betas[0]


def _title(runs: list[dict]) -> str:
    return f"{runs[0]['experiment']}, β = {beta_label(float(runs[0]['beta']))}"


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


# ------------------------------------------------------------------------------------------------ figures


def accuracy_per_task(runs, stem) -> list[str]:
    """Average accuracy on the tasks seen so far after each task, one line per method (one β)."""
    import seaborn as sns

    runs = _runs_of(runs)
    _single_beta(runs, "accuracy_per_task")
    num_tasks = _num_tasks(runs)
    rows, final_only = [], {}
    for run in runs:
        method = str(run["method"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            seen = np.nanmean(_matrix(run, num_tasks), axis=1)  # mean of each row: accuracy on seen tasks
        if num_tasks > 1 and len(run["eval_after_task"]) == 1:
            final_only.setdefault(method, []).append(seen[-1])
            continue
        rows += [{"method": method, "seed": run["seed"], "task": t + 1, "accuracy": seen[t]}
                 for t in range(num_tasks) if not np.isnan(seen[t])]
    frame = pd.DataFrame(rows, columns=["method", "seed", "task", "accuracy"])
    several_seeds = frame.groupby("method")["seed"].nunique().gt(1).any() if len(frame) else False
    with theme():
        fig = _new_figure(7.0, 4.5)
        ax = fig.add_subplot()
        for method in method_order(frame["method"]):
            style = method_style(method)
            part = frame[frame["method"] == method]
            n = part["seed"].nunique()
            sns.lineplot(data=part, x="task", y="accuracy", ax=ax, errorbar="sd" if n > 1 else None,
                         color=style["color"], marker=style["marker"], markersize=style["markersize"],
                         linewidth=style["linewidth"], label=f"{method} (n={n})", zorder=style["zorder"])
        for method in method_order(final_only):
            values = np.asarray(final_only[method], dtype=float)
            style = method_style(method)
            value = float(np.nanmean(values))
            label = "upper bound" if method == "joint" else "after the last task"
            ax.axhline(value, color=style["color"], linestyle="--", linewidth=1.5,
                       label=f"{method} ({label}, n={len(values)})")
            if len(values) > 1:
                spread = float(np.nanstd(values, ddof=1))
                ax.axhspan(value - spread, value + spread, color=style["color"], alpha=0.12, linewidth=0)
        ax.set_xticks(range(1, num_tasks + 1, 1 if num_tasks <= 20 else math.ceil(num_tasks / 20)))
        ax.set_xlim(0.7, num_tasks + 0.3)
        ax.set_xlabel("After task")
        ax.set_ylabel("Average accuracy on seen tasks (%)")
        ax.set_title(f"Accuracy after each task ({_title(runs)})" + ("\nmean ± std over seeds" if several_seeds
                                                                     else ""))
        _legend(ax, loc="best")
        return _save(fig, stem)


def accuracy_matrices(runs, stem) -> list[str]:
    """One heatmap per method: accuracy on task j (column) after task i (row), seed mean (one β)."""
    import seaborn as sns

    runs = _runs_of(runs)
    _single_beta(runs, "accuracy_matrices")
    num_tasks = _num_tasks(runs)
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(str(run["method"]), []).append(run)
    names = method_order(groups)
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    cell = 3.4 if num_tasks <= 10 else 3.0
    labels = [str(t + 1) for t in range(num_tasks)]
    step = 1 if num_tasks <= 10 else math.ceil(num_tasks / 10)
    with theme():
        fig = _new_figure(cell * ncols + 1.0, cell * nrows + 0.6)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= len(names):
                ax.set_axis_off()
                continue
            method = names[k]
            mean, _ = _nanmean_std(np.stack([_matrix(r, num_tasks) for r in groups[method]]))
            mean = np.where(np.tril(np.ones_like(mean, dtype=bool)), mean, np.nan)
            frame = pd.DataFrame(mean, index=labels, columns=labels)
            sns.heatmap(frame, ax=ax, vmin=0, vmax=100, cmap="viridis", square=True, cbar=False,
                        annot=num_tasks <= _ANNOTATE_MAX_TASKS, fmt=".0f",
                        annot_kws={"fontsize": 9 if num_tasks <= 5 else 6.5}, xticklabels=step, yticklabels=step)
            label = "joint (upper bound)" if method == "joint" else method
            ax.set_title(f"{label} (n={len(groups[method])})", fontsize=10,
                         fontweight="bold" if method == HIGHLIGHT else "normal")
            ax.grid(False)  # the theme's grid would cross the cells
            ax.set_xlabel("Evaluated task")
            ax.set_ylabel("After task")
            ax.tick_params(axis="y", rotation=0)
        fig.colorbar(axes.flat[0].collections[0], ax=list(axes.flat), label="Accuracy (%)", shrink=0.9)
        fig.suptitle(f"Accuracy matrix, seed mean ({_title(runs)})")
        return _save(fig, stem)


def accuracy_vs_communication(runs, stem) -> list[str]:
    """Final accuracy against the total MB a client exchanged over the run (log x), error bars over seeds.

    Methods without communication (joint, centralised) cannot sit on a log axis: they are a dashed line."""
    runs = _runs_of(runs)
    _single_beta(runs, "accuracy_vs_communication")
    frame = per_seed_frame(runs)
    points = []  # (MB, FAA, method) of the methods that communicate, labelled once the axes are final
    with theme():
        fig = _new_figure(6.5, 4.5)
        ax = fig.add_subplot()
        for method in method_order(frame["method"]):
            part = frame[frame["method"] == method]
            style = method_style(method)
            y, ystd = part["faa"].mean(), part["faa"].std(ddof=1) if len(part) > 1 else 0.0
            x, xstd = part["total_mb"].mean(), part["total_mb"].std(ddof=1) if len(part) > 1 else 0.0
            if not x > 0:
                ax.axhline(y, color=style["color"], linestyle="--", linewidth=1.2,
                           label=f"{method} (no communication, n={len(part)})")
                continue
            ax.errorbar(x, y, yerr=ystd or None, xerr=xstd or None, fmt=style["marker"], color=style["color"],
                        markersize=style["markersize"] + 2, capsize=3, zorder=style["zorder"],
                        markeredgecolor="black" if method == HIGHLIGHT else style["color"],
                        label=f"{method} (n={len(part)})")
            points.append((x, y, method))
        ax.set_xscale("log")
        _plain_log_ticks(ax)
        ax.set_xlabel("Total communication per client over the run (MB, log scale)")
        ax.set_ylabel("Final average accuracy (%)")
        ax.set_title(f"Accuracy against communication ({_title(runs)})")
        _legend(ax, loc="best")
        _label_points(fig, ax, points)
        return _save(fig, stem)


def _label_points(fig, ax, points) -> None:
    """Name each point beside it where the name overlaps no other name, marker or the legend; LoRM first.

    Methods with equal communication (every LoRA aggregator) sit on one vertical line, so fixed offsets would
    print the names over each other; a point whose name fits nowhere keeps only its legend entry."""
    fig.canvas.draw()  # final layout, so that the extents below are those of the saved figure
    renderer = fig.canvas.get_renderer()
    to_pixels = ax.transData.transform
    markers = [to_pixels((x, y)) for x, y, _ in points]
    taken = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() is not None else []
    frame = ax.get_window_extent(renderer)
    offsets = ((6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"),
               (-6, -4, "right", "top"))
    for k in sorted(range(len(points)), key=lambda i: (points[i][2] != HIGHLIGHT, -points[i][1])):
        x, y, method = points[k]
        for dx, dy, ha, va in offsets:
            text = ax.annotate(method, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va,
                               fontsize=8, fontweight="bold" if method == HIGHLIGHT else "normal")
            box = text.get_window_extent(renderer)
            hits_marker = any(j != k and box.expanded(1.0, 1.0).contains(*m) for j, m in enumerate(markers))
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not hits_marker and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
            text.remove()


def forgetting_and_accuracy(runs, stem) -> list[str]:
    """Grouped bars per method: final average accuracy and forgetting, seed std error bars."""
    import seaborn as sns

    runs = _runs_of(runs)
    _single_beta(runs, "forgetting_and_accuracy")
    frame = per_seed_frame(runs)
    order = method_order(frame["method"])
    long = frame.melt(id_vars=["method", "seed"], value_vars=["faa", "forgetting"], var_name="metric")
    names = {"faa": "Final average accuracy (%)", "forgetting": "Forgetting (pp)"}
    with theme():
        fig = _new_figure(max(6.0, 0.9 * len(order) + 3.0), 4.2)
        axes = fig.subplots(1, 2)
        for ax, metric in zip(axes, ("faa", "forgetting")):
            part = long[long["metric"] == metric].dropna(subset=["value"])
            shown = [m for m in order if m in set(part["method"])]
            sns.barplot(data=part, x="method", y="value", hue="method", order=shown, hue_order=shown,
                        palette=_palette(shown), errorbar="sd", capsize=0.2, err_kws={"linewidth": 1.0}, ax=ax,
                        legend=False)
            for patch, method in zip(ax.patches, shown):
                if method == HIGHLIGHT:
                    patch.set_edgecolor("black")
                    patch.set_linewidth(1.8)
            ax.set_xlabel("")
            ax.set_ylabel(names[metric])
            ax.tick_params(axis="x", rotation=30 if len(shown) > 3 else 0)
            _bold_highlight(ax.get_xticklabels())
        fig.suptitle(f"Accuracy and forgetting per method ({_title(runs)}; bars: seed mean, whiskers: ± std)")
        return _save(fig, stem)


def faa_vs_beta(runs, stem) -> list[str]:
    """FAA against the Dirichlet β per method (several β of one experiment), mean ± std over seeds."""
    import seaborn as sns

    runs = _runs_of(runs)
    frame = per_seed_frame(runs)
    if frame["beta"].nunique() < 2:
        raise MetricsError(f"{runs[0]['_path']}: faa_vs_beta needs runs with several β")
    order = method_order(frame["method"])
    with theme():
        fig = _new_figure(6.5, 4.5)
        ax = fig.add_subplot()
        for method in order:
            part = frame[frame["method"] == method]
            style = method_style(method)
            sns.lineplot(data=part, x="beta", y="faa", ax=ax, errorbar="sd", err_style="bars",
                         err_kws={"capsize": 3}, color=style["color"], marker=style["marker"],
                         markersize=style["markersize"], linewidth=style["linewidth"], label=method,
                         zorder=style["zorder"])
        betas = sorted(frame["beta"].unique())
        ax.set_xscale("log")
        ax.set_xticks(betas, [beta_label(b) for b in betas])
        ax.minorticks_off()
        ax.set_xlabel("Dirichlet β (log scale; smaller = less IID)")
        ax.set_ylabel("Final average accuracy (%)")
        ax.set_title(f"β sensitivity ({runs[0]['experiment']}; mean ± std over seeds)")
        _legend(ax, loc="best")
        return _save(fig, stem)


def paper_parity(paper: pd.DataFrame | str, stem) -> list[str]:
    """Our sample-weighted FAA against the paper's (results/tables/paper.csv), one point per method × data set × β
    (marker = data set, size = β)."""
    import seaborn as sns

    source = paper if isinstance(paper, str) else "paper table"
    frame = pd.read_csv(paper) if isinstance(paper, str) else paper.copy()
    needed = ("our_method", "dataset", "ours_faa_weighted_mean", "ours_faa_weighted_std", "paper_value")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MetricsError(f"{source}: missing column '{missing[0]}' (expected results/tables/paper.csv)")
    frame["paper"] = pd.to_numeric(frame["paper_value"], errors="coerce")
    frame = frame.dropna(subset=["paper", "ours_faa_weighted_mean"])
    with theme():
        fig = _new_figure(6.0, 5.5)
        ax = fig.add_subplot()
        if len(frame):
            order = method_order(frame["our_method"])
            datasets = list(dict.fromkeys(frame["dataset"]))
            # one point per method x data set x β: the β sets the marker size, so a data set's β are told apart
            size = {}
            if "beta" in frame.columns and frame["beta"].nunique() > 1:
                frame["β"] = pd.to_numeric(frame["beta"], errors="coerce")
                size = {"size": "β", "sizes": (35, 140)}
            sns.scatterplot(data=frame.rename(columns={"our_method": "method", "dataset": "data set"}), x="paper",
                            y="ours_faa_weighted_mean", hue="method", hue_order=order, palette=_palette(order),
                            style="data set", style_order=datasets, s=70, ax=ax, zorder=5, **size)
            ax.errorbar(frame["paper"], frame["ours_faa_weighted_mean"],
                        yerr=frame["ours_faa_weighted_std"].fillna(0.0), fmt="none", ecolor="0.4", capsize=2,
                        linewidth=0.8, zorder=4)
            low = float(min(frame["paper"].min(), frame["ours_faa_weighted_mean"].min())) - 5.0
            high = float(max(frame["paper"].max(), frame["ours_faa_weighted_mean"].max())) + 5.0
        else:  # nothing to compare yet: an empty frame with the diagonal
            low, high = 0.0, 100.0
        ax.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=1.0, label="ours = paper")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel("Paper: FAA (%)")
        ax.set_ylabel("Ours: sample-weighted FAA (%), mean ± std over seeds")
        ax.set_title("Our results against the paper's")
        _legend(ax, loc="upper left")
        return _save(fig, stem)


# ---------------------------------------------------------------------------------------- files and layout


_DRAW = {
    "accuracy_per_task": accuracy_per_task,
    "accuracy_matrix": accuracy_matrices,
    "accuracy_vs_communication": accuracy_vs_communication,
    "forgetting_and_accuracy": forgetting_and_accuracy,
}


def _beta_labels(betas) -> list[str]:
    return list(dict.fromkeys(beta_label(b) for b in betas))


def figure_paths(betas, out_dir: str = "figures", stems=None, formats=FORMATS) -> list[str]:
    """Files :func:`make_figures` writes for runs with these betas, beta-major, then stem, then format.

    One β: ``<out_dir>/<stem>.<format>``; several: ``<stem>_beta<β>.<format>`` plus ``faa_vs_beta.<format>``.
    ``stems`` selects figures (default: every figure that applies).
    """
    labels = _beta_labels(betas)
    if stems is None:
        stems = list(FIGURE_STEMS) + ([BETA_FIGURE] if len(labels) > 1 else [])
    unknown = [s for s in stems if s not in FIGURE_STEMS and s != BETA_FIGURE]
    if unknown:
        raise ValueError(f"unknown figure {unknown[0]!r} (known: {', '.join(FIGURE_STEMS + (BETA_FIGURE,))})")
    per_beta = [s for s in stems if s in FIGURE_STEMS]
    if len(labels) == 1:
        names = list(per_beta)
    else:
        names = [f"{stem}_beta{label}" for label in labels for stem in per_beta]
    if BETA_FIGURE in stems and len(labels) > 1:
        names.append(BETA_FIGURE)
    return [f"{out_dir}/{name}.{fmt}" for name in names for fmt in formats]


def make_figures(runs, out_dir: str, stems=None) -> list[str]:
    """Write the figures of one experiment's runs (paths or loaded dicts) into ``out_dir``; returns the paths
    in :func:`figure_paths` order."""
    runs = _runs_of(runs)
    experiments = list(dict.fromkeys(str(r["experiment"]) for r in runs))
    if len(experiments) > 1:
        raise MetricsError(
            f"{runs[0]['_path']}: runs of several experiments ({', '.join(experiments)}): make figures per experiment"
        )
    betas = list(dict.fromkeys(float(r["beta"]) for r in runs))
    expected = figure_paths(betas, out_dir, stems)
    wanted = set(stems) if stems is not None else set(FIGURE_STEMS) | {BETA_FIGURE}
    written: list[str] = []
    for beta in betas:
        group = [r for r in runs if float(r["beta"]) == beta]
        suffix = "" if len(betas) == 1 else f"_beta{beta_label(beta)}"
        for stem, draw in _DRAW.items():
            if stem in wanted:
                written += draw(group, f"{out_dir}/{stem}{suffix}")
    if BETA_FIGURE in wanted and len(betas) > 1:
        written += faa_vs_beta(runs, f"{out_dir}/{BETA_FIGURE}")
    order = {path: k for k, path in enumerate(expected)}
    return sorted(written, key=order.__getitem__)


def discover_runs(root: str = "results/runs") -> list[dict]:
    """Every ``<root>/**/metrics.json``, loaded, in sorted path order."""
    paths = sorted(glob.glob(os.path.join(root, "**", "metrics.json"), recursive=True))
    if not paths:
        raise MetricsError(f"{root}: no metrics.json files (run the pipeline first)")
    return load_runs(paths)


def regenerate(runs, out_dir: str = "figures", stems=None) -> list[str]:
    """Write the figures of every experiment in the workflow's layout; returns the written paths.

    One experiment: ``<out_dir>/<stem>[_beta<β>].<format>``; several: ``<out_dir>/<experiment>/beta<β>/<stem>``
    and, for an experiment with several β, ``<out_dir>/<experiment>/faa_vs_beta``.
    """
    runs = _runs_of(runs)
    experiments = list(dict.fromkeys(str(r["experiment"]) for r in runs))
    if len(experiments) == 1:
        return make_figures(runs, out_dir, stems)
    written: list[str] = []
    wanted = list(stems) if stems is not None else list(FIGURE_STEMS) + [BETA_FIGURE]
    for name in experiments:
        mine = [r for r in runs if str(r["experiment"]) == name]
        betas = list(dict.fromkeys(float(r["beta"]) for r in mine))
        per_beta = [s for s in wanted if s in FIGURE_STEMS]
        for beta in betas:
            group = [r for r in mine if float(r["beta"]) == beta]
            if per_beta:
                written += make_figures(group, f"{out_dir}/{name}/beta{beta_label(beta)}", per_beta)
        if BETA_FIGURE in wanted and len(betas) > 1:
            written += make_figures(mine, f"{out_dir}/{name}", [BETA_FIGURE])
    return written


def experiment_names(runs) -> list[str]:
    return list(dict.fromkeys(str(r["experiment"]) for r in _runs_of(runs)))


__all__ += ["discover_runs", "experiment_names"]
