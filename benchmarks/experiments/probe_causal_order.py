"""Causal launch order on the GPU: query blocks first (grid (blocks, heads), reversed per head)
or heads first (grid (heads, blocks): every head's longest block before any shorter one).

    PYTHONPATH=. python benchmarks/experiments/probe_causal_order.py [--hdims 64,128,256]
        [--seqlens 1024,2048,4096,8192,16384] [--gluon-seqlens 4096,8192,16384] [--out F.jsonl]

FA3's benchmark setting (16k tokens, hidden 2048), causal top-left. Per shape: the tl kernel
(autotuned; triton_fwd.CAUSAL_HEADS_FIRST toggled) and, at hdim 128, the Gluon kernel
(gluon_dispatch.CAUSAL_VARIANT, heads_first toggled), each order timed twice, interleaved
(A B A B), beside FA3 FP8 causal; both orders must give the same bits. Then the Gluon kernel at
hdim 64 non-causal beside the tl kernel (session 6's child timed out after 1k). One JSON line
per result.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE)), os.path.dirname(os.path.dirname(HERE))]


def _inputs(b, h, s, d, seed):
    from fp8attn import Recipe
    from fp8attn.quant import quantize_qkv
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(b, h, s, d, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    nat = quantize_qkv(q, k, v, Recipe())
    mma = quantize_qkv(q, k, v, Recipe(), v_key_order="mma")
    return nat, mma


def _tl(q8, k8, v8, d, causal, out, heads_first):
    from fp8attn.attention import triton_fwd
    triton_fwd.CAUSAL_HEADS_FIRST = heads_first
    return triton_fwd.attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=d ** -0.5, out=out,
        causal=causal, v_key_order=v8.key_order)


def _gluon(q8, k8, v8, d, causal, out, heads_first):
    from fp8attn.attention import gluon_dispatch
    from fp8attn.attention.gluon_fwd import gluon_attention_fwd
    cfg = gluon_dispatch.VARIANT if causal is None else gluon_dispatch.CAUSAL_VARIANT
    return gluon_attention_fwd(q8.data.contiguous(), k8.data.contiguous(), v8.data, q8.descale,
                               k8.descale, v8.descale, q8.block_size,
                               gluon_dispatch._tile_block(k8.block_size),
                               gluon_dispatch._tile_block(v8.block_size), d ** -0.5, out=out,
                               block_n=gluon_dispatch.BLOCK_N, causal=causal,
                               v_key_order=v8.key_order, heads_first=heads_first, **cfg)


def _fa3(fa3, b, h, s, d, causal):
    from common import fa3_out
    g = torch.Generator(device="cuda").manual_seed(s)
    qf, kf, vf = (torch.randn(b, s, h, d, generator=g, device="cuda",
                              dtype=torch.bfloat16).to(torch.float8_e4m3fn) for _ in range(3))
    ones = torch.ones(b, h, device="cuda")
    return lambda: fa3_out(fa3.flash_attn_func(qf, kf, vf, causal=causal, q_descale=ones,
                                               k_descale=ones, v_descale=ones))


def _emit(fh, row):
    line = json.dumps(row)
    print(line, flush=True)
    if fh:
        fh.write(line + "\n")
        fh.flush()


def main():
    from common import attn_flops, bench_ms, load_fa3
    ap = argparse.ArgumentParser()
    ap.add_argument("--hdims", default="64,128,256")
    ap.add_argument("--seqlens", default="1024,2048,4096,8192,16384")
    ap.add_argument("--gluon-seqlens", default="4096,8192,16384")
    ap.add_argument("--d64-seqlens", default="1024,4096,16384")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is absent: nothing to probe here")
        return
    fh = open(a.out, "w") if a.out else None
    fa3, why = load_fa3()
    gl_seqlens = {int(x) for x in a.gluon_seqlens.split(",") if x}
    for d in (int(x) for x in a.hdims.split(",")):
        for s in (int(x) for x in a.seqlens.split(",")):
            b, h = 16384 // s, 2048 // d
            fl = attn_flops(b, h, s, s, d, True)
            (q8, k8, v8), (qm, km, vm) = _inputs(b, h, s, d, seed=s + d)
            kernels = [("tl", lambda hf, o: _tl(q8, k8, v8, d, "top_left", o, hf))]
            if d == 128 and s in gl_seqlens:
                kernels.append(("gluon", lambda hf, o: _gluon(qm, km, vm, d, "top_left", o, hf)))
            for name, fn in kernels:
                outs = {hf: torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
                        for hf in (False, True)}
                row = dict(kind="causal_order", kernel=name, hdim=d, seqlen=s, batch=b, heads=h)
                try:
                    for hf in (False, True):
                        fn(hf, outs[hf])
                    torch.cuda.synchronize()
                    row["same_bits"] = bool(torch.equal(outs[False], outs[True]))
                    for rep in (0, 1):
                        for hf in (False, True):
                            ms = bench_ms(lambda: fn(hf, outs[hf]))
                            row[f"{'heads' if hf else 'rows'}_first_{rep}"] = fl / ms * 1e-9
                except Exception as e:  # noqa: BLE001 - report and go on
                    row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
                _emit(fh, row)
            row = dict(kind="causal_order", kernel="fa3_fp8", hdim=d, seqlen=s)
            if fa3 is None:
                row["error"] = why
            else:
                row["tflops"] = fl / bench_ms(_fa3(fa3, b, h, s, d, True)) * 1e-9
            _emit(fh, row)
    for s in (int(x) for x in a.d64_seqlens.split(",") if x):
        d = 64
        b, h = 16384 // s, 2048 // d
        fl = attn_flops(b, h, s, s, d, False)
        (q8, k8, v8), (qm, km, vm) = _inputs(b, h, s, d, seed=s + d)
        row = dict(kind="d64_noncausal", hdim=d, seqlen=s)
        try:
            o_t = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
            o_g = torch.empty_like(o_t)
            _tl(q8, k8, v8, d, None, o_t, False)
            _gluon(qm, km, vm, d, None, o_g, False)
            torch.cuda.synchronize()
            row["same_bits"] = bool(torch.equal(o_t, o_g))
            row["tl"] = fl / bench_ms(lambda: _tl(q8, k8, v8, d, None, o_t, False)) * 1e-9
            row["gluon"] = fl / bench_ms(lambda: _gluon(qm, km, vm, d, None, o_g, False)) * 1e-9
            if fa3 is not None:
                row["fa3_fp8"] = fl / bench_ms(_fa3(fa3, b, h, s, d, False)) * 1e-9
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        _emit(fh, row)


if __name__ == "__main__":
    main()
