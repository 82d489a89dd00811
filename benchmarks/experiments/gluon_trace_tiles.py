"""Where the head-dim-256 Gluon kernel's time goes inside a KV tile: SM clock stamps (session 18).

    PYTHONPATH=. python benchmarks/experiments/gluon_trace_tiles.py [--variants a,b]
        [--seqlens 4096,16384] [--causal top_left] [--json out.json]

gluon_attention_fwd(..., trace=buf) on the non-persistent head-dim > 128 kernel (one CTA per
query block and head; gluon_fwd._tile_split) has each consumer warpgroup write %clock64 at five
points of each of its first TRACE_ITEMS KV tiles: 0 entry, 1 S issued (its ping-pong turn
held), 2 S ready, 3 softmax and P done, 4 P @ V turn held (more stamps made ptxas spill). Per
variant and shape this prints medians over CTAs, both warpgroups and the tiles after the
first two (the pipeline filling) in clock cycles:
  s_turn     0 -> 1  waiting for K's load and the turn to issue S
  s_gemm     1 -> 2  S = Q K^T from issue to ready
  softmax    2 -> 3  the online softmax and P's packing
  pv_turn    3 -> 4  waiting for V's load and the turn to issue P @ V
  pv         4 -> next tile's 0: the four P @ V parts and their adds
  tile       0 -> next tile's 0
and, per CTA (analyse_cta): q_wait, to_tile0, loop, store and cta (the whole CTA); from the
GPU-wide timer (analyse_gaps, in ns): cta_ns, gap_ns (an SM idle between two CTAs) and
gap_share (the idle share of an SM's span).
Stamps come from one SM's clock, so they compare within a CTA only. A 64-key tile-time at
the tensor cores' peak (64 x 64 x 256 x 2 x 2 FLOP a warpgroup, ~8192 dense FP8 FLOP a clock
an SM) is 512 cycles a warpgroup, 1024 for the pair; twice that for a 128-key tile. The
default variant is the dispatched one (128-key tiles since session 19, no turns since 21).
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

from gluon_gpu_check import _inputs  # noqa: E402
from gluon_trace import median, trace_cli, traced_call  # noqa: E402
import gluon_gpu_check  # noqa: E402

from fp8attn.attention import gluon_fwd  # noqa: E402

SEGMENTS = [("s_turn", 0, 1), ("s_gemm", 1, 2), ("softmax", 2, 3), ("pv_turn", 3, 4)]
BLOCK_M, HEAD_DIM = 128, 256


def _run(name, b, h, s, causal):
    cfg = gluon_fwd.VARIANTS[name]
    gluon_gpu_check.CAUSAL = causal
    gluon_gpu_check.HDIM = HEAD_DIM
    _, (q8, k8, v8) = _inputs(b, h, h, s, s, seed=s, v_key_order="mma")
    # one CTA per (query block, head), or persistent CTAs, one per SM at most (their slots
    # then hold each CTA's last work item: same tiles per item non-causal); cfg carries block_n
    n_ctas = -(-s // BLOCK_M) * b * h
    if cfg.get("persistent"):
        n_ctas = min(n_ctas, gluon_fwd._sm_count(q8.data.device))
    return traced_call(q8, k8, v8, cfg, causal, n_ctas)


def analyse(trace):
    """Medians of SEGMENTS and of the tile period over every CTA, warpgroup and tile 2 .. 30
    (slot TRACE_ITEMS - 1 holds whichever tile came last, so it is left out)."""
    seg = {k: [] for k, _, _ in SEGMENTS}
    seg["pv"] = []
    seg["tile"] = []
    n_ctas, _, items, _ = trace.shape
    for c in range(n_ctas):
        for wg in (0, 1):
            t = trace[c, wg].tolist()
            for j in range(2, items - 1):
                st = t[j]
                if min(st[:5]) <= 0:
                    break                       # this CTA has no tile j
                for k, a, z in SEGMENTS:
                    seg[k].append(st[z] - st[a])
                if j + 1 < items - 1 and t[j + 1][0] > 0:
                    seg["pv"].append(t[j + 1][0] - st[4])
                    seg["tile"].append(t[j + 1][0] - st[0])
    seg.update(analyse_cta(trace))
    out = {k: dict(cycles=median(v), n=len(v)) for k, v in seg.items()}
    out.update({k: dict(value=median(v), n=len(v)) for k, v in analyse_gaps(trace).items()})
    return out


# a CTA's own stamps (_consumer_split): (slot, index) of entry, Q ready, loop end, stored
CTA_STAMPS = dict(entry=(0, 5), q_ready=(0, 6), loop_end=(1, 5), stored=(0, 7))


def analyse_cta(trace):
    """Per CTA and warpgroup, the cycles outside the tile loop (session 20: at 1k keys the
    128-key kernel ran 0.73x its 4k speed): q_wait (entry to Q ready), to_tile0 (Q ready to
    tile 0's entry), loop (tile 0's entry to the loop's end), store (loop end to the output
    stored), cta (entry to stored). Lists of cycles, one per CTA and warpgroup stamped."""
    out = {k: [] for k in ("q_wait", "to_tile0", "loop", "store", "cta")}
    n_ctas = trace.shape[0]
    for c in range(n_ctas):
        for wg in (0, 1):
            t = trace[c, wg].tolist()
            at = {k: t[i][j] for k, (i, j) in CTA_STAMPS.items()}
            if min(at.values()) <= 0 or t[0][0] <= 0:
                continue                        # no CTA stamps (a kernel without them)
            out["q_wait"].append(at["q_ready"] - at["entry"])
            out["to_tile0"].append(t[0][0] - at["q_ready"])
            out["loop"].append(at["loop_end"] - t[0][0])
            out["store"].append(at["stored"] - at["loop_end"])
            out["cta"].append(at["stored"] - at["entry"])
    return out


# the CTA's GPU-wide stamps (_consumer_split): (slot, index) of %globaltimer at entry and once
# its output is stored, and of the SM's index
GLOBAL_STAMPS = dict(entry_ns=(1, 6), stored_ns=(1, 7), smid=(2, 5))


def analyse_gaps(trace):
    """What happens on an SM between its CTAs (session 22: the TMA store gained more than the
    per-CTA clock stamps explain). Per CTA: entry = the earlier warpgroup's entry, exit = the
    later one's "stored" (%globaltimer, ns); per SM, its CTAs in entry order. Lists: cta_ns
    (exit - entry), gap_ns (the next CTA's entry - this one's exit on the same SM) and
    gap_share (an SM's gaps over its span from first entry to last exit, one value an SM).
    Empty for a kernel without these stamps, and meaningless for persistent CTAs (their slots
    hold the last item)."""
    per_sm = {}
    for c in range(trace.shape[0]):
        wgs = [trace[c, wg].tolist() for wg in (0, 1)]
        entry = [t[1][6] for t in wgs]
        stored = [t[1][7] for t in wgs]
        if min(entry) <= 0 or min(stored) <= 0:
            continue
        per_sm.setdefault(wgs[0][2][5], []).append((min(entry), max(stored)))
    out = dict(cta_ns=[], gap_ns=[], gap_share=[])
    for ctas in per_sm.values():
        ctas.sort()
        out["cta_ns"] += [z - a for a, z in ctas]
        gaps = [b[0] - a[1] for a, b in zip(ctas, ctas[1:])]
        out["gap_ns"] += gaps
        span = ctas[-1][1] - ctas[0][0]
        if len(ctas) > 1 and span > 0:
            out["gap_share"].append(sum(gaps) / span)
    return out


def _row(name, b, h, s, causal, json_path):
    trace, same = _run(name, b, h, s, causal)
    return dict(variant=name, seqlen=s, batch=b, heads=h, causal=causal,
                traced_equals_untraced=same, **analyse(trace))


def main():
    trace_cli("pingpong_n128_s2_pipe_noturn", "4096,16384", 2048 // HEAD_DIM, _row)


if __name__ == "__main__":
    main()
