"""Where the time of a varlen call goes (session 30: flash_attn_varlen_func ran at 0.12-0.18x FA3
BF16, probe_varlen.py): wall time a call (synchronised), and the CUDA kernels of one call from
torch.profiler, for the varlen call on 8 x 2048 packed tokens beside the same tokens as a dense
call on the Triton kernel (FP8ATTN_GLUON=0) and on the dispatch, and (session 33) the varlen
call on pre-quantised e4m3 inputs. hdim 128, 16 heads, bf16.

    PYTHONPATH=$PWD python benchmarks/experiments/probe_varlen_profile.py
"""
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

import fp8attn

H, D, N, S = 16, 128, 8, 2048


def report(name, fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / 10 * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    kernels = [(e.key, e.device_time_total / 1e3, e.count) for e in p.key_averages()
               if e.device_time_total > 0 and not e.key.startswith(("aten::", "cuda"))]
    kernels.sort(key=lambda x: -x[1])
    print(f"== {name}: wall {wall:.3f} ms a call (10 calls, synchronised)")
    for k, ms, n in kernels[:8]:
        print(f"   {ms:8.3f} ms  x{n}  {k[:110]}")


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(N * S, H, D, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    cu = torch.arange(0, N * S + 1, S, device="cuda", dtype=torch.int32)
    dense = [x.view(N, S, H, D) for x in (q, k, v)]
    report("varlen", lambda: fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, S, S))
    # session 33: pre-quantised inputs (K / V packed into the padded layout, then the kernel)
    q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
    one = torch.ones(N, H, device="cuda")
    report("varlen fp8 inputs", lambda: fp8attn.flash_attn_varlen_func(
        q8, k8, v8, cu, cu, S, S, q_descale=one, k_descale=one, v_descale=one))
    report("dense (dispatch)", lambda: fp8attn.flash_attn_func(*dense))
    os.environ["FP8ATTN_GLUON"] = "0"
    report("dense (Triton kernel)", lambda: fp8attn.flash_attn_func(*dense))


if __name__ == "__main__":
    main()
