"""GB/s of the Triton Hadamard transform and the fused rotate + quantise kernel against a plain copy.

Every figure counts the fewest bytes the op must move (each input read once, each output written
once) over the GPU time per call, taken from CUDA-graph replays (no host work between launches:
at ~0.1 ms per call the Python launch path can otherwise leave the GPU idle and the figure would
measure the host); triton.testing.do_bench's median is reported beside it. The copy moves the same
kind of bytes (read + write of a bf16 buffer as large as the input) and is timed the same way.
Run on a CUDA GPU:

    PYTHONPATH=. python3 benchmarks/bench_quant.py --check --out benchmarks/results/

--check first compares the Triton outputs with the torch references on the GPU and exits non-zero on
any mismatch. Writes bench_quant.json and bench_quant.md under --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton
from triton.testing import do_bench

from fp8attn.hadamard import (fwht_reference, hadamard_signs, hadamard_transform,
                              random_hadamard_transform)
from fp8attn.hadamard.triton import _hadamard_kernel, hadamard_transform_triton
from fp8attn.quant import quantize, quantize_reference
from fp8attn.quant.triton import _quant_kernel, quantize_triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import graph_ms  # noqa: E402

NUMEL = 1 << 27          # 128 Mi elements: 256 MB of bf16 per input, far beyond L2
DEVICE = "cuda"


def _bench(fn) -> dict:
    """ms per call: the CUDA-graph replay time when fn can be captured, else do_bench's median;
    ms_do_bench: do_bench's median (it flushes L2 between calls; host launch gaps included)."""
    ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
    try:
        graph = graph_ms(fn)
    except Exception:  # noqa: BLE001 - ops that sync or allocate on the host cannot be captured
        graph = None
    return dict(ms=ms if graph is None else graph, ms_do_bench=ms, graph=graph is not None)


def _gbs(nbytes: int, ms: float) -> float:
    return nbytes / ms / 1e6


def check(quick: bool = False) -> list[str]:
    """Triton vs torch reference on the GPU; returns a list of failures (empty when all agree)."""
    fails = []
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for d in (96, 128) if quick else (2, 16, 64, 96, 128, 160, 256, 1024):
        x = torch.randn(1000, d, device=DEVICE, generator=g).to(torch.bfloat16)
        for inverse in (False, True):
            y = hadamard_transform(x, inverse=inverse).double()
            ref = fwht_reference(x.double(), inverse=inverse)
            tol = 2.0 ** -8 * ref.abs() + 1e-5 * x.double().norm(dim=-1, keepdim=True)
            if not ((y - ref).abs() <= tol).all():
                fails.append(f"hadamard d={d} inverse={inverse}: max err {(y - ref).abs().max():.3g}")
        alt = hadamard_transform_triton(x, butterfly=0).double()
        ref = fwht_reference(x.double())
        tol = 2.0 ** -8 * ref.abs() + 1e-5 * x.double().norm(dim=-1, keepdim=True)
        if not ((alt - ref).abs() <= tol).all():
            fails.append(f"hadamard d={d} butterfly=0 differs from the reference")
        xr = random_hadamard_transform(x, 3)
        back = random_hadamard_transform(xr.float(), 3, inverse=True)
        if (back - x.float()).abs().max() > 0.05 * x.float().abs().max():
            fails.append(f"random hadamard d={d}: inverse does not undo forward")
    for d in (128,) if quick else (64, 128, 256, 80):
        x = (torch.randn(2, 8, 1013, d, device=DEVICE, generator=g) * 4).to(torch.bfloat16)
        signs = hadamard_signs(d, 0, DEVICE)
        full = d in (128, 80)          # every granularity and format for two head dims (compile time)
        for fmt in ("e4m3", "e5m2") if full else ("e4m3",):
            for gran in ("block", "token", "head", "tensor") if full else ("block",):
                for sg, tr in ((signs, False), (None, True)):
                    bfly = 0 if (gran == "block" and fmt == "e4m3") else 1
                    got = quantize_triton(x, fmt, gran, 128, signs=sg, transpose=tr, butterfly=bfly)
                    ref = quantize_reference(x, fmt, gran, 128, signs=sg, transpose=tr)
                    what = f"quantize d={d} {fmt} {gran} rotate={sg is not None} transpose={tr}"
                    if not torch.allclose(got.descale, ref.descale, rtol=1e-6, atol=0):
                        fails.append(f"{what}: descales differ")
                        continue
                    a, r = got.data.float(), ref.data.float()
                    mbits, emin = (3, -6) if fmt == "e4m3" else (2, -14)
                    ulp = torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(2.0 ** emin))) - mbits)
                    frac = (a != r).float().mean().item()
                    if not ((a - r).abs() <= ulp).all() or frac > 1e-3:
                        fails.append(f"{what}: data differs ({frac:.2e} of values)")
    return fails


def bench_copy(numel: int) -> dict:
    src = torch.randn(numel, device=DEVICE).to(torch.bfloat16)
    dst = torch.empty_like(src)
    t = _bench(lambda: dst.copy_(src))
    nbytes = 2 * src.numel() * src.element_size()
    return dict(op="torch copy (bf16)", shape=[numel], **t, bytes=nbytes, gbs=_gbs(nbytes, t["ms"]))


def bench_hadamard(d: int, seeded: bool, butterfly: int | None = None) -> dict:
    x = torch.randn(NUMEL // d, d, device=DEVICE).to(torch.bfloat16)
    if butterfly is not None:
        fn = lambda: hadamard_transform_triton(x, butterfly=butterfly)    # noqa: E731
    elif seeded:
        fn = lambda: random_hadamard_transform(x, 0)                       # noqa: E731
    else:
        fn = lambda: hadamard_transform(x)                                 # noqa: E731
    name = "random_hadamard_transform" if seeded else "hadamard_transform"
    name += f" [butterfly {butterfly}]" if butterfly is not None else ""
    t = _bench(fn)
    nbytes = 2 * x.numel() * x.element_size()
    return dict(op=f"{name} bf16 d={d}", shape=list(x.shape), **t, bytes=nbytes,
                gbs=_gbs(nbytes, t["ms"]))


def bench_quant(d: int, gran: str, rotate: bool, transpose: bool, bshd: bool = False,
                reference: bool = False, butterfly: int | None = None) -> dict:
    B, S = 4, min(8192, NUMEL // (4 * d))
    H = max(1, NUMEL // (B * S * d))
    if bshd:      # (B, S, H, D) storage read through its (B, H, S, D) view
        x = torch.randn(B, S, H, d, device=DEVICE).to(torch.bfloat16).transpose(1, 2)
    else:
        x = torch.randn(B, H, S, d, device=DEVICE).to(torch.bfloat16)
    signs = hadamard_signs(d, 0, DEVICE) if rotate else None
    qfn = quantize_reference if reference else quantize
    if butterfly is not None:
        qfn = lambda *a, **k: quantize_triton(*a, **k, butterfly=butterfly)  # noqa: E731
    out = qfn(x, "e4m3", gran, 128, signs=signs, transpose=transpose)
    nbytes = x.numel() * (x.element_size() + 1) + out.descale.numel() * 4
    name = ("torch reference " if reference else "") + ("rotate+quantise" if rotate else "quantise")
    tag = f"{gran}{' 128' if gran == 'block' else ''}{', V transposed' if transpose else ''}"
    tag += ", (B,S,H,D) view" if bshd else ""
    tag += f", butterfly {butterfly}" if butterfly is not None else ""
    op = f"{name} bf16->e4m3 d={d} ({tag})"
    t = _bench(lambda: qfn(x, "e4m3", gran, 128, signs=signs, transpose=transpose))
    return dict(op=op, shape=[B, H, S, d], **t, bytes=nbytes, gbs=_gbs(nbytes, t["ms"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/", help="folder for the JSON and markdown")
    ap.add_argument("--check", action="store_true", help="verify against the torch reference first")
    ap.add_argument("--quick", action="store_true",
                    help="a short run: head dims 96 and 128 checked, six rows timed")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_quant needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = torch.cuda.get_device_name()
    print(f"device {dev}; torch {torch.__version__}; triton {triton.__version__}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", flush=True)
    if args.check:
        # one config per kernel while checking (compile time); tuning caches cleared afterwards
        tune = os.environ.get("FP8ATTN_TUNE")
        os.environ["FP8ATTN_TUNE"] = "minimal"
        fails = check(args.quick)
        if tune is None:
            del os.environ["FP8ATTN_TUNE"]
        else:
            os.environ["FP8ATTN_TUNE"] = tune
        _hadamard_kernel.cache.clear()
        _quant_kernel.cache.clear()
        for f in fails:
            print("CHECK FAILED:", f, flush=True)
        if fails:
            raise SystemExit(f"{len(fails)} correctness checks failed")
        print("check: Triton Hadamard and quantise outputs match the torch references", flush=True)

    rows = [bench_copy(NUMEL)]
    copy_gbs = rows[0]["gbs"]
    if args.quick:
        cases = [lambda: bench_hadamard(128, False), lambda: bench_hadamard(96, False),
                 lambda: bench_quant(128, "block", True, False),
                 lambda: bench_quant(128, "block", False, True),
                 lambda: bench_quant(128, "block", False, False),
                 lambda: bench_quant(128, "token", True, False)]
    else:
        dims = (64, 128, 256)
        cases = [lambda d=d: bench_hadamard(d, False) for d in dims + (96,)]
        cases += [lambda d=d: bench_hadamard(d, False, butterfly=0) for d in dims]
        cases += [lambda: bench_hadamard(128, True)]
        for d in dims:
            cases += [lambda d=d: bench_quant(d, "block", True, False),
                      lambda d=d: bench_quant(d, "block", True, False, butterfly=0),
                      lambda d=d: bench_quant(d, "block", False, True)]
        cases += [lambda: bench_quant(128, "block", False, False),
                  lambda: bench_quant(128, "token", True, False),
                  lambda: bench_quant(128, "tensor", True, False),
                  lambda: bench_quant(128, "head", True, False),
                  lambda: bench_quant(128, "block", True, False, bshd=True),
                  lambda: bench_quant(128, "block", True, False, reference=True)]
    for case in cases:
        r = case()
        r["vs_copy"] = r["gbs"] / copy_gbs
        r["vs_copy_do_bench"] = rows[0]["ms_do_bench"] / r["ms_do_bench"] * r["bytes"] / rows[0]["bytes"]
        rows.append(r)
        print(f"{r['op']:<72} {r['ms']:8.3f} ms {r['gbs']:8.0f} GB/s {100 * r['vs_copy']:6.1f}% of copy"
              f" (do_bench {100 * r['vs_copy_do_bench']:.1f}%)", flush=True)
    for r in rows[:1]:
        r["vs_copy"] = r["vs_copy_do_bench"] = 1.0

    os.makedirs(args.out, exist_ok=True)
    meta = dict(device=dev, torch=torch.__version__, triton=triton.__version__,
                date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}",
                numel_per_input=NUMEL,
                timing="ms: median over 7 replays of a CUDA graph of 10 calls (do_bench's median "
                       "where capture fails); ms_do_bench: triton.testing.do_bench median, warmup "
                       "25 ms, rep 100 ms, L2 flushed between calls, host launch gaps included",
                bytes="input read once + output written once (+ descales)",
                tuned_configs={"hadamard": {str(k): str(v) for k, v in _hadamard_kernel.cache.items()},
                               "quant": {str(k): str(v) for k, v in _quant_kernel.cache.items()}})
    with open(os.path.join(args.out, "bench_quant.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    lines = [f"Device: {dev}; torch {torch.__version__}; Triton {triton.__version__}; {meta['date']}.",
             "ms: CUDA-graph replay (no host gaps; * = not capturable, do_bench); last column: "
             "do_bench median (L2 flushed, host launch gaps included).",
             "", "| op | shape | ms | GB/s | vs copy | vs copy, do_bench |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        star = "" if r["graph"] else "*"
        lines.append(f"| {r['op']} | {tuple(r['shape'])} | {r['ms']:.3f}{star} | {r['gbs']:.0f} | "
                     f"{100 * r['vs_copy']:.0f}% | {100 * r['vs_copy_do_bench']:.0f}% |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "bench_quant.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
