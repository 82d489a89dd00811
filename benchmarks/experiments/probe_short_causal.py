"""Why the hdim-128 causal call at 1k keys reads 0.84x FA3 FP8 in bench_attention.py but 0.92x
in gluon_gpu_check.py (session 11: 474 against 515 TFLOP/s top-left).

Three suspects, each timed beside FA3 FP8 on the same inputs (FA3's setting: 16k tokens per
batch, 16 heads, head dim 128):
  - the alignment: the check ran top-left, the bench runs bottom-right (the same mask when
    seqlen_q == seqlen_k, but another constexpr CAUSAL in the kernel);
  - the path: the check calls gluon_attention_fwd directly, the bench attention_fwd_fp8 (the
    dispatch's checks on the host);
  - the timing: do_bench clears L2 before each call and times it alone, so host time beyond the
    clearing kernel's counts; here also the same call replayed from a one-call CUDA graph under
    do_bench (cold L2, no host time) and the host time of issuing it (common.loop_us).

    PYTHONPATH=. python benchmarks/experiments/probe_short_causal.py [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]

from common import (attn_flops, bench_ms, fa3_out, graph_bench_ms, host_probe_inputs,  # noqa: E402
                    kernel_only, load_fa3, loop_us, cuda_absent)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--seqlens", default="1024,2048")
    args = ap.parse_args()
    if cuda_absent():
        return
    from fp8attn.attention import gluon_dispatch
    from fp8attn.attention.gluon_fwd import gluon_attention_fwd
    fa3, why = load_fa3()
    rows = []
    for s in (int(x) for x in args.seqlens.split(",")):
        (q, k, v), (q8, k8, v8), out = host_probe_inputs(s)
        b, h, d = q8.data.shape[0], q8.data.shape[1], q8.data.shape[-1]
        qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
        ones = torch.ones(b, h, device="cuda")
        variant = gluon_dispatch.variant_for(d, "bottom_right", s, s)

        def direct(causal):
            return lambda: gluon_attention_fwd(
                q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q8.block_size,
                k8.block_size, v8.block_size, d ** -0.5, out=out, causal=causal,
                v_key_order=v8.key_order, **variant)

        def package(causal):
            return lambda: kernel_only((q8, k8, v8), out, causal)

        calls = {f"{p}_{c}": f(c) for p, f in (("direct", direct), ("package", package))
                 for c in ("top_left", "bottom_right")}
        if fa3 is not None:
            calls["fa3_fp8"] = lambda: fa3_out(fa3.flash_attn_func(
                qf, kf, vf, causal=True, q_descale=ones, k_descale=ones, v_descale=ones))
        fl = attn_flops(b, h, s, s, d, True)
        ref = None
        for name, fn in calls.items():
            row = dict(name=name, seqlen=s, batch=b, heads=h, variant=str(variant))
            try:
                o = fn()
                if name != "fa3_fp8":
                    o = out.clone()
                    ref = o if ref is None else ref
                    row["same_bits_as_first"] = bool(torch.equal(o, ref))
                row["tflops_bench"] = fl / bench_ms(fn) * 1e-9
                row["tflops_graph_bench"] = fl / graph_bench_ms(fn) * 1e-9
                row["host_us"], row["wall_us"] = loop_us(fn)
            except Exception as e:  # noqa: BLE001 - report and go on
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
