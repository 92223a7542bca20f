"""Command line: ``lorm <command>`` or ``python -m lorm <command>``; usable with or without Snakemake.

Every user error (bad config key, missing data, mismatched files) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DESCRIPTION = """\
LoRM: closed-form merging of LoRA modules for federated class-incremental learning.

Typical use without Snakemake (the offline default: WordNet-40 glosses on MiniLM-L6):
  lorm run --config config/config.yaml --method lorm --seed 0 --beta 0.5 --out runs/lorm.json
The Snakemake pipeline calls the same commands: prepare-data -> partition -> run -> table -> figures.
"""


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="YAML",
                   help="experiment config (default: the schema defaults; see config/README.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set fcil.rounds=2 (repeatable; values are YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorm", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare-data", help="build the dataset of the config and save it (JSON)")
    _add_config(p)
    p.add_argument("--out", required=True, help="output dataset file (.json)")

    p = sub.add_parser("partition", help="class-incremental tasks + Dirichlet split over clients (JSON)")
    _add_config(p)
    p.add_argument("--dataset", required=True, help="dataset file written by prepare-data")
    p.add_argument("--beta", type=float, required=True, help="Dirichlet concentration (smaller = less IID)")
    p.add_argument("--seed", type=int, required=True, help="partition seed")
    p.add_argument("--out", required=True, help="output partition file (.json)")

    p = sub.add_parser("run", help="run one method x seed x beta and write its metrics (JSON)",
                       description="Run one federated class-incremental experiment. Without --dataset/--partition "
                                   "both are built in memory from the config (same result as the pipeline's files).")
    _add_config(p)
    from lorm.methods.names import METHOD_NAMES

    p.add_argument("--method", required=True, metavar="METHOD",
                   help=f"method to run: one of {', '.join(METHOD_NAMES)}, or a variant declared under the "
                        "config's `variants`")
    p.add_argument("--seed", type=int, default=0, help="run seed (partition, init, shuffling); default 0")
    p.add_argument("--beta", type=float, default=None, help="Dirichlet beta (default: first of fcil.betas)")
    p.add_argument("--dataset", default=None, help="dataset file from prepare-data (default: build it)")
    p.add_argument("--partition", default=None, help="partition file from partition (default: build it)")
    p.add_argument("--out", required=True, help="output metrics file (.json)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (overrides runtime.threads)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps (overrides runtime.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="state saved after every task (default: OUT.ckpt); a run killed and started again with the "
                        "same arguments continues after the last completed task with identical results")
    p.add_argument("--no-resume", action="store_true", help="ignore (and overwrite) an existing checkpoint")

    p = sub.add_parser("table", help="results table (CSV + Markdown) from metrics files")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)

    p = sub.add_parser("claims", help="the paper's claims tested on the runs: paired differences over seeds, 95 %% "
                                      "intervals, verdicts (Markdown + CSV)")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files")
    p.add_argument("--md", required=True)
    p.add_argument("--csv", default=None)
    p.add_argument("--readme", default=None, metavar="README",
                   help="also copy the tables into README's <!-- claims:begin --> ... <!-- claims:end --> block")

    p = sub.add_parser("figures", help="the figures of one experiment from its metrics files (PNG + PDF)")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json files")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--only", nargs="+", default=None, metavar="FIGURE",
                   choices=["accuracy_per_task", "accuracy_matrix", "accuracy_vs_communication",
                            "forgetting_and_accuracy", "faa_vs_beta"],
                   help="draw only these figures (%(choices)s; default: every one that applies)")

    p = sub.add_parser("paper-figure", help="ours against the paper: parity scatter from results/tables/paper.csv")
    p.add_argument("--csv", required=True, help="the paper table CSV (lorm.reporting.paper)")
    p.add_argument("--out-stem", required=True, help="output path without extension (.png and .pdf are written)")
    return parser


def _load_config(args, extra: dict | None = None) -> dict:
    from lorm.config import load_config, parse_set_overrides

    # flags such as --threads are dotted overrides too, applied after (so winning over) --set
    items = list(args.overrides) + [f"{dotted}={value}" for dotted, value in (extra or {}).items()]
    return load_config(args.config, parse_set_overrides(items))


def _write_json(obj, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, out)  # never leave a half-written file that looks complete


def cmd_prepare_data(args) -> None:
    from lorm.data.datasets import build_dataset, save_dataset

    cfg = _load_config(args)
    # image decoding runs in runtime.num_workers threads (the loaders ignore the key otherwise)
    ds = build_dataset({**cfg["dataset"], "num_workers": cfg["runtime"]["num_workers"] or None})
    save_dataset(ds, args.out)
    logging.getLogger("lorm").info("dataset %s: %d train / %d test samples, %d classes -> %s", ds["name"],
                                   len(ds["train"]["label"]), len(ds["test"]["label"]), len(ds["classes"]), args.out)


def cmd_partition(args) -> None:
    from lorm.data.datasets import load_dataset
    from lorm.data.partition import save_partition
    from lorm.federated.simulator import make_partition

    cfg = _load_config(args)
    part = make_partition(cfg, load_dataset(args.dataset, labels_only=True), args.beta, args.seed)
    save_partition(part, args.out)
    logging.getLogger("lorm").info("partition beta=%g seed=%d: redraws per task %s -> %s", args.beta, args.seed,
                                   [t["redraws"] for t in part["tasks"]], args.out)


def cmd_run(args) -> None:
    from lorm.data.datasets import build_dataset, load_dataset
    from lorm.data.partition import load_partition
    from lorm.federated.simulator import run_experiment

    extra = {}
    if args.threads is not None:
        extra["runtime.threads"] = args.threads
    if args.device is not None:
        extra["runtime.device"] = args.device
    cfg = _load_config(args, extra)
    beta = args.beta if args.beta is not None else cfg["fcil"]["betas"][0]
    dataset = load_dataset(args.dataset) if args.dataset else build_dataset(cfg["dataset"])
    partition = load_partition(args.partition) if args.partition else None
    if partition is not None and (partition["beta"] != beta or partition["seed"] != args.seed):
        from lorm.federated.simulator import RunError

        raise RunError(f"partition {args.partition} was made for beta={partition['beta']} seed={partition['seed']}, "
                       f"not beta={beta} seed={args.seed}")
    checkpoint = Path(args.checkpoint or args.out + ".ckpt")
    if args.no_resume and checkpoint.exists():
        checkpoint.unlink()
    metrics = run_experiment(cfg, args.method, args.seed, beta, dataset, partition,
                             progress=False if args.no_progress else None, checkpoint=str(checkpoint))
    _write_json(metrics, args.out)
    checkpoint.unlink(missing_ok=True)  # only once the complete metrics are on disk
    logging.getLogger("lorm").info(
        "%s seed %d: final average accuracy %.2f%% (task mean), %.2f%% (sample weighted); %.0f s -> %s",
        args.method, args.seed, metrics["final_avg_accuracy"], metrics["final_avg_accuracy_weighted"],
        metrics["wall_time_s"]["total"], args.out)


def cmd_table(args) -> None:
    from lorm.reporting.table import write_tables

    write_tables(args.runs, args.csv, args.md)


def cmd_claims(args) -> None:
    from lorm.reporting.claims import write_claims

    for row in write_claims(args.runs, args.md, args.csv, args.readme):
        logging.getLogger("lorm").info("%s (beta %g, %s): %s", row["claim"], row["beta"], row["dataset"],
                                       row["verdict"])


def cmd_figures(args) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from lorm.reporting.figures import make_figures

    for path in make_figures(args.runs, args.out_dir, args.only):
        logging.getLogger("lorm").info("wrote %s", path)


def cmd_paper_figure(args) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from lorm.reporting.figures import paper_parity

    for path in paper_parity(args.csv, args.out_stem):
        logging.getLogger("lorm").info("wrote %s", path)


COMMANDS = {"prepare-data": cmd_prepare_data, "partition": cmd_partition, "run": cmd_run, "table": cmd_table, "claims": cmd_claims,
            "figures": cmd_figures, "paper-figure": cmd_paper_figure}


def _user_errors() -> tuple[type, ...]:
    from lorm.config import ConfigError
    from lorm.data import DataError
    from lorm.federated.simulator import RunError
    from lorm.models.backbones import BackboneError
    from lorm.reporting import MetricsError

    return (ConfigError, DataError, RunError, BackboneError, MetricsError, FileNotFoundError)


def run_command(prog: str, commands: dict, args, user_errors: tuple[type, ...]) -> int:
    """Run ``commands[args.command](args)``: a user error is one line on stderr and exit code 2 (a traceback
    only with --verbose). Shared by ``lorm`` and ``python -m lorm.mergebench``."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        commands[args.command](args)
    except user_errors as exc:
        if args.verbose:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog} {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the default path may reach a hub
    args = build_parser().parse_args(argv)
    return run_command("lorm", COMMANDS, args, _user_errors())
