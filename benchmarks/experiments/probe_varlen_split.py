"""Where a varlen call's time goes beside the same tokens as one dense call: the quantiser
(rotate + quantise Q, K, V; varlen: K / V into padded rows, with the padded-rows layout launch
before it) and the attention launch (varlen: with its query-tile tables) timed apart, GPU time
from a CUDA graph of each step, through the steps the public calls take (ops._quantize_qkv,
ops._launch). Session 37: causal varlen ran at 0.88x the dense call on 8 x 2048 tokens, and
which step holds the difference was not known.

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/probe_varlen_split.py [--json F]
        [--head-dim 128] [--tiny]

Batch: 8 sequences of 2048 (16 heads) as (8, 2048, 16, D) and packed, causal and not. --tiny
(2 x 256, 2 heads) checks that the script runs, on the CPU too (TRITON_INTERPRET=1
FP8ATTN_TUNE=minimal: the Triton kernels in the interpreter with one config each, no timing;
without the second, the Triton kernel's autotuner asks for a GPU).
Rows, microseconds: quant / kernel / call for dense and varlen (call: the public function),
layout (padded_rows alone), the ratios varlen / dense of each, and the largest difference
between the two public calls' outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import graph_bench_ms, write_json  # noqa: E402

import fp8attn  # noqa: E402
from fp8attn import Recipe  # noqa: E402
from fp8attn.attention import ops  # noqa: E402
from fp8attn.quant.padded_rows import padded_rows  # noqa: E402


def steps(nseq, seqlen, heads, d, causal, device):
    """The (name -> zero-argument call) of each timed step, and the packed batch's offsets."""
    g = torch.Generator(device=device).manual_seed(0)
    total = nseq * seqlen
    q, k, v = (torch.randn(total, heads, d, generator=g, device=device, dtype=torch.bfloat16)
               for _ in range(3))
    cu = torch.arange(0, total + 1, seqlen, device=device, dtype=torch.int32)
    mode = "bottom_right" if causal else None
    scale = d ** -0.5
    recipe = Recipe()
    # dense: (B, S, H, D) -> (B, H, S, D) views, as flash_attn_func's
    qd, kd, vd = (x.view(nseq, seqlen, heads, d) for x in (q, k, v))
    dense_in = [x.permute(0, 2, 1, 3) for x in (qd, kd, vd)]
    # varlen: (total, H, D) -> (1, H, total, D) views, K / V into padded rows
    packed_in = [x.permute(1, 0, 2).unsqueeze(0) for x in (q, k, v)]
    align = ops._kv_align(recipe, nseq, total)
    rows = padded_rows(cu, total, align)

    def quant_dense():
        return ops._quantize_qkv(*dense_in, recipe, causal=mode)

    def quant_varlen():
        r = padded_rows(cu, total, align)
        return ops._quantize_qkv(*packed_in, recipe, causal=mode, varlen=True, kv_rows=r)

    dq = quant_dense()
    vq = ops._quantize_qkv(*packed_in, recipe, causal=mode, varlen=True, kv_rows=rows)
    out_v = torch.empty(q.shape, dtype=q.dtype, device=device)

    def kernel_dense():
        return ops._launch(*dq, causal=mode, softmax_scale=scale, out_dtype=q.dtype,
                           return_lse=False)

    def kernel_varlen():
        return ops._launch(*vq, causal=mode, softmax_scale=scale, out_dtype=q.dtype,
                           return_lse=False, out=out_v.permute(1, 0, 2).unsqueeze(0),
                           cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=seqlen,
                           kv_starts=rows.starts, kv_align=align)

    calls = dict(
        quant_dense=quant_dense, quant_varlen=quant_varlen,
        layout=lambda: padded_rows(cu, total, align),
        kernel_dense=kernel_dense, kernel_varlen=kernel_varlen,
        call_dense=lambda: fp8attn.flash_attn_func(qd, kd, vd, causal=causal),
        call_varlen=lambda: fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, seqlen, seqlen,
                                                           causal=causal))
    return calls, align


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--tiny", action="store_true", help="2 x 256 tokens, 2 heads: a smoke run")
    a = ap.parse_args()
    nseq, seqlen, heads = (2, 256, 2) if a.tiny else (8, 2048, 16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    rows = []
    for causal in (False, True):
        calls, align = steps(nseq, seqlen, heads, a.head_dim, causal, device)
        row = dict(nseq=nseq, seqlen=seqlen, heads=heads, head_dim=a.head_dim, causal=causal,
                   kv_align=align)
        # the two public calls on the same tokens (the scale blocks coincide: seqlen is a
        # multiple of them), a check that the steps timed are the ones meant
        dense = calls["call_dense"]().reshape(nseq * seqlen, heads, a.head_dim)
        row["call_max_abs_diff"] = float((dense.float() - calls["call_varlen"]().float())
                                         .abs().max())
        for name, fn in calls.items():
            fn()                                    # compiles, builds the tables
            if device == "cuda":
                row[name + "_us"] = round(graph_bench_ms(fn) * 1e3, 1)
        for step in ("quant", "kernel", "call"):
            dense, var = row.get(f"{step}_dense_us"), row.get(f"{step}_varlen_us")
            if dense and var:
                row[f"{step}_varlen/dense"] = round(var / dense, 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
