"""Time the tl kernel (fp8attn/attention/triton_fwd.py) with forced configs on one benchmark cell,
beside the autotuned choice and FA3 FP8, to find configs the autotuner's small space lacks.

    PYTHONPATH=. python benchmarks/experiments/probe_tl_configs.py --head-dim 64 --seqlen 2048 \
        [--causal] [--configs 128:128:4:3,64:128:4:3:o,...] [--rounds 2] [--json out.json]

A config is BLOCK_M:BLOCK_N:num_warps:num_stages with an optional ":o" (ONE_LOOP). The cell is
bench_attention.py's setting (16k tokens per batch, hidden 2048, bf16 randn inputs quantised with
the default recipe, V^T in natural key order so that nothing goes to the Gluon kernel). Each
round times every config and FA3 FP8 once with do_bench, in turn. Per config it also prints the
relative RMSE of its output against the autotuned one (tiles of other shapes round differently;
a large value means a broken config).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import (attn_flops, bench_ms, cuda_absent, fa3_out, load_fa3,  # noqa: E402
                    quantized_randn, write_json)


def parse_config(text: str) -> dict:
    """"128:64:4:3:o" -> the attention_fwd_fp8 config dict."""
    parts = text.split(":")
    if len(parts) not in (4, 5) or (len(parts) == 5 and parts[4] != "o"):
        raise ValueError(f"config {text!r}: want BLOCK_M:BLOCK_N:warps:stages[:o]")
    bm, bn, warps, stages = (int(x) for x in parts[:4])
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages,
            "ONE_LOOP": len(parts) == 5}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--configs", default="128:128:4:3,64:128:4:3,64:128:4:3:o")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    configs = {c: parse_config(c) for c in a.configs.split(",")}
    if cuda_absent():
        return
    from fp8attn.attention.triton_fwd import attention_fwd_fp8
    d, s = a.head_dim, a.seqlen
    b, h = 16384 // s, 2048 // d
    causal = "bottom_right" if a.causal else None
    _, (q8, k8, v8) = quantized_randn(b, h, h, s, s, d, seed=s + d)
    out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
    flops = attn_flops(b, h, s, s, d, a.causal)

    def ours(config=None):
        return attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                                 q_block=q8.block_size, k_block=k8.block_size,
                                 v_block=v8.block_size, softmax_scale=d ** -0.5, out=out,
                                 causal=causal, config=config)
    fns = {"autotuned": ours}
    fns.update({name: (lambda c=c: ours(c)) for name, c in configs.items()})
    fa3, why = load_fa3()
    if fa3 is not None:
        g = torch.Generator(device="cuda").manual_seed(s)
        qf, kf, vf = (torch.randn(b, s, h, d, generator=g, device="cuda",
                                  dtype=torch.bfloat16).to(torch.float8_e4m3fn) for _ in range(3))
        ones = torch.ones(b, h, device="cuda")
        fns["fa3_fp8"] = lambda: fa3_out(fa3.flash_attn_func(
            qf, kf, vf, causal=a.causal, q_descale=ones, k_descale=ones, v_descale=ones))
    else:
        print(f"# FA3 FP8 not timed: {why}")
    ref = ours().float().clone()
    err = {}
    for name, c in configs.items():
        o = ours(c).float()
        err[name] = float(((o - ref) ** 2).mean().sqrt() / ref.pow(2).mean().sqrt())
    rows = []
    for r in range(a.rounds):
        for name, fn in fns.items():
            row = dict(round=r, name=name, hdim=d, seqlen=s, causal=a.causal,
                       tflops=flops / bench_ms(fn) * 1e-9, rel_rmse_vs_autotuned=err.get(name))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"# {torch.cuda.get_device_name()} hdim {d} seqlen {s} causal {a.causal}: "
          "median TFLOP/s (x autotuned, x FA3 FP8)")
    med = {n: statistics.median(r["tflops"] for r in rows if r["name"] == n) for n in fns}
    for n, t in med.items():
        fa = f", {t / med['fa3_fp8']:.3f}" if "fa3_fp8" in med else ""
        print(f"# {n}: {t:.0f} ({t / med['autotuned']:.3f}{fa})")
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
