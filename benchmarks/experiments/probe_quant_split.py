"""Where the dense call's rotate + quantise time goes: Q + K (one `_pairs_kernel` launch), V
(transposed, the attention kernel's key order) and the whole `ops._quantize_qkv`, each timed
alone beside a copy of the same bytes, an empty graph and the varlen padded-rows layout launch. Session 37 put the quantiser at 31%
of an 8 x 2048 causal call (97 of 311 us), about 73% of a copy's bandwidth, where the 2026-11-22
per-tensor readings were 81-88%.

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/probe_quant_split.py [--json F]

Inputs (8, 2048, 16, 128) bf16 as flash_attn_func takes them ((B, S, H, D), read through
(B, H, S, D) views) and, on a second row, contiguous (B, H, S, D) as scaled_dot_product_attention
takes them. GPU time from a one-call CUDA graph (L2 cleared before each replay), microseconds,
and GB/s of the bytes each step must move (bf16 in, FP8 out; descales ignored). With
FP8ATTN_TUNE=all the quantiser autotunes over every config that fits; the configs it picked
are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import cuda_absent, graph_bench_ms, write_json  # noqa: E402

from fp8attn import Recipe  # noqa: E402
from fp8attn.attention import ops  # noqa: E402
from fp8attn.attention.gluon_dispatch import v_key_order_for  # noqa: E402
from fp8attn.hadamard.reference import cached_hadamard_signs  # noqa: E402
from fp8attn.quant import quantize  # noqa: E402
from fp8attn.quant.padded_rows import padded_rows  # noqa: E402
from fp8attn.quant.triton import quantize_pair_triton  # noqa: E402


def timed_steps(q, k, v):
    """(name -> (call, bytes moved)) for (B, H, S, D) views q, k, v."""
    recipe = Recipe()
    signs = cached_hadamard_signs(q.shape[-1], recipe.seed, q.device)
    order = v_key_order_for(q, k, fmt="e4m3", granularity="block", block_kv=128, causal=None,
                            varlen=False, two_terms=False, out_dtype=q.dtype, lse=False,
                            kv_align=0)
    n = q.numel()
    dst = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    one = torch.zeros(1, device=q.device)
    B, H, S, _ = q.shape
    cu = torch.arange(0, B * S + 1, S, device=q.device, dtype=torch.int32)
    return {
        "empty": (lambda: one.add_(1), 0),
        # the varlen call's padded-rows layout launch (one program) for the same tokens packed
        "layout": (lambda: padded_rows(cu, B * S, 128, sequences=True), 0),
        "copy_q": (lambda: dst.copy_(q), 4 * n),
        "pair_qk": (lambda: quantize_pair_triton(q, k, "e4m3", "block", 128, 128, signs=signs),
                    6 * n),
        "q_alone": (lambda: quantize(q, "e4m3", "block", 128, signs=signs), 3 * n),
        "v": (lambda: quantize(v, "e4m3", "block", 128, transpose=True, key_order=order), 3 * n),
        "qkv": (lambda: ops._quantize_qkv(q, k, v, recipe, causal=None), 9 * n),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if cuda_absent():
        return
    from fp8attn.quant.triton_pairs import _pairs_kernel
    g = torch.Generator(device="cuda").manual_seed(0)
    B, S, H, D = 8, 2048, 16, 128
    rows = []
    for layout in ("bshd", "bhsd"):
        shape = (B, S, H, D) if layout == "bshd" else (B, H, S, D)
        x = [torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16)
             for _ in range(3)]
        q, k, v = (t.transpose(1, 2) for t in x) if layout == "bshd" else x
        row = dict(layout=layout, shape=[B, H, S, D], tune=os.environ.get("FP8ATTN_TUNE", ""))
        for name, (fn, nbytes) in timed_steps(q, k, v).items():
            fn()
            us = graph_bench_ms(fn) * 1e3
            row[name + "_us"] = round(us, 1)
            if nbytes:
                row[name + "_gbs"] = round(nbytes / us / 1e3)
        row["qkv/(pair+v)"] = round(row["qkv_us"] / (row["pair_qk_us"] + row["v_us"]), 3)
        row["qkv_gbs/copy_gbs"] = round(row["qkv_gbs"] / row["copy_q_gbs"], 3)
        row["pairs_configs"] = sorted({str(c) for c in getattr(_pairs_kernel, "cache", {}).values()})
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
