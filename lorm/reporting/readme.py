"""The README's "Results" block, refreshed from a finished run (``snakemake readme_results``), never by hand.

``python -m lorm.reporting.readme --table results/tables/main.csv --runs <metrics.json ...> --figures <png ...>
--out-dir docs/results --readme README.md`` copies the figures into ``docs/results/`` (tracked; each PNG must be
at most 300 KB), writes ``docs/results/results.md`` (the table and the run's provenance) and replaces the text
between the README's markers ``<!-- results:begin -->`` and ``<!-- results:end -->`` with the same content.

Provenance comes from the metrics files (``provenance`` of each run): the commit(s), the CPU count, the time the
last run finished, and the wall time from the first run's start (finish minus its total time) to the last finish.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from lorm.config import beta_label
from lorm.reporting import MetricsError, get_key, load_runs

__all__ = ["BEGIN", "END", "MAX_PNG_BYTES", "provenance", "render_block", "update_readme", "write_readme_results"]

BEGIN = "<!-- results:begin (written by `snakemake readme_results`; do not edit by hand) -->"
END = "<!-- results:end -->"
MAX_PNG_BYTES = 300_000
_TITLES = {"accuracy_per_task": "Accuracy after each task", "accuracy_vs_communication": "Accuracy against communication",
           "accuracy_matrix": "Accuracy matrices", "forgetting_and_accuracy": "Accuracy and forgetting"}


def _time(text: str, where: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise MetricsError(f"{where}: provenance.finished {text!r} is not an ISO time") from None


def provenance(runs: list[dict]) -> dict:
    """Commit(s), CPU count(s), last finish (UTC) and wall time (s) of the runs, from their metrics files.

    Runs written before metrics files carried ``provenance`` count as commit "unknown" and add no times; with no
    time at all, ``finished`` and ``wall_time_s`` are None."""
    commits, cpus, starts, finishes = [], [], [], []
    for run in runs:
        prov = run.get("provenance") or {}
        commits.append(str(prov.get("commit", "unknown")))
        cpus.append(prov.get("cpus"))
        if prov.get("finished"):
            finished = _time(prov["finished"], run["_path"])
            finishes.append(finished)
            starts.append(finished - dt.timedelta(seconds=float(get_key(run, "wall_time_s.total", 0.0))))
    return {
        "commits": sorted(set(commits)),
        "cpus": sorted({c for c in cpus if c is not None}),
        "finished": max(finishes).astimezone(dt.timezone.utc) if finishes else None,
        "wall_time_s": (max(finishes) - min(starts)).total_seconds() if finishes else None,
    }


def _cell(mean: float, std: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def render_block(table: pd.DataFrame, prov: dict, figures: list[str], link_dir: str) -> str:
    """Markdown of the results block: provenance line, the table (methods, FAA, forgetting, MB per client), the
    figures (linked from ``link_dir``)."""
    experiments = list(dict.fromkeys(table["experiment"]))
    betas = list(dict.fromkeys(table["beta"]))
    seeds = sorted(set(int(n) for n in table["n_seeds"]))
    finished = f"{prov['finished']:%Y-%m-%d %H:%M} UTC" if prov["finished"] else "at an unknown time"
    wall = f"{prov['wall_time_s'] / 60.0:.1f} min" if prov["wall_time_s"] is not None else "unknown"
    cpus = ", ".join(str(c) for c in prov["cpus"]) or "unknown"
    lines = [
        f"Run of experiment `{', '.join(experiments)}` (β = {', '.join(beta_label(b) for b in betas)}, "
        f"{'/'.join(str(s) for s in seeds)} seed{'s' if seeds != [1] else ''} per method), finished "
        f"{finished} at commit `{', '.join(prov['commits'])}` on {cpus} CPU cores; "
        f"wall time {wall} (first run started to last run finished).",
        "",
    ]
    several_betas = len(betas) > 1
    header = (["β"] if several_betas else []) + ["Method", "FAA (%)", "Forgetting (pp)", "MB per client (run)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(":---" if h == "Method" else "---:" for h in header) + "|")
    for _, row in table.iterrows():
        method = f"**{row['method']}**" if row["method"] == "lorm" else str(row["method"])
        cells = ([beta_label(row["beta"])] if several_betas else []) + [
            method, _cell(row["faa_mean"], row["faa_std"], 2), _cell(row["forgetting_mean"], row["forgetting_std"], 2),
            _cell(row["total_mb_mean"], math.nan, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "FAA = final average accuracy after the last task (task mean); forgetting = mean drop from a task's "
              "accuracy right after it was learnt to its final accuracy; MB per client = every byte one client "
              "sent and received over the whole run (10^6 bytes).", ""]
    for path in figures:
        stem = Path(path).stem
        lines.append(f"![{_TITLES.get(stem, stem)}]({link_dir}/{Path(path).name})")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def update_readme(readme: str | os.PathLike, block: str) -> None:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``readme`` (both markers must be there)."""
    text = Path(readme).read_text(encoding="utf-8")
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise MetricsError(f"{readme}: no results markers ({BEGIN} ... {END})")
    new = text[: begin + len(BEGIN)] + "\n" + block + text[end:]
    tmp = Path(f"{readme}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, readme)


def write_readme_results(table_csv: str, run_paths: list[str], figures: list[str], out_dir: str,
                         readme: str | None, link_dir: str | None = None) -> list[str]:
    """Copy the figures and write ``<out_dir>/results.md`` (and the README block); returns the written files."""
    try:
        table = pd.read_csv(table_csv)
    except FileNotFoundError:
        raise MetricsError(f"{table_csv}: table not found") from None
    missing = [c for c in ("experiment", "beta", "method", "n_seeds", "faa_mean", "faa_std", "forgetting_mean",
                           "forgetting_std", "total_mb_mean") if c not in table.columns]
    if missing:
        raise MetricsError(f"{table_csv}: missing column '{missing[0]}' (expected results/tables/main.csv)")
    prov = provenance(load_runs(run_paths))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for path in figures:
        size = os.path.getsize(path)
        if size > MAX_PNG_BYTES:
            raise MetricsError(f"{path}: {size / 1000:.0f} KB, more than the {MAX_PNG_BYTES // 1000} KB a README "
                               "figure may have")
        target = Path(out_dir) / Path(path).name
        shutil.copyfile(path, target)
        written.append(str(target))
    link = link_dir if link_dir is not None else out_dir
    (Path(out_dir) / "results.md").write_text(
        "# Results of the default run\n\n" + render_block(table, prov, figures, "."), encoding="utf-8")
    written.append(str(Path(out_dir) / "results.md"))
    if readme:
        update_readme(readme, render_block(table, prov, figures, link))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorm.reporting.readme", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="results/tables/main.csv")
    parser.add_argument("--runs", nargs="+", required=True, help="the metrics.json files of the table")
    parser.add_argument("--figures", nargs="+", required=True, help="PNG figures to copy (≤ 300 KB each)")
    parser.add_argument("--out-dir", required=True, help="tracked folder, e.g. docs/results")
    parser.add_argument("--readme", default=None, help="README to update between the results markers")
    args = parser.parse_args(argv)
    try:
        for path in write_readme_results(args.table, args.runs, args.figures, args.out_dir, args.readme):
            print(f"wrote {path}", file=sys.stderr)
    except (MetricsError, FileNotFoundError) as exc:
        print(f"lorm readme: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
