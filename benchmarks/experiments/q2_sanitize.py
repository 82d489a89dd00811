"""One causal head-dim-256 call of the two-Q-buffer persistent form, for compute-sanitizer. In
session 24 (the miscompile, see q2_causal_diag.py; worked around in the kernel since session
25) it found the cause on the shape that ended in an illegal memory access (one work item a
CTA); the other shape gave wrong rows (several items a CTA). With TRITON_CACHE_DIR set,
the kernel's cubin lands there, for cuobjdump to read the faulting SASS offset.

    compute-sanitizer --tool memcheck python benchmarks/experiments/q2_sanitize.py --shape crash
    compute-sanitizer --tool racecheck python benchmarks/experiments/q2_sanitize.py --shape rows
"""
from __future__ import annotations

import argparse

import torch

from fp8attn.attention import gluon_fwd
from q2_causal_diag import E, quantized

SHAPES = {"crash": (1, 8, 8, 2048, 2048), "rows": (1, 4, 2, 4500, 4200)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=tuple(SHAPES), default="crash")
    ap.add_argument("--q-bufs", type=int, default=2)
    args = ap.parse_args()
    b, hq, hkv, sq, sk = SHAPES[args.shape]
    q8, k8, v8 = quantized(b, hq, hkv, sq, sk, seed=sq + 13 * sk)
    out = gluon_fwd.gluon_attention_fwd(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q8.block_size,
        k8.block_size, v8.block_size, 256 ** -0.5, causal="top_left", v_key_order="mma",
        **dict(gluon_fwd.VARIANTS[E], q_bufs=args.q_bufs))
    torch.cuda.synchronize()
    print("done", args.shape, "q_bufs", args.q_bufs, "nan", bool(out.isnan().any()), flush=True)


if __name__ == "__main__":
    main()
