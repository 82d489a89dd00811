"""Kernel-only and end-to-end throughput on the attention shapes of real models, ours beside
FA3 in the same run (bench_attention.py times the FA3 paper's setting: MHA, hidden 2048, head
dims 64 / 128 / 256 only).

    PYTHONPATH=. python benchmarks/experiments/probe_model_shapes.py [--json out.json]

Each shape: 16k query tokens per call (batch = 16384 / seqlen), bf16 randn inputs in
(B, S, H, D). Rows, each with do_bench and GPU time (one-call CUDA graph, L2 cleared):
  ours          FP8 inputs ready (default recipe), the package's dispatch, bf16 out
  fa3_fp8       FA3 FP8 on e4m3 casts of the inputs, descales of one, shape (B, Hkv)
  ours_e2e      fp8attn.flash_attn_func on the bf16 inputs (rotate + quantise + attend)
  fa3_bf16      FA3 BF16
plus the path the dispatch took ("gluon" or "tl (why)") and the GPU time of the default
recipe's rotate + quantise of Q, K, V (quant_ms_gpu). GQA shapes are followed by the same
shape with as many K / V heads as query heads (same FLOPs), so the cost of sharing shows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import (attn_flops, bench_ms, dispatch_quantized, fa3_out,  # noqa: E402
                    graph_bench_ms, kernel_only, load_fa3, write_json, cuda_absent)

import fp8attn  # noqa: E402
from fp8attn import Recipe  # noqa: E402
from fp8attn.attention import gluon_dispatch  # noqa: E402
from fp8attn.quant import quantize_qkv  # noqa: E402

# name: (query heads, key / value heads, head dim, seqlens, causal values)
SHAPES = {
    "llama3-8b": (32, 8, 128, (4096, 8192), (True, False)),
    "llama3-8b-mha": (32, 32, 128, (4096, 8192), (True, False)),
    "qwen2-0.5b": (14, 2, 64, (4096,), (True,)),
    "qwen2-0.5b-mha": (14, 14, 64, (4096,), (True,)),
    "gemma2-9b": (16, 8, 256, (4096,), (True,)),
    "phi3-mini": (32, 32, 96, (4096, 16384), (True, False)),
    "phi2": (32, 32, 80, (4096,), (True, False)),
    "minilm": (12, 12, 32, (512,), (False,)),
}


def cell(fa3, hq, hkv, d, s, causal):
    b = max(1, 16384 // s)
    g = torch.Generator(device="cuda").manual_seed(s + d + hq)
    q = torch.randn(b, s, hq, d, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, s, hkv, d, generator=g, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    c = "bottom_right" if causal else None
    out = torch.empty(b, hq, s, d, device="cuda", dtype=torch.bfloat16)
    quant, order = dispatch_quantized(qh, kh, vh, c, out.dtype)
    q8, k8, v8 = quant
    why = gluon_dispatch.why_not(
        q8.data, k8.data, v8.data, k_block=k8.block_size, v_block=v8.block_size, causal=c,
        varlen=False, q_lo=q8.residual, out_dtype=out.dtype, acc_mode="tile", config=None,
        v_key_order=order)
    fns = {"ours": lambda: kernel_only(quant, out, c),
           "ours_e2e": lambda: fp8attn.flash_attn_func(q, k, v, causal=causal)}
    if fa3 is not None:
        qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
        ones = torch.ones(b, hkv, device="cuda")
        fns["fa3_fp8"] = lambda: fa3_out(fa3.flash_attn_func(
            qf, kf, vf, causal=causal, q_descale=ones, k_descale=ones, v_descale=ones))
        fns["fa3_bf16"] = lambda: fa3_out(fa3.flash_attn_func(q, k, v, causal=causal))
    row = dict(batch=b, hq=hq, hkv=hkv, hdim=d, seqlen=s, causal=causal,
               path="gluon" if why is None else f"tl ({why})")
    fl = attn_flops(b, hq, s, s, d, causal)
    row["quant_ms_gpu"] = round(graph_bench_ms(
        lambda: quantize_qkv(qh, kh, vh, Recipe(), v_key_order=order)), 4)
    for name, fn in fns.items():
        try:
            row[name] = round(fl / bench_ms(fn) * 1e-9, 1)
            row[name + "_gpu"] = round(fl / graph_bench_ms(fn) * 1e-9, 1)
        except Exception as e:  # noqa: BLE001 - a peer may not support a shape
            row[name + "_error"] = f"{type(e).__name__}: {str(e)[:160]}"
    for a, p in (("ours", "fa3_fp8"), ("ours_e2e", "fa3_bf16")):
        if row.get(a + "_gpu") and row.get(p + "_gpu"):
            row[f"{a}/{p}_gpu"] = round(row[a + "_gpu"] / row[p + "_gpu"], 3)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if cuda_absent():
        return
    fa3, why = load_fa3()
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; fa3: {why or 'ok'}",
          flush=True)
    rows = []
    for name in a.shapes.split(","):
        hq, hkv, d, seqlens, causals = SHAPES[name]
        for s in seqlens:
            for causal in causals:
                row = dict(shape=name, **cell(fa3, hq, hkv, d, s, causal))
                print(json.dumps(row), flush=True)
                rows.append(row)
                torch.cuda.empty_cache()
        write_json(a.json, rows)


if __name__ == "__main__":
    main()
