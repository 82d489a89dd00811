"""How much the accuracy figure moves between draws of FA3's outlier data (CPU emulation).

    PYTHONPATH=. python benchmarks/experiments/rmse_draws.py [--seeds 20] [--json out.json]

RESULTS.md's accuracy rows come from one draw (common.fa3_accuracy_inputs: CUDA generator,
seed 0). This draws the same distribution, N(0, 1) + N(0, 100) * Bernoulli(0.001), of FA3's
shape (2, 16, 2048, 128) from the CPU generator with seeds 0.. and reports the default recipe's
RMSE against the float64 oracle per draw, with fp32 and bf16 inputs (the CPU emulation: the
GPU kernel gave the same figure on the same draw, RESULTS.md), and optionally with
Recipe(q_search=n) for each n of --q-search (session 13) and with Recipe(granularity=g) for
each g of --granularities (session 18: is FA3's per-head scaling better than our per-block
one on some draws?), fp32 inputs.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

import fp8attn
from fp8attn import Recipe
from fp8attn.attention.reference import attention_oracle

SHAPE = (2, 16, 2048, 128)


def draw(gen):
    x = torch.randn(*SHAPE, generator=gen)
    big = torch.rand(*SHAPE, generator=gen) < 1e-3
    return x + 10.0 * torch.randn(*SHAPE, generator=gen) * big


def rmse(out, ref) -> float:
    return (out.double() - ref).pow(2).mean().sqrt().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--q-search", default="",
                    help="comma-separated Recipe.q_search values to add (fp32 inputs)")
    ap.add_argument("--granularities", default="",
                    help="comma-separated Recipe.granularity values to add (fp32 inputs)")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    for seed in range(a.seeds):
        g = torch.Generator().manual_seed(seed)
        q, k, v = draw(g), draw(g), draw(g)
        ref = attention_oracle(q, k, v)
        row = dict(seed=seed,
                   fp32_in=rmse(fp8attn.scaled_dot_product_attention(q, k, v, recipe=Recipe()),
                                ref),
                   bf16_in=rmse(fp8attn.scaled_dot_product_attention(
                       *(x.bfloat16().float() for x in (q, k, v)), recipe=Recipe()), ref))
        for n in filter(None, a.q_search.split(",")):
            row[f"q_search_{n}"] = rmse(fp8attn.scaled_dot_product_attention(
                q, k, v, recipe=Recipe(q_search=int(n))), ref)
        for gr in filter(None, a.granularities.split(",")):
            row[f"granularity_{gr}"] = rmse(fp8attn.scaled_dot_product_attention(
                q, k, v, recipe=Recipe(granularity=gr)), ref)
        rows.append(row)
        print(f"seed {seed:2d}: " + ", ".join(f"{k} {v:.3e}" for k, v in row.items()
                                              if k != "seed"), flush=True)
    for key in [k for k in rows[0] if k != "seed"]:
        xs = [r[key] for r in rows]
        print(f"{key}: mean {statistics.mean(xs):.3e}, sd {statistics.stdev(xs):.2e}, "
              f"min {min(xs):.3e}, max {max(xs):.3e}, above 8.5e-3: {sum(x > 8.5e-3 for x in xs)}"
              f" of {len(xs)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(shape=SHAPE, torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
