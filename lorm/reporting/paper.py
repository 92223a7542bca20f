"""Our runs beside the LoRM paper's numbers: one table per Dirichlet β, methods as rows, data sets as columns.

``write_paper_tables(run_paths, paper_csv, csv_path, md_path)`` reads metrics JSON files (docs/architecture.md;
the data set of a run is ``config.dataset.name`` of its metrics file) and the paper's table
(``workflow/resources/paper-table-lorm.csv``: ``method,dataset,beta,metric,value,note``, FAA in %), and writes

- a Markdown file with, per β, a pipe table whose columns come in pairs per data set: **ours** = mean ± sample
  std (ddof = 1) over seeds of the *sample-weighted* final average accuracy (the value the official code printed
  as "Mean accuracy"; the paper does not say which FAA it reports) and **paper** = the paper's number, copied
  verbatim;
- a long-form CSV (one row per β x method x data set x experiment) with the plain numbers, the paper's value
  as the verbatim string of the reference file, and status columns.

Markers: ``not run`` = no metrics file for that cell; ``—`` = the paper has no number for it (a method of ours
that the paper lacks, or a β the paper's table does not cover); ``†`` = the paper's β is not stated for that
data set (the reference file says "unstated (likely 0.5)").

Command line: ``python -m lorm.reporting.paper --runs M.json ... --paper paper.csv --csv out.csv --md out.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from pathlib import Path

import pandas as pd

from lorm.config import beta_label
from lorm.reporting import MetricsError, as_float, get_key, load_runs

__all__ = [
    "DATASET_LABELS",
    "NOT_IN_PAPER",
    "NOT_RUN",
    "PAPER_COLUMNS",
    "PAPER_NAMES",
    "UNSTATED_MARK",
    "load_paper_table",
    "paper_comparison",
    "to_markdown",
    "write_paper_tables",
]

NOT_RUN = "not run"
NOT_IN_PAPER = "—"
UNSTATED_MARK = "†"

#: our method name -> the paper's row (methods of ours the paper lacks are not listed)
PAPER_NAMES = {"lorm": "LoRM", "joint": "Joint", "ewc": "EWC", "lwf": "LwF", "fisheravg": "FisherAVG",
               "regmean": "RegMean", "ccvr": "CCVR", "fedproto": "FedProto", "pilora": "PILoRA",
               "l2p": "L2P", "coda-p": "CODA-P", "target": "TARGET"}
#: row labels of our methods that the paper lacks
OUR_LABELS = {
    "lorm-a-only": "LoRM ablation: A only",
    "lorm-b-only": "LoRM ablation: B only",
    "fedavg-lora": "FedAvg-LoRA",
    "ffa-lora": "FFA-LoRA",
    "fedavg": "FedAvg (full fine-tuning)",
}
DATASET_LABELS = {
    "cifar100": "CIFAR-100",
    "imagenet-r": "ImageNet-R",
    "imagenet-a": "ImageNet-A",
    "eurosat": "EuroSAT",
    "cars196": "Cars-196",
    "cub200": "CUB-200",
}
#: header of the reference file (kept verbatim from ../shared/reference/paper-table-lorm.csv)
PAPER_COLUMNS = ("method", "dataset", "beta", "metric", "value", "note")
_METRIC = "FAA"

# long-form CSV columns
CSV_COLUMNS = (
    "beta", "row", "our_method", "paper_method", "dataset", "experiment", "n_seeds", "seeds",
    "ours_faa_weighted_mean", "ours_faa_weighted_std", "ours_faa_task_mean_mean", "ours_faa_task_mean_std",
    "ours_status", "paper_value", "paper_beta", "paper_note", "paper_status",
)


# --------------------------------------------------------------------------------------------------- inputs


def _paper_beta(text: str, where: str) -> tuple[float, bool]:
    """(β, stated?) of the reference file's beta field: ``0.5`` or ``unstated (likely 0.5)``."""
    try:
        return float(text), True
    except ValueError:
        pass
    match = re.search(r"likely\s+([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)", text)
    if match:
        return float(match.group(1)), False
    raise MetricsError(f"{where}: cannot read the beta {text!r} (expected a number or 'unstated (likely 0.5)')")


def load_paper_table(path: str) -> list[dict]:
    """Rows of the paper's reference table as dicts of verbatim strings, plus ``_beta`` and ``_stated``."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            rows = list(reader)
    except FileNotFoundError:
        raise MetricsError(f"{path}: paper table not found") from None
    if header != PAPER_COLUMNS:
        raise MetricsError(f"{path}: expected the header {','.join(PAPER_COLUMNS)}, got {','.join(header)}")
    out = []
    for number, row in enumerate(rows, start=2):
        if row["metric"] != _METRIC:
            continue
        where = f"{path} line {number}"
        try:
            float(row["value"])
        except ValueError:
            raise MetricsError(f"{where}: value {row['value']!r} is not a number") from None
        row = dict(row)
        row["_beta"], row["_stated"] = _paper_beta(row["beta"], where)
        out.append(row)
    return out


def _dataset_of(run: dict) -> str:
    try:
        return str(get_key(run, "config.dataset.name"))
    except KeyError:
        raise MetricsError(f"{run['_path']}: missing key 'config.dataset.name' in the metrics JSON") from None


# ------------------------------------------------------------------------------------------------ the table


def _first_seen(values) -> list:
    return list(dict.fromkeys(values))


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _row_label(our: str | None, paper: str | None, quote: str = "") -> str:
    """Row label: the paper's name, or our label, with our method name in brackets (``quote``: Markdown ```)."""
    if not our:
        return str(paper)
    name = paper or OUR_LABELS.get(our, our)
    return f"{name} ({quote}{our}{quote})"


def paper_comparison(runs: list[dict], paper_rows: list[dict]) -> pd.DataFrame:
    """Long-form comparison (columns :data:`CSV_COLUMNS`), rows in table order: β, method row, data set.

    ``runs`` are loaded metrics files (:func:`lorm.reporting.load_runs`), ``paper_rows`` the output of
    :func:`load_paper_table`.
    """
    # our cells: (beta, dataset, experiment, method) -> list of runs
    ours: dict[tuple, list[dict]] = {}
    for run in runs:
        key = (beta_label(run["beta"]), _dataset_of(run), str(run["experiment"]), str(run["method"]))
        ours.setdefault(key, []).append(run)
    paper = {(beta_label(r["_beta"]), r["dataset"], r["method"]): r for r in paper_rows}

    paper_betas = _first_seen(beta_label(r["_beta"]) for r in paper_rows)
    our_betas = sorted({k[0] for k in ours} - set(paper_betas), key=float, reverse=True)
    paper_methods = _first_seen(r["method"] for r in paper_rows)
    to_ours = {p: o for o, p in PAPER_NAMES.items()}

    records = []
    for beta in paper_betas + our_betas:
        datasets = _first_seen(
            [r["dataset"] for r in paper_rows if beta_label(r["_beta"]) == beta]
            + [k[1] for k in ours if k[0] == beta]
        )
        our_methods = _first_seen(k[3] for k in ours if k[0] == beta)
        rows: list[tuple[str | None, str | None]] = []  # (our method, paper method)
        for method in paper_methods:
            if any((beta, d, method) in paper for d in datasets) or to_ours.get(method) in our_methods:
                rows.append((to_ours.get(method), method))
        rows += [(m, None) for m in our_methods if m not in PAPER_NAMES]
        for our, paper_method in rows:
            for dataset in datasets:
                ref = paper.get((beta, dataset, paper_method)) if paper_method else None
                experiments = _first_seen(k[2] for k in ours if k[0] == beta and k[1] == dataset) or [None]
                for experiment in experiments:
                    group = ours.get((beta, dataset, experiment, our), []) if our else []
                    weighted = _mean_std([as_float(r["final_avg_accuracy_weighted"]) for r in group])
                    task_mean = _mean_std([as_float(r["final_avg_accuracy"]) for r in group])
                    records.append({
                        "beta": beta,
                        "row": _row_label(our, paper_method),
                        "our_method": our or "",
                        "paper_method": paper_method or "",
                        "dataset": dataset,
                        "experiment": experiment or "",
                        "n_seeds": len(group),
                        "seeds": " ".join(str(s) for s in sorted(int(r["seed"]) for r in group)),
                        "ours_faa_weighted_mean": weighted[0],
                        "ours_faa_weighted_std": weighted[1],
                        "ours_faa_task_mean_mean": task_mean[0],
                        "ours_faa_task_mean_std": task_mean[1],
                        "ours_status": "ok" if group else NOT_RUN,
                        "paper_value": ref["value"] if ref else "",
                        "paper_beta": ref["beta"] if ref else "",
                        "paper_note": ref["note"] if ref else "",
                        "paper_status": ("paper" if ref["_stated"] else "paper, beta unstated") if ref else
                        "not in the paper's table",
                    })
    return pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))


# ------------------------------------------------------------------------------------------------- Markdown


def _ours_cell(row, n_usual: int) -> str:
    if row["ours_status"] != "ok":
        return NOT_RUN
    mean, std, n = row["ours_faa_weighted_mean"], row["ours_faa_weighted_std"], int(row["n_seeds"])
    if math.isnan(mean):
        return "–"
    text = f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"
    return text if n == n_usual else f"{text} (n={n})"


def _paper_cell(row) -> str:
    if not row["paper_value"]:
        return NOT_IN_PAPER
    return row["paper_value"] + ("" if row["paper_status"] == "paper" else UNSTATED_MARK)


def _label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def to_markdown(frame: pd.DataFrame) -> str:
    """Markdown rendering of :func:`paper_comparison`'s output: a header, then one pipe table per β."""
    done = frame[frame["ours_status"] == "ok"]
    n_usual = int(done["n_seeds"].mode().max()) if len(done) else 0
    lines = [
        "# LoRM: our runs beside the paper's numbers",
        "",
        "Final average accuracy (%) after the last task, per Dirichlet β of the client partition.",
        "",
        f"- **ours**: mean ± sample standard deviation (ddof = 1) over {n_usual} seed{'s' if n_usual != 1 else ''}"
        " (other counts are marked n=…) of the **sample-weighted** FAA = correct / total over the test sets of"
        " all tasks, the value the official code printed as \"Mean accuracy\" (results/tables/main.md also has"
        " the task-mean FAA).",
        "- **paper**: the numbers of the paper's main FCIL table (Salami et al., *Closed-form merging of"
        " parameter-efficient modules for Federated Continual Learning*, ICLR 2025), copied verbatim from"
        " workflow/resources/paper-table-lorm.csv. Which FAA the paper reports is not stated.",
        f"- `{NOT_RUN}`: no run of ours for that cell; `{NOT_IN_PAPER}`: the paper has no number for it (a method"
        " the paper lacks, or a β its table does not cover); "
        f"`{UNSTATED_MARK}`: the paper does not state β for that data set (assumed 0.5).",
    ]
    for beta in _first_seen(frame["beta"]):
        part = frame[frame["beta"] == beta]
        columns = _first_seen(zip(part["dataset"], part["experiment"]))
        several = {d for d in _first_seen(part["dataset"]) if sum(1 for c in columns if c[0] == d) > 1}
        header = ["Method"]
        for dataset in _first_seen(part["dataset"]):
            for d, experiment in columns:
                if d == dataset:
                    header.append(f"{_label(dataset)} ours" + (f" ({experiment})" if dataset in several else ""))
            header.append(f"{_label(dataset)} paper")
        lines += ["", f"## β = {beta}", ""]
        if not (part["paper_value"] != "").any():
            lines += ["The paper's table has no numbers for this β.", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|:---|" + "|".join("---:" for _ in header[1:]) + "|")
        for label in _first_seen(part["row"]):
            rows = part[part["row"] == label]
            first = rows.iloc[0]
            cells = [_row_label(first["our_method"], first["paper_method"] or None, "`").replace("|", "\\|")]
            for dataset in _first_seen(part["dataset"]):
                here = rows[rows["dataset"] == dataset]
                cells += [_ours_cell(r, n_usual) for _, r in here.iterrows()]
                cells.append(_paper_cell(here.iloc[0]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_paper_tables(run_paths: list[str], paper_csv: str, csv_path: str, md_path: str) -> pd.DataFrame:
    """Compare the metrics files with the paper's table; write ``csv_path`` and ``md_path``; return the frame."""
    frame = paper_comparison(load_runs(run_paths), load_paper_table(paper_csv))
    for path in (csv_path, md_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv_path, index=False)
    Path(md_path).write_text(to_markdown(frame), encoding="utf-8")
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorm.reporting.paper", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="METRICS_JSON", help="metrics files")
    parser.add_argument("--paper", required=True, help="the paper's table (paper-table-lorm.csv)")
    parser.add_argument("--csv", required=True, help="output CSV (long form)")
    parser.add_argument("--md", required=True, help="output Markdown")
    args = parser.parse_args(argv)
    try:
        frame = write_paper_tables(args.runs, args.paper, args.csv, args.md)
    except MetricsError as error:
        print(f"lorm paper table: {error}", file=sys.stderr)
        return 2
    print(f"paper table: {int((frame['ours_status'] == 'ok').sum())} cells of ours, "
          f"{int((frame['paper_value'] != '').sum())} of the paper -> {args.csv}, {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
