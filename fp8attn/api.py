"""Public attention functions: validate, pick a backend, dispatch.

Backends (environment variable FP8ATTN_BACKEND overrides the automatic choice):
  "triton"     the Triton kernels; automatic on CUDA GPUs of compute capability >= 8.9 (FP8 tensor
               cores; tuned on sm_90). On the CPU it runs through Triton's interpreter, which needs
               TRITON_INTERPRET=1 set before triton is imported.
  "emulation"  a PyTorch emulation of the kernel's FP8 numerics; automatic on the CPU.
"""
from __future__ import annotations

import math
import os

import torch

from .hadamard.reference import is_supported_dim
from .recipe import DEFAULT_RECIPE, Recipe

BACKENDS = ("triton", "emulation")
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _fmt_t(name: str, t: torch.Tensor) -> str:
    return f"{name} (shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device})"


def select_backend(device: torch.device) -> str:
    forced = os.environ.get("FP8ATTN_BACKEND", "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"FP8ATTN_BACKEND={forced!r}; expected one of {BACKENDS}")
        return forced
    if device.type == "cpu":
        return "emulation"
    if device.type == "cuda":
        cc = torch.cuda.get_device_capability(device)
        if cc < (8, 9):
            raise ValueError(
                f"fp8attn needs FP8 tensor cores (compute capability >= 8.9, tuned for 9.0 / Hopper); "
                f"{torch.cuda.get_device_name(device)} on {device} has {cc[0]}.{cc[1]}. Move the "
                f"tensors to the CPU to run the emulation.")
        return "triton"
    raise ValueError(f"fp8attn runs on CUDA (sm_89+) or the CPU, not on device {device}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layout: str,
              recipe: Recipe, allow_gqa: bool = True) -> None:
    """Raise TypeError / ValueError naming the offending tensor before any work is done.

    layout "bhsd": (batch, heads, seqlen, head_dim) as torch SDPA; "bshd": as FlashAttention.
    """
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in INPUT_DTYPES:
            raise TypeError(f"{_fmt_t(name, t)}: expected float16, bfloat16 or float32 "
                            f"(pre-quantised FP8 inputs go with their descales)")
        if t.dim() != 4:
            raise ValueError(f"{_fmt_t(name, t)}: expected 4 dims ({layout.upper()} layout)")
    if not (q.device == k.device == v.device):
        raise ValueError(f"mixed devices: {_fmt_t('query', q)}, {_fmt_t('key', k)}, "
                         f"{_fmt_t('value', v)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"mixed dtypes: query {q.dtype}, key {k.dtype}, value {v.dtype}")
    hdim = 1 if layout == "bhsd" else 2
    sdim = 2 if layout == "bhsd" else 1
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"batch sizes differ: {_fmt_t('query', q)}, {_fmt_t('key', k)}, "
                         f"{_fmt_t('value', v)}")
    if k.shape != v.shape:
        raise ValueError(f"key and value shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"head dims differ: query {q.shape[-1]}, key {k.shape[-1]}")
    if q.shape[hdim] != k.shape[hdim]:
        if not allow_gqa:
            raise ValueError(f"query has {q.shape[hdim]} heads, key/value {k.shape[hdim]}: "
                             f"pass enable_gqa=True for grouped-query attention")
        if q.shape[hdim] % k.shape[hdim] != 0:
            raise ValueError(f"query heads ({q.shape[hdim]}) must be a multiple of key/value heads "
                             f"({k.shape[hdim]}) for grouped-query attention")
    if k.shape[sdim] == 0 and q.shape[sdim] > 0:
        raise ValueError(f"{_fmt_t('key', k)}: seqlen_k is 0, attention is undefined")
    d = q.shape[-1]
    if recipe.hadamard and not is_supported_dim(d):
        raise ValueError(f"head dim {d} has no Hadamard rotation (sizes 2**k, 12*2**k, 20*2**k up "
                         f"to 1024); use Recipe(hadamard=False) or another head dim")
    if d > 256 or d < 8:
        raise ValueError(f"head dim {d} unsupported: fp8attn supports head dims 8..256")


def _check_recipe(recipe) -> Recipe:
    if recipe is None:
        return DEFAULT_RECIPE
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an fp8attn.Recipe or None, got {type(recipe).__name__}")
    return recipe


def attention_bhsd(q, k, v, *, causal: str | None, softmax_scale: float, recipe: Recipe,
                   return_lse: bool = False):
    """Dispatch validated (B, H, S, D) inputs. causal: None, "top_left" (torch) or "bottom_right" (FA)."""
    backend = select_backend(q.device)
    if backend == "emulation":
        from .attention.reference import fp8_flash_emulation
        return fp8_flash_emulation(q, k, v, causal=causal, softmax_scale=softmax_scale,
                                   recipe=recipe, return_lse=return_lse)
    from .attention.ops import fp8_attention_bhsd
    return fp8_attention_bhsd(q, k, v, causal=causal, softmax_scale=softmax_scale, recipe=recipe,
                              return_lse=return_lse)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False, *, recipe=None):
    """FP8 attention with torch.nn.functional.scaled_dot_product_attention's signature.

    query (B, Hq, Sq, D), key / value (B, Hkv, Sk, D), float16 / bfloat16 / float32, all on one
    device; returns (B, Hq, Sq, D) in query's dtype. is_causal uses torch's upper-left alignment
    (query i sees keys j <= i; with Sq > Sk the first rows see no key and output 0). GQA needs
    enable_gqa=True, as in torch (query head h uses kv head h // (Hq // Hkv)). scale defaults to
    1 / sqrt(D). recipe (fp8attn.Recipe, default the FA3 recipe) chooses format, scale granularity
    and rotation. attn_mask and dropout_p != 0 are not supported yet (ValueError). Bad ranks,
    shapes, dtypes, head dims or mixed devices raise ValueError / TypeError before any work.

    NaN / Inf in the inputs (scales come from the finite values only, so neither spreads through
    a scale block; other heads and batches are never affected):
      - NaN in query row i: output row i is NaN, every other row is unaffected.
      - NaN in key row j: every query row that sees key j is NaN; rows that cannot see j (causal)
        are unaffected.
      - NaN in value[j, d]: column d of every query row that sees key j is NaN; other rows and
        columns are unaffected in the CPU emulation. The GPU kernel multiplies P and V per tile, so
        there a NaN value may also reach rows of the same tile that cannot see key j (0 * NaN).
      - +-Inf anywhere is saturated to +-FP8 max by the cast (after the Hadamard rotation has spread
        it as +-Inf over its row), so outputs stay finite where exact attention would give NaN or
        Inf: the rows that depend on it (as for NaN above) are finite but meaningless.
    """
    recipe = _check_recipe(recipe)
    if attn_mask is not None:
        raise ValueError("attn_mask is not supported by fp8attn yet (use is_causal, or the "
                         "integration layer for padding masks)")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p={dropout_p}: dropout is not supported by fp8attn (inference only)")
    check_qkv(query, key, value, layout="bhsd", recipe=recipe, allow_gqa=enable_gqa)
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
        if not math.isfinite(scale) or scale == 0:
            raise ValueError(f"scale must be finite and non-zero, got {scale}")
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    return attention_bhsd(query, key, value, causal="top_left" if is_causal else None,
                          softmax_scale=float(scale), recipe=recipe)
