"""FP8 attention throughput and accuracy on a Hopper GPU, beside the peers available in the run.

    PYTHONPATH=. python benchmarks/bench_attention.py --out DIR [--quick] [--q-terms 1,2] [--tl]

Setting of the FlashAttention-3 paper: 16k tokens per batch (batch = 16384 / seqlen), hidden 2048
(heads = 2048 / head_dim), head dims 64 / 128 / 256, seqlen 512 ... 16k, causal and not.
TFLOP/s = 4 * B * H * S^2 * D / time (halved for causal), time = triton.testing.do_bench median.
do_bench clears L2 before each call and times it alone, so a short call's host time counts where
it outlasts the clearing kernel (FA3 FP8, causal, 1k keys: 386 TFLOP/s timed so, 514 on the GPU
alone; H200, 2026-11-30, results/probe_short_causal_s16.json). The kernel-only view is therefore
also timed on the GPU alone (columns "GPU time": the call replayed from a CUDA graph under
do_bench, L2 still cleared), ours and FA3 FP8 alike; so is the end-to-end view beside FA3 BF16
(added in session 16 after its 21:17 run: not yet run on a GPU).

Rows (each guarded by availability):
  ours kernel   FP8 inputs ready (rotated + quantised beforehand), kernel only, bf16 out; the
                package's default path: the Gluon kernel where attention/gluon_dispatch.py takes
                the call (column "path"), else the tl kernel
  ours e2e      bf16 (B, S, H, D) in -> fused rotate + quantise -> kernel -> bf16 out
                (fp8attn.flash_attn_func with the default recipe)
  FA3 FP8 / BF16  the fa3-fwd wheel (module fa3_fwd_interface), per-(batch, head) descales of 1
  SDPA flash / cuDNN  torch.nn.functional.scaled_dot_product_attention in bf16
  Sage          SageAttention (INT8 QK, FP16 PV), if importable
  ours kernel q2 / ours e2e q2 (--q-terms 1,2): the same with Recipe(q_terms=2), Q as two FP8
                terms (one more QK MMA per tile), beside the one-term rows of the same run
  ours kernel tl / ours e2e tl (--tl): the same calls with FP8ATTN_GLUON=0 (the tl kernel),
                timed only where the Gluon kernel takes them by default (elsewhere "ours" is
                the tl kernel)
Accuracy (FA3's outlier distribution, batch 2, heads 16, seqlen 2048, dim 128, float64 oracle on the
GPU): ours with the default recipe (and the emulation on the CPU), FA3 FP8 with per-head scales with
and without a Hadamard rotation, FA3 BF16; with --q-terms 2 also ours (and the CPU emulation) with
Recipe(q_terms=2).
Writes DIR/bench_attention.json, DIR/bench_attention.md and DIR/bench_attention.png.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (attn_flops, bench_ms, environment, fa3_accuracy_inputs, fa3_out,  # noqa: E402
                    fa3_fp8_per_head, graph_bench_ms, load_fa3, load_sage)

import fp8attn  # noqa: E402
from fp8attn import Recipe  # noqa: E402
from fp8attn.attention.reference import attention_oracle, fp8_flash_emulation  # noqa: E402
from fp8attn.attention import gluon_dispatch  # noqa: E402
from fp8attn.attention.triton_fwd import attention_fwd_fp8  # noqa: E402
from fp8attn.quant import KEY_ORDERS, quantize_qkv  # noqa: E402

IMPLS = ["ours_kernel", "ours_e2e", "fa3_fp8", "fa3_bf16", "sdpa_flash", "sdpa_cudnn", "sage"]
# (ours, peer, ratio heading): both also timed on the GPU alone (row keys NAME_gpu)
GPU_PAIRS = (("ours_kernel", "fa3_fp8", "kernel / FA3 FP8"),
             ("ours_e2e", "fa3_bf16", "e2e / FA3 BF16"))
GPU_TIME = tuple(n for pair in GPU_PAIRS for n in pair[:2])


def _suffix(q_terms: int) -> str:
    """Row-name suffix of a q_terms value: "" for the default 1 (names unchanged), else "_q2"."""
    return "" if q_terms == 1 else f"_q{q_terms}"


def impls(q_terms=(1,), tl=False) -> list:
    """Row names: ours_kernel / ours_e2e once per q_terms value (and with the Gluon path off
    with `tl`), then the peers."""
    ours = [f"ours_{v}{_suffix(t)}" for t in q_terms for v in ("kernel", "e2e")]
    if tl:
        ours += ["ours_kernel_tl", "ours_e2e_tl"]
    return ours + IMPLS[2:]


@contextlib.contextmanager
def _tl_env(on: bool):
    """FP8ATTN_GLUON=0 (attention/gluon_dispatch.py) while timing the _tl rows; the other rows
    run with the environment as it is."""
    old = os.environ.get("FP8ATTN_GLUON")
    if on:
        os.environ["FP8ATTN_GLUON"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FP8ATTN_GLUON", None)
        else:
            os.environ["FP8ATTN_GLUON"] = old


def _sdpa(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]

    def run(q, k, v, causal):
        with sdpa_kernel([b]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def throughput(hdims, seqlens, log, q_terms=(1,), tl=False):
    fa3, why_fa3 = load_fa3()
    sage, why_sage = load_sage()
    log(f"fa3: {why_fa3 or 'ok'}; sage: {why_sage or 'ok'}")
    rows = []
    for d in hdims:
        for s in seqlens:
            b, h = 16384 // s, 2048 // d
            g = torch.Generator(device="cuda").manual_seed(s + d)
            q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
                       for _ in range(3))
            qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
            # V^T in both key orders: the package's path reads "mma" where the Gluon kernel runs
            quant = {(t, o): quantize_qkv(qh, kh, vh, Recipe(q_terms=t), v_key_order=o)
                     for t in q_terms for o in KEY_ORDERS}
            ones = torch.ones(b, h, device="cuda")
            qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
            qc, kc, vc = (x.contiguous() for x in (qh, kh, vh))
            for causal in (False, True):
                out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
                fns = {
                    "sdpa_flash": lambda: _sdpa("flash")(qc, kc, vc, causal),
                    "sdpa_cudnn": lambda: _sdpa("cudnn")(qc, kc, vc, causal),
                }
                c = "bottom_right" if causal else None

                def kernel(t, order, c=c, out=out):
                    q8, k8, v8 = quant[(t, order)]
                    return lambda: attention_fwd_fp8(
                        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                        q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                        softmax_scale=d ** -0.5, causal=c, out=out, q_lo=q8.residual,
                        v_key_order=order)

                for t in q_terms:
                    # the V^T key order the package quantises into for this call
                    order = gluon_dispatch.v_key_order_for(
                        qh, kh, fmt="e4m3", granularity="block", block_kv=128, causal=c,
                        varlen=False, two_terms=t == 2, out_dtype=out.dtype)
                    fns["ours_kernel" + _suffix(t)] = kernel(t, order)
                    fns["ours_e2e" + _suffix(t)] = (
                        lambda r=Recipe(q_terms=t): fp8attn.flash_attn_func(q, k, v, causal=causal,
                                                                            recipe=r))
                row = dict(hdim=d, seqlen=s, batch=b, heads=h, causal=causal)
                q8, k8, v8 = quant[(q_terms[0], "mma")]
                why = gluon_dispatch.why_not(
                    q8.data, k8.data, v8.data, k_block=k8.block_size, v_block=v8.block_size,
                    causal="bottom_right" if causal else None, varlen=False, q_lo=q8.residual,
                    out_dtype=out.dtype, acc_mode="tile", config=None, v_key_order="mma")
                row["path"] = "gluon" if why is None else f"tl ({why})"
                if tl and why is None:
                    fns["ours_kernel_tl"] = kernel(q_terms[0], "natural")
                    fns["ours_e2e_tl"] = fns["ours_e2e" + _suffix(q_terms[0])]
                if fa3 is not None:
                    fns["fa3_fp8"] = lambda: fa3_out(fa3.flash_attn_func(
                        qf, kf, vf, causal=causal, q_descale=ones, k_descale=ones, v_descale=ones))
                    fns["fa3_bf16"] = lambda: fa3_out(fa3.flash_attn_func(q, k, v, causal=causal))
                if sage is not None:
                    fns["sage"] = lambda: sage.sageattn(qc, kc, vc, tensor_layout="HND",
                                                        is_causal=causal)
                fl = attn_flops(b, h, s, s, d, causal)
                for name in impls(q_terms, tl):
                    if name not in fns:
                        continue
                    try:
                        with _tl_env(name.endswith("_tl")):
                            row[name] = fl / bench_ms(fns[name]) * 1e-9
                    except Exception as e:  # noqa: BLE001 - a peer may not support a shape
                        row[name] = None
                        row[name + "_error"] = f"{type(e).__name__}: {str(e)[:160]}"
                    if name in GPU_TIME and row[name]:
                        try:
                            row[name + "_gpu"] = fl / graph_bench_ms(fns[name]) * 1e-9
                        except Exception as e:  # noqa: BLE001 - a call that cannot be captured
                            row[name + "_gpu_error"] = f"{type(e).__name__}: {str(e)[:160]}"
                log(json.dumps(row))
                rows.append(row)
            del q, k, v, quant, qf, kf, vf, qc, kc, vc
            torch.cuda.empty_cache()
    return rows


def accuracy(log, cpu_emulation=True, q_terms=(1,)):
    """FA3's accuracy setting; RMSE of every output entry against the float64 oracle."""
    fa3, _ = load_fa3()
    q, k, v = fa3_accuracy_inputs()
    res = {}
    for causal in (False, True):
        c = "top_left" if causal else None
        tag = "causal" if causal else "non_causal"
        ref = attention_oracle(q, k, v, causal=c)

        def err(o, bshd=False):
            o = o.transpose(1, 2) if bshd else o
            return (o.double() - ref).pow(2).mean().sqrt().item()

        res[f"ours_{tag}"] = err(fp8attn.scaled_dot_product_attention(
            q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=causal).float())
        res[f"ours_fp32_io_{tag}"] = err(fp8attn.scaled_dot_product_attention(q, k, v,
                                                                              is_causal=causal))
        if cpu_emulation:
            emu = fp8_flash_emulation(q.cpu(), k.cpu(), v.cpu(), causal=c)
            res[f"emulation_cpu_{tag}"] = err(emu.cuda())
        for t in q_terms:
            if t == 1:
                continue
            r = Recipe(q_terms=t)
            res[f"ours_q{t}_{tag}"] = err(fp8attn.scaled_dot_product_attention(
                q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=causal, recipe=r).float())
            res[f"ours_q{t}_fp32_io_{tag}"] = err(fp8attn.scaled_dot_product_attention(
                q, k, v, is_causal=causal, recipe=r))
            if cpu_emulation:
                emu = fp8_flash_emulation(q.cpu(), k.cpu(), v.cpu(), causal=c, recipe=r)
                res[f"emulation_cpu_q{t}_{tag}"] = err(emu.cuda())
        if fa3 is not None:
            qb, kb, vb = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            res[f"fa3_bf16_{tag}"] = err(fa3_out(fa3.flash_attn_func(
                qb.bfloat16(), kb.bfloat16(), vb.bfloat16(), causal=causal)).float(), True)
            for rot in (False, True):
                o = fa3_fp8_per_head(fa3, qb, kb, vb, causal, rot)
                res[f"fa3_fp8_per_head{'_hadamard' if rot else ''}_{tag}"] = err(o.float(), True)
    log(json.dumps(res))
    return res


def markdown(env, rows, acc, q_terms=(1,), tl=False) -> str:
    names = {"fa3_fp8": "FA3 FP8", "fa3_bf16": "FA3 BF16", "sdpa_flash": "SDPA flash",
             "sdpa_cudnn": "SDPA cuDNN", "sage": "Sage", "ours_kernel_tl": "ours kernel tl",
             "ours_e2e_tl": "ours e2e tl"}
    for t in q_terms:
        for v in ("kernel", "e2e"):
            names[f"ours_{v}{_suffix(t)}"] = f"ours {v}" + (f" q{t}" if t != 1 else "")
    present = [n for n in impls(q_terms, tl) if any(r.get(n) for r in rows)]
    pairs = [p for p in GPU_PAIRS if any(r.get(p[0] + "_gpu") for r in rows)]
    gpu = [n + "_gpu" for p in pairs for n in p[:2]]
    names.update({n + "_gpu": names[n] + ", GPU time" for p in pairs for n in p[:2]})
    tl_cols = tl and "ours_kernel_tl" in present
    lines = [f"### FP8 attention forward, {env.get('device')} ({env['date']}), torch {env['torch']}, "
             f"triton {env['triton']}",
             "",
             "TFLOP/s (16k tokens per batch, hidden 2048; do_bench median). ours kernel = FP8 "
             "inputs ready; ours e2e = bf16 in, rotate + quantise + attend, bf16 out; path = the "
             "kernel the package's default path ran (gluon or tl); GPU time = the same call "
             "replayed from a CUDA graph (L2 cleared, no host time counted).",
             "",
             "| hdim | seqlen | causal | path | " + " | ".join(names[n] for n in present + gpu)
             + " | kernel / FA3 FP8 | e2e / FA3 BF16 |"
             + "".join(f" {p[2]}, GPU time |" for p in pairs)
             + "".join(f" kernel q{t} / q1 | kernel q{t} / FA3 FP8 |" for t in q_terms if t != 1)
             + (" kernel / tl | e2e / tl |" if tl_cols else ""),
             "|" + "---|" * (4 + len(present) + len(gpu) + 2 + len(pairs)
                             + 2 * sum(t != 1 for t in q_terms) + 2 * tl_cols)]
    for r in rows:
        cells = [f"{r[n]:.0f}" if r.get(n) else "-" for n in present + gpu]
        k_ratio = (f"{r['ours_kernel'] / r['fa3_fp8']:.2f}" if r.get("ours_kernel") and r.get("fa3_fp8")
                   else "-")
        e_ratio = (f"{r['ours_e2e'] / r['fa3_bf16']:.2f}" if r.get("ours_e2e") and r.get("fa3_bf16")
                   else "-")
        extra = ""
        for mine, peer, _ in pairs:
            a, b = r.get(mine + "_gpu"), r.get(peer + "_gpu")
            extra += f" {a / b:.2f} |" if a and b else " - |"
        for t in q_terms:
            if t == 1:
                continue
            kq = r.get(f"ours_kernel_q{t}")
            extra += (f" {kq / r['ours_kernel']:.2f} |" if kq and r.get("ours_kernel") else " - |")
            extra += f" {kq / r['fa3_fp8']:.2f} |" if kq and r.get("fa3_fp8") else " - |"
        if tl_cols:
            for mine, base in (("ours_kernel", "ours_kernel_tl"), ("ours_e2e", "ours_e2e_tl")):
                a, b = r.get(mine), r.get(base)
                extra += f" {a / b:.2f} |" if a and b else " - |"
        path = r.get("path", "-").split(" (")[0]
        lines.append(f"| {r['hdim']} | {r['seqlen']} | {'yes' if r['causal'] else 'no'} | {path} | "
                     + " | ".join(cells) + f" | {k_ratio} | {e_ratio} |" + extra)
    if acc:
        lines += ["", "Accuracy, FA3 outlier distribution (B 2, H 16, S 2048, D 128), RMSE vs "
                      "float64 oracle:", "", "| method | non-causal | causal |", "|---|---|---|"]
        keys = sorted({k.rsplit("_non_causal", 1)[0] for k in acc if k.endswith("_non_causal")})
        for key in keys:
            nc, c = acc.get(f"{key}_non_causal"), acc.get(f"{key}_causal")
            lines.append(f"| {key} | {nc:.2e} | " + (f"{c:.2e}" if c is not None else "-") + " |")
    return "\n".join(lines) + "\n"


def plot(rows, path, q_terms=(1,), tl=False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hdims = sorted({r["hdim"] for r in rows})
    fig, axes = plt.subplots(2, len(hdims), figsize=(5 * len(hdims), 8), squeeze=False)
    for j, d in enumerate(hdims):
        for i, causal in enumerate((False, True)):
            ax = axes[i][j]
            sub = [r for r in rows if r["hdim"] == d and r["causal"] == causal]
            for n in impls(q_terms, tl):
                pts = [(r["seqlen"], r[n]) for r in sub if r.get(n)]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=n)
            ax.set_xscale("log", base=2)
            ax.set_title(f"hdim {d}, {'causal' if causal else 'non-causal'}")
            ax.set_xlabel("seqlen")
            ax.set_ylabel("TFLOP/s")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="head dims 64/128/256 at 1k, 4k, 16k only")
    ap.add_argument("--hdims", default="64,128,256")
    ap.add_argument("--seqlens", default=None,
                    help="comma-separated seqlens (default: 1024,4096,16384 with --quick, else "
                         "512 ... 16384)")
    ap.add_argument("--q-terms", default="1",
                    help="comma-separated Recipe.q_terms values timed for ours (e.g. 1,2: the "
                         "two-term Q rows beside the default ones); default 1")
    ap.add_argument("--tl", action="store_true",
                    help="also time ours with FP8ATTN_GLUON=0 (the tl kernel) where the Gluon "
                         "kernel takes the call by default (rows *_tl)")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-cpu-emulation", action="store_true",
                    help="accuracy without the CPU emulation rows (they take ~10 s each)")
    ap.add_argument("--append-results", default=None, metavar="FILE",
                    help="also append the markdown table to FILE (e.g. benchmarks/RESULTS.md, when "
                         "the run's checkout is the one you commit from)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention needs a CUDA GPU")
    os.makedirs(a.out, exist_ok=True)
    env = environment()
    env["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def log(x):
        print(x, flush=True)

    log(json.dumps(env))
    seqlens = [1024, 4096, 16384] if a.quick else [512, 1024, 2048, 4096, 8192, 16384]
    if a.seqlens:
        seqlens = [int(x) for x in a.seqlens.split(",")]
    hdims = [int(x) for x in a.hdims.split(",")]
    q_terms = tuple(int(x) for x in a.q_terms.split(","))
    for t in q_terms:
        Recipe(q_terms=t)                       # validates
    log(f"shapes: batch = 16384 / seqlen, heads = 2048 / hdim, hdims {hdims}, seqlens {seqlens}")
    acc = {} if a.no_accuracy else accuracy(log, cpu_emulation=not a.no_cpu_emulation,
                                            q_terms=q_terms)
    rows = throughput(hdims, seqlens, log, q_terms, a.tl)
    with open(os.path.join(a.out, "bench_attention.json"), "w") as f:
        json.dump({"env": env, "throughput": rows, "accuracy": acc}, f, indent=1)
    md = markdown(env, rows, acc, q_terms, a.tl)
    with open(os.path.join(a.out, "bench_attention.md"), "w") as f:
        f.write(md)
    plot(rows, os.path.join(a.out, "bench_attention.png"), q_terms, a.tl)
    if a.append_results:
        with open(a.append_results, "a") as f:
            f.write("\n" + md)
    print(md)


if __name__ == "__main__":
    main()
