"""Reference quantisation of (B, H, S, D) tensors to FP8 with per-group scales (PyTorch, any device).

Scale groups along the sequence are described by one number, `block_size`: row r of head (b, h)
uses descale[b, h, r // block_size]. Every granularity maps onto that layout:
    "block"  -> block_size = the recipe's block (NB = ceil(S / block_size))
    "token"  -> block_size = 1                  (NB = S)
    "head"   -> block_size = S                  (NB = 1)
    "tensor" -> block_size = S, and the same value in every (b, h)
so the attention kernel reads descales one way, whatever the recipe.
"""
from __future__ import annotations

import dataclasses

import torch

from ..device_tables import cached_table
from ..formats import finite_amax, saturating_cast, scales_from_amax
from ..recipe import GRANULARITIES, MAX_SEARCH
from .key_order import check_key_order, to_mma, to_natural


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """FP8 data plus float32 descales. data is (B, H, S, D), or (B, H, D, S) if `transposed`
    (head-dim major, contiguous along the sequence: the layout the attention kernel wants for V).

    residual: None, or the second FP8 term (Recipe.q_terms == 2, used for Q): same shape, dtype
    and layout as data, and the SAME descale: with y = x * scale (rotated first if asked, the value
    cast to data), residual = cast(y - float(data)). |y - data| <= half an ulp of data, far inside
    the format's range (it underflows only for |y| below ~0.25), so no scale of its own is needed.

    key_order: "natural", or "mma" (transposed only): the keys of every 16-key group of data
    (and residual) permuted as quant/key_order.py describes, the order the Gluon attention
    kernel reads V^T in; data is then a view of rows padded to a multiple of 16 positions.
    dequantize() and row_descale() are in natural key order either way.
    """

    data: torch.Tensor
    descale: torch.Tensor
    block_size: int
    fmt: str
    transposed: bool = False
    residual: torch.Tensor | None = None
    key_order: str = "natural"

    def __post_init__(self):
        check_key_order(self.key_order, self.transposed)

    @property
    def seqlen(self) -> int:
        return self.data.shape[-1] if self.transposed else self.data.shape[-2]

    def row_descale(self) -> torch.Tensor:
        """(B, H, S) float32: the descale of every row."""
        idx = torch.arange(self.seqlen, device=self.descale.device) // self.block_size
        return self.descale[..., idx]

    def dequantize(self) -> torch.Tensor:
        """float32 (B, H, S, D) values the FP8 data stands for: (data + residual, if present)
        * descale (data + residual is exact in float32: their bits span fewer than 24 binary
        digits)."""
        natural = to_natural if self.key_order == "mma" else (lambda t: t)
        x = natural(self.data).float()
        if self.residual is not None:
            x = x + natural(self.residual).float()
        if self.transposed:
            x = x.transpose(-1, -2)
        return x * self.row_descale()[..., None]


def group_block_size(granularity: str, seqlen: int, block: int) -> int:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    if granularity == "block":
        return block
    if granularity == "token":
        return 1
    return max(seqlen, 1)


def compute_descale_groups(x: torch.Tensor, granularity: str, block: int):
    """Per-group amax of a (B, H, S, D) tensor -> (amax (B, H, NB) float32, block_size)."""
    B, H, S, D = x.shape
    bs = group_block_size(granularity, S, block)
    if granularity == "tensor":
        amax = finite_amax(x).reshape(1, 1, 1).expand(B, H, 1).contiguous()
    else:
        nb = -(-S // bs)
        pad = nb * bs - S
        xp = torch.nn.functional.pad(x.float(), (0, 0, 0, pad)) if pad else x
        amax = finite_amax(xp.reshape(B, H, nb, bs * D), dim=-1)
    return amax, bs


def check_search(search, granularity: str, transpose: bool) -> None:
    """`search` of quantize / quantize_reference: an int in 1..MAX_SEARCH, > 1 only for
    per-token groups of rows that are not transposed."""
    if isinstance(search, bool) or not isinstance(search, int) or not 1 <= search <= MAX_SEARCH:
        raise ValueError(f"search must be an int in 1..{MAX_SEARCH}, got {search!r}")
    if search > 1 and (granularity != "token" or transpose):
        raise ValueError(f"search={search} picks one scale per row: it needs granularity 'token' "
                         f"and transpose=False, got {granularity!r} and transpose={transpose}")


def search_factors(n: int, device=None) -> torch.Tensor:
    """(2, n) float32: row 0 the scale multipliers 2**(-j/n), row 1 the descale multipliers
    2**(j/n), j < n (the same float32 table for the reference and the kernels)."""
    j = torch.arange(n, dtype=torch.float64)
    return torch.stack([torch.exp2(-j / n), torch.exp2(j / n)]).float().to(device)


# (n, device) -> search_factors(n, device): device_tables.cached_table (never evicted; a host
# copy, so a RuntimeError asking for a warm-up call when first needed inside a CUDA-graph capture)
_SEARCH_TABLES: dict = {}


def cached_search_factors(n: int, device) -> torch.Tensor:
    """search_factors, built once per (n, device) (the reference's and the kernel's search)."""
    device = str(torch.device(device))
    return cached_table(_SEARCH_TABLES, (n, device), device, search_factors, n, device)


def search_row_scales(xf: torch.Tensor, scale: torch.Tensor, descale: torch.Tensor, fmt: str,
                      n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of xf (B, H, S, D) float32, the best of n candidate scales.

    scale / descale (B, H, S): the amax scales (amax * scale == fp8_max). Candidate j is
    scale * 2**(-j/n) (never above fp8_max, so nothing saturates) with descale * 2**(j/n); the
    one with the least squared rounding error of the row, (y - float(cast(y)))**2 summed times
    descale_j**2, wins (ties and NaN rows keep j = 0). e4m3's relative rounding error does not
    depend on the scale on average, but for one row of 128 values it does: on FA3's outlier data
    (rotated, (2, 16, 2048, 128)) Q's rounding error energy is 0.95x that of block-128 scales with
    per-row amax scales, 0.83x with the best of 4, 0.78x of 8, 0.75x of 16 (see Recipe.q_search)."""
    if n < 1 or n > MAX_SEARCH:
        raise ValueError(f"search must be in 1..{MAX_SEARCH}, got {n}")
    fac = cached_search_factors(n, xf.device)
    best_s, best_d, best_e = scale, descale, None
    for j in range(n):
        s_j = scale * fac[0, j] if j else scale
        d_j = descale * fac[1, j] if j else descale
        y = xf * s_j[..., None]
        e = y - saturating_cast(y, fmt).float()
        err = (e * e).sum(-1) * d_j * d_j
        if best_e is None:
            best_e = err
            continue
        better = err < best_e
        best_e = torch.where(better, err, best_e)
        best_s = torch.where(better, s_j, best_s)
        best_d = torch.where(better, d_j, best_d)
    return best_s, best_d


def quantize_reference(x: torch.Tensor, fmt: str = "e4m3", granularity: str = "block",
                       block: int = 128, *, signs: torch.Tensor | None = None,
                       transpose: bool = False, residual: bool = False,
                       search: int = 1, key_order: str = "natural") -> QuantizedTensor:
    """Quantise a (B, H, S, D) tensor; if `signs` is given, rotate first by the randomized Hadamard
    transform (fwht(x * signs)), computed in float32, as the fused kernel does.
    residual: also return the second FP8 term cast(y - float(data)), y = x * scale in float32
    (QuantizedTensor.residual; same descale, shape and layout as data).
    search: > 1 picks each row's scale among `search` candidates (search_row_scales); needs
    granularity "token" and transpose=False.
    key_order: "natural" or "mma" (transpose=True: see QuantizedTensor)."""
    check_search(search, granularity, transpose)
    check_key_order(key_order, transpose)
    if x.dim() != 4:
        raise ValueError(f"quantize expects (B, H, S, D), got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x) or x.element_size() == 1:
        raise TypeError(f"quantize expects a float16/bfloat16/float32 tensor, got {x.dtype}")
    # +-Inf becomes NaN: saturating it to the FP8 max would be a silent wrong value; as NaN it
    # stays visible in exactly the outputs that depend on it (scales ignore it either way).
    xf = torch.where(torch.isinf(x), float("nan"), x.float())
    if signs is not None:
        from ..hadamard.reference import random_hadamard_reference
        xf = random_hadamard_reference(xf, signs)
    amax, bs = compute_descale_groups(xf, granularity, block)
    scale, descale = scales_from_amax(amax, fmt)
    if search > 1:
        scale, descale = search_row_scales(xf, scale, descale, fmt, search)
    idx = torch.arange(x.shape[-2], device=x.device) // bs
    y = xf * scale[..., idx][..., None]
    data = saturating_cast(y, fmt)
    # y - float(data) is exact in float32 (data is y rounded to a coarser grid, or saturated by
    # a float32 rounding's worth); NaN stays NaN
    res = saturating_cast(y - data.float(), fmt) if residual else None
    if transpose:
        order = to_mma if key_order == "mma" else (lambda t: t.contiguous())
        data = order(data.transpose(-1, -2))
        res = None if res is None else order(res.transpose(-1, -2))
    return QuantizedTensor(data=data, descale=descale.contiguous(), block_size=bs, fmt=fmt,
                           transposed=transpose, residual=res, key_order=key_order)
