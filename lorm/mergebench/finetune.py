"""Fine-tuning of one task's LoRA model (knots-spec 8.3 / 8.4) and the files it writes.

* The backbone is built with ``build_classifier(model_cfg, 1, generator(seed, 0))``: the one-row placeholder
  head is drawn first, then the LoRA factors, so every task gets the SAME initial A (B = 0), whatever its
  number of classes (spec 8.3: the LoRA model is built once from the seed and copied). The initial A is
  stored with the factors and checked by the merge jobs.
* Heads: ``trained`` -- a fresh ``nn.Linear(d, C_t)`` (truncated normal std 0.02 from ``generator(seed, 1)``,
  zero bias) trained together with the LoRA; ``text`` -- the frozen CLIP zero-shot head of the data set's
  class names and templates (``text_head``), never trained. Heads are task-specific and never merged.
* Training is :func:`lorm.federated.training.train_local` (one call, fresh AdamW, cross-entropy over the
  task's head). ``train_local`` has no schedule, step limit or evaluation, so its per-step ``extra_loss`` hook
  (which adds nothing to the loss) sets the learning rate of every parameter group for the step (linear
  warm-up ``lr (s + 1) / warmup``, then cosine to 0 at ``max_steps``, as task-vectors' ``cosine_lr``),
  evaluates validation accuracy every ``eval_every`` steps (early stopping with ``patience`` / ``min_delta``,
  the best checkpoint is kept) and ends training at ``max_steps`` or on early stopping by raising an internal
  exception before the step's update (so exactly ``max_steps`` updates at most).
* The fine-tuned model's validation and test accuracies (``predict``) are the normalisation denominators of
  the merge benchmark (spec K9: measured by us).

File (``torch.save``, loadable with ``weights_only=True``)::

    {"format", "experiment", "fingerprint", "task", "task_index", "task_names", "dataset", "classnames",
     "factors": {layer: (A, B)}, "init_A": {layer: A0}, "head": {"kind", "weight", "bias"},
     "val_acc", "test_acc" (percent), "sizes", "split", "train": {...}, "backbone", "lora_rank"}
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lorm.federated.training import Runtime, derive_seed, generator, predict, train_local
from lorm.models.lora import get_factors, lora_layers, set_factors

from .config import CLIP_BACKBONES, fingerprint
from .tasks import build_tasks, resolve_task, task_names, template_key

__all__ = ["FORMAT", "build_model", "backbone_checksum", "make_runtime", "init_trained_head", "make_text_heads",
           "set_head", "lr_at", "finetune_task", "save_finetuned", "load_finetuned_file"]

FORMAT = "lorm-mergebench-finetuned/1"


class _StopTraining(Exception):
    """Raised by the step hook to end train_local's loop before the step's update."""


def make_runtime(cfg: dict) -> Runtime:
    return Runtime.from_config(cfg["runtime"], cfg["train"]["batch_size"])


def build_model(cfg: dict, runtime: Runtime | None = None):
    """Backbone + LoRA (shared initial A from the run seed) + a one-row placeholder head."""
    from lorm.models.backbones import build_classifier

    with torch.random.fork_rng(devices=[]):  # random-init test backbones draw from the global RNG: seed it
        torch.manual_seed(derive_seed(cfg["seed"], 5))
        model = build_classifier(dict(cfg["model"]), 1, generator=generator(cfg["seed"], 0))
    if runtime is not None:
        model.to(runtime.device)
    return model


@torch.no_grad()
@torch.no_grad()
def backbone_checksum(model) -> float:
    """Sum of the pre-trained weights of the LoRA layers (float64): the merge jobs check they rebuilt the same W0."""
    return float(sum(layer.base.weight.double().sum() for layer in lora_layers(model).values()))


@torch.no_grad()
def set_head(model, weight: torch.Tensor, bias: torch.Tensor | None, trainable: bool) -> nn.Linear:
    """Replace ``model.head`` by a Linear with these parameters (on the model's device)."""
    device = next(model.encoder.parameters()).device
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=True).to(device)
    head.weight.copy_(weight)
    head.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
    head.weight.requires_grad_(trainable)
    head.bias.requires_grad_(trainable)
    model.head = head
    return head


def init_trained_head(cfg: dict, feature_dim: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial weights of a trained head: truncated normal std 0.02 from generator(seed, 1), zero bias."""
    w = torch.empty(num_classes, feature_dim)
    nn.init.trunc_normal_(w, std=0.02, generator=generator(cfg["seed"], 1))
    return w, torch.zeros(num_classes)


def make_text_heads(cfg: dict, tasks) -> dict[str, torch.Tensor]:
    """Frozen CLIP zero-shot heads {task name: (C, d)} (spec 8.2): templates of the task's data set, class names."""
    from lorm.models.clip import build_clip_tokenizer, load_clip_model, templates_for, text_head

    clip = load_clip_model(cfg["model"])
    tok = build_clip_tokenizer(cfg["model"])
    out = {}
    for task in tasks:
        out[task.name] = text_head(clip, tok, task.classnames, templates_for(template_key(task.dataset)),
                                   logit_scale=cfg["model"]["logit_scale"]).cpu()
    del clip
    return out


def lr_at(step: int, tcfg: dict) -> float:
    """Learning-rate multiplier of update ``step`` (0-based): linear warm-up (step + 1) / warmup, then cosine
    (or constant) over the remaining max_steps - warmup updates."""
    warm, total = tcfg["warmup_steps"], tcfg["max_steps"]
    if step < warm:
        return (step + 1) / warm
    if tcfg["schedule"] == "constant":
        return 1.0
    span = max(total - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))


class _StepHook:
    """train_local's extra_loss: schedule, periodic validation, early stopping, max_steps (adds 0 to the loss)."""

    def __init__(self, model, groups, base_lrs, tcfg, val, runtime, num_classes, bar):
        self.model, self.groups, self.base_lrs, self.tcfg = model, groups, base_lrs, tcfg
        self.val, self.runtime, self.num_classes, self.bar = val, runtime, num_classes, bar
        self.updates = 0  # optimiser updates done before the current step
        self.best_acc, self.best_step, self.best_state, self.bad = None, None, None, 0
        self.history, self.stopped_early, self.losses = [], False, []

    def snapshot(self) -> dict:
        return {"factors": get_factors(self.model),
                "head": {k: v.detach().clone() for k, v in self.model.head.state_dict().items()}}

    def restore(self, state: dict) -> None:
        set_factors(self.model, state["factors"])
        self.model.head.load_state_dict(state["head"])

    def evaluate(self) -> bool:
        """Validate the current state; True when early stopping says stop."""
        idx = np.arange(len(self.val))
        acc = float(predict(self.model, self.val, idx, self.num_classes, self.runtime).mean())
        self.model.train()
        loss = float(np.mean(self.losses)) if self.losses else None
        self.losses = []
        self.history.append({"step": self.updates, "val_acc": 100.0 * acc, "train_loss": loss})
        if self.best_acc is None or acc > self.best_acc + self.tcfg["min_delta"]:
            self.best_acc, self.best_step, self.best_state, self.bad = acc, self.updates, self.snapshot(), 0
        else:
            self.bad += 1
        patience = self.tcfg["patience"]
        return patience is not None and self.bad >= patience

    def __call__(self, *, inputs, labels, features, logits):
        every = self.tcfg["eval_every"]
        if self.updates >= self.tcfg["max_steps"]:
            raise _StopTraining
        if every and self.updates > 0 and self.updates % every == 0 and self.evaluate():
            self.stopped_early = True
            raise _StopTraining
        lo = logits.detach().float()
        self.losses.append(float(torch.nn.functional.cross_entropy(lo, labels)))
        factor = lr_at(self.updates, self.tcfg)
        for group, base in zip(self.groups, self.base_lrs):
            group["lr"] = base * factor  # torch keeps these very dicts as the optimiser's param_groups
        self.updates += 1
        self.bar.update(1)
        return logits.new_zeros(())


def finetune_task(cfg: dict, task_ref, *, progress: bool | None = None, datasets: dict | None = None) -> dict:
    """Fine-tune one task (name or index) and return the record of :func:`save_finetuned`."""
    started = time.perf_counter()
    t = resolve_task(cfg, task_ref)
    names = task_names(cfg)
    runtime = make_runtime(cfg)
    torch.set_num_threads(cfg["runtime"]["threads"])
    task = build_tasks(cfg, only=[t], datasets=datasets)[t]
    train, val, test = (task.splits[s] for s in ("train", "val", "test"))
    model = build_model(cfg, runtime)
    init_A = {name: f["A"].cpu() for name, f in get_factors(model).items()}
    dim = model.head.in_features
    kind = cfg["model"]["head"]
    if kind == "text":
        weight, bias = make_text_heads(cfg, [task])[task.name], None
    else:
        weight, bias = init_trained_head(cfg, dim, task.num_classes)
    set_head(model, weight, bias, trainable=kind == "trained")

    tcfg = cfg["train"]
    lora_params = [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]
    for p in lora_params:
        p.requires_grad_(True)
    groups = [{"params": lora_params, "lr": tcfg["lr"], "weight_decay": tcfg["weight_decay"]}]
    if kind == "trained":
        groups.append({"params": list(model.head.parameters()), "lr": tcfg["head_lr"] or tcfg["lr"],
                       "weight_decay": tcfg["weight_decay"]})
    base_lrs = [g["lr"] for g in groups]

    show = cfg["runtime"]["progress"] if progress is None else progress
    bar = tqdm(total=tcfg["max_steps"], desc=f"finetune {task.name}", disable=not show, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 15.0, dynamic_ncols=True)
    hook = _StepHook(model, groups, base_lrs, tcfg, val, runtime, task.num_classes, bar)
    steps_per_epoch = math.ceil(len(train) / runtime.batch_size)
    epochs = math.ceil(tcfg["max_steps"] / steps_per_epoch)
    torch.manual_seed(derive_seed(cfg["seed"], 3, t))  # dropout is the only draw from the global RNG
    try:
        train_local(model, train, np.arange(len(train)), groups, epochs=epochs,
                            class_range=(0, task.num_classes), runtime=runtime, gen=generator(cfg["seed"], 2, t),
                            weight_decay=tcfg["weight_decay"], extra_loss=hook)
    except _StopTraining:
        pass
    bar.close()
    if not hook.history or hook.history[-1]["step"] != hook.updates:
        hook.evaluate()  # the final state competes with the evaluated checkpoints
    hook.restore(hook.best_state)
    model.eval()
    val_acc = 100.0 * float(predict(model, val, np.arange(len(val)), task.num_classes, runtime).mean())
    test_acc = 100.0 * float(predict(model, test, np.arange(len(test)), task.num_classes, runtime).mean())
    factors = {name: (f["A"].cpu(), f["B"].cpu()) for name, f in get_factors(model).items()}
    head = model.head
    return {
        "format": FORMAT,
        "experiment": cfg["experiment"],
        "fingerprint": fingerprint(cfg),
        "task": task.name,
        "task_index": t,
        "task_names": names,
        "dataset": task.dataset,
        "classnames": [str(c) for c in task.classnames],
        "factors": factors,
        "init_A": init_A,
        "backbone_checksum": backbone_checksum(model),
        "head": {"kind": kind, "weight": head.weight.detach().cpu().clone(),
                 "bias": head.bias.detach().cpu().clone() if kind == "trained" else None},
        "val_acc": val_acc,
        "test_acc": test_acc,
        "sizes": task.sizes(),
        "split": task.split_info,
        "train": {"updates": hook.updates, "best_step": hook.best_step, "history": hook.history,
                  "stopped_early": hook.stopped_early, "max_steps": tcfg["max_steps"],
                  "wall_time_s": time.perf_counter() - started},
        "backbone": cfg["model"]["backbone"],
        "lora_rank": cfg["model"]["lora_rank"],
    }


def save_finetuned(record: dict, path) -> None:
    import os
    from pathlib import Path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(record, tmp)
    os.replace(tmp, out)


def load_finetuned_file(path) -> dict:
    from lorm.data import DataError

    try:
        record = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"fine-tuned file {path} not found (run `python -m lorm.mergebench finetune` first)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a one-line data error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read fine-tuned file {path}: {first}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path} is not a fine-tuned file of lorm.mergebench (format {FORMAT})")
    return record


def head_tensors(record: dict) -> tuple[torch.Tensor, torch.Tensor]:
    w = record["head"]["weight"].float()
    b = record["head"]["bias"]
    return w, (b.float() if b is not None else torch.zeros(w.shape[0]))


def is_clip(cfg: dict) -> bool:
    return cfg["model"]["backbone"] in CLIP_BACKBONES
