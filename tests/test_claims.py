"""The claims table's statistics on fabricated runs: a known difference holds, a known opposite is contradicted,
overlapping seeds are inconclusive; one seed is never a verdict."""

from __future__ import annotations

import json
import math

import pytest

from lorm.cli import main
from lorm.reporting import MetricsError
from lorm.reporting.claims import CLAIMS, Claim, evaluate_claims, paired_interval, verdict


def _run(method: str, seed: int, faa: float, beta: float = 0.5, dataset: str = "wordnet40") -> dict:
    row = [faa, faa]
    return {"experiment": f"x-{beta}", "method": method, "seed": seed, "beta": beta, "eval_after_task": [0, 1],
            "accuracy_matrix": [[faa], row], "final_avg_accuracy": faa, "final_avg_accuracy_weighted": faa,
            "avg_forgetting": 0.0, "communication": {"upload_bytes_per_client_round": 1.0,
                                                     "download_bytes_per_client_round": 1.0},
            "wall_time_s": {"train": 1.0}, "config": {"dataset": {"name": dataset}}, "_path": f"{method}/{seed}"}


ONE = (Claim("A > B", "a", "b", 0.5),)


def test_paired_interval_is_the_t_interval():
    mean, std, low, high = paired_interval([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)
    assert all(math.isnan(v) for v in paired_interval([5.0])[1:])


def test_known_difference_holds_and_its_opposite_is_contradicted():
    runs = [_run("a", s, 50.0 + s) for s in range(3)] + [_run("b", s, 40.0 + s + 0.1 * s * s) for s in range(3)]
    (row,) = evaluate_claims(runs, ONE)
    assert row["verdict"] == "holds" and row["seeds"] == 3 and row["diff_mean"] == pytest.approx(10 - 0.5 / 3)
    (row,) = evaluate_claims(runs, (Claim("B > A", "b", "a", 0.5),))
    assert row["verdict"] == "contradicted" and row["ci_high"] < 0


def test_overlapping_seeds_are_inconclusive():
    # the means differ by 1 point, but the per-seed differences change sign
    runs = [_run("a", s, v) for s, v in enumerate([50.0, 45.0, 55.0])] + \
           [_run("b", s, v) for s, v in enumerate([47.0, 48.0, 52.0])]
    (row,) = evaluate_claims(runs, ONE)
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "inconclusive"


def test_pairing_is_by_seed_not_by_position():
    # a is 1 point better on every seed; listed in another order the unpaired spread would hide it
    runs = [_run("a", s, 40.0 + 10 * s + 1) for s in (2, 0, 1)] + [_run("b", s, 40.0 + 10 * s) for s in (0, 1, 2)]
    (row,) = evaluate_claims(runs, ONE)
    assert row["diff_std"] == pytest.approx(0.0) and row["verdict"] == "holds"


def test_one_seed_and_missing_methods():
    (row,) = evaluate_claims([_run("a", 0, 90.0), _run("b", 0, 10.0)], ONE)
    assert row["verdict"] == "inconclusive" and row["seeds"] == 1
    (row,) = evaluate_claims([_run("a", 0, 90.0)], ONE)
    assert row["verdict"] == "not run"
    assert verdict(float("nan"), float("nan")) == "inconclusive"


def test_joint_pairs_across_beta_and_the_gap_claim_uses_its_margin():
    runs = [_run("joint", s, 60.0 + s, beta=0.5) for s in range(3)]
    runs += [_run("lorm", s, 50.0 + s, beta=0.1) for s in range(3)]
    runs += [_run("lorm", s, 58.0 + s + 0.01 * s, beta=0.5) for s in range(3)]
    gap = [c for c in CLAIMS if c.margin]
    rows = {r["claim"]: r for r in evaluate_claims(runs, CLAIMS)}
    upper = rows["Joint ≥ LoRM (upper bound)"]
    assert upper["verdict"] == "holds" and upper["diff_mean"] == pytest.approx(2 - 0.01)
    (gap_claim,) = gap
    assert rows[gap_claim.text]["verdict"] == "holds"  # gap of ~2 points is inside the paper's 5.8
    at_01 = Claim("joint at 0.1", "joint", "lorm", 0.1)
    (row,) = evaluate_claims(runs, (at_01,))
    assert row["seeds"] == 3 and row["diff_mean"] == pytest.approx(10.0)  # joint found at beta 0.5


def test_duplicate_runs_are_an_error_and_datasets_are_separate():
    runs = [_run("a", 0, 1.0), _run("b", 0, 1.0)]
    with pytest.raises(MetricsError, match="second run of a"):  # within one experiment: an error
        evaluate_claims(runs + [_run("a", 0, 2.0)], ONE)
    # two experiments with the same runs on one data set (e.g. other settings): one set of claims each
    other = [{**_run("a", 0, 5.0), "experiment": "y"}, {**_run("b", 0, 1.0), "experiment": "y"}]
    rows = evaluate_claims(runs + other, ONE)
    assert [(r["dataset"], r["diff_mean"]) for r in rows] == [("wordnet40 (x-0.5)", 0.0), ("wordnet40 (y)", 4.0)]
    rows = evaluate_claims(runs + [_run("a", 0, 2.0, dataset="cifar100")], ONE)
    assert [(r["dataset"], r["verdict"]) for r in rows] == [("wordnet40", "inconclusive"), ("cifar100", "not run")]


def test_cli_writes_markdown_and_csv(tmp_path):
    paths = []
    for method, base in (("lorm", 50.0), ("fedavg-lora", 45.0)):
        for s in range(3):
            run = _run(method, s, base + s * (1 if method == "lorm" else 1.2))
            run.pop("_path")
            path = tmp_path / f"{method}-{s}.json"
            path.write_text(json.dumps(run))
            paths.append(str(path))
    md, csv = tmp_path / "claims.md", tmp_path / "claims.csv"
    assert main(["claims", "--runs", *paths, "--md", str(md), "--csv", str(csv)]) == 0
    text = md.read_text()
    assert "| wordnet40 | LoRM > FedAvg-LoRA | 0.5 | lorm: 51.00 ± 1.00 | fedavg-lora: 46.20 ± 1.20 |" in text
    assert "**holds**" in text and "not run" in text
    assert csv.read_text().startswith("dataset,claim,beta")


def test_diagnostics_rows_average_the_per_task_diagnostics():
    from lorm.reporting.claims import diagnostics_markdown, diagnostics_rows

    runs = []
    for seed, (und, norm) in enumerate([([80.0, 60.0], 0.01), ([70.0, 50.0], 0.03)]):
        run = _run("lorm", seed, 40.0)
        run["accuracy_matrix"] = [[90.0], [30.0, 20.0 + seed]]
        run["avg_forgetting"] = 60.0
        run["diagnostics"] = {"new_task_acc_undiluted": und,
                              "task_update_rel_norm": [{"a": norm, "b": 3 * norm}, {"a": norm, "b": 3 * norm}]}
        runs.append(run)
    runs.append(_run("joint", 0, 70.0))
    rows = {r["method"]: r for r in diagnostics_rows(runs)}
    lorm = rows["lorm"]
    assert lorm["seeds"] == 2 and lorm["new_task_acc_deployed"] == pytest.approx((55.0 + 55.5) / 2)
    assert lorm["new_task_acc_deployed_last"] == pytest.approx(20.5)
    assert lorm["new_task_acc_undiluted"] == pytest.approx(65.0) and lorm["new_task_acc_undiluted_last"] == 55.0
    assert lorm["update_rel_norm"] == pytest.approx(0.04)
    assert math.isnan(rows["joint"]["new_task_acc_undiluted"])
    text = diagnostics_markdown(list(rows.values()))
    assert "| wordnet40 | 0.5 | lorm | 2 | 40.00 | 60.00 | 55.25 / 20.50 | 65.00 / 55.00 | 4.00e-02 |" in text


def test_readme_block_is_refreshed_between_the_markers(tmp_path):
    run = _run("lorm", 0, 50.0)
    run.pop("_path")
    run["provenance"] = {"commit": "abc123", "finished": "2026-12-02T20:00:00+00:00", "cpus": 2}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(run))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- claims:begin -->\nOLD-BLOCK\n<!-- claims:end -->\nafter\n")
    assert main(["claims", "--runs", str(path), "--md", str(tmp_path / "c.md"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- claims:begin -->\n### Does the paper's claim hold?")
    assert "OLD-BLOCK" not in text and text.endswith("<!-- claims:end -->\nafter\n")
    assert "1 runs; wall time not recorded" in text and "code commit abc123 (1 run)" in text
    readme.write_text("no markers")
    assert main(["claims", "--runs", str(path), "--md", str(tmp_path / "c.md"), "--readme", str(readme)]) == 2
