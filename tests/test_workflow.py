"""The Snakemake workflow: dry-run job counts, config errors, lint, formatting and a tiny real run.

Snakemake runs in a subprocess (``python -m snakemake``) with this interpreter's bin folder first on PATH, so the
jobs' ``python -m lorm`` uses the same environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorm.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _snakemake(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _job_counts(stdout: str) -> dict[str, int]:
    """The first "Job stats" table of a dry-run as {rule: count}."""
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", stdout, re.S)
    assert match, stdout[-2000:]
    counts = {}
    for line in match.group(1).splitlines():
        rule, count = line.split()
        counts[rule] = int(count)
    assert sum(counts.values()) == int(match.group(2))
    return counts


def _dry_run(*args: str, cwd: Path = REPO, quiet: bool = True) -> tuple[dict[str, int], str]:
    # targets first: `--quiet` takes optional values and would swallow a target that follows it
    # (`--quiet all` means "print nothing at all"); --forceall makes the counts independent of existing results
    quiet_args = ["--quiet", "rules"] if quiet else ["--printshellcmds"]
    proc = _snakemake("all", "--dry-run", "--forceall", *quiet_args, *args, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _job_counts(proc.stdout), proc.stdout


def _expected_counts(cfg: dict) -> dict[str, int]:
    runs = len(cfg["methods"]) * len(cfg["seeds"]) * len(cfg["fcil"]["betas"])
    partitions = len(cfg["seeds"]) * len(cfg["fcil"]["betas"])
    return {"prepare_data": 1, "partition": partitions, "run": runs, "table": 1, "figures": 1, "all": 1}


def test_dry_run_default_config():
    counts, _ = _dry_run()
    cfg = load_config(REPO / "config" / "config.yaml")
    assert counts == _expected_counts(cfg)
    assert counts["run"] == len(cfg["methods"]) * len(cfg["seeds"]) * len(cfg["fcil"]["betas"])


def test_dry_run_grid_and_per_beta_figures(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg.update(experiment="grid", seeds=[0, 1, 2])
    cfg["fcil"]["betas"] = [0.5, 1, 0.05]
    cfg["runtime"]["device"] = "cuda"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts, stdout = _dry_run("--snakefile", str(REPO / "Snakefile"), "--configfile", str(path),
                              "--directory", str(tmp_path / "work"), cwd=tmp_path, quiet=False)
    assert counts["run"] == 3 * 3 * 3 and counts["partition"] == 9
    for beta in ("0.5", "1.0", "0.05"):
        assert f"results/runs/grid/beta{beta}/lorm/seed2/metrics.json" in stdout
        assert f"figures/accuracy_per_task_beta{beta}.png" in stdout
        assert f"figures/accuracy_matrix_beta{beta}.png" in stdout
    assert "gpu=1" in stdout  # runtime.device cuda -> run jobs request a GPU
    resolved = tmp_path / "work" / "results" / "config" / "grid.resolved.yaml"
    assert load_config(resolved)["fcil"]["betas"] == [0.5, 1, 0.05]


def test_dry_run_cpu_jobs_request_no_gpu():
    _, stdout = _dry_run(quiet=False)
    run_blocks = [block for block in stdout.split("\n\n") if "rule run:" in block]
    assert run_blocks and all("gpu=0" in block for block in run_blocks)


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"methods": ["lorm", "bogus"]}, "config key methods[1]: 'bogus' is not allowed"),
        ({"fcil": {"beta_list": [0.5]}}, "config key fcil.beta_list: unknown key"),
        ({"fcil": {"rounds": -1}}, "config key fcil.rounds: -1 is less than the minimum 1"),
    ],
)
def test_config_error_is_one_line_without_traceback(tmp_path, bad, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = _snakemake("--dry-run", "--configfile", str(path))
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and 'File "' not in output
    lines = [line for line in proc.stderr.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"lorm workflow: invalid configuration: {key}")


def test_lint():
    proc = _snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("snakefmt", path=_env()["PATH"]) is None, reason="snakefmt is not installed")
def test_snakefmt():
    snakefmt = shutil.which("snakefmt", path=_env()["PATH"])
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_symlink_and_files():
    link = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert link.is_symlink() and os.readlink(link) == "../../lorm/schemas/config.schema.yaml"
    for name in ("table.rst", "accuracy_per_task.rst", "accuracy_matrix.rst"):
        assert (REPO / "workflow" / "report" / name).is_file()
    assert (REPO / "workflow" / "envs" / "lorm.yaml").is_file()
    assert (REPO / "profiles" / "default" / "profile.yaml").is_file()


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path):
    """Real run of config/test.yaml (3 methods, 1 seed, 40 classes, 2 clients) in a temporary directory.

    Absolute --snakefile/--configfile: the Snakefile's `configfile: "config/config.yaml"` is resolved against the
    working directory (here tmp_path, where it does not exist, so only config/test.yaml is read).
    """
    args = ["--cores", "2", "--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config" / "test.yaml"),
            "--directory", str(tmp_path)]
    proc = _snakemake(*args, cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    cfg = load_config(REPO / "config" / "test.yaml")
    table = pd.read_csv(tmp_path / "results" / "tables" / "main.csv")
    assert list(table["method"]) == cfg["methods"]
    assert (table["n_seeds"] == 1).all() and table["faa_mean"].between(0, 100).all()
    markdown = (tmp_path / "results" / "tables" / "main.md").read_text()
    assert markdown.startswith("# Results: experiment test; β = 0.5")
    for name in ("accuracy_per_task.png", "accuracy_matrix.png"):
        data = (tmp_path / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    for method in cfg["methods"]:
        assert (tmp_path / "logs" / "run" / "test" / "beta0.5" / method / "seed0.log").is_file()
        assert (tmp_path / "benchmarks" / "run" / "test" / "beta0.5" / method / "seed0.tsv").is_file()
    for rule in ("prepare_data", "partition", "table", "figures"):
        assert any((tmp_path / "logs" / rule).rglob("*.log")), rule
        assert any((tmp_path / "benchmarks" / rule).rglob("*.tsv")), rule

    # a second invocation has nothing to do (the resolved config is not rewritten, params are stable)
    again = _snakemake("--dry-run", *args, cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]

    # the HTML report builds from the run's metadata (report() outputs with captions)
    report = _snakemake("--report", str(tmp_path / "report.zip"), *args[2:], cwd=tmp_path)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert (tmp_path / "report.zip").stat().st_size > 10_000
