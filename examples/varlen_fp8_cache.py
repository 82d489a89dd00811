"""Variable-length batches with an FP8 KV cache, as a serving engine would hold one.

    python examples/varlen_fp8_cache.py [--device cuda] [--seed 0]

Five prompts of different lengths, packed FA3-style (GQA: 8 query heads, 2 KV heads, head dim
128; a few large channels in Q and K, as trained LLMs show), attend causally through
fp8attn.flash_attn_varlen_func three ways:

  bf16 in        the library rotates and quantises Q, K and V itself (the default recipe);
  FP8 cache      K and V stored in e4m3 with one descale per (sequence, KV head), Q likewise per
                 (sequence, head), handed over pre-quantised with FA3's descale arguments;
  rotated cache  the same, but Q and K multiplied by one random Hadamard matrix before they are
                 quantised (fp8attn.random_hadamard_transform, one seed for both): Q K^T does not
                 change, and the large channels are spread over all 128, so one scale per head
                 no longer spends its range on them.

Each output's relative RMSE against float64 attention on the bf16 inputs, per sequence and over
the batch. On a CPU the calls run fp8attn's emulation of the kernels; on an sm_90 GPU the
kernels themselves.
"""
from __future__ import annotations

import argparse

import torch

import fp8attn
from fp8attn.attention.reference import attention_oracle

LENGTHS = (37, 300, 5, 129, 64)
HQ, HKV, D = 8, 2, 128
E4M3_MAX = 448.0


def packed_inputs(seed: int, device: str, lengths=LENGTHS):
    """bf16 q (total, HQ, D), k / v (total, HKV, D) and int32 cu_seqlens; channel 3 of every
    Q and K head scaled up 10x (the same channel in both: large scores)."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q = torch.randn(total, HQ, D, generator=g)
    k, v = (torch.randn(total, HKV, D, generator=g) for _ in range(2))
    q[..., 3] *= 10.0
    k[..., 3] *= 10.0
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return [x.to(torch.bfloat16).to(device) for x in (q, k, v)] + [cu.to(device)]


def quantize_per_sequence(x: torch.Tensor, cu: torch.Tensor):
    """x (total, H, D) -> (e4m3 data, descale (nseq, H)): one scale per sequence and head, from
    its largest magnitude (x ~= data * descale), as an FP8 KV cache stores K and V."""
    bounds = cu.tolist()
    descale = torch.stack([x[a:b].float().abs().amax(dim=(0, 2)) for a, b in
                           zip(bounds[:-1], bounds[1:])]).clamp_min(1e-12) / E4M3_MAX
    rows = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=x.device),
                                   cu.diff().long())
    data = (x.float() / descale[rows][:, :, None]).to(torch.float8_e4m3fn)
    return data, descale


def reference(q, k, v, cu):
    """float64 causal attention of each sequence, packed like q."""
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    bounds = cu.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        o = attention_oracle(*(x[a:b].transpose(0, 1)[None] for x in (q, k, v)),
                             causal="bottom_right")
        out[a:b] = o[0].transpose(0, 1)
    return out


def rel_rmse(out, ref):
    o, r = out.double(), ref.double()
    return float((o - r).pow(2).mean().sqrt() / r.pow(2).mean().sqrt())


def run(device: str = "cpu", seed: int = 0, lengths=LENGTHS) -> dict:
    """{way: {"batch": relative RMSE, "per_sequence": [...]}} for the three ways."""
    q, k, v, cu = packed_inputs(seed, device, lengths)
    longest = max(lengths)
    ref = reference(q, k, v, cu)
    outs = {"bf16 in": fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, longest, longest,
                                                      causal=True)}
    for name, rotate in (("FP8 cache", False), ("rotated cache", True)):
        qr, kr = ((fp8attn.random_hadamard_transform(x, seed=seed) for x in (q, k)) if rotate
                  else (q, k))
        (q8, qd), (k8, kd), (v8, vd) = (quantize_per_sequence(x, cu) for x in (qr, kr, v))
        outs[name] = fp8attn.flash_attn_varlen_func(q8, k8, v8, cu, cu, longest, longest,
                                                    causal=True, q_descale=qd, k_descale=kd,
                                                    v_descale=vd)
    bounds = cu.tolist()
    return {name: {"batch": rel_rmse(out, ref),
                   "per_sequence": [rel_rmse(out[a:b], ref[a:b])
                                    for a, b in zip(bounds[:-1], bounds[1:])]}
            for name, out in outs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    res = run(a.device, a.seed)
    print(f"relative RMSE against float64 attention, {len(LENGTHS)} sequences of "
          f"{', '.join(map(str, LENGTHS))} tokens, causal, {HQ} / {HKV} heads, head dim {D}, "
          f"on {a.device}")
    print(f"| way | batch | {' | '.join(f'seq {n}' for n in LENGTHS)} |")
    print(f"|---|---|{'---|' * len(LENGTHS)}")
    for name, r in res.items():
        cells = " | ".join(f"{e:.2e}" for e in r["per_sequence"])
        print(f"| {name} | {r['batch']:.2e} | {cells} |")


if __name__ == "__main__":
    main()
