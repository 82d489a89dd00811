"""Pieces both quantise kernels share: FP8 format constants, software rounding, env knobs."""
from __future__ import annotations

import os

import triton
import triton.language as tl

_MBITS_EMIN = {"e4m3": (3, -6), "e5m2": (2, -14)}   # mantissa bits, exponent of the smallest normal


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


@triton.jit
def round_to_fp8_grid(y, MBITS: tl.constexpr, EMIN: tl.constexpr):
    """Round float32 y (already clamped to +-fp8_max) to the nearest FP8 value, ties to even,
    subnormals included, in float32 arithmetic. The cast of the result is then exact everywhere:
    the interpreter's own FP8 rounding is wrong when the mantissa carries into the exponent
    (31.9 -> 16 instead of 32) and flushes subnormals."""
    e = ((y.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127            # floor(log2 |y|)
    e_ulp = tl.maximum(e, EMIN) - MBITS                                 # exponent of one FP8 ulp
    ulp = ((e_ulp + 127) << 23).to(tl.float32, bitcast=True)
    inv_ulp = ((127 - e_ulp) << 23).to(tl.float32, bitcast=True)
    # |y * inv_ulp| <= 2**(MBITS + 1): adding 1.5 * 2**23 rounds it to an integer, ties to even
    r = (y * inv_ulp + 12582912.0) - 12582912.0
    return r * ulp

