"""Probe: exp2 of part of the key columns on the FMA pipe (a Cody-Waite split and a degree-3
polynomial, triton_fwd._exp2_fma_tl) instead of the MUFU unit, in the tl kernel.

    PYTHONPATH=. python benchmarks/experiments/probe_poly_exp.py --head-dim 64 --polys 0,1,2

FP8ATTN_POLY_EXP=K (read at import) sends the keys with (key // 8) % 8 < K (K eighths of them)
to the polynomial. Each K runs in a child process; per K: the max |diff| against K = 0 on a
small shape, the relative RMSE against the float64 oracle, and TFLOP/s at FA3's setting
(16k tokens, hidden 2048) non-causal and causal, FA3 FP8 beside it. Why: at head dim 64 the
softmax's exp2 (MUFU: 16 a clock per SM) takes twice the tensor cores' time for the two GEMMs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]


def child(hd, seqlens):
    from common import attn_flops, bench_ms
    from fp8attn import Recipe
    from fp8attn.attention.reference import attention_oracle
    from fp8attn.attention.triton_fwd import attention_fwd_fp8
    from fp8attn.quant import quantize_qkv

    def run(q8, k8, v8, causal, out=None):
        return attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                                 q_block=q8.block_size, k_block=k8.block_size,
                                 v_block=v8.block_size, softmax_scale=hd ** -0.5, out=out,
                                 causal=causal, v_key_order=v8.key_order)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1000, hd, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    q8, k8, v8 = quantize_qkv(q, k, v, Recipe())
    for causal in (None, "top_left"):
        o = run(q8, k8, v8, causal)
        ref = attention_oracle(q, k, v, causal=causal)
        rr = float(((o.double() - ref) ** 2).mean().sqrt() / ref.pow(2).mean().sqrt())
        torch.save(o.cpu(), f"/tmp/poly_out_{causal}.pt") if os.environ["FP8ATTN_POLY_EXP"] == "0" \
            else None
        base = torch.load(f"/tmp/poly_out_{causal}.pt") if os.path.exists(
            f"/tmp/poly_out_{causal}.pt") else None
        d = float((o.cpu().float() - base.float()).abs().max()) if base is not None else None
        print(json.dumps(dict(kind="check", causal=causal, rel_rmse=rr, max_diff_vs_poly0=d)))
    for s in seqlens:
        b, h = 16384 // s, 2048 // hd
        q, k, v = (torch.randn(b, h, s, hd, generator=g, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        q8, k8, v8 = quantize_qkv(q, k, v, Recipe())
        out = torch.empty_like(q)
        for causal in (None, "top_left"):
            ms = bench_ms(lambda: run(q8, k8, v8, causal, out))
            print(json.dumps(dict(kind="time", seqlen=s, causal=causal, ms=ms,
                                  tflops=attn_flops(b, h, s, s, hd, causal is not None) / ms
                                  * 1e-9)))


def fa3(hd, seqlens):
    from common import attn_flops, bench_ms, fa3_out, load_fa3
    fa, why = load_fa3()
    for s in seqlens:
        b, h = 16384 // s, 2048 // hd
        qf, kf, vf = (torch.randn(b, s, h, hd, device="cuda", dtype=torch.bfloat16)
                      .to(torch.float8_e4m3fn) for _ in range(3))
        ones = torch.ones(b, h, device="cuda")
        for causal in (False, True):
            row = dict(kind="fa3", seqlen=s, causal="top_left" if causal else None)
            if fa is None:
                row["error"] = why
            else:
                ms = bench_ms(lambda: fa3_out(fa.flash_attn_func(
                    qf, kf, vf, causal=causal, q_descale=ones, k_descale=ones,
                    v_descale=ones)))
                row["tflops"] = attn_flops(b, h, s, s, hd, causal) / ms * 1e-9
            print(json.dumps(row))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--polys", default="0,1,2")
    ap.add_argument("--seqlens", default="4096,16384")
    ap.add_argument("--json", default="")
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    seqlens = [int(x) for x in a.seqlens.split(",")]
    if not torch.cuda.is_available():
        print("CUDA is absent: run this on the device machine")
        return
    if a.child == "fa3":
        return fa3(a.head_dim, seqlens)
    if a.child:
        return child(a.head_dim, seqlens)
    rows = []
    for k in ["fa3", *a.polys.split(",")]:
        env = dict(os.environ, FP8ATTN_POLY_EXP="0" if k == "fa3" else k)
        r = subprocess.run([sys.executable, __file__, "--child", k, "--head-dim",
                            str(a.head_dim), "--seqlens", a.seqlens],
                           capture_output=True, text=True, timeout=200, env=env)
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                row = dict(json.loads(line), poly=k, head_dim=a.head_dim)
                rows.append(row)
                print(json.dumps(row), flush=True)
        if r.returncode:
            print(f"# child {k} rc {r.returncode}: {r.stderr[-1500:]}", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
