"""Error metrics between an output and its reference, all computed in float64 over every entry."""
from __future__ import annotations

import math

import torch


def _pair(out: torch.Tensor, ref: torch.Tensor):
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: out {tuple(out.shape)}, ref {tuple(ref.shape)}")
    return out.double(), ref.double()


def rmse(out, ref) -> float:
    """sqrt(mean((out - ref)^2)): the FA3 paper's Table 3 metric."""
    o, r = _pair(out, ref)
    return float(((o - r) ** 2).mean().sqrt())


def relative_l2(out, ref) -> float:
    """||out - ref||_2 / ||ref||_2 (inf when ref is zero and out is not)."""
    o, r = _pair(out, ref)
    num, den = float(torch.linalg.vector_norm(o - r)), float(torch.linalg.vector_norm(r))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def max_abs(out, ref) -> float:
    o, r = _pair(out, ref)
    return float((o - r).abs().max()) if o.numel() else 0.0


def cosine_similarity(out, ref) -> float:
    """Cosine of the angle between the flattened tensors (1.0 when both are zero)."""
    o, r = _pair(out, ref)
    no, nr = float(torch.linalg.vector_norm(o)), float(torch.linalg.vector_norm(r))
    if no == 0.0 and nr == 0.0:
        return 1.0
    if no == 0.0 or nr == 0.0:
        return 0.0
    return float((o.flatten() @ r.flatten()) / (no * nr))


def sqnr_db(out, ref) -> float:
    """Signal-to-quantisation-noise ratio 10 log10(sum ref^2 / sum (out - ref)^2), in dB."""
    o, r = _pair(out, ref)
    noise = float(((o - r) ** 2).sum())
    signal = float((r ** 2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def error_metrics(out, ref) -> dict:
    """All metrics of `out` against `ref` as a dict of floats."""
    return {
        "rmse": rmse(out, ref),
        "relative_l2": relative_l2(out, ref),
        "max_abs": max_abs(out, ref),
        "cosine": cosine_similarity(out, ref),
        "sqnr_db": sqnr_db(out, ref),
    }
