"""Quantisation of Q, K, V to FP8 with per-group scales: torch reference and fused Triton kernel.

Backends: None picks the Triton kernel for CUDA tensors and the torch reference elsewhere;
"torch" forces the reference; "triton" forces the kernel (on the CPU through Triton's interpreter,
TRITON_INTERPRET=1 set before triton is imported).
"""
from __future__ import annotations

import torch

from ..device_guard import on_inputs_device
from ..formats import check_fmt
from ..hadamard.reference import cached_hadamard_signs, split_dim
from ..recipe import GRANULARITIES, Recipe
from .key_order import KEY_ORDERS, check_key_order
from .padded_rows import PaddedRows, pad_rows
from .reference import QuantizedTensor, check_search, quantize_reference

__all__ = ["KEY_ORDERS", "QuantizedTensor", "quantize", "quantize_qkv", "quantize_reference"]

_BACKENDS = (None, "torch", "triton")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(x, fmt, granularity, block, signs, transpose, backend, name="x") -> str:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    desc = f"{name} (shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device})"
    if x.dtype not in _DTYPES:
        raise TypeError(f"{desc}: expected float16, bfloat16 or float32")
    if x.dim() != 4:
        raise ValueError(f"{desc}: expected 4 dims (B, H, S, D)")
    check_fmt(fmt)
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    if not isinstance(transpose, bool):
        raise TypeError(f"transpose must be a bool, got {type(transpose).__name__}")
    if signs is not None:
        if not isinstance(signs, torch.Tensor) or signs.shape != (x.shape[-1],):
            got = tuple(signs.shape) if isinstance(signs, torch.Tensor) else type(signs).__name__
            raise ValueError(f"signs must be a tensor of shape ({x.shape[-1]},) for {desc}, got {got}")
        if signs.device != x.device:
            raise ValueError(f"signs on {signs.device} but {desc}")
        try:
            split_dim(x.shape[-1])
        except ValueError as e:
            raise ValueError(f"{desc}: cannot rotate: {e}") from None
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend is None:
        return "triton" if x.is_cuda else "torch"
    return backend


@on_inputs_device
def quantize(x: torch.Tensor, fmt: str = "e4m3", granularity: str = "block", block: int = 128, *,
             signs: torch.Tensor | None = None, transpose: bool = False,
             residual: bool = False, search: int = 1, key_order: str = "natural",
             backend: str | None = None) -> QuantizedTensor:
    """Quantise x (B, H, S, D) to FP8 with per-group float32 descales (see QuantizedTensor).

    signs: optional (D,) +-1 vector: rotate first, x -> fwht(x * signs) (computed in float32).
    transpose: store data as (B, H, D, S), contiguous along S (V for the attention kernel); the
    Triton path returns a view of a buffer padded to S_pad = 16 * ceil(S / 16) (stride(-2) == S_pad,
    zero tail), the torch path a contiguous tensor.
    Any input strides: a (B, S, H, D) tensor's .transpose(1, 2) view is read without a copy.
    residual: also produce the second FP8 term (QuantizedTensor.residual: cast(y - float(data)),
    y = x * scale, same descale and layout as data; Recipe.q_terms == 2 asks it for Q); both
    backends give the same bits.
    search: 1, or up to 64 candidate scales per row (granularity "token", transpose=False): each
    row keeps the candidate with the least squared rounding error (reference.search_row_scales;
    Recipe.q_search asks it for Q). The backends agree bit for bit except where two candidates'
    errors tie to float32 rounding (sums in another order).
    key_order: with transpose=True, "natural" or "mma": V^T's keys permuted inside groups of 16
    (quant/key_order.py), the order the Gluon attention kernel reads fastest; the data is then a
    view of rows padded to a multiple of 16. Both backends give the same bits.
    """
    backend = _check(x, fmt, granularity, block, signs, transpose, backend)
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
    check_search(search, granularity, transpose)
    check_key_order(key_order, transpose)
    return _quantize_checked(x, fmt, granularity, block, signs, transpose, backend, residual,
                             search, key_order)


def _quantize_checked(x, fmt, granularity, block, signs, transpose, backend: str,
                      residual: bool = False, search: int = 1, key_order: str = "natural",
                      rows: PaddedRows | None = None):
    """rows: None, or the padded layout to write x's packed rows in (quantize_qkv's kv_rows)."""
    if backend == "torch" or x.numel() == 0:
        return quantize_reference(x if rows is None else pad_rows(x, rows), fmt, granularity,
                                  block, signs=signs, transpose=transpose, residual=residual,
                                  search=search, key_order=key_order)
    from .triton import quantize_triton
    return quantize_triton(x, fmt, granularity, block, signs=signs, transpose=transpose,
                           residual=residual, search=search, key_order=key_order, rows=rows)


@on_inputs_device
def quantize_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, recipe: Recipe, *,
                 backend: str | None = None, v_key_order: str = "natural",
                 kv_rows: PaddedRows | None = None
                 ) -> tuple[QuantizedTensor, QuantizedTensor, QuantizedTensor]:
    """Quantise attention inputs (B, H, S, D) by `recipe`: Q and K rotated with the same signs
    (hadamard_signs(D, recipe.seed)) when recipe.hadamard; V not rotated and stored transposed
    (B, H, D, S). Q groups of recipe.block_q rows, K and V of recipe.block_kv (granularity "block").
    recipe.q_search > 1: Q gets one scale per token, the best of q_search candidates (K and V
    keep recipe.granularity). recipe.q_terms == 2: Q also carries its second FP8 term
    (QuantizedTensor.residual). v_key_order: the key order of V^T ("natural" or "mma", see
    quantize). kv_rows: None, or (varlen batches) a padded_rows.PaddedRows for K's and V's
    packed rows (k and v of batch 1): their FP8 data and descales come in that layout, each
    sequence starting at a multiple of kv_rows.align rows, zeros between (the bits of
    quantising padded copies)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an fp8attn.Recipe, got {type(recipe).__name__}")
    check_key_order(v_key_order)
    signs = cached_hadamard_signs(q.shape[-1], recipe.seed, q.device) if recipe.hadamard else None
    fmt, g = recipe.fmt, recipe.granularity
    # every check before the first launch; the blocks are the recipe's (validated there)
    used = [_check(t, fmt, g, 1, s, False, backend, name)
            for name, t, s in (("q", q, signs), ("k", k, signs), ("v", v, None))]
    q_gran = "token" if recipe.q_search > 1 else g
    if kv_rows is not None and any(t.shape[0] != 1 or t.shape[2] != kv_rows.total
                                   for t in (k, v)):
        raise ValueError(f"kv_rows: k and v must hold one batch of {kv_rows.total} packed rows, "
                         f"got {tuple(k.shape)} and {tuple(v.shape)}")
    if (used[0] == used[1] == "triton" and recipe.q_terms == 1 and recipe.q_search == 1
            and q.numel() and k.numel()):
        # one launch for Q and K where the kernel can (same bits; one launch's host time less)
        # and V with them where the kernel can (session 38: one launch less, and V's tiles no
        # longer end on a wave of their own)
        from .triton import quantize_pair_triton
        q8, k8, v8 = quantize_pair_triton(q, k, fmt, g, recipe.block_q, recipe.block_kv,
                                          signs=signs, k_rows=kv_rows,
                                          v=v if used[2] == "triton" else None,
                                          v_key_order=v_key_order)
        if v8 is not None:
            return q8, k8, v8
    else:
        q8 = _quantize_checked(q, fmt, q_gran, recipe.block_q, signs, False, used[0],
                               recipe.q_terms == 2, recipe.q_search)
        k8 = _quantize_checked(k, fmt, g, recipe.block_kv, signs, False, used[1], rows=kv_rows)
    return (q8, k8, _quantize_checked(v, fmt, g, recipe.block_kv, None, True, used[2],
                                      key_order=v_key_order, rows=kv_rows))
