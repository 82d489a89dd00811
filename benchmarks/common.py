"""Shared helpers for the benchmarks: peers guarded by availability, timing, FLOPs."""
from __future__ import annotations

import importlib
import json
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


def quantized_randn(b: int, hq: int, hkv: int, sq: int, sk: int, head_dim: int, seed: int,
                    v_key_order: str = "natural", recipe=None):
    """bf16 CUDA Q (b, hq, sq, head_dim) and K, V (b, hkv, sk, head_dim) from N(0, 1), drawn in
    that order from one CUDA generator seeded with seed, and their quantisation by recipe (None:
    the default Recipe()) with V^T in v_key_order (the bit probes in experiments/). Returns
    (q, k, v), (q8, k8, v8)."""
    from fp8attn import Recipe
    from fp8attn.quant import quantize_qkv
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, hq, sq, head_dim, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, sk, head_dim, generator=g, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    return (q, k, v), quantize_qkv(q, k, v, recipe or Recipe(), v_key_order=v_key_order)


def dispatch_quantized(qh, kh, vh, causal, out_dtype=torch.bfloat16):
    """The default recipe's quantisation of (B, H, S, D) q, k, v with V^T in the key order
    the package's dispatch reads for this call (gluon_dispatch.v_key_order_for), as
    flash_attn_func quantises them. causal: None, "top_left" or "bottom_right".
    Returns ((q8, k8, v8), order)."""
    from fp8attn import Recipe
    from fp8attn.attention import gluon_dispatch
    from fp8attn.quant import quantize_qkv
    order = gluon_dispatch.v_key_order_for(qh, kh, fmt="e4m3", granularity="block",
                                           block_kv=128, causal=causal, varlen=False,
                                           two_terms=False, out_dtype=out_dtype)
    return quantize_qkv(qh, kh, vh, Recipe(), v_key_order=order), order


def host_probe_inputs(seqlen: int, head_dim: int = 128):
    """The host-time probes' case (experiments/probe_*_host.py): FA3's setting at seqlen (16k
    tokens per batch, 16 heads), bf16 q, k, v (B, S, H, D) drawn from a CUDA generator seeded
    with seqlen; their default-recipe quantisation in (B, H, S, D) with V^T in the "mma" key
    order the Gluon kernel reads; a bf16 (B, H, S, D) output buffer.
    Returns (q, k, v), (q8, k8, v8), out."""
    from fp8attn import Recipe
    from fp8attn.quant import quantize_qkv
    b, h, d = 16384 // seqlen, 16, head_dim
    g = torch.Generator(device="cuda").manual_seed(seqlen)
    q, k, v = (torch.randn(b, seqlen, h, d, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    quant = quantize_qkv(*(x.transpose(1, 2) for x in (q, k, v)), Recipe(), v_key_order="mma")
    out = torch.empty(b, h, seqlen, d, device="cuda", dtype=torch.bfloat16)
    return (q, k, v), quant, out


def kernel_only(quant, out, causal):
    """The attention kernel alone on host_probe_inputs' quantised triple, into out (the
    package's dispatch: the Gluon kernel where it takes the call)."""
    from fp8attn.attention.triton_fwd import attention_fwd_fp8
    q8, k8, v8 = quant
    return attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=q8.data.shape[-1] ** -0.5,
        causal=causal, out=out, v_key_order=v8.key_order)


def _captured(fn, calls: int = 1, warmup: int = 1) -> torch.cuda.CUDAGraph:
    """A CUDA graph of `calls` calls of fn, after `warmup` calls on a side stream (compiles,
    autotunes, device tables: off the capture). Raises if fn cannot be captured (host syncs,
    host allocations)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph


def graph_ms(fn, calls: int = 10, replays: int = 7, warmup: int = 1) -> float:
    """Median GPU milliseconds per call of fn, replayed from a CUDA graph of `calls` calls: no host
    work between launches, so a host path slower than the kernels cannot leave the GPU idle.
    Raises if fn cannot be captured (host syncs, host allocations)."""
    graph = _captured(fn, calls, warmup)
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


def graph_bench_ms(fn) -> float:
    """bench_ms of fn replayed from a CUDA graph of one call: do_bench still clears L2 before
    each replay, but the call's host time, which do_bench counts wherever it outlasts the L2
    clearing kernel (short calls: 0.1-0.2 ms of host time in FA3's and our Python paths),
    drops out. The GPU time of the call. Raises if fn cannot be captured."""
    return bench_ms(_captured(fn).replay)


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


def fa3_fp8_per_head(fa3, qb, kb, vb, causal: bool, rotate: bool):
    """FA3 FP8's output (B, S, H, D) on (B, S, H, D) inputs quantised as FA3's released path
    does: one e4m3 scale per (batch, head) from the amax, Q and K first rotated by the
    package's randomized Hadamard transform (seed 0) when rotate (FA3's paper recipe without
    the block scales)."""
    from fp8attn.hadamard.reference import hadamard_signs, random_hadamard_reference
    signs = hadamard_signs(qb.shape[-1], 0, qb.device)
    qq, kk = ((random_hadamard_reference(x, signs) if rotate else x) for x in (qb, kb))
    amax = [x.abs().amax(dim=(1, 3)) for x in (qq, kk, vb)]     # (B, H) per head
    desc = [a.clamp_min(1e-12) / 448.0 for a in amax]
    f8 = [(x / dd[:, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
          for x, dd in zip((qq, kk, vb), desc)]
    return fa3_out(fa3.flash_attn_func(*f8, causal=causal, q_descale=desc[0],
                                       k_descale=desc[1], v_descale=desc[2]))


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


def cuda_absent(what: str = "time") -> bool:
    """True, after saying so, where there is no CUDA device: the probes then stop (they
    import and run their argument parsing on a CPU machine, and exit 0)."""
    if torch.cuda.is_available():
        return False
    print(f"CUDA is absent: nothing to {what} here (run this on the device machine)")
    return True


def write_json(path: str, obj) -> None:
    """A probe's rows to `path` (indented JSON); nothing for an empty path (no --json)."""
    if path:
        with open(path, "w") as fh:
            json.dump(obj, fh, indent=1)
