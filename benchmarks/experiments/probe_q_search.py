"""Probe (GPU): cost and gain of Recipe.q_search (per-row Q scale search in the quantiser).

(1) RMSE against the float64 oracle on FA3's outlier data (the bench_attention.py accuracy draw,
(2, 16, 2048, 128), bf16 in) for q_search 1 / 4, non-causal and causal; (2) the time of
quantize_qkv and of the whole call (fp8attn.flash_attn_func, bf16 in and out) for q_search 1 / 4
at FA3's benchmark shapes, beside FA3 BF16 (end-to-end target peer).

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/probe_q_search.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import attn_flops, bench_ms, fa3_accuracy_inputs, fa3_out, load_fa3  # noqa: E402

import fp8attn  # noqa: E402
from fp8attn import Recipe  # noqa: E402
from fp8attn.attention.reference import attention_oracle  # noqa: E402
from fp8attn.quant import quantize_qkv  # noqa: E402

SEARCHES = (1, 4)


def accuracy(log):
    q, k, v = fa3_accuracy_inputs()
    res = {}
    for causal in (False, True):
        ref = attention_oracle(q, k, v, causal="top_left" if causal else None)
        for n in SEARCHES:
            for terms in (1,):
                out = fp8attn.scaled_dot_product_attention(
                    q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=causal,
                    recipe=Recipe(q_search=n, q_terms=terms))
                key = f"q_search{n}{'_q2' if terms == 2 else ''}_{'causal' if causal else 'non_causal'}"
                res[key] = (out.double() - ref).pow(2).mean().sqrt().item()
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
            q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
                       for _ in range(3))
            qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
            for causal in (False, True):
                row = dict(hdim=d, seqlen=s, causal=causal)
                fl = attn_flops(b, h, s, s, d, causal)
                for n in SEARCHES[:2]:
                    r = Recipe(q_search=n)
                    if not causal:
                        row[f"quant_ms_s{n}"] = round(bench_ms(lambda r=r: quantize_qkv(qh, kh, vh, r)), 4)
                    row[f"e2e_s{n}"] = round(fl / bench_ms(
                        lambda r=r: fp8attn.flash_attn_func(q, k, v, causal=causal, recipe=r)) * 1e-9, 1)
                if fa3 is not None:
                    row["fa3_bf16"] = round(fl / bench_ms(
                        lambda: fa3_out(fa3.flash_attn_func(q, k, v, causal=causal))) * 1e-9, 1)
                log(json.dumps(row))
                rows.append(row)
            del q, k, v, qh, kh, vh
            torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--hdims", default="128")
    ap.add_argument("--seqlens", default="4096,16384")
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
