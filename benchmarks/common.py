"""Shared helpers for the benchmarks: peers guarded by availability, timing, FLOPs."""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time

import torch


def attn_flops(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
               causal: bool) -> float:
    """4 * B * H * Sq * Sk * D (two matmuls), halved for causal, as FlashAttention counts."""
    f = 4.0 * batch * heads * seqlen_q * seqlen_k * head_dim
    return f / 2 if causal else f


def fa3_accuracy_inputs(shape=(2, 16, 2048, 128), seed: int = 0):
    """Q, K, V (float32, CUDA) of FA3's accuracy test, N(0, 1) + N(0, 100) * Bernoulli(0.001),
    drawn in this order from one CUDA generator: the data of every GPU accuracy figure in
    RESULTS.md (bench_attention.py and the probes in experiments/)."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def draw():
        x = torch.randn(*shape, generator=g, device="cuda")
        big = torch.rand(*shape, generator=g, device="cuda") < 1e-3
        return x + 10.0 * torch.randn(*shape, generator=g, device="cuda") * big

    return draw(), draw(), draw()


def graph_ms(fn, calls: int = 10, replays: int = 7, warmup: int = 1) -> float:
    """Median GPU milliseconds per call of fn, replayed from a CUDA graph of `calls` calls: no host
    work between launches, so a host path slower than the kernels cannot leave the GPU idle.
    Raises if fn cannot be captured (host syncs, host allocations)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):             # warm-up (compiles, autotunes) off the capture
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]


def loop_us(fn, n: int = 200) -> tuple[float, float]:
    """(host, wall) microseconds per call of n calls after 5 warm-up calls: host = the time to
    issue them (no synchronisation), wall = until the GPU has finished them too."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    issued = time.perf_counter()
    torch.cuda.synchronize()
    done = time.perf_counter()
    return (issued - t0) / n * 1e6, (done - t0) / n * 1e6


def bench_ms(fn, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median milliseconds of fn() (CUDA events, triton.testing.do_bench)."""
    import triton.testing
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def load_fa3():
    """The fa3-fwd wheel's interface module, or None (with the reason) if it cannot be imported.

    fa3-fwd imports a module `flash_attn_config` it does not ship; a one-line module re-exporting
    fa3_fwd_config.CONFIG, written to a temporary folder on sys.path, stands in for it.
    """
    try:
        importlib.import_module("fa3_fwd_config")
    except ImportError as e:
        return None, f"fa3-fwd not installed ({e})"
    try:
        importlib.import_module("flash_attn_config")
    except ImportError:
        d = tempfile.mkdtemp(prefix="fa3cfg_")
        with open(os.path.join(d, "flash_attn_config.py"), "w") as f:
            f.write("from fa3_fwd_config import CONFIG  # noqa: F401\n")
        sys.path.insert(0, d)
    try:
        return importlib.import_module("fa3_fwd_interface"), ""
    except Exception as e:  # noqa: BLE001 - report any import failure as "unavailable"
        return None, f"fa3_fwd_interface failed to import: {type(e).__name__}: {e}"


def fa3_out(res):
    """fa3's flash_attn_func returns out or (out, lse) depending on the version."""
    return res[0] if isinstance(res, tuple) else res


def load_sage():
    try:
        return importlib.import_module("sageattention"), ""
    except Exception as e:  # noqa: BLE001
        return None, f"sageattention unavailable ({type(e).__name__})"


def environment() -> dict:
    import triton
    info = {"torch": torch.__version__, "triton": triton.__version__,
            "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return info
