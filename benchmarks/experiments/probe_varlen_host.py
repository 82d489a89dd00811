"""Host time of a varlen call (session 32: 8 x 2048 packed tokens, hdim 128, 16 heads, bf16:
2.26 ms wall a call for 0.62 ms of GPU work, probe_varlen_profile.py). Per call: host (issue
time of a loop, common.loop_us; the call reads cu_seqlens on the host, so it waits for the GPU
each time), wall, GPU (one-call CUDA graph); then a cProfile of 50 calls, by own time and
fp8attn's functions by cumulative time. The same for the tokens as one dense call, and (since
session 35, when varlen calls went to the Gluon kernel) on the Triton kernel; causal and not.

    PYTHONPATH=$PWD python benchmarks/experiments/probe_varlen_host.py
"""
import cProfile
import io
import os
import pstats
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]

import fp8attn  # noqa: E402
from common import graph_ms, loop_us  # noqa: E402
from probe_varlen import on_tl_kernel  # noqa: E402

H, D, N, S = 16, 128, 8, 2048


def profile(name, fn, calls=50):
    host, wall = loop_us(fn, n=50)
    gpu = graph_ms(fn, calls=1, replays=7) * 1e3
    print(f"== {name}: host {host:.0f} us, wall {wall:.0f} us, GPU {gpu:.0f} us a call",
          flush=True)
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(22)
    st.sort_stats("cumulative").print_stats("fp8attn", 30)
    print("\n".join(line for line in buf.getvalue().splitlines() if line.strip()), flush=True)


def main():
    torch.manual_seed(0)
    q, k, v = (torch.randn(N * S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.arange(0, N * S + 1, S, device="cuda", dtype=torch.int32)
    qd, kd, vd = (x.view(N, S, H, D) for x in (q, k, v))
    with torch.no_grad():
        for causal in (False, True):
            def varlen():
                return fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, S, S, causal=causal)
            profile(f"varlen causal={causal}", varlen)
            # session 35: the same call on the Triton kernel (its path before that session)
            profile(f"varlen (Triton kernel) causal={causal}", on_tl_kernel(varlen))
            profile(f"dense causal={causal}", lambda: fp8attn.flash_attn_func(
                qd, kd, vd, causal=causal))


if __name__ == "__main__":
    main()
