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

from .attention.reference import default_softmax_scale
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
        if forced == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("FP8ATTN_BACKEND=triton on the CPU needs Triton's interpreter: set "
                             "TRITON_INTERPRET=1 before triton is imported (or use the emulation)")
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
    """Dispatch validated (B, H, S, D) inputs. causal: None, "top_left" (torch) or "bottom_right" (FA).

    One torch.library custom op (attention/ops.py) that picks the backend when it runs, so
    torch.compile sees a single node whichever backend serves it.
    """
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
      - +-Inf is turned into NaN when Q, K, V are quantised (a saturated 448 would be a silent wrong
        value), so it reaches exactly the outputs a NaN in its place would (above).
    """
    recipe = _check_recipe(recipe)
    if attn_mask is not None:
        raise ValueError("attn_mask is not supported by fp8attn yet (use is_causal, or the "
                         "integration layer for padding masks)")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p={dropout_p}: dropout is not supported by fp8attn (inference only)")
    check_qkv(query, key, value, layout="bhsd", recipe=recipe, allow_gqa=enable_gqa)
    scale = _softmax_scale(scale, query.shape[-1], name="scale")
    return attention_bhsd(query, key, value, causal="top_left" if is_causal else None,
                          softmax_scale=scale, recipe=recipe)


FP8_INPUT_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def _softmax_scale(scale, d: int, name: str = "softmax_scale") -> float:
    """Validated softmax scale; None -> 1 / sqrt(d). `name` is the caller's argument name."""
    if scale is None:
        return default_softmax_scale(None, d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{name} must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale == 0:
        raise ValueError(f"{name} must be finite and non-zero, got {scale}")
    return float(scale)


def _check_descale(name: str, d, batch: int, heads: tuple, device) -> torch.Tensor:
    """None -> ones; a float32 tensor of (batch, h) for h in `heads`, or one element -> (batch, h)."""
    h = heads[-1]
    if d is None:
        return torch.ones(batch, h, dtype=torch.float32, device=device)
    if not isinstance(d, torch.Tensor):
        raise TypeError(f"{name} must be a float32 tensor or None, got {type(d).__name__}")
    if d.device != device:
        raise ValueError(f"{_fmt_t(name, d)} is not on the inputs' device {device}")
    if d.numel() == 1:
        return d.float().reshape(1, 1).expand(batch, h)
    if d.dim() != 2 or d.shape[0] != batch or d.shape[1] not in heads:
        raise ValueError(f"{_fmt_t(name, d)}: expected (batch={batch}, heads in {sorted(set(heads))})"
                         f" or a single element")
    return d.float()


def _check_fp8_inputs(q, k, v, q_descale, k_descale, v_descale, recipe, batch=None):
    """batch: the descales' first dim where it is not q's (varlen: the sequences)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{_fmt_t(name, t)}: expected 4 dims (B, S, H, D)")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"FP8 inputs must share one dtype: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if recipe is not None:
        raise TypeError("recipe applies to bf16/fp16/fp32 inputs; pre-quantised FP8 inputs carry "
                        "their format in their dtype and their scales in q/k/v_descale")
    if not (q.device == k.device == v.device):
        raise ValueError(f"mixed devices: {_fmt_t('q', q)}, {_fmt_t('k', k)}, {_fmt_t('v', v)}")
    b, _, hq, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[-1] != d:
        raise ValueError(f"incompatible shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} (expected (B, S, H, D), k and v alike)")
    hkv = k.shape[2]
    if hq % hkv:
        raise ValueError(f"q has {hq} heads, k/v {hkv}: q heads must be a multiple")
    if k.shape[1] == 0 and q.shape[1] > 0:
        raise ValueError(f"{_fmt_t('k', k)}: seqlen_k is 0, attention is undefined")
    if d > 256 or d < 8:
        raise ValueError(f"head dim {d} unsupported: fp8attn supports head dims 8..256")
    b = b if batch is None else batch
    qd = _check_descale("q_descale", q_descale, b, (hkv, hq), q.device)
    if qd.shape[1] != hq:
        qd = qd.repeat_interleave(hq // hkv, 1)
    return (qd.contiguous(), _check_descale("k_descale", k_descale, b, (hkv,), q.device).contiguous(),
            _check_descale("v_descale", v_descale, b, (hkv,), q.device).contiguous())


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, *, recipe=None, return_lse=False,
                    q_descale=None, k_descale=None, v_descale=None):
    """FP8 attention with FlashAttention-3's signature and layout.

    q (B, Sq, Hq, D), k / v (B, Sk, Hkv, D) (Hq a multiple of Hkv: MQA / GQA, query head h uses
    kv head h // (Hq // Hkv)). causal aligns the mask to the bottom right as FlashAttention does
    (query i sees keys j <= i + Sk - Sq; rows that see no key output 0). softmax_scale defaults
    to 1 / sqrt(D).
      - float16 / bfloat16 / float32 inputs: rotated and quantised by `recipe` (default: FA3's,
        e4m3, block scales, Hadamard), then the FP8 kernel; output in q's dtype.
      - already-quantised FP8 inputs (all float8_e4m3fn or all float8_e5m2): q/k/v_descale float32
        of shape (B, Hkv) as in FA3 (q_descale may also be (B, Hq)), or one element, or None (1);
        output bfloat16. V is copied once into the kernel's head-dim-major layout. They take no
        recipe (TypeError), so no two-term Q (Recipe.q_terms=2 needs the unquantised inputs).
    Returns out (B, Sq, Hq, D), and with return_lse also lse float32 (B, Hq, Sq) (natural log).
    """
    from .attention.ops import fp8_attention_bshd, fp8_attention_quantized
    causal = _check_causal_flag(causal)
    if isinstance(q, torch.Tensor) and q.dtype in FP8_INPUT_DTYPES:
        qd, kd, vd = _check_fp8_inputs(q, k, v, q_descale, k_descale, v_descale, recipe)
        scale = _softmax_scale(softmax_scale, q.shape[-1])
        return fp8_attention_quantized(q, k, v, qd, kd, vd, causal=causal, softmax_scale=scale,
                                       return_lse=return_lse)
    if any(d is not None for d in (q_descale, k_descale, v_descale)):
        raise ValueError("q/k/v_descale go with pre-quantised FP8 inputs; these inputs are "
                         f"{getattr(q, 'dtype', type(q).__name__)} and get quantised by the recipe")
    recipe = _check_recipe(recipe)
    check_qkv(q, k, v, layout="bshd", recipe=recipe, allow_gqa=True)
    scale = _softmax_scale(softmax_scale, q.shape[-1])
    return fp8_attention_bshd(q, k, v, causal=causal, softmax_scale=scale, recipe=recipe,
                              return_lse=return_lse)


def _check_causal_flag(causal) -> str | None:
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    return "bottom_right" if causal else None


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale=None, causal=False, *, recipe=None, return_lse=False,
                           q_descale=None, k_descale=None, v_descale=None):
    """Variable-length FP8 attention, FlashAttention-3 style: sequences packed along dim 0.

    q (total_q, Hq, D), k / v (total_k, Hkv, D), float16 / bfloat16 / float32; cu_seqlens_q / _k
    int32 (nseq + 1,) cumulative offsets starting at 0 on the inputs' device; max_seqlen_q / _k the
    longest sequences. Sequence i attends q[cu_q[i]:cu_q[i+1]] to k/v[cu_k[i]:cu_k[i+1]]; causal is
    bottom-right aligned per sequence. Q's scale blocks run along the packed rows (on the GPU a
    Q block may span two sequences; the CPU emulation quantises each sequence separately). With
    the default block scales, K and V are quantised into rows where each sequence starts on a
    scale block (FP8ATTN_VARLEN_ALIGN=0 keeps them packed; skipped where that could more than
    double them), so the kernels read K and V descales per tile. Head dims 80 to 128 run the
    Gluon kernel (its work items every sequence's query tiles, handed to the CTAs as they come
    free; sessions 35-38), 64 and 256 the Triton kernel. H200 (session 38), GPU time, hdim
    128: 0.80-1.01x FA3 BF16's varlen call; 0.95x / 0.91x the same tokens as one dense call,
    non-causal / causal.
    cu_seqlens and max_seqlen_q are checked on the host: on the CPU before the work, on the GPU
    after the launches are queued (no wait for the GPU before them; the kernels clamp every
    offset into their buffers, so bad ones raise the ValueError without a read or write
    outside). Under a CUDA-graph capture the call reads nothing on the host and, like FA3's,
    trusts them.
    Already-quantised FP8 inputs (all float8_e4m3fn or all float8_e5m2), as FA3's varlen call
    takes them: q/k/v_descale float32 (nseq, Hkv) (q_descale may also be (nseq, Hq)), or one
    element, or None (1); output bfloat16. One kernel copies K and V into the padded layout (V
    head-dim major) with a descale per 128-row block; no recipe. H200 (session 35), GPU time:
    0.65-0.83x FA3 FP8's varlen call at 16k packed tokens, hdim 128.
    Returns out (total_q, Hq, D) in q's dtype, and with return_lse also lse float32 (Hq, total_q).
    """
    from .attention.ops import fp8_attention_varlen, fp8_attention_varlen_quantized
    causal = _check_causal_flag(causal)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{_fmt_t(name, t)}: expected 3 dims (total, heads, head_dim)")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(cu, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(cu).__name__}")
        if cu.dtype != torch.int32 or cu.dim() != 1 or cu.device != q.device:
            raise ValueError(f"{_fmt_t(name, cu)}: expected a 1-D int32 tensor on {q.device}")
    if cu_seqlens_q.shape != cu_seqlens_k.shape or cu_seqlens_q.numel() < 2:
        raise ValueError(f"cu_seqlens_q {tuple(cu_seqlens_q.shape)} and cu_seqlens_k "
                         f"{tuple(cu_seqlens_k.shape)} must both have nseq + 1 >= 2 entries")
    for name, m in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"{name} must be a non-negative int, got {m!r}")
    fp8 = q.dtype in FP8_INPUT_DTYPES
    if fp8:
        qd, kd, vd = _check_fp8_inputs(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), q_descale,
                                       k_descale, v_descale, recipe,
                                       batch=cu_seqlens_q.numel() - 1)
    else:
        if any(d is not None for d in (q_descale, k_descale, v_descale)):
            raise ValueError("q/k/v_descale go with pre-quantised FP8 inputs; these inputs are "
                             f"{q.dtype} and get quantised by the recipe")
        recipe = _check_recipe(recipe)
        check_qkv(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), layout="bshd", recipe=recipe,
                  allow_gqa=True)
    scale = _softmax_scale(softmax_scale, q.shape[-1])
    if fp8:
        return fp8_attention_varlen_quantized(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                              qd, kd, vd, causal=causal, softmax_scale=scale,
                                              return_lse=return_lse)
    return fp8_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal=causal,
                                softmax_scale=scale, recipe=recipe, return_lse=return_lse)

