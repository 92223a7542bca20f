"""Merging, evaluation and the CKA analysis of the benchmark (knots-spec 3, 4, 7, 9, 10).

* Task updates dW_i = B_i A_i per LoRA layer (the common initialisation has B_0 = 0, so B_i A_i - B_0 A_0 =
  B_i A_i; LoRA scale 1). Plain methods merge the dense dW_i with :func:`lorm.merging.merge_deltas`; KnOTS
  variants align every layer ONCE per model set with :func:`lorm.merging.knots_align` and merge the aligned
  parts with :func:`lorm.merging.knots_merge_aligned` for every hyperparameter candidate.
* Merged model = W0 + dW_merged per layer (``LoRALinear.set_delta``; the LoRA branch is switched off with
  B = 0). Each task is evaluated with its own head; normalised accuracy = 100 * merged / fine-tuned on the same
  split (denominators: the fine-tuned files' accuracies, or the official ViT-B/32 ones for test).
* Joint benchmark: one head over the union of the tasks' labels (``joint_head``: trained heads stacked, with
  their biases; CLIP text heads with SVHN sharing MNIST's digits), Hits@k over the pooled images.
* One forward pass per sample gives both: the pooled features are scored with each task's head and with the
  joint head.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lorm.data.tensors import iterate_batches
from lorm.merging import knots_align, knots_merge_aligned, merge_deltas
from lorm.models.lora import lora_layers, set_factors

from .config import BenchError, fingerprint
from .finetune import backbone_checksum, build_model, head_tensors, load_finetuned_file, make_runtime
from .search import coordinates_for, greedy_search, start_for
from .tasks import build_tasks, task_names

__all__ = ["METRICS_FORMAT", "MERGE_METHODS", "REFERENCES", "METHOD_LABELS", "OFFICIAL_DENOMINATORS",
           "load_finetuned", "task_deltas", "Merger", "Evaluator", "encode_features", "run_merge", "run_alignment"]

METRICS_FORMAT = "lorm-mergebench-metrics/1"
ALIGNMENT_FORMAT = "lorm-mergebench-alignment/1"
MERGE_METHODS = ("ta", "ties", "dare-ties", "knots-ta", "knots-ties", "knots-dare-ties")
REFERENCES = ("base", "finetuned")
METHOD_LABELS = {"base": "Base model (W0 + task heads)", "finetuned": "Fine-tuned (individual LoRA models)",
                 "ta": "TA", "ties": "TIES", "dare-ties": "DARE-TIES", "knots-ta": "KnOTS-TA",
                 "knots-ties": "KnOTS-TIES", "knots-dare-ties": "KnOTS-DARE-TIES"}
#: Official ViT-B/32 r16 test accuracies hard-coded in the KnOTS evaluation scripts (spec 9.1; metrics.denominators).
OFFICIAL_DENOMINATORS = {"cars196": 74.0, "dtd": 58.3, "eurosat": 99.0, "gtsrb": 92.7, "mnist": 99.3,
                         "resisc45": 88.4, "sun397": 64.5, "svhn": 96.2}


# ------------------------------------------------------------------------------------------------ inputs
def load_finetuned(cfg: dict, paths: Sequence) -> list[dict]:
    """The fine-tuned records of every task of ``cfg``, in task order; BenchError when files are missing,
    duplicated, from another config, or do not share the initial A."""
    names = task_names(cfg)
    fp = fingerprint(cfg)
    by_task: dict[int, dict] = {}
    for path in paths:
        rec = load_finetuned_file(path)
        if rec["fingerprint"] != fp or rec["task_names"] != names:
            raise BenchError(f"{path} was fine-tuned with another configuration (fingerprint {rec['fingerprint']}, "
                             f"this config {fp}): re-run finetune with this config")
        t = int(rec["task_index"])
        if t in by_task:
            raise BenchError(f"{path}: task {rec['task']} given twice")
        rec["path"] = str(path)
        by_task[t] = rec
    missing = [names[t] for t in range(len(names)) if t not in by_task]
    if missing:
        raise BenchError(f"no fine-tuned file for task(s) {', '.join(missing)} (pass one --finetuned file per task)")
    records = [by_task[t] for t in range(len(names))]
    first = records[0]["init_A"]
    for rec in records[1:]:
        if sorted(rec["init_A"]) != sorted(first) or any(not torch.equal(rec["init_A"][k], first[k]) for k in first):
            raise BenchError(f"{rec['path']}: initial LoRA A differs from {records[0]['path']} (all tasks must share "
                             "the initialisation, spec 8.3)")
    return records


def task_deltas(record: dict) -> dict[str, torch.Tensor]:
    """dW = B A per layer (float32)."""
    return {name: (B.float() @ A.float()) for name, (A, B) in record["factors"].items()}


class Merger:
    """Merge inputs of one method, prepared once: dense updates (plain) or the per-layer KnOTS alignment."""

    def __init__(self, records: Sequence[dict], method: str, cfg: dict):
        if method not in MERGE_METHODS:
            raise BenchError(f"unknown merge method {method!r} (available: {', '.join(MERGE_METHODS)})")
        self.method, self.base, self.knots = method, method.removeprefix("knots-"), method.startswith("knots-")
        mcfg = cfg["merge"]
        self.merging_type = mcfg["ta_merging_type"] if self.base == "ta" else mcfg["ties_merging_type"]
        started = time.perf_counter()
        names = sorted(records[0]["factors"])
        self.ranks = {}
        if self.knots:
            self.aligned = {}
            for name in names:
                As = [r["factors"][name][0].float() for r in records]
                Bs = [r["factors"][name][1].float() for r in records]
                U, Rs = knots_align(Bs, As, path=mcfg["knots_path"], eps=mcfg["svd_eps"])
                self.aligned[name] = (U, Rs)
                self.ranks[name] = int(U.shape[1])
        else:
            self.deltas = [task_deltas(r) for r in records]
        self.prepare_s = time.perf_counter() - started

    def kwargs(self, hp: dict) -> dict:
        kw = {"lam": float(hp["lam"]), "merging_type": self.merging_type}
        if self.base == "ties":
            kw["topk"] = float(hp["topk"])
        elif self.base == "dare-ties":
            kw["dare_p"], kw["seed"] = float(hp["dare_p"]), int(hp["seed"])
        return kw

    def merge(self, hp: dict) -> dict[str, torch.Tensor]:
        kw = self.kwargs(hp)
        if self.knots:
            return knots_merge_aligned(self.aligned, self.base, dtype=torch.float32, **kw)
        return merge_deltas(self.deltas, self.base, **kw)


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def encode_features(model, data, runtime) -> torch.Tensor:
    """Pooled features (N, d) of every row of ``data`` in row order (visited by length; eval mode)."""
    model.eval()
    idx = np.arange(len(data), dtype=np.int64)
    perm = data.length_order(idx)
    out = None
    start = 0
    for batch in iterate_batches(idx[perm], runtime.eval_batch_size):
        inputs, _ = data.batch(batch, runtime.device)
        with runtime.autocast():
            f = model.features(inputs).float().cpu()
        if out is None:
            out = torch.empty(len(data), f.shape[1])
        out[torch.as_tensor(perm[start:start + len(batch)])] = f
        start += len(batch)
    return out


class Evaluator:
    """The base model with every task's head and the joint head; scores merged updates on a split."""

    def __init__(self, cfg: dict, records: Sequence[dict], tasks, runtime):
        from lorm.models.clip import joint_head

        self.cfg, self.records, self.tasks, self.runtime = cfg, list(records), list(tasks), runtime
        self.names = [t.name for t in self.tasks]
        for rec, task in zip(self.records, self.tasks):
            if rec["classnames"] != [str(c) for c in task.classnames]:
                raise BenchError(f"{rec['path']}: class names of task {task.name} differ from this config's data")
        self.model = build_model(cfg, runtime)
        self.layers = lora_layers(self.model)
        init = self.records[0]["init_A"]
        if sorted(init) != sorted(self.layers) or any(
                not torch.equal(self.layers[n].lora_A.detach().cpu(), init[n]) for n in init):
            raise BenchError("the rebuilt model's initial LoRA A differs from the fine-tuned files' (another seed, "
                             "backbone or library version?)")
        stored = self.records[0].get("backbone_checksum")
        if stored is None or abs(backbone_checksum(self.model) - float(stored)) > 1e-6 * max(1.0, abs(float(stored))):
            raise BenchError("the rebuilt backbone's pre-trained weights differ from the fine-tuned files' (other "
                             "model.weights or library version?)")
        self.base_factors = {n: {"A": l.lora_A.detach().clone(), "B": torch.zeros_like(l.lora_B)}
                             for n, l in self.layers.items()}
        set_factors(self.model, self.base_factors)  # B = 0: the LoRA branch adds nothing
        self.heads = [head_tensors(r) for r in self.records]
        shared = cfg["joint"]["shared"]
        try:
            self.joint = joint_head({n: w for n, (w, _) in zip(self.names, self.heads)}, shared=shared)
        except ValueError as exc:
            raise BenchError(f"config key joint.shared: {exc}") from None
        self.joint_bias = torch.stack([self.heads[self.names.index(ds)][1][i] for ds, i in self.joint.owner])
        self.ks = [int(k) for k in cfg["joint"]["ks"]]
        self.sel_k = int(cfg["search"]["joint"]["k"])
        if self.sel_k not in self.ks:
            self.ks.append(self.sel_k)
        self.labels = {s: [t.splits[s].labels for t in self.tasks] for s in self.tasks[0].splits}
        self.joint_labels = {s: torch.cat([self.joint.to_joint(n, y) for n, y in zip(self.names, ys)])
                             for s, ys in self.labels.items()}
        self.denominators = self._denominators()

    def _denominators(self) -> dict:
        dens = {"val": {n: float(r["val_acc"]) for n, r in zip(self.names, self.records)},
                "test": {n: float(r["test_acc"]) for n, r in zip(self.names, self.records)}, "source": "measured"}
        if self.cfg["metrics"]["denominators"] == "official":
            unknown = [n for n in self.names if n not in OFFICIAL_DENOMINATORS]
            if unknown:
                raise BenchError(f"metrics.denominators official: no official accuracy for {', '.join(unknown)}")
            dens["test"] = {n: OFFICIAL_DENOMINATORS[n] for n in self.names}
            dens["source"] = "official (test; val measured)"
        for split, values in dens.items():
            if split == "source":
                continue
            zero = [n for n, v in values.items() if not v > 0]
            if zero:
                raise BenchError(f"fine-tuned {split} accuracy of {', '.join(zero)} is 0: normalised accuracy is "
                                 "undefined (train longer or use more validation samples)")
        return dens

    # ---------------------------------------------------------------- model state
    def set_merged(self, deltas: dict | None) -> None:
        """W0 + deltas[layer] (None = the base model W0)."""
        for name, layer in self.layers.items():
            layer.set_delta(None if deltas is None else deltas[name])

    def set_finetuned(self, t: int) -> None:
        """Task t's fine-tuned model: its LoRA factors, no delta."""
        self.set_merged(None)
        set_factors(self.model, {n: {"A": A, "B": B} for n, (A, B) in self.records[t]["factors"].items()})

    def reset(self) -> None:
        self.set_merged(None)
        set_factors(self.model, self.base_factors)

    # ---------------------------------------------------------------- scoring
    def features(self, split: str) -> list[torch.Tensor]:
        return [encode_features(self.model, t.splits[split], self.runtime) for t in self.tasks]

    def joint_scores(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(feats)) @ self.joint.weight.float().T + self.joint_bias

    def hits(self, scores: torch.Tensor, split: str) -> dict[str, float]:
        from lorm.models.clip import hits_at_k

        return {str(k): 100.0 * v for k, v in hits_at_k(scores, self.joint_labels[split], self.ks).items()}

    def task_accuracy(self, t: int, feats: torch.Tensor, split: str) -> float:
        w, b = self.heads[t]
        pred = (feats @ w.T + b).argmax(1)
        return 100.0 * float((pred == self.labels[split][t]).double().mean())

    def metrics(self, feats: Sequence[torch.Tensor], split: str, joint: bool = True) -> dict:
        absolute = {n: self.task_accuracy(t, f, split) for t, (n, f) in enumerate(zip(self.names, feats))}
        return self._summary(absolute, split, self.hits(self.joint_scores(feats), split) if joint else None)

    def _summary(self, absolute: dict, split: str, hits: dict | None) -> dict:
        dens = self.denominators[split]
        normalised = {n: 100.0 * a / dens[n] for n, a in absolute.items()}
        out = {"abs": absolute, "normalised": normalised, "mean_abs": float(np.mean(list(absolute.values()))),
               "mean_normalised": float(np.mean(list(normalised.values())))}
        if hits is not None:
            out["hits"] = hits
        return out

    def evaluate(self, deltas: dict | None, split: str) -> dict:
        self.set_merged(deltas)
        return self.metrics(self.features(split), split)

    def evaluate_finetuned(self, split: str) -> dict:
        """Each fine-tuned model on its own task; joint = the ensemble (max over models per label, spec 4)."""
        absolute, ensemble = {}, None
        for t, name in enumerate(self.names):
            self.set_finetuned(t)
            feats = self.features(split)
            absolute[name] = self.task_accuracy(t, feats[t], split)
            scores = self.joint_scores(feats)
            ensemble = scores if ensemble is None else torch.maximum(ensemble, scores)
        self.reset()
        return self._summary(absolute, split, self.hits(ensemble, split))


# ------------------------------------------------------------------------------------------------ jobs
def _bar(total: int, desc: str, show: bool):
    return tqdm(total=total, desc=desc, disable=not show, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 15.0)


_HP_NAMES = {"ta": ("lam",), "ties": ("lam", "topk"), "dare-ties": ("lam", "dare_p", "seed")}


def _hp_key(hp: dict, method: str) -> tuple:
    """Cache key: the hyperparameters the method uses, in a fixed order."""
    return tuple((k, hp[k]) for k in _HP_NAMES[method.removeprefix("knots-")])


def _max_evaluations(method: str, mcfg: dict, searches: int) -> int:
    return searches * sum(len(c.grid) for c in coordinates_for(method, mcfg)) + searches


def _setup(cfg: dict, paths, datasets, splits):
    runtime = make_runtime(cfg)
    torch.set_num_threads(cfg["runtime"]["threads"])
    records = load_finetuned(cfg, paths)
    tasks = build_tasks(cfg, splits=splits, datasets=datasets)
    return runtime, records, tasks


def run_merge(cfg: dict, method: str, paths: Sequence, *, progress: bool | None = None,
              datasets: dict | None = None) -> dict:
    """One benchmark row: a merge method (search on val, one test evaluation per chosen hyperparameter set) or a
    reference ('base', 'finetuned'). Returns the metrics dict written by the CLI."""
    started = time.perf_counter()
    if method not in MERGE_METHODS + REFERENCES:
        raise BenchError(f"unknown method {method!r} (available: {', '.join(MERGE_METHODS + REFERENCES)})")
    runtime, records, tasks = _setup(cfg, paths, datasets, ("val", "test"))
    ev = Evaluator(cfg, records, tasks, runtime)
    show = cfg["runtime"]["progress"] if progress is None else progress
    joint_on = cfg["joint"]["enabled"]
    out = {
        "format": METRICS_FORMAT, "experiment": cfg["experiment"], "method": method,
        "label": METHOD_LABELS[method], "kind": "reference" if method in REFERENCES else "merge",
        "backbone": cfg["model"]["backbone"], "lora_rank": cfg["model"]["lora_rank"], "tasks": ev.names,
        "task_datasets": [t.dataset for t in tasks], "task_classes": {t.name: list(t.classnames) for t in tasks},
        "num_joint_labels": ev.joint.num_labels,
        "denominators": ev.denominators, "finetuned_files": [r["path"] for r in records],
        "sizes": {n: t.sizes() for n, t in zip(ev.names, tasks)}, "checks": {},
    }
    if method in REFERENCES:
        bar = _bar(2, f"evaluate {method}", show)
        results = {}
        for split in ("val", "test"):
            results[split] = ev.evaluate_finetuned(split) if method == "finetuned" else ev.evaluate(None, split)
            bar.update(1)
        bar.close()
        out["per_task"] = {"chosen": None, "steps": [], "val": results["val"], "test": results["test"]}
        out["joint"] = {"chosen": None, "steps": [], "val": {"hits": results["val"]["hits"]},
                        "test": {"hits": results["test"]["hits"]}} if joint_on else None
        if method == "finetuned":
            out["checks"]["finetuned_reproduces_denominators"] = {
                "max_abs_diff_points": max(abs(results["test"]["abs"][n] - float(r["test_acc"]))
                                           for n, r in zip(ev.names, records))}
        out["wall_time_s"] = {"total": time.perf_counter() - started}
        out["config"] = cfg
        return out

    merger = Merger(records, method, cfg)
    mcfg = cfg["merge"]
    searches = 2 if joint_on else 1
    bar = _bar(_max_evaluations(method, mcfg, searches), f"search {method}", show)
    cache: dict[tuple, dict] = {}
    merge_times: list[float] = []

    def val_metrics(hp: dict) -> dict:
        key = _hp_key(hp, method)
        if key not in cache:
            t0 = time.perf_counter()
            deltas = merger.merge(hp)
            merge_times.append(time.perf_counter() - t0)
            cache[key] = ev.evaluate(deltas, "val")
            bar.update(1)
            bar.set_postfix(hp=",".join(f"{k}={v}" for k, v in key), refresh=False)
        return cache[key]

    coords = coordinates_for(method, mcfg)
    search_started = time.perf_counter()
    pt_cfg = cfg["search"]["per_task"]
    pt = greedy_search(lambda hp: val_metrics(hp)["mean_normalised"], coords,
                       start_for(method, pt_cfg["start"], mcfg), tie=pt_cfg["tie"])
    jt = None
    if joint_on:
        j_cfg = cfg["search"]["joint"]
        k = str(j_cfg["k"])
        jt = greedy_search(lambda hp: val_metrics(hp)["hits"][k], coords, start_for(method, j_cfg["start"], mcfg),
                           tie=j_cfg["tie"])
    search_s = time.perf_counter() - search_started
    bar.close()
    for result in (pt, jt):
        if result is not None:
            for step in result["steps"]:
                step["val"] = cache[_hp_key(step["hp"], method)]

    tests: dict[tuple, dict] = {}
    final_merge_s = []
    for result in (pt, jt):
        if result is None:
            continue
        key = _hp_key(result["chosen"], method)
        if key not in tests:
            t0 = time.perf_counter()
            deltas = merger.merge(result["chosen"])
            final_merge_s.append(time.perf_counter() - t0)
            tests[key] = ev.evaluate(deltas, "test")
            if method == "knots-ta" and result is pt:
                out["checks"]["knots_ta_equals_ta"] = _knots_ta_check(records, deltas, result["chosen"], cfg)
    pt_test = tests[_hp_key(pt["chosen"], method)]
    out["per_task"] = {"selection": "mean normalised validation accuracy", "tie": pt_cfg["tie"],
                       "start": start_for(method, pt_cfg["start"], mcfg), "chosen": pt["chosen"],
                       "val_score": pt["score"], "val": cache[_hp_key(pt["chosen"], method)],
                       "steps": pt["steps"], "test": pt_test}
    if jt is not None:
        j_cfg = cfg["search"]["joint"]
        jt_test = tests[_hp_key(jt["chosen"], method)]
        out["joint"] = {"selection": f"validation Hits@{j_cfg['k']}", "tie": j_cfg["tie"],
                        "start": start_for(method, j_cfg["start"], mcfg), "chosen": jt["chosen"],
                        "val_score": jt["score"], "val": {"hits": cache[_hp_key(jt["chosen"], method)]["hits"]},
                        "steps": jt["steps"], "test": {"hits": jt_test["hits"], "per_task": jt_test}}
    else:
        out["joint"] = None
    out["merging_type"] = merger.merging_type
    if merger.knots:
        ranks = list(merger.ranks.values())
        out["knots_rank"] = {"min": min(ranks), "max": max(ranks), "mean": float(np.mean(ranks)),
                             "layers": len(ranks)}
    out["search_evaluations"] = len(cache)
    out["wall_time_s"] = {
        "prepare": merger.prepare_s, "alignment": merger.prepare_s if merger.knots else 0.0,
        "merge_mean": float(np.mean(merge_times)) if merge_times else 0.0, "merge_total": float(np.sum(merge_times)),
        "search": search_s, "final_merge": float(np.sum(final_merge_s)),
        "total": time.perf_counter() - started}
    out["config"] = cfg
    return out


def _knots_ta_check(records, knots_deltas: dict, hp: dict, cfg: dict) -> dict:
    """KnOTS-TA must equal TA over the products (spec 5): max |difference| and relative Frobenius error."""
    ta = merge_deltas([task_deltas(r) for r in records], "ta", lam=float(hp["lam"]),
                      merging_type=cfg["merge"]["ta_merging_type"])
    diff = max(float((knots_deltas[n].double() - ta[n].double()).abs().max()) for n in ta)
    num = sum(float((knots_deltas[n].double() - ta[n].double()).square().sum()) for n in ta)
    den = sum(float(ta[n].double().square().sum()) for n in ta)
    rel = (num / den) ** 0.5 if den > 0 else 0.0
    return {"lam": float(hp["lam"]), "max_abs_diff": diff, "relative_frobenius": rel, "equal": bool(rel < 1e-5)}


# ------------------------------------------------------------------------------------------------ alignment
class _InputRecorder:
    """Forward pre-hooks on the LoRA layers collecting their input tokens (padding excluded for text)."""

    def __init__(self, layers: dict):
        self.inputs = {n: [] for n in layers}
        self.mask = None
        self.handles = [layer.register_forward_pre_hook(self._hook(n)) for n, layer in layers.items()]

    def _hook(self, name):
        def hook(module, args):
            x = args[0].detach()
            if self.mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(self.mask.shape):
                x = x[self.mask.bool()]
            self.inputs[name].append(x.reshape(-1, x.shape[-1]).float().cpu())
        return hook

    def close(self) -> dict[str, torch.Tensor]:
        for h in self.handles:
            h.remove()
        return {n: torch.cat(v) for n, v in self.inputs.items()}


@torch.no_grad()
def run_alignment(cfg: dict, paths: Sequence, *, progress: bool | None = None, datasets: dict | None = None) -> dict:
    """Pairwise linear CKA of the tasks' updates (spec 10): dW_i x ('lora') and the KnOTS representation
    (alignment.knots_representation, default V_i^T x), averaged over the LoRA layers; inputs x = the LoRA
    layers' inputs in the BASE model (W0, LoRA off) on a seeded sample of the union of the tasks' data."""
    from lorm.analysis.alignment import update_alignment
    from lorm.federated.training import generator

    started = time.perf_counter()
    acfg = cfg["alignment"]
    split = acfg["split"]
    runtime, records, tasks = _setup(cfg, paths, datasets, (split,))
    model = build_model(cfg, runtime)
    layers = lora_layers(model)
    set_factors(model, {n: {"A": l.lora_A.detach(), "B": torch.zeros_like(l.lora_B)} for n, l in layers.items()})
    model.eval()
    show = cfg["runtime"]["progress"] if progress is None else progress
    recorder = _InputRecorder(layers)
    sampled = {}
    bar = _bar(len(tasks), "alignment inputs", show)
    try:
        for t, task in enumerate(tasks):
            data = task.splits[split]
            n = min(acfg["samples_per_task"], len(data))
            idx = torch.randperm(len(data), generator=generator(cfg["seed"], 31, t))[:n]
            sampled[task.name] = int(n)
            for batch in iterate_batches(idx.numpy(), runtime.eval_batch_size):
                inputs, _ = data.batch(batch, runtime.device)
                recorder.mask = inputs["attention_mask"] if isinstance(inputs, dict) else None
                with runtime.autocast():
                    model.features(inputs)
            bar.update(1)
    finally:
        inputs_by_layer = recorder.close()
        bar.close()
    deltas = [task_deltas(r) for r in records]
    rep = acfg["knots_representation"]
    lora = update_alignment(deltas, inputs_by_layer, "lora", eps=cfg["merge"]["svd_eps"])
    knots = update_alignment(deltas, inputs_by_layer, rep, eps=cfg["merge"]["svd_eps"])
    n = len(tasks)
    off = ~torch.eye(n, dtype=torch.bool)

    def mean_off(m):
        return float(m[off].mean()) if n > 1 else float("nan")

    what = "V_i^T x (unscaled right singular block of the shared SVD)" if rep == "knots" else \
        "S V_i^T x (= U^T dW_i x; equals the LoRA heatmap by isometry)"
    caption = (f"Pairwise linear CKA between the tasks' LoRA updates, averaged over {len(inputs_by_layer)} LoRA "
               f"layers. Left: dW_i x (LoRA branch output). Right: after the KnOTS transform, {what}; the paper's "
               f"exact representation is not released (spec 10: UNCERTAIN). Inputs: each layer's input tokens in "
               f"the pre-trained model on a seeded sample of {sum(sampled.values())} {split} samples "
               f"({acfg['samples_per_task']} per task) from the union of the tasks"
               + (", padding excluded." if tasks[0].splits[split].modality == "text" else ", all tokens."))
    return {
        "format": ALIGNMENT_FORMAT, "experiment": cfg["experiment"], "tasks": [t.name for t in tasks],
        "backbone": cfg["model"]["backbone"], "representations": {"lora": "lora", "knots": rep},
        "lora": lora.tolist(), "knots": knots.tolist(),
        "mean_offdiagonal": {"lora": mean_off(lora), "knots": mean_off(knots)},
        "num_layers": len(inputs_by_layer), "num_tokens": int(next(iter(inputs_by_layer.values())).shape[0]),
        "samples": sampled, "split": split, "caption": caption, "wall_time_s": time.perf_counter() - started,
    }
