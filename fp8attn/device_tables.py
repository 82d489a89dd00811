"""Small lookup tables the package builds once and keeps on the GPU (the rotation signs, the
causal schedules of the Gluon kernel's persistent CTAs), allocated outside any CUDA-graph pool."""
from __future__ import annotations

import threading


def built_off_pool(build, *args):
    """build(*args), run in a short-lived thread. Since torch 2.8, torch.compile's CUDA graphs
    (mode="reduce-overhead") send every allocation of the thread that warms up or records a
    graph to the graph's private pool; a table allocated there and kept in a cache makes torch
    raise "tensor(s) in the cudagraph pool not tracked as outputs" (H200, 2026-11-30,
    benchmarks/experiments/probe_reduce_overhead_causal.py; a side stream did not help). Another
    thread allocates from the ordinary pool. build must finish its host-to-device copy before it
    returns (a blocking .to(device) does). Not for use inside a CUDA-graph capture: the copy
    cannot be captured (callers check torch.cuda.is_current_stream_capturing())."""
    out: list = []

    def run():
        try:
            out.append((True, build(*args)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out.append((False, e))
    t = threading.Thread(target=run, name="fp8attn-device-table")
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value
