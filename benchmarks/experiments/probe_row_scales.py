"""Probe (GPU): per-row scales chosen by a search over candidate scales, for Q and K.

e4m3 is a float format, so the relative rounding error of a row hardly depends on its scale on
average, but for one 128-element row it does vary with the scale (which values fall near a grid
point). Trying n candidate scales amax/448 * 2**(j/n), j < n, per row and keeping the one with the
least squared error lowers the rounding error of Q and K; the kernel then needs per-row Q
descales (free: it already scales rows) and, for K, per-column descales (K_MODE 2: one more
multiply per score). This probe measures (1) the accuracy on FA3's outlier data with the package
kernel, (2) the kernel's speed with per-row Q / K descales vs the default block descales, beside
FA3 FP8. Scales are searched in torch here (not the package quantiser).

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/probe_row_scales.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import os

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import attn_flops, bench_ms, fa3_accuracy_inputs, fa3_out, load_fa3  # noqa: E402

from fp8attn import Recipe  # noqa: E402
from fp8attn.attention.reference import attention_oracle  # noqa: E402
from fp8attn.attention.triton_fwd import attention_fwd_fp8  # noqa: E402
from fp8attn.hadamard.reference import hadamard_signs, random_hadamard_reference  # noqa: E402
from fp8attn.quant import quantize_qkv  # noqa: E402


def search_rows(y: torch.Tensor, n: int, terms: int = 1):
    """Per-row e4m3 of y (fp32, (..., S, D)): best of n scales. Returns q8, q_lo|None, descale (..., S)."""
    amax = y.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    best_err = best_s = None
    for j in range(n):
        s = amax / 448.0 * 2.0 ** (j / n)
        e = ((y / s).to(torch.float8_e4m3fn).float() * s - y).pow(2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best_s = e, s
        else:
            m = e < best_err
            best_err, best_s = torch.where(m, e, best_err), torch.where(m, s, best_s)
    z = y / best_s
    q8 = z.to(torch.float8_e4m3fn)
    lo = (z - q8.float()).to(torch.float8_e4m3fn) if terms == 2 else None
    return q8.contiguous(), lo, best_s.squeeze(-1).contiguous()


def variants(q, k, v, n_list):
    """q, k, v (B, H, S, D) bf16/fp32 -> {name: (q8, q_lo, qd, q_block, k8, kd, k_block, v8)}."""
    d = q.shape[-1]
    q8d, k8d, v8d = quantize_qkv(q, k, v, Recipe())
    q82 = quantize_qkv(q, k, v, Recipe(q_terms=2))[0]
    base = dict(v8=v8d)
    out = {"default": dict(q8=q8d.data, q_lo=None, qd=q8d.descale, qb=q8d.block_size,
                           k8=k8d.data, kd=k8d.descale, kb=k8d.block_size, **base),
           "q_terms2": dict(q8=q82.data, q_lo=q82.residual, qd=q82.descale, qb=q82.block_size,
                            k8=k8d.data, kd=k8d.descale, kb=k8d.block_size, **base)}
    signs = hadamard_signs(d, 0, q.device)
    qr, kr = (random_hadamard_reference(x.float(), signs).float() for x in (q, k))
    for n in n_list:
        q8, _, qd = search_rows(qr, n)
        k8, _, kd = search_rows(kr, n)
        out[f"q_row{n}"] = dict(q8=q8, q_lo=None, qd=qd, qb=1, k8=k8d.data, kd=k8d.descale,
                                kb=k8d.block_size, **base)
        out[f"qk_row{n}"] = dict(q8=q8, q_lo=None, qd=qd, qb=1, k8=k8, kd=kd, kb=1, **base)
    q8, lo, qd = search_rows(qr, 1, terms=2)
    k8, _, kd = search_rows(kr, 16)
    out["q_terms2_k_row16"] = dict(q8=q8, q_lo=lo, qd=qd, qb=1, k8=k8, kd=kd, kb=1, **base)
    return out


def run(vv, d, causal, out=None):
    v8 = vv["v8"]
    return attention_fwd_fp8(vv["q8"], vv["k8"], v8.data, vv["qd"], vv["kd"], v8.descale,
                             q_block=vv["qb"], k_block=vv["kb"], v_block=v8.block_size,
                             softmax_scale=d ** -0.5, causal=causal, out=out, q_lo=vv["q_lo"])


def accuracy(log):
    q, k, v = fa3_accuracy_inputs()   # the same draw as bench_attention.py's accuracy()
    res = {}
    for causal in (None, "top_left"):
        ref = attention_oracle(q, k, v, causal=causal)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        for name, vv in variants(qb, kb, vb, (1, 4, 16, 64)).items():
            o = run(vv, 128, causal)
            res[f"{name}_{'causal' if causal else 'non_causal'}"] = (
                (o.double() - ref).pow(2).mean().sqrt().item())
    log(json.dumps(res))
    return res


def speed(log, hdims, seqlens):
    fa3, why = load_fa3()
    log(f"fa3: {why or 'ok'}")
    rows = []
    for d in hdims:
        for s in seqlens:
            b, h = 16384 // s, 2048 // d
            g = torch.Generator(device="cuda").manual_seed(s + d)
            q, k, v = (torch.randn(b, h, s, d, generator=g, device="cuda", dtype=torch.bfloat16)
                       for _ in range(3))
            vs = variants(q, k, v, (16,))
            vs = {n: vs[n] for n in ("default", "q_row16", "qk_row16", "q_terms2")}
            ones = torch.ones(b, h, device="cuda")
            qf, kf, vf = (x.transpose(1, 2).contiguous().to(torch.float8_e4m3fn) for x in (q, k, v))
            for causal in (False, True):
                c = "bottom_right" if causal else None
                out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
                row = dict(hdim=d, seqlen=s, causal=causal)
                fl = attn_flops(b, h, s, s, d, causal)
                for name, vv in vs.items():
                    row[name] = round(fl / bench_ms(lambda vv=vv: run(vv, d, c, out)) * 1e-9, 1)
                if fa3 is not None:
                    row["fa3_fp8"] = round(fl / bench_ms(lambda: fa3_out(fa3.flash_attn_func(
                        qf, kf, vf, causal=causal, q_descale=ones, k_descale=ones,
                        v_descale=ones))) * 1e-9, 1)
                log(json.dumps(row))
                rows.append(row)
            del q, k, v, vs, qf, kf, vf
            torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--hdims", default="128,256,64")
    ap.add_argument("--seqlens", default="1024,4096,16384")
    args = ap.parse_args()
    log = lambda m: print(m, flush=True)  # noqa: E731
    log(torch.cuda.get_device_name())
    res = {"accuracy": accuracy(log)}
    res["speed"] = speed(log, [int(x) for x in args.hdims.split(",")],
                         [int(x) for x in args.seqlens.split(",")])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
