"""Host time of the public calls beside FA3's (session 34): what an eager model pays per
attention call before the GPU does any work. Per call kind: host = the time to issue 100 calls
(no synchronisation) / 100, wall = until the GPU has finished them, GPU = one-call CUDA graph
(where the call can be captured). A call whose host time exceeds its GPU time leaves the GPU
idle in an eager loop. Each call is read `--repeats` times, alternating with the others; the
minimum and the median are printed (host noise only adds time).

Cases: one short prefill (1 x 1024 tokens, 16 heads, hdim 128 or --head-dim: GPU work of tens
of us, so the host decides) and 8 x 2048 (the varlen probes' case): flash_attn_func (bf16 in), the same
tokens through flash_attn_varlen_func, and both on pre-quantised FP8 inputs; FA3's BF16 and
FP8 calls on the same tensors.

`--package DIR` imports fp8attn from DIR first (an older tree, to compare in one run: run the
script once per tree, alternating, in separate processes; `--no-peers` skips FA3's calls).
Prints one JSON line per call and case. The dense calls replay call plans (fp8attn/call_plan.py,
since session 39) from their third call on, which every reading here is past; FP8ATTN_PLAN=0
reads them without (session 39: 94-95 us a dense bf16 call with plans, 320-326 without,
`results/probe_host_time_s39plan.jsonl`).

    PYTHONPATH=$PWD python benchmarks/experiments/probe_host_time.py [--package DIR] [--tag T]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", help="a folder holding the fp8attn to import")
    ap.add_argument("--tag", default="")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--no-peers", action="store_true", help="skip FA3's calls")
    ap.add_argument("--repeats", type=int, default=3, help="readings of each call, alternating")
    ap.add_argument("--jit", action="store_true",
                    help="also read our calls with FP8ATTN_FAST_LAUNCH=0 (every launch through "
                         "Triton's JIT path), in the same process")
    ap.add_argument("--head-dim", type=int, default=128,
                    help="96 / 80 / 256: Q and K go through _quant_kernel, not the pairs kernel")
    ap.add_argument("--inference-mode", action="store_true",
                    help="make the inputs and run the calls under torch.inference_mode (as "
                         "serving stacks do): cu_seqlens are then inference tensors, which have "
                         "no version counter, so every varlen call copies them to the host and "
                         "waits for that copy (attention/varlen_offsets.py)")
    ap.add_argument("--profile", action="store_true",
                    help="then a cProfile of the 8 x 2048 dense and varlen bf16 calls")
    a = ap.parse_args()
    sys.path[:0] = ([a.package] if a.package else []) + [os.path.dirname(HERE),
                                                         os.path.dirname(os.path.dirname(HERE))]
    import torch
    import fp8attn
    from common import cuda_absent, fa3_out, graph_ms, load_fa3, loop_us
    if cuda_absent():
        return
    fa3, why = load_fa3()
    print(f"# {a.tag}: fp8attn from {os.path.dirname(fp8attn.__file__)}; fa3: {why or 'ok'}",
          flush=True)
    H, D = 16, a.head_dim
    torch.manual_seed(0)
    with torch.inference_mode() if a.inference_mode else torch.no_grad():
        for nseq, s in ((1, 1024), (8, 2048)):
            q, k, v = (torch.randn(nseq * s, H, D, device="cuda", dtype=torch.bfloat16)
                       for _ in range(3))
            cu = torch.arange(0, nseq * s + 1, s, device="cuda", dtype=torch.int32)
            qd, kd, vd = (x.view(nseq, s, H, D) for x in (q, k, v))
            q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
            qd8, kd8, vd8 = (x.view(nseq, s, H, D) for x in (q8, k8, v8))
            one = torch.ones(nseq, H, device="cuda")
            for causal in (False, True):
                calls = {
                    "ours_dense": lambda: fp8attn.flash_attn_func(qd, kd, vd, causal=causal),
                    "ours_varlen": lambda: fp8attn.flash_attn_varlen_func(
                        q, k, v, cu, cu, s, s, causal=causal),
                    "ours_dense_fp8": lambda: fp8attn.flash_attn_func(
                        qd8, kd8, vd8, causal=causal, q_descale=one, k_descale=one,
                        v_descale=one),
                    "ours_varlen_fp8": lambda: fp8attn.flash_attn_varlen_func(
                        q8, k8, v8, cu, cu, s, s, causal=causal, q_descale=one,
                        k_descale=one, v_descale=one)}
                if fa3 is not None and not a.no_peers:
                    calls.update({
                        "fa3_bf16": lambda: fa3_out(fa3.flash_attn_func(qd, kd, vd,
                                                                        causal=causal)),
                        "fa3_varlen_bf16": lambda: fa3_out(fa3.flash_attn_varlen_func(
                            q, k, v, cu, cu, s, s, causal=causal)),
                        "fa3_fp8": lambda: fa3_out(fa3.flash_attn_func(
                            qd8, kd8, vd8, causal=causal, q_descale=one, k_descale=one,
                            v_descale=one))})
                rows = {}
                for rep in range(a.repeats):    # alternating: host noise spreads over all
                    for name, fn in calls.items():
                        modes = ([("", None), ("_jit", "0")] if a.jit and name.startswith("ours")
                                 else [("", None)])
                        for suffix, flag in modes:
                            if flag is None:
                                os.environ.pop("FP8ATTN_FAST_LAUNCH", None)
                            else:
                                os.environ["FP8ATTN_FAST_LAUNCH"] = flag
                            host, wall = loop_us(fn, n=a.calls)
                            rows.setdefault(name + suffix, []).append((host, wall))
                        os.environ.pop("FP8ATTN_FAST_LAUNCH", None)
                for name, got in rows.items():
                    fn = calls[name.removesuffix("_jit")]
                    try:
                        gpu = graph_ms(fn, calls=1, replays=7) * 1e3
                    except Exception:  # noqa: BLE001 - a call that cannot be captured
                        gpu = None
                    hosts = sorted(h for h, _ in got)
                    print(json.dumps(dict(
                        tag=a.tag, call=name, inference_mode=a.inference_mode, nseq=nseq,
                        seqlen=s, causal=causal, head_dim=D,
                        host_us_min=round(hosts[0], 1), host_us_median=round(
                            hosts[len(hosts) // 2], 1),
                        wall_us_median=round(sorted(w for _, w in got)[len(got) // 2], 1),
                        gpu_us=None if gpu is None else round(gpu, 1))), flush=True)
        if a.profile:
            profile(lambda: fp8attn.flash_attn_func(qd, kd, vd), "dense bf16 8x2048")
            profile(lambda: fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, s, s),
                    "varlen bf16 8x2048")


def profile(fn, name, calls=50):
    """cProfile of `calls` calls: own time (top 30), then cumulative time (top 45)."""
    import cProfile
    import io
    import pstats
    import torch
    fn()
    torch.cuda.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    for order, top in (("tottime", 30), ("cumulative", 45)):
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats(order).print_stats(top)
        print(f"== profile {name}, {calls} calls, by {order}")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip()),
              flush=True)

if __name__ == "__main__":
    main()
