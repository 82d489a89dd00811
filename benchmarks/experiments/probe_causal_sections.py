"""Causal persistent CTAs: does the L2 section size (gluon_fwd.L2_SECTION_BYTES: the heads whose
K and V one stretch of the greedy schedule covers) explain why they lose to one CTA per block at
16k keys (session 9: 819 vs 845 TFLOP/s top-left) while they win at 4k (682 vs 662)?

    PYTHONPATH=. python benchmarks/experiments/probe_causal_sections.py [--json out.json]

Times, at FA3's setting (16k tokens, hidden 2048, hdim 128, top-left causal) for 4k / 8k / 16k
keys, the non-persistent dispatched variant (pingpong_ovl_s3) and the persistent one with
sections of 8 MB to "every head in one section", in two interleaved rounds (the machine's clock
drifts). The section size is a runtime argument: one compile per variant. Every persistent
section size is first checked for the non-persistent kernel's bits on the timed inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE)), os.path.dirname(os.path.dirname(HERE))]

SECTIONS_MB = (8, 16, 32, 1 << 20)      # the last: every head in one section


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--seqlens", default="4096,8192,16384")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA: nothing to probe")
        return
    from common import attn_flops, bench_ms

    from fp8attn import Recipe
    from fp8attn.attention import gluon_fwd
    from fp8attn.quant import quantize_qkv
    d = 128
    rows = []
    for s in map(int, args.seqlens.split(",")):
        b, h = 16384 // s, 2048 // d
        g = torch.Generator(device="cuda").manual_seed(s)
        q, k, v = (torch.randn(b, h, s, d, generator=g, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        q8, k8, v8 = quantize_qkv(q, k, v, Recipe(), v_key_order="mma")
        out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)

        def run(persistent):
            return gluon_fwd.gluon_attention_fwd(
                q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q8.block_size,
                k8.block_size, v8.block_size, d ** -0.5, out=out, causal="top_left",
                v_key_order="mma", persistent=persistent, mode="pingpong", stages=3,
                overlap=True)
        ref = run(False).clone()
        fl = attn_flops(b, h, s, s, d, True)
        for rnd in range(2):
            for mb in (None,) + SECTIONS_MB:
                if mb is not None:
                    gluon_fwd.L2_SECTION_BYTES = mb << 20
                got = run(mb is not None)
                row = dict(seqlen=s, round=rnd, variant="s3" if mb is None else "persist",
                           section_mb=mb,
                           section_heads=None if mb is None else gluon_fwd._section_heads(s, d),
                           same_bits=bool(torch.equal(got, ref)))
                row["tflops"] = fl / bench_ms(lambda: run(mb is not None)) * 1e-9
                print(json.dumps(row), flush=True)
                rows.append(row)
    gluon_fwd.L2_SECTION_BYTES = 16 << 20
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
