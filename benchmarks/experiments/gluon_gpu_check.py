"""GPU check of the Gluon FP8 attention prototype (fp8attn/attention/gluon_fwd.py).

    PYTHONPATH=. python benchmarks/experiments/gluon_gpu_check.py [--variants ws_s2,pingpong_s2]
        [--seqlens 1024,4096,16384] [--head-dim 128] [--causal top_left] [--block-kv 128]
        [--timeout 90] [--json out.json]

Every Gluon variant runs in its own subprocess with a timeout (an mbarrier protocol error hangs
the kernel; the parent then reports "timeout" and goes on). Per variant:
  1. correctness on small odd shapes (tail tiles, GQA) against fp8attn's attention_fwd_fp8 on the
     same quantised inputs (quantize_qkv, fp8attn.Recipe(block_kv=--block-kv): max |diff|,
     count of differing elements) and the relative RMSE of both vs the float64 oracle
     (attention_oracle);
  2. TFLOP/s at FA3's setting (16k tokens, hidden 2048, hdim --head-dim, --causal) for each
     seqlen (hdim 64 compiles for sm_90a with 0 spills, 2026-11-30; hdim 256 takes the
     pingpong_n64_* variants only, P @ V in four parts: session 9 ran them at 1k-16k).
The package kernel ("ours", autotuned) and FA3 FP8 (per-(batch, head) descales of 1, as
bench_attention.py) are timed in a subprocess of their own on the same shapes.
Imports cleanly on a CPU machine (prints that CUDA is absent and exits 0).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "benchmarks"), ROOT]

from fp8attn.attention.gluon_fwd import VARIANTS  # noqa: E402

# (B, Hq, Hkv, Sq, Sk): tails in Q and K, a head count that is not a power of two, GQA
CHECK_SHAPES = [(1, 1, 1, 128, 128), (2, 3, 3, 1000, 1000), (1, 4, 2, 300, 777),
                (1, 2, 2, 4096, 4096), (2, 24, 24, 1000, 1000)]   # the last: ~3 items a CTA
HDIM = 128
CAUSAL = None       # --causal: None, "top_left" or "bottom_right" (modes pingpong + overlap only)
BLOCK_KV = 128      # --block-kv: the K / V descale block (a variant's block_n must divide it)


def _inputs(b, hq, hkv, sq, sk, seed, v_key_order="natural"):
    """V^T in `v_key_order`: "mma" for the Gluon kernel (what it reads), natural for the tl
    kernel (what it reads), so that neither timing includes a permuting copy."""
    from common import quantized_randn
    from fp8attn import Recipe
    return quantized_randn(b, hq, hkv, sq, sk, HDIM, seed, v_key_order,
                           Recipe(block_kv=BLOCK_KV))


def _ours(q8, k8, v8, out=None):
    from fp8attn.attention.triton_fwd import attention_fwd_fp8
    return attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                             q_block=q8.block_size, k_block=k8.block_size,
                             v_block=v8.block_size, softmax_scale=HDIM ** -0.5, out=out,
                             causal=CAUSAL, v_key_order=v8.key_order)


def _gluon(q8, k8, v8, cfg, out=None):
    from fp8attn.attention.gluon_fwd import gluon_attention_fwd
    return gluon_attention_fwd(q8.data.contiguous(), k8.data.contiguous(), v8.data, q8.descale,
                               k8.descale, v8.descale, q8.block_size, k8.block_size,
                               v8.block_size, HDIM ** -0.5, out=out, causal=CAUSAL,
                               v_key_order=v8.key_order, **cfg)


def _rel_rmse(o, ref):
    return float(((o.double() - ref) ** 2).mean().sqrt() / ref.pow(2).mean().sqrt())


def _fa3_setting(s):
    return 16384 // s, 2048 // HDIM


def run_variant(name, seqlens):
    """Child process: correctness then timing of one Gluon variant; one JSON line per result."""
    from common import attn_flops, bench_ms
    from fp8attn.attention.reference import attention_oracle
    cfg = VARIANTS[name]
    for (b, hq, hkv, sq, sk) in CHECK_SHAPES:
        (q, k, v), (q8, k8, v8) = _inputs(b, hq, hkv, sq, sk, seed=sq + sk, v_key_order="mma")
        row = dict(variant=name, kind="check", shape=[b, hq, hkv, sq, sk])
        try:
            o_g = _gluon(q8, k8, v8, cfg)
            torch.cuda.synchronize()
            o_t = _ours(q8, k8, v8)
            d = (o_g.float() - o_t.float()).abs()
            row.update(max_abs_diff_vs_ours=float(d.nan_to_num(float("inf")).max()),
                       n_diff=int((d != 0).sum()), n_nan=int(o_g.isnan().sum()))
            if sq * sk * hq * b <= 2 * 4096 * 4096:
                ref = attention_oracle(q, k.repeat_interleave(hq // hkv, 1),
                                       v.repeat_interleave(hq // hkv, 1), causal=CAUSAL)
                row.update(rel_rmse_gluon=_rel_rmse(o_g, ref), rel_rmse_ours=_rel_rmse(o_t, ref))
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        print(json.dumps(row), flush=True)
    for s in seqlens:
        b, h = _fa3_setting(s)
        _, (q8, k8, v8) = _inputs(b, h, h, s, s, seed=s + HDIM, v_key_order="mma")
        out = torch.empty(b, h, s, HDIM, device="cuda", dtype=torch.bfloat16)
        row = dict(variant=name, kind="time", seqlen=s, batch=b, heads=h)
        try:
            ms = bench_ms(lambda: _gluon(q8, k8, v8, cfg, out))
            row.update(ms=ms, tflops=attn_flops(b, h, s, s, HDIM, CAUSAL is not None) / ms * 1e-9)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        print(json.dumps(row), flush=True)


def run_refs(seqlens):
    """Child process: the package kernel and FA3 FP8 at the same shapes."""
    from common import attn_flops, bench_ms, fa3_out, load_fa3
    fa3, why = load_fa3()
    for s in seqlens:
        b, h = _fa3_setting(s)
        _, (q8, k8, v8) = _inputs(b, h, h, s, s, seed=s + HDIM)
        out = torch.empty(b, h, s, HDIM, device="cuda", dtype=torch.bfloat16)
        fl = attn_flops(b, h, s, s, HDIM, CAUSAL is not None)
        row = dict(variant="ours", kind="time", seqlen=s, batch=b, heads=h)
        row["tflops"] = fl / bench_ms(lambda: _ours(q8, k8, v8, out)) * 1e-9
        print(json.dumps(row), flush=True)
        row = dict(variant="fa3_fp8", kind="time", seqlen=s, batch=b, heads=h)
        if fa3 is None:
            row["error"] = why
        else:
            g = torch.Generator(device="cuda").manual_seed(s)
            qf, kf, vf = (torch.randn(b, s, h, HDIM, generator=g, device="cuda",
                                      dtype=torch.bfloat16).to(torch.float8_e4m3fn)
                          for _ in range(3))
            ones = torch.ones(b, h, device="cuda")
            row["tflops"] = fl / bench_ms(lambda: fa3_out(fa3.flash_attn_func(
                qf, kf, vf, causal=CAUSAL is not None, q_descale=ones, k_descale=ones,
                v_descale=ones))) * 1e-9
        print(json.dumps(row), flush=True)


def _child(args, timeout):
    t = time.time()
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        if r.returncode:
            rows.append(dict(child=args, error=f"rc {r.returncode}: {r.stderr[-1500:]}"))
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        rows.append(dict(child=args, error=f"timeout after {timeout}s (hang?)"))
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"# {' '.join(args)}: {time.time() - t:.0f}s", flush=True)
    return rows


def _save(path, rows):
    if path:
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seqlens", default="1024,4096,16384")
    ap.add_argument("--timeout", type=int, default=90, help="seconds per child process")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--causal", default="", choices=("", "top_left", "bottom_right"))
    ap.add_argument("--block-kv", type=int, default=128,
                    help="K / V descale block of the inputs (256: 256-key tiles at hdim 128)")
    ap.add_argument("--json", default="")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--refs", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global HDIM, CAUSAL, BLOCK_KV
    HDIM = a.head_dim
    CAUSAL = a.causal or None
    BLOCK_KV = a.block_kv
    seqlens = [int(x) for x in a.seqlens.split(",")]
    from common import cuda_absent
    if cuda_absent("check"):
        return
    if a.one:
        run_variant(a.one, seqlens)
        return
    if a.refs:
        run_refs(seqlens)
        return
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    hd = ["--head-dim", str(HDIM), "--block-kv", str(BLOCK_KV)] + (
        ["--causal", CAUSAL] if CAUSAL else [])
    rows = _child(["--refs", "--seqlens", a.seqlens, *hd], a.timeout * 2)
    _save(a.json, rows)
    for name in a.variants.split(","):
        rows += _child(["--one", name, "--seqlens", a.seqlens, *hd], a.timeout)
        _save(a.json, rows)  # after every child: a stage killed by its timeout keeps its rows
    ref = {(r["variant"], r.get("seqlen")): r.get("tflops") for r in rows if r.get("kind") == "time"}
    print("\n| variant | " + " | ".join(f"{s} TFLOP/s (x ours, x FA3)" for s in seqlens) + " |")
    print("|---|" + "---|" * len(seqlens))
    for name in ["ours", "fa3_fp8", *a.variants.split(",")]:
        cells = []
        for s in seqlens:
            t, o, f = ref.get((name, s)), ref.get(("ours", s)), ref.get(("fa3_fp8", s))
            cells.append("-" if not t else f"{t:.0f} ({t / o:.2f}, {t / f:.2f})" if o and f
                         else f"{t:.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
