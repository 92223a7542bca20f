"""Federated class-incremental simulator: tasks of new classes, rounds, clients trained one after the other in
one process, evaluation after every task on all seen classes without task identity."""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from lorm.config import base_method, method_config
from lorm.data import DataError
from lorm.data.partition import class_order_from, partition_fcil
from lorm.data.tensors import encode_split, image_transforms
from lorm.federated.checkpoint import load_checkpoint, rng_state, run_fingerprint, save_checkpoint, set_rng_state
from lorm.federated.comm import CommLedger
from lorm.federated.training import Runtime, derive_seed, generator, predict
from lorm.methods import METHODS
from lorm.methods.base import FederatedLoRA, RunContext
from lorm.metrics import summarise
from lorm.models.backbones import build_classifier, load_tokenizer

log = logging.getLogger("lorm")


class RunError(ValueError):
    """Inputs of a run do not fit together (dataset vs partition, method name, ...). One-line message."""


def make_partition(cfg: dict, dataset: dict, beta: float, seed: int) -> dict:
    fcil = cfg["fcil"]
    num_classes = len(dataset["classes"])
    try:
        order = class_order_from(fcil["class_order"], num_classes, np.random.default_rng(derive_seed(seed, 7)))
        return partition_fcil(
            dataset["train"]["label"], dataset["test"]["label"], order, fcil["num_tasks"], fcil["num_clients"],
            beta, seed, min_samples=fcil["min_samples"], max_redraws=fcil["max_redraws"],
            task_sizes=fcil["task_sizes"],
        )
    except ValueError as exc:  # the split or the partition do not fit the dataset: a config problem
        if isinstance(exc, DataError):
            raise
        raise RunError(f"config section fcil: {exc}") from None


def _check_inputs(dataset: dict, partition: dict, method: str, cfg: dict) -> None:
    if base_method(cfg, method) not in METHODS:
        variants = list(cfg.get("variants") or {})
        raise RunError(f"unknown method {method!r} (available: {', '.join([*METHODS, *variants])}; "
                       "declare a variant under the config's `variants`)")
    n_train = len(dataset["train"]["label"])
    n_classes = len(dataset["classes"])
    if sorted(partition["class_order"]) != list(range(n_classes)):
        raise RunError(f"partition class_order does not cover the dataset's {n_classes} classes: "
                       "re-create the partition from this dataset")
    for t, task in enumerate(partition["tasks"]):
        for part in task["train"]:
            if part and max(part) >= n_train:
                raise RunError(f"partition task {t} indexes train row {max(part)} but the dataset has {n_train} rows: "
                               "re-create the partition from this dataset")


def provenance() -> dict:
    """Where a run's numbers come from: the code's git commit (None outside a git checkout; "+dirty" with
    uncommitted changes to the tracked code under lorm/: results, configs and the README do not count), when the
    run finished, the machine's CPU count, torch's version."""
    here = os.path.dirname(os.path.abspath(__file__))
    commit = None
    try:
        run = dict(cwd=here, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], **run)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)lorm"], **run)
            commit = head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": commit, "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "torch": torch.__version__}


@torch.no_grad()
def _diagnose_task(algo, model, test, task_rows, num_seen: int, runtime, out: dict) -> None:
    """After a task's evaluation: the size of the task's merged update per layer relative to W0 (Frobenius
    norms), and the new task's accuracy on the undiluted model W0 + that update with the same merged head (the
    deployed model dilutes it among the other tasks' updates). Nothing reads the deployed model after this: the
    next task's clients start from ``load_state``, which removes every deployed delta."""
    update = algo.finished_task_update()
    out["task_update_rel_norm"].append({
        name: float(update[name].norm() / layer.base.weight.double().norm()) for name, layer in algo.layers.items()})
    algo.set_deployed(update)
    out["new_task_acc_undiluted"].append(100.0 * float(predict(model, test, task_rows, num_seen, runtime).mean()))


def run_experiment(cfg: dict, method: str, seed: int, beta: float, dataset: dict, partition: dict | None = None,
                   progress: bool | None = None, checkpoint: str | None = None) -> dict:
    """Run one method x seed x beta; returns the metrics dict of docs/architecture.md.

    With ``checkpoint`` (a file path) the run saves its state after every task and, if the file exists from
    an interrupted run of the same configuration, continues after the last completed task. The caller removes
    it once the metrics are written."""
    started = time.perf_counter()
    partition = partition if partition is not None else make_partition(cfg, dataset, beta, seed)
    _check_inputs(dataset, partition, method, cfg)
    method_cls = METHODS[base_method(cfg, method)]  # a variant runs its method's class with its own settings
    cfg = method_config(cfg, method)
    fingerprint = run_fingerprint(cfg, method, seed, beta, partition)
    resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint else None
    fcil, rt_cfg = cfg["fcil"], cfg["runtime"]
    torch.set_num_threads(rt_cfg["threads"])
    torch.manual_seed(derive_seed(seed, 0))  # only dropout draws from the global RNG; every other draw is explicit
    runtime = Runtime.from_config(rt_cfg, fcil["batch_size"])

    order = np.asarray(partition["class_order"])
    label_map = np.empty(len(order), dtype=np.int64)
    label_map[order] = np.arange(len(order))
    sizes = [len(task["classes"]) for task in partition["tasks"]]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    task_ranges = [(int(bounds[t]), int(bounds[t + 1])) for t in range(len(sizes))]

    model = build_classifier(cfg["model"], len(order), generator=generator(seed, 0),
                             lora=method_cls.uses_lora).to(runtime.device)
    spec = model.spec
    encode_kw = dict(max_length=cfg["dataset"]["max_length"])
    if spec.modality == "image":
        # the LoRA methods follow the official LoRM runs' preprocessing when asked (spec Q6)
        encode_kw["transforms"] = image_transforms(dataset["name"], cfg["dataset"].get("preprocessing", "intended"),
                                                   spec.image_size)
    if spec.modality != dataset.get("modality", "text"):
        raise RunError(f"backbone {spec.name} takes {spec.modality} but dataset {dataset['name']} is "
                       f"{dataset.get('modality')}: set model.backbone to a {dataset.get('modality')} backbone")
    tokenizer = load_tokenizer(cfg["model"]) if spec.modality == "text" else None
    train = encode_split(dataset["train"], spec.modality, label_map, tokenizer=tokenizer, **encode_kw)
    test = encode_split(dataset["test"], spec.modality, label_map, tokenizer=tokenizer, **encode_kw)
    if runtime.device.type == "cuda":
        train, test = train.pin_memory(), test.pin_memory()
    test_labels = test.labels.numpy()
    test_by_task = [np.flatnonzero((test_labels >= lo) & (test_labels < hi)) for lo, hi in task_ranges]

    federated = method_cls.federated
    if federated:
        client_indices = [task["train"] for task in partition["tasks"]]
        run_ranges, rounds = task_ranges, fcil["rounds"]
    else:  # joint: one task with every class, one client with every training sample, same number of passes
        client_indices = [[[i for task in partition["tasks"] for part in task["train"] for i in part]]]
        run_ranges, rounds = [(0, len(order))], 1
        cfg["fcil"]["local_epochs"] = cfg["joint"]["epochs"] or fcil["rounds"] * fcil["local_epochs"]
    ctx = RunContext(model, train, cfg, runtime, seed, run_ranges, client_indices)
    algo = method_cls(ctx)
    matrix, evaluated, first_task, previous_wall = [], [], 0, 0.0
    diagnose = federated and isinstance(algo, FederatedLoRA)
    diagnostics = {"task_update_rel_norm": [], "new_task_acc_undiluted": []} if diagnose else {}
    if resumed is not None:
        algo.load_state_dict(resumed["method_state"])
        ctx.ledger.load_state_dict(resumed["ledger"])
        ctx.timers.seconds.update(resumed["timers"])
        set_rng_state(resumed["rng"])
        matrix, evaluated = resumed["accuracy_matrix"], resumed["eval_after_task"]
        first_task, previous_wall = resumed["next_task"], resumed["wall_total"]
        diagnostics = resumed.get("diagnostics", diagnostics)
        log.info("resuming from %s after task %d/%d", checkpoint, first_task, len(run_ranges))

    show = rt_cfg["progress"] if progress is None else progress
    total_steps = sum(rounds * len(clients) for clients in client_indices)
    bar = tqdm(total=total_steps, desc=f"{method} seed {seed}", disable=not show, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 15.0, dynamic_ncols=True,
               initial=sum(rounds * len(clients) for clients in client_indices[:first_task]))
    for t in range(first_task, len(run_ranges)):
        algo.begin_task(t)
        for rnd in range(rounds):
            state = algo.broadcast(t, rnd)
            uploads = []
            for k in range(len(client_indices[t])):
                if federated:
                    ctx.ledger.download(state)
                upload = algo.client_update(k, t, rnd, state)
                if federated:
                    ctx.ledger.upload(upload)
                uploads.append(upload)
                bar.set_postfix(task=f"{t + 1}/{len(run_ranges)}", round=rnd + 1, client=k + 1, refresh=False)
                bar.update(1)
            algo.aggregate(t, rnd, uploads)
        algo.end_task(t)
        with ctx.timers("evaluation"):
            algo.deploy()
            seen_tasks = range(t + 1) if federated else range(len(task_ranges))
            num_seen = task_ranges[seen_tasks[-1]][1]
            # one pass over every seen test sample (length-sorted batches), then split by task
            correct = predict(model, test, np.concatenate([test_by_task[j] for j in seen_tasks]), num_seen, runtime)
            ends = np.cumsum([len(test_by_task[j]) for j in seen_tasks])
            row = [100.0 * float(part.mean()) for part in np.split(correct, ends[:-1])]
        matrix.append(row)
        evaluated.append(t if federated else len(task_ranges) - 1)
        if diagnose:
            with ctx.timers("evaluation"):
                _diagnose_task(algo, model, test, test_by_task[t], num_seen, runtime, diagnostics)
        log.info("after task %d/%d: mean accuracy on seen tasks %.2f%%", t + 1, len(run_ranges), float(np.mean(row)))
        if checkpoint and t + 1 < len(run_ranges):
            save_checkpoint(checkpoint, {
                "fingerprint": fingerprint, "next_task": t + 1, "method_state": algo.state_dict(),
                "accuracy_matrix": matrix, "eval_after_task": evaluated, "ledger": ctx.ledger.state_dict(),
                "timers": dict(ctx.timers.seconds), "rng": rng_state(), "diagnostics": diagnostics,
                "wall_total": previous_wall + time.perf_counter() - started})
    bar.close()

    wall = dict(ctx.timers.seconds)
    wall["total"] = previous_wall + time.perf_counter() - started
    comm = ctx.ledger.summary() if federated else CommLedger().summary()
    return {
        "experiment": cfg["experiment"], "method": method, "seed": int(seed), "beta": float(beta),
        "eval_after_task": evaluated, "accuracy_matrix": matrix,
        "task_test_sizes": [int(len(ix)) for ix in test_by_task],
        **summarise(matrix, evaluated, [int(len(ix)) for ix in test_by_task]),
        "communication": comm, "wall_time_s": wall, "diagnostics": diagnostics,
        "partition": {"redraws": [task.get("redraws") for task in partition["tasks"]]},
        "resumed_after_task": None if resumed is None else int(resumed["next_task"]),
        "device": str(runtime.device), "provenance": provenance(), "config": cfg,
    }
