"""Small lookup tables the package builds once per key and keeps on the device (the rotation
signs, the small Hadamard factors, the key-order permutations, the q-search factors, the causal
schedules of the Gluon kernel's persistent CTAs).

cached_table: the cache every one of them goes through. Never evicts (a captured CUDA graph
keeps reading a table's memory at every replay), builds GPU tables outside any CUDA-graph pool
(built_off_pool), and never builds one inside a CUDA-graph capture (recorded, not run: the
table would hold garbage until a replay).
built_off_pool: build(*args) in a short-lived thread, outside torch.compile's graph pool."""
from __future__ import annotations

import threading

import torch


def built_off_pool(build, *args):
    """build(*args), run in a short-lived thread. Since torch 2.8, torch.compile's CUDA graphs
    (mode="reduce-overhead") send every allocation of the thread that warms up or records a
    graph to the graph's private pool; a table allocated there and kept in a cache makes torch
    raise "tensor(s) in the cudagraph pool not tracked as outputs" (H200, 2026-11-30,
    benchmarks/experiments/probe_reduce_overhead_causal.py; a side stream did not help). Another
    thread allocates from the ordinary pool. build must finish its host-to-device copy before it
    returns (a blocking .to(device) does). Not for use inside a CUDA-graph capture: the copy
    cannot be captured (cached_table checks). The thread starts on the caller's current CUDA
    device (a new thread's is device 0), so a table for device "cuda" lands where the caller
    runs."""
    out: list = []
    cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else None

    def run():
        try:
            if cuda_device is not None:
                torch.cuda.set_device(cuda_device)
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


def capturing(device: torch.device) -> bool:
    """Whether `device`'s current stream is capturing a CUDA graph (False off CUDA, without
    touching CUDA: CPU-only torch builds)."""
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_current_stream_capturing()


def _build_and_wait(device: torch.device, build, *args):
    table = build(*args)
    # The helper thread's stream is not the caller's: finish the build's kernels before the
    # caller's stream reads the table.
    torch.cuda.current_stream(device).synchronize()
    return table


def cached_table(cache: dict, key, device, build, *args, in_capture=None):
    """cache[key], built as build(*args) on the first call and kept for good (never evicted).

    device: where the table lives. On CUDA the build runs through built_off_pool and is finished
    (stream synchronised) before it is returned. A miss while the current stream is capturing a
    CUDA graph returns in_capture(*args) (device ops recorded into the graph; not cached) when
    in_capture is given, and raises RuntimeError otherwise (a host-to-device copy cannot be
    captured, and a table recorded there would hold garbage until the graph is replayed)."""
    table = cache.get(key)
    if table is not None:
        return table
    device = torch.device(device)
    if capturing(device):
        if in_capture is not None:
            return in_capture(*args)
        name = getattr(build, "__qualname__", repr(build))
        raise RuntimeError(
            f"fp8attn: the device table {name}{tuple(args)!r} is not built yet, and it cannot be "
            "built while a CUDA graph is being captured. Make one warm-up call with the same "
            "shapes and head dim (same recipe) outside the capture first.")
    # a table kept for good must be an ordinary tensor, whatever mode its first caller ran in:
    # one built under torch.inference_mode would be an inference tensor (no version counter)
    with torch.inference_mode(False):
        if device.type == "cuda":
            table = built_off_pool(_build_and_wait, device, build, *args)
        else:
            table = build(*args)
    # setdefault: if another thread stored one meanwhile, every caller keeps using that one
    return cache.setdefault(key, table)
