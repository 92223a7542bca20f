"""The paper and SLURM profiles: job counts of the full replication, GPU requests, a stubbed SLURM run.

Nothing here trains at paper scale: the paper profile is only dry-run; the SLURM profile is exercised against stub
``sbatch``/``sacct``/``srun``/``sacctmgr``/``sinfo`` commands (snakemake-notes 9.4) on a tiny two-experiment config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorm.config import load_config, load_experiments

REPO = Path(__file__).resolve().parents[1]
PAPER_PROFILE = REPO / "profiles" / "paper" / "profile.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"
HAVE_SLURM_PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
needs_slurm_plugin = pytest.mark.skipif(not HAVE_SLURM_PLUGIN, reason="snakemake-executor-plugin-slurm missing")


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")  # plan as on a GPU-less login node
    env.update(extra)
    return env


def _snakemake(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def _job_counts(stdout: str) -> dict[str, int]:
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", stdout, re.S)
    assert match, stdout[-2000:]
    counts = {line.split()[0]: int(line.split()[1]) for line in match.group(1).splitlines()}
    assert sum(counts.values()) == int(match.group(2))
    return counts


def _paper_experiments() -> dict[str, dict]:
    return load_experiments(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()), base_dir=REPO)


# ------------------------------------------------------------------------------------------------ profiles


def _uncommented_entries(path: Path) -> list[str]:
    """Key lines of a profile with neither an inline comment nor a comment line right above them."""
    lines = path.read_text().splitlines()
    bad = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        above = lines[i - 1].strip() if i else ""
        if "#" not in line and not above.startswith("#"):
            bad.append(line)
    return bad


def test_paper_profile():
    profile = yaml.safe_load(PAPER_PROFILE.read_text())
    assert profile["configfile"] == "config/paper.yaml"
    assert profile["rerun-triggers"] == ["mtime", "params", "input"]
    assert _uncommented_entries(PAPER_PROFILE) == []


def test_slurm_profile():
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm" and profile["jobs"] == 100 and profile["retries"] == 1
    assert profile["latency-wait"] == 60 and profile["rerun-triggers"] == ["mtime", "params", "input"]
    defaults = profile["default-resources"]
    assert defaults["slurm_account"] == "CHANGE_ME" and defaults["slurm_partition"] == "CHANGE_ME"
    assert {"runtime", "mem_mb"} <= set(defaults)
    run = profile["set-resources"]["run"]
    assert run["gpu"] == 1 and run["cpus_per_gpu"] == 8 and run["mem_mb"] == 64000
    assert run["slurm_partition"].startswith("CHANGE_ME") and "attempt" in run["runtime"]
    assert "gpu" not in profile["set-resources"].get("prepare_data", {})
    assert profile["set-threads"] == {"run": 8}
    assert _uncommented_entries(SLURM_PROFILE) == []


def test_profiles_compose():
    # `--profile profiles/slurm --workflow-profile paper`: a key of the workflow profile replaces the same key of
    # the global one as a whole, so the two may share only keys with identical values
    paper, slurm = (yaml.safe_load(p.read_text()) for p in (PAPER_PROFILE, SLURM_PROFILE))
    for key in set(paper) & set(slurm):
        assert paper[key] == slurm[key], key


# ------------------------------------------------------------------------------------------------ dry-runs


def test_paper_dry_run_job_counts():
    """`snakemake --workflow-profile paper`: 18 settings x 3 seeds x 18 methods run jobs (one data set and one
    prepared copy per experiment, one partition per experiment x seed)."""
    proc = _snakemake("all", "--dry-run", "--forceall", "--quiet", "rules", "--workflow-profile", "paper")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = _job_counts(proc.stdout)
    assert counts == {"prepare_data": 18, "partition": 18 * 3, "run": 18 * 3 * 22, "figures": 18, "table": 1, "claims": 1,
                      "paper_table": 1, "paper_figure": 1, "all": 1}
    experiments = _paper_experiments()
    assert counts["run"] == sum(len(c["methods"]) * len(c["seeds"]) * len(c["fcil"]["betas"])
                                for c in experiments.values())


def test_paper_lint():
    proc = _snakemake("--lint", "--workflow-profile", "paper")
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _job_blocks(stdout: str) -> list[tuple[str, str]]:
    """(rule, block text) of every job of a non-quiet dry-run."""
    blocks = []
    for block in stdout.split("\n\n"):
        match = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if match:
            blocks.append((match.group(1), block))
    return blocks


def _resources(block: str) -> dict[str, str]:
    match = re.search(r"^\s+resources: (.*)$", block, re.M)
    return dict(item.split("=", 1) for item in match.group(1).split(", ")) if match else {}


@needs_slurm_plugin
def test_slurm_paper_dry_run_requests_gpus_for_run_jobs_only():
    proc = _snakemake("all", "--dry-run", "--forceall", "--profile", "profiles/slurm", "--workflow-profile", "paper")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Using profiles profiles/slurm and workflow specific profile profiles/paper" in proc.stdout + proc.stderr
    blocks = _job_blocks(proc.stdout)
    runs = [b for rule, b in blocks if rule == "run"]
    assert len(runs) == 18 * 3 * 22  # 22 methods, the four newest baselines included
    for block in runs:
        resources = _resources(block)
        assert resources["gpu"] == "1" and resources["cpus_per_gpu"] == "8", block
        assert resources["slurm_partition"] == "CHANGE_ME_GPU" and resources["slurm_account"] == "CHANGE_ME"
        assert resources["mem_mb"] == "64000" and resources["runtime"] == "360"
    others = [(rule, b) for rule, b in blocks if rule != "run"]
    assert {rule for rule, _ in others} == {"prepare_data", "partition", "figures", "table", "claims", "paper_table",
                                            "paper_figure", "all"}
    for rule, block in others:
        assert _resources(block).get("gpu", "0") == "0", block
    prepare = [_resources(b) for rule, b in others if rule == "prepare_data"]
    assert len(prepare) == 18 and all(r["mem_mb"] == "32000" and r["slurm_partition"] == "CHANGE_ME" for r in prepare)


# ------------------------------------------------------------------------------------------ stubbed SLURM run

STUBS = {
    # record the call, run the --wrap payload right here (blocking), print the job id. The plugin submits from
    # two threads at once, so the job counter is read and bumped under a lock (unlocked, a reader could see the
    # file truncated by the other writer, crash, and turn into a failed submission that snakemake retries).
    "sbatch": """
        import fcntl, json, os, subprocess, sys
        args = sys.argv[1:]
        with open(os.path.join(STATE, "next_id"), "a+") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            counter.seek(0)
            jobid = int(counter.read() or 1000) + 1
            counter.seek(0)
            counter.truncate()
            counter.write(str(jobid))
        wrap = next(a[len("--wrap="):] for a in args if a.startswith("--wrap="))
        log = args[args.index("--output") + 1].replace("%j", str(jobid))
        workdir = args[args.index("-D") + 1] if "-D" in args else os.getcwd()
        with open(log, "w") as fh:
            rc = subprocess.call(wrap, shell=True, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, SLURM_JOB_ID=str(jobid)))
        with open(os.path.join(STATE, "sbatch.jsonl"), "a") as fh:
            fh.write(json.dumps({"jobid": jobid, "args": args, "rc": rc,
                                 "name": args[args.index("--job-name") + 1]}) + "\\n")
        print(jobid)
    """,
    # COMPLETED / FAILED for the recorded jobs of the workflow run named by --name
    "sacct": """
        import json, os, sys
        args = sys.argv[1:]
        path = os.path.join(STATE, "sbatch.jsonl")
        if "--name" in args and os.path.exists(path):
            name = args[args.index("--name") + 1]
            for line in open(path):
                job = json.loads(line)
                if job["name"] == name:
                    print(f"{job['jobid']}|{'COMPLETED' if job['rc'] == 0 else 'FAILED'}")
    """,
    # record the options of the job step, run its command
    "srun": """
        import json, os, sys
        args = sys.argv[1:]
        i = 0
        while i < len(args) and args[i].startswith("-"):
            i += 1
        with open(os.path.join(STATE, "srun.jsonl"), "a") as fh:
            fh.write(json.dumps({"options": args[:i], "command": args[i:]}) + "\\n")
        os.execvp(args[i], args[i:])
    """,
    "sacctmgr": "print('change_me')",  # the account of profiles/slurm (compared case-insensitively)
    "sinfo": "",
}


def _write_stubs(bin_dir: Path, state: Path) -> None:
    bin_dir.mkdir(parents=True)
    state.mkdir(parents=True)
    for name, body in STUBS.items():
        # the state folder is written into the stubs: the SLURM job step drops SLURM_* variables
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\nSTATE = {str(state)!r}\n" + textwrap.dedent(body))
        path.chmod(0o755)


def _tiny_pair(tmp_path: Path) -> str:
    """Two tiny WordNet-40 experiments (2 tasks, 1 round, 2 + 1 samples per class), one method: joint."""
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["dataset"].update(train_per_class=2, test_per_class=1)
    cfg["fcil"].update(num_tasks=2, rounds=1)
    files = []
    for name in ("tiny-a", "tiny-b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "experiment": name}, sort_keys=False))
        files.append(str(path))
    including = tmp_path / "tiny.yaml"
    including.write_text(yaml.safe_dump({"experiments": files, "methods": ["joint"]}))
    return str(including)


@pytest.mark.slow
@needs_slurm_plugin
def test_slurm_stub_run_only_run_jobs_get_gpus(tmp_path):
    bin_dir, state, work = tmp_path / "bin", tmp_path / "state", tmp_path / "work"
    _write_stubs(bin_dir, state)
    work.mkdir()
    env = _env()
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    proc = _snakemake("--snakefile", str(REPO / "Snakefile"), "--configfile", _tiny_pair(tmp_path),
                      "--directory", str(work), "--profile", str(REPO / "profiles" / "slurm"),
                      "--workflow-profile", "none", "--slurm-init-seconds-before-status-checks", "1",
                      cwd=tmp_path, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    calls = [json.loads(line) for line in (state / "sbatch.jsonl").read_text().splitlines()]
    by_rule = {}
    for call in calls:
        comment = call["args"][call["args"].index("--comment") + 1]
        by_rule.setdefault(re.match(r"rule_(\w+?)_wildcards", comment).group(1), []).append(call)
    # the cheap rules stayed local; prepare_data and run were submitted, one job per experiment (x method)
    summary = [(c["jobid"], c["rc"], c["name"], c["args"][c["args"].index("-t") + 1]) for c in calls]
    assert sorted(by_rule) == ["prepare_data", "run"], summary
    assert len(by_rule["prepare_data"]) == 2 and len(by_rule["run"]) == 2, summary
    assert len({c["jobid"] for c in calls}) == len(calls), summary
    for call in calls:
        args = call["args"]
        assert call["rc"] == 0, summary
        assert args[args.index("-A") + 1] == "CHANGE_ME"
        gpus = [a for a in args if a.startswith("--gpus")]
        if call in by_rule["run"]:
            assert gpus == ["--gpus=1"] and "--cpus-per-gpu=8" in args
            assert args[args.index("-p") + 1] == "CHANGE_ME_GPU" and args[args.index("--mem") + 1] == "64000"
            assert args[args.index("-t") + 1] == "360", summary  # the first attempt: nothing was retried
        else:
            assert gpus == [] and not any(a.startswith("--cpus-per-gpu") for a in args)
            assert args[args.index("-p") + 1] == "CHANGE_ME" and args[args.index("--mem") + 1] == "32000"
    steps = [json.loads(line)["options"] for line in (state / "srun.jsonl").read_text().splitlines()]
    assert sum("--gpus=1" in options for options in steps) == 2 and len(steps) == 4

    # the results: both experiments in the main table and beside the paper's numbers
    main = pd.read_csv(work / "results" / "tables" / "main.csv")
    assert sorted(main["experiment"]) == ["tiny-a", "tiny-b"] and list(main["method"]) == ["joint", "joint"]
    paper = (work / "results" / "tables" / "paper.md").read_text()
    assert "wordnet40 ours (tiny-a)" in paper and "wordnet40 ours (tiny-b)" in paper and "| 92.75 |" in paper
    for name in ("tiny-a", "tiny-b"):
        for figure in ("accuracy_per_task.png", "accuracy_matrix.png"):
            assert (work / "figures" / name / "beta0.5" / figure).stat().st_size > 5_000
        assert load_config(work / "results" / "config" / f"{name}.resolved.yaml")["experiment"] == name

    # the HTML report of the run (captions of the several-experiments layout)
    report = _snakemake("--snakefile", str(REPO / "Snakefile"), "--configfile", str(tmp_path / "tiny.yaml"),
                        "--directory", str(work), "--workflow-profile", "none", "--report",
                        str(tmp_path / "report.zip"), cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert (tmp_path / "report.zip").stat().st_size > 10_000
