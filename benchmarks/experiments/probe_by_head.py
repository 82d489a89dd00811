"""GPU time of laying FP8 (B, S, H, D) out by head, (B, H, S, D): fp8_inputs.by_head's Triton
kernel (since session 40; a call plan replays it as a launch) against torch's copy of 8-byte
words (the form before), each replayed from a CUDA graph, and the bytes moved as a fraction of
a plain copy's (torch's clone of the same bytes, contiguous).

    PYTHONPATH=$PWD python benchmarks/experiments/probe_by_head.py
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]


def main():
    from common import cuda_absent, graph_ms
    if cuda_absent():
        return
    import torch
    import fp8attn.quant.fp8_inputs as fi
    for shape in ((1, 16384, 16, 128), (8, 2048, 16, 128), (4, 4096, 32, 64)):
        x = torch.randn(shape, device="cuda").to(torch.float8_e4m3fn)
        kernel = graph_ms(lambda: fi.by_head(x))
        words = graph_ms(lambda: x.transpose(1, 2).view(torch.uint8).view(torch.int64)
                         .contiguous())
        flat = graph_ms(lambda: x.clone())
        same = torch.equal(fi.by_head(x).view(torch.uint8),
                           x.transpose(1, 2).contiguous().view(torch.uint8))
        print(f"{shape}: kernel {kernel * 1e3:.1f} us, torch words {words * 1e3:.1f} us, "
              f"contiguous clone {flat * 1e3:.1f} us; same bits: {same}", flush=True)


if __name__ == "__main__":
    main()
