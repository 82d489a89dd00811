"""Where head-dim-256 causal Gluon calls differ from the tl kernel's bits (session 13 probe)."""
import os
import sys

import torch

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "benchmarks")]
from common import quantized_randn  # noqa: E402
from fp8attn.attention import triton_fwd  # noqa: E402
from fp8attn.attention.gluon_fwd import gluon_attention_fwd, VARIANTS  # noqa: E402

TL = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3, "SPLIT": 2,
      "REVERSE": False}


def quantized(b, hq, hkv, sq, sk, seed, order):
    return quantized_randn(b, hq, hkv, sq, sk, 256, seed, order)[1]


def tl(q8, k8, v8, causal, cfg):
    return triton_fwd.attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=256 ** -0.5, causal=causal,
        return_lse=True, config=cfg, v_key_order=v8.key_order)


def describe(tag, got, ref, off):
    bad = (got != ref)
    where = bad.nonzero()
    print(f"{tag}: {len(where)} elements differ, {bad.any(-1).sum().item()} rows")
    for bb, hh, rr, cc in where[:6].tolist():
        g, r = got[bb, hh, rr, cc].item(), ref[bb, hh, rr, cc].item()
        print(f"   b {bb} h {hh} row {rr} (row%128 {rr % 128}, row%64 {rr % 64}; last key "
              f"{rr + off}, its tile {(rr + off) // 64} at {(rr + off) % 64}) col {cc}: "
              f"got {g:.6g} ref {r:.6g}")


for (b, hq, hkv, sq, sk, causal, seed) in [(1, 4, 4, 4096, 4096, "top_left", 4096 + 3 * 4096),
                                           (2, 3, 3, 1000, 4200, "bottom_right", 1000 + 3 * 4200),
                                           (1, 4, 4, 4096, 4096, None, 4096 + 3 * 4096)]:
    off = 0 if causal != "bottom_right" else sk - sq
    q8, k8, v8 = quantized(b, hq, hkv, sq, sk, seed, "mma")
    ref, ref_lse = tl(q8, k8, v8, causal, TL)
    print(f"== {(b, hq, hkv, sq, sk)} {causal}")
    got = gluon_attention_fwd(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                              q8.block_size, k8.block_size, v8.block_size, 256 ** -0.5,
                              causal=causal, v_key_order=v8.key_order,
                              **VARIANTS["pingpong_n64_s3_pipe"])
    torch.cuda.synchronize()
    describe("gluon vs tl BM64", got, ref, off)
    for cfg in ({**TL, "BLOCK_M": 128}, {**TL, "SPLIT": 4}, {**TL, "BLOCK_N": 32}):
        try:
            alt, alt_lse = tl(q8, k8, v8, causal, cfg)
            describe(f"tl {cfg} vs tl BM64", alt, ref, off)
            print("   lse equal", torch.equal(alt_lse, ref_lse))
            describe(f"gluon vs tl {cfg}", got, alt, off)
        except Exception as e:  # noqa: BLE001
            print("   config failed:", type(e).__name__, str(e)[:200])
