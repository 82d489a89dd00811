"""Repeated kernel-only readings of single benchmark cells, ours beside FA3 FP8, to tell a cell
at a bar (e.g. 0.85x FA3 FP8) from one run's noise.

    PYTHONPATH=. python benchmarks/experiments/bar_repeats.py \
        --cells 64:2048:0,64:4096:0,256:1024:0 [--repeats 5] [--json out.json]

A cell is hdim:seqlen:causal (causal 0 / 1) in bench_attention.py's setting (16k tokens per
batch, hidden 2048, bf16 randn inputs quantised with the default recipe, V^T in the key order
the package's dispatch reads). Each repeat times ours (the package's kernel-only dispatch,
common.kernel_only) and then FA3 FP8 (per-tensor descales of one, as in the benchmark), both
with do_bench and with GPU time (one-call CUDA graph, common.graph_bench_ms). Prints one JSON
line per repeat, then per cell the median, min and max of the ratio ours / FA3 FP8.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import (attn_flops, bench_ms, dispatch_quantized, fa3_out,  # noqa: E402
                    graph_bench_ms, kernel_only, load_fa3, write_json, cuda_absent)


def parse_cells(text: str) -> list[tuple[int, int, bool]]:
    """"64:2048:0,128:4096:1" -> [(64, 2048, False), (128, 4096, True)]."""
    cells = []
    for item in text.split(","):
        d, s, c = item.split(":")
        if c not in ("0", "1"):
            raise ValueError(f"cell {item!r}: causal must be 0 or 1")
        cells.append((int(d), int(s), c == "1"))
    return cells


def cell_fns(fa3, d: int, s: int, causal: bool):
    """(flops, ours, fa3_fp8) for one cell, inputs as bench_attention.throughput builds them."""
    b, h = 16384 // s, 2048 // d
    g = torch.Generator(device="cuda").manual_seed(s + d)
    q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    c = "bottom_right" if causal else None
    out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
    quant, _ = dispatch_quantized(qh, kh, vh, c, out.dtype)
    qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
    ones = torch.ones(b, h, device="cuda")
    return (attn_flops(b, h, s, s, d, causal),
            lambda: kernel_only(quant, out, c),
            lambda: fa3_out(fa3.flash_attn_func(qf, kf, vf, causal=causal, q_descale=ones,
                                                k_descale=ones, v_descale=ones)))


def summary(rows: list[dict], key: str) -> dict:
    r = [row[key] for row in rows if row.get(key)]
    return dict(median=statistics.median(r), min=min(r), max=max(r), n=len(r)) if r else {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", required=True, help="hdim:seqlen:causal,...")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    cells = parse_cells(a.cells)
    if cuda_absent():
        return
    fa3, why = load_fa3()
    if fa3 is None:
        sys.exit(f"FA3 FP8 is the peer and is unavailable: {why}")
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    out = {}
    for d, s, causal in cells:
        fl, ours, peer = cell_fns(fa3, d, s, causal)
        rows = []
        for rep in range(a.repeats):
            row = dict(hdim=d, seqlen=s, causal=causal, rep=rep)
            for name, fn in (("ours", ours), ("fa3_fp8", peer)):
                row[name] = fl / bench_ms(fn) * 1e-9
                row[name + "_gpu"] = fl / graph_bench_ms(fn) * 1e-9
            row["ratio"] = row["ours"] / row["fa3_fp8"]
            row["ratio_gpu"] = row["ours_gpu"] / row["fa3_fp8_gpu"]
            print(json.dumps(row), flush=True)
            rows.append(row)
        key = f"{d}:{s}:{int(causal)}"
        out[key] = dict(rows=rows, ratio=summary(rows, "ratio"),
                        ratio_gpu=summary(rows, "ratio_gpu"))
        print(f"# {key} ours / FA3 FP8: do_bench {json.dumps(out[key]['ratio'])}, "
              f"GPU time {json.dumps(out[key]['ratio_gpu'])}", flush=True)
        write_json(a.json, out)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
