"""torch.library custom ops around the FP8 attention kernel, so torch.compile(fullgraph=True)
traces through them as single opaque nodes (each has a fake implementation for shapes).

    fp8attn::attention         bf16/fp16/fp32 Q, K, V -> rotate + quantise (quantize_qkv) -> kernel
    fp8attn::attention_fp8     already-quantised FP8 Q, K, V (B, S, H, D) with per-head descales
                               (one FP8 term for Q: no recipe, so no q_terms)
    fp8attn::attention_varlen  packed (total, H, D) sequences with cu_seqlens, FA3 style

None has a backward pass (inference only): calling one raises a RuntimeError that says so.
The recipe travels as its fields (fmt, granularity, block_q, block_kv, hadamard, seed, q_terms,
q_search).
Each op picks its backend when it runs (api.select_backend): the Triton kernel on CUDA (or on the
CPU through Triton's interpreter with FP8ATTN_BACKEND=triton and TRITON_INTERPRET=1), else the
PyTorch emulation of the same numerics (attention/reference.py). Callers validate shapes first
(api.py); ops only re-check what needs tensor values (cu_seqlens). The dense implementations
(bf16 / fp16 / fp32 and FP8 inputs) replay a call plan from the third eager call of a kind on
(fp8attn/call_plan.py); so do the varlen ones' device work, after the offsets' host check
(varlen_offsets).
"""
from __future__ import annotations

import math
import os

import torch

from ..call_plan import planned
from ..device_guard import on_inputs_device
from ..quant.padded_rows import padded_rows
from ..recipe import Recipe
from .varlen_offsets import offsets_checked, varlen_offsets

_CAUSAL = {"none": None, "top_left": "top_left", "bottom_right": "bottom_right"}


def _causal_arg(causal) -> str:
    return "none" if causal is None else causal


def _backend(device: torch.device) -> str:
    from ..api import select_backend
    return select_backend(device)


def _quantize_qkv(q, k, v, recipe: Recipe, *, causal=None, varlen: bool = False,
                  out_dtype=torch.bfloat16, lse: bool = False, kv_rows=None):
    """(B, H, S, D) views -> three QuantizedTensors (V transposed, (B, H, D, S), in the key
    order the kernel that will take the call reads: gluon_dispatch.v_key_order_for); kv_rows:
    quantize_qkv's."""
    from ..quant import quantize_qkv
    from .gluon_dispatch import v_key_order_for
    backend = "triton" if q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1" else "torch"
    order = v_key_order_for(q, k, fmt=recipe.fmt, granularity=recipe.granularity,
                            block_kv=recipe.block_kv, causal=causal, varlen=varlen,
                            two_terms=recipe.q_terms == 2, out_dtype=out_dtype, lse=lse,
                            kv_align=0 if kv_rows is None else kv_rows.align)
    return quantize_qkv(q, k, v, recipe, backend=backend, v_key_order=order, kv_rows=kv_rows)


def _launch(q8, k8, v8, *, causal, softmax_scale, out_dtype, return_lse, out=None, **varlen):
    from .triton_fwd import attention_fwd_fp8
    q_data, q_lo = q8.data, q8.residual       # q_lo: Q's second FP8 term (Recipe.q_terms == 2)
    if softmax_scale < 0:
        # the kernel takes row maxima of unscaled scores, so it needs a positive scale:
        # scale * (q . k) == (-scale) * (-q . k); -q flips the FP8 sign bit (exact)
        q_data = (q_data.view(torch.uint8) ^ 0x80).view(q_data.dtype)
        if q_lo is not None:
            q_lo = (q_lo.view(torch.uint8) ^ 0x80).view(q_lo.dtype)
        softmax_scale = -softmax_scale
    return attention_fwd_fp8(q_data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                             q_block=q8.block_size, k_block=k8.block_size,
                             v_block=v8.block_size, softmax_scale=softmax_scale, causal=causal,
                             out_dtype=out_dtype, return_lse=return_lse, out=out, q_lo=q_lo,
                             v_key_order=v8.key_order, **varlen)


def _dispatch(op, impl, *args):
    """Call the custom op under torch.compile (and for inputs autograd tracks, so they get the
    op's behaviour); plain eager calls run its implementation directly: the dispatcher's Python
    layers cost about as much host time per call as the kernels' GPU time at short sequences."""
    q, k, v = args[:3]           # every op's first three arguments
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad)):
        return op(*args)
    return impl(*args)


def _no_lse(device):
    return torch.empty(0, dtype=torch.float32, device=device)


# ----------------------------------------------------------------------------------------------
# bf16 / fp16 / fp32 inputs, (B, H, S, D) ("bhsd", torch) or (B, S, H, D) ("bshd", FlashAttention)

@on_inputs_device
@planned
def _attention_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, causal: str,
               softmax_scale: float, fmt: str, granularity: str, block_q: int, block_kv: int,
               hadamard: bool, seed: int, q_terms: int, q_search: int,
               return_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    recipe = Recipe(fmt=fmt, granularity=granularity, block_q=block_q, block_kv=block_kv,
                    hadamard=hadamard, seed=seed, q_terms=q_terms,
                    q_search=q_search)
    bshd = layout == "bshd"
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v)) if bshd else (q, k, v)
    if _backend(q.device) == "emulation":
        from .reference import fp8_flash_emulation
        res = fp8_flash_emulation(qh, kh, vh, causal=_CAUSAL[causal], softmax_scale=softmax_scale,
                                  recipe=recipe, return_lse=return_lse)
        out, lse = res if return_lse else (res, _no_lse(q.device))
        return (out.transpose(1, 2).contiguous() if bshd else out.contiguous()), lse
    q8, k8, v8 = _quantize_qkv(qh, kh, vh, recipe, causal=_CAUSAL[causal], out_dtype=q.dtype,
                               lse=return_lse)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    res = _launch(q8, k8, v8, causal=_CAUSAL[causal], softmax_scale=softmax_scale,
                  out_dtype=q.dtype, return_lse=return_lse,
                  out=out.transpose(1, 2) if bshd else out)
    return out, (res[1] if return_lse else _no_lse(q.device))


_attention = torch.library.custom_op("fp8attn::attention", mutates_args=())(_attention_impl)


@_attention.register_fake
def _(q, k, v, layout, causal, softmax_scale, fmt, granularity, block_q, block_kv, hadamard, seed,
      q_terms, q_search, return_lse):
    b, h, s = (q.shape[0], q.shape[2], q.shape[1]) if layout == "bshd" else q.shape[:3]
    lse = q.new_empty((b, h, s) if return_lse else (0,), dtype=torch.float32)
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


def fp8_attention_bhsd(q, k, v, *, causal, softmax_scale: float, recipe: Recipe,
                       return_lse: bool = False):
    """q (B, Hq, Sq, D), k / v (B, Hkv, Sk, D), float16 / bfloat16 / float32, validated.

    Returns out (B, Hq, Sq, D) in q's dtype and, if return_lse, lse float32 (B, Hq, Sq).
    """
    return _call_attention(q, k, v, "bhsd", causal, softmax_scale, recipe, return_lse)


def fp8_attention_bshd(q, k, v, *, causal, softmax_scale: float, recipe: Recipe,
                       return_lse: bool = False):
    """FlashAttention layout: q (B, Sq, Hq, D), k / v (B, Sk, Hkv, D) -> out (B, Sq, Hq, D)."""
    return _call_attention(q, k, v, "bshd", causal, softmax_scale, recipe, return_lse)


def _call_attention(q, k, v, layout, causal, softmax_scale, recipe, return_lse):
    out, lse = _dispatch(_attention, _attention_impl, q, k, v, layout, _causal_arg(causal),
                         float(softmax_scale), recipe.fmt, recipe.granularity, recipe.block_q,
                         recipe.block_kv, recipe.hadamard, recipe.seed, recipe.q_terms,
                         recipe.q_search,
                         return_lse)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------------------------
# already-quantised FP8 inputs, FlashAttention layout, one descale per (batch, head)

def _emulate_quantized(q8, k8, v8, causal, softmax_scale, block_n: int = 128):
    """float32 emulation of the kernel on QuantizedTensors (per-tile V descale), (B, Hq, Sq, D).

    Used on the CPU for pre-quantised inputs; same numerics as reference.fp8_flash_emulation.
    """
    from ..formats import P_SHIFT
    shift = 2.0 ** P_SHIFT[q8.fmt]
    g = q8.data.shape[1] // k8.data.shape[1]
    q = q8.data.float()
    k = k8.data.float().repeat_interleave(g, 1)
    vt = v8.data.float().repeat_interleave(g, 1)
    q_row = q8.row_descale() * (softmax_scale * 1.4426950408889634)  # 1/ln 2
    k_col = k8.row_descale().repeat_interleave(g, 1)
    v_col = v8.row_descale().repeat_interleave(g, 1)
    b, h, sq, d = q.shape
    sk = k.shape[2]
    dev = q.device
    m = torch.full((b, h, sq), float("-inf"), device=dev)
    l = torch.zeros(b, h, sq, device=dev)
    acc = torch.zeros(b, h, sq, d, device=dev)
    off = sk - sq if causal == "bottom_right" else 0
    rows = torch.arange(sq, device=dev)[:, None]
    for j0 in range(0, sk, block_n):
        j1 = min(j0 + block_n, sk)
        s = (q @ k[:, :, j0:j1].transpose(-1, -2)) * q_row[..., None] * k_col[:, :, None, j0:j1]
        if causal is not None:
            s = s.masked_fill(torch.arange(j0, j1, device=dev)[None] > rows + off, float("-inf"))
        m_new = torch.maximum(m, s.amax(-1))
        m_use = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
        alpha = torch.exp2(m - m_use)
        p = torch.exp2(s - m_use[..., None])
        l = l * alpha + p.sum(-1)
        p8 = (p * shift).to(q8.data.dtype).float()
        tile = p8 @ vt[:, :, :, j0:j1].transpose(-1, -2) * (v_col[:, :, j0, None, None] / shift)
        acc = acc * alpha[..., None] + tile
        m = m_new
    no_key = l == 0
    out = torch.where(no_key[..., None], torch.zeros_like(acc), acc / l.clamp_min(1e-38)[..., None])
    lse = torch.where(no_key, torch.full_like(l, float("-inf")),
                      (m + torch.log2(l.clamp_min(1e-38))) * math.log(2.0))
    return out, lse


@on_inputs_device
@planned
def _attention_fp8_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_descale: torch.Tensor,
                   k_descale: torch.Tensor, v_descale: torch.Tensor, causal: str,
                   softmax_scale: float, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from ..quant.reference import QuantizedTensor
    fmt = "e4m3" if q.dtype == torch.float8_e4m3fn else "e5m2"
    sq, sk = q.shape[1], k.shape[1]

    def qt(x, descale, s, transposed=False, key_order="natural"):
        return QuantizedTensor(data=x, descale=descale.float().reshape(descale.shape[0], -1, 1),
                               block_size=max(s, 1), fmt=fmt, transposed=transposed,
                               key_order=key_order)

    # the kernel wants V head-dim major, contiguous along the sequence: one copy, in the key
    # order of the kernel that will take the call. The Gluon kernel also needs Q and K
    # contiguous in (B, H, S, D): two more copies of FP8 data where it takes the call
    # (quant/fp8_inputs.py: one pass each)
    from ..quant.fp8_inputs import by_head, v_head_dim_major
    from .gluon_dispatch import v_key_order_for
    qh, kh = q.transpose(1, 2), k.transpose(1, 2)
    order = v_key_order_for(qh, kh, fmt=fmt, granularity="head", block_kv=max(sk, 1),
                            causal=_CAUSAL[causal], varlen=False, two_terms=False,
                            out_dtype=torch.bfloat16, lse=return_lse, contiguous=True)
    if order == "mma":
        qh, kh = by_head(q), by_head(k)
    q8 = qt(qh, q_descale, sq)
    k8 = qt(kh, k_descale, sk)
    v8 = qt(v_head_dim_major(v, order), v_descale, sk, transposed=True, key_order=order)
    if _backend(q.device) == "emulation":
        out, lse = _emulate_quantized(q8, k8, v8, _CAUSAL[causal], softmax_scale)
        return (out.transpose(1, 2).to(torch.bfloat16).contiguous(),
                lse if return_lse else _no_lse(q.device))
    out = torch.empty(q.shape, dtype=torch.bfloat16, device=q.device)
    res = _launch(q8, k8, v8, causal=_CAUSAL[causal], softmax_scale=softmax_scale,
                  out_dtype=torch.bfloat16, return_lse=return_lse, out=out.transpose(1, 2))
    return out, (res[1] if return_lse else _no_lse(q.device))


_attention_fp8 = torch.library.custom_op("fp8attn::attention_fp8", mutates_args=())(
    _attention_fp8_impl)


@_attention_fp8.register_fake
def _(q, k, v, q_descale, k_descale, v_descale, causal, softmax_scale, return_lse):
    b, s, h = q.shape[:3]
    lse = q.new_empty((b, h, s) if return_lse else (0,), dtype=torch.float32)
    return q.new_empty(q.shape, dtype=torch.bfloat16), lse


def fp8_attention_quantized(q, k, v, q_descale, k_descale, v_descale, *, causal,
                            softmax_scale: float, return_lse: bool = False):
    """FP8 q (B, Sq, Hq, D), k / v (B, Sk, Hkv, D) (all e4m3fn or all e5m2), descales float32
    (B, Hq) for q and (B, Hkv) for k and v (validated by the caller). Output bf16 (B, Sq, Hq, D)."""
    out, lse = _dispatch(_attention_fp8, _attention_fp8_impl, q, k, v, q_descale, k_descale,
                         v_descale, _causal_arg(causal), float(softmax_scale), return_lse)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------------------------
# variable-length batches, packed (total, H, D)

@on_inputs_device
def _attention_varlen_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                      cu_seqlens_k: torch.Tensor, max_seqlen_q: int, causal: str,
                      softmax_scale: float, fmt: str, granularity: str, block_q: int,
                      block_kv: int, hadamard: bool, seed: int, q_terms: int,
                      q_search: int, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    emulate = _backend(q.device) == "emulation"
    # the offsets' host check stays outside the plan: it runs on every call (varlen_offsets
    # remembers offsets that passed, so a model's later layers skip the copy)
    host, pending = varlen_offsets(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, emulate)
    if emulate:
        recipe = Recipe(fmt=fmt, granularity=granularity, block_q=block_q, block_kv=block_kv,
                        hadamard=hadamard, seed=seed, q_terms=q_terms, q_search=q_search)
        return _varlen_emulation(q, k, v, *host, _CAUSAL[causal], softmax_scale, recipe,
                                 return_lse)
    res = _varlen_on_device(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal,
                            softmax_scale, fmt, granularity, block_q, block_kv, hadamard, seed,
                            q_terms, q_search, return_lse)
    offsets_checked(pending)
    return res


@planned
def _varlen_on_device(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal, softmax_scale,
                      fmt, granularity, block_q, block_kv, hadamard, seed, q_terms, q_search,
                      return_lse):
    """A varlen call's device work: launches and allocations only, the offsets read by the
    kernels alone (padded_rows' layout kernel included), so a plan of it holds for any
    offsets of the same shapes (tests/test_call_plan.py replays it on others)."""
    recipe = Recipe(fmt=fmt, granularity=granularity, block_q=block_q, block_kv=block_kv,
                    hadamard=hadamard, seed=seed, q_terms=q_terms,
                    q_search=q_search)
    align = _kv_align(recipe, cu_seqlens_k.numel() - 1, k.shape[0])
    # K and V quantised straight into rows where each sequence starts at a multiple of align
    kv_rows, q_layout = varlen_layouts(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0],
                                       align) if align else (None, None)
    # (total, H, D) -> (1, H, total, D) views; scale groups run along the packed rows
    qh, kh, vh = (x.permute(1, 0, 2).unsqueeze(0) for x in (q, k, v))
    q8, k8, v8 = _quantize_qkv(qh, kh, vh, recipe, causal=_CAUSAL[causal], varlen=True,
                               out_dtype=q.dtype, lse=return_lse, kv_rows=kv_rows)
    kv_starts = None if kv_rows is None else kv_rows.starts
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    res = _launch(q8, k8, v8, causal=_CAUSAL[causal], softmax_scale=softmax_scale,
                  out_dtype=q.dtype, return_lse=return_lse,
                  out=out.permute(1, 0, 2).unsqueeze(0),
                  cu_seqlens_q=cu_seqlens_q.to(torch.int32),
                  cu_seqlens_k=cu_seqlens_k.to(torch.int32),
                  max_seqlen_q=max(int(max_seqlen_q), 1), kv_starts=kv_starts, kv_align=align,
                  q_layout=q_layout)
    return out, (res[1][0] if return_lse else _no_lse(q.device))


_attention_varlen = torch.library.custom_op("fp8attn::attention_varlen", mutates_args=())(
    _attention_varlen_impl)


@_attention_varlen.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal, softmax_scale, fmt, granularity,
      block_q, block_kv, hadamard, seed, q_terms, q_search, return_lse):
    lse = q.new_empty((q.shape[1], q.shape[0]) if return_lse else (0,), dtype=torch.float32)
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


VARLEN_FP8_ALIGN = 128     # pre-quantised varlen K / V: each sequence starts on a 128-row block


@on_inputs_device
def _attention_varlen_fp8_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                               max_seqlen_q: int, q_descale: torch.Tensor,
                               k_descale: torch.Tensor, v_descale: torch.Tensor, causal: str,
                               softmax_scale: float, return_lse: bool
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-quantised FP8 varlen inputs, descales (nseq, H) per sequence and head (FA3's).

    The kernel takes them as it takes the quantiser's output: Q with one descale per row (its
    sequence's), K and V copied into the padded layout (quant/padded_rows.py; V head-dim
    major) with one descale per 128-row block, which holds one sequence's rows. As the bf16
    call: the offsets' host check here, the device work planned."""
    fmt = "e4m3" if q.dtype == torch.float8_e4m3fn else "e5m2"
    emulate = _backend(q.device) == "emulation"
    host, pending = varlen_offsets(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, emulate)
    if emulate:
        return _varlen_fp8_emulation(q, k, v, *host, q_descale, k_descale, v_descale,
                                     _CAUSAL[causal], softmax_scale, return_lse, fmt)
    res = _varlen_fp8_on_device(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, q_descale,
                                k_descale, v_descale, causal, softmax_scale, return_lse, fmt)
    offsets_checked(pending)
    return res


@planned
def _varlen_fp8_on_device(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, q_descale,
                          k_descale, v_descale, causal, softmax_scale, return_lse, fmt):
    from ..quant.fp8_inputs import by_head, pack_fp8_kv, row_descales
    from ..quant.reference import QuantizedTensor
    from .gluon_dispatch import v_key_order_for
    align = VARLEN_FP8_ALIGN
    layout, q_layout = varlen_layouts(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], align)
    qh = q.permute(1, 0, 2).unsqueeze(0)
    # V^T in the key order of the kernel that will take the call (the Gluon kernel's "mma"
    # order at head dim 128, written by the same packing pass); that kernel reads Q by head
    # through TMA: a (1, H, total, D) copy first (one byte an element)
    order = v_key_order_for(qh, k.permute(1, 0, 2).unsqueeze(0), fmt=fmt, granularity="block",
                            block_kv=align, causal=_CAUSAL[causal], varlen=True,
                            two_terms=False, out_dtype=torch.bfloat16, lse=return_lse,
                            kv_align=align)
    if order == "mma":
        qh = by_head(q.unsqueeze(0))
    q8 = QuantizedTensor(data=qh, fmt=fmt, block_size=1,
                         descale=row_descales(q_descale, cu_seqlens_q, q.shape[0]))
    kp, vt, kd, vd = pack_fp8_kv(k, v, k_descale, v_descale, layout, key_order=order)
    k8 = QuantizedTensor(data=kp, fmt=fmt, block_size=align, descale=kd)
    v8 = QuantizedTensor(data=vt, fmt=fmt, block_size=align, transposed=True, descale=vd,
                         key_order=order)
    out = torch.empty(q.shape, dtype=torch.bfloat16, device=q.device)
    res = _launch(q8, k8, v8, causal=_CAUSAL[causal], softmax_scale=softmax_scale,
                  out_dtype=torch.bfloat16, return_lse=return_lse,
                  out=out.permute(1, 0, 2).unsqueeze(0), cu_seqlens_q=cu_seqlens_q,
                  cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max(int(max_seqlen_q), 1),
                  kv_starts=layout.starts, kv_align=align, q_layout=q_layout)
    return out, (res[1][0] if return_lse else _no_lse(q.device))


def _varlen_fp8_emulation(q, k, v, cu_q, cu_k, q_descale, k_descale, v_descale, causal,
                          softmax_scale, return_lse, fmt):
    """One _emulate_quantized call per sequence (CPU), its descales one group per head."""
    from ..quant.reference import QuantizedTensor

    def attend(i, q0, q1, k0, k1):
        def qt(x, d, transposed=False):
            data = x.transpose(0, 1).unsqueeze(0)
            return QuantizedTensor(data=data.transpose(-1, -2) if transposed else data,
                                   descale=d[i].float().reshape(1, -1, 1),
                                   block_size=data.shape[2], fmt=fmt, transposed=transposed)
        return _emulate_quantized(qt(q[q0:q1], q_descale), qt(k[k0:k1], k_descale),
                                  qt(v[k0:k1], v_descale, True), causal, softmax_scale)
    return _per_sequence(q, cu_q, cu_k, torch.bfloat16, attend, return_lse)


_attention_varlen_fp8 = torch.library.custom_op("fp8attn::attention_varlen_fp8",
                                                mutates_args=())(_attention_varlen_fp8_impl)


@_attention_varlen_fp8.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, q_descale, k_descale, v_descale, causal,
      softmax_scale, return_lse):
    lse = q.new_empty((q.shape[1], q.shape[0]) if return_lse else (0,), dtype=torch.float32)
    return q.new_empty(q.shape, dtype=torch.bfloat16), lse


def fp8_attention_varlen_quantized(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int,
                                   q_descale, k_descale, v_descale, *, causal,
                                   softmax_scale: float, return_lse: bool = False):
    """FP8 q (total_q, Hq, D), k / v (total_k, Hkv, D), descales float32 (nseq, Hq) for q and
    (nseq, Hkv) for k and v (validated by the caller); out bf16 (total_q, Hq, D)."""
    out, lse = _dispatch(_attention_varlen_fp8, _attention_varlen_fp8_impl, q, k, v,
                         cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), q_descale, k_descale,
                         v_descale, _causal_arg(causal), float(softmax_scale), return_lse)
    return (out, lse) if return_lse else out


def _no_backward(ctx, *grads):
    raise RuntimeError(
        "fp8attn's attention has no backward pass: the FP8 kernels are forward only (inference). "
        "Run the call under torch.no_grad() or torch.inference_mode(), or give it detached "
        "inputs, or use torch's scaled_dot_product_attention where gradients are needed.")


def _keep_nothing(ctx, inputs, output):
    pass


# torch's own error for an op without a formula names its internals only; this says what it is
for _op in (_attention, _attention_fp8, _attention_varlen, _attention_varlen_fp8):
    _op.register_autograd(_no_backward, setup_context=_keep_nothing)


def _kv_align(recipe: Recipe, nseq: int, total_k: int) -> int:
    """Rows to pad each varlen sequence's K / V start to (0: packed as given).

    By default (FP8ATTN_VARLEN_ALIGN=0 turns it off), with block scales of a multiple of 128
    rows, each sequence's K and V start at a multiple of the block: the Triton kernel then
    reads one K and one V descale per tile and loads V^T's rows 16 bytes at a time. On packed
    starts a tile straddles two blocks: the per-column descales it needs (K_MODE 2) spilled
    1.5 KB in the kernel (offline, hdim 128), and V^T's rows, starting anywhere, loaded a byte
    at a time; its varlen calls ran 4.7x slower than the same tokens as a dense call (H200,
    session 30). The K / V scale groups then also start at each sequence, as the CPU
    emulation's do. Unset, not where the padding could more than double K and V (sequences
    shorter than a block on average: their attention is cheap either way); =1 pads those too."""
    flag = os.environ.get("FP8ATTN_VARLEN_ALIGN", "").strip()
    if flag == "0" or recipe.granularity != "block" or recipe.block_kv % 128:
        return 0
    if flag != "1" and nseq * recipe.block_kv > max(total_k, 1):
        return 0
    return recipe.block_kv


def varlen_layouts(cu_q: torch.Tensor, cu_k: torch.Tensor, total_q: int, total_k: int,
                   align: int):
    """K / V's padded rows (padded_rows(cu_k, total_k, align)) and, where it is the same
    layout, the one the Gluon kernel's query tiles are read from (else None: the launch makes
    its own, gluon_dispatch.varlen_tables): self-attention batches pass one offsets tensor
    for both, and then one layout launch makes both (with each tile's sequence)."""
    from .gluon_dispatch import CAUSAL_BLOCK_M
    same = cu_q is cu_k and total_q == total_k and align == CAUSAL_BLOCK_M
    layout = padded_rows(cu_k, total_k, align, sequences=same)
    return layout, (layout if same else None)


def _per_sequence(q, cu_q, cu_k, out_dtype, attend, return_lse):
    """The CPU emulations' varlen loop: attend(i, q0, q1, k0, k1) -> (out (1, Hq, s, D), lse
    (1, Hq, s)) of sequence i, written into packed (total_q, Hq, D) / (Hq, total_q) results;
    sequences without queries or keys are skipped (zeros, LSE -inf)."""
    out = torch.zeros(q.shape, dtype=out_dtype, device=q.device)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32,
                     device=q.device)
    for i in range(cu_q.numel() - 1):
        q0, q1, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        if q1 == q0 or k1 == k0:
            continue
        o, l = attend(i, q0, q1, k0, k1)
        out[q0:q1] = o[0].transpose(0, 1).to(out_dtype)
        lse[:, q0:q1] = l[0]
    return out, (lse if return_lse else _no_lse(q.device))


def _varlen_emulation(q, k, v, cu_q, cu_k, causal, softmax_scale, recipe, return_lse):
    """One emulation call per sequence (scale groups restart at each sequence here, while the
    kernel's run along the packed rows: same numerics, slightly different groups)."""
    from .reference import fp8_flash_emulation

    def attend(i, q0, q1, k0, k1):
        return fp8_flash_emulation(*(x[a:b].transpose(0, 1).unsqueeze(0) for x, a, b in
                                     ((q, q0, q1), (k, k0, k1), (v, k0, k1))),
                                   causal=causal, softmax_scale=softmax_scale, recipe=recipe,
                                   return_lse=True)
    return _per_sequence(q, cu_q, cu_k, q.dtype, attend, return_lse)


def fp8_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, *, causal,
                         softmax_scale: float, recipe: Recipe, return_lse: bool = False):
    """q (total_q, Hq, D), k / v (total_k, Hkv, D); out (total_q, Hq, D) in q's dtype and, if
    return_lse, lse float32 (Hq, total_q)."""
    out, lse = _dispatch(_attention_varlen, _attention_varlen_impl, q, k, v, cu_seqlens_q,
                         cu_seqlens_k, int(max_seqlen_q), _causal_arg(causal),
                         float(softmax_scale), recipe.fmt, recipe.granularity, recipe.block_q,
                         recipe.block_kv, recipe.hadamard, recipe.seed, recipe.q_terms,
                         recipe.q_search,
                         return_lse)
    return (out, lse) if return_lse else out
