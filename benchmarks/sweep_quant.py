"""Variants of the fused rotate + quantise kernel, each checked bit for bit and timed on the GPU.

For bf16 (4, 32, 8192, 128) inputs (a few NaN / Inf planted), the cases rotate + quantise e4m3 with
block-128 and token scales, and quantise-only with V stored transposed; every variant (kernel layout,
software or hardware FP8 rounding, store path, forced launch config) is compared with
quantize_reference on the same input (descales equal, FP8 bytes equal, NaN where the reference has
NaN) and timed (triton.testing.do_bench median) against a torch copy of the same bytes:

    PYTHONPATH=. python3 benchmarks/sweep_quant.py --out results/

`exact` needs the descales bit-equal to the torch reference's too, which no variant reaches on the GPU
(2026-11-22, H200): torch's CUDA division by the scalar fp8_max multiplies by its reciprocal, at
times 1 ulp off the kernel's division (within the tests' 1e-6); n_data_diff counts FP8 bytes that
differ (NaN = NaN; the software rounding writes +0 where torch writes -0).

Writes sweep_quant.json under --out (rows appended as they finish; a --budget in seconds stops
starting new variants, so a time-limited run still returns what it measured). --profile 'case:name;..'
launches just those variants (for ncu: `ncu --clock-control none -k regex:pairs_kernel ...`).

"P ..." variants are `_pairs_kernel` (fp8attn.quant.triton_pairs, layout 2; default_variant has the
numbers). Caution: at ~0.11 ms a call, the same kernel timed up to 2x apart between runs and
within one (H200, 2026-11-22), while the older, slower kernels stayed within 1%; repeat the
interesting rows (the "again" entries) and read ncu's kernel durations.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import torch
import triton
from triton.testing import do_bench

from fp8attn.hadamard import hadamard_signs
from fp8attn.quant import quantize_reference
from fp8attn.quant.triton import quantize_triton

SHAPE = (4, 32, 8192, 128)
OFF = dict(soft_cast=False, soft_amax=True)            # "hw": the GPU's FP8 cast, exact amax
ON = dict(soft_cast=True, soft_amax=True)              # "soft": clamp + software rounding
NANMAX = dict(soft_cast=False, soft_amax=False)        # "hw nanmax": the max skips NaN by itself


def _cfg(rows, warps, maxnreg=None, r_lo=None, dq=None):
    c = dict(BLOCK_S=rows, num_warps=warps)
    if maxnreg:
        c["maxnreg"] = maxnreg
    if r_lo is not None:
        c.update(R_LO=r_lo, DQ=dq)
    return c


def _p(**kw):
    """A `_pairs_kernel` variant (layout 2): the GPU's cast, exact amax, plus kw."""
    return dict(layout=2, **OFF, **kw)


# (case, name, variant, config): variant None = fp8attn's default, config None = the autotuner.
# "old default": the variant the default was before (2026-11-22 03:25 run), timed in the same run.
# Most informative first (a time budget may cut the tail); refs are recomputed when the case changes.
VARIANTS = [
    ("block", "L1 hw 128x4 store2d (old default)", dict(layout=1, store_2d=True, **OFF), _cfg(128, 4)),
    ("block", "P 128x4 coalesced (new default)", None, None),
    ("block", "P 128x4 row-per-lane loads", _p(coalesced=False), _cfg(128, 4, r_lo=1, dq=1)),
    ("block", "P 128x4 coalesced, signs loaded", _p(const_signs=False), _cfg(128, 4, 168, r_lo=1,
                                                                              dq=1)),
    ("vt", "L0 hw 128x8 (old default)", dict(layout=0, **OFF), _cfg(128, 8)),
    ("vt", "P vt r4 q4 w4 maxnreg168 (new default)", None, None),
    ("vt", "P vt r4 q4 w4 maxnreg160", _p(), _cfg(128, 4, 160, r_lo=4, dq=4)),
    ("vt", "P vt r4 q4 w4 no maxnreg", _p(), _cfg(128, 4, r_lo=4, dq=4)),
    ("token", "L1 hw autotuned (old default)", dict(layout=1, store_2d=True, **OFF), None),
    ("token", "P 64x2 coalesced (new default)", None, None),
    ("q", "L0 hw 128x4 (old default)", dict(layout=0, **OFF), _cfg(128, 4)),
    ("q", "P 128x4 maxnreg168 (new default)", None, None),
    ("block_e5m2", "P 128x4 coalesced e5m2 (new default)", None, None),
    ("vt", "P vt (new default) again", None, None),
    ("block", "P 128x4 coalesced (new default) again", None, None),
    ("token", "P 64x2 coalesced (new default) again", None, None),
    ("vt", "P vt (new default) third", None, None),
    ("q", "P 128x4 maxnreg168 (new default) again", None, None),
]

CASES = {   # case: (fmt, granularity, rotate, transpose, label)
    "block": ("e4m3", "block", True, False, "rotate+quantise e4m3 block 128"),
    "block_e5m2": ("e5m2", "block", True, False, "rotate+quantise e5m2 block 128"),
    "token": ("e4m3", "token", True, False, "rotate+quantise e4m3 token"),
    "vt": ("e4m3", "block", False, True, "quantise e4m3 block 128, V transposed"),
    "q": ("e4m3", "block", False, False, "quantise e4m3 block 128"),
}


def _input() -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(SHAPE, device="cuda", generator=g) * 3).to(torch.bfloat16)
    x[0, 0, 5, 7] = float("nan")           # a NaN row inside a block
    x[1, 2, 300, 0] = float("inf")         # Inf -> NaN
    x[2, 3, 4000, 100] = -float("inf")
    x[3, 31, 128:256] = 0                  # an all-zero block: descale 1
    x[3, 30, 1000] *= 1e4                  # one loud row sets its block's scale
    return x


def _compare(got, ref) -> dict:
    """Bit-level comparison of two QuantizedTensors (data compared in (B, H, S, D) order)."""
    a, r = got.data, ref.data
    if got.transposed:
        a, r = a.transpose(-1, -2), r.transpose(-1, -2)
    af, rf = a.float(), r.float()
    nan_ok = torch.equal(af.isnan(), rf.isnan())
    same = (a.view(torch.uint8) == r.view(torch.uint8)) | (af.isnan() & rf.isnan())
    ndiff = int((~same).sum())
    desc_eq = torch.equal(got.descale, ref.descale)
    return dict(exact=bool(desc_eq and nan_ok and ndiff == 0), descale_equal=desc_eq,
                nan_positions_equal=nan_ok, n_data_diff=ndiff)


def _launcher(x, signs, case, var, cfg):
    fmt, gran, rotate, transpose, _ = CASES[case]
    sg = signs if rotate else None
    return lambda: quantize_triton(x, fmt, gran, 128, signs=sg, transpose=transpose,
                                   variant=var, config=cfg)


def _profile(spec: str) -> int:
    """Each named variant launched twice (compile, then the launch ncu should read)."""
    x = _input()
    signs = hadamard_signs(SHAPE[-1], 0, "cuda")
    named = {(case, name): (var, cfg) for case, name, var, cfg in VARIANTS}
    for item in filter(None, spec.split(";")):
        case, name = item.split(":", 1)
        fn = _launcher(x, signs, case, *named[(case, name)])
        fn()
        torch.cuda.synchronize()
        fn()
        torch.cuda.synchronize()
        print(f"profiled {case} / {name}", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/")
    ap.add_argument("--budget", type=float, default=100.0, help="seconds; no new variant after")
    ap.add_argument("--only", default="", help="comma-separated cases")
    ap.add_argument("--profile", default="",
                    help="'case:variant;case:variant': launch just these, twice each, untimed "
                         "(run under ncu)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("sweep_quant needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.profile:
        return _profile(args.profile)
    t0 = time.time()
    dev = torch.cuda.get_device_name()
    meta = dict(device=dev, torch=torch.__version__, triton=triton.__version__,
                date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                shape=list(SHAPE), timing="do_bench median, warmup 25 ms, rep 100 ms",
                bytes="bf16 input read once + FP8 written once + descales")
    print(f"device {dev}; torch {torch.__version__}; triton {triton.__version__}; {meta['date']}",
          flush=True)
    os.makedirs(args.out, exist_ok=True)
    x = _input()
    src = x.reshape(-1)
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")
    copy_gbs = 2 * src.numel() * 2 / copy_ms / 1e6
    del dst
    print(f"torch copy (bf16, same numel): {copy_ms:.3f} ms {copy_gbs:.0f} GB/s", flush=True)
    rows = []
    only = set(filter(None, args.only.split(",")))
    refs = {}
    signs = hadamard_signs(SHAPE[-1], 0, "cuda")
    hdr = f"{'case':<40} {'variant':<34} {'ms':>7} {'GB/s':>6} {'copy%':>6} exact ndiff"
    print(hdr, flush=True)
    for case, name, var, cfg in VARIANTS:
        if only and case not in only:
            continue
        if time.time() - t0 > args.budget:
            print(f"budget spent: skipped {case} / {name}", flush=True)
            rows.append(dict(case=case, variant=name, skipped="budget"))
            continue
        fmt, gran, rotate, transpose, label = CASES[case]
        sg = signs if rotate else None
        if case not in refs:
            refs.clear()
            torch.cuda.empty_cache()
            refs[case] = quantize_reference(x, fmt, gran, 128, signs=sg, transpose=transpose)
        ref = refs[case]
        fn = lambda: quantize_triton(x, fmt, gran, 128, signs=sg, transpose=transpose,  # noqa: E731
                                     variant=var, config=cfg)
        row = dict(case=label, variant=name, var=var, config=cfg)
        try:
            got = fn()
            torch.cuda.synchronize()
            row.update(_compare(got, ref))
            del got
            ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
            nbytes = x.numel() * 3 + ref.descale.numel() * 4
            row.update(ms=ms, gbs=nbytes / ms / 1e6, vs_copy=nbytes / ms / 1e6 / copy_gbs)
            print(f"{label:<40} {name:<34} {ms:7.3f} {row['gbs']:6.0f} {100 * row['vs_copy']:5.1f}% "
                  f"{row['exact']!s:<5} {row['n_data_diff']}", flush=True)
        except Exception as e:           # a variant that fails to compile is a result, not a stop
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"{label:<40} {name:<34} ERROR {row['error'][:200]}", flush=True)
        rows.append(row)
        with open(os.path.join(args.out, "sweep_quant.json"), "w") as f:
            json.dump(dict(meta=meta, copy=dict(ms=copy_ms, gbs=copy_gbs), rows=rows), f, indent=1)
    print(f"sweep done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
