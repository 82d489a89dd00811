"""Observers: per-layer, per-head statistics of Q, K and V collected through fp8attn's attention taps.

QKVObserver is a tap (fp8attn.integration.tapped): every attention call of a quantised model passes
its real Q (B, Hq, Sq, D), K and V (B, Hkv, Sk, D) through it; it updates, per layer and head,
  absmax      running max of |x| over finite values,
  sample      a uniform random sample of |x| (bottom-k of random keys), for percentiles and the
              error-minimising scale search,
  histogram   counts of |x| in power-of-two bins [2^e, 2^(e+1)), e = HIST_MIN_EXP .. HIST_MAX_EXP
              (bin 0 also holds zeros and smaller values, the last bin larger ones),
and keeps the first `capture_calls` calls of each layer (on their device, so the recipe search runs
on the same backend as the model) for the per-layer recipe search. Only real
tokens count: padded query rows and masked keys are excluded. The observer returns the FP32
reference output, so calibration runs the model at full precision.
"""
from __future__ import annotations

import dataclasses

import torch

HIST_MIN_EXP, HIST_MAX_EXP = -24, 17
HIST_BINS = HIST_MAX_EXP - HIST_MIN_EXP + 1


@dataclasses.dataclass
class TensorStats:
    """Statistics of one tensor kind ("q", "k" or "v") of one layer; every field is per head."""

    absmax: torch.Tensor       # (H,) float64
    count: torch.Tensor        # (H,) int64, number of values seen
    histogram: torch.Tensor    # (H, HIST_BINS) int64
    sample: torch.Tensor       # (H, n) float32 |x|, n <= sample_size
    sample_keys: torch.Tensor  # (H, n) float32 random keys of the bottom-k sample

    @classmethod
    def empty(cls, heads: int) -> "TensorStats":
        return cls(absmax=torch.zeros(heads, dtype=torch.float64),
                   count=torch.zeros(heads, dtype=torch.int64),
                   histogram=torch.zeros(heads, HIST_BINS, dtype=torch.int64),
                   sample=torch.zeros(heads, 0), sample_keys=torch.zeros(heads, 0))

    def update(self, values: torch.Tensor, sample_size: int, gen: torch.Generator) -> None:
        """values (H, N): this call's entries of every head (real tokens only)."""
        a = values.detach().float().abs().cpu()
        a = torch.where(torch.isfinite(a), a, torch.zeros((), dtype=a.dtype))
        if a.shape[1] == 0:
            return
        self.absmax = torch.maximum(self.absmax, a.amax(1).double())
        self.count += a.shape[1]
        exp = torch.floor(torch.log2(a.clamp_min(2.0 ** HIST_MIN_EXP))).long()
        idx = exp.clamp(HIST_MIN_EXP, HIST_MAX_EXP) - HIST_MIN_EXP
        heads = a.shape[0]
        flat = idx + torch.arange(heads)[:, None] * HIST_BINS
        self.histogram += torch.bincount(flat.flatten(), minlength=heads * HIST_BINS).view(
            heads, HIST_BINS)
        keys = torch.rand(a.shape, generator=gen)
        vals = torch.cat([self.sample, a], 1)
        keys = torch.cat([self.sample_keys, keys], 1)
        if vals.shape[1] > sample_size:
            keys, order = keys.topk(sample_size, dim=1, largest=False)
            vals = vals.gather(1, order)
        self.sample, self.sample_keys = vals, keys

    def percentile(self, p: float) -> torch.Tensor:
        """(H,) float64: the p-th percentile (0..100) of |x| per head, from the sample."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile {p} outside [0, 100]")
        if self.sample.shape[1] == 0:
            return torch.zeros(self.sample.shape[0], dtype=torch.float64)
        return torch.quantile(self.sample.double(), p / 100.0, dim=1)


class QKVObserver:
    """Tap collecting TensorStats for "q", "k", "v" of every layer (see the module docstring)."""

    def __init__(self, sample_size: int = 8192, capture_calls: int = 2, seed: int = 0):
        self.sample_size = sample_size
        self.capture_calls = capture_calls
        self.gen = torch.Generator().manual_seed(seed)
        self.stats: dict[str, dict[str, TensorStats]] = {}
        self.shapes: dict[str, dict[str, int]] = {}
        self.captured: dict[str, list] = {}
        self.tokens = 0

    @staticmethod
    def _per_head(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """x (B, H, S, D), rows (B, S) bool -> (H, N * D) values of the selected rows."""
        h, d = x.shape[1], x.shape[3]
        return x.transpose(0, 1)[:, rows].reshape(h, -1) if rows.any() else x.new_zeros(h, 0 * d)

    def __call__(self, call, recipe):
        from fp8attn.integration import AttentionCall
        name = call.name
        q, k, v = call.query, call.key, call.value
        if name not in self.stats:
            self.stats[name] = {"q": TensorStats.empty(q.shape[1]), "k": TensorStats.empty(k.shape[1]),
                                "v": TensorStats.empty(v.shape[1])}
            self.shapes[name] = {"num_heads": q.shape[1], "num_kv_heads": k.shape[1],
                                 "head_dim": q.shape[3]}
            self.captured[name] = []
        st = self.stats[name]
        vq, vk = call.valid_q, call.valid_k
        st["q"].update(self._per_head(q, vq), self.sample_size, self.gen)
        st["k"].update(self._per_head(k, vk), self.sample_size, self.gen)
        st["v"].update(self._per_head(v, vk), self.sample_size, self.gen)
        if name == next(iter(self.stats)):
            self.tokens += int(vq.sum())
        if len(self.captured[name]) < self.capture_calls:
            self.captured[name].append(AttentionCall(
                name=name, query=q.detach().clone(), key=k.detach().clone(),
                value=v.detach().clone(),
                mask=None if call.mask is None else call.mask.detach().clone(),
                causal=call.causal, scale=call.scale, on_unsupported_mask="fallback"))
        return call.reference(torch.float32)
