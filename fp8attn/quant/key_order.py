"""The order of the keys along S in a transposed V (B, H, D, S) buffer.

"natural": position s holds key s.
"mma": keys permuted inside every group of 16 positions: position 16 g + a holds key
16 g + c(a), where the bits (0, 1, 2, 3) of c(a) are the bits (0, 2, 3, 1) of a. It is the
order in which the Gluon kernel's P @ V wgmma reads P straight from the registers of the S
accumulator (no data moves between lanes; gluon_fwd._pack_p says why). A sum over keys does not
depend on their order, so attention gives the same result with V^T in either order, provided
P and V^T agree.

An "mma"-order tensor is the (B, H, D, S) view of a buffer whose rows hold S_pad = 16 *
ceil(S / 16) positions (stride(-2) >= S_pad): positions S..S_pad-1 can hold real keys, and the
positions of keys >= S hold zeros. The quantiser writes it that way (quant.quantize,
key_order="mma"); to_mma / to_natural convert in torch (one gather each).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl  # noqa: F401 - the interpreter wants it in a jit function's module

from ..device_tables import cached_table

KEY_ORDERS = ("natural", "mma")
GROUP = 16


def check_key_order(key_order, transposed: bool = True) -> None:
    """A known order, and "mma" only for transposed data (V^T: the order is along S)."""
    if key_order not in KEY_ORDERS:
        raise ValueError(f"key_order must be one of {KEY_ORDERS}, got {key_order!r}")
    if key_order != "natural" and not transposed:
        raise ValueError(f"key_order {key_order!r} needs transpose=True (transposed V^T data)")


def padded_len(s: int) -> int:
    return -(-s // GROUP) * GROUP


def mma_key(pos: torch.Tensor) -> torch.Tensor:
    """The key stored at position `pos` (int tensor) in the "mma" order."""
    a = pos & (GROUP - 1)
    c = (a & 1) | (((a >> 2) & 1) << 1) | (((a >> 3) & 1) << 2) | (((a >> 1) & 1) << 3)
    return pos - a + c


def _index_of(n_pad: int, device: torch.device) -> torch.Tensor:
    return mma_key(torch.arange(n_pad, device=device))


def _inverse_of(n_pad: int, device: torch.device) -> torch.Tensor:
    idx = _index(n_pad, device)
    # argsort of a permutation, as a scatter (one plain kernel: safe inside a capture)
    return torch.empty_like(idx).scatter_(0, idx, torch.arange(n_pad, device=device))


# (padded length, device) -> permutation; device_tables.cached_table: never evicted, and
# computed on the stream (uncached) when a CUDA graph is captured before the table exists.
_INDEX: dict = {}
_INVERSE: dict = {}


def _index(n_pad: int, device: torch.device) -> torch.Tensor:
    return cached_table(_INDEX, (n_pad, str(device)), device, _index_of, n_pad, device,
                        in_capture=_index_of)


def _inverse(n_pad: int, device: torch.device) -> torch.Tensor:
    return cached_table(_INVERSE, (n_pad, str(device)), device, _inverse_of, n_pad, device,
                        in_capture=_inverse_of)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """FP8 as uint8 (indexing FP8 tensors is not implemented everywhere)."""
    return t.view(torch.uint8) if t.element_size() == 1 else t


def to_mma(vt: torch.Tensor) -> torch.Tensor:
    """A natural-order (..., S) tensor -> the same keys in the "mma" order: a (..., S) view of a
    new contiguous (..., S_pad) buffer (zeros past the keys)."""
    s = vt.shape[-1]
    s_pad = padded_len(s)
    full = torch.zeros(*vt.shape[:-1], s_pad, dtype=vt.dtype, device=vt.device)
    full[..., :s] = vt
    out = _bytes(full)[..., _index(s_pad, vt.device)].view(vt.dtype)
    return out[..., :s]


def padded_view(vt: torch.Tensor) -> torch.Tensor:
    """An "mma"-order (..., S) view -> the (..., S_pad) view of its buffer (every position of
    the last group). Raises if the buffer does not hold them (rows shorter than S_pad)."""
    s = vt.shape[-1]
    s_pad = padded_len(s)
    if s_pad == s:
        return vt
    if vt.dim() < 2 or vt.stride(-1) != 1 or vt.stride(-2) < s_pad:
        raise ValueError(f"an 'mma'-order V^T needs rows of {s_pad} positions (stride(-2) >= "
                         f"{s_pad}, unit last stride); got shape {tuple(vt.shape)} strides "
                         f"{tuple(vt.stride())}")
    end = vt.storage_offset() + sum((n - 1) * st for n, st in
                                    zip((*vt.shape[:-1], s_pad), vt.stride())) + 1
    if end * vt.element_size() > vt.untyped_storage().nbytes():
        raise ValueError("an 'mma'-order V^T's buffer ends before the padded positions of its "
                         "last row")
    return vt.as_strided((*vt.shape[:-1], s_pad), vt.stride(), vt.storage_offset())


def to_natural(vt: torch.Tensor) -> torch.Tensor:
    """An "mma"-order (..., S) view (see padded_view) -> the natural order, as the quantiser
    writes it: a (..., S) view of a new contiguous (..., S_pad) buffer (zeros past the keys)."""
    s = vt.shape[-1]
    full = padded_view(vt)
    inv = _inverse(full.shape[-1], vt.device)
    return _bytes(full)[..., inv].view(vt.dtype)[..., :s]


@triton.jit
def mma_key_tl(pos):
    """mma_key inside a Triton kernel (the quantiser's row loads; 15 = GROUP - 1: a jit function
    reads no plain module globals)."""
    a = pos & 15
    c = (a & 1) | (((a >> 2) & 1) << 1) | (((a >> 3) & 1) << 2) | (((a >> 1) & 1) << 3)
    return pos - a + c
