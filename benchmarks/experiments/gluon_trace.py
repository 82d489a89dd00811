"""Where a persistent Gluon CTA's time goes between work items: SM clock stamps (session 11).

    PYTHONPATH=. python benchmarks/experiments/gluon_trace.py [--variants a,b] [--seqlens 1024,4096]
        [--causal top_left] [--json out.json]

gluon_attention_fwd(..., trace=buf) compiles the kernel with TRACE on: each consumer warpgroup
writes %clock64 at seven points of every work item (_ovl_work: 0 entry, 1 Q ready, 2 S_0 ready,
3 first softmax done, 4 tile loop done, 5 last P @ V done, 6 output stored) and the producer at
three (0 item start, 1 Q slot free, 2 the item's K / V loads all issued), for the first
TRACE_ITEMS items of each CTA. Stamps come from one SM's clock, so they compare within a CTA.
Per variant and shape this prints medians over CTAs, warpgroups and items (the first item of
each CTA left out) in clock cycles and in tile-times (the tile loop's cycles per KV tile), and
fits item cycles = a + b * tiles (causal: items of different lengths) for the per-item cost a.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

from gluon_gpu_check import _inputs  # noqa: E402
import gluon_gpu_check  # noqa: E402

from fp8attn.attention import gluon_fwd  # noqa: E402

POINTS = ("entry", "q_ready", "s0_ready", "softmax0", "loop_done", "last_pv", "stored")
SEGMENTS = [("q_wait", 0, 1), ("first_qk", 1, 2), ("first_softmax", 2, 3), ("loop", 3, 4),
            ("last_pv", 4, 5), ("store", 5, 6)]


def _run(name, b, h, s, causal):
    cfg = gluon_fwd.VARIANTS[name]
    gluon_gpu_check.CAUSAL = causal
    _, (q8, k8, v8) = _inputs(b, h, h, s, s, seed=s, v_key_order="mma")
    n_m = -(-s // 128)
    grid = min(n_m * b * h, gluon_fwd._sm_count(q8.data.device))
    trace, same = traced_call(q8, k8, v8, cfg, causal, grid)
    tiles = _item_tiles(b, h, s, n_m, grid, causal)
    return trace, tiles, same


def traced_call(q8, k8, v8, cfg, causal, n_ctas):
    """The variant cfg on (q8, k8, v8) with TRACE on, after a warm-up call: (the stamps on the
    CPU, whether the output equals the same kernel's untraced one). n_ctas: the launch's CTAs
    (the trace buffer's first dimension)."""
    trace = torch.zeros(n_ctas, 3, gluon_fwd.TRACE_ITEMS.value, 8, dtype=torch.int64,
                        device="cuda")
    args = (q8.data.contiguous(), k8.data.contiguous(), v8.data, q8.descale, k8.descale,
            v8.descale, q8.block_size, k8.block_size, v8.block_size, q8.data.shape[-1] ** -0.5)
    kw = dict(causal=causal, v_key_order=v8.key_order, **cfg)
    gluon_fwd.gluon_attention_fwd(*args, trace=trace, **kw)     # compile, warm up
    torch.cuda.synchronize()
    trace.zero_()
    out = gluon_fwd.gluon_attention_fwd(*args, trace=trace, **kw)
    ref = gluon_fwd.gluon_attention_fwd(*args, **kw)            # the same kernel untraced
    torch.cuda.synchronize()
    return trace.cpu(), bool(torch.equal(out, ref))


def _item_tiles(b, h, s, n_m, grid, causal):
    """KV tiles of each CTA's items, in the order it runs them."""
    n_work = n_m * b * h
    if causal is None:
        return [[-(-s // 128)] * len(range(c, n_work, grid)) for c in range(grid)]
    mode = {"top_left": 1, "bottom_right": 2}[causal]
    sec = gluon_fwd._section_heads(s, 128)
    tab = gluon_fwd._causal_schedule(n_m, b * h, sec, grid, s, s, 128, 128, mode, "cpu").tolist()
    off, flat = tab[:grid + 1], tab[grid + 1:]
    return [[gluon_fwd.causal_item_tiles(w, n_m, b * h, sec, s, s, 128, 128, mode)
             for w in flat[off[c]:off[c + 1]]] for c in range(grid)]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def analyse(trace, tiles):
    grid, _, items, _ = trace.shape
    seg = {k: [] for k, _, _ in SEGMENTS}
    seg["to_next_item"] = []
    seg["item"] = []
    per_tile, fit = [], []
    prod = {"q_slot_wait": [], "q_issue_after_last_qk": [], "q_ready_after_issue": []}
    for c in range(grid):
        n = min(len(tiles[c]), items)
        for wg in (0, 1):
            t = trace[c, wg]
            for i in range(1, n):
                st = t[i].tolist()
                if min(st[:7]) <= 0:
                    continue
                for k, a, z in SEGMENTS:
                    seg[k].append(st[z] - st[a])
                nt = tiles[c][i]
                if nt > 2:
                    per_tile.append((st[4] - st[3]) / (nt - 1))
                if i + 1 < n and t[i + 1, 0] > 0:
                    seg["to_next_item"].append(int(t[i + 1, 0]) - st[6])
                    seg["item"].append(int(t[i + 1, 0]) - st[0])
                    fit.append((nt, int(t[i + 1, 0]) - st[0]))
        p = trace[c, 2]
        for i in range(1, n):
            pr = p[i].tolist()
            if min(pr[:3]) <= 0:
                continue
            prod["q_slot_wait"].append(pr[1] - pr[0])
            last_qk = max(int(trace[c, 0, i - 1, 4]), int(trace[c, 1, i - 1, 4]))
            prod["q_issue_after_last_qk"].append(pr[1] - last_qk)
            qr = min(int(trace[c, 0, i, 1]), int(trace[c, 1, i, 1]))
            prod["q_ready_after_issue"].append(qr - pr[1])
    tile = median(per_tile)
    res = {"cycles_per_tile": tile}
    for k, v in list(seg.items()) + list(prod.items()):
        m = median(v)
        res[k] = dict(cycles=m, tiles=m / tile if tile == tile else None, n=len(v))
    if len({x for x, _ in fit}) > 1:
        n = len(fit)
        mx = sum(x for x, _ in fit) / n
        my = sum(y for _, y in fit) / n
        bb = sum((x - mx) * (y - my) for x, y in fit) / sum((x - mx) ** 2 for x, _ in fit)
        res["fit"] = dict(per_item_cycles=my - bb * mx, per_tile_cycles=bb,
                          per_item_tiles=(my - bb * mx) / bb)
    return res


def trace_cli(default_variants: str, default_seqlens: str, heads: int, trace_row) -> None:
    """The trace scripts' command line (--variants, --seqlens, --causal, --json): for every
    seqlen (batch 16384 / seqlen, `heads` heads) and variant, the dict trace_row(name, batch,
    heads, seqlen, causal, json_path) is printed and kept for --json."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=default_variants)
    ap.add_argument("--seqlens", default=default_seqlens)
    ap.add_argument("--causal", default="", choices=("", "top_left", "bottom_right"))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is absent: nothing to trace here (run this on the device machine)")
        return
    causal = a.causal or None
    rows = []
    for s in (int(x) for x in a.seqlens.split(",")):
        for name in a.variants.split(","):
            r = trace_row(name, 16384 // s, heads, s, causal, a.json)
            rows.append(r)
            print(json.dumps(r), flush=True)
            if a.json:      # after every row: a call cut by its time limit keeps what it had
                with open(a.json, "w") as fh:
                    json.dump(rows, fh, indent=1)


def _row(name, b, h, s, causal, json_path):
    """One variant and shape: the medians of analyse, the raw stamps beside --json."""
    trace, tiles, same = _run(name, b, h, s, causal)
    if json_path:
        torch.save(dict(trace=trace, tiles=tiles),
                   json_path.replace(".json", f"_{name}_{s}{'_c' if causal else ''}.pt"))
    return dict(variant=name, seqlen=s, batch=b, heads=h, causal=causal,
                traced_equals_untraced=same, **analyse(trace, tiles))


def main():
    trace_cli("pingpong_ovl_u2_s3_persist,pingpong_ovl_u2_s3_persist_ts", "1024,4096,16384", 16,
              _row)


if __name__ == "__main__":
    main()
