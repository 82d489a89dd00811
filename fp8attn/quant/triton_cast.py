"""Pieces both quantise kernels share: FP8 format constants, software rounding, the FP8 cast,
env knobs."""
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


@triton.jit
def _cast_fp8(y, out_ptr, SOFT_CAST: tl.constexpr, FP8_MAX: tl.constexpr,
              MBITS: tl.constexpr, EMIN: tl.constexpr, NEED_VALUE: tl.constexpr = False):
    """(y cast to out_ptr's FP8 type, float32 value of that cast when SOFT_CAST or NEED_VALUE,
    else y). SOFT_CAST (interpreter) or NEED_VALUE: clamp (NaN kept) and round in software first
    (the same bits as the GPU's cast: tests/test_quant.py), so the cast is exact; else the GPU's
    satfinite round-to-nearest-even. The value is never read back from the FP8 register: on
    the H200 (Triton 3.6, 2026-11-22) float32 values converted back from FP8 registers in these
    kernels came out wrong at some positions (residuals up to the FP8 max, NaN)."""
    if SOFT_CAST or NEED_VALUE:
        yq = tl.where(y != y, y, tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX))  # keep NaN
        yq = round_to_fp8_grid(yq, MBITS, EMIN)
        return yq.to(out_ptr.dtype.element_ty), yq
    return y.to(out_ptr.dtype.element_ty), y
