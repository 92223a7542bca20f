"""Report of the merge benchmark: Markdown + CSV table, per-task bar figure, CKA heatmap figure.

Rows are the methods (the two reference rows first). Our columns come from the metrics files of
``python -m lorm.mergebench merge``; the paper's columns are copied VERBATIM (the value strings of
``paper-tables-knots.csv``) and labelled as the paper's: CLIP ViT-B/32 LoRA r16 on 8 vision tasks (Table 1
normalised accuracy, Table 4 joint Hits@k). They are comparable with ours only when our run is the same
setting (backbone clip-vit-b32 on the 8 vision data sets); the table says which case applies.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend change), as
lorm/reporting/figures.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Sequence

from .config import BenchError
from .evaluate import ALIGNMENT_FORMAT, MERGE_METHODS, METRICS_FORMAT, REFERENCES

__all__ = ["PAPER_SETTING", "PAPER_METHODS", "load_runs", "load_paper", "paper_values", "build_rows",
           "render_markdown", "write_csv", "per_task_figure", "alignment_figure", "write_report"]

DPI = 150
ORDER = REFERENCES + MERGE_METHODS
PAPER_SETTING = "CLIP ViT-B/32 LoRA r16, 8 vision tasks"
PAPER_MODEL = "CLIP ViT-B/32 LoRA r16"
PAPER_JOINT_MODEL = "CLIP ViT-B/32 LoRA r16 (joint 748-label head)"
#: our method -> the paper's method name in the per-task tables (None = no paper row)
PAPER_METHODS = {"base": None, "finetuned": "Fine-tuned (individual LoRA models)", "ta": "TA", "ties": "TIES",
                 "dare-ties": "DARE-TIES", "knots-ta": None, "knots-ties": "KnOTS-TIES",
                 "knots-dare-ties": "KnOTS-DARE-TIES"}
#: our method -> the paper's joint-benchmark row (the fine-tuned reference is the paper's ensemble)
PAPER_JOINT_METHODS = {**PAPER_METHODS, "finetuned": "Ensemble (8 fine-tuned models, max over models)"}
PAPER_NOTES = {"knots-ta": "not reported (equals TA, spec 5)", "base": "not reported"}
VISION8 = ("cars196", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "sun397", "svhn")
HITS = ("1", "3", "5")


def _read_json(path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise BenchError(f"metrics file {path} not found (run `python -m lorm.mergebench merge` first)") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def load_runs(paths: Sequence) -> list[dict]:
    """Metrics files in the canonical method order; BenchError on unknown formats, duplicates or mixed runs."""
    runs = {}
    for path in paths:
        run = _read_json(path)
        if not isinstance(run, dict) or run.get("format") != METRICS_FORMAT:
            raise BenchError(f"{path} is not a metrics file of lorm.mergebench merge (format {METRICS_FORMAT})")
        if run["method"] in runs:
            raise BenchError(f"{path}: method {run['method']} given twice")
        runs[run["method"]] = run
    if not runs:
        raise BenchError("no metrics files given")
    experiments = {r["experiment"] for r in runs.values()}
    if len(experiments) > 1:
        raise BenchError(f"metrics files of different experiments: {', '.join(sorted(experiments))}")
    tasks = {tuple(r["tasks"]) for r in runs.values()}
    if len(tasks) > 1:
        raise BenchError("metrics files with different task lists")
    return [runs[m] for m in ORDER if m in runs]


def load_paper(path) -> list[dict]:
    """The rows of paper-tables-knots.csv as dicts of strings (values kept verbatim)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise BenchError(f"paper table {path} not found") from None
    needed = {"table", "model", "method", "dataset", "metric", "value"}
    if not rows or not needed <= set(rows[0]):
        raise BenchError(f"{path}: expected the columns {', '.join(sorted(needed))}")
    return rows


def _paper_row(rows, table, model, method, dataset, metric):
    for row in rows:
        if (row["table"], row["model"], row["method"], row["dataset"], row["metric"]) == \
                (table, model, method, dataset, metric):
            return row
    return None


def paper_values(rows: list[dict], method: str) -> dict:
    """The paper's numbers for one of our methods: {"normalized_acc" | "abs_acc" | "hits@k": row} (verbatim)."""
    out = {}
    name = PAPER_METHODS.get(method)
    if name is not None:
        metric = "abs_acc" if method == "finetuned" else "normalized_acc"
        row = _paper_row(rows, "Table1", PAPER_MODEL, name, "Avg", metric)
        if row is not None:
            out[metric] = row
    jname = PAPER_JOINT_METHODS.get(method)
    if jname is not None:
        for k in HITS:
            row = _paper_row(rows, "Table4", PAPER_JOINT_MODEL, jname, "Joint-748", f"hits@{k}")
            if row is not None:
                out[f"hits@{k}"] = row
    return out


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _hp_text(hp) -> str:
    if not hp:
        return "–"
    names = {"lam": "λ", "topk": "topK", "dare_p": "p", "seed": "seed"}
    return ", ".join(f"{names.get(k, k)}={v:g}" if isinstance(v, float) else f"{names.get(k, k)}={v}"
                     for k, v in hp.items())


def build_rows(runs: list[dict], paper: list[dict]) -> list[dict]:
    """One dict per method with our numbers and the paper's (verbatim strings)."""
    rows = []
    for run in runs:
        pt = run["per_task"]["test"]
        joint = run.get("joint") or {}
        hits = (joint.get("test") or {}).get("hits", {})
        pv = paper_values(paper, run["method"])
        wall = run.get("wall_time_s", {})
        rows.append({
            "method": run["method"], "label": run["label"], "kind": run["kind"],
            "norm_mean": pt["mean_normalised"], "abs_mean": pt["mean_abs"],
            "hits": {k: hits.get(k) for k in ("1", "3", "5", "10")},
            "chosen_per_task": run["per_task"].get("chosen"), "chosen_joint": joint.get("chosen"),
            "per_task_normalised": pt["normalised"], "per_task_abs": pt["abs"],
            "merge_mean_s": wall.get("merge_mean"), "alignment_s": wall.get("alignment"),
            "search_s": wall.get("search"), "total_s": wall.get("total"),
            "search_evaluations": run.get("search_evaluations"),
            "paper": {k: v["value"] for k, v in pv.items()}, "paper_rows": pv,
            "paper_note": PAPER_NOTES.get(run["method"], ""),
        })
    return rows


def _same_setting(runs) -> bool:
    run = runs[0]
    return run["backbone"] == "clip-vit-b32" and tuple(run.get("task_datasets", ())) == VISION8


def _grid_edges(runs: list[dict]) -> list[str]:
    """Chosen values at the end of their grid (the optimum may lie outside it)."""
    grids = {"lam": "lambda_grid", "topk": "topk_grid", "dare_p": "dare_p_grid"}
    found = []
    for run in runs:
        mcfg = (run.get("config") or {}).get("merge") or {}
        for part in ("per_task", "joint"):
            chosen = (run.get(part) or {}).get("chosen") or {}
            for key, grid_key in grids.items():
                grid = mcfg.get(grid_key)
                if key in chosen and grid and len(grid) > 1 and chosen[key] in (min(grid), max(grid)):
                    found.append(f"{run['label']} ({part.replace('_', '-')}) {key}={chosen[key]:g}")
    return found


def _checks(runs: list[dict]) -> list[str]:
    by = {r["method"]: r for r in runs}
    lines = []
    edges = _grid_edges(runs)
    if edges:
        lines.append("- Chosen values at the edge of their grid (the optimum may lie outside it): "
                     + "; ".join(edges) + ".")
    if "knots-ta" in by:
        c = by["knots-ta"]["checks"].get("knots_ta_equals_ta")
        if c:
            lines.append(f"- KnOTS-TA vs TA merged update at λ={c['lam']:g}: max |difference| "
                         f"{c['max_abs_diff']:.2e}, relative Frobenius {c['relative_frobenius']:.2e} -> "
                         f"{'equal' if c['equal'] else 'NOT equal'} (spec 5: KnOTS-TA = TA).")
        if "ta" in by:
            a, b = by["ta"], by["knots-ta"]
            same_hp = a["per_task"]["chosen"] == b["per_task"]["chosen"]
            sa = [s["score"] for s in a["per_task"]["steps"]]
            sb = [s["score"] for s in b["per_task"]["steps"]]
            diff = max((abs(x - y) for x, y in zip(sa, sb)), default=0.0) if len(sa) == len(sb) else float("nan")
            dt = abs(a["per_task"]["test"]["mean_normalised"] - b["per_task"]["test"]["mean_normalised"])
            lines.append(f"- TA and KnOTS-TA runs: same chosen hyperparameters: {'yes' if same_hp else 'NO'}; "
                         f"max |difference| of the validation scores over the {len(sa)} search steps: {diff:.2e}; "
                         f"|difference| of the test normalised mean: {dt:.2e} points.")
    if "finetuned" in by:
        c = by["finetuned"]["checks"].get("finetuned_reproduces_denominators")
        if c:
            lines.append(f"- Fine-tuned models re-evaluated by the merge job reproduce the stored test accuracies "
                         f"(denominators) to {c['max_abs_diff_points']:.2e} points.")
    return lines


def render_markdown(runs: list[dict], paper: list[dict], alignment: dict | None = None) -> str:
    rows = build_rows(runs, paper)
    run0 = runs[0]
    tasks = run0["tasks"]
    same = _same_setting(runs)
    ours = f"{run0['backbone']} LoRA r{run0['lora_rank']}, {len(tasks)} tasks"
    classes = run0.get("task_classes") or {}
    if classes and not same:
        ours += " (" + "; ".join(f"{t} = {', '.join(classes[t])}" for t in tasks if t in classes) + ")"
    paper_head = f"paper† ({PAPER_SETTING})"
    out = [f"# KnOTS merge benchmark: {run0['experiment']}", "",
           f"Our setting: {ours}; joint label space of {run0['num_joint_labels']} labels. Test split, evaluated once "
           f"with the hyperparameters chosen on validation (per-task: mean normalised accuracy; joint: Hits@k). "
           f"Normalised accuracy = 100 x merged / fine-tuned accuracy of the same task "
           f"(denominators: {run0['denominators']['source']}).", "",
           f"| Method | ours: norm. acc. % (mean) | ours: abs. acc. % | ours: Hits@1 | ours: Hits@3 | ours: Hits@5 "
           f"| chosen (per-task) | chosen (joint) | mean merge s | {paper_head}: norm. acc. % "
           f"| {paper_head}: Hits@1 / 3 / 5 |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["paper"]
        if r["method"] == "finetuned":
            p_norm = f"{p['abs_acc']} (abs.)" if "abs_acc" in p else "–"
        else:
            p_norm = p.get("normalized_acc") or r["paper_note"] or "not found"
        hits = [p.get(f"hits@{k}") for k in HITS]
        p_hits = " / ".join(h if h else "?" for h in hits) if any(hits) else (r["paper_note"] or "not found")
        label = r["label"] + (" (ensemble for Hits@k)" if r["method"] == "finetuned" else "")
        out.append(f"| {label} | {_fmt(r['norm_mean'])} | {_fmt(r['abs_mean'])} | {_fmt(r['hits']['1'])} | "
                   f"{_fmt(r['hits']['3'])} | {_fmt(r['hits']['5'])} | {_hp_text(r['chosen_per_task'])} | "
                   f"{_hp_text(r['chosen_joint'])} | {_fmt(r['merge_mean_s'], 2)} | {p_norm} | {p_hits} |")
    if same:
        note = ("† The paper's numbers (copied verbatim from paper-tables-knots.csv: Table 1 averages, Table 4 joint "
                "Hits@k, '?' = not found). Our run uses the paper's setting (CLIP ViT-B/32 on the 8 vision tasks), "
                "but its own fine-tuned models, seeded splits and denominators.")
    else:
        note = (f"† The paper's numbers (copied verbatim from paper-tables-knots.csv: Table 1 averages, Table 4 "
                f"joint Hits@k over 748 labels, '?' = not found) are for {PAPER_SETTING} -- a different model and "
                f"different tasks: NOT comparable with this benchmark's numbers; shown for reference only.")
    out += ["", note, "", "## Per-task normalised accuracy (test, %)", "",
            "| Method | " + " | ".join(tasks) + " | mean |", "|---|" + "---|" * (len(tasks) + 1)]
    for r in rows:
        out.append(f"| {r['label']} | " + " | ".join(_fmt(r["per_task_normalised"][t]) for t in tasks)
                   + f" | {_fmt(r['norm_mean'])} |")
    out += ["", "Fine-tuned test accuracy (denominator, %): "
            + ", ".join(f"{t} {run0['denominators']['test'][t]:.1f}" for t in tasks), ""]
    checks = _checks(runs)
    if checks:
        out += ["## Checks", ""] + checks + [""]
    if alignment is not None:
        m = alignment["mean_offdiagonal"]
        out += ["## Alignment (CKA, spec 10)", "",
                f"Mean off-diagonal linear CKA: LoRA updates {m['lora']:.3f}; after the KnOTS transform "
                f"({alignment['representations']['knots']}) {m['knots']:.3f}.", "", alignment["caption"], ""]
    used = [row for r in rows for row in r["paper_rows"].values()]
    if used:
        out += ["## The paper's numbers used (verbatim rows of paper-tables-knots.csv)", "",
                "| table | model | method | dataset | metric | value | source note |", "|---|---|---|---|---|---|---|"]
        for row in used:
            note = (row.get("source_note") or "").replace("|", "/")
            out.append(f"| {row['table']} | {row['model']} | {row['method']} | {row['dataset']} | {row['metric']} | "
                       f"{row['value']} | {note} |")
        out.append("")
    return "\n".join(out)


def write_csv(runs: list[dict], paper: list[dict], path) -> None:
    rows = build_rows(runs, paper)
    tasks = runs[0]["tasks"]
    fields = (["method", "label", "kind", "norm_mean", "abs_mean", "hits@1", "hits@3", "hits@5", "hits@10",
               "chosen_per_task", "chosen_joint", "merge_mean_s", "alignment_s", "search_s", "total_s",
               "search_evaluations"] + [f"norm_{t}" for t in tasks] + [f"abs_{t}" for t in tasks]
              + ["paper_setting", "paper_normalized_acc", "paper_abs_acc", "paper_hits@1", "paper_hits@3",
                 "paper_hits@5", "paper_note"])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            rec = {"method": r["method"], "label": r["label"], "kind": r["kind"], "norm_mean": r["norm_mean"],
                   "abs_mean": r["abs_mean"], "chosen_per_task": json.dumps(r["chosen_per_task"]),
                   "chosen_joint": json.dumps(r["chosen_joint"]), "merge_mean_s": r["merge_mean_s"],
                   "alignment_s": r["alignment_s"], "search_s": r["search_s"], "total_s": r["total_s"],
                   "search_evaluations": r["search_evaluations"], "paper_setting": f"paper: {PAPER_SETTING}",
                   "paper_normalized_acc": r["paper"].get("normalized_acc", ""),
                   "paper_abs_acc": r["paper"].get("abs_acc", ""), "paper_note": r["paper_note"]}
            for k in ("1", "3", "5", "10"):
                rec[f"hits@{k}"] = r["hits"][k]
            for k in HITS:
                rec[f"paper_hits@{k}"] = r["paper"].get(f"hits@{k}", "")
            for t in tasks:
                rec[f"norm_{t}"] = r["per_task_normalised"][t]
                rec[f"abs_{t}"] = r["per_task_abs"][t]
            w.writerow(rec)
    os.replace(tmp, out)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    """Write the PNG at ``path`` and a PDF beside it (same stem), each through a temporary file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    for target in (out, out.with_suffix(".pdf")):
        fmt = target.suffix.lstrip(".")
        tmp = target.with_name(target.stem + ".tmp" + target.suffix)
        fig.savefig(tmp, dpi=DPI, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else {"Software": None})
        os.replace(tmp, target)


def _bar_colour(method: str):
    """The FCIL figures' colour of a method (lorm.reporting.figures); the references in greys."""
    from lorm.reporting.figures import method_style

    return {"finetuned": (0.25, 0.25, 0.25), "base": (0.7, 0.7, 0.7)}.get(method) or method_style(method)["color"]


def per_task_figure(runs: list[dict], path) -> None:
    """Grouped bars: per-task normalised test accuracy (and the mean), one colour per method (seaborn, the theme
    of lorm.reporting.figures); writes the PNG and a PDF beside it."""
    import pandas as pd
    import seaborn as sns

    from lorm.reporting.figures import theme

    tasks = list(runs[0]["tasks"]) + ["mean"]
    rows = []
    for run in runs:
        pt = run["per_task"]["test"]
        values = [pt["normalised"][t] for t in tasks[:-1]] + [pt["mean_normalised"]]
        rows += [{"task": t, "label": run["label"], "value": v} for t, v in zip(tasks, values)]
    frame = pd.DataFrame(rows)
    labels = [run["label"] for run in runs]
    palette = {run["label"]: _bar_colour(run["method"]) for run in runs}
    with theme():
        fig = _new_figure(max(7.0, 1.1 * len(tasks) + 2), 4.4)
        ax = fig.add_subplot(1, 1, 1)
        sns.barplot(data=frame, x="task", y="value", hue="label", order=tasks, hue_order=labels, palette=palette,
                    ax=ax, edgecolor="white", linewidth=0.3)
        ax.axhline(100.0, color="0.3", linestyle=":", linewidth=0.8)
        ax.tick_params(axis="x", rotation=30 if len(tasks) > 6 else 0)
        ax.set_xlabel("")
        ax.set_ylabel("normalised accuracy (%)")
        ax.set_title(f"{runs[0]['experiment']}: per-task normalised test accuracy "
                     f"({runs[0]['backbone']}, 100 = fine-tuned)", fontsize=10)
        ax.legend(fontsize=7, ncol=min(4, len(runs)), loc="upper center", bbox_to_anchor=(0.5, -0.18),
                  frameon=False)
        _save(fig, path)


def alignment_figure(result: dict, path) -> None:
    """The two CKA heatmaps side by side (LoRA updates, KnOTS transform), shared colour scale 0-1 (seaborn, the
    theme of lorm.reporting.figures); writes the PNG and a PDF beside it."""
    import numpy as np
    import pandas as pd
    import seaborn as sns

    from lorm.reporting.figures import theme

    if result.get("format") != ALIGNMENT_FORMAT:
        raise BenchError("not an alignment result of lorm.mergebench")
    tasks = result["tasks"]
    n = len(tasks)
    size = max(3.2, 0.45 * n + 1.8)
    titles = {"lora": "LoRA updates  dW_i x",
              "knots": "KnOTS  V_i^T x" if result["representations"]["knots"] == "knots" else "KnOTS  S V_i^T x"}
    with theme():
        fig = _new_figure(2 * size + 0.8, size + 1.3)
        axes = fig.subplots(1, 2)
        for ax, key in zip(axes, ("lora", "knots")):
            m = pd.DataFrame(np.asarray(result[key], dtype=float), index=tasks, columns=tasks)
            sns.heatmap(m, ax=ax, vmin=0.0, vmax=1.0, cmap="viridis", square=True, cbar=False, annot=n <= 12,
                        fmt=".2f", annot_kws={"fontsize": 6})
            ax.grid(False)  # the theme's grid would cross the cells
            ax.tick_params(axis="x", rotation=45, labelsize=7)
            ax.tick_params(axis="y", rotation=0, labelsize=7)
            off = result["mean_offdiagonal"][key]
            ax.set_title(f"{titles[key]}\nmean off-diagonal {off:.3f}", fontsize=9)
        fig.colorbar(axes[0].collections[0], ax=list(axes), shrink=0.8, label="linear CKA")
        caption = result["caption"]
        wrapped, line = [], ""
        for word in caption.split():
            if len(line) + len(word) + 1 > 150:
                wrapped.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        wrapped.append(line)
        fig.suptitle(f"{result['experiment']}: CKA alignment ({result['backbone']})", fontsize=10)
        fig.text(0.5, 0.005, "\n".join(wrapped), ha="center", va="bottom", fontsize=6)
        bottom = 0.022 * len(wrapped) + 0.01
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
        _save(fig, path)


def write_report(run_paths: Sequence, paper_csv, md, csv_path, figure, alignment_json=None) -> dict:
    """Read the metrics files (and optionally an alignment JSON), write the Markdown, CSV and bar figure."""
    runs = load_runs(run_paths)
    paper = load_paper(paper_csv)
    alignment = _read_json(alignment_json) if alignment_json else None
    text = render_markdown(runs, paper, alignment)
    out = Path(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, out)
    write_csv(runs, paper, csv_path)
    per_task_figure(runs, figure)
    return {"markdown": str(md), "csv": str(csv_path), "figure": str(figure), "rows": len(runs)}
