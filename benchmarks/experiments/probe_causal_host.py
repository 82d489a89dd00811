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
from common import bench_ms, graph_ms, loop_us  # noqa: E402
from fp8attn import Recipe  # noqa: E402
from fp8attn.attention import gluon_dispatch  # noqa: E402
from fp8attn.attention.triton_fwd import attention_fwd_fp8  # noqa: E402
from fp8attn.quant import quantize_qkv  # noqa: E402


def main():
    if not torch.cuda.is_available():
        print("CUDA is absent")
        return
    for s in (1024, 4096):
        b, h, d = 16384 // s, 16, 128
        g = torch.Generator(device="cuda").manual_seed(s)
        q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
        q8, k8, v8 = quantize_qkv(qh, kh, vh, Recipe(), v_key_order="mma")
        out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
        for ts in (2, 0):
            gluon_dispatch.CAUSAL_PERSISTENT_VARIANT = dict(gluon_dispatch.CAUSAL_VARIANT,
                                                            persistent=True, tma_store=ts)
            for causal in ("bottom_right", None):
                def kern():
                    return attention_fwd_fp8(
                        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                        q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                        softmax_scale=d ** -0.5, causal=causal, out=out, v_key_order="mma")

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
