#!/usr/bin/env python
"""Benchmark of KnOTS alignment paths and the KnOTS-TIES merge on ViT-B/16 LoRA shapes (not a test).

48 LoRA layers by default: 12 blocks x (attn.qkv 2304x768, attn.proj 768x768, mlp.fc1 3072x768,
mlp.fc2 768x3072), n models (default 10) of rank k (default 16), float64 on CPU. Every layer gets its own
random factors (data generation is not timed). For each alignment path (dense = the official thin SVD of
[dW_1 ... dW_n], the oracle; qr = core path; gram = eigh of sum_i B_i A_i A_i^T B_i^T; auto = qr if
n k < O else gram) it times knots_align over all layers, then the KnOTS-TIES merge of the aligned parts
(knots_merge_aligned: global top-K over all layers, sign election, disjoint mean, U R per layer), and
reports the largest deviation from the dense path: of U and R_i after matching column signs, and of the
merged updates. Finally it times knots_merge end to end (path 'auto').

    python bench/bench_knots.py                          # defaults: 10 models, rank 16, 12 blocks, 1 thread
    python bench/bench_knots.py --blocks 2 --paths qr,gram   # quick run without the (slow) dense oracle
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from lorm.merging.knots import auto_path, knots_align, knots_merge, knots_merge_aligned

SHAPES = {  # name: (d_out, d_in)
    "qkv": (2304, 768),
    "proj": (768, 768),
    "fc1": (3072, 768),
    "fc2": (768, 3072),
}
F64 = torch.float64


def make_layers(gen: torch.Generator, blocks: int, n: int, k: int) -> dict:
    """name -> (Bs, As), float64; B ~ 0.02 N(0, 1), A ~ N(0, 1/I) (LoRA-like update scales)."""
    layers = {}
    for b in range(blocks):
        for s, (O, I) in SHAPES.items():
            Bs = [0.02 * torch.randn(O, k, generator=gen, dtype=F64) for _ in range(n)]
            As = [torch.randn(k, I, generator=gen, dtype=F64) / math.sqrt(I) for _ in range(n)]
            layers[f"blocks.{b:02d}.{s}"] = (Bs, As)
    return layers


def align_all(layers: dict, path: str) -> tuple[dict, dict[str, float]]:
    """knots_align on every layer -> (aligned, seconds per shape summed over blocks)."""
    aligned, per_shape = {}, {s: 0.0 for s in SHAPES}
    for name, (Bs, As) in layers.items():
        t0 = time.perf_counter()
        aligned[name] = knots_align(Bs, As, path=path)
        per_shape[name.rsplit(".", 1)[1]] += time.perf_counter() - t0
    return aligned, per_shape


def deviation(aligned: dict, ref: dict) -> tuple[float, float]:
    """max |U - U_ref| and max |R_i - R_ref_i| after flipping U's columns to U_ref's signs (NaN if ranks differ)."""
    du = dr = 0.0
    for name, (U, Rs) in aligned.items():
        U_ref, R_ref = ref[name]
        if U.shape != U_ref.shape:
            return math.nan, math.nan
        sg = torch.sign((U * U_ref).sum(0))
        du = max(du, float((U * sg - U_ref).abs().max()))
        dr = max(dr, max(float((R * sg.unsqueeze(1) - R0).abs().max()) for R, R0 in zip(Rs, R_ref)))
    return du, dr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=10, help="number of LoRA models (tasks or clients)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank k of every model")
    p.add_argument("--blocks", type=int, default=12, help="transformer blocks (4 layers each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--paths", default="dense,qr,gram,auto", help="alignment paths to time, comma-separated")
    p.add_argument("--topk", type=float, default=20.0, help="TIES top-K percent")
    p.add_argument("--lam", type=float, default=1.0, help="TIES lambda")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    n, k = args.models, args.rank
    layers = make_layers(torch.Generator().manual_seed(args.seed), args.blocks, n, k)

    print(f"KnOTS benchmark: {len(layers)} ViT-B/16 LoRA layers ({args.blocks} x "
          f"{', '.join(f'{s} {o}x{i}' for s, (o, i) in SHAPES.items())}), n = {n} models, rank {k}")
    print(f"auto path per shape: {', '.join(f'{s} {auto_path([k] * n, o)}' for s, (o, _) in SHAPES.items())}")
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu}, float64; "
          f"KnOTS-TIES topk {args.topk:g} %, lam {args.lam:g}, merging_type mean")
    head = (f"{'path':<6}{'align_s':>9}" + "".join(f"{s + '_s':>9}" for s in SHAPES)
            + f"{'ties_s':>9}{'total_s':>9}{'sum_r':>7}{'dU':>10}{'dR':>10}{'dW_merged':>11}")
    print(head)
    print("-" * len(head))

    ref_aligned = ref_merged = None
    for path in paths:
        aligned, per_shape = align_all(layers, path)
        t_align = sum(per_shape.values())
        t0 = time.perf_counter()
        merged = knots_merge_aligned(aligned, "ties", lam=args.lam, topk=args.topk)
        t_ties = time.perf_counter() - t0
        sum_r = sum(U.shape[1] for U, _ in aligned.values())
        if ref_aligned is None and path == "dense":
            ref_aligned, ref_merged = aligned, merged
        if ref_aligned is not None:
            du, dr = deviation(aligned, ref_aligned)
            dw = max(float((merged[name] - ref_merged[name]).abs().max()) for name in merged)
            devs = f"{du:>10.1e}{dr:>10.1e}{dw:>11.1e}"
        else:
            devs = f"{'-':>10}{'-':>10}{'-':>11}"
        cells = "".join(f"{per_shape[s]:>9.3f}" for s in SHAPES)
        print(f"{path:<6}{t_align:>9.3f}{cells}{t_ties:>9.3f}{t_align + t_ties:>9.3f}{sum_r:>7d}{devs}", flush=True)
        if aligned is not ref_aligned:
            del aligned, merged
    if ref_merged is not None:
        scale = max(float(v.abs().max()) for v in ref_merged.values())
        print(f"(deviations are absolute; max |dW_merged| of the dense path = {scale:.3e})")

    t0 = time.perf_counter()
    out = knots_merge(layers, "ties", lam=args.lam, topk=args.topk, path="auto")
    t_e2e = time.perf_counter() - t0
    extra = ""
    if ref_merged is not None:
        extra = f", max deviation from dense {max(float((out[m] - ref_merged[m]).abs().max()) for m in out):.1e}"
    print(f"knots_merge(method='ties', path='auto') end to end: {t_e2e:.3f} s{extra}")


if __name__ == "__main__":
    main()
