"""Why causal persistent calls ran slow in the session-11 bench (H200): host time a call, GPU
time (CUDA graph), do_bench time, with and without the TMA store, kernel only and end to end,
and a cProfile of the end-to-end call.

    PYTHONPATH=. python benchmarks/experiments/probe_causal_host.py
"""
from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]

import fp8attn  # noqa: E402
from common import (bench_ms, cuda_absent, graph_ms, host_probe_inputs, kernel_only,  # noqa: E402
                    loop_us)
from fp8attn.attention import gluon_dispatch  # noqa: E402


def main():
    if cuda_absent():
        return
    for s in (1024, 4096):
        (q, k, v), quant, out = host_probe_inputs(s)
        for ts in (2, 0):
            gluon_dispatch.CAUSAL_PERSISTENT_VARIANT = dict(gluon_dispatch.CAUSAL_VARIANT,
                                                            persistent=True, tma_store=ts)
            for causal in ("bottom_right", None):
                def kern():
                    return kernel_only(quant, out, causal)

                def e2e():
                    return fp8attn.flash_attn_func(q, k, v, causal=causal is not None)
                for name, fn in (("kernel", kern), ("e2e", e2e)):
                    row = dict(s=s, tma_store=ts, causal=causal, call=name,
                               host_ms=round(loop_us(fn, 30)[0] / 1e3, 4),
                               bench_ms=round(bench_ms(fn), 4))
                    try:
                        row["graph_ms"] = round(graph_ms(fn), 4)
                    except Exception as e:  # noqa: BLE001
                        row["graph_ms"] = f"{type(e).__name__}: {str(e)[:100]}"
                    print(row, flush=True)
        if s == 4096:
            gluon_dispatch.CAUSAL_PERSISTENT_VARIANT = dict(gluon_dispatch.CAUSAL_VARIANT,
                                                            persistent=True, tma_store=2)
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(20):
                fp8attn.flash_attn_func(q, k, v, causal=True)
            torch.cuda.synchronize()
            pr.disable()
            st = io.StringIO()
            pstats.Stats(pr, stream=st).sort_stats("cumulative").print_stats(22)
            print(st.getvalue()[-5000:])


if __name__ == "__main__":
    main()
