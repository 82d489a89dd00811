"""Host (CPU) time per call of the public functions against their GPU time, on a CUDA GPU.

At short sequences an attention call's Python work (checks, dispatch, three quantiser launches and
the kernel launch) can take longer than the GPU work it queues; then every timing of the call,
do_bench's included, measures the host. For each shape this prints:
  host us  per call, from a loop of N calls without synchronisation (the GPU queue never empties
           when host time < GPU time, so this is the host's cost);
  gpu us   the same calls replayed from a CUDA graph (no host work at all);
  wall us  per call of the same loop waited for (what a caller sees: the larger of the two);
  compiled wall us  the same for torch.compile(mode="reduce-overhead") of the call (Inductor
           replays it from a CUDA graph; compile and warm-up calls not counted);
and the top functions of a cProfile of the host loop for the first shape (--profile: another
shape, e.g. 4,4096,16,128,causal; by own time, then fp8attn's functions by cumulative time).

    PYTHONPATH=. python3 benchmarks/bench_overhead.py [--out DIR] [--profile B,S,H,D[,causal]]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, graph_ms, loop_us  # noqa: E402

import fp8attn  # noqa: E402

# (batch, seqlen, heads, head_dim): decode-ish and prefill-ish shapes, and the benchmark's 1024
SHAPES = [(1, 128, 32, 128), (4, 512, 32, 128), (16, 1024, 16, 128), (4, 4096, 16, 128)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", default=",".join(map(str, SHAPES[0])))
    args = ap.parse_args()
    pf = args.profile.split(",")
    prof_shape, prof_causal = tuple(int(x) for x in pf[:4]), pf[4:] == ["causal"]
    rows = []
    prof_text = ""
    for i, (b, s, h, d) in enumerate(SHAPES):
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for causal in (False, True):
            def fn():
                return fp8attn.flash_attn_func(q, k, v, causal=causal)
            compiled = torch.compile(
                lambda a, b_, c, causal=causal: fp8attn.flash_attn_func(a, b_, c, causal=causal),
                mode="reduce-overhead", fullgraph=True)
            host, wall = loop_us(fn)
            row = dict(shape=[b, s, h, d], causal=causal, host_us=host, wall_us=wall,
                       gpu_us=graph_ms(fn, calls=50, replays=1, warmup=3) * 1e3,
                       compiled_wall_us=loop_us(lambda: compiled(q, k, v))[1])
            rows.append(row)
            print(f"{(b, s, h, d)} causal={causal}: host {row['host_us']:.0f} us, "
                  f"gpu {row['gpu_us']:.0f} us, wall {row['wall_us']:.0f} us, compiled "
                  f"(reduce-overhead) wall {row['compiled_wall_us']:.0f} us", flush=True)
        if (b, s, h, d) == prof_shape:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(200):
                fp8attn.flash_attn_func(q, k, v, causal=prof_causal)
            pr.disable()
            torch.cuda.synchronize()
            buf = io.StringIO()
            buf.write(f"cProfile of 200 calls, {prof_shape} causal={prof_causal}\n")
            stats = pstats.Stats(pr, stream=buf)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats("fp8attn", 30)
            prof_text = buf.getvalue()
    print(prof_text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_overhead.json"), "w") as f:
            json.dump(dict(env=environment(), rows=rows, profile=prof_text), f, indent=1)


if __name__ == "__main__":
    main()
