"""Command line of the merge benchmark: ``python -m lorm.mergebench <command>``; one Snakemake job per call.

    finetune  --config C --task T --out F.pt                     one task's LoRA factors, head, denominators
    merge     --config C --method M --finetuned F1.pt ... --out M.json    search on val, one test evaluation
    alignment --config C --finetuned F1.pt ... --out-json A.json --out-png A.png    CKA heatmaps (spec 10)
    report    --runs M1.json ... --paper CSV --md R.md --csv R.csv --figure R.png [--alignment A.json]

Every user error (bad config key, missing file, mismatched inputs) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DESCRIPTION = """\
KnOTS model-merging benchmark (knots-spec 7-10): fine-tune one LoRA model per task from a shared
initialisation, merge them with TA / TIES / DARE-TIES and their KnOTS variants, choose the hyperparameters by
greedy search on validation, evaluate once on test (per-task normalised accuracy, joint Hits@k).

Offline default (no --config): WordNet-40 cut into 8 tasks of 5 classes on MiniLM-L6, e.g.
  python -m lorm.mergebench finetune --task task0 --out results/mergebench/ft/task0.pt
  python -m lorm.mergebench merge --method knots-ties --finetuned results/mergebench/ft/task*.pt --out m.json
"""

METHODS = ("ta", "ties", "dare-ties", "knots-ta", "knots-ties", "knots-dare-ties", "base", "finetuned")
log = logging.getLogger("lorm.mergebench")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="YAML",
                   help="benchmark config (default: the schema defaults = config/merge.yaml, the offline benchmark)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_steps=50 (repeatable; values are YAML)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (overrides runtime.threads)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps (overrides runtime.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lorm.mergebench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("finetune", help="fine-tune one task: LoRA factors + head + fine-tuned val/test accuracy (.pt)")
    _add_config(p)
    p.add_argument("--task", required=True, help="task name (task0.., or a data set name) or index")
    p.add_argument("--out", required=True, help="output file (.pt)")

    p = sub.add_parser("merge", help="one method: greedy search on validation, one test evaluation (JSON)",
                       description="Merge the fine-tuned models with one method (or evaluate a reference row: "
                                   "base = W0 with each task's head, finetuned = the individual models and their "
                                   "ensemble for the joint benchmark) and write its metrics.")
    _add_config(p)
    p.add_argument("--method", required=True, choices=METHODS, help="merge method or reference row")
    p.add_argument("--finetuned", nargs="+", required=True, metavar="PT", help="one fine-tuned file per task")
    p.add_argument("--out", required=True, help="output metrics file (.json)")

    p = sub.add_parser("alignment", help="CKA heatmaps of the tasks' updates, LoRA vs KnOTS (JSON + PNG)")
    _add_config(p)
    p.add_argument("--finetuned", nargs="+", required=True, metavar="PT", help="one fine-tuned file per task")
    p.add_argument("--out-json", required=True, help="output matrices (.json)")
    p.add_argument("--out-png", required=True, help="output figure (.png; a .pdf is written beside it)")

    p = sub.add_parser("report", help="Markdown + CSV table beside the paper's numbers, per-task bar figure")
    p.add_argument("--runs", nargs="+", required=True, metavar="JSON", help="metrics files of merge")
    p.add_argument("--paper", required=True, metavar="CSV", help="paper-tables-knots.csv")
    p.add_argument("--md", required=True, help="output Markdown table")
    p.add_argument("--csv", required=True, help="output CSV table")
    p.add_argument("--figure", required=True, help="output bar figure (.png; a .pdf is written beside it)")
    p.add_argument("--alignment", default=None, metavar="JSON", help="alignment JSON to summarise (optional)")
    return parser


def _config(args) -> dict:
    from .config import load_merge_config, parse_set_overrides

    items = list(args.overrides)
    if args.threads is not None:
        items.append(f"runtime.threads={args.threads}")
    if args.device is not None:
        items.append(f"runtime.device={args.device}")
    return load_merge_config(args.config, parse_set_overrides(items))


def _progress(args):
    return False if args.no_progress else None


def _write_json(obj, path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, out)


def cmd_finetune(args) -> None:
    from .finetune import finetune_task, save_finetuned

    cfg = _config(args)
    record = finetune_task(cfg, args.task, progress=_progress(args))
    save_finetuned(record, args.out)
    tr = record["train"]
    log.info("%s: val %.2f%%, test %.2f%% after %d steps (best step %s%s), %.0f s -> %s", record["task"],
             record["val_acc"], record["test_acc"], tr["updates"], tr["best_step"],
             ", early stop" if tr["stopped_early"] else "", tr["wall_time_s"], args.out)


def cmd_merge(args) -> None:
    from .evaluate import run_merge

    cfg = _config(args)
    metrics = run_merge(cfg, args.method, args.finetuned, progress=_progress(args))
    _write_json(metrics, args.out)
    pt = metrics["per_task"]
    joint = metrics.get("joint") or {}
    hits = (joint.get("test") or {}).get("hits", {})
    log.info("%s: normalised %.2f%% (abs %.2f%%), Hits@1/3/5 %s, chosen %s / joint %s, %.0f s -> %s",
             args.method, pt["test"]["mean_normalised"], pt["test"]["mean_abs"],
             "/".join(f"{hits[k]:.1f}" for k in ("1", "3", "5") if k in hits) or "-", pt.get("chosen"),
             joint.get("chosen"), metrics["wall_time_s"]["total"], args.out)


def cmd_alignment(args) -> None:
    from .evaluate import run_alignment
    from .report import alignment_figure

    cfg = _config(args)
    result = run_alignment(cfg, args.finetuned, progress=_progress(args))
    _write_json(result, args.out_json)
    alignment_figure(result, args.out_png)
    m = result["mean_offdiagonal"]
    log.info("alignment: mean off-diagonal CKA lora %.3f, knots %.3f -> %s, %s", m["lora"], m["knots"],
             args.out_json, args.out_png)


def cmd_report(args) -> None:
    from .report import write_report

    info = write_report(args.runs, args.paper, args.md, args.csv, args.figure, args.alignment)
    log.info("report of %d rows -> %s, %s, %s", info["rows"], args.md, args.csv, args.figure)


COMMANDS = {"finetune": cmd_finetune, "merge": cmd_merge, "alignment": cmd_alignment, "report": cmd_report}


def _user_errors() -> tuple[type, ...]:
    from lorm.config import ConfigError
    from lorm.data import DataError
    from lorm.models.backbones import BackboneError

    from .config import BenchError

    return (ConfigError, DataError, BackboneError, BenchError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub at run time
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    from lorm.cli import run_command

    return run_command("lorm.mergebench", COMMANDS, args, _user_errors())
