"""Triton forward kernel for FP8 attention (Hopper), launcher at the bottom.

Numerics (those of attention/reference.py's emulation; only the tile sizes may differ):
    S  = (q8 @ k8^T in fp32) * q_descale[row] * k_descale[col] * softmax_scale * log2(e)
         (Q_TERMS == 2, Recipe.q_terms: S = (q8 @ k8^T + q8_lo @ k8^T in fp32) * the same factors,
          q8_lo = cast(y - float(q8)) the second FP8 term of Q with q8's descale; computed as
          tl.dot(q_lo, kT, tl.dot(q, kT)): one accumulator, no extra register tile)
    online softmax in fp32 in the exp2 domain, masked entries -inf
    p' = exp2(S - (m_i - P_SHIFT)) = p * 2**P_SHIFT        (fills FP8's range: [0, 256] for e4m3)
    l_i = l_i * alpha + rowsum(p')                          (fp32 p, before the cast)
    tile = (cast_fp8(p') @ v8_tile in fp32, a fresh accumulator) * v_descale_tile
    acc  = acc * alpha + tile          (two-level accumulation: the tensor core never
                                        accumulates across KV tiles)
    out = acc / l_i  (0 for rows that see no key), lse = (m_i + log2(l_i) - P_SHIFT) * ln(2)
Scaling p and l by 2**P_SHIFT is exact in fp32, so this equals the contract's unshifted form.

V descale: when it is constant over a KV tile (scale blocks that are a multiple of BLOCK_N and
aligned, per-head or per-tensor scales) it multiplies the tile result. Otherwise (token
granularity, small blocks, varlen packing) each column's descale is folded into P before the cast,
normalised by the tile's largest V descale so P still fills the FP8 range:
    P8 = cast(p' * v_descale[col] / vmax_tile),  tile = (P8 @ v8) * vmax_tile
(reference.fp8_flash_emulation folds it the same way).
The kernel keeps acc in units of the current tile's V descale (acc_u = acc / vs) so one FMA per
element does the rescale and the promotion: acc_u = acc_u * (alpha * vs_prev / vs) + (P8 @ v8).

Layouts: Q8 (B, Hq, Sq, D), K8 (B, Hkv, Sk, D), V8 transposed (B, Hkv, D, Sk) -- head-dim major,
contiguous along the sequence: Hopper's FP8 MMA wants its second operand K-major, and
tl.dot(p, tl.trans(vt)) gives it that (keys in natural order; the Gluon kernel's "mma" order is
put back before this kernel runs). Descales (B, H, NB) float32, row r uses [r // block_size].
Varlen: B = 1 and rows are packed; cu_seqlens give each sequence's [start, end).

Code-shape constexprs (same arithmetic, chosen per config by the autotuner): SPLIT (P @ V in 1, 2
or 4 head-dim slices), ONE_LOOP (one masked loop body instead of an unmasked loop plus a masked
one for the causal diagonal and the tail), REVERSE (causal: last query block first). They exist
because at 255 registers small code changes decide whether ptxas spills in the main loop.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import kernel_launch
from ..host_ints import cdiv, next_power_of_2
from ..quant.key_order import check_key_order, to_natural
from . import gluon_dispatch

LOG2E = 1.4426950408889634  # 1 / ln 2

CAUSAL_MODES = {None: 0, "top_left": 1, "bottom_right": 2}
# How P @ V tiles are accumulated. "tile": fresh accumulator per tile, added in fp32 registers.
# "imprecise": the same promotion done by the compiler (max_num_imprecise_acc = BLOCK_N).
# "fp22": the tensor core accumulates across the whole loop -- the known long-context hazard,
# kept only so tests and benchmarks can show the difference. Never the default.
ACC_MODES = {"tile": 0, "imprecise": 1, "fp22": 2}


@triton.jit
def _round_mantissa(x, MBITS: tl.constexpr):
    """Round fp32 x (>= 0, normal range) to MBITS mantissa bits, nearest-even, in fp32.

    Only for the interpreter: its fp32 -> fp8 cast drops the exponent carry when rounding up to a
    power of two (7.94 -> 4.0 instead of 8.0 in e4m3; seen with Triton 3.9). Values already on the
    FP8 grid cast exactly there, and the GPU's cast rounds the same way by itself.
    """
    SH: tl.constexpr = 23 - MBITS
    b = x.to(tl.int32, bitcast=True)
    b = (b + ((1 << (SH - 1)) - 1) + ((b >> SH) & 1)) & ~((1 << SH) - 1)
    return b.to(tl.float32, bitcast=True)


@triton.jit
def _scores(q, q_lo, k_ptrs, kd_ptr, start_n, kv_pos0, offs_n, offs_d, seqlen_k, k_block,
            MASKED: tl.constexpr, EVEN_D: tl.constexpr, HEAD_DIM: tl.constexpr,
            K_MODE: tl.constexpr, Q_TERMS: tl.constexpr):
    """q8 @ k8^T (+ q8_lo @ k8^T when Q_TERMS == 2) for one KV tile in fp32 (times the
    per-column K descale when K_MODE == 2)."""
    cols = start_n + offs_n
    col_ok = cols < seqlen_k
    if MASKED:
        if EVEN_D:
            k = tl.load(k_ptrs, mask=col_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs, mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    else:
        if EVEN_D:
            k = tl.load(k_ptrs)
        else:
            k = tl.load(k_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    if Q_TERMS == 2:
        qk = tl.dot(q_lo, tl.trans(k), tl.dot(q, tl.trans(k)))
    else:
        qk = tl.dot(q, tl.trans(k))
    if K_MODE == 2:
        if MASKED:
            kd = tl.load(kd_ptr + (kv_pos0 + cols) // k_block, mask=col_ok, other=1.0)
        else:
            kd = tl.load(kd_ptr + (kv_pos0 + cols) // k_block)
        qk = qk * kd[None, :]
    return qk


@triton.jit
def _load_vt(vt_ptrs, offs_d, col_ok, MASKED: tl.constexpr, EVEN_D: tl.constexpr,
             HEAD_DIM: tl.constexpr):
    """(len(offs_d), BLOCK_N) slice of V^T; offs_d are the head-dim rows it covers."""
    if MASKED:
        if EVEN_D:
            return tl.load(vt_ptrs, mask=col_ok[None, :], other=0.0)
        return tl.load(vt_ptrs, mask=(offs_d[:, None] < HEAD_DIM) & col_ok[None, :], other=0.0)
    if EVEN_D:
        return tl.load(vt_ptrs)
    return tl.load(vt_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)


@triton.jit
def _pv(acc, p8, vt, factor, ACC_MODE: tl.constexpr, BLOCK_N: tl.constexpr):
    if ACC_MODE == 0:
        return acc * factor[:, None] + tl.dot(p8, tl.trans(vt))
    if ACC_MODE == 1:
        return tl.dot(p8, tl.trans(vt), acc * factor[:, None], max_num_imprecise_acc=BLOCK_N)
    return tl.dot(p8, tl.trans(vt), acc * factor[:, None])


@triton.jit
def _mask_scores(qk, cols, col_ok, offs_m, causal_off, CAUSAL: tl.constexpr):
    keep = col_ok[None, :]
    if CAUSAL != 0:
        keep = keep & (cols[None, :] <= offs_m[:, None] + causal_off)
    return tl.where(keep, qk, float("-inf"))


@triton.jit
def _update(acc0, acc1, acc2, acc3, l_i, m_i, vs_prev, qk, row_scale, vt_ptrs, kd_ptr, vd_ptr,
            start_n, kv_pos0, offs_m, offs_n, offs_dh, seqlen_k, causal_off, k_block, v_block,
            slice_vd, full_end, MASKED: tl.constexpr, DIAG_ONLY: tl.constexpr,
            CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
            HEAD_DIM: tl.constexpr, DH: tl.constexpr, SPLIT: tl.constexpr,
            K_MODE: tl.constexpr, V_PER_COL: tl.constexpr, ACC_MODE: tl.constexpr,
            P_SHIFT: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr):
    """Online-softmax step for one KV tile given its raw scores qk (BLOCK_M, BLOCK_N).

    acc0 .. acc3: the output accumulator's head-dim slices, SPLIT of them (each P @ V product is
    then 1/SPLIT as wide: its fresh fp32 result must sit in registers beside the accumulator,
    which at head dim 256 only fits in slices); unused ones are small placeholders.
    slice_vd: pointer offset from one head-dim slice of V^T to the next.
    MASKED: loads masked at seqlen_k and scores masked (causal and tail); with DIAG_ONLY the
    score mask is applied only to tiles at or beyond full_end (the single-loop form).
    """
    cols = start_n + offs_n
    col_ok = cols < seqlen_k
    vt0 = _load_vt(vt_ptrs, offs_dh, col_ok, MASKED, EVEN_D, HEAD_DIM)
    if K_MODE == 1:
        row_scale = row_scale * tl.load(kd_ptr + (kv_pos0 + start_n) // k_block)
    if MASKED:
        if DIAG_ONLY:
            if start_n >= full_end:
                qk = _mask_scores(qk, cols, col_ok, offs_m, causal_off, CAUSAL)
        else:
            qk = _mask_scores(qk, cols, col_ok, offs_m, causal_off, CAUSAL)
    # row_scale > 0 (q descale * softmax_scale * log2e), so max commutes with the scaling
    m_new = tl.maximum(m_i, tl.max(qk, 1) * row_scale)
    if MASKED:
        # rows that have seen no key yet keep m = -inf; exp2 must not see -inf - -inf
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    alpha = tl.math.exp2(m_i - m_use)
    p = tl.math.exp2(qk * row_scale[:, None] - (m_use - P_SHIFT)[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if V_PER_COL:
        if MASKED:
            vd = tl.load(vd_ptr + (kv_pos0 + cols) // v_block, mask=col_ok, other=0.0)
        else:
            vd = tl.load(vd_ptr + (kv_pos0 + cols) // v_block)
        vs = tl.max(vd, 0)
        p = p * (vd / vs)[None, :]
    else:
        vs = tl.load(vd_ptr + (kv_pos0 + start_n) // v_block)
    # p' <= 2**P_SHIFT < the format's max: the cast never saturates, in hardware or interpreter
    if INTERPRET:
        p = _round_mantissa(p, 3 if P_SHIFT == 8 else 2)
    p8 = p.to(vt0.dtype)
    factor = alpha * (vs_prev / vs)
    acc0 = _pv(acc0, p8, vt0, factor, ACC_MODE, BLOCK_N)
    if SPLIT >= 2:
        vt1 = _load_vt(vt_ptrs + slice_vd, offs_dh + DH, col_ok, MASKED, EVEN_D, HEAD_DIM)
        acc1 = _pv(acc1, p8, vt1, factor, ACC_MODE, BLOCK_N)
    if SPLIT == 4:
        vt2 = _load_vt(vt_ptrs + 2 * slice_vd, offs_dh + 2 * DH, col_ok, MASKED, EVEN_D, HEAD_DIM)
        acc2 = _pv(acc2, p8, vt2, factor, ACC_MODE, BLOCK_N)
        vt3 = _load_vt(vt_ptrs + 3 * slice_vd, offs_dh + 3 * DH, col_ok, MASKED, EVEN_D, HEAD_DIM)
        acc3 = _pv(acc3, p8, vt3, factor, ACC_MODE, BLOCK_N)
    return acc0, acc1, acc2, acc3, l_i, m_new, vs


@triton.jit
def _attn_fwd(Q, QL, K, VT, QD, KD, VD, O, LSE, CU_Q, CU_K, CU_KV,
              stride_qz, stride_qh, stride_qm, stride_qd,
              stride_kz, stride_kh, stride_kn, stride_kd,
              stride_vz, stride_vh, stride_vd, stride_vn,
              stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
              stride_oz, stride_oh, stride_om, stride_od,
              stride_lz, stride_lh, stride_lm,
              H, GQA_GROUP, seqlen_q_arg, seqlen_k_arg, q_block, k_block, v_block, qk_scale,
              tune_key, kv_align,
              CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
              IS_VARLEN: tl.constexpr, RETURN_LSE: tl.constexpr, P_SHIFT: tl.constexpr,
              ACC_MODE: tl.constexpr, K_MODE: tl.constexpr, V_PER_COL: tl.constexpr,
              KV_ALIGNED: tl.constexpr, SPLIT: tl.constexpr, ONE_LOOP: tl.constexpr,
              REVERSE: tl.constexpr,
              INTERPRET: tl.constexpr, Q_TERMS: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr):
    EVEN_D: tl.constexpr = HEAD_DIM == HEAD_DIM_PAD
    DH: tl.constexpr = HEAD_DIM_PAD // SPLIT
    pid_m = tl.program_id(0)
    off_hz = tl.program_id(1)
    off_b = off_hz // H
    off_h = off_hz % H
    off_kvh = off_h // GQA_GROUP
    if CAUSAL != 0:
        if REVERSE:
            # longest rows first: fewer idle SMs at the end of a causal launch
            pid_m = tl.num_programs(0) - 1 - pid_m
    if IS_VARLEN:
        # every offset clamped into the buffers (seqlen_q_arg / seqlen_k_arg rows): an eager
        # call on the GPU checks the offsets on the host only after its launches, and a
        # CUDA graph trusts them, so bad ones must not take a read or a write outside
        q_pos0 = tl.minimum(tl.maximum(tl.load(CU_Q + off_b), 0), seqlen_q_arg)
        seqlen_q = tl.minimum(tl.maximum(tl.load(CU_Q + off_b + 1), q_pos0),
                              seqlen_q_arg) - q_pos0
        # CU_KV: each sequence's first row in K and V^T (CU_K itself, or starts padded to
        # kv_align rows by the caller; the heuristics read kv_align), CU_K its length
        kv_pos0 = tl.minimum(tl.maximum(tl.load(CU_KV + off_b), 0), seqlen_k_arg)
        if KV_ALIGNED:
            # starts padded to a multiple of 16 rows (and the padded buffer's length one of
            # kv_align, so the clamp keeps that): without the hint V^T's rows (keys
            # contiguous, starting at kv_pos0) load a byte at a time instead of 16
            kv_pos0 = tl.multiple_of(kv_pos0, 16)
        seqlen_k = tl.minimum(tl.maximum(tl.load(CU_K + off_b + 1) - tl.load(CU_K + off_b), 0),
                              seqlen_k_arg - kv_pos0)
        off_z = 0
    else:
        q_pos0 = 0
        seqlen_q = seqlen_q_arg
        kv_pos0 = 0
        seqlen_k = seqlen_k_arg
        off_z = off_b
    start_m = pid_m * BLOCK_M
    if start_m >= seqlen_q:
        return
    off_z64 = off_z.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    offs_dh = tl.arange(0, DH)
    row_ok = offs_m < seqlen_q

    off_h64 = off_h.to(tl.int64)
    off_kvh64 = off_kvh.to(tl.int64)
    q_base = Q + off_z64 * stride_qz + off_h64 * stride_qh + q_pos0.to(tl.int64) * stride_qm
    q_ptrs = q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    if EVEN_D:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if Q_TERMS == 2:
        # Q's second FP8 term: same layout and strides as Q, loaded once beside it
        ql_ptrs = (QL + off_z64 * stride_qz + off_h64 * stride_qh + q_pos0.to(tl.int64) * stride_qm
                   + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd)
        if EVEN_D:
            q_lo = tl.load(ql_ptrs, mask=row_ok[:, None], other=0.0)
        else:
            q_lo = tl.load(ql_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    else:
        q_lo = q
    qd = tl.load(QD + off_z64 * stride_qdz + off_h * stride_qdh + (q_pos0 + offs_m) // q_block,
                 mask=row_ok, other=1.0)
    kd_ptr = KD + off_z64 * stride_kdz + off_kvh * stride_kdh
    vd_ptr = VD + off_z64 * stride_vdz + off_kvh * stride_vdh
    row_scale = qd * qk_scale
    if K_MODE == 0:
        row_scale = row_scale * tl.load(kd_ptr + kv_pos0 // k_block)

    kv_pos64 = kv_pos0.to(tl.int64)
    k_base = K + off_z64 * stride_kz + off_kvh64 * stride_kh + kv_pos64 * stride_kn
    vt_base = VT + off_z64 * stride_vz + off_kvh64 * stride_vh + kv_pos64 * stride_vn
    k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    vt_ptrs = vt_base + offs_dh[:, None] * stride_vd + offs_n[None, :] * stride_vn
    slice_vd = DH * stride_vd

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc0 = tl.zeros([BLOCK_M, DH], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, DH if SPLIT >= 2 else 16], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_M, DH if SPLIT == 4 else 16], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_M, DH if SPLIT == 4 else 16], dtype=tl.float32)
    vs = tl.full([1], 1.0, dtype=tl.float32).sum(0)

    # Keys [0, full_end) are visible to every row of this block: no masks. [full_end, hi) holds
    # the causal diagonal and the tail beyond seqlen_k: masked.
    if CAUSAL == 2:
        causal_off = seqlen_k - seqlen_q
    else:
        causal_off = 0
    if CAUSAL != 0:
        last_row = tl.minimum(start_m + BLOCK_M, seqlen_q) - 1
        hi = tl.maximum(tl.minimum(seqlen_k, last_row + causal_off + 1), 0)
        full_end = tl.maximum(tl.minimum(seqlen_k, start_m + causal_off + 1), 0)
        full_end = (full_end // BLOCK_N) * BLOCK_N
    else:
        hi = seqlen_k
        full_end = (seqlen_k // BLOCK_N) * BLOCK_N

    if ONE_LOOP:
        # one loop body: loads always masked, scores masked only from full_end on (fewer live
        # registers than two inlined bodies: keeps head dim 256 causal free of spills)
        for start_n in range(0, hi, BLOCK_N):
            qk = _scores(q, q_lo, k_ptrs + start_n * stride_kn, kd_ptr, start_n, kv_pos0, offs_n,
                         offs_d, seqlen_k, k_block, True, EVEN_D, HEAD_DIM, K_MODE, Q_TERMS)
            acc0, acc1, acc2, acc3, l_i, m_i, vs = _update(
                acc0, acc1, acc2, acc3, l_i, m_i, vs, qk, row_scale,
                vt_ptrs + start_n * stride_vn, kd_ptr, vd_ptr, start_n, kv_pos0, offs_m, offs_n,
                offs_dh, seqlen_k, causal_off, k_block, v_block, slice_vd, full_end, True, True,
                CAUSAL, EVEN_D, HEAD_DIM, DH, SPLIT, K_MODE, V_PER_COL, ACC_MODE, P_SHIFT,
                BLOCK_N, INTERPRET)
    else:
        for start_n in range(0, full_end, BLOCK_N):
            qk = _scores(q, q_lo, k_ptrs + start_n * stride_kn, kd_ptr, start_n, kv_pos0, offs_n,
                         offs_d, seqlen_k, k_block, False, EVEN_D, HEAD_DIM, K_MODE, Q_TERMS)
            acc0, acc1, acc2, acc3, l_i, m_i, vs = _update(
                acc0, acc1, acc2, acc3, l_i, m_i, vs, qk, row_scale,
                vt_ptrs + start_n * stride_vn, kd_ptr, vd_ptr, start_n, kv_pos0, offs_m, offs_n,
                offs_dh, seqlen_k, causal_off, k_block, v_block, slice_vd, full_end, False,
                False, CAUSAL, EVEN_D, HEAD_DIM, DH, SPLIT, K_MODE, V_PER_COL, ACC_MODE, P_SHIFT,
                BLOCK_N, INTERPRET)
        for start_n in range(full_end, hi, BLOCK_N):
            qk = _scores(q, q_lo, k_ptrs + start_n * stride_kn, kd_ptr, start_n, kv_pos0, offs_n,
                         offs_d, seqlen_k, k_block, True, EVEN_D, HEAD_DIM, K_MODE, Q_TERMS)
            acc0, acc1, acc2, acc3, l_i, m_i, vs = _update(
                acc0, acc1, acc2, acc3, l_i, m_i, vs, qk, row_scale,
                vt_ptrs + start_n * stride_vn, kd_ptr, vd_ptr, start_n, kv_pos0, offs_m, offs_n,
                offs_dh, seqlen_k, causal_off, k_block, v_block, slice_vd, full_end, True,
                False, CAUSAL, EVEN_D, HEAD_DIM, DH, SPLIT, K_MODE, V_PER_COL, ACC_MODE, P_SHIFT,
                BLOCK_N, INTERPRET)

    # l_i == 0: the row saw no key -> 0 and lse -inf (a NaN l_i stays NaN: NaN == 0 is false)
    no_key = l_i == 0.0
    l_safe = tl.where(no_key, 1.0, l_i)
    out_scale = tl.where(no_key, 0.0, vs / l_safe)
    o_base = O + off_z64 * stride_oz + off_h64 * stride_oh + q_pos0.to(tl.int64) * stride_om
    o_ptrs = o_base + offs_m[:, None] * stride_om + offs_dh[None, :] * stride_od
    _store_out(o_ptrs, acc0 * out_scale[:, None], row_ok, offs_dh, EVEN_D, HEAD_DIM)
    if SPLIT >= 2:
        _store_out(o_ptrs + DH * stride_od, acc1 * out_scale[:, None], row_ok, offs_dh + DH,
                   EVEN_D, HEAD_DIM)
    if SPLIT == 4:
        _store_out(o_ptrs + 2 * DH * stride_od, acc2 * out_scale[:, None], row_ok,
                   offs_dh + 2 * DH, EVEN_D, HEAD_DIM)
        _store_out(o_ptrs + 3 * DH * stride_od, acc3 * out_scale[:, None], row_ok,
                   offs_dh + 3 * DH, EVEN_D, HEAD_DIM)
    if RETURN_LSE:
        lse2 = m_i + tl.math.log2(l_safe) - P_SHIFT
        lse = tl.where(no_key, float("-inf"), lse2 * 0.6931471805599453)  # ln 2
        l_ptrs = LSE + off_z64 * stride_lz + off_h * stride_lh + (q_pos0 + offs_m) * stride_lm
        tl.store(l_ptrs, lse, mask=row_ok)


@triton.jit
def _store_out(o_ptrs, out, row_ok, offs_d, EVEN_D: tl.constexpr, HEAD_DIM: tl.constexpr):
    if EVEN_D:
        tl.store(o_ptrs, out.to(o_ptrs.dtype.element_ty), mask=row_ok[:, None])
    else:
        tl.store(o_ptrs, out.to(o_ptrs.dtype.element_ty),
                 mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


# ----------------------------------------------------------------------------------------------
# Autotuning and launcher

def _cfg(bm, bn, warps, stages, split=1, one_loop=False, reverse=True):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT": split, "ONE_LOOP": one_loop,
                          "REVERSE": reverse}, num_warps=warps, num_stages=stages)


# Measured on an H200 (Triton 3.6, 2026-11-22 04:39 UTC, benchmarks/sweep_attention.py, run 3 in
# benchmarks/results/attention_notes.md): the best two-level configs per head dim, picked per
# causal mode and seqlen bucket by the autotuner. Head dim 256 splits P @ V into two 128-wide
# products (SPLIT=2: one 256-wide fp32 tile beside the 256-wide accumulator does not fit) and runs
# causal blocks in launch order (REVERSE=False): with the reversed order ptxas spills 68 registers
# in the main loop and causal ran at half speed. ONE_LOOP: hdim 64 causal (no spills, unlike
# 128 x 128) and hdim 128 at short seqlen.
_TUNED = {
    64: [_cfg(128, 128, 4, 3), _cfg(64, 128, 4, 3, one_loop=True), _cfg(64, 128, 4, 3)],
    128: [_cfg(64, 128, 4, 3), _cfg(64, 128, 4, 3, one_loop=True), _cfg(128, 128, 8, 3)],
    256: [_cfg(64, 64, 4, 3, 2, reverse=False), _cfg(64, 64, 4, 3, 2, one_loop=True),
          _cfg(64, 64, 4, 2, 4, one_loop=True)],
}


def _minimal() -> bool:
    return os.environ.get("FP8ATTN_TUNE", "").strip().lower() == "minimal"


def _configs():
    """All tuned configs; FP8ATTN_TUNE=minimal (tests): one small config per SPLIT value."""
    if _minimal():
        if os.environ.get("TRITON_INTERPRET") == "1":
            return [_cfg(64, 64, 4, 1, 1), _cfg(64, 64, 4, 1, 2)]
        return [_cfg(64, 64, 4, 2, 1), _cfg(64, 64, 4, 2, 2)]
    return [c for cs in _TUNED.values() for c in cs]


def _tuned_dim(d: int) -> int:
    return 64 if d <= 64 else (128 if d <= 128 else 256)


def _prune(configs, named_args, **kwargs):
    """Keep the configs tuned for this (padded) head dim."""
    d = _tuned_dim(kwargs.get("HEAD_DIM_PAD", named_args.get("HEAD_DIM_PAD")))
    if _minimal():
        return [c for c in configs if c.kwargs["SPLIT"] == (2 if d == 256 else 1)][:1]
    return [c for c in configs if c in _TUNED[d]]


def _kv_tiles_aligned(a) -> bool:
    """Whether K / V tile t of a sequence starts at a multiple of BLOCK_N in its scale blocks'
    coordinates: always for dense calls; for varlen ones when the caller padded each sequence's
    K / V start to kv_align rows, a multiple of both blocks and of 16, in a buffer of a multiple
    of kv_align rows (quant/padded_rows.py; the kernel's clamp of a start to the buffer then
    keeps it a multiple of 16)."""
    if not a["IS_VARLEN"]:
        return True
    align = a.get("kv_align", 0) or 0
    return (align > 0 and align % 16 == 0 and align % a["k_block"] == 0
            and align % a["v_block"] == 0 and a["seqlen_k_arg"] % align == 0)


def _v_per_col(a):
    """V descale varies inside a KV tile: fold it into P per column."""
    if a["v_block"] >= a["seqlen_k_arg"]:
        return False
    return not _kv_tiles_aligned(a) or a["v_block"] % a["BLOCK_N"] != 0


def _k_mode(a):
    """0: one K descale per head (folded into the row scale once); 1: per tile; 2: per column.
    Per column costs the tl kernel registers: offline (Triton 3.6, sm_90a, hdim 128) it spills
    1.5 KB, and varlen calls on unaligned starts ran 4.7x slower than the same tokens as a dense
    call (H200, session 30, results/probe_varlen_profile_s30.log)."""
    if a["k_block"] >= a["seqlen_k_arg"]:
        return 0
    if _kv_tiles_aligned(a) and a["k_block"] % a["BLOCK_N"] == 0:
        return 1
    return 2


_attn_fwd_heur = triton.heuristics({"V_PER_COL": _v_per_col, "K_MODE": _k_mode,
                                    "KV_ALIGNED": _kv_tiles_aligned})(_attn_fwd)
_attn_fwd_tuned = triton.autotune(
    configs=_configs(),
    key=["HEAD_DIM_PAD", "CAUSAL", "IS_VARLEN", "tune_key", "ACC_MODE", "Q_TERMS", "kv_align"],
    prune_configs_by={"early_config_prune": _prune},
)(_attn_fwd_heur)


_BEST: dict = {}   # launch key -> the autotuner's choice for it (see attention_fwd_fp8)


def _tune_bucket(seqlen_q: int, seqlen_k: int, batch_heads: int) -> int:
    def b(x):
        return min(next_power_of_2(max(int(x), 1)), 1 << 16)
    return b(seqlen_q) * (1 << 20) + b(seqlen_k) * 16 + min(batch_heads.bit_length(), 15)


def attention_fwd_fp8(q8, k8, vt8, q_descale, k_descale, v_descale, *, q_block: int,
                      k_block: int, v_block: int, softmax_scale: float, causal=None,
                      out_dtype=torch.bfloat16, return_lse: bool = False, out=None,
                      cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                      acc_mode: str = "tile", config: dict | None = None, q_lo=None,
                      v_key_order: str = "natural", kv_starts=None, kv_align: int = 0,
                      q_layout=None):
    """Launch the kernel on already-quantised inputs.

    q8 (B, Hq, Sq, D), k8 (B, Hkv, Sk, D), vt8 (B, Hkv, D, Sk): FP8 (e4m3fn or e5m2, all the same);
    q/k/v_descale (B, H, NB) float32, row r of a head uses descale[..., r // *_block].
    Varlen: B == 1, rows of all sequences packed, cu_seqlens_q/k int32 (nseq + 1,), max_seqlen_q.
    kv_starts (varlen): int32 (nseq,) first row of each sequence in k8 / vt8 when they are not
    cu_seqlens_k[:-1] (sequences padded apart), and kv_align > 0 the multiple of rows they all
    are (a multiple of k_block and v_block: then K / V descales are read once per tile).
    q_layout (varlen): optional padded_rows.PaddedRows of cu_seqlens_q in 128-row tiles with
    their sequences (the Gluon kernel's query tiles; gluon_dispatch.varlen_tables makes them
    otherwise).
    out: optional (B, Hq, Sq, D) tensor (any strides) of out_dtype to write into.
    config: skip autotuning, e.g. {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3}
    (SPLIT, the number of head-dim slices of P @ V (1, 2 or 4), defaults to 2 for head dims above
    128; ONE_LOOP (one masked loop body instead of an unmasked and a masked one) defaults to
    False; REVERSE (causal: last query block first) defaults to True).
    q_lo: None, or Q's second FP8 term (Recipe.q_terms == 2; QuantizedTensor.residual): same
    shape, dtype and strides as q8, sharing q_descale; the scores become
    (q8 @ k8^T + q_lo @ k8^T) * descales.
    v_key_order: the order of vt8's keys, "natural" or "mma" (quant/key_order.py: what the
    Gluon kernel reads; the tl kernel gets a natural-order copy).
    Returns out (B, Hq, Sq, D) and, if return_lse, lse float32 (B, Hq, Sq) in natural log.
    Inputs are assumed validated by the caller (fp8attn.attention.ops).
    The calls gluon_dispatch.why_not accepts run the Gluon kernel instead (sm_90 with Triton 3.6,
    hdim 128 (causal or not; seqlen_k >= 1024) and 256 (causal or not, no LSE; seqlen_k >=
    4096), bf16 / fp16 / fp32 output: the same bits as this kernel's 64-row blocks
    (gluon_dispatch); FP8ATTN_GLUON=0 turns it off).
    """
    if q_lo is not None and (q_lo.shape != q8.shape or q_lo.dtype != q8.dtype
                             or q_lo.stride() != q8.stride() or q_lo.device != q8.device):
        raise ValueError(f"q_lo (shape {tuple(q_lo.shape)}, dtype {q_lo.dtype}, strides "
                         f"{q_lo.stride()}, device {q_lo.device}) must match q8 (shape "
                         f"{tuple(q8.shape)}, dtype {q8.dtype}, strides {q8.stride()}, "
                         f"device {q8.device})")
    B, Hq, Sq, D = q8.shape
    Hkv, Sk = k8.shape[1], k8.shape[2]
    varlen = cu_seqlens_q is not None
    if out is None:
        out = torch.empty((B, Hq, Sq, D), dtype=out_dtype, device=q8.device)
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q8.device) if return_lse else out
    check_key_order(v_key_order)
    if gluon_dispatch.why_not(q8, k8, vt8, k_block=k_block, v_block=v_block, causal=causal,
                              varlen=varlen, q_lo=q_lo, out_dtype=out.dtype, acc_mode=acc_mode,
                              config=config, v_key_order=v_key_order, lse=return_lse,
                              kv_align=kv_align if kv_starts is not None else 0) is None \
            and gluon_dispatch.try_launch(
            q8, k8, vt8, q_descale, k_descale, v_descale, q_block=q_block, k_block=k_block,
            v_block=v_block, softmax_scale=softmax_scale, out=out,
            lse=lse if return_lse else None, v_key_order=v_key_order, causal=causal,
            q_lo=q_lo, varlen=gluon_dispatch.varlen_tables(
                cu_seqlens_q, cu_seqlens_k, kv_starts, Sq, q_layout) if varlen else None):
        return (out, lse) if return_lse else out
    if v_key_order == "mma":
        vt8 = to_natural(vt8)
    stride_l = lse.stride() if return_lse else (0, 0, 0)
    nseq = cu_seqlens_q.numel() - 1 if varlen else B
    m_extent = int(max_seqlen_q) if varlen else Sq
    # unused pointer arguments still need a tensor: reuse one
    cu_q = cu_seqlens_q if varlen else q_descale
    cu_k = cu_seqlens_k if varlen else q_descale
    cu_kv = kv_starts if varlen and kv_starts is not None else cu_k
    kv_align = int(kv_align) if varlen and kv_starts is not None else 0
    meta = dict(CAUSAL=CAUSAL_MODES[causal], HEAD_DIM=D,
                # FP8 MMAs reduce over 32 elements at least: pad (masked) small head dims
                HEAD_DIM_PAD=max(next_power_of_2(D), 32), IS_VARLEN=varlen,
                RETURN_LSE=return_lse, P_SHIFT=8 if q8.dtype == torch.float8_e4m3fn else 15,
                ACC_MODE=ACC_MODES[acc_mode], INTERPRET=os.environ.get("TRITON_INTERPRET") == "1",
                Q_TERMS=1 if q_lo is None else 2)
    tune_key = _tune_bucket(m_extent, Sk, nseq * Hq)
    args = (q8, q8 if q_lo is None else q_lo, k8, vt8, q_descale, k_descale, v_descale, out, lse,
            cu_q, cu_k, cu_kv,
            *q8.stride(), *k8.stride(), *vt8.stride(),
            q_descale.stride(0), q_descale.stride(1), k_descale.stride(0), k_descale.stride(1),
            v_descale.stride(0), v_descale.stride(1),
            *out.stride(), *stride_l,
            Hq, Hq // Hkv, Sq, Sk, q_block, k_block, v_block, float(softmax_scale) * LOG2E,
            tune_key, kv_align)

    def grid(m):
        return (cdiv(m_extent, m["BLOCK_M"]), nseq * Hq)

    if config is None:
        key = (meta["HEAD_DIM_PAD"], meta["CAUSAL"], varlen, tune_key, meta["ACC_MODE"],
               q8.dtype, out.dtype, D, return_lse, meta["INTERPRET"], meta["Q_TERMS"], kv_align)
        best = _BEST.get(key)
        if best is None:
            _attn_fwd_tuned[grid](*args, **meta)
            _BEST[key] = _attn_fwd_tuned.best_config
        else:
            # the tuned config of this key, launched without the autotuner's and heuristics'
            # Python layers (about a third of the host time of a short attention call)
            # (and after the first call of a kind, without Triton's argument binding either)
            bn = best.kwargs["BLOCK_N"]
            heur = dict(v_block=v_block, k_block=k_block, seqlen_k_arg=Sk, IS_VARLEN=varlen,
                        BLOCK_N=bn, kv_align=kv_align)
            kernel_launch.launch_call(_attn_fwd_tuned.fn.fn, grid(best.kwargs), *args, **meta,
                                      **best.all_kwargs(), V_PER_COL=_v_per_col(heur),
                                      K_MODE=_k_mode(heur), KV_ALIGNED=_kv_tiles_aligned(heur))
    else:
        split = 2 if meta["HEAD_DIM_PAD"] >= 256 else 1
        _attn_fwd_heur[grid](*args, **meta, **{"SPLIT": split, "ONE_LOOP": False,
                                                "REVERSE": True, **config})
    return (out, lse) if return_lse else out
