"""Host time of the package's own Python in a public call, on a CPU-only machine: Triton's
interpreter takes the Triton path (FP8ATTN_BACKEND=triton) and every kernel launch is replaced
by a stub that only counts it, so no kernel runs (the outputs are garbage). What is left is
the argument checks, the dispatch decisions and the allocations: the part of a GPU call's
host time that this machine can measure. Triton's launcher, the CUDA allocator and the Gluon
kernel's TMA descriptors are not in it (the H200's host: 0.44-0.61 ms a dense bf16 call in
session 38, `probe_host_time.py`).

    PYTHONPATH=$PWD python benchmarks/experiments/probe_host_python.py [--head-dim 128]
        [--package DIR] [--profile tottime|cumulative]

With call plans (fp8attn/call_plan.py, on by default since session 39) the stubbed launches
are not recorded, so a planned call here is its checks, key and allocations: 30-37 us a
call against 130-136 us with FP8ATTN_PLAN=0 (session 39, this machine).

Session 38 (a 2-core CPU machine, (1, 1024, 16, 128) causal flash_attn_func, alternating
processes): 116-148 us a call with two launches; the tree before Q, K and V shared a launch
(991f52d) 125-134 us with three: the same within this machine's noise. Head dim 96: 157 us,
four launches.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--package", help="a folder holding the fp8attn to import")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--profile", choices=["tottime", "cumulative"])
    ap.add_argument("--varlen", action="store_true",
                    help="flash_attn_varlen_func on the same tokens as one sequence (on the CPU "
                         "its offsets are read and checked every call; on CUDA once)")
    ap.add_argument("--inference-mode", action="store_true",
                    help="make the inputs and run the calls under torch.inference_mode, as "
                         "serving stacks do")
    a = ap.parse_args()
    os.environ["TRITON_INTERPRET"] = "1"            # before triton is imported
    os.environ["FP8ATTN_BACKEND"] = "triton"
    os.environ.setdefault("FP8ATTN_TUNE", "minimal")
    if a.package:
        sys.path.insert(0, a.package)
    import torch
    import fp8attn
    from fp8attn import kernel_launch
    launches = [0]

    def stub(kernel, grid, *args, **kwargs):
        launches[0] += 1
    kernel_launch.launch_call = stub                # every module calls it through the module
    mode = torch.inference_mode if a.inference_mode else torch.no_grad
    with mode():
        q, k, v = (torch.randn(1, 1024, 16, a.head_dim, dtype=torch.bfloat16) for _ in range(3))
        cu = torch.tensor([0, 1024], dtype=torch.int32)

    def call():
        if a.varlen:
            return fp8attn.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, 1024, 1024,
                                                  causal=True)
        return fp8attn.flash_attn_func(q, k, v, causal=True)
    with mode():
        for _ in range(10):
            call()
        launches[0] = 0
        t0 = time.perf_counter()
        for _ in range(a.calls):
            call()
        us = (time.perf_counter() - t0) / a.calls * 1e6
        print(f"fp8attn from {os.path.dirname(fp8attn.__file__)}: head dim {a.head_dim}, "
              f"{us:.1f} us of host time a call, {launches[0] / a.calls:.1f} launches a call")
        if a.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(300):
                call()
            prof.disable()
            pstats.Stats(prof).sort_stats(a.profile).print_stats(25)


if __name__ == "__main__":
    main()
