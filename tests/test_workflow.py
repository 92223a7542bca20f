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


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def _snakemake(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


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


def _dry_run(*args: str, cwd: Path = REPO, quiet: bool = True, env: dict | None = None
             ) -> tuple[dict[str, int], str]:
    # targets first: `--quiet` takes optional values and would swallow a target that follows it
    # (`--quiet all` means "print nothing at all"); --forceall makes the counts independent of existing results
    quiet_args = ["--quiet", "rules"] if quiet else ["--printshellcmds"]
    proc = _snakemake("all", "--dry-run", "--forceall", *quiet_args, *args, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _job_counts(proc.stdout), proc.stdout


def _expected_counts(cfg: dict) -> dict[str, int]:
    runs = len(cfg["methods"]) * len(cfg["seeds"]) * len(cfg["fcil"]["betas"])
    partitions = len(cfg["seeds"]) * len(cfg["fcil"]["betas"])
    return {"prepare_data": 1, "partition": partitions, "run": runs, "table": 1, "claims": 1, "figures": 1, "all": 1}


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


def _run_blocks(stdout: str) -> list[str]:
    return [block for block in stdout.split("\n\n") if "rule run:" in block]


def test_dry_run_cpu_jobs_request_no_gpu():
    # device cpu: never a GPU; device auto (the default config): a GPU only where the machine has one
    _, stdout = _dry_run("--configfile", str(REPO / "config" / "test.yaml"), quiet=False)
    assert _run_blocks(stdout) and all("gpu=0" in block for block in _run_blocks(stdout))
    _, stdout = _dry_run(quiet=False, env=_env(CUDA_VISIBLE_DEVICES=""))
    assert _run_blocks(stdout) and all("gpu=0" in block for block in _run_blocks(stdout))
    _, stdout = _dry_run(quiet=False, env=_env(CUDA_VISIBLE_DEVICES="0,1"))
    blocks = _run_blocks(stdout)
    assert blocks and all("gpu=1" in block and "gpu_slot --gpus 1 --device auto" in block for block in blocks)


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


# ---------------------------------------------------------------------------------------- several experiments


def _tiny_experiment(tmp_path: Path, name: str, **changes) -> str:
    """A complete copy of config/test.yaml named ``name``; mapping sections in ``changes`` are merged over it."""
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["experiment"] = name
    for key, value in changes.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _including(tmp_path: Path, files: list[str], **top) -> str:
    path = tmp_path / "including.yaml"
    path.write_text(yaml.safe_dump({"experiments": files, **top}, sort_keys=False))
    return str(path)


def _in_workdir(tmp_path: Path, including: str, *args: str, quiet: bool = False):
    """Dry-run of ``including`` in tmp_path/work, where a copy of config/config.yaml lies as in the repository
    (Snakemake merges it in underneath the --configfile; it must neither override nor be refused)."""
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    return _dry_run("--snakefile", str(REPO / "Snakefile"), "--configfile", including, "--directory", str(work),
                    *args, cwd=tmp_path, quiet=quiet)


def test_experiments_run_every_experiment_with_its_own_config(tmp_path):
    a = _tiny_experiment(tmp_path, "exp-a", seeds=[0, 1], fcil={"betas": [0.5, 1.0]})
    b = _tiny_experiment(tmp_path, "exp-b", methods=["joint"], fcil={"rounds": 1})
    counts, stdout = _in_workdir(tmp_path, _including(tmp_path, [a, b]))
    assert counts == {"prepare_data": 2, "partition": 2 * 2 + 1, "run": 3 * 2 * 2 + 1, "figures": 2 + 1,
                      "beta_figure": 1, "table": 1, "claims": 1, "paper_table": 1, "paper_figure": 1, "all": 1}
    assert "results/runs/exp-a/beta1.0/fedavg-lora/seed1/metrics.json" in stdout
    assert "results/runs/exp-b/beta0.5/joint/seed0/metrics.json" in stdout
    assert "results/runs/exp-b/beta0.5/lorm/" not in stdout  # exp-b runs only its own method
    assert "--config results/config/exp-b.resolved.yaml --method joint" in stdout
    for path in ("figures/exp-a/beta1.0/accuracy_matrix.png", "figures/exp-b/beta0.5/accuracy_per_task.png",
                 "figures/exp-a/beta1.0/accuracy_vs_communication.pdf", "figures/exp-a/faa_vs_beta.png",
                 "figures/paper_parity.png", "results/tables/paper.md", "results/tables/paper.csv", "results/tables/main.md"):
        assert path in stdout, path
    resolved = tmp_path / "work" / "results" / "config"
    assert sorted(p.name for p in resolved.iterdir()) == ["exp-a.resolved.yaml", "exp-b.resolved.yaml"]
    assert load_config(resolved / "exp-b.resolved.yaml") == load_config(b)


def test_experiments_methods_and_seeds_of_the_including_file_override(tmp_path):
    a = _tiny_experiment(tmp_path, "exp-a", seeds=[0, 1], fcil={"betas": [0.5, 1.0]})
    b = _tiny_experiment(tmp_path, "exp-b", methods=["joint"])
    counts, stdout = _in_workdir(tmp_path, _including(tmp_path, [a, b], methods=["lorm"], seeds=[3]))
    assert counts["run"] == 1 * 1 * 2 + 1 and counts["partition"] == 2 + 1
    assert "results/runs/exp-b/beta0.5/lorm/seed3/metrics.json" in stdout
    assert "seed0" not in stdout and "joint" not in stdout
    resolved = load_config(tmp_path / "work" / "results" / "config" / "exp-a.resolved.yaml")
    assert resolved["methods"] == ["lorm"] and resolved["seeds"] == [3]


def _config_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and 'File "' not in output, output[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0].removeprefix("lorm workflow: invalid configuration: ")


def test_experiments_errors_are_one_line(tmp_path):
    a = _tiny_experiment(tmp_path, "exp-a")
    twin = tmp_path / "twin.yaml"
    twin.write_text(Path(a).read_text())
    proc = _snakemake("--dry-run", "--configfile", _including(tmp_path, [a, str(twin)]))
    message = _config_error(proc)
    assert message.startswith(f"{twin}: config key experiment: 'exp-a' is also the experiment of {a}")

    bad = _tiny_experiment(tmp_path, "exp-bad", fcil={"rounds": -1})
    message = _config_error(_snakemake("--dry-run", "--configfile", _including(tmp_path, [a, bad])))
    assert message == f"{bad}: config key fcil.rounds: -1 is less than the minimum 1"

    typo = _tiny_experiment(tmp_path, "exp-typo", model={"rank": 4})
    message = _config_error(_snakemake("--dry-run", "--configfile", _including(tmp_path, [typo, a])))
    assert message.startswith(f"{typo}: config key model.rank: unknown key")

    stray = _including(tmp_path, [a], fcil={"rounds": 2})
    message = _config_error(_snakemake("--dry-run", "--configfile", stray))
    assert message.startswith(f"{stray}: config key fcil: not allowed next to experiments")

    message = _config_error(_snakemake("--dry-run", "--configfile", _including(tmp_path, [str(tmp_path / "no.yaml")])))
    assert message == f"config file {tmp_path / 'no.yaml'}: not found"


def test_gpu_slot_gives_each_job_its_own_gpu(tmp_path):
    import fcntl

    script = REPO / "workflow" / "scripts" / "gpu_slot.py"
    show = [sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"]

    def slot(*args: str, **env: str) -> str:
        environment = {k: v for k, v in _env(LORM_GPU_COUNT="3", LORM_GPU_LOCK_DIR=str(tmp_path)).items()
                       if k != "CUDA_VISIBLE_DEVICES"}
        environment.update(env)
        proc = subprocess.run([sys.executable, str(script), *args, "--", *show], env=environment,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert slot("--gpus", "1") == "0"
    with open(tmp_path / "gpu0.lock", "a") as held:  # GPU 0 busy: the next job gets GPU 1
        fcntl.flock(held, fcntl.LOCK_EX)
        assert slot("--gpus", "1") == "1"
        assert slot("--gpus", "2") == "1,2"
    assert slot("--gpus", "0") == "unset"  # no GPU requested
    assert slot("--gpus", "1", "--device", "cuda:2") == "unset"  # pinned by the config
    assert slot("--gpus", "1", CUDA_VISIBLE_DEVICES="5") == "5"  # chosen by SLURM
    assert slot("--gpus", "1", LORM_GPU_COUNT="0") == "unset"  # no GPU on this machine


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


def test_merge_benchmark_target_plans_one_job_per_task_and_method(tmp_path):
    """`snakemake merge_benchmark`: 8 fine-tuning jobs, one merge job per method (+ the two reference rows),
    alignment and report; a missing benchmark config fails with one line naming the key."""
    from lorm.mergebench.config import load_merge_config

    proc = _snakemake("merge_benchmark", "--dry-run", "--forceall", "--quiet", "rules")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    merge_cfg = load_merge_config(REPO / "config" / "merge.yaml")
    assert _job_counts(proc.stdout) == {"merge_finetune": 8, "merge_method": len(merge_cfg["merge"]["methods"]) + 2,
                                        "merge_alignment": 1, "merge_report": 1, "merge_benchmark": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"merge_benchmark": str(tmp_path / "missing.yaml")}))
    proc = _snakemake("merge_benchmark", "--configfile", str(bad), "--cores", "1")
    assert proc.returncode != 0
    assert "merge benchmark:" in proc.stderr and "missing.yaml: file not found (config key merge_benchmark)" in proc.stderr


def _replicated_project(tmp_path: Path) -> list[str]:
    """A working directory holding real tracked runs (experiment replication-beta0.5: lorm, fedavg-lora, joint,
    seeds 0 and 1) with placeholder data and partitions marked up to date by `--touch`, so that the reporting
    rules run for real in seconds. Returns the snakemake arguments."""
    name, methods, seeds = "replication-beta0.5", ["lorm", "fedavg-lora", "joint"], [0, 1]
    config = _tiny_experiment(tmp_path, name, methods=methods, seeds=seeds)
    work = tmp_path / "work"
    for method in methods:
        for seed in seeds:
            rel = Path("results/runs") / name / "beta0.5" / method / f"seed{seed}" / "metrics.json"
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, work / rel)
    placeholders = [f"results/data/{name}/dataset.json"] + [f"results/partitions/{name}/beta0.5/seed{s}.json"
                                                             for s in seeds]
    for rel in placeholders:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text("{}")
    args = ["--snakefile", str(REPO / "Snakefile"), "--configfile", config, "--directory", str(work)]
    touched = _snakemake("--touch", "--cores", "1", "results/runs/" + name + "/beta0.5/lorm/seed0/metrics.json",
                         *[f"results/runs/{name}/beta0.5/{m}/seed{s}/metrics.json" for m in methods for s in seeds],
                         *args, cwd=tmp_path)
    assert touched.returncode == 0, touched.stdout[-3000:] + touched.stderr[-3000:]
    return args


@pytest.mark.slow
def test_reporting_rules_figures_report_and_readme_results(tmp_path):
    """On real runs: `all` writes every figure of a single experiment (PNG + PDF), `--report` lists every figure,
    and `readme_results` fills the README's results block from the run (table, figures, provenance)."""
    args = _replicated_project(tmp_path)
    work = tmp_path / "work"
    proc = _snakemake("--cores", "2", *args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    counts = _job_counts(proc.stdout + proc.stderr)
    assert counts == {"table": 1, "claims": 1, "figures": 1, "all": 1}, counts
    stems = ["accuracy_per_task", "accuracy_matrix", "accuracy_vs_communication", "forgetting_and_accuracy"]
    for stem in stems:
        assert (work / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (work / "figures" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"

    report = _snakemake("--report", str(tmp_path / "report.zip"), *args, cwd=tmp_path, timeout=600)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    for stem in stems:
        assert any(n.endswith(f"/{stem}.png") for n in names), (stem, names)

    readme = work / "README.md"
    readme.write_text("# x\n\n## Results\n\n<!-- results:begin (written by `snakemake readme_results`; do not edit by "
                      "hand) -->\nplaceholder\n<!-- results:end -->\n\n## Next\n")
    proc = _snakemake("readme_results", "--cores", "1", *args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = readme.read_text()
    assert "placeholder" not in text and text.endswith("<!-- results:end -->\n\n## Next\n")
    assert "| **lorm** |" in text and "![Accuracy after each task](docs/results/accuracy_per_task.png)" in text
    assert "commit `" in text and "2 seeds per method" in text
    for name in ("accuracy_per_task.png", "accuracy_vs_communication.png", "results.md"):
        assert (work / "docs" / "results" / name).is_file()
        assert (work / "docs" / "results" / name).stat().st_size <= 300_000
