"""The dense quantiser's two launches (Q + K rotated in one `_pairs_kernel` launch; V transposed
in the "mma" key order) under other configs than the first that fits, and the varlen layout
launch (`padded_rows._layout_kernel`, one program) under other block sizes and warp counts.

Session 38 (probe_quant_split.py, H200): V transposed at 69% of a copy's bandwidth and Q + K at
84%, with the empty graph's 4.9 us taken off; the layout launch 7.9 us above an empty graph.
Offline (sm_90a, Triton 3.6): Q + K's first config (128 rows, 4 warps, maxnreg 168) spills
932 B, V's 188 B (215 registers without the cap, none spilled; 8 warps at 128: none).

    PYTHONPATH=/tmp/site:$PWD python benchmarks/experiments/probe_quant_configs.py [--json F]

GPU time from a one-call CUDA graph (L2 cleared before each replay), microseconds; every
config's FP8 bits and descales are compared with the default's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import cuda_absent, graph_bench_ms, write_json  # noqa: E402

from fp8attn import kernel_launch  # noqa: E402
from fp8attn.hadamard.reference import cached_hadamard_signs  # noqa: E402
from fp8attn.quant import quantize  # noqa: E402
from fp8attn.quant import triton_pairs  # noqa: E402
from fp8attn.quant.padded_rows import _layout_kernel  # noqa: E402
from fp8attn.quant.triton import quantize_pair_triton  # noqa: E402

# (BLOCK_S, R_LO, DQ, warps, maxnreg); the first of each list is the default
V_CONFIGS = [(128, 4, 4, 4, 168), (128, 4, 4, 4, None), (128, 4, 4, 4, 200),
             (128, 4, 8, 8, 128), (128, 4, 8, 8, None), (256, 4, 4, 8, None), (256, 4, 4, 8, 128)]
QK_CONFIGS = [(128, 1, 1, 4, 168), (128, 1, 1, 4, None), (128, 1, 1, 4, 200),
              (128, 1, 1, 4, 232), (128, 1, 1, 4, 128)]
LAYOUT_CONFIGS = [(1024, 4), (1024, 1), (128, 4), (128, 1), (32, 1)]


def forced(config, transpose):
    """A stand-in for triton_pairs._pairs_first_config that returns `config` for the launches
    of the given kind (transpose or not) and the module's choice for the others."""
    original = triton_pairs._pairs_first_config
    s, r, q, w, n = config
    c = triton.Config({"BLOCK_S": s, "R_LO": r, "DQ": q}, num_warps=w, maxnreg=n)

    def pick(p, bs, rotate, tr):
        return c if tr == transpose else original(p, bs, rotate, tr)
    return original, pick


def same(a, b) -> bool:
    return all(torch.equal(x.data.view(torch.uint8), y.data.view(torch.uint8))
               and torch.equal(x.descale, y.descale) for x, y in zip(a, b))


def time_configs(name, configs, transpose, call):
    rows, base = [], None
    for cfg in configs:
        original, pick = forced(cfg, transpose)
        triton_pairs._pairs_first_config = pick
        try:
            res = call()
            res = res if isinstance(res, tuple) else (res,)
            base = base or res
            rows.append(dict(step=name, config=list(cfg), us=round(graph_bench_ms(call) * 1e3, 1),
                             same_bits=same(res, base)))
        except Exception as e:  # noqa: BLE001 - a config that does not compile: say so, go on
            rows.append(dict(step=name, config=list(cfg), error=f"{type(e).__name__}: "
                                                                  f"{str(e)[:200]}"))
        finally:
            triton_pairs._pairs_first_config = original
        print(json.dumps(rows[-1]), flush=True)
    return rows


def time_layout(nseq, seqlen):
    rows = []
    total = nseq * seqlen
    cu = torch.arange(0, total + 1, seqlen, device="cuda", dtype=torch.int32)
    n_tiles = (total + nseq * 127 + 127) // 128
    outs = []
    for block, warps in LAYOUT_CONFIGS:
        starts = torch.empty(nseq, dtype=torch.int32, device="cuda")
        tiles = torch.empty(n_tiles, 2, dtype=torch.int32, device="cuda")
        seqs = torch.empty(n_tiles, dtype=torch.int32, device="cuda")

        def call():
            kernel_launch.launch_call(_layout_kernel, (1,), cu, starts, tiles, seqs, nseq, total,
                                      n_tiles, ALIGN=128, BLOCK=block, SEQS=True,
                                      num_warps=warps)
        call()
        outs.append((starts.clone(), tiles.clone(), seqs.clone()))
        ok = all(torch.equal(a, b) for a, b in zip(outs[0], outs[-1]))
        rows.append(dict(step="layout", nseq=nseq, block=block, warps=warps,
                         us=round(graph_bench_ms(call) * 1e3, 1), same=ok))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if cuda_absent():
        return
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    one = torch.zeros(1, device="cuda")
    rows.append(dict(step="empty", us=round(graph_bench_ms(lambda: one.add_(1)) * 1e3, 1)))
    print(json.dumps(rows[-1]), flush=True)
    for B, S, H in ((8, 2048, 16), (4, 4096, 32)):
        q, k, v = (torch.randn(B, S, H, 128, generator=g, device="cuda",
                               dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
        signs = cached_hadamard_signs(128, 0, "cuda")
        print(f"# (B, S, H, D) = ({B}, {S}, {H}, 128)", flush=True)
        for r in (time_configs("v", V_CONFIGS, True, lambda: quantize(
                      v, "e4m3", "block", 128, transpose=True, key_order="mma"))
                  + time_configs("qk", QK_CONFIGS, False, lambda: quantize_pair_triton(
                      q, k, "e4m3", "block", 128, 128, signs=signs)[:2])):
            rows.append(dict(r, shape=[B, S, H, 128]))
    for nseq, seqlen in ((8, 2048), (64, 256)):
        rows += time_layout(nseq, seqlen)
    write_json(a.json, rows)


if __name__ == "__main__":
    main()
