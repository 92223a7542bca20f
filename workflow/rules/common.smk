# Configuration, wildcard constraints, paths, targets and input/params/resource functions of the lorm workflow.
# No rules here: they are in data.smk, run.smk and report.smk.
#
# One workflow, one or several experiments. Without `experiments` the config IS the experiment (as always);
# with `experiments: [files]` (config/paper.yaml) every listed file is a complete experiment of its own.
# Either way everything below works from EXPERIMENTS, {experiment name: validated config}, and every path
# carries {experiment}: data, partitions, runs, resolved configs and their params all come from that
# experiment's own config.

import glob
import os
import re
import shlex
import sys

from lorm.config import (
    ConfigError,
    base_method,
    beta_label,
    load_experiments,
    method_config,
    validate_config,
    write_config_if_changed,
)
from lorm.mergebench.config import load_merge_config
from lorm.mergebench.tasks import task_names
from lorm.methods.names import FULL_FINETUNING, PROMPT_METHODS, TASK_MERGE
from lorm.reporting.figures import FIGURE_STEMS, figure_paths
from lorm.reporting.figures import FORMATS as FIGURE_FORMATS


# ---- configuration ------------------------------------------------------------------------------------------
def _including_source():
    """How the including config is named in error messages: the --configfile paths (and --config)."""
    here = os.getcwd() + os.sep
    names = [
        f[len(here) :] if f.startswith(here) else f
        for f in map(str, workflow.config_settings.configfiles)
    ]
    if workflow.config_settings.config:
        names.append("--config")
    return ", ".join(names) or "config"


def _experiments(config):
    """{experiment name: validated config}; a ConfigError is one line naming the file and the key.

    With `experiments`, the including config is what the user passed (--configfile files and --config): the
    keys Snakemake merged in from config/config.yaml are not the including file's own, so they neither
    override the listed files nor count as stray keys. Without it, `config` is validated in place (defaults
    filled in), as before.
    """
    if not config.get("experiments"):
        validate_config(config)
        return {config["experiment"]: config}
    user = dict(workflow.config_settings.overwrite_config)
    including = user if user.get("experiments") else dict(config)
    experiments = load_experiments(including, source=_including_source())
    # `config` (seen by report captions) becomes the including config itself
    config.clear()
    config.update(including)
    return experiments


# Validate against lorm/schemas/config.schema.yaml (= workflow/schemas/config.schema.yaml) and fill in the
# defaults. A ConfigError is one line naming the key and the fix; print just that line and stop (raising
# WorkflowError would add the file, line and a traceback frame of this file).
try:
    EXPERIMENTS = _experiments(config)
except ConfigError as error:
    print(f"lorm workflow: invalid configuration: {error}", file=sys.stderr)
    sys.exit(1)

MULTI = bool(
    config.get("experiments")
)  # several experiments: per-experiment figures and the paper table
METHODS = list(dict.fromkeys(m for cfg in EXPERIMENTS.values() for m in cfg["methods"]))


def betas_of(experiment):
    """Canonical text of each beta of an experiment (0.5, 1.0, 0.05): path component beta{beta}."""
    return [beta_label(beta) for beta in EXPERIMENTS[experiment]["fcil"]["betas"]]


# Every job reads the resolved config of its experiment (defaults filled in) from this file. It is rewritten
# only when its content changes, and it is deliberately not an input of the jobs (what a job depends on goes
# through `params:`), so that e.g. adding a seed does not rerun the other seeds' jobs.
RESOLVED_CONFIG = "results/config/{experiment}.resolved.yaml"
for _name, _cfg in EXPERIMENTS.items():
    write_config_if_changed(_cfg, RESOLVED_CONFIG.format(experiment=_name))

# Jobs call `python -m lorm` from this checkout (also inside the conda env, which holds only the dependencies),
# and run jobs `python -m gpu_slot` (workflow/scripts/gpu_slot.py: each GPU job of a multi-GPU workstation
# gets a device of its own).
_pythonpath = os.environ.get("PYTHONPATH")
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [workflow.basedir, os.path.join(workflow.basedir, "workflow", "scripts")]
        + ([_pythonpath] if _pythonpath else [])
    )
)


wildcard_constraints:
    experiment="|".join(re.escape(name) for name in EXPERIMENTS),
    method="|".join(re.escape(method) for method in METHODS),
    seed=r"\d+",
    beta=r"\d+(\.\d+)?(e[+-]?\d+)?",


# ---- paths and targets --------------------------------------------------------------------------------------
DATASET = "results/data/{experiment}/dataset.json"
PARTITION = "results/partitions/{experiment}/beta{beta}/seed{seed}.json"
METRICS = "results/runs/{experiment}/beta{beta}/{method}/seed{seed}/metrics.json"
TABLE_CSV = "results/tables/main.csv"
TABLE_MD = "results/tables/main.md"
# the paper's claims tested on the runs: paired differences over seeds, intervals, verdicts
CLAIMS_MD = "results/tables/claims.md"
CLAIMS_CSV = "results/tables/claims.csv"
# several experiments: their runs beside the paper's numbers (reference data shipped with the workflow)
PAPER_CSV = "results/tables/paper.csv"
PAPER_MD = "results/tables/paper.md"
PAPER_REFERENCE = os.path.join(
    workflow.basedir, "workflow/resources/paper-table-lorm.csv"
)
# one experiment: the files `lorm figures --out-dir figures` writes (names depend on the number of betas); the
# PNGs go into the report, the PDFs beside them are for papers
FIGURE_CAPTIONS = {
    "accuracy_per_task": "Accuracy per task",
    "accuracy_matrix": "Accuracy matrix",
    "accuracy_vs_communication": "Accuracy against communication",
    "forgetting_and_accuracy": "Accuracy and forgetting",
    "faa_vs_beta": "Accuracy against beta",
}
if not MULTI:
    (_single,) = EXPERIMENTS.values()
    FIGURES = {
        stem: paths
        for stem in FIGURE_CAPTIONS
        if (paths := figure_paths(_single["fcil"]["betas"], "figures", [stem], ["png"]))
    }
    FIGURES_PDF = figure_paths(_single["fcil"]["betas"], "figures", formats=["pdf"])
# several experiments: one folder per experiment and beta (one beta per call, hence fixed file names), an FAA
# against beta figure per experiment with several betas, and the paper parity figure
EXPERIMENT_FIGURE = "figures/{experiment}/beta{beta}/{stem}.{fmt}"
BETA_FIGURE_PATH = "figures/{experiment}/faa_vs_beta.{fmt}"
PAPER_FIGURE_PATH = "figures/paper_parity.{fmt}"
# `snakemake readme_results`: the README's table and two figures, copied from a finished run with its provenance
README_RESULTS_DIR = "docs/results"
README_FIGURES = ("accuracy_per_task", "accuracy_vs_communication")


def figure_outputs(stem, fmt="png"):
    """Output paths of one figure stem of the per-experiment-and-beta rule (several experiments)."""
    return EXPERIMENT_FIGURE.format(experiment="{experiment}", beta="{beta}", stem=stem, fmt=fmt)


def run_metrics(experiment, betas=None):
    """Metrics files of one experiment (every method x seed x beta, or only the given betas), method-major."""
    cfg = EXPERIMENTS[experiment]
    return expand(
        METRICS,
        experiment=experiment,
        beta=betas or betas_of(experiment),
        method=cfg["methods"],
        seed=cfg["seeds"],
    )


def all_run_metrics(wildcards):
    """Metrics files of every experiment x beta x method x seed (the table's row order)."""
    return [path for name in EXPERIMENTS for path in run_metrics(name)]


def experiment_beta_metrics(wildcards):
    """Metrics files of one experiment and beta (input of its figures)."""
    return run_metrics(wildcards.experiment, [wildcards.beta])


def _figure_report(paths, stem, labels=None):
    """report() entry of one figure stem: its caption file and subcategory."""
    return report(
        paths,
        caption=f"../report/{stem}.rst",
        category="Results",
        subcategory=FIGURE_CAPTIONS[stem],
        labels=labels,
    )


def single_experiment_figures():
    """Named PNG outputs of the one-experiment figures rule, {stem: report(paths)}."""
    return {stem: _figure_report(paths, stem) for stem, paths in FIGURES.items()}


def experiment_beta_figures():
    """Named PNG outputs of the per-experiment-and-beta figures rule (several experiments)."""
    labels = {"experiment": "{experiment}", "beta": "{beta}"}
    return {stem: _figure_report(figure_outputs(stem), stem, labels) for stem in FIGURE_STEMS}


def experiment_metrics(wildcards):
    """Metrics files of one experiment, every beta (input of its FAA-against-beta figure)."""
    return run_metrics(wildcards.experiment)


def readme_figures(wildcards):
    """The README's figures: those of the first beta of a single experiment (several experiments: an error)."""
    if MULTI:
        raise WorkflowError(
            "readme_results: the README shows a single experiment (the default), not a list of experiments"
        )
    return [FIGURES[stem][0] for stem in README_FIGURES]


def multi_beta_experiments():
    return [name for name in EXPERIMENTS if len(betas_of(name)) > 1]


def final_targets(wildcards):
    tables = [TABLE_CSV, TABLE_MD, CLAIMS_MD, CLAIMS_CSV]
    if not MULTI:
        return tables + [p for paths in FIGURES.values() for p in paths] + FIGURES_PDF
    figures = [
        EXPERIMENT_FIGURE.format(experiment=name, beta=beta, stem=stem, fmt=fmt)
        for name in EXPERIMENTS
        for beta in betas_of(name)
        for stem in FIGURE_STEMS
        for fmt in FIGURE_FORMATS
    ]
    figures += [
        BETA_FIGURE_PATH.format(experiment=name, fmt=fmt)
        for name in multi_beta_experiments()
        for fmt in FIGURE_FORMATS
    ]
    figures += [PAPER_FIGURE_PATH.format(fmt=fmt) for fmt in FIGURE_FORMATS]
    return tables + [PAPER_CSV, PAPER_MD] + figures


def output_stem(wildcards, output):
    """The PNG output without its extension (the CLI writes <stem>.png and <stem>.pdf)."""
    return os.path.splitext(output.png)[0]


def figures_dir(wildcards, output):
    """Folder of the outputs: the folder of the first output file."""
    first = output[0]
    return os.path.dirname(first if isinstance(first, str) else first[0])


# ---- params: what each job depends on (a change reruns exactly the affected jobs) ---------------------------
PARTITION_KEYS = (
    "num_tasks",
    "task_sizes",
    "class_order",
    "num_clients",
    "min_samples",
    "max_redraws",
)


def resolved_config(wildcards):
    return RESOLVED_CONFIG.format(experiment=wildcards.experiment)


def _what_data(dataset):
    """The dataset section without `root`: where the data lie is not what they are, so moving them (or
    editing the placeholder root of config/paper/*.yaml) reruns nothing. `evaluate_on: test` (the default) is
    left out too, so results computed before the key existed stay valid."""
    return {key: value for key, value in dataset.items()
            if key != "root" and not (key == "evaluate_on" and value == "test")}


def dataset_params(wildcards):
    return _what_data(EXPERIMENTS[wildcards.experiment]["dataset"])


def partition_params(wildcards):
    fcil = EXPERIMENTS[wildcards.experiment]["fcil"]
    return {key: fcil[key] for key in PARTITION_KEYS}


def run_params(wildcards):
    """Effective settings of one run: method_params of the method merged into its sections.

    Only the sections the method reads are included, so that e.g. a change of the ewc section reruns EWC
    alone, and adding the baselines to `methods` (config/baselines.yaml) reruns none of the LoRA runs.
    runtime.threads, num_workers, eval_batch_size and progress are left out on purpose (they do not change
    results); so are fcil.betas (the beta is a wildcard) and dataset.root.
    """
    experiment = EXPERIMENTS[wildcards.experiment]
    cfg = method_config(experiment, wildcards.method)
    method = base_method(experiment, wildcards.method)  # a variant depends on what its method reads
    params = {
        "dataset": _what_data(cfg["dataset"]),
        "fcil": {key: value for key, value in cfg["fcil"].items() if key != "betas"},
    }
    if method in FULL_FINETUNING:
        params["model"] = {k: v for k, v in cfg["model"].items() if k != "lora_rank"}
        params["optim"] = {"weight_decay": cfg["optim"]["weight_decay"]}
        params["baselines"] = cfg["baselines"]
        if method in cfg:
            params[method] = cfg[method]
    elif method == "pilora" or method in PROMPT_METHODS:
        # own adapters or prompts and own optimiser: the method's section (pilora, l2p, coda), not optim / lorm /
        # lora_*
        params["model"] = {k: v for k, v in cfg["model"].items() if k not in ("lora_rank", "lora_targets")}
        section = PROMPT_METHODS.get(method, method)
        params[section] = cfg[section]
    else:
        params.update(model=cfg["model"], optim=cfg["optim"], lorm=cfg["lorm"])
        if method in TASK_MERGE:
            params["task_merge"] = cfg["task_merge"]
    params.update(device=cfg["runtime"]["device"], amp=cfg["runtime"]["amp"])
    if method == "joint":
        params["joint"] = cfg["joint"]
    return params


# ---- threads and resources ----------------------------------------------------------------------------------
def _visible_gpus():
    """NVIDIA GPUs this machine exposes (CUDA_VISIBLE_DEVICES if set, else /dev/nvidiaN); no torch import."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(glob.glob(os.path.join(os.sep, "dev", "nvidia[0-9]*")))


VISIBLE_GPUS = _visible_gpus()


def data_threads(wildcards):
    """prepare-data decodes images in runtime.num_workers threads (at least one)."""
    return max(1, EXPERIMENTS[wildcards.experiment]["runtime"]["num_workers"])


def run_threads(wildcards):
    """runtime.threads of the experiment (a profile's set-threads overrides it)."""
    return EXPERIMENTS[wildcards.experiment]["runtime"]["threads"]


def run_gpus(wildcards):
    """The Snakemake resource gpu of a run job: 1 for device cuda/cuda:N, and for auto on a machine with a GPU.

    A cluster profile's set-resources (profiles/slurm) wins over this, so `auto` also gets a GPU on SLURM
    although the login node that plans the jobs has none.
    """
    device = EXPERIMENTS[wildcards.experiment]["runtime"]["device"]
    if device.startswith("cuda"):
        return 1
    return 1 if device == "auto" and VISIBLE_GPUS > 0 else 0


def run_device(wildcards):
    """runtime.device of the experiment: gpu_slot.py leaves a pinned cuda:N alone."""
    return EXPERIMENTS[wildcards.experiment]["runtime"]["device"]


def run_mem_mb(wildcards, attempt):
    return 4000 * attempt


def run_runtime(wildcards, attempt):
    """Minutes; doubled on a retry (`--retries 1`)."""
    return 60 * attempt


# ---- the KnOTS merge benchmark (workflow/rules/merge.smk) ---------------------------------------------------
def _merge_config_path():
    """config key merge_benchmark (an including config may set it; else the listed experiments' value)."""
    if config.get("merge_benchmark"):
        return config["merge_benchmark"]
    return next(iter(EXPERIMENTS.values()))["merge_benchmark"]


MERGE_CONFIG = _merge_config_path()
try:
    MERGE = load_merge_config(MERGE_CONFIG) if os.path.exists(MERGE_CONFIG) else None
    MERGE_ERROR = None if MERGE else f"{MERGE_CONFIG}: file not found (config key merge_benchmark)"
except ConfigError as error:  # reported only when the merge benchmark is requested
    MERGE, MERGE_ERROR = None, str(error)

MERGE_SHELL_ERROR = shlex.quote(f"lorm workflow: merge benchmark: {MERGE_ERROR}")
if MERGE is not None:
    MERGE_NAME = MERGE["experiment"]
    MERGE_TASKS = task_names(MERGE)
    # the reference rows first: the individual fine-tuned models and the pre-trained base
    MERGE_METHODS = ["finetuned", "base", *MERGE["merge"]["methods"]]
    MERGE_DIR = f"results/merge/{MERGE_NAME}"
    MERGE_FIGURES = f"figures/merge/{MERGE_NAME}"

    wildcard_constraints:
        task="|".join(re.escape(t) for t in MERGE_TASKS),
        merge_method="|".join(re.escape(m) for m in MERGE_METHODS),


def merge_settings(sections):
    """The benchmark config sections a job depends on (rerun trigger through params)."""
    return {section: MERGE.get(section) for section in sections}


def merge_gpus(wildcards):
    """A merge benchmark job takes a GPU when the machine has one and runtime.device allows it."""
    return int(VISIBLE_GPUS > 0 and MERGE["runtime"]["device"] != "cpu")
