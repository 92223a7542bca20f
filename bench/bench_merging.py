#!/usr/bin/env python
"""Micro-benchmark of lorm.merging on ViT-B/16 shapes (not a test; prints timings).

48 LoRA layers: 12 blocks x (attn.qkv 2304x768, attn.proj 768x768, mlp.fc1 3072x768, mlp.fc2 768x3072),
K clients (default 10), ranks r, diagonal statistics (alpha_bb = 0, what the README runs use) and full
statistics (alpha_bb > 0). Times only the merge calls (data generation excluded); the 12 blocks reuse the
same random data per layer shape. Also times the head merge (C x 768, full shrunk Gram) and the across-task
TaskAccumulator (add + deploy) for all 48 layers.

    python bench/bench_merging.py                      # diag r = 1,2,4,8,16; full r = 1,16
    python bench/bench_merging.py --full-ranks ""      # diagonal statistics only
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch

from lorm.merging import TaskAccumulator, lorm_merge_A, lorm_merge_B, merge_head, shrink

SHAPES = {  # name: (d_out, d_in)
    "qkv": (2304, 768),
    "proj": (768, 768),
    "fc1": (3072, 768),
    "fc2": (768, 3072),
}
BLOCKS = 12


def make_grams(gen: torch.Generator, K: int, d_in: int, full: bool, tokens: int) -> list[torch.Tensor]:
    """Client grams in float32 (as uploaded): diagonal energies, or X^T X of `tokens` random tokens."""
    grams = []
    for _ in range(K):
        scale = torch.exp(0.5 * torch.randn(d_in, generator=gen))
        if full:
            X = torch.randn(tokens, d_in, generator=gen) * scale
            grams.append(X.T @ X)
        else:
            grams.append(tokens * scale**2 * torch.rand(d_in, generator=gen))
    return grams


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_layers(op, data: dict, repeats: int) -> dict[str, float]:
    """Seconds per layer of each shape (best of `repeats`), running the op on all 48 layers."""
    per_shape = {name: 0.0 for name in SHAPES}
    for _ in range(BLOCKS):
        for name in SHAPES:
            per_shape[name] += best_of(lambda: op(data[name]), repeats)
    return {name: t / BLOCKS for name, t in per_shape.items()}


def row(stats: str, r, op: str, per_layer: dict[str, float]) -> str:
    total = BLOCKS * sum(per_layer.values())
    cells = "".join(f"{1e3 * per_layer[n]:>11.2f}" for n in SHAPES)
    return f"{stats:<5} {str(r):>3}  {op:<30}{total:>10.3f}{cells}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--ranks", default="1,2,4,8,16", help="ranks for diagonal statistics")
    p.add_argument("--full-ranks", default="1,16", help="ranks for full statistics ('' to skip)")
    p.add_argument("--repeats", type=int, default=3, help="best of N per layer (diagonal statistics)")
    p.add_argument("--full-repeats", type=int, default=1, help="best of N per layer (full statistics)")
    p.add_argument("--tokens", type=int, default=4096, help="tokens per client behind each full Gram")
    p.add_argument("--classes", type=int, default=100, help="head rows for the head merge")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    K = args.clients
    ranks = [int(x) for x in args.ranks.split(",") if x.strip()]
    full_ranks = [int(x) for x in args.full_ranks.split(",") if x.strip()]
    gen = torch.Generator().manual_seed(args.seed)

    print(f"lorm.merging micro-benchmark: {BLOCKS * len(SHAPES)} ViT-B/16 layers "
          f"({BLOCKS} x {', '.join(f'{n} {o}x{i}' for n, (o, i) in SHAPES.items())}), K = {K} clients")
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu}, inputs float32, float64 inside")
    print(f"{'stats':<5} {'r':>3}  {'op':<30}{'total_s':>10}" + "".join(f"{n + '_ms':>11}" for n in SHAPES))

    for stats, rank_list, repeats in (("diag", ranks, args.repeats), ("full", full_ranks, args.full_repeats)):
        if not rank_list:
            continue
        full = stats == "full"
        grams = {n: make_grams(gen, K, d_in, full, args.tokens) for n, (_, d_in) in SHAPES.items()}
        if full:
            grams = {n: [shrink(G, 0.5) for G in gs] for n, gs in grams.items()}  # alpha_bb = 0.5
        for r in rank_list:
            data = {}
            for n, (d_out, d_in) in SHAPES.items():
                A = torch.randn(r, d_in, generator=gen) / d_in**0.5
                data[n] = {
                    "A": A,
                    "As": [A + 0.01 * torch.randn(r, d_in, generator=gen) for _ in range(K)],
                    "Bs": [0.01 * torch.randn(d_out, r, generator=gen) for _ in range(K)],
                    "grams": grams[n],
                }
            ops = [
                ("lorm_merge_B", lambda d: lorm_merge_B(d["Bs"], d["A"], d["grams"])),
                ("lorm_merge_A (pinv)", lambda d: lorm_merge_A(d["As"], d["grams"])),
            ]
            if full:
                ops.append(("lorm_merge_A (solve)", lambda d: lorm_merge_A(d["As"], d["grams"], solver="solve")))
            for op_name, op in ops:
                print(row(stats, r, op_name, time_layers(op, data, repeats)), flush=True)
        # across tasks: one task's add for every layer, then the deployed delta of every layer
        r = max(rank_list)
        dWs = {n: torch.randn(d_out, r, generator=gen) @ (torch.randn(r, d_in, generator=gen) / d_in**0.5)
               for n, (d_out, d_in) in SHAPES.items()}
        sums = {n: torch.stack(gs).sum(0) for n, gs in grams.items()}
        acc = TaskAccumulator()
        add_t = {n: 0.0 for n in SHAPES}
        for b in range(BLOCKS):
            for n in SHAPES:
                t0 = time.perf_counter()
                acc.add(f"blocks.{b}.{n}", dWs[n], sums[n])
                add_t[n] += (time.perf_counter() - t0) / BLOCKS
        print(row(stats, "-", "TaskAccumulator.add", add_t), flush=True)
        for solver in ("pinv", "solve") if full else ("pinv",):
            delta_t = {n: 0.0 for n in SHAPES}
            for b in range(BLOCKS):
                for n in SHAPES:
                    t0 = time.perf_counter()
                    acc.delta(f"blocks.{b}.{n}", solver=solver)
                    delta_t[n] += (time.perf_counter() - t0) / BLOCKS
            print(row(stats, "-", f"TaskAccumulator.delta ({solver})", delta_t), flush=True)
        del grams, data, acc

    # head: C x 768 RegMean with full shrunk Gram (alpha_head = 0.5), bias FedAvg
    d = 768
    head_grams = [shrink(G, 0.5) for G in make_grams(gen, K, d, True, 512)]
    Hs = [0.02 * torch.randn(args.classes, d, generator=gen) for _ in range(K)]
    bs = [torch.zeros(args.classes) for _ in range(K)]
    n_samples = [int(x) for x in torch.randint(50, 500, (K,), generator=gen)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = best_of(lambda: merge_head(Hs, bs, head_grams, n_samples), args.repeats)
    print(f"head  C={args.classes} d={d}: merge_head {1e3 * t:.2f} ms")


if __name__ == "__main__":
    main()
