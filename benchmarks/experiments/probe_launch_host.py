"""Host time of a Gluon attention call against its GPU time, with the launch plan and direct
compiled-kernel launch of fp8attn.kernel_launch (FP8ATTN_FAST_LAUNCH=1) and without it (=0: the
plan's checks cached, but Triton's JIT binds the arguments every call), beside FA3 FP8's call on
the same inputs. At 1k keys the call's host time decides whether the Gluon kernel can take it
(gluon_dispatch.MIN_SEQLEN_K): this probe lowers MIN_SEQLEN_K to 1024 for its own calls.

Rows: host_us / wall_us (common.loop_us, 200 calls), bench_ms (do_bench), graph_ms (CUDA graph:
the GPU alone). Then a cProfile of the kernel-only call at 1k keys.

    PYTHONPATH=. python benchmarks/experiments/probe_launch_host.py [--json F]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]

import fp8attn  # noqa: E402
from common import (bench_ms, fa3_out, graph_ms, host_probe_inputs, kernel_only,  # noqa: E402
                    load_fa3, loop_us, cuda_absent)
from fp8attn.attention import gluon_dispatch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if cuda_absent():
        return
    gluon_dispatch.MIN_SEQLEN_K = 1024
    fa3, why = load_fa3()
    rows = []
    for s in (1024, 4096):
        (q, k, v), quant, out = host_probe_inputs(s)
        qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
        ones = torch.ones(q.shape[0], q.shape[2], device="cuda")
        for causal in (None, "bottom_right"):
            def kern(causal=causal):
                return kernel_only(quant, out, causal)

            def e2e(causal=causal):
                return fp8attn.flash_attn_func(q, k, v, causal=causal is not None)

            def fa3_fp8(causal=causal):
                return fa3_out(fa3.flash_attn_func(qf, kf, vf, causal=causal is not None,
                                                   q_descale=ones, k_descale=ones,
                                                   v_descale=ones))
            calls = [("kernel", kern, "1"), ("kernel", kern, "0"), ("e2e", e2e, "1"),
                     ("e2e", e2e, "0")]
            if fa3 is not None:
                calls.append(("fa3_fp8", fa3_fp8, "-"))
            for name, fn, fast in calls:
                os.environ["FP8ATTN_FAST_LAUNCH"] = "0" if fast == "0" else "1"
                host, wall = loop_us(fn)
                row = dict(s=s, causal=causal, call=name, fast_launch=fast,
                           host_us=round(host, 1), wall_us=round(wall, 1),
                           bench_ms=round(bench_ms(fn), 4), graph_ms=round(graph_ms(fn), 4))
                rows.append(row)
                print(row, flush=True)
        if s == 1024:
            os.environ["FP8ATTN_FAST_LAUNCH"] = "1"
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(200):
                kernel_only(quant, out, None)
            torch.cuda.synchronize()
            pr.disable()
            st = io.StringIO()
            pstats.Stats(pr, stream=st).sort_stats("tottime").print_stats(16)
            print(st.getvalue()[-4000:])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
