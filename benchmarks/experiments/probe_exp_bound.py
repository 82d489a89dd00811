"""How much of the Gluon kernel's time is the exponentials of P? (session 13 planning probe)

    PYTHONPATH=. python benchmarks/experiments/probe_exp_bound.py [--json out.json]

Times the non-causal Gluon kernel at FA3's setting (16k tokens, hidden 2048) twice, each in a
subprocess of its own: as it is, and with _softmax's exp2 of the scores left out (p = the
exponent itself; results meaningless, the instruction stream otherwise the same). The ratio
bounds what moving exponentials off the MUFU unit (FA4's polynomial exp2 on the FMA pipe)
could gain. CUDA-graph timings (common.graph_ms)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]

CASES = [(128, 16384, "VARIANT_LONG"), (64, 16384, "pingpong_ovl_u2_s3")]


def _patch_no_exp():
    """Replace gluon_fwd._softmax by a copy whose P skips gl.exp2 (before any compile)."""
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from fp8attn.attention import gluon_fwd

    @gluon.jit
    def _softmax(qk, m_i, l_i, row_scale, start_n, seqlen_k, MASKED: gl.constexpr,
                 BLOCK_N: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr, row_lo=0,
                 causal_off=0, CAUSAL: gl.constexpr = 0):
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                           instr_shape=[16, BLOCK_N, 32])
        if MASKED:
            cols = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
            qk = gl.where(gl.expand_dims(cols < seqlen_k, 0), qk, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(qk, 1) * row_scale)
        m_use = m_new
        alpha = gl.exp2(m_i - m_use)
        p = gl.maximum(qk * gl.expand_dims(row_scale, 1) - gl.expand_dims(m_use - P_SHIFT, 1),
                       -100.0)
        l_i = l_i * alpha + gl.sum(p, 1)
        return p, m_new, l_i, alpha

    gluon_fwd._softmax = _softmax


def _child(mode):
    import torch
    from common import attn_flops, graph_ms
    from fp8attn import Recipe
    from fp8attn.attention import gluon_dispatch
    from fp8attn.attention.gluon_fwd import VARIANTS, gluon_attention_fwd
    from fp8attn.quant import quantize_qkv
    if mode == "no_exp":
        _patch_no_exp()
    rows = []
    for d, s, vname in CASES:
        variant = getattr(gluon_dispatch, vname, None) or VARIANTS[vname]
        b, h = 16384 // s, 2048 // d
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(b, h, s, d, generator=g, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        q8, k8, v8 = quantize_qkv(q, k, v, Recipe(), v_key_order="mma")
        out = torch.empty_like(q)

        def call():
            gluon_attention_fwd(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                                q8.block_size, k8.block_size, v8.block_size, d ** -0.5, out=out,
                                v_key_order="mma", **variant)
        ms = graph_ms(call)
        rows.append(dict(mode=mode, head_dim=d, seqlen=s, variant=vname, ms=ms,
                         tflops=attn_flops(b, h, s, s, d, False) / ms / 1e9))
        print(json.dumps(rows[-1]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=int, default=150)
    a = ap.parse_args()
    if a.child:
        return _child(a.child)
    import torch
    if not torch.cuda.is_available():
        print("no CUDA: nothing to time")
        return
    rows = []
    for mode in ("as_is", "no_exp"):
        try:
            r = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True,
                               text=True, timeout=a.timeout)
            got = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
            rows += got
            if r.returncode:
                print(mode, "failed:", r.stderr[-1500:])
        except subprocess.TimeoutExpired:
            print(mode, "timed out")
    base = {(r["head_dim"], r["seqlen"]): r["ms"] for r in rows if r["mode"] == "as_is"}
    for r in rows:
        key = (r["head_dim"], r["seqlen"])
        ratio = base[key] / r["ms"] if key in base else float("nan")
        print(f"hdim {r['head_dim']} seqlen {r['seqlen']} {r['mode']:7s} {r['tflops']:7.1f} "
              f"TFLOP/s ({ratio:.3f}x as_is)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
