"""Rotate + quantise time by head dim: the power-of-two dims (the pairs kernel) beside 80 and 96
(20·2^k and 12·2^k: the older tile layout rotates them, M > 1 in the rows), with and without
the rotation.

    PYTHONPATH=. python benchmarks/experiments/probe_quant_dims.py [--json out.json]

Inputs (4, 32, 4096, d) bf16; GPU time of one call (one-call CUDA graph, L2 cleared), and GB/s of
the fewest bytes the call must move (bf16 in, FP8 out; descales ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import cuda_absent, graph_bench_ms, write_json  # noqa: E402

from fp8attn.hadamard.reference import cached_hadamard_signs  # noqa: E402
from fp8attn.quant import quantize  # noqa: E402
from fp8attn.quant.triton import _tile_params  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="64,80,96,128")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if cuda_absent():
        return
    rows = []
    for d in (int(x) for x in a.dims.split(",")):
        x = torch.randn(4, 32, 4096, d, device="cuda", dtype=torch.bfloat16)
        signs = cached_hadamard_signs(d, 0, "cuda")
        for what, kw in (("Q / K rotated", dict(signs=signs)), ("Q / K plain", {}),
                         ("V transposed", dict(transpose=True))):
            ms = graph_bench_ms(lambda: quantize(x, "e4m3", "block", 128, **kw))
            tp = _tile_params(d, "signs" in kw)
            # M > 1 (a 12 / 20 factor): the tile layout of _quant_kernel, else the pairs kernel
            row = dict(d=d, what=what, ms=round(ms, 4), gbs=round(x.numel() * 3 / ms / 1e6),
                       M=tp["M"], P=tp["P"])
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
