"""Reference attention implementations in PyTorch (CPU or CUDA), all on (B, H, S, D) tensors.

    attention_oracle          float64, exact softmax: the yardstick for every error figure
    standard_attention        "standard attention" in FP16/BF16: S and P materialised in the low dtype
    flash_attention_fp16      FlashAttention-2/3 FP16: tiled online softmax, fp16 operands, fp32
                              accumulators
    fp8_per_tensor_baseline   the FA3 paper's FP8 baseline: per-tensor e4m3 scales, FP32 accumulation,
                              softmax kept in FP16, no rotation
    fp8_flash_emulation       the FP8 flash path of fp8attn (the Triton kernel's numerics, see below)

Shared conventions
  GQA: query (B, Hq, Sq, D), key / value (B, Hkv, Sk, D) with Hq % Hkv == 0; query head h uses kv head
  h // (Hq // Hkv). Internally the G = Hq // Hkv query heads of one kv head are stacked along the rows,
  (B, Hkv, G * Sq, D), so K and V are never copied per query head.
  causal: None, "top_left" (torch SDPA: key j visible from query i iff j <= i) or "bottom_right"
  (FlashAttention: j <= i + Sk - Sq). A row that sees no key outputs 0 and its lse is -inf.
  lse is the natural-log log-sum-exp of the scaled scores, float32 (B, Hq, Sq) (float64 for the oracle).

Low-precision matmuls are emulated as a GPU tensor core runs them: operands rounded to the low dtype,
products and sums in fp32 (fp16 x fp16 and fp8 x fp8 products are exact in fp32, so only the
summation order differs from the hardware), result rounded to the output dtype where the GPU would
store it in that dtype.

NaN (exact attention semantics, kept by every function here): a NaN in query row i makes only output
row i NaN. A NaN in key row j makes NaN every query row that sees key j (masked keys are replaced by
-inf before the max, so rows that cannot see j stay finite). A NaN in value[j, d] makes NaN column d
of every query row that sees key j: P.V is computed with non-finite V entries zeroed and the NaN put
back where a visible key carried one, because a plain matmul would spread it through 0 * NaN to rows
that cannot see the key. +-Inf follows IEEE arithmetic in the float64 / FP16 functions; the FP8 ones
saturate it to +-FP8 max in the cast (formats.saturating_cast), so their outputs stay finite.

Only the flash-style functions bound their memory to one (G * Sq) x BLOCK_N tile per (batch, kv head);
the oracle and the standard implementations materialise S in chunks of query rows (ROW_CHUNK).
"""
from __future__ import annotations

import math

import torch

from ..formats import P_SHIFT, fp8_max, saturating_cast
from ..quant.reference import quantize_reference
from ..recipe import DEFAULT_RECIPE, Recipe

LOG2E = 1.4426950408889634  # 1 / ln 2
LN2 = 0.6931471805599453
ROW_CHUNK = 1024  # query rows per chunk in the materialising implementations
CAUSAL_MODES = (None, "top_left", "bottom_right")


def _check(q, k, v, causal):
    if causal not in CAUSAL_MODES:
        raise ValueError(f"causal must be one of {CAUSAL_MODES}, got {causal!r}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected (B, H, S, D) tensors, got query {tuple(q.shape)}, key "
                         f"{tuple(k.shape)}, value {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible shapes: query {tuple(q.shape)}, key {tuple(k.shape)}, "
                         f"value {tuple(v.shape)}")
    if k.shape[2] == 0 and q.shape[2] > 0:
        raise ValueError(f"key (shape {tuple(k.shape)}) has seqlen 0: attention is undefined")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads "
                         f"({k.shape[1]})")


def default_softmax_scale(softmax_scale, d: int) -> float:
    """softmax_scale, or 1 / sqrt(d) when it is None (no validation: see api._softmax_scale)."""
    return 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)


def _group(x: torch.Tensor, hkv: int) -> torch.Tensor:
    """(B, Hq, S, ...) -> (B, Hkv, G * S, ...): query heads sharing a kv head stacked along rows."""
    b, hq, s = x.shape[:3]
    return x.reshape(b, hkv, (hq // hkv) * s, *x.shape[3:])


def _ungroup(x: torch.Tensor, hq: int, sq: int) -> torch.Tensor:
    b, hkv = x.shape[:2]
    return x.reshape(b, hq, sq, *x.shape[3:])


def visible(sq: int, sk: int, causal, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
    """Bool (len(rows), len(cols)) mask of the keys `cols` each query row `rows` may see (None: all).

    rows are query positions in [0, Sq), cols key positions; keys at or beyond sk are never visible.
    """
    mask = None
    if causal is not None:
        offset = 0 if causal == "top_left" else sk - sq
        mask = cols[None, :] <= rows[:, None] + offset
    if cols.numel() and int(cols.max()) >= sk:
        tail = (cols < sk)[None, :].expand(rows.numel(), -1)
        mask = tail if mask is None else mask & tail
    return mask


def _poisoned_pv(p: torch.Tensor, v: torch.Tensor, seen: torch.Tensor | None,
                 v_finite: bool = False) -> torch.Tensor:
    """p @ v with exact NaN semantics: non-finite v entries count only for rows that see their key.

    p (..., M, N), v (..., N, D), seen: bool (M, N) or (..., M, N) or None (all keys seen).
    v_finite: the caller already knows every entry of v is finite (skips the check)."""
    if v_finite:
        return p @ v
    bad = ~torch.isfinite(v)
    if not bool(bad.any()):
        return p @ v
    out = p @ torch.where(bad, torch.zeros((), dtype=v.dtype, device=v.device), v)
    seen_f = (torch.ones_like(p) if seen is None else seen.to(p.dtype).expand_as(p))
    hit = (seen_f @ bad.to(p.dtype)) > 0
    return torch.where(hit, torch.full((), float("nan"), dtype=out.dtype, device=out.device), out)


def _rows_of_chunk(r0, r1, sq, device):
    """Query positions of grouped rows r0..r1 (grouped row r is query position r % Sq)."""
    return torch.arange(r0, r1, device=device) % sq


def _materialised(q, k, v, *, causal, softmax_scale, scores_fn, softmax_fn, pv_fn, out_dtype,
                  return_lse):
    """Shared loop of the materialising implementations (oracle, standard, FP8 baseline).

    scores_fn(qc, k) -> scaled scores (natural-log domain); softmax_fn(s) -> (P, lse) with masked
    entries at -inf; pv_fn(P, v, seen) -> output chunk. Works on grouped (B, Hkv, G*Sq, D) rows.
    """
    _check(q, k, v, causal)
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    qg = _group(q, hkv)
    rows_total = qg.shape[2]
    cols = torch.arange(sk, device=q.device)
    outs, lses = [], []
    for r0 in range(0, max(rows_total, 1), ROW_CHUNK):
        r1 = min(rows_total, r0 + ROW_CHUNK)
        s = scores_fn(qg[:, :, r0:r1], k)
        seen = visible(sq, sk, causal, _rows_of_chunk(r0, r1, sq, q.device), cols)
        if seen is not None:
            s = torch.where(seen, s, torch.full((), float("-inf"), dtype=s.dtype, device=s.device))
        p, lse = softmax_fn(s)
        outs.append(pv_fn(p, v, seen))
        lses.append(lse)
    out = _ungroup(torch.cat(outs, dim=2), hq, sq).to(out_dtype)
    if not return_lse:
        return out
    return out, _ungroup(torch.cat(lses, dim=2), hq, sq)


def _exact_softmax(s):
    """Softmax along the last dim in s's dtype; rows with every entry -inf give P = 0, lse = -inf."""
    m = s.amax(dim=-1, keepdim=True)
    m_safe = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    p = torch.exp(s - m_safe)
    l_sum = p.sum(dim=-1, keepdim=True)
    lse = (m_safe + torch.log(l_sum)).squeeze(-1)
    inv = torch.where(l_sum > 0, 1.0 / l_sum, torch.zeros_like(l_sum))
    return p * inv, lse


def attention_oracle(q, k, v, *, causal=None, softmax_scale=None, return_lse=False):
    """Exact attention in float64: the reference every error is measured against.

    Inputs (B, Hq, Sq, D) / (B, Hkv, Sk, D) of any float dtype are upcast to float64; returns float64
    (B, Hq, Sq, D) and, with return_lse, the float64 lse (B, Hq, Sq)."""
    scale = default_softmax_scale(softmax_scale, q.shape[-1])
    kd, vd = k.double(), v.double()
    return _materialised(
        q.double(), kd, vd, causal=causal, softmax_scale=scale,
        scores_fn=lambda qc, _k: (qc @ kd.transpose(-1, -2)) * scale,
        softmax_fn=_exact_softmax,
        pv_fn=lambda p, _v, seen: _poisoned_pv(p, vd, seen),
        out_dtype=torch.float64, return_lse=return_lse)


def _low_softmax(dtype):
    """Softmax of scores stored in `dtype`: computed in fp32 (as torch's CUDA softmax does), P stored
    in `dtype`. lse from the fp32 values."""
    def fn(s):
        p, lse = _exact_softmax(s.float())
        return p.to(dtype), lse
    return fn


def standard_attention(q, k, v, *, dtype=torch.float16, causal=None, softmax_scale=None,
                       return_lse=False):
    """"Standard attention" in FP16 / BF16 (FA3 paper, Table 3): S = Q K^T and P = softmax(S) are
    materialised in `dtype`, as `softmax((q @ k.T) * scale) @ v` on half-precision tensors would.

    Emulated steps: Q, K, V rounded to `dtype`; Q K^T with fp32 accumulation, stored in `dtype`;
    times softmax_scale in `dtype` (a second rounding); softmax computed in fp32, P stored in `dtype`;
    P V with fp32 accumulation, output stored in `dtype`. Returns the output in `dtype`."""
    scale = default_softmax_scale(softmax_scale, q.shape[-1])
    ql, kl, vl = q.to(dtype), k.to(dtype), v.to(dtype)
    kf, vf = kl.float(), vl.float()

    def scores(qc, _k):
        s = (qc.float() @ kf.transpose(-1, -2)).to(dtype)
        return (s * scale).to(dtype)

    return _materialised(
        ql, kl, vl, causal=causal, softmax_scale=scale, scores_fn=scores,
        softmax_fn=_low_softmax(dtype),
        pv_fn=lambda p, _v, seen: _poisoned_pv(p.float(), vf, seen).to(dtype),
        out_dtype=dtype, return_lse=return_lse)


def fp8_per_tensor_baseline(q, k, v, *, causal=None, softmax_scale=None, fmt="e4m3",
                            return_lse=False):
    """The FA3 paper's FP8 baseline (section 4.3, Table 3: 2.4e-2): standard attention with Q, K, V
    in FP8 with one scale per tensor, FP32 matmul accumulation, softmax results kept in FP16. No
    rotation, no block scales, no tiling.

    Reading of "softmax kept in FP16" used here: S = (q8 @ k8^T in fp32) * q_descale * k_descale is
    stored in FP16 like standard FP16 attention, softmax computed in fp32 and P stored in FP16; the
    P V product takes FP16 P against the FP8 V (upcast, exact), accumulates in fp32 and multiplies by
    v_descale. P is not cast to FP8. Output in the query's dtype.
    The other reading (P cast to e4m3 with a per-tensor scale before an FP8 P V product) changes the
    RMSE little: 1.71e-2 -> 1.75e-2 on the report's default data, because the Q K^T quantisation
    error dominates."""
    scale = default_softmax_scale(softmax_scale, q.shape[-1])
    qq = quantize_reference(q, fmt, "tensor")
    kq = quantize_reference(k, fmt, "tensor")
    vq = quantize_reference(v, fmt, "tensor")
    q8 = qq.data.float()
    k8t = kq.data.float().transpose(-1, -2)
    v8 = vq.data.float()
    qk_descale = float(qq.descale.flatten()[0]) * float(kq.descale.flatten()[0])
    v_descale = float(vq.descale.flatten()[0])

    def scores(qc, _k):
        return ((qc @ k8t) * (qk_descale * scale)).to(torch.float16)

    return _materialised(
        q8, k8t.transpose(-1, -2), v8, causal=causal, softmax_scale=scale, scores_fn=scores,
        softmax_fn=_low_softmax(torch.float16),
        pv_fn=lambda p, _v, seen: _poisoned_pv(p.float(), v8, seen) * v_descale,
        out_dtype=q.dtype, return_lse=return_lse)


def _flash_loop(qf, kf, vf, *, sq, causal, block_n, row_chunk, scores_tile, p_tile, pv_tile):
    """Online-softmax loop over KV tiles on grouped rows (B, Hkv, R, D), R = G * Sq.

    scores_tile(q_rows, r0, r1, j0, j1) -> S tile in the exp2 domain (fp32);
    p_tile(p, j0, j1) -> the P operand of the P.V product; pv_tile(P, j0, j1, seen) -> fp32 tile.
    Returns acc (B, Hkv, R, D), m_i, l_i (B, Hkv, R), all fp32. Tiles no row of a chunk can see are
    skipped, as the kernel's causal loop bound skips them."""
    b, hkv, rows_total, d = qf.shape
    sk = kf.shape[2]
    dev = qf.device
    accs, ms, ls = [], [], []
    for r0 in range(0, max(rows_total, 1), max(row_chunk, 1)):
        r1 = min(rows_total, r0 + row_chunk)
        rows = _rows_of_chunk(r0, r1, sq, dev)
        acc = torch.zeros(b, hkv, r1 - r0, d, dtype=torch.float32, device=dev)
        m_i = torch.full((b, hkv, r1 - r0), float("-inf"), dtype=torch.float32, device=dev)
        l_i = torch.zeros(b, hkv, r1 - r0, dtype=torch.float32, device=dev)
        for j0 in range(0, sk, block_n):
            j1 = j0 + block_n
            seen = visible(sq, sk, causal, rows, torch.arange(j0, j1, device=dev))
            if seen is not None and not bool(seen.any()):
                continue
            jc = min(j1, sk)
            s = scores_tile(qf[:, :, r0:r1], r0, r1, j0, jc)
            if jc < j1:  # tail tile: columns beyond Sk are masked like the kernel's padded loads
                s = torch.nn.functional.pad(s, (0, j1 - jc), value=float("-inf"))
            if seen is not None:
                s = torch.where(seen, s, torch.full((), float("-inf"), device=dev))
            m_new = torch.maximum(m_i, s.amax(dim=-1))
            # rows that have seen no key yet keep m = -inf; exp2 against 0 then gives p = alpha = 0
            m_safe = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
            alpha = torch.exp2(m_i - m_safe)
            p = torch.exp2(s - m_safe[..., None])
            l_i = l_i * alpha + p.sum(dim=-1)
            tile = pv_tile(p_tile(p[..., : jc - j0], j0, jc), j0, jc,
                           None if seen is None else seen[:, : jc - j0])
            acc = acc * alpha[..., None] + tile
            m_i = m_new
        accs.append(acc)
        ms.append(m_i)
        ls.append(l_i)
    return torch.cat(accs, 2), torch.cat(ms, 2), torch.cat(ls, 2)


def _finish(acc, m_i, l_i, hq, sq, out_dtype, return_lse):
    """out = acc / l (0 for rows that saw no key), lse = (m + log2 l) ln 2 (-inf for those rows)."""
    inv = torch.where(l_i > 0, 1.0 / l_i, torch.zeros_like(l_i))
    out = _ungroup(acc * inv[..., None], hq, sq).to(out_dtype)
    if not return_lse:
        return out
    lse = torch.where(l_i > 0, (m_i + torch.log2(l_i)) * LN2,
                      torch.full((), float("-inf"), device=l_i.device))
    return out, _ungroup(lse, hq, sq)


def flash_attention_fp16(q, k, v, *, dtype=torch.float16, causal=None, softmax_scale=None,
                         return_lse=False, block_m=None, block_n=128):
    """FlashAttention-2/3 in FP16 (or BF16): tiled online softmax with `dtype` operands and fp32
    accumulators. Per KV tile: S = q16 @ k16^T (fp32) * softmax_scale * log2(e); fp32 online softmax
    (m_i, l_i); P cast to `dtype`; acc = acc * alpha + P16 @ v16 (fp32). out = acc / l_i in `dtype`.
    block_m only chunks the query rows (numerics do not depend on it)."""
    _check(q, k, v, causal)
    scale = default_softmax_scale(softmax_scale, q.shape[-1]) * LOG2E
    b, hq, sq, d = q.shape
    hkv = k.shape[1]
    qf = _group(q.to(dtype).float(), hkv)
    kf = k.to(dtype).float()
    vf = v.to(dtype).float()
    v_finite = bool(torch.isfinite(vf).all())
    acc, m_i, l_i = _flash_loop(
        qf, kf, vf, sq=sq, causal=causal, block_n=block_n, row_chunk=block_m or qf.shape[2],
        scores_tile=lambda qc, r0, r1, j0, j1: (qc @ kf[:, :, j0:j1].transpose(-1, -2)) * scale,
        p_tile=lambda p, j0, j1: p.to(dtype).float(),
        pv_tile=lambda p, j0, j1, seen: _poisoned_pv(p, vf[:, :, j0:j1], seen, v_finite))
    return _finish(acc, m_i, l_i, hq, sq, dtype, return_lse)


def _v_descale_per_tile(block_size: int, sk: int, block_n: int) -> bool:
    """True when V's descale is constant over every KV tile (aligned scale blocks, or one group)."""
    return block_size >= sk or block_size % block_n == 0


def fp8_flash_emulation(q, k, v, *, causal=None, softmax_scale=None, recipe=None, return_lse=False,
                        block_m=None, block_n=None):
    """Emulation of fp8attn's FP8 flash attention kernel (the numerics of the project contract).

    q (B, Hq, Sq, D), k / v (B, Hkv, Sk, D) in fp16 / bf16 / fp32; returns (B, Hq, Sq, D) in q's dtype
    (and the fp32 lse (B, Hq, Sq) with return_lse).

    1. Quantise with quantize_reference: Q with block_q rows per scale block, K and V with block_kv
       (or per head / tensor / token as the recipe says); with recipe.hadamard, Q and K are first
       rotated by fwht(x * hadamard_signs(D, recipe.seed)) (same signs: Q K^T is unchanged).
       With recipe.q_search > 1, Q's scales are per token, each row's the best of q_search
       candidates (quant.reference.search_row_scales).
       With recipe.q_terms == 2, Q also gets its second FP8 term q8_lo = cast(y - float(q8))
       (y = rotated Q * its scale, the value cast to q8; same descale as q8).
    2. Per KV tile of block_n keys (default recipe.block_kv), in fp32:
         S = (q8 @ k8^T) * q_descale[row] * k_descale[col] * softmax_scale * log2(e)
         (q_terms == 2: S = (q8 @ k8^T + q8_lo @ k8^T) * the same factors)
         masked / tail entries -> -inf
         m_new = max(m_i, rowmax S); alpha = exp2(m_i - m_new); p = exp2(S - m_new)
         l_i = l_i * alpha + rowsum(p)                         (fp32 p, like FA3)
         P8 = saturating_cast(p * 2**P_SHIFT[fmt])              (e4m3: P in [0, 256])
         tile = (P8 @ v8_tile, fresh fp32 accumulator) * v_descale * 2**-P_SHIFT
         acc = acc * alpha + tile                              (two-level accumulation)
       V's descale multiplies the tile result when it is constant over the tile (scale blocks that
       are multiples of block_n, per head, per tensor); otherwise (token granularity, or blocks
       smaller than / misaligned with the tile) it is folded into P before the cast, normalised by
       the tile's largest V descale vmax so P still fills the FP8 range (as the Triton kernel does):
       P8 = cast(p * 2**P_SHIFT * v_descale[col] / vmax), tile = (P8 @ v8_tile) * vmax * 2**-P_SHIFT.
    3. out = acc / l_i (0 where no key is visible); lse = (m_i + log2 l_i) * ln 2.
    The query rows are processed all at once (block_m only chunks them to bound memory; the result
    does not depend on it); only the KV tiles are looped over.
    """
    _check(q, k, v, causal)
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an fp8attn.Recipe or None, got {type(recipe).__name__}")
    fmt = recipe.fmt
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    block_n = block_n or recipe.block_kv
    signs = None
    if recipe.hadamard:
        from ..hadamard.reference import hadamard_signs
        signs = hadamard_signs(d, recipe.seed, q.device)
    qq = quantize_reference(q, fmt, "token" if recipe.q_search > 1 else recipe.granularity,
                            recipe.block_q, signs=signs, residual=recipe.q_terms == 2,
                            search=recipe.q_search)
    kq = quantize_reference(k, fmt, recipe.granularity, recipe.block_kv, signs=signs)
    vq = quantize_reference(v, fmt, recipe.granularity, recipe.block_kv)
    scale = default_softmax_scale(softmax_scale, d) * LOG2E
    # q descale and softmax scale folded per row, k descale per column (same product as the kernel)
    q8 = _group(qq.data.float(), hkv)
    q8_lo = None if qq.residual is None else _group(qq.residual.float(), hkv)
    q_row = _group(qq.row_descale(), hkv) * scale
    k8 = kq.data.float()
    k_col = kq.row_descale()
    v8 = vq.data.float()
    v_finite = bool(torch.isfinite(v8).all())
    v_row = vq.row_descale()
    shift = float(2 ** P_SHIFT[fmt])
    per_tile = _v_descale_per_tile(vq.block_size, sk, block_n)
    pmax = fp8_max(fmt)

    def scores_tile(qc, r0, r1, j0, j1):
        kt = k8[:, :, j0:j1].transpose(-1, -2)
        s = qc @ kt
        if q8_lo is not None:
            s = s + q8_lo[:, :, r0:r1] @ kt
        return s * q_row[:, :, r0:r1, None] * k_col[:, :, None, j0:j1]

    def v_max(j0, j1):
        return v_row[:, :, j0:j1].amax(dim=-1)[..., None, None]

    def p_tile(p, j0, j1):
        if per_tile:
            return saturating_cast(p * shift, fmt).float()
        folded = p * shift * (v_row[:, :, None, j0:j1] / v_max(j0, j1))
        return saturating_cast(folded.clamp(max=pmax), fmt).float()

    def pv_tile(p8, j0, j1, seen):
        tile = _poisoned_pv(p8, v8[:, :, j0:j1], seen, v_finite)
        if per_tile:
            return tile * (v_row[:, :, j0, None, None] / shift)
        return tile * (v_max(j0, j1) / shift)

    acc, m_i, l_i = _flash_loop(q8, k8, v8, sq=sq, causal=causal, block_n=block_n,
                                row_chunk=block_m or q8.shape[2], scores_tile=scores_tile,
                                p_tile=p_tile, pv_tile=pv_tile)
    return _finish(acc, m_i, l_i, hq, sq, q.dtype, return_lse)
