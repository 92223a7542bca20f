"""Main results table: one row per (experiment, beta, method), mean and std over seeds.

``write_tables(run_paths, csv_path, md_path)`` reads metrics JSON files (docs/architecture.md) and writes

- a CSV with plain numeric columns ``<metric>_mean`` / ``<metric>_std`` (std: sample std, ddof = 1; empty when a
  group has a single seed), and
- a Markdown table with ``mean ± std`` cells and a header line naming the experiment(s) and betas.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lorm.config import beta_label
from lorm.reporting import as_float, get_key, load_runs

__all__ = ["METRICS", "aggregate", "to_markdown", "write_tables"]

def total_bytes_per_client(run: dict) -> float:
    """Every byte a client exchanged over the whole run (uploads + downloads of every kind: rounds, LoRM's and
    EWC's end-of-task statistics, CCVR's calibration), averaged over clients: accuracy against bytes."""
    comm = run["communication"]
    clients = get_key(run, "config.fcil.num_clients")
    return (as_float(comm["upload_bytes_total"]) + as_float(comm["download_bytes_total"])) / clients


# (column stem, dotted key in metrics.json or a function of the run, scale, Markdown header, decimals in Markdown)
METRICS = (
    ("faa", "final_avg_accuracy", 1.0, "FAA task-mean (%)", 2),
    ("faa_weighted", "final_avg_accuracy_weighted", 1.0, "FAA sample-weighted (%)", 2),
    ("forgetting", "avg_forgetting", 1.0, "Forgetting (pp)", 2),
    ("upload_mb", "communication.upload_bytes_per_client_round", 1e-6, "Upload MB/client/round", 3),
    ("download_mb", "communication.download_bytes_per_client_round", 1e-6, "Download MB/client/round", 3),
    ("total_mb", total_bytes_per_client, 1e-6, "Total MB/client (run)", 1),
    ("train_time_s", "wall_time_s.train", 1.0, "Train time (s)", 1),
)

_GROUP = ("experiment", "beta", "method")


def _first_seen(values) -> list:
    out: list = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def aggregate(runs: list[dict]) -> pd.DataFrame:
    """Seed aggregation of loaded runs (see :func:`lorm.reporting.load_runs`); rows in first-appearance order."""
    records = []
    for run in runs:
        rec = {"experiment": str(run["experiment"]), "beta": float(run["beta"]), "method": str(run["method"])}
        rec["seed"] = int(run["seed"])
        for stem, key, scale, _, _ in METRICS:
            rec[stem] = as_float(key(run) if callable(key) else get_key(run, key)) * scale
        records.append(rec)
    frame = pd.DataFrame.from_records(records)

    order = {col: _first_seen(frame[col]) for col in _GROUP}
    rows = []
    for keys, group in frame.groupby(list(_GROUP), sort=False):
        row = dict(zip(_GROUP, keys))
        seeds = sorted(group["seed"])
        row["n_seeds"] = len(seeds)
        row["seeds"] = " ".join(str(s) for s in seeds)
        for stem, *_ in METRICS:
            values = group[stem].astype(float)
            row[f"{stem}_mean"] = values.mean() if values.notna().any() else math.nan
            row[f"{stem}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.sort_values(
        by=list(_GROUP), key=lambda col: col.map(lambda v, c=col.name: order[c].index(v)), kind="stable"
    ).reset_index(drop=True)
    # the split the runs were evaluated on (dataset.evaluate_on); a validation sweep must not read as test results
    table.attrs["evaluated_on"] = sorted({str(((run.get("config") or {}).get("dataset") or {}).get("evaluate_on")
                                               or "test") for run in runs})
    return table


def _cell(mean: float, std: float, decimals: int) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown rendering of :func:`aggregate`'s output (header line, then one pipe table)."""
    experiments = _first_seen(table["experiment"])
    betas = _first_seen(table["beta"])
    lines = [
        f"# Results: experiment{'s' if len(experiments) > 1 else ''} {', '.join(experiments)}; "
        f"β = {', '.join(beta_label(b) for b in betas)}",
        "",
        "Mean ± sample standard deviation (ddof = 1) over seeds; a single value when there is one seed. "
        "FAA = final average accuracy after the last task (task mean and sample weighted); forgetting = mean "
        "drop from a task's accuracy right after it was learnt to its final accuracy (– = not defined, e.g. "
        "joint); communication per client and round in MB (10^6 bytes), and in total per client over the run "
        "(every exchange, both directions); training wall time per run.",
        "",
    ]
    if table.attrs.get("evaluated_on", ["test"]) != ["test"]:
        lines[1:1] = ["", f"**Evaluated on the {' and '.join(table.attrs['evaluated_on'])} split** "
                          "(`dataset.evaluate_on`), not on the test split: these numbers choose hyperparameters."]
    columns: list[tuple[str, str]] = []  # (header, alignment)
    if len(experiments) > 1:
        columns.append(("Experiment", ":---"))
    if len(betas) > 1:
        columns.append(("β", "---:"))
    columns += [("Method", ":---"), ("Seeds", "---:")]
    columns += [(header, "---:") for _, _, _, header, _ in METRICS]
    lines.append("| " + " | ".join(h for h, _ in columns) + " |")
    lines.append("|" + "|".join(a for _, a in columns) + "|")
    for _, row in table.iterrows():
        cells = []
        if len(experiments) > 1:
            cells.append(_md_escape(row["experiment"]))
        if len(betas) > 1:
            cells.append(beta_label(row["beta"]))
        cells += [_md_escape(row["method"]), str(int(row["n_seeds"]))]
        for stem, _, _, _, decimals in METRICS:
            cells.append(_cell(row[f"{stem}_mean"], row[f"{stem}_std"], decimals))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(run_paths: list[str], csv_path: str, md_path: str) -> pd.DataFrame:
    """Aggregate the metrics files over seeds and write ``csv_path`` and ``md_path``; returns the table."""
    table = aggregate(load_runs(run_paths))
    for path in (csv_path, md_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(md_path).write_text(to_markdown(table), encoding="utf-8")
    return table

