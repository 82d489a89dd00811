"""Does torch.compile(mode="reduce-overhead") work on a causal call whose persistent-CTA schedule
table (gluon_fwd._causal_schedule, per shape) is not on the device yet?

    PYTHONPATH=. python benchmarks/experiments/probe_reduce_overhead_causal.py

The compiled causal call at (1, 4096, 4, 128) four times, each compared with the eager result;
--eager-first: one eager call of another shape first (so the rotation signs exist, not the
table). Prints what happened (bits equal, or the error torch raised).
H200, 2026-11-30: with --eager-first and the table built in the calling thread, the first call
raised "Detected 1 tensor(s) in the cudagraph pool not tracked as outputs" (13:47 UTC); with the
tables built in another thread (device_tables.built_off_pool) every call gave the eager bits
(13:50 UTC). Without --eager-first the first call still raised (calls 2-4 gave the eager bits):
the one table this call still built in the calling thread was the quantiser's Hadamard
factor (hadamard/triton.py small_factor_tensor, a 1 x 1 tensor even at power-of-two head
dims). Since every device table goes through device_tables.cached_table, all four calls give
the eager bits without --eager-first (14:45 UTC; the same machine, minutes before, with the
previous caches: call 0 raised).
"""
from __future__ import annotations

import sys

import torch


def main():
    if not torch.cuda.is_available():
        print("no CUDA: nothing to probe")
        return
    import fp8attn
    from fp8attn.attention import gluon_fwd
    g = torch.Generator(device="cuda").manual_seed(3)
    if "--eager-first" in sys.argv:
        fp8attn.flash_attn_func(*(torch.randn(1, 4608, 4, 128, generator=g,
                                              device="cuda").bfloat16() for _ in range(3)),
                                causal=True)
    tables = len(gluon_fwd._SCHEDULES)
    compiled = torch.compile(lambda a, b, c: fp8attn.flash_attn_func(a, b, c, causal=True),
                             mode="reduce-overhead", fullgraph=True)
    for i in range(4):
        q, k, v = (torch.randn(1, 4096, 4, 128, generator=g, device="cuda").bfloat16()
                   for _ in range(3))
        try:
            got = compiled(q, k, v).clone()
            same = torch.equal(got, fp8attn.flash_attn_func(q, k, v, causal=True))
            print(f"call {i}: same bits as eager: {same}; tables {tables} -> "
                  f"{len(gluon_fwd._SCHEDULES)}", flush=True)
        except Exception as e:  # noqa: BLE001 - the probe reports what torch raised
            print(f"call {i}: {type(e).__name__}: {str(e)[:300]}", flush=True)


if __name__ == "__main__":
    main()
