"""Quantisation of Q, K, V to FP8 with per-group scales: torch reference and fused Triton kernel."""
from .reference import QuantizedTensor, quantize_reference


def quantize(x, fmt="e4m3", granularity="block", block=128, *, signs=None, transpose=False):
    return quantize_reference(x, fmt, granularity, block, signs=signs, transpose=transpose)
