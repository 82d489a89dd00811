"""Reference fast Walsh-Hadamard transform in PyTorch (any float dtype, any device).

Supported sizes d = m * 2**k with m in {1, 12, 20}, 2 <= d <= 1024. The (orthonormal) transform is
    y = x @ H_d.T,   H_d = kron(H_m, H_{2^k}) / sqrt(d)
where H_{2^k} is Sylvester's (scipy.linalg.hadamard) matrix and H_12, H_20 are Paley's. The 2^k
factor runs as a butterfly, O(d log d); the m factor as an m x m product on a (.., m, 2^k) view.
"""
from __future__ import annotations

import functools
import math

import torch

from ..device_tables import cached_table

MAX_DIM = 1024
_SMALL_FACTORS = (1, 12, 20)


def split_dim(d: int) -> tuple[int, int]:
    """d -> (m, 2**k) with m in {1, 12, 20}; ValueError for unsupported sizes."""
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"Hadamard size must be an int, got {type(d).__name__}")
    for m in _SMALL_FACTORS:
        if d % m == 0:
            p = d // m
            if p >= 1 and p & (p - 1) == 0 and 2 <= d <= MAX_DIM:
                return m, p
    raise ValueError(
        f"unsupported Hadamard size {d}: expected 2**k, 12*2**k or 20*2**k with 2 <= size <= "
        f"{MAX_DIM} (e.g. 32, 64, 80, 96, 128, 160, 192, 256)")


def is_supported_dim(d: int) -> bool:
    try:
        split_dim(d)
    except (ValueError, TypeError):
        return False
    return True


@functools.lru_cache(maxsize=None)
def _paley_int(q: int) -> tuple:
    """Paley construction I for prime q = 3 mod 4: a Hadamard matrix of order q + 1 (tuple of rows)."""
    residues = {(i * i) % q for i in range(1, q)}

    def chi(a: int) -> int:
        a %= q
        return 0 if a == 0 else (1 if a in residues else -1)

    n = q + 1
    s = [[0] * n for _ in range(n)]
    for j in range(1, n):
        s[0][j] = 1
        s[j][0] = -1
    for i in range(q):
        for j in range(q):
            s[i + 1][j + 1] = chi(j - i)
    return tuple(tuple(s[i][j] + (1 if i == j else 0) for j in range(n)) for i in range(n))


def small_hadamard(m: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Unnormalised Hadamard matrix of order m in {1, 12, 20} (entries +-1)."""
    if m == 1:
        return torch.ones(1, 1, dtype=dtype, device=device)
    if m not in (12, 20):
        raise ValueError(f"no small Hadamard factor of order {m}")
    return torch.tensor(_paley_int(m - 1), dtype=dtype, device=device)


def hadamard_matrix(d: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The orthonormal d x d matrix H_d that `fwht_reference` applies (y = x @ H_d.T); for tests."""
    m, p = split_dim(d)
    syl = torch.ones(1, 1, dtype=torch.float64)
    while syl.shape[0] < p:
        syl = torch.cat([torch.cat([syl, syl], 1), torch.cat([syl, -syl], 1)], 0)
    h = torch.kron(small_hadamard(m), syl) / math.sqrt(d)
    return h.to(dtype=dtype, device=device)


def _butterfly(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Sylvester transform along the last dim (a power of two), O(n log n)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


def fwht_reference(x: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform along the last dim, computed in x's dtype.

    Floating dtypes below float32 are computed in float32 and cast back.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"hadamard_transform needs a floating tensor, got {x.dtype}")
    d = x.shape[-1]
    m, p = split_dim(d)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    lead = work.shape[:-1]
    y = _butterfly(work.reshape(*lead, m, p))
    if m > 1:
        hm = small_hadamard(m, dtype=work.dtype, device=work.device)
        # forward: y = H_m @ y (mixing the m groups); inverse uses H_m^T (Paley's H is not symmetric)
        y = torch.einsum("ij,...jp->...ip", hm.T if inverse else hm, y)
    y = y.reshape(*lead, d) * (1.0 / math.sqrt(d))
    return y.to(x.dtype)


def hadamard_signs(d: int, seed: int, device=None) -> torch.Tensor:
    """The seeded random +-1 vector of the randomized transform (float32, same on every device)."""
    split_dim(d)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    bits = torch.randint(0, 2, (d,), generator=g, dtype=torch.int64)
    return (1 - 2 * bits).to(dtype=torch.float32, device=device)


# (d, seed, device) -> signs; device_tables.cached_table (never evicted: a captured CUDA graph
# keeps reading them).
_SIGNS: dict = {}


def _signs_on(d: int, seed: int, device: str) -> torch.Tensor:
    return cached_table(_SIGNS, (d, seed, device), device, hadamard_signs, d, seed, device)


def cached_hadamard_signs(d: int, seed: int, device) -> torch.Tensor:
    """hadamard_signs, built once per (d, seed, device) and reused: on a GPU this saves a host to
    device copy (and the sync it forces) on every attention call; built outside any CUDA-graph
    pool (device_tables.cached_table). RuntimeError when first needed inside a CUDA-graph
    capture (the copy cannot be captured: make a warm-up call first). Read-only: do not modify
    it."""
    return _signs_on(int(d), int(seed), str(torch.device(device)))


def random_hadamard_reference(x: torch.Tensor, signs: torch.Tensor, *, inverse: bool = False
                              ) -> torch.Tensor:
    """y = fwht(x * signs); inverse: x = fwht^-1(y) * signs. Same signs for Q and K keep Q K^T."""
    if inverse:
        return (fwht_reference(x, inverse=True).to(torch.promote_types(x.dtype, torch.float32))
                * signs.to(x.device)).to(x.dtype)
    return fwht_reference((x.to(torch.promote_types(x.dtype, torch.float32))
                           * signs.to(x.device)), inverse=False).to(x.dtype)
