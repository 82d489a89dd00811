"""Seeded input distributions for error analysis. Every generator returns (q, k, v):
q (B, H, Sq, D), k and v (B, Hkv, Sk, D), drawn on the CPU in float32 from a torch.Generator seeded
with `seed` (same numbers on every machine), then moved to `device` and cast to `dtype`.

Common keyword arguments: seed, dtype (default float32), device, seqlen_k (default seqlen),
kv_heads (default heads). Distribution-specific ones are documented per function.
"""
from __future__ import annotations

import torch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _shapes(batch, heads, seqlen, head_dim, seqlen_k, kv_heads):
    for name, val in (("batch", batch), ("heads", heads), ("seqlen", seqlen), ("head_dim", head_dim)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    sk = seqlen if seqlen_k is None else seqlen_k
    hkv = heads if kv_heads is None else kv_heads
    if heads % hkv:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({hkv})")
    return (batch, heads, seqlen, head_dim), (batch, hkv, sk, head_dim)


def _out(tensors, dtype, device):
    return tuple(t.to(device=device, dtype=dtype) for t in tensors)


def _normal(shape, g):
    return torch.randn(shape, generator=g, dtype=torch.float32)


def fa3_outliers(batch, heads, seqlen, head_dim, *, seed=0, dtype=torch.float32, device="cpu",
                 seqlen_k=None, kv_heads=None, outlier_std=10.0, outlier_prob=1e-3):
    """The FA3 paper's distribution (section 4.3): every entry of Q, K, V independently
    N(0, 1) + N(0, outlier_std^2) * Bernoulli(outlier_prob); the paper uses outlier_std = 10
    ("N(0, 100)") and outlier_prob = 0.001."""
    qs, ks = _shapes(batch, heads, seqlen, head_dim, seqlen_k, kv_heads)
    g = _gen(seed)

    def draw(shape):
        base = _normal(shape, g)
        extra = _normal(shape, g) * outlier_std
        hit = torch.rand(shape, generator=g) < outlier_prob
        return base + extra * hit

    return _out((draw(qs), draw(ks), draw(ks)), dtype, device)


def channel_outliers(batch, heads, seqlen, head_dim, *, seed=0, dtype=torch.float32, device="cpu",
                     seqlen_k=None, kv_heads=None, n_channels=4, magnitude=20.0):
    """N(0, 1) entries, except `n_channels` seeded head-dim channels (the same for every token and
    head) of K scaled by `magnitude` and of Q by sqrt(magnitude): the fixed outlier channels of
    LLM keys (and, weaker, queries) that make per-tensor and per-block scales coarse."""
    qs, ks = _shapes(batch, heads, seqlen, head_dim, seqlen_k, kv_heads)
    g = _gen(seed)
    q, k, v = _normal(qs, g), _normal(ks, g), _normal(ks, g)
    ch = torch.randperm(head_dim, generator=g)[: min(n_channels, head_dim)]
    k[..., ch] *= magnitude
    q[..., ch] *= magnitude ** 0.5
    return _out((q, k, v), dtype, device)


def massive_tokens(batch, heads, seqlen, head_dim, *, seed=0, dtype=torch.float32, device="cpu",
                   seqlen_k=None, kv_heads=None, n_tokens=4, magnitude=50.0):
    """N(0, 1) entries, except `n_tokens` key positions (position 0 and seeded others, like
    attention sinks and the massive activations of LLMs) whose K and V rows are scaled by
    `magnitude`: one block of K / V then holds a huge amax while the rest stay small."""
    qs, ks = _shapes(batch, heads, seqlen, head_dim, seqlen_k, kv_heads)
    g = _gen(seed)
    q, k, v = _normal(qs, g), _normal(ks, g), _normal(ks, g)
    sk = ks[2]
    n = min(n_tokens, sk)
    others = torch.randperm(max(sk - 1, 1), generator=g)[: max(n - 1, 0)] + 1
    pos = torch.cat([torch.zeros(1, dtype=torch.long), others])[:n]
    k[:, :, pos] *= magnitude
    v[:, :, pos] *= magnitude
    return _out((q, k, v), dtype, device)


def shifted(batch, heads, seqlen, head_dim, *, seed=0, dtype=torch.float32, device="cpu",
            seqlen_k=None, kv_heads=None, scale=4.0, shift=5.0):
    """scale * N(0, 1) + a seeded per-channel mean of size `shift` (one mean vector per tensor,
    shared by every token): the scale and mean shifts of real Q / K / V, whose common offset
    dominates the amax of every block."""
    qs, ks = _shapes(batch, heads, seqlen, head_dim, seqlen_k, kv_heads)
    g = _gen(seed)
    out = []
    for shape in (qs, ks, ks):
        mean = _normal((head_dim,), g) * shift
        out.append(_normal(shape, g) * scale + mean)
    return _out(out, dtype, device)


GENERATORS = {
    "fa3_outliers": fa3_outliers,
    "channel_outliers": channel_outliers,
    "massive_tokens": massive_tokens,
    "shifted": shifted,
}


def make_inputs(name: str, batch, heads, seqlen, head_dim, **kwargs):
    """(q, k, v) from the generator registered as `name` (see GENERATORS)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown input distribution {name!r}; expected one of {sorted(GENERATORS)}")
    return GENERATORS[name](batch, heads, seqlen, head_dim, **kwargs)
