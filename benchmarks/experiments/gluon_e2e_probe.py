"""Why the Gluon path's end-to-end rows trail its kernel rows (bench_attention.py --gluon,
2026-11-30: kernel 1.05x the tl kernel at 4k, end to end 0.81x): GPU time (do_bench) and host
time (wall time to issue a call, no sync) of each piece, tl kernel vs Gluon, hdim 128, 16k tokens.

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/gluon_e2e_probe.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_overhead import loop_us  # noqa: E402
from common import bench_ms  # noqa: E402

import fp8attn  # noqa: E402
from fp8attn import Recipe  # noqa: E402
from fp8attn.attention.triton_fwd import attention_fwd_fp8  # noqa: E402
from fp8attn.quant import quantize_qkv  # noqa: E402


def host_ms(fn, n=30):
    """Milliseconds of host time per call (bench_overhead.loop_us: issue n calls, no sync)."""
    return loop_us(fn, n)[0] * 1e-3


def main():
    d, h = 128, 16
    for s in (2048, 4096, 8192, 16384):
        b = 16384 // s
        g = torch.Generator(device="cuda").manual_seed(s)
        q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
        q8, k8, v8 = quantize_qkv(qh, kh, vh, Recipe())
        out_c = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
        out_v = torch.empty(b, s, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)

        def kern(out):
            return lambda: attention_fwd_fp8(
                q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                softmax_scale=d ** -0.5, out=out)

        fns = {"quantize_qkv": lambda: quantize_qkv(qh, kh, vh, Recipe()),
               "kernel_out_bhsd": kern(out_c), "kernel_out_bshd_view": kern(out_v),
               "e2e_flash_attn_func": lambda: fp8attn.flash_attn_func(q, k, v)}
        for gl in ("0", "1"):
            os.environ["FP8ATTN_GLUON"] = gl
            for name, fn in fns.items():
                if name == "quantize_qkv" and gl == "1":
                    continue
                row = dict(seqlen=s, batch=b, gluon=gl == "1", what=name,
                           gpu_ms=bench_ms(fn), host_ms=host_ms(fn))
                print(json.dumps(row), flush=True)
            if s == 4096:   # which kernels one end-to-end call runs, and for how long
                from torch.profiler import ProfilerActivity, profile
                fn = fns["e2e_flash_attn_func"]
                fn()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        fn()
                    torch.cuda.synchronize()
                print(f"FP8ATTN_GLUON={gl}")
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10,
                                                max_name_column_width=50))


def host_profile():
    """cProfile of 300 kernel-only launches at seqlen 4096, tl kernel then Gluon: where the
    Gluon launch's extra host time goes."""
    import cProfile
    import pstats
    d, h, s, b = 128, 16, 4096, 4
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    q8, k8, v8 = quantize_qkv(q, k, v, Recipe())
    out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)

    def call():
        attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                          q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                          softmax_scale=d ** -0.5, out=out)
    for gl in ("0", "1"):
        os.environ["FP8ATTN_GLUON"] = gl
        call()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            call()
        prof.disable()
        torch.cuda.synchronize()
        print(f"FP8ATTN_GLUON={gl}: host {host_ms(call, 100):.3f} ms per call")
        pstats.Stats(prof).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    if "--host" in sys.argv:
        host_profile()
    else:
        main()
