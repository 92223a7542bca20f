#!/usr/bin/env python
"""Benchmark of the text path: padded vs packed MiniLM forward (not a test; prints samples/s).

The default experiment (config/config.yaml: WordNet-40 x MiniLM, LoRA rank 4 on the 36 encoder Linears,
40 classes), measured the way a run computes:

* train: random batches of 16 from the train split as ``train_local`` draws them (model.train(), dropout on,
  AdamW on the LoRA B factors + head; forward + backward + step);
* stats: ``collect_statistics`` (eval batch 64, length-sorted, diag statistics of the 36 LoRA layers + full
  head Gram);
* eval: ``predict`` (eval batch 64, length-sorted).

Variants ("padded": the BertModel's own forward; "packed": lorm.models.packed_bert, the default) run in the
SAME process, interleaved (the order alternates per repeat) on the same batches, so a shared machine slows
both alike. Reported: median samples/s over the repeats and the speed-up of each variant over the first.

    python bench/bench_text_path.py                       # padded vs packed, 1 torch thread
    python bench/bench_text_path.py --compile             # + packed under torch.compile(dynamic=True)

Measured (2-core x86 CPU shared with other jobs, 1 thread, defaults): train 57 -> 114 samples/s (2.0x; the
batches carry 2.2x padded / real tokens), stats 230 -> 281 (1.2x), eval 272 -> 306 (1.1x); the compiled
encoder was slower than the eager packed one (70 vs 98 samples/s training; graph breaks at ``nonzero`` and
``random_``, and a per-layer compile without breaks reached 1.4x padded against 2.0x).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from lorm.config import load_config
from lorm.data.datasets import build_dataset
from lorm.data.tensors import encode_split, iterate_batches
from lorm.federated.training import Runtime, collect_statistics, derive_seed, predict
from lorm.models.backbones import build_classifier, load_tokenizer
from lorm.models.lora import lora_layers, set_trainable


def make_variant(model, name: str):
    """A callable that sets the model up for variant ``name`` (padded, packed, packed+compile)."""
    enc = model.encoder
    compiled = torch.compile(enc.forward, dynamic=True) if name == "packed+compile" else None

    def setup():
        enc.packed = name != "padded"
        if compiled is None:
            model.__dict__.pop("features", None)  # back to Classifier.features
        else:
            model.features = compiled  # Classifier.forward calls self.features too

    return setup


def train_steps(model, data, batches, optimizer) -> float:
    """Seconds for forward + backward + AdamW step over ``batches`` (the loop body of train_local)."""
    model.train()
    t0 = time.perf_counter()
    for idx in batches:
        inputs, labels = data.batch(idx)
        logits = model.head(model.features(inputs))
        loss = F.cross_entropy(logits.float(), labels)  # all 40 classes (a run slices the task's classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/config.yaml", help="experiment config (dataset, model, batch sizes)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (median reported)")
    p.add_argument("--train-batches", type=int, default=25, help="training steps per repeat")
    p.add_argument("--stats-samples", type=int, default=640, help="train samples per statistics pass")
    p.add_argument("--eval-samples", type=int, default=0, help="test samples per evaluation (0 = all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (runtime.threads of the default config)")
    p.add_argument("--compile", action="store_true", help="also time the packed encoder under torch.compile")
    p.add_argument("--only", default="train,stats,eval", help="comma list of passes to time")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    passes = [s.strip() for s in args.only.split(",") if s.strip()]

    ds = build_dataset({**cfg["dataset"], "num_workers": cfg["runtime"]["num_workers"] or None})
    num_classes = len(ds["classes"])
    label_map = np.arange(num_classes)  # natural class order
    tok = load_tokenizer(cfg["model"])
    kw = dict(tokenizer=tok, max_length=cfg["dataset"]["max_length"])
    train = encode_split(ds["train"], "text", label_map, **kw)
    test = encode_split(ds["test"], "text", label_map, **kw)
    runtime = Runtime(torch.device("cpu"), None, cfg["fcil"]["batch_size"], cfg["runtime"]["eval_batch_size"])

    gen = torch.Generator().manual_seed(derive_seed(args.seed, 0))
    model = build_classifier(cfg["model"], num_classes, generator=gen)
    set_trainable(model, A=False, B=True)
    model.head.requires_grad_(True)
    layers = lora_layers(model)
    groups = [{"params": [layer.lora_B for layer in layers.values()]}, {"params": list(model.head.parameters())}]
    optimizer = torch.optim.AdamW(groups, lr=cfg["optim"]["lr"], betas=(0.9, 0.999), eps=1e-8)
    modules = {**layers, "head": model.head}
    kinds = {**{n: "diag" for n in layers}, "head": "full"}

    rng = np.random.default_rng(args.seed)
    train_idx = np.arange(len(train))
    stats_idx = rng.choice(len(train), size=min(args.stats_samples, len(train)), replace=False)
    eval_idx = np.arange(len(test)) if not args.eval_samples else np.arange(min(args.eval_samples, len(test)))
    batch_gen = torch.Generator().manual_seed(args.seed)

    mask = train.inputs["attention_mask"]
    lens = mask.sum(1).float()
    print(f"text path benchmark: {cfg['model']['backbone']} (LoRA rank {cfg['model']['lora_rank']}, "
          f"{len(layers)} LoRA layers, {num_classes} classes), {ds['name']}: {len(train)} train / {len(test)} test")
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU {cpu}; "
          f"tokens per gloss: mean {lens.mean():.1f}, p95 {lens.quantile(0.95):.0f}, max {lens.max():.0f}")

    variants = ["padded", "packed"] + (["packed+compile"] if args.compile else [])
    setups = {v: make_variant(model, v) for v in variants}
    times: dict[tuple[str, str], list[float]] = {}
    samples: dict[str, int] = {}
    padding: list[float] = []
    for r in range(args.repeats + 1):  # repeat 0 warms up (allocator, MKL, compile) and is not reported
        batches = list(iterate_batches(train_idx, runtime.batch_size, batch_gen, shuffle=True))[:args.train_batches]
        real = sum(int(mask[b].sum()) for b in batches)
        padded = sum(len(b) * int(mask[b].sum(1).max()) for b in batches)
        if r:
            padding.append(padded / real)
        order = variants if r % 2 == 0 else variants[::-1]
        seconds = {}
        for v in order:
            setups[v]()
            for what in passes:
                t0 = time.perf_counter()
                if what == "train":
                    train_steps(model, train, batches, optimizer)
                    n = sum(len(b) for b in batches)
                elif what == "stats":
                    collect_statistics(model, train, stats_idx, modules, kinds, runtime=runtime)
                    n = len(stats_idx)
                elif what == "eval":
                    predict(model, test, eval_idx, num_classes, runtime)
                    n = len(eval_idx)
                else:
                    raise SystemExit(f"--only: unknown pass {what!r} (train, stats, eval)")
                seconds[(what, v)] = time.perf_counter() - t0
                samples[what] = n
                if r:
                    times.setdefault((what, v), []).append(seconds[(what, v)])
        print(f"  repeat {r}{' (warm-up)' if r == 0 else ''}: "
              + ", ".join(f"{w}/{v} {seconds[(w, v)]:.2f}s" for w in passes for v in variants), flush=True)
    setups["packed"]()

    print(f"\ntraining batches: {statistics.median(padding):.2f}x padded / real tokens (median over repeats)")
    print(f"{'pass':<6}{'samples':>8}" + "".join(f"{v + ' samples/s':>26}" for v in variants)
          + "".join(f"{'speed-up ' + v:>24}" for v in variants[1:]))
    for what in passes:
        rates = {v: samples[what] / statistics.median(times[(what, v)]) for v in variants}
        spread = {v: (samples[what] / max(times[(what, v)]), samples[what] / min(times[(what, v)])) for v in variants}
        cells = "".join(f"{rates[v]:>10.1f} [{spread[v][0]:>6.1f}-{spread[v][1]:>6.1f}]" for v in variants)
        ups = "".join(f"{rates[v] / rates[variants[0]]:>23.2f}x" for v in variants[1:])
        print(f"{what:<6}{samples[what]:>8}{cells}{ups}")
    print("(median samples/s over repeats, [min-max] in brackets)")


if __name__ == "__main__":
    main()
