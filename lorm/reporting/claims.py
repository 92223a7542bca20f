"""Does the LoRM paper's claim hold? The paper's qualitative claims on its main table, tested on our runs.

Every claim is a difference between two methods' final average accuracy (FAA, task mean) at one beta, paired by
seed (the same seed shares the partition, the initialisation and the data order). For n seeds with differences
d_1..d_n we report mean ± std (ddof 1) and the paired 95 % t interval mean ± t_{0.975, n-1} std / sqrt(n), and
a verdict: *holds* when the interval lies above 0 in the claimed direction, *contradicted* when it lies below,
*inconclusive* when it contains 0 (and always with fewer than two seeds: one seed is an anecdote).

Joint training does not depend on beta (one client, every sample): its runs are paired with the other method's
by seed, from whichever beta they were run at (the same beta is preferred).
"""

from __future__ import annotations

import collections
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorm.reporting import MetricsError, load_runs

__all__ = ["CLAIMS", "Claim", "diagnostics_rows", "evaluate_claims", "paired_interval", "verdict", "write_claims"]

METRIC = "final_avg_accuracy"  # FAA, task mean (balanced test sets here: equal to the sample-weighted FAA)


@dataclass(frozen=True)
class Claim:
    text: str  # the claim as the paper makes it
    better: str  # method claimed better (or the quantity claimed positive: better - worse - margin > 0)
    worse: str
    beta: float
    margin: float = 0.0  # claim: better - worse > margin  (negative margin: "worse is within |margin| of better")
    paper: str = "—"  # the paper's numbers behind the claim, labelled as the paper's


PAPER_GAP = 92.75 - 86.95  # Joint - LoRM, CIFAR-100 beta 0.5 (paper's main table)

#: The paper's claims on its main table (CIFAR-100-like protocol); the comparisons run at beta 0.5 and 0.1.
CLAIMS: tuple[Claim, ...] = (
    Claim("LoRM > FedAvg-LoRA", "lorm", "fedavg-lora", 0.5),
    Claim("LoRM > FFA-LoRA", "lorm", "ffa-lora", 0.5),
    Claim("LoRM > its A-only ablation (official: B = 0, a linear probe)", "lorm", "lorm-a-only", 0.5),
    Claim("LoRM > its B-only ablation", "lorm", "lorm-b-only", 0.5),
    Claim("Joint ≥ LoRM (upper bound)", "joint", "lorm", 0.5, paper="Joint 92.75 vs LoRM 86.95 (CIFAR-100)"),
    Claim(f"LoRM within the paper's gap of Joint ({PAPER_GAP:.1f} points): Joint − LoRM < {PAPER_GAP:.1f}",
          "lorm", "joint", 0.5, margin=-PAPER_GAP, paper=f"gap {PAPER_GAP:.1f} (92.75 − 86.95, CIFAR-100)"),
    Claim("LoRM > FedAvg-LoRA at β 0.1 (lead across heterogeneity)", "lorm", "fedavg-lora", 0.1,
          paper="LoRM 81.75 at β 0.1 (CIFAR-100)"),
    Claim("LoRM > FFA-LoRA at β 0.1 (lead across heterogeneity)", "lorm", "ffa-lora", 0.1,
          paper="LoRM 81.75 at β 0.1 (CIFAR-100)"),
)


def paired_interval(diffs, level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, low, high) of paired differences; std and the interval are nan with fewer than 2 values."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("paired_interval: no differences")
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan, math.nan
    from scipy.stats import t

    std = float(d.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, d.size - 1)) * std / math.sqrt(d.size)
    return mean, std, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    """holds (interval above 0), contradicted (below 0) or inconclusive (crosses 0, or no interval)."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return "inconclusive"


def _index(runs: list[dict]) -> dict[tuple[float, str, int], dict]:
    out: dict[tuple[float, str, int], dict] = {}
    for run in runs:
        key = (float(run["beta"]), str(run["method"]), int(run["seed"]))
        if key in out:
            raise MetricsError(f"{run['_path']}: a second run of {key[1]} on {_dataset(run)} at beta {key[0]} seed "
                               f"{key[2]} (also {out[key]['_path']}); give the claims table one run of each")
        out[key] = run
    return out


def _runs_of(index: dict, method: str, beta: float) -> dict[int, float]:
    """{seed: FAA} of a method at beta; joint from any beta (preferring this one)."""
    found = {seed: float(run[METRIC]) for (b, m, seed), run in index.items() if m == method and b == beta}
    if method == "joint":
        for (b, m, seed), run in sorted(index.items(), key=lambda item: item[0][0]):
            if m == "joint" and seed not in found:
                found[seed] = float(run[METRIC])
    return found


def _dataset(run: dict) -> str:
    return str(((run.get("config") or {}).get("dataset") or {}).get("name") or run["experiment"])


def evaluate_claims(runs: list[dict], claims=CLAIMS) -> list[dict]:
    """One row per data set and claim: both methods' mean ± std, the paired difference, its interval and the
    verdict. A claim whose methods were not both run (at a common seed) gets verdict 'not run'."""
    rows = []
    for dataset in dict.fromkeys(_dataset(run) for run in runs):
        group = [run for run in runs if _dataset(run) == dataset]
        try:
            rows += _evaluate(dataset, _index(group), claims)
        except MetricsError:  # two experiments ran the same method, beta and seed here: one table each
            for experiment in dict.fromkeys(run["experiment"] for run in group):
                members = [run for run in group if run["experiment"] == experiment]
                rows += _evaluate(f"{dataset} ({experiment})", _index(members), claims)
    return rows


def _evaluate(dataset: str, index: dict, claims) -> list[dict]:
    rows = []
    for claim in claims:
        a, b = _runs_of(index, claim.better, claim.beta), _runs_of(index, claim.worse, claim.beta)
        seeds = sorted(set(a) & set(b))
        row = {"dataset": dataset, "claim": claim.text, "beta": claim.beta, "better": claim.better, "worse": claim.worse,
               "margin": claim.margin, "paper": claim.paper, "seeds": len(seeds), "better_runs": len(a),
               "worse_runs": len(b)}
        if not seeds:
            rows.append({**row, "verdict": "not run"})
            continue
        diffs = [a[s] - b[s] - claim.margin for s in seeds]
        mean, std, low, high = paired_interval(diffs)
        av, bv = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        rows.append({**row, "better_mean": float(av.mean()), "better_std": _std(av), "worse_mean": float(bv.mean()),
                     "worse_std": _std(bv), "diff_mean": mean, "diff_std": std, "ci_low": low, "ci_high": high,
                     "verdict": verdict(low, high)})
    return rows


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "| data set | claim | β | better: FAA | other: FAA | difference (paired) | 95 % interval | seeds | verdict "
        "| paper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["verdict"] == "not run":
            runs = [f"{r[side]}: " + (f"{n} run{'s' * (n != 1)}" if (n := r[side + "_runs"]) else "not run")
                    for side in ("better", "worse")]
            lines.append(f"| {r['dataset']} | {r['claim']} | {r['beta']:g} | {runs[0]} | {runs[1]} | – | – | 0 "
                         f"| not run | {r['paper']} |")
            continue
        shift = f" − ({r['margin']:+.1f})" if r["margin"] else ""
        interval = "– (one seed)" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        lines.append(
            f"| {r['dataset']} | {r['claim']} | {r['beta']:g} | {r['better']}: {_pm(r['better_mean'], r['better_std'])} "
            f"| {r['worse']}: {_pm(r['worse_mean'], r['worse_std'])} | {_pm(r['diff_mean'], r['diff_std'])}{shift} "
            f"| {interval} | {r['seeds']} | **{r['verdict']}** | {r['paper']} |")
    lines += [
        "",
        "FAA = final average accuracy (%, mean over tasks) after the last task. Difference = better − other (minus the "
        "margin where the claim has one), per seed, then mean ± std over seeds; the interval is the paired 95 % "
        "t interval. holds: the interval lies above 0; contradicted: below 0; inconclusive: it contains 0 or "
        "there is one seed. Paper numbers are the paper's (ViT-B/16 on CIFAR-100), not ours.",
    ]
    return "\n".join(lines) + "\n"


def _mean_of(values) -> float:
    """Mean of the values that are not None; nan when there are none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


def diagnostics_rows(runs: list[dict]) -> list[dict]:
    """Per data set, beta and method (mean over seeds): what explains the claims. New-task accuracy right after
    learning a task, a_tt, on the deployed model (the diagonal of the accuracy matrix) and on the undiluted model
    W0 + dW_t with the same head; the task update's size relative to W0 (mean over layers and tasks); forgetting;
    FAA. Methods without diagnostics (joint, full fine-tuning) get blanks."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((_dataset(run), float(run["beta"]), str(run["method"])), []).append(run)
    rows = []
    for (dataset, beta, method), members in groups.items():
        diag = [run.get("diagnostics") or {} for run in members]
        rows.append({
            "dataset": dataset, "beta": beta, "method": method, "seeds": len(members),
            "faa": _mean_of([run[METRIC] for run in members]),
            "forgetting": _mean_of([run.get("avg_forgetting") for run in members]),
            "new_task_acc_deployed": _mean_of([np.mean([row[i] for i, row in zip(run["eval_after_task"],
                                                                                  run["accuracy_matrix"])])
                                              for run in members if len(run["eval_after_task"]) > 1]),
            "new_task_acc_undiluted": _mean_of([np.mean(d["new_task_acc_undiluted"]) for d in diag
                                               if d.get("new_task_acc_undiluted")]),
            "new_task_acc_undiluted_last": _mean_of([d["new_task_acc_undiluted"][-1] for d in diag
                                                    if d.get("new_task_acc_undiluted")]),
            "new_task_acc_deployed_last": _mean_of([run["accuracy_matrix"][-1][-1] for run in members
                                                   if len(run["eval_after_task"]) > 1]),
            "update_rel_norm": _mean_of([np.mean([np.mean(list(t.values())) for t in d["task_update_rel_norm"]])
                                        for d in diag if d.get("task_update_rel_norm")]),
        })
    return rows


def diagnostics_markdown(rows: list[dict]) -> str:
    def cell(value: float, fmt: str = ".2f") -> str:
        return "–" if math.isnan(value) else format(value, fmt)

    lines = [
        "| data set | β | method | seeds | FAA | forgetting | new-task acc. deployed (mean / last task) "
        "| new-task acc. on W0 + ΔW_t alone (mean / last) | ‖ΔW_t‖/‖W0‖ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['beta']:g} | {r['method']} | {r['seeds']} | {cell(r['faa'])} "
            f"| {cell(r['forgetting'])} | {cell(r['new_task_acc_deployed'])} / {cell(r['new_task_acc_deployed_last'])} "
            f"| {cell(r['new_task_acc_undiluted'])} / {cell(r['new_task_acc_undiluted_last'])} "
            f"| {cell(r['update_rel_norm'], '.2e')} |")
    lines += [
        "",
        "Means over seeds. New-task accuracy = a_tt, a task's accuracy right after it was learnt: on the deployed "
        "model (the accuracy matrix's diagonal; the cross-task merge dilutes the task's update among the others') "
        "and on W0 + that task's merged update alone with the same merged head; 'last' = the last task. "
        "‖ΔW_t‖/‖W0‖ = Frobenius norm of a task's merged update relative to the frozen weight, mean over layers "
        "and tasks. Forgetting: mean over tasks but the last of a_tt − a_Tt.",
    ]
    return "\n".join(lines) + "\n"


def provenance_markdown(runs: list[dict]) -> str:
    """Where the numbers come from: how many runs, their wall time, code commits, machine, dates."""
    walls = np.array([float(run["wall_time_s"].get("total", math.nan)) for run in runs]) / 60.0
    prov = [run.get("provenance") or {} for run in runs]
    per_commit = collections.Counter(p.get("commit") or "not recorded" for p in prov)
    commits = [f"{commit} ({n} run{'s' if n > 1 else ''})" for commit, n in sorted(per_commit.items())]
    cpus = sorted({str(p["cpus"]) for p in prov if p.get("cpus")})
    dates = sorted(p["finished"] for p in prov if p.get("finished"))
    devices = sorted({str(run.get("device", "?")) for run in runs})
    when = f"finished {dates[0][:16]} – {dates[-1][:16]} UTC" if dates else "finish dates not recorded"
    walls = walls[np.isfinite(walls)]
    wall = (f"wall time per run {walls.mean():.1f} min on average (min {walls.min():.1f}, max {walls.max():.1f}), "
            f"{walls.sum() / 60:.2f} h in all" if walls.size else "wall time not recorded")
    return (f"{len(runs)} runs; {wall}; device "
            f"{', '.join(devices)}; machine CPUs {', '.join(cpus) or 'not recorded'}; code commit "
            f"{', '.join(commits)}; {when}.\n")


README_BEGIN, README_END = "<!-- claims:begin -->", "<!-- claims:end -->"


def update_readme(readme: str, text: str) -> None:
    """Replace the block between the README's claims markers with ``text`` (headings one level down)."""
    path = Path(readme)
    content = path.read_text(encoding="utf-8")
    if README_BEGIN not in content or README_END not in content:
        raise MetricsError(f"{readme}: no {README_BEGIN} ... {README_END} block to refresh (add the two markers)")
    head, rest = content.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    body = "\n".join("#" + line if line.startswith("## ") else line for line in text.splitlines())
    path.write_text(f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}", encoding="utf-8")


def write_claims(run_paths: list[str], md_path: str, csv_path: str | None = None,
                 readme: str | None = None) -> list[dict]:
    import pandas as pd

    runs = load_runs(run_paths)
    rows = evaluate_claims(runs)
    for path in (md_path, csv_path):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{md_path}.tmp"
    text = "## Does the paper's claim hold?\n\n" + to_markdown(rows)
    text += "\n## What the runs show (diagnostics)\n\n" + diagnostics_markdown(diagnostics_rows(runs))
    text += "\n## Provenance\n\n" + provenance_markdown(runs)
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, md_path)
    if csv_path:
        pd.DataFrame(rows).to_csv(csv_path, index=False, float_format="%.4f")
    if readme:
        update_readme(readme, text)
    return rows
