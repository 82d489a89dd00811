"""Kernel tuning sweep on the GPU: correctness of each variant, then timing per config.

    PYTHONPATH=. python benchmarks/sweep_attention.py --out DIR [--budget-s 480]

Checks the kernel against a float32 emulation of the contract's numerics (same BLOCK_N) and the
float64 oracle, measures the long-context error of two-level vs whole-loop ("fp22") accumulation,
then times configs x accumulation modes beside FA3 FP8/BF16. Results go to DIR/sweep.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import attn_flops, bench_ms, environment, fa3_out, load_fa3  # noqa: E402

from fp8attn.analysis.metrics import rmse  # noqa: E402
from fp8attn.attention.triton_fwd import attention_fwd_fp8  # noqa: E402
from fp8attn.hadamard.reference import hadamard_signs  # noqa: E402
from fp8attn.quant.reference import quantize_reference  # noqa: E402


def outliers(*shape, device="cuda", gen=None):
    x = torch.randn(*shape, device=device, generator=gen)
    big = torch.rand(*shape, device=device, generator=gen) < 1e-3
    return x + 10.0 * torch.randn(*shape, device=device, generator=gen) * big


def quant(q, k, v, fmt="e4m3", gran="block", block=128, hadamard=True):
    signs = hadamard_signs(q.shape[-1], 0, q.device) if hadamard else None
    return (quantize_reference(q, fmt, gran, block, signs=signs),
            quantize_reference(k, fmt, gran, block, signs=signs),
            quantize_reference(v, fmt, gran, block, transpose=True))


def run(q8, k8, v8, scale, causal, out_dtype=torch.bfloat16, **kw):
    return attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                             q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                             softmax_scale=scale, causal=causal, out_dtype=out_dtype, **kw)


def oracle(q, k, v, scale, causal):
    """float64 attention on the GPU, chunked over query rows (no full S x S at once)."""
    G = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(G, 1)
    v = v.double().repeat_interleave(G, 1)
    Sq, Sk = q.shape[2], k.shape[2]
    off = Sk - Sq if causal == "bottom_right" else 0
    outs = []
    for i0 in range(0, Sq, 256):
        qi = q[:, :, i0:i0 + 256].double()
        s = qi @ k.transpose(-1, -2) * scale
        if causal:
            i = torch.arange(i0, i0 + qi.shape[2], device=q.device)[:, None]
            j = torch.arange(Sk, device=q.device)[None]
            s = s.masked_fill(j > i + off, float("-inf"))
        p = torch.softmax(s, -1).nan_to_num(0.0)
        outs.append(p @ v)
    return torch.cat(outs, 2)


def emulate(q8, k8, v8, scale, causal, block_n):
    """float32 emulation of the contract (scalar V descale per tile)."""
    shift = 8 if q8.fmt == "e4m3" else 15
    dt = q8.data.dtype
    q, k, vt = q8.data.float(), k8.data.float(), v8.data.float()
    qd, kd, vd = q8.row_descale(), k8.row_descale(), v8.row_descale()
    G = q.shape[1] // k.shape[1]
    k, vt = k.repeat_interleave(G, 1), vt.repeat_interleave(G, 1)
    kd, vd = kd.repeat_interleave(G, 1), vd.repeat_interleave(G, 1)
    B, H, Sq, D = q.shape
    Sk = k.shape[2]
    m = torch.full((B, H, Sq), float("-inf"), device=q.device)
    l = torch.zeros(B, H, Sq, device=q.device)
    acc = torch.zeros(B, H, Sq, D, device=q.device)
    off = Sk - Sq if causal == "bottom_right" else 0
    i = torch.arange(Sq, device=q.device)[:, None]
    for n0 in range(0, Sk, block_n):
        n1 = min(n0 + block_n, Sk)
        s = (q @ k[:, :, n0:n1].transpose(-1, -2)) * qd[..., None] * kd[:, :, None, n0:n1]
        s = s * (scale * 1.4426950408889634)
        if causal:
            j = torch.arange(n0, n1, device=q.device)[None]
            s = s.masked_fill(j > i + off, float("-inf"))
        mn = torch.maximum(m, s.amax(-1))
        mu = torch.where(mn == float("-inf"), torch.zeros_like(mn), mn)
        alpha = torch.exp2(m - mu)
        p = torch.exp2(s - mu[..., None])
        l = l * alpha + p.sum(-1)
        p8 = (p * 2.0 ** shift).to(dt).float()
        tile = p8 @ vt[:, :, :, n0:n1].transpose(-1, -2) * vd[:, :, None, n0:n0 + 1] * 2.0 ** -shift
        acc = acc * alpha[..., None] + tile
        m = mn
    return torch.where(l[..., None] == 0, torch.zeros_like(acc), acc / l[..., None])


# (config, extra constexprs) checked against the emulation on every correctness case
CHECKED = [
    (dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2), {}),
    (dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2), {"SPLIT": 2}),
    (dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3), {}),
    (dict(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3), {"ONE_LOOP": True}),
    (dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3), {"SPLIT": 2, "REVERSE": False}),
    (dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2), {"SPLIT": 4, "ONE_LOOP": True}),
]
_KERNELS = []


def _capture_compiled():
    """Record the compiled kernel of each launch (registers / spills for the timing table)."""
    from fp8attn.attention import triton_fwd
    heur = triton_fwd._attn_fwd_heur
    orig = heur.run

    def run_and_keep(*args, **kwargs):
        k = orig(*args, **kwargs)
        _KERNELS.append(k)
        return k
    heur.run = run_and_keep


def _last_kernel_info():
    k = _KERNELS[-1] if _KERNELS else None
    if k is None:
        return {}
    info = {}
    for name in ("n_regs", "n_spills"):
        try:
            info[name] = int(getattr(k, name))
        except Exception:  # noqa: BLE001 - attribute missing on some versions
            pass
    try:
        info["smem"] = int(k.metadata.shared)
    except Exception:  # noqa: BLE001
        pass
    return info


def correctness(log):
    cases = [  # B, Hq, Hkv, Sq, Sk, D, causal, fmt
        (2, 4, 4, 1000, 1000, 128, None, "e4m3"),
        (2, 4, 2, 777, 1500, 128, "bottom_right", "e4m3"),
        (1, 4, 1, 1500, 700, 64, "bottom_right", "e4m3"),
        (1, 2, 2, 1023, 1023, 256, "top_left", "e4m3"),
        (1, 2, 2, 513, 300, 96, None, "e5m2"),
        (3, 2, 1, 1, 4097, 32, None, "e4m3"),
    ]
    g = torch.Generator(device="cuda").manual_seed(0)
    res = []
    for B, Hq, Hkv, Sq, Sk, D, causal, fmt in cases:
        q = outliers(B, Hq, Sq, D, gen=g)
        k = outliers(B, Hkv, Sk, D, gen=g)
        v = outliers(B, Hkv, Sk, D, gen=g)
        q8, k8, v8 = quant(q, k, v, fmt)
        scale = D ** -0.5
        ref = oracle(q, k, v, scale, causal)
        for cfg, var in CHECKED:
            mode = "tile"
            if var.get("SPLIT", 1) == 4 and D < 128:
                continue
            if D < 256 or cfg["BLOCK_N"] <= 64:
                try:
                    out = torch.full((B, Hq, Sq, D), float("nan"), device="cuda")
                    run(q8, k8, v8, scale, causal, out_dtype=torch.float32, out=out,
                        acc_mode=mode, config={**cfg, **var})
                    emu = emulate(q8, k8, v8, scale, causal, cfg["BLOCK_N"])
                    r = dict(case=[B, Hq, Hkv, Sq, Sk, D, causal, fmt], cfg=cfg, mode=mode, var=var,
                             nan=bool(out.isnan().any()), rmse_oracle=rmse(out, ref),
                             rmse_emu_oracle=rmse(emu, ref), maxdiff_emu=(out - emu).abs().max().item())
                except Exception as e:  # noqa: BLE001
                    r = dict(case=[B, Hq, Hkv, Sq, Sk, D, causal, fmt], cfg=cfg, mode=mode, var=var,
                             error=f"{type(e).__name__}: {str(e)[:300]}")
                log(r)
                res.append(r)
    return res


def long_context(log):
    g = torch.Generator(device="cuda").manual_seed(1)
    res = []
    for Sk in (4096, 65536):
        q = outliers(1, 8, 128, 128, gen=g)
        k = outliers(1, 8, Sk, 128, gen=g)
        v = outliers(1, 8, Sk, 128, gen=g) + 0.5  # a mean keeps the output away from 0
        q8, k8, v8 = quant(q, k, v)
        ref = oracle(q, k, v, 128 ** -0.5, None)
        for mode in ("tile", "imprecise", "fp22"):
            out = run(q8, k8, v8, 128 ** -0.5, None, out_dtype=torch.float32, acc_mode=mode,
                      config=dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2))
            r = dict(Sk=Sk, mode=mode, rel_rmse=rmse(out, ref) / ref.pow(2).mean().sqrt().item())
            log(r)
            res.append(r)
    return res


def timing(log, deadline, seqlens=(8192,)):
    fa3, why = load_fa3()
    log({"fa3": why or "ok"})
    res = []
    S2, S4, OL, NR = {"SPLIT": 2}, {"SPLIT": 4}, {"ONE_LOOP": True}, {"REVERSE": False}
    sweep = {  # (BLOCK_M, BLOCK_N, warps, stages, variant, mode)
        256: [(64, 64, 4, 3, S2, "tile"), (64, 64, 4, 3, {**S2, **NR}, "tile"),
              (64, 64, 4, 3, {**S2, **OL}, "tile"), (64, 64, 4, 2, {**S2, **OL}, "tile"),
              (64, 64, 4, 2, {**S4, **OL}, "tile"), (64, 64, 4, 2, S4, "tile"),
              (64, 64, 4, 3, {**S4, **OL, **NR}, "tile")],
        128: [(64, 128, 4, 3, {}, "tile"), (64, 128, 4, 2, {}, "tile"), (128, 128, 8, 2, {}, "tile"),
              (64, 64, 4, 4, {}, "tile"), (64, 64, 4, 3, {}, "tile"), (64, 128, 4, 3, OL, "tile"),
              (64, 128, 4, 3, S2, "tile"), (128, 128, 8, 3, {}, "tile")],
        64: [(128, 128, 4, 3, {}, "tile"), (64, 128, 4, 3, {}, "tile"), (64, 128, 4, 4, {}, "tile"),
             (64, 64, 4, 4, {}, "tile"), (128, 128, 8, 3, {}, "tile"), (64, 256, 4, 2, {}, "tile"),
             (128, 256, 8, 2, {}, "tile"), (64, 128, 4, 3, OL, "tile")],
    }
    for S in seqlens:
        res += _time_seqlen(log, deadline, fa3, sweep, S)
    return res


def _time_seqlen(log, deadline, fa3, sweep, S):
    res = []
    for D in (128, 256, 64):
        H = 2048 // D
        B = 16384 // S
        g = torch.Generator(device="cuda").manual_seed(2)
        q = torch.randn(B, H, S, D, device="cuda", generator=g, dtype=torch.bfloat16)
        k = torch.randn(B, H, S, D, device="cuda", generator=g, dtype=torch.bfloat16)
        v = torch.randn(B, H, S, D, device="cuda", generator=g, dtype=torch.bfloat16)
        q8, k8, v8 = quant(q, k, v)
        for causal in (False, True):
            fl = attn_flops(B, H, S, S, D, causal)
            if fa3 is not None:
                qb, kb, vb = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                ones = torch.ones(B, H, device="cuda")
                qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (qb, kb, vb))
                for name, args, kw in (
                        ("fa3_fp8", (qf, kf, vf), dict(q_descale=ones, k_descale=ones, v_descale=ones)),
                        ("fa3_bf16", (qb, kb, vb), {})):
                    try:
                        ms = bench_ms(lambda: fa3_out(fa3.flash_attn_func(*args, causal=causal, **kw)))
                        r = dict(D=D, S=S, causal=causal, impl=name, ms=ms, tflops=fl / ms * 1e-9)
                    except Exception as e:  # noqa: BLE001
                        r = dict(D=D, causal=causal, impl=name, error=f"{type(e).__name__}: {e}"[:300])
                    log(r)
                    res.append(r)
            for bm, bn, w, st, var, mode in sweep[D]:
                if time.time() > deadline:
                    return res
                if causal and mode == "fp22":
                    continue
                cfg = dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st)
                tag = dict(D=D, S=S, causal=causal, impl="ours", mode=mode, var=var,
                           cfg=[bm, bn, w, st])
                try:
                    out = torch.empty(B, H, S, D, device="cuda", dtype=torch.bfloat16)
                    ms = bench_ms(lambda: run(q8, k8, v8, D ** -0.5, "top_left" if causal else None,
                                              out=out, acc_mode=mode, config={**cfg, **var}),
                                  10, 50)
                    r = dict(tag, ms=ms, tflops=fl / ms * 1e-9, **_last_kernel_info())
                except Exception as e:  # noqa: BLE001
                    r = dict(tag, error=f"{type(e).__name__}: {e}"[:300])
                log(r)
                res.append(r)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--skip", default="", help="comma list of: correct,long,time")
    ap.add_argument("--seqlens", default="8192", help="comma list of timed sequence lengths")
    a = ap.parse_args()
    t0 = time.time()
    skip = set(a.skip.split(","))
    logf = open(os.path.join(a.out, "sweep.log"), "w")

    def log(r):
        line = json.dumps(r)
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log(environment())
    res = {}
    if "correct" not in skip:
        res["correct"] = correctness(log)
    if "long" not in skip:
        res["long"] = long_context(log)
    if "time" not in skip:
        _capture_compiled()
        res["time"] = timing(log, t0 + a.budget_s, [int(x) for x in a.seqlens.split(",")])
    with open(os.path.join(a.out, "sweep.json"), "w") as f:
        json.dump(res, f, indent=1)
    for r in res.get("time", []):
        if "tflops" in r:
            print(f"D={r['D']} S={r.get('S')} causal={r['causal']:d} {r['impl']:8s} "
                  f"{str(r.get('cfg', '')):17s} {str(r.get('var', '')):45s} {r['tflops']:7.1f} "
                  f"regs={r.get('n_regs', '-')} spills={r.get('n_spills', '-')}")
    for r in res.get("correct", []):
        print("CORRECT", r["case"], r["cfg"]["BLOCK_M"], r["cfg"]["BLOCK_N"], r["var"],
              r.get("error") or f"nan={r['nan']} oracle={r['rmse_oracle']:.3e} "
              f"emu={r['rmse_emu_oracle']:.3e} maxdiff_emu={r['maxdiff_emu']:.2e}")
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
