"""What FP8 (B, S, H, D) inputs cost through the public function (session 33). A user with
their own FP8 Q / K / V calls fp8attn.flash_attn_func(q8, k8, v8, q_descale=..., ...), as they
would FA3's; the call lays them out for the kernel first (V^T head-dim major in the key order
the kernel reads; Q and K as (B, H, S, D) where the Gluon kernel takes it). Per case, GPU time
(one-call CUDA graph) and do_bench, TFLOP/s:
  ours_api     flash_attn_func on the FP8 inputs (layout copies + kernel)
  ours_api_torch_v  the same with V^T laid out by torch's copies (before session 33)
  fa3_fp8      FA3's FP8 call on the same FP8 inputs
and the CUDA kernels of one ours_api call (torch.profiler): the attention kernel's share
against the copies'.

    PYTHONPATH=$PWD python benchmarks/experiments/probe_fp8_inputs.py [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]

import fp8attn  # noqa: E402
from common import attn_flops, bench_ms, fa3_out, graph_bench_ms, load_fa3, write_json  # noqa: E402

CASES = [(4, 4096, 16, 128), (1, 16384, 16, 128), (8, 2048, 32, 64), (4, 4096, 8, 256)]


def kernels_of(fn):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    ks = [(e.key, e.device_time_total / 1e3) for e in p.key_averages() if e.device_time_total > 0]
    return sorted(ks, key=lambda x: -x[1])[:6]


def _torch_v(fn):
    """fn with V^T laid out by torch's copies (the layout before session 33's kernel)."""
    import fp8attn.quant.fp8_inputs as fi
    builds = fi._kernel_builds
    fi._kernel_builds = lambda x: False
    try:
        return fn()
    finally:
        fi._kernel_builds = builds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    a = ap.parse_args()
    fa3, why = load_fa3()
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; fa3: {why or 'ok'}",
          flush=True)
    rows = []
    for b, s, h, d in CASES:
        g = torch.Generator(device="cuda").manual_seed(s + d)
        q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
                   .to(torch.float8_e4m3fn) for _ in range(3))
        one = torch.ones(b, h, device="cuda")
        for causal in (False, True):
            flops = attn_flops(b, h, s, s, d, causal)
            api = (lambda: fp8attn.flash_attn_func(q, k, v, causal=causal, q_descale=one,
                                                   k_descale=one, v_descale=one))
            calls = {"ours_api": api, "ours_api_torch_v": lambda: _torch_v(api)}
            if fa3 is not None:
                calls["fa3_fp8"] = lambda: fa3_out(fa3.flash_attn_func(
                    q, k, v, causal=causal, q_descale=one, k_descale=one, v_descale=one))
            row = dict(batch=b, seqlen=s, heads=h, hdim=d, causal=causal)
            for name, fn in calls.items():
                with torch.no_grad():
                    row[name] = round(flops / bench_ms(fn) * 1e-9, 1)
                    row[name + "_gpu"] = round(flops / graph_bench_ms(fn) * 1e-9, 1)
            if row.get("fa3_fp8_gpu"):
                for mine in ("ours_api", "ours_api_torch_v"):
                    row[f"{mine}/fa3_gpu"] = round(row[mine + "_gpu"] / row["fa3_fp8_gpu"], 3)
            row["kernels"] = [(n[:60], round(ms, 4)) for n, ms in kernels_of(api)]
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
