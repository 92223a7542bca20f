# Configuration, wildcard constraints, paths, targets and input/params functions of the lorm workflow.
# No rules here: they are in data.smk, run.smk and report.smk.

import os
import re
import sys

from lorm.config import (
    ConfigError,
    beta_label,
    method_config,
    validate_config,
    write_config_if_changed,
)
from lorm.reporting.figures import figure_paths

# ---- configuration ------------------------------------------------------------------------------------------
# Validate against lorm/schemas/config.schema.yaml (= workflow/schemas/config.schema.yaml) and fill in the
# defaults, in place. A ConfigError is one line naming the key and the fix; print just that line and stop
# (raising WorkflowError would add the file, line and a traceback frame of this file).
try:
    validate_config(config)
except ConfigError as error:
    print(f"lorm workflow: invalid configuration: {error}", file=sys.stderr)
    sys.exit(1)

EXPERIMENT = config["experiment"]
METHODS = config["methods"]
SEEDS = config["seeds"]
# canonical text of each beta (0.5, 1.0, 0.05): path component beta{beta}, figure suffixes
BETAS = [beta_label(beta) for beta in config["fcil"]["betas"]]

# Every job reads the resolved config (defaults filled in) from this file. It is rewritten only when its
# content changes, and it is deliberately not an input of the jobs (what a job depends on goes through
# `params:`), so that e.g. adding a seed does not rerun the other seeds' jobs.
RESOLVED_CONFIG = f"results/config/{EXPERIMENT}.resolved.yaml"
write_config_if_changed(config, RESOLVED_CONFIG)

# Jobs call `python -m lorm` from this checkout (also inside the conda env, which holds only the dependencies).
_pythonpath = os.environ.get("PYTHONPATH")
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [workflow.basedir] + ([_pythonpath] if _pythonpath else [])
    )
)


wildcard_constraints:
    experiment=re.escape(EXPERIMENT),
    method="|".join(re.escape(method) for method in METHODS),
    seed=r"\d+",
    beta=r"\d+(\.\d+)?(e[+-]?\d+)?",


# ---- paths and targets --------------------------------------------------------------------------------------
DATASET = "results/data/{experiment}/dataset.json"
PARTITION = "results/partitions/{experiment}/beta{beta}/seed{seed}.json"
METRICS = "results/runs/{experiment}/beta{beta}/{method}/seed{seed}/metrics.json"
TABLE_CSV = "results/tables/main.csv"
TABLE_MD = "results/tables/main.md"
# the files `lorm figures --out-dir figures` writes (names depend on the number of betas)
FIGURES_PER_TASK = figure_paths(
    config["fcil"]["betas"], "figures", ["accuracy_per_task"]
)
FIGURES_MATRIX = figure_paths(config["fcil"]["betas"], "figures", ["accuracy_matrix"])


def all_run_metrics(wildcards):
    """Metrics files of every method x seed x beta, method-major (the table's row order)."""
    return expand(
        METRICS, experiment=EXPERIMENT, beta=BETAS, method=METHODS, seed=SEEDS
    )


def final_targets(wildcards):
    return [TABLE_CSV, TABLE_MD] + FIGURES_PER_TASK + FIGURES_MATRIX


def figures_dir(wildcards, output):
    return os.path.dirname(output.per_task[0])


# ---- params: what each job depends on (a change reruns exactly the affected jobs) ---------------------------
PARTITION_KEYS = (
    "num_tasks",
    "task_sizes",
    "class_order",
    "num_clients",
    "min_samples",
    "max_redraws",
)


def dataset_params(wildcards):
    return config["dataset"]


def partition_params(wildcards):
    return {key: config["fcil"][key] for key in PARTITION_KEYS}


def run_params(wildcards):
    """Effective settings of one run: method_params of the method merged into optim and lorm.

    runtime.threads, num_workers, eval_batch_size and progress are left out on purpose (they do not change
    results); so is fcil.betas (the beta is a wildcard).
    """
    cfg = method_config(config, wildcards.method)
    params = {
        "dataset": cfg["dataset"],
        "fcil": {key: value for key, value in cfg["fcil"].items() if key != "betas"},
        "model": cfg["model"],
        "optim": cfg["optim"],
        "lorm": cfg["lorm"],
        "device": cfg["runtime"]["device"],
        "amp": cfg["runtime"]["amp"],
    }
    if wildcards.method == "joint":
        params["joint"] = cfg["joint"]
    return params


# ---- resources of run jobs ----------------------------------------------------------------------------------
RUN_THREADS = config["runtime"]["threads"]
RUN_GPUS = 1 if config["runtime"]["device"].startswith("cuda") else 0


def run_mem_mb(wildcards, attempt):
    return 4000 * attempt


def run_runtime(wildcards, attempt):
    """Minutes; doubled on a retry (`--retries 1`)."""
    return 60 * attempt
