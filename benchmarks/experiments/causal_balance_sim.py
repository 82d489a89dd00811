"""Work per CTA of the causal orders the Gluon kernel could run (CPU, no GPU needed).

    python benchmarks/experiments/causal_balance_sim.py

FA3's benchmark setting at head dim 128 (16k tokens a batch, 16 heads), square top-left masks,
128-row query blocks and 128-key tiles, 132 CTAs (H200). An item's work is its KV tile count
plus one (prologue and epilogue). Prints the worst CTA's work over the mean for:
    stride   persistent CTAs, item w to CTA w % grid, over the longest-first order in L2
             sections of heads (gluon_fwd._work_item's order; session 8's variant)
    snake    the same with every other round right to left
    grid     one CTA per query block, the hardware handing blocks out as CTAs finish, in the
             launch order (heads major, longest block first within a head)
    greedy   each item of the sectioned order to the least-loaded CTA (longest-processing-time
             first; the table wip/s9-gpu's kernel reads)
Session 8 (2026-11-30): stride 1.15-1.16x at 4k / 8k / 16k, snake 1.28-1.30x, grid 1.07x /
1.06x / 1.01x, greedy 1.009x / 1.000x / 1.002x.
"""
import heapq
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from fp8attn.attention.gluon_fwd import _section_heads, causal_item_tiles  # noqa: E402

GRID = 132


def sectioned_order(n_m, n_hz, section_heads):
    """Work of the items in _work_item's causal order (square top-left masks)."""
    s = n_m * 128
    return [causal_item_tiles(w, n_m, n_hz, section_heads, s, s, 128, 128, 1) + 1
            for w in range(n_m * n_hz)]


def static(work, snake):
    load = [0] * GRID
    for w in range(len(work)):
        k, i = divmod(w, GRID)
        item = w
        if snake and k % 2:
            item = k * GRID + min(GRID, len(work) - k * GRID) - 1 - i
        load[i] += work[item]
    return max(load) / (sum(load) / GRID)


def greedy(work):
    heap = [(0, c) for c in range(GRID)]
    for t in work:
        load, c = heapq.heappop(heap)
        heapq.heappush(heap, (load + t, c))
    loads = [load for load, _ in heap]
    return max(loads) / (sum(loads) / GRID)


def main():
    for seqlen in (4096, 8192, 16384):
        n_m, n_hz = seqlen // 128, 16 * (16384 // seqlen)
        section = _section_heads(seqlen, 128)
        work = sectioned_order(n_m, n_hz, section)
        launch = [n_m - m + 1 for _ in range(n_hz) for m in range(n_m)]
        print(f"{seqlen}: stride {static(work, False):.3f}  snake {static(work, True):.3f}  "
              f"grid {greedy(launch):.3f}  greedy {greedy(work):.3f}")


if __name__ == "__main__":
    main()
