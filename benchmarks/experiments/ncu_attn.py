"""Launches for Nsight Compute: the package's default path (the Gluon kernel at these shapes) and
FA3 FP8, two launches each (the first compiles / warms up), nothing else that matches the
profile filter. FA3's setting: 16k tokens, hidden 2048, non-causal.

    ncu --clock-control none -k 'regex:_attn_fwd|device_kernel' --launch-skip 2 ... \
        python benchmarks/experiments/ncu_attn.py --seqlen 16384 --head-dim 128

(profile only the second launch of each: launch order is ours, ours, fa3, fa3, so skip none and
drop the first of each in the report, or pass --launch-skip/--launch-count as needed).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--causal", action="store_true")
    a = ap.parse_args()
    from common import fa3_out, load_fa3
    from fp8attn import Recipe
    from fp8attn.attention.triton_fwd import attention_fwd_fp8
    from fp8attn.quant import quantize_qkv

    s, d = a.seqlen, a.head_dim
    b, h = 16384 // s, 2048 // d
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, s, d, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    q8, k8, v8 = quantize_qkv(q, k, v, Recipe())
    for _ in range(2):
        attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                          q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                          softmax_scale=d ** -0.5, causal="top_left" if a.causal else None)
    torch.cuda.synchronize()
    fa3, why = load_fa3()
    if fa3 is None:
        print("no FA3:", why)
        return
    qf, kf, vf = (t.transpose(1, 2).contiguous().to(torch.float8_e4m3fn) for t in (q, k, v))
    ones = torch.ones(b, h, device="cuda")
    for _ in range(2):
        fa3_out(fa3.flash_attn_func(qf, kf, vf, causal=a.causal, q_descale=ones,
                                    k_descale=ones, v_descale=ones))
    torch.cuda.synchronize()
    print("done")


if __name__ == "__main__":
    main()
