"""Where the FP8 recipe's error comes from, on the CPU: quantise one operand at a time.

On the FA3 outlier distribution (float64 oracle), attention is evaluated with each of Q, K, V and P
in FP8 or exact, using the package's quantiser (block scales, Hadamard rotation of Q and K) and a
one-pass softmax (P cast to e4m3 after the FA3 shift). Errors from independent sources add in
energy (RMSE^2), so the "only X in FP8" rows give each source's share. Then two ways to spend more
work for accuracy: QK scales per token, and a two-term Q (q8 + an FP8 residual: one more QK MMA).
Last, the package's own FP8 path (fp8_flash_emulation, the kernel's numerics) with Recipe(q_terms=1)
and Recipe(q_terms=2) on the same inputs rounded to --dtype (bf16: what the issue's figure uses).

    PYTHONPATH=. python3 benchmarks/error_budget.py [--batch 1] [--heads 4] [--seqlen 2048]
        [--seed 0] [--dtype bfloat16]          (the issue's shape: --batch 2 --heads 16)
"""
from __future__ import annotations

import argparse
import math

import torch

from fp8attn.analysis.inputs import fa3_outliers
from fp8attn.attention.reference import attention_oracle, fp8_flash_emulation
from fp8attn.analysis.metrics import rmse
from fp8attn.formats import P_SHIFT
from fp8attn.hadamard.reference import hadamard_signs, random_hadamard_reference
from fp8attn.quant.reference import quantize_reference
from fp8attn.recipe import Recipe


def fp8(x: torch.Tensor, granularity: str = "block") -> torch.Tensor:
    """x rounded through e4m3 with the package's scales, back in float32."""
    return quantize_reference(x, "e4m3", granularity, 128).dequantize().float()


def attend(q, k, v, scale: float, p_fp8: bool) -> torch.Tensor:
    """softmax(q k^T * scale) v in float32; P cast to e4m3 as the kernel does (shifted by 2**8)."""
    s = (q @ k.transpose(-1, -2)) * (scale / math.log(2.0))
    p = torch.exp2(s - s.amax(-1, keepdim=True) + P_SHIFT["e4m3"])
    l = p.sum(-1, keepdim=True)
    if p_fp8:
        p = p.to(torch.float8_e4m3fn).float()
    return (p @ v) / l


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                    help="input dtype of the package-emulation rows")
    args = ap.parse_args()
    d = 128
    q, k, v = fa3_outliers(args.batch, args.heads, args.seqlen, d, seed=args.seed)
    scale = d ** -0.5
    ref = torch.softmax((q.double() @ k.double().transpose(-1, -2)) * scale, -1) @ v.double()
    signs = hadamard_signs(d, 0)
    qr, kr = (random_hadamard_reference(x, signs).float() for x in (q, k))
    q8, k8, v8 = fp8(qr), fp8(kr), fp8(v)
    q_res = q8 + fp8(qr - q8)
    rows = [
        ("all in FP8 (the recipe)", attend(q8, k8, v8, scale, True)),
        ("only Q and K in FP8", attend(q8, k8, v, scale, False)),
        ("only V in FP8", attend(qr, kr, v8, scale, False)),
        ("only P in FP8", attend(qr, kr, v, scale, True)),
        ("all in FP8, QK scales per token",
         attend(fp8(qr, "token"), fp8(kr, "token"), v8, scale, True)),
        ("all in FP8, two-term Q (+1 QK MMA)", attend(q_res, k8, v8, scale, True)),
        ("all in FP8, two-term Q and K (+2 QK MMAs)",
         attend(q_res, k8 + fp8(kr - k8), v8, scale, True)),
    ]
    print(f"FA3 outliers, ({args.batch}, {args.heads}, {args.seqlen}, {d}), seed {args.seed}; "
          f"oracle output RMS {ref.pow(2).mean().sqrt().item():.3f}")
    total = rmse(rows[0][1], ref) ** 2
    print("| case | RMSE | share of the recipe's error energy |")
    print("|---|---|---|")
    for name, out in rows:
        e = rmse(out, ref)
        share = f"{e ** 2 / total:.0%}" if name.startswith("only") else ""
        print(f"| {name} | {e:.2e} | {share} |")
    # the package's FP8 path on the inputs in args.dtype, oracle on the same rounded inputs
    ql, kl, vl = (x.to(getattr(torch, args.dtype)) for x in (q, k, v))
    ref_l = attention_oracle(ql, kl, vl)
    for q_terms in (1, 2):
        out = fp8_flash_emulation(ql, kl, vl, recipe=Recipe(q_terms=q_terms))
        print(f"| fp8_flash_emulation, {args.dtype} in, Recipe(q_terms={q_terms}) "
              f"| {rmse(out, ref_l):.2e} | |")


if __name__ == "__main__":
    main()
