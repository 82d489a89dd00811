"""FP8 formats, scale arithmetic and saturating casts.

Conventions used everywhere in fp8attn:
  x8 = saturating_cast(x * scale)      (scale multiplies *into* FP8)
  x ~= x8.float() * descale            (descale multiplies back; descale = 1 / scale)
Scales come from the absolute max of the finite values of a group, so a NaN or Inf in one row
never poisons the scale of its neighbours, and a group of zeros gets scale 1 (never NaN / Inf).
"""
from __future__ import annotations

import torch

FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
FP8_MAX = {"e4m3": 448.0, "e5m2": 57344.0}
# The attention kernel scales P by 2**P_SHIFT before its FP8 cast so probabilities fill the format's
# range instead of falling under its smallest normal (FA3 shifts by 8 for e4m3: P in [0, 256]).
P_SHIFT = {"e4m3": 8, "e5m2": 15}
# An amax below this is treated as an all-zero group: keeps fp8_max / amax finite in float32.
AMAX_FLOOR = 1e-30


def check_fmt(fmt: str) -> str:
    if fmt not in FP8_DTYPES:
        raise ValueError(f"unknown FP8 format {fmt!r}; expected one of {sorted(FP8_DTYPES)}")
    return fmt


def fp8_dtype(fmt: str) -> torch.dtype:
    return FP8_DTYPES[check_fmt(fmt)]


def fp8_max(fmt: str) -> float:
    return FP8_MAX[check_fmt(fmt)]


def finite_amax(x: torch.Tensor, dim=None, keepdim: bool = False) -> torch.Tensor:
    """Absolute max over `dim` ignoring NaN and +-Inf, in float32."""
    a = x.float().abs()
    a = torch.where(torch.isfinite(a), a, torch.zeros((), dtype=a.dtype, device=a.device))
    if dim is None:
        return a.amax()
    return a.amax(dim=dim, keepdim=keepdim)


def scales_from_amax(amax: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, descale) in float32 so that amax * scale == fp8_max; zero groups get scale 1."""
    amax = amax.float()
    zero = amax < AMAX_FLOOR
    safe = torch.where(zero, torch.ones_like(amax), amax)
    scale = torch.where(zero, torch.ones_like(amax), fp8_max(fmt) / safe)
    descale = torch.where(zero, torch.ones_like(amax), safe / fp8_max(fmt))
    return scale, descale


def saturating_cast(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Cast to FP8, clamping to the finite range first (as the GPU's satfinite cast does).

    NaN stays NaN (e4m3fn and e5m2 both encode it); +-Inf becomes +-fp8_max (quantize turns
    input Inf into NaN before it gets here, so only finite overflow saturates).
    """
    m = fp8_max(fmt)
    return x.float().clamp(-m, m).to(fp8_dtype(fmt))
