"""How evenly the persistent Gluon kernel's varlen items spread over the CTAs (no GPU needed).

A work item is (128-row query tile, head); its work is the KV tiles it runs plus one for its
prologue and epilogue. Printed per batch: the worst CTA's work over the mean (1.0 is even) for
  static   item k on CTA k % grid (the order of session 35: causal tile k // H of head k % H,
           non-causal tile k % n_t of head k // n_t)
  greedy   each item, in order, to the CTA with the least work so far: what CTAs taking the
           next item from a counter as they come free do (gluon_fwd._take_item)
  greedy, longest first   the same with each sequence's causal tiles in reverse
(the dispatch since session 36: dynamic=True).

    python benchmarks/experiments/varlen_balance_sim.py [--grid 132] [--heads 16]
"""
from __future__ import annotations

import argparse
import heapq

BLOCK = 128


def seq_tiles(length: int, causal: bool) -> list[int]:
    """KV tiles of each query tile of one sequence (keys = queries, bottom-right causal)."""
    n = -(-length // BLOCK)
    if not causal:
        return [n] * n
    return [-(-min((t + 1) * BLOCK, length) // BLOCK) for t in range(n)]


def worst_over_mean(loads: list[int]) -> float:
    return max(loads) / (sum(loads) / len(loads))


def static(items: list[int], grid: int) -> float:
    loads = [0] * grid
    for i, w in enumerate(items):
        loads[i % grid] += w + 1
    return worst_over_mean(loads)


def greedy(items: list[int], grid: int) -> float:
    heap = [(0, c) for c in range(grid)]
    for w in items:
        load, c = heapq.heappop(heap)
        heapq.heappush(heap, (load + w + 1, c))
    return worst_over_mean([load for load, _ in heap])


def items(lengths: list[int], heads: int, causal: bool, longest_first: bool = False):
    per = [seq_tiles(n, causal) for n in lengths]
    tiles = [w for p in per for w in (p[::-1] if longest_first else p)]
    if causal:                      # heads minor
        return [tiles[k // heads] for k in range(len(tiles) * heads)]
    return [tiles[k % len(tiles)] for k in range(len(tiles) * heads)]


BATCHES = {
    "8 x 2048": [2048] * 8,
    "7 mixed (probe_varlen.py)": [2943, 3503, 2192, 1807, 3696, 649, 1594],
    "4 x 4096": [4096] * 4,
    "16 x 1024": [1024] * 16,
    "2 x 8192": [8192] * 2,
    "15 short, 300-1100": [300, 500, 700, 900, 1100] * 3,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=132, help="CTAs (an H100 / H200 has 132 SMs)")
    ap.add_argument("--heads", type=int, default=16)
    a = ap.parse_args()
    print("| batch | causal | static | greedy | greedy, longest first |")
    print("|---|---|---|---|---|")
    for name, lengths in BATCHES.items():
        for causal in (False, True):
            its = items(lengths, a.heads, causal)
            lf = greedy(items(lengths, a.heads, causal, True), a.grid) if causal else None
            print(f"| {name} | {'yes' if causal else 'no'} | {static(its, a.grid):.3f} | "
                  f"{greedy(its, a.grid):.3f} | {'' if lf is None else f'{lf:.3f}'} |")


if __name__ == "__main__":
    main()
