"""Variable-length batches (`flash_attn_varlen_func`), ours beside FA3's varlen calls in the same
run, and the same tokens as one dense call beside them. Since session 35 the dispatch sends
head-dim-128 varlen calls to the Gluon kernel (80 / 96 / 112 since session 37); the ours_tl row
keeps them on the Triton kernel (the path before), so the two are read in the same run.

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/probe_varlen.py [--json out.json]
        [--head-dim 96]

Cases (hdim 128 unless --head-dim, 16 query / key-value heads, bf16 randn, about 16k packed tokens), causal and not:
  uniform   8 sequences of 2048 (the dense comparison is exact: (8, 2048, 16, 128))
  mixed     lengths drawn uniformly from 256..4096 (seeded) until 16k tokens
Rows (TFLOP/s of the sequences' own FLOPs: the sum of 4 * H * s^2 * D, halved causal):
  ours          fp8attn.flash_attn_varlen_func on the bf16 inputs (rotate + quantise + attend;
                K / V starts padded to the scale blocks, the default since session 31)
  ours_plain    the same with the Gluon kernel's varlen variants storing every output row with
                plain stores (tma_store=0; the default stores a warpgroup's full rows by TMA)
  ours_static   the same with the items in the static order pid, pid + grid, ... (dynamic=False;
                the dispatch hands them out as CTAs come free: causal since session 36,
                non-causal since session 37)
  ours_static_q1  the static order with one Q buffer (session 36's non-causal dispatch)
  ours_q1       the same as ours with one Q buffer (the dispatch has two)
  ours_tl       the same on the Triton kernel (gluon_dispatch.reason refusing varlen calls, so
                V^T is quantised in natural order, as before session 35)
  ours_packed   (--packed) the same with FP8ATTN_VARLEN_ALIGN=0 (K / V packed as given;
                session 30's "ours" row, when its "ours_aligned" row was the padded form)
  ours_dense    fp8attn.flash_attn_func on the dense batch (uniform only)
  ours_fp8      fp8attn.flash_attn_varlen_func on the e4m3 casts with descales of one (since
                session 32: K / V copied into the padded layout, then the kernel)
  fa3_fp8       FA3's varlen call on e4m3 casts of the inputs, descales of one (kernel only)
  fa3_bf16      FA3's varlen call in bf16
Each with do_bench (host time included) and, where the call can be captured in a CUDA graph, GPU
time ("_gpu"; our varlen call captures since session 31); ratios "a/b" of do_bench, "a/b_gpu"
of GPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import (bench_ms, cuda_absent, fa3_out, graph_bench_ms, load_fa3,  # noqa: E402
                    write_json)

import fp8attn  # noqa: E402

H, D, TOTAL = 16, 128, 16384


def lengths(case: str) -> list[int]:
    if case == "uniform":
        return [2048] * 8
    g = torch.Generator().manual_seed(0)
    out, n = [], 0
    while n < TOTAL:                    # the last sequence takes what is left
        s = min(int(torch.randint(256, 4097, (1,), generator=g)), TOTAL - n)
        out.append(s)
        n += s
    return out


def packed(fn):
    """fn with FP8ATTN_VARLEN_ALIGN=0 (K / V packed as given: per-column descales)."""
    def run():
        os.environ["FP8ATTN_VARLEN_ALIGN"] = "0"
        try:
            return fn()
        finally:
            os.environ.pop("FP8ATTN_VARLEN_ALIGN")
    return run


def on_tl_kernel(fn):
    """fn with the Gluon dispatch refusing varlen calls (the Triton kernel, natural-order V^T)."""
    from fp8attn.attention import gluon_dispatch
    real = gluon_dispatch.reason

    def refuse_varlen(**kw):
        return "varlen off (probe)" if kw.get("varlen") else real(**kw)

    def run():
        gluon_dispatch.reason = refuse_varlen
        try:
            return fn()
        finally:
            gluon_dispatch.reason = real
    return run


def plain_stores(fn, **change):
    """fn with the Gluon kernel's varlen variants on plain stores only (tma_store=0), or
    changed by `change`."""
    from fp8attn.attention import gluon_dispatch as gd
    real = gd.VARIANT_VARLEN, gd.VARIANT_VARLEN_CAUSAL
    change = change or dict(tma_store=0)

    def run():
        gd.VARIANT_VARLEN, gd.VARIANT_VARLEN_CAUSAL = (dict(v, **change) for v in real)
        try:
            return fn()
        finally:
            gd.VARIANT_VARLEN, gd.VARIANT_VARLEN_CAUSAL = real
    return run


def timed(fn) -> tuple[float, float | None]:
    ms = bench_ms(fn)
    try:
        gpu = graph_bench_ms(fn)
    except Exception:  # noqa: BLE001 - a call that cannot be captured has no GPU-time reading
        gpu = None
    return ms, gpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--packed", action="store_true", help="also the packed K / V form")
    ap.add_argument("--head-dim", type=int, default=D, help="e.g. 96 (Phi-3's)")
    a = ap.parse_args()
    d = a.head_dim
    if cuda_absent():
        return
    fa3, why = load_fa3()
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; fa3: {why or 'ok'}")
    rows = []
    for case in ("uniform", "mixed"):
        lens = lengths(case)
        cu = torch.tensor([0] + lens, device="cuda", dtype=torch.int32).cumsum(0, dtype=torch.int32)
        total, mx = int(cu[-1]), max(lens)
        g = torch.Generator(device="cuda").manual_seed(len(lens))
        q, k, v = (torch.randn(total, H, d, generator=g, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
        one = torch.ones(len(lens), H, device="cuda", dtype=torch.float32)
        for causal in (False, True):
            flops = sum(4.0 * H * s * s * d for s in lens) / (2 if causal else 1)
            def ours():
                return fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, mx, mx, causal=causal)
            calls = {"ours": ours, "ours_plain": plain_stores(ours),
                     "ours_static": plain_stores(ours, dynamic=False),
                     "ours_static_q1": plain_stores(ours, dynamic=False, q_bufs=1),
                     "ours_q1": plain_stores(ours, q_bufs=1),
                     "ours_tl": on_tl_kernel(ours)}
            if a.packed:
                calls["ours_packed"] = packed(ours)
            if case == "uniform":
                qd, kd, vd = (x.view(len(lens), lens[0], H, d) for x in (q, k, v))
                calls["ours_dense"] = lambda: fp8attn.flash_attn_func(qd, kd, vd, causal=causal)
            # pre-quantised inputs (session 32): K / V copied into the padded layout, then the
            # kernel; FA3's descale shape (nseq, heads)
            calls["ours_fp8"] = lambda: fp8attn.flash_attn_varlen_func(
                q8, k8, v8, cu, cu, mx, mx, causal=causal, q_descale=one, k_descale=one,
                v_descale=one)
            if fa3 is not None:
                calls["fa3_fp8"] = lambda: fa3_out(fa3.flash_attn_varlen_func(
                    q8, k8, v8, cu, cu, mx, mx, causal=causal, q_descale=one, k_descale=one,
                    v_descale=one))
                calls["fa3_bf16"] = lambda: fa3_out(fa3.flash_attn_varlen_func(
                    q, k, v, cu, cu, mx, mx, causal=causal))
            row = dict(case=case, nseq=len(lens), total=total, max_seqlen=mx, causal=causal,
                       head_dim=d)
            for name, fn in calls.items():
                ms, gpu = timed(fn)
                row[name] = round(flops / ms * 1e-9, 1)
                row[name + "_gpu"] = None if gpu is None else round(flops / gpu * 1e-9, 1)
            for peer in ("fa3_fp8", "fa3_bf16", "ours_dense", "ours_tl", "ours_static"):
                for mine in ("ours", "ours_plain", "ours_static", "ours_static_q1", "ours_q1",
                             "ours_packed", "ours_fp8"):
                    for sfx in ("", "_gpu"):
                        if row.get(peer + sfx) and row.get(mine + sfx) and mine != peer:
                            row[f"{mine}/{peer}{sfx}"] = round(row[mine + sfx] / row[peer + sfx],
                                                               3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
