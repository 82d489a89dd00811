"""FA3-style FP8 attention forward for Hopper in Gluon (Triton 3.6).

attention_fwd_fp8 hands the calls it covers to this kernel (attention/gluon_dispatch.py says
which and why; FP8ATTN_GLUON=0 turns it off); the tl kernel (triton_fwd.py) stays the reference,
the fallback and what the interpreter tests. The other modes below are kept for the experiments
(benchmarks/experiments/gluon_gpu_check.py, gluon_compile.py).

Fastest variant (H200, 2026-11-30, benchmarks/RESULTS.md "Session 6" and "Session 7"): mode
"pingpong" with overlap=True, unroll2=True, stages=3: bit-identical to attention_fwd_fp8 with
128-key tiles, 1.14-1.32x of it at seqlen 4k-16k (non-causal, hdim 128); 0.91-0.95x FA3 FP8.
It reads V^T in the "mma" key order (quant/key_order.py; _pack_p says why);
gluon_attention_fwd permutes a natural-order V^T first.

Head dims 64, 128 and 256 (varlen batches on the 128 kernel only, head dims 80-128 since
session 37: VARLEN, _varlen_item, the items handed to CTAs as they come free by a counter in
device memory, DYNAMIC / _take_item; 256: mode
"pingpong" without overlap, P @ V in four quarter-width parts: _tile_split), e4m3, per-tile K
and V descales (K_MODE 1, V_PER_COL False of triton_fwd.py), per-row Q descale, P_SHIFT 8,
two-level accumulation, output bf16; causal masks, the LSE output and Q's second FP8 term in
mode pingpong with overlap only (CAUSAL / RETURN_LSE / Q_TERMS; bit-identical to the tl kernel
on the GPU). gluon_dispatch.py says which of these the package launches (hdim 64: the
three-consumer form below).
Numerics are those of triton_fwd.py, step for step:
    row_scale = q_descale[row] * softmax_scale * log2(e) * k_descale[tile]
    m_new = max(m_i, rowmax(qk) * row_scale);  alpha = exp2(m_i - m_new)
    p' = exp2(qk * row_scale - (m_new - P_SHIFT));  l_i = l_i * alpha + rowsum(p')
    acc_u = acc_u * (alpha * vs_prev / vs) + (cast_fp8(p') @ v8_tile, fresh fp32 accumulator)
    out = acc_u * vs / l_i  (0 where l_i == 0)
(acc_u is the accumulator in units of the current tile's V descale vs, as in triton_fwd.py.)

Structure (MODE constexpr):
  0 "plain":   one 8-warp partition (two warpgroups, 64 query rows each, in lockstep) that also
               issues the TMA loads of K and V^T STAGES-1 tiles ahead. No warp specialisation.
  1 "ws":      gl.warp_specialize: default partition = the 8-warp consumer above; one 1-warp
               worker = producer issuing TMA loads into a STAGES-deep ring of K and V^T tiles
               (mbarriers k_full / v_full per stage, kv_empty released by the consumer after P@V).
               worker_num_regs gives the producer few registers so the consumers get more.
  2 "pingpong": default partition = consumer warpgroup 0 (rows 0-63), worker 0 = consumer
               warpgroup 1 (rows 64-127), worker 1 = producer. The consumers take turns issuing
               their GEMMs (QK^T of one, then of the other, then P@V of one, ...), ordered by two
               mbarriers, so one warpgroup's softmax runs under the other's GEMMs (FA3's ping-pong).
  consumers=3 (mode pingpong with overlap, turns=False, block_m=192, not persistent): three
               turn-free consumer warpgroups of 64 rows, FA3's hdim-64 shape (session 14: 1.11x
               the tl kernel at 16k keys, where two consumers ran 0.96x); causal blocks have
               up to three masked tiles (MASKED_MAX).
  persistent=True (mode pingpong with overlap): one CTA per SM looping over (query block, head)
               work items; tma_store 1 / 2 writes each item's output through shared memory
               with one / two asynchronous TMA stores instead of plain stores (session 11:
               ~2 tile-times less per item, benchmarks/RESULTS.md "Session 11"). Head dims
               above 128 (not persistent) take tma_store too: the four P @ V parts' outputs
               through one / two (64, head_dim / 4) shared tiles a warpgroup (session 21: the
               plain stores took ~4-5k cycles a CTA, 12% of a 1k-key one).
  overlap=True (modes ws / pingpong, _consumer_ovl): FA3's intra-warpgroup overlap: S_j = Q K_j^T
               and P_{j-1} @ V_{j-1} are issued back to back in ONE ping-pong turn, the softmax
               of S_j runs while P_{j-1} @ V_{j-1} is in flight, then that tile is folded into
               acc. K and V slots are released separately (kv_empty after QK^T, v_empty after
               P @ V). turns=False (mode pingpong): two consumer warpgroups without turn barriers.

Layouts: Q tile (128, D) and K tiles (BLOCK_N, D) are row-major with D contiguous; V^T tiles are
(D, BLOCK_N), sequence contiguous: both B operands (K^T and V) are then K-major in shared memory as
the FP8 wgmma requires. P goes in registers as the A operand of P @ V. TMA descriptors are 2-D over
flattened views: Q (B*Hq*Sq, D), K (B*Hkv*Sk, D), V^T (B*Hkv*D, Sk) with V^T's row stride
vt8.stride(-2) (Sk rounded up to 16 is fine). A K tile past the end of a head reads the next
head's rows (or TMA's zero fill): those columns are masked to -inf before the softmax, and their
P is exactly 0; V^T tiles never cross a head (the column extent is Sk, zero-filled beyond).
"""
from __future__ import annotations

import functools
import heapq
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .. import kernel_launch
from ..device_tables import cached_table
from ..quant.key_order import padded_view, to_mma
from .gluon_dispatch import TILE_KEYS, VarlenTables, kernel_head_dim

LOG2E = 1.4426950408889634
# TRACE (a debugging aid, off in every launch the package makes): clock stamps of the first
# TRACE_ITEMS work items of each persistent CTA (benchmarks/experiments/gluon_trace.py)
TRACE_ITEMS = gl.constexpr(32)
MODES = {"plain": 0, "ws": 1, "pingpong": 2}


@gluon.jit
def _issue_kv(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_row0, vt_row0, start_n, slot,
              vt_col0=0):
    """TMA loads of one K tile (BLOCK_N, D) and one V^T tile (D, BLOCK_N) into ring slot `slot`
    (vt_col0: the first key column of V^T's rows, a varlen sequence's start)."""
    kb = k_full.index(slot)
    vb = v_full.index(slot)
    mbarrier.expect(kb, k_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [kv_row0 + start_n, 0], kb, k_smem.index(slot))
    mbarrier.expect(vb, v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(v_desc, [vt_row0, vt_col0 + start_n], vb, v_smem.index(slot))


@gluon.jit
def _fill_slot(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty, kv_row0,
               vt_row0, start_n, slot, ph, SPLIT_EMPTY: gl.constexpr, vt_col0=0):
    """Load the KV tile at start_n into ring slot `slot` once the slot's previous tile is
    released (parity ph). SPLIT_EMPTY: K is released by kv_empty (after Q K^T) and V by v_empty
    (after P @ V), so the next K load starts while the previous P @ V still reads its V (the
    overlapped consumer needs K one tile ahead); otherwise kv_empty releases both (the
    head-dim > 128 consumers). vt_col0: _issue_kv's."""
    if SPLIT_EMPTY:
        kb = k_full.index(slot)
        mbarrier.wait(kv_empty.index(slot), ph)
        mbarrier.expect(kb, k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv_row0 + start_n, 0], kb, k_smem.index(slot))
        vb = v_full.index(slot)
        mbarrier.wait(v_empty.index(slot), ph)
        mbarrier.expect(vb, v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [vt_row0, vt_col0 + start_n], vb,
                                        v_smem.index(slot))
    else:
        mbarrier.wait(kv_empty.index(slot), ph)
        _issue_kv(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_row0, vt_row0, start_n,
                  slot, vt_col0)


@gluon.jit
def _producer(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty, kv_row0,
              vt_row0, seqlen_k, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
              SPLIT_EMPTY: gl.constexpr):
    """Worker partition: fill the ring; wait for a slot's previous tile to be released first.

    A fresh mbarrier counts as having completed the phase before phase 0, so the first pass over
    the ring waits on parity 1 and returns at once. SPLIT_EMPTY: _fill_slot's.
    """
    n_tiles = gl.cdiv(seqlen_k, BLOCK_N)
    for j in range(n_tiles):
        slot = j % STAGES
        ph = ((j // STAGES) & 1) ^ 1
        _fill_slot(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty, kv_row0,
                   vt_row0, j * BLOCK_N, slot, ph, SPLIT_EMPTY)


@gluon.jit
def _row_max(qk, BLOCK_N: gl.constexpr, NW: gl.constexpr):
    """gl.max(qk, 1) as a tree. A thread holds a row's columns 8 g + {0, 1} (g = 0 ..
    BLOCK_N / 8 - 1; column bits 1-2 are lanes): gl.max folds them in one dependent chain of
    BLOCK_N / 4 - 1 FMNMX (15 at 64-key tiles, 31 at 128) before the two shuffles, at the head
    of every softmax. Here the g halves are folded pairwise first (log2(BLOCK_N / 8) levels),
    then gl.max finishes the eight columns 0-7 (one in-thread FMNMX and the shuffles). A max
    is exact in any order: same bits."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    R: gl.constexpr = qk.shape[0]
    G: gl.constexpr = BLOCK_N // 8
    # (R, G, 8) -> (R, 8, G): the in-thread group index g last
    x = gl.permute(gl.reshape(qk, [R, G, 8]), (0, 2, 1))
    for _ in gl.static_range(G.bit_length() - 1):
        a, b = gl.split(gl.reshape(x, [R, 8, x.shape[2] // 2, 2]))
        x = gl.maximum(a, b)
    return gl.convert_layout(gl.max(gl.reshape(x, [R, 8]), 1), gl.SliceLayout(1, s_layout))


@gluon.jit
def _softmax(qk, m_i, l_i, row_scale, start_n, seqlen_k, MASKED: gl.constexpr,
             BLOCK_N: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr, row_lo=0,
             causal_off=0, CAUSAL: gl.constexpr = 0, TREE_MAX: gl.constexpr = False):
    """Online-softmax update of one S tile (ROWS, BLOCK_N): returns (p' in fp32, m_new, l_new,
    alpha), the formulas of triton_fwd.py step for step; _pack_p makes the P @ V operand.
    CAUSAL (masked tiles only): column c is visible to query row r (row_lo + the tile's row
    index) when c <= r + causal_off, as triton_fwd.py's _mask_scores. TREE_MAX: the row max
    by _row_max (same bits)."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    if MASKED:
        cols = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        if CAUSAL != 0:
            rows = row_lo + gl.arange(0, qk.shape[0], layout=gl.SliceLayout(1, s_layout))
            keep = (gl.expand_dims(cols < seqlen_k, 0)
                    & (gl.expand_dims(cols, 0) <= gl.expand_dims(rows + causal_off, 1)))
            qk = gl.where(keep, qk, float("-inf"))
        else:
            qk = gl.where(gl.expand_dims(cols < seqlen_k, 0), qk, float("-inf"))
    # row_scale > 0, so the max commutes with the scaling (as in triton_fwd.py)
    if TREE_MAX:
        row_max = _row_max(qk, BLOCK_N, NW)
    else:
        row_max = gl.max(qk, 1)
    m_new = gl.maximum(m_i, row_max * row_scale)
    if MASKED:
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    alpha = gl.exp2(m_i - m_use)
    p = gl.exp2(qk * gl.expand_dims(row_scale, 1) - gl.expand_dims(m_use - P_SHIFT, 1))
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, m_new, l_i, alpha


@gluon.jit
def _pack_p(p, PV_D: gl.constexpr, NW: gl.constexpr):
    """p' (fp32, S accumulator layout (ROWS, BLOCK_N)) -> e4m3 P in int32 words (ROWS,
    BLOCK_N // 4), four keys a word, in the P @ V wgmma's A-operand order for V^T stored in the
    "mma" key order (fp8attn/quant/key_order.py). p' <= 2**P_SHIFT: the cast never saturates.

    The S accumulator and the A operand of an e4m3 wgmma (k32) give a thread the same rows and
    as many keys, but different keys of each 16-key group (accumulator: lane bits 0-1 on key
    bits 1-2; A operand: on key bits 2-3). Permuting the keys of every group (key bits (0, 1,
    2, 3) of column a = bits (0, 2, 3, 1) of a) makes the two hold the same values in the same
    lanes: the conversion is a register renaming, and V^T's keys are stored in that order.
    Without it Triton moves P between lanes (about 24 SHFL + 16 SEL + 24 PRMT a tile and warp;
    ncu, H200). The words are built here, at the end of a step: a loop-carried 8-bit tensor
    would be one byte a register (repacked before every wgmma), a loop-carried fp32 p' packed at
    the start of the next step made ptxas spill (2 KB)."""
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, PV_D, 32])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
    R: gl.constexpr = p.shape[0]
    C: gl.constexpr = p.shape[1]
    p6 = gl.permute(gl.reshape(p, [R, C // 16, 2, 2, 2, 2]), (0, 1, 3, 4, 2, 5))
    pa = gl.convert_layout(gl.reshape(p6, [R, C]), a_layout)
    # the four keys of a word are consecutive in the A operand: split them out, cast in pairs
    e0, e1 = gl.split(gl.reshape(pa, [R, C // 4, 2, 2]))
    x0, x2 = gl.split(e0)
    x1, x3 = gl.split(e1)
    return gl.inline_asm_elementwise(
        "{ .reg .b16 lo, hi; cvt.rn.satfinite.e4m3x2.f32 lo, $2, $1; "
        "cvt.rn.satfinite.e4m3x2.f32 hi, $4, $3; mov.b32 $0, {lo, hi}; }",
        "=r,r,r,r,r", [x0, x1, x2, x3], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def _p_operand(w, PV_D: gl.constexpr, NW: gl.constexpr):
    """_pack_p's words -> the e4m3 A operand (ROWS, BLOCK_N) of P @ V (byte k of a word is key
    4 i + k of the permuted order). LLVM folds the byte split and the wgmma's repacking, so the
    words go to the wgmma as they are (SASS: no PRMT left in the loop)."""
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, PV_D, 32])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
    R: gl.constexpr = w.shape[0]
    C4: gl.constexpr = w.shape[1]
    b0 = w.to(gl.int8).to(gl.float8e4nv, bitcast=True)
    b1 = (w >> 8).to(gl.int8).to(gl.float8e4nv, bitcast=True)
    b2 = (w >> 16).to(gl.int8).to(gl.float8e4nv, bitcast=True)
    b3 = (w >> 24).to(gl.int8).to(gl.float8e4nv, bitcast=True)
    p = gl.reshape(gl.join(gl.join(b0, b2), gl.join(b1, b3)), [R, C4 * 4])
    return gl.convert_layout(p, a_layout)


@gluon.jit
def _tile_descale(ptr, start_n, BLOCK: gl.constexpr):
    """The descale of the KV tile at start_n: one per BLOCK keys (a multiple of the tile), or
    BLOCK 0: one for the whole head. A compile-time divisor: the runtime divisions were 75 of
    the unrolled loop's 1005 instructions (SASS, Triton 3.6)."""
    if BLOCK == 0:
        d = gl.load(ptr)
    else:
        d = gl.load(ptr + start_n // BLOCK)
    return d


@gluon.jit
def _scores_softmax(m_i, l_i, q_s, k_smem, k_full, turn, kd_ptr, vd_ptr, slot, phase, start_n,
                    seqlen_k, k_block, v_block, row_scale0, my_turn, other_turn, turn_phase,
                    MASKED: gl.constexpr, PINGPONG: gl.constexpr, ROWS: gl.constexpr,
                    BLOCK_N: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr, row_lo=0,
                    causal_off=0, CAUSAL: gl.constexpr = 0, TRACE_PTR=0, trace_part=0,
                    trace_it=0, TRACE: gl.constexpr = False, Q_REGS: gl.constexpr = False,
                    TREE_MAX: gl.constexpr = False):
    """The first half of _tile and _tile_split: S = Q K^T of the tile in ring slot `slot` (in
    this warpgroup's turn), its K and V descales, and the online-softmax update (masked tiles:
    _softmax's causal mask with row_lo, causal_off and CAUSAL). Returns (p' fp32, m_new, l_new,
    alpha, vs, turn_phase). TRACE: _tile_split's stamps 1 and 2. Q_REGS: q_s is Q in registers
    (the A operand), not a shared-memory view. TREE_MAX: _softmax's."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    k_s = k_smem.index(slot)
    mbarrier.wait(k_full.index(slot), phase)
    if PINGPONG:
        mbarrier.wait(turn.index(my_turn), turn_phase)
    qk = warpgroup_mma(q_s, k_s.permute((1, 0)),
                       gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout), use_acc=False,
                       is_async=True)
    _stamp_at(TRACE_PTR, trace_part, trace_it, 1, TRACE)
    if PINGPONG:
        mbarrier.arrive(turn.index(other_turn))
        turn_phase ^= 1
    # K_MODE 1: one K descale per tile (k_block a multiple of BLOCK_N); the load overlaps the MMA
    row_scale = row_scale0 * _tile_descale(kd_ptr, start_n, k_block)
    vs = _tile_descale(vd_ptr, start_n, v_block)
    if Q_REGS:
        # (an 8-bit register operand cannot be a dep on 3.6; ptxas tracks it itself)
        qk, _ = warpgroup_mma_wait(num_outstanding=0, deps=[qk, k_s])
    else:
        qk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=[qk, q_s, k_s])
    _stamp_at(TRACE_PTR, trace_part, trace_it, 2, TRACE)
    p, m_new, l_i, alpha = _softmax(qk, m_i, l_i, row_scale, start_n, seqlen_k, MASKED,
                                    BLOCK_N, P_SHIFT, NW, row_lo, causal_off, CAUSAL, TREE_MAX)
    return p, m_new, l_i, alpha, vs, turn_phase


@gluon.jit
def _tile(acc, m_i, l_i, vs_prev, q_smem, k_smem, v_smem, k_full, v_full, kv_empty, turn,
          kd_ptr, vd_ptr, j, start_n, seqlen_k, k_block, v_block, row_scale0, my_turn, other_turn,
          turn_phase, MASKED: gl.constexpr, PINGPONG: gl.constexpr, ROWS: gl.constexpr,
          BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
          P_SHIFT: gl.constexpr, NW: gl.constexpr):
    """One KV tile of the online softmax for this consumer's ROWS query rows."""
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    slot = j % STAGES
    phase = (j // STAGES) & 1
    v_s = v_smem.index(slot)
    p, m_new, l_i, alpha, vs, turn_phase = _scores_softmax(
        m_i, l_i, q_smem, k_smem, k_full, turn, kd_ptr, vd_ptr, slot, phase, start_n, seqlen_k,
        k_block, v_block, row_scale0, my_turn, other_turn, turn_phase, MASKED, PINGPONG, ROWS,
        BLOCK_N, P_SHIFT, NW)
    p8 = _p_operand(_pack_p(p, HEAD_DIM, NW), HEAD_DIM, NW)

    mbarrier.wait(v_full.index(slot), phase)
    if PINGPONG:
        mbarrier.wait(turn.index(my_turn), turn_phase)
    pv = warpgroup_mma(p8, v_s.permute((1, 0)),
                       gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout), use_acc=False,
                       is_async=True)
    if PINGPONG:
        mbarrier.arrive(turn.index(other_turn))
        turn_phase ^= 1
    factor = gl.convert_layout(alpha * (vs_prev / vs), gl.SliceLayout(1, o_layout))
    pv, _ = warpgroup_mma_wait(num_outstanding=0, deps=[pv, v_s])
    # both operands of this tile are consumed: hand the slot back to the producer
    mbarrier.arrive(kv_empty.index(slot))
    acc = acc * gl.expand_dims(factor, 1) + pv
    return acc, m_new, l_i, vs, turn_phase


@gluon.jit
def _pv_issue(p8, v_s, PART: gl.constexpr, ROWS: gl.constexpr, PART_D: gl.constexpr,
              NW: gl.constexpr):
    """Issue P @ V[:, PART * PART_D : (PART + 1) * PART_D] into a fresh accumulator (two-level
    accumulation); returns the async product and the V slice it reads."""
    h_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, PART_D, 32])
    v_part = v_s.slice(PART * PART_D, PART_D, dim=0)
    pv = warpgroup_mma(p8, v_part.permute((1, 0)), gl.zeros([ROWS, PART_D], gl.float32, h_layout),
                       use_acc=False, is_async=True)
    return pv, v_part


@gluon.jit
def _add_pv(acc, factor, pv, v_part, OUTSTANDING: gl.constexpr):
    """acc * factor + the fresh accumulator pv of _pv_issue, once at most OUTSTANDING wgmmas
    are still in flight (pv's among the done ones)."""
    pv, _ = warpgroup_mma_wait(num_outstanding=OUTSTANDING, deps=[pv, v_part])
    return acc * factor + gl.convert_layout(pv, acc.type.layout)


@gluon.jit
def _pv_part(acc, p8, v_s, factor, PART: gl.constexpr, ROWS: gl.constexpr,
             PART_D: gl.constexpr, NW: gl.constexpr):
    """acc * factor + P @ V's PART-th quarter (_pv_issue), waited for here."""
    pv, v_part = _pv_issue(p8, v_s, PART, ROWS, PART_D, NW)
    return _add_pv(acc, factor, pv, v_part, 0)


@gluon.jit
def _split_cols(x):
    """(R, C) -> its column halves (R, C / 2): the top column bit is a register bit of the
    wgmma accumulator layout, so this moves no data."""
    R: gl.constexpr = x.shape[0]
    C: gl.constexpr = x.shape[1]
    return gl.split(gl.permute(gl.reshape(x, [R, 2, C // 2]), (0, 2, 1)))


@gluon.jit
def _join_cols(lo, hi, layout: gl.constexpr):
    """_split_cols's inverse, in `layout`."""
    R: gl.constexpr = lo.shape[0]
    C: gl.constexpr = lo.shape[1]
    x = gl.reshape(gl.permute(gl.join(lo, hi), (0, 2, 1)), [R, 2 * C])
    return gl.convert_layout(x, layout)


@gluon.jit
def _pv_quarter_in_eighths(acc, p8, v_s, factor, Q: gl.constexpr, ROWS: gl.constexpr,
                           PART_D: gl.constexpr, NW: gl.constexpr):
    """acc * factor + P @ V's Q-th quarter as two eighth-width GEMMs, each fresh eighth added
    into its half of acc as soon as it is ready (the second runs under the first's adds): one
    16-register fresh accumulator live at a time instead of two 32-register quarters. The
    same FMAs on the same values as _pv_part (same bits)."""
    h_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, PART_D, 32])
    E_D: gl.constexpr = PART_D // 2
    lo, hi = _split_cols(acc)
    f_lo, f_hi = _split_cols(gl.broadcast(factor, acc)[0])
    pa, va = _pv_issue(p8, v_s, 2 * Q, ROWS, E_D, NW)
    pb, vb = _pv_issue(p8, v_s, 2 * Q + 1, ROWS, E_D, NW)
    lo = _add_pv(lo, f_lo, pa, va, 1)
    hi = _add_pv(hi, f_hi, pb, vb, 0)
    return _join_cols(lo, hi, h_layout)


@gluon.jit
def _tile_split(acc0, acc1, acc2, acc3, m_i, l_i, vs_prev, q_s, k_smem, v_smem, k_full, v_full,
                kv_empty, turn, kd_ptr, vd_ptr, j, start_n, seqlen_k, k_block, v_block,
                row_scale0, my_turn, other_turn, turn_phase, MASKED: gl.constexpr,
                PINGPONG: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
                HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, P_SHIFT: gl.constexpr,
                NW: gl.constexpr, PV_PIPE: gl.constexpr = False, row_lo=0, causal_off=0,
                CAUSAL: gl.constexpr = 0, wg_end=0, TRACE_PTR=0, TRACE: gl.constexpr = False,
                Q_REGS: gl.constexpr = False, TREE_MAX: gl.constexpr = False,
                PV_EIGHTHS: gl.constexpr = False, g0=0):
    """_tile for head dims above 128: acc in four head-dim quarters and P @ V as four GEMMs,
    each into a fresh quarter-width accumulator added into its quarter (triton_fwd.py's
    SPLIT). At hdim 256 a fresh full-width accumulator beside acc spilled 3-7 KB; halves still
    spilled 1.5 KB (three 64-register accumulator blocks + S). PV_PIPE: quarter k + 1 is
    issued before quarter k is waited for and added (two fresh quarters live), so the tensor
    cores do not idle during the adds; the same operations in the same order (same bits).
    CAUSAL (masked tiles): the causal mask of the rows from row_lo; a tile from wg_end (this
    warpgroup's own key end) on changes nothing, as _ovl_step's (triton_fwd.py's 64-row blocks
    skip it).
    TRACE (non-persistent launches; benchmarks/experiments/gluon_trace_tiles.py): clock stamps
    of tile j in this warpgroup's slot j: 0 entry, 1 S issued (its turn held), 2 S ready,
    3 softmax and P done, 4 P @ V turn held. Offline these cost no spills in the loop; stamps
    among the P @ V parts or at the tile's end made ptxas spill 0.3-2.5 KB.
    g0: the ring position of the work item's tile 0 (persistent CTAs; 0 otherwise)."""
    PART_D: gl.constexpr = HEAD_DIM // 4
    h_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, PART_D, 32])
    slot = (g0 + j) % STAGES
    phase = ((g0 + j) // STAGES) & 1
    v_s = v_smem.index(slot)
    _stamp_at(TRACE_PTR, my_turn, j, 0, TRACE)
    p, m_new, l_i, alpha, vs, turn_phase = _scores_softmax(
        m_i, l_i, q_s, k_smem, k_full, turn, kd_ptr, vd_ptr, slot, phase, start_n, seqlen_k,
        k_block, v_block, row_scale0, my_turn, other_turn, turn_phase, MASKED, PINGPONG, ROWS,
        BLOCK_N, P_SHIFT, NW, row_lo, causal_off, CAUSAL, TRACE_PTR, my_turn, j, TRACE, Q_REGS,
        TREE_MAX)
    v_ratio = vs_prev / vs
    if MASKED and CAUSAL != 0:
        # a tile past this warpgroup's rows (alpha = 1) must leave acc as it is: its V-descale
        # ratio exactly 1 (div.full.f32 is approximate: vs / vs is not always 1)
        live = start_n < wg_end
        vs = gl.where(live, vs, vs_prev)
        v_ratio = gl.where(live, v_ratio, 1.0)
    p8 = _p_operand(_pack_p(p, PART_D, NW), PART_D, NW)
    factor = gl.expand_dims(gl.convert_layout(alpha * v_ratio, gl.SliceLayout(1, h_layout)), 1)
    _stamp_at(TRACE_PTR, my_turn, j, 3, TRACE)

    mbarrier.wait(v_full.index(slot), phase)
    if PINGPONG:
        mbarrier.wait(turn.index(my_turn), turn_phase)
    _stamp_at(TRACE_PTR, my_turn, j, 4, TRACE)
    if PV_EIGHTHS:
        acc0 = _pv_quarter_in_eighths(acc0, p8, v_s, factor, 0, ROWS, PART_D, NW)
        acc1 = _pv_quarter_in_eighths(acc1, p8, v_s, factor, 1, ROWS, PART_D, NW)
        acc2 = _pv_quarter_in_eighths(acc2, p8, v_s, factor, 2, ROWS, PART_D, NW)
        if PINGPONG:    # the other warpgroup's S GEMM may start under the last quarter
            mbarrier.arrive(turn.index(other_turn))
            turn_phase ^= 1
        acc3 = _pv_quarter_in_eighths(acc3, p8, v_s, factor, 3, ROWS, PART_D, NW)
    elif PV_PIPE:
        pv0, v0 = _pv_issue(p8, v_s, 0, ROWS, PART_D, NW)
        pv1, v1 = _pv_issue(p8, v_s, 1, ROWS, PART_D, NW)
        acc0 = _add_pv(acc0, factor, pv0, v0, 1)
        pv2, v2 = _pv_issue(p8, v_s, 2, ROWS, PART_D, NW)
        acc1 = _add_pv(acc1, factor, pv1, v1, 1)
        pv3, v3 = _pv_issue(p8, v_s, 3, ROWS, PART_D, NW)
        if PINGPONG:    # all four issued: the other warpgroup's S GEMM queues behind them
            mbarrier.arrive(turn.index(other_turn))
            turn_phase ^= 1
        acc2 = _add_pv(acc2, factor, pv2, v2, 1)
        acc3 = _add_pv(acc3, factor, pv3, v3, 0)
    else:
        acc0 = _pv_part(acc0, p8, v_s, factor, 0, ROWS, PART_D, NW)
        acc1 = _pv_part(acc1, p8, v_s, factor, 1, ROWS, PART_D, NW)
        acc2 = _pv_part(acc2, p8, v_s, factor, 2, ROWS, PART_D, NW)
        if PINGPONG:    # the other warpgroup's S GEMM may start under the last part
            mbarrier.arrive(turn.index(other_turn))
            turn_phase ^= 1
        acc3 = _pv_part(acc3, p8, v_s, factor, 3, ROWS, PART_D, NW)
    mbarrier.arrive(kv_empty.index(slot))
    return acc0, acc1, acc2, acc3, m_new, l_i, vs, turn_phase


@gluon.jit
def _consumer_init(QD, KD, VD, row0, start_m, off_b, off_h, off_kvh, stride_qdz, stride_qdh,
                   stride_kdz, stride_kdh, stride_vdz, stride_vdh, seqlen_q, q_block, qk_scale,
                   ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                   NW: gl.constexpr, q_off=0):
    """A consumer's rows: their Q descale times the softmax scale, the K / V descale row
    pointers of this head, and the online-softmax state (m = -inf, l = 0, acc = 0).
    q_off (varlen): the packed row of the sequence's first query, where Q's descale rows
    count from (start_m and seqlen_q are the sequence's)."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    rows = start_m + row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, s_layout))
    row_ok = rows < seqlen_q
    qd = gl.load(QD + off_b * stride_qdz + off_h * stride_qdh + (q_off + rows) // q_block,
                 mask=row_ok, other=1.0)
    row_scale0 = qd * qk_scale
    kd_ptr = KD + off_b * stride_kdz + off_kvh * stride_kdh
    vd_ptr = VD + off_b * stride_vdz + off_kvh * stride_vdh
    m_i = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([ROWS], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    return row_scale0, kd_ptr, vd_ptr, m_i, l_i, acc


@gluon.jit
def _tma_store_tile(tile, o_desc, o_smem, coord, PENDING: gl.constexpr = 0):
    """tile (registers) -> o_smem -> one asynchronous TMA store at coord, once the previous
    store from o_smem has left it (PENDING: stores from other buffers that may still be
    reading theirs, issued after the one that last used o_smem)."""
    tma.store_wait(PENDING)
    o_smem.reshape(tile.shape).store(tile)
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, coord, o_smem)


@gluon.jit
def _store_rows(out, O, row0, start_m, off_b, off_h, stride_oz, stride_oh, stride_om, stride_od,
                seqlen_q, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, NW: gl.constexpr, q_off,
                OUT_COLS: gl.constexpr = 0):
    """Plain stores of a consumer's output rows (_consumer_store's), those below seqlen_q;
    OUT_COLS: only the first OUT_COLS columns (a head dim below 128 on the 128 kernel: out has
    no more; 0: all HEAD_DIM)."""
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    orow = start_m + row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
    ocol = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = (O + off_b.to(gl.int64) * stride_oz + off_h.to(gl.int64) * stride_oh
              + gl.expand_dims((q_off + orow).to(gl.int64) * stride_om, 1)
              + gl.expand_dims(ocol * stride_od, 0))
    if OUT_COLS == 0:
        gl.store(o_ptrs, out, mask=gl.expand_dims(orow < seqlen_q, 1))
    else:
        gl.store(o_ptrs, out, mask=gl.expand_dims(orow < seqlen_q, 1)
                 & gl.expand_dims(ocol < OUT_COLS, 0))


@gluon.jit
def _consumer_store(acc, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                    stride_om, stride_od, seqlen_q, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                    NW: gl.constexpr, m_i=0, LSE=0, stride_lz=0, stride_lh=0, stride_lm=0,
                    RETURN_LSE: gl.constexpr = False, P_SHIFT: gl.constexpr = 8, o_desc=0,
                    o_smem=0, TMA_STORE: gl.constexpr = 0, O_COL: gl.constexpr = 0,
                    PENDING: gl.constexpr = 0, q_off=0, VARLEN: gl.constexpr = False,
                    OUT_COLS: gl.constexpr = 0):
    """out = acc * vs / l (0 for rows that saw no key), stored for the consumer's rows; with
    RETURN_LSE also lse = (m + log2 l - P_SHIFT) * ln 2 (-inf without keys), as triton_fwd.py.
    TMA_STORE: out goes through o_smem (this warpgroup's (1, 1, ROWS, HEAD_DIM) tile) and one
    asynchronous TMA store of o_desc ((B, H, Sq, D) view of O: rows past Sq are clipped), so
    the warps go on while it drains; the previous item's store has left o_smem first.
    O_COL, PENDING (TMA_STORE 1): the tile's first column in o_desc (O already points at it,
    for plain stores) and _tma_store_tile's PENDING. q_off (varlen): the packed row of the
    sequence's first query; rows from seqlen_q on (the sequence's) are not stored. VARLEN with
    TMA_STORE 1: a warpgroup's rows all in the sequence go through the TMA store, the others
    (the sequence's last rows) through plain masked stores (a TMA store would write into the
    next sequence's rows, which another CTA writes). OUT_COLS: _store_rows's (the TMA store
    clips the columns past the tensor's itself)."""
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    no_key = l_i == 0.0
    l_safe = gl.where(no_key, 1.0, l_i)
    out_scale = gl.where(no_key, 0.0, vs / l_safe)
    out_scale = gl.convert_layout(out_scale, gl.SliceLayout(1, o_layout))
    out = (acc * gl.expand_dims(out_scale, 1)).to(O.dtype.element_ty)
    if TMA_STORE == 2:
        # half the shared memory: two (ROWS, HEAD_DIM / 2) stores through one buffer
        HD2: gl.constexpr = HEAD_DIM // 2
        o_lo, o_hi = gl.split(gl.permute(gl.reshape(out, [ROWS, 2, HD2]), (0, 2, 1)))
        _tma_store_tile(o_lo, o_desc, o_smem, [off_b, off_h, start_m + row0, 0])
        _tma_store_tile(o_hi, o_desc, o_smem, [off_b, off_h, start_m + row0, HD2])
    elif TMA_STORE and VARLEN:
        if start_m + row0 + ROWS <= seqlen_q:
            _tma_store_tile(out, o_desc, o_smem, [off_b, off_h, q_off + start_m + row0, O_COL],
                            PENDING)
        else:
            _store_rows(out, O, row0, start_m, off_b, off_h, stride_oz, stride_oh, stride_om,
                        stride_od, seqlen_q, ROWS, HEAD_DIM, NW, q_off, OUT_COLS)
    elif TMA_STORE:
        _tma_store_tile(out, o_desc, o_smem, [off_b, off_h, start_m + row0, O_COL], PENDING)
    else:
        _store_rows(out, O, row0, start_m, off_b, off_h, stride_oz, stride_oh, stride_om,
                    stride_od, seqlen_q, ROWS, HEAD_DIM, NW, q_off, OUT_COLS)
    if RETURN_LSE:
        lse2 = m_i + gl.log2(l_safe) - P_SHIFT
        lse = gl.where(no_key, float("-inf"), lse2 * 0.6931471805599453)  # ln 2
        lrow = start_m + row0 + gl.arange(0, ROWS, layout=l_i.type.layout)
        l_ptrs = (LSE + off_b.to(gl.int64) * stride_lz + off_h.to(gl.int64) * stride_lh
                  + (q_off + lrow).to(gl.int64) * stride_lm)
        gl.store(l_ptrs, lse, mask=lrow < seqlen_q)


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, turn, k_desc, v_desc,
              QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh, kv_row0, vt_row0,
              stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
              stride_oz, stride_oh, stride_om, stride_od,
              seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
              ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr,
              PINGPONG: gl.constexpr, INLINE_LOADS: gl.constexpr):
    """Rows [start_m + row0, start_m + row0 + ROWS) of one (batch, head): the whole KV loop."""
    row_scale0, kd_ptr, vd_ptr, m_i, l_i, acc = _consumer_init(
        QD, KD, VD, row0, start_m, off_b, off_h, off_kvh, stride_qdz, stride_qdh, stride_kdz,
        stride_kdh, stride_vdz, stride_vdh, seqlen_q, q_block, qk_scale, ROWS, BLOCK_N, HEAD_DIM,
        NW)
    vs = gl.to_tensor(1.0)  # as triton_fwd.py: acc is 0 and alpha 0 on the first tile
    other_turn = 1 - my_turn
    turn_phase = 0

    q_s = q_smem.slice(row0, ROWS, dim=0)
    mbarrier.wait(q_bar, 0)

    n_tiles = gl.cdiv(seqlen_k, BLOCK_N)
    n_full = seqlen_k // BLOCK_N
    if INLINE_LOADS:
        for t in gl.static_range(STAGES - 1):
            if t < n_tiles:
                _issue_kv(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_row0, vt_row0,
                          t * BLOCK_N, t)
    for j in range(n_full):
        if INLINE_LOADS:
            # the slot of tile j + STAGES - 1 held tile j - 1, finished by this same partition
            nxt = j + STAGES - 1
            if nxt < n_tiles:
                _issue_kv(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_row0, vt_row0,
                          nxt * BLOCK_N, nxt % STAGES)
        acc, m_i, l_i, vs, turn_phase = _tile(
            acc, m_i, l_i, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty, turn, kd_ptr,
            vd_ptr, j, j * BLOCK_N, seqlen_k, k_block, v_block, row_scale0, my_turn, other_turn,
            turn_phase, False, PINGPONG, ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW)
    if n_full < n_tiles:
        # the tail tile (columns >= seqlen_k masked); every earlier load was issued already
        acc, m_i, l_i, vs, turn_phase = _tile(
            acc, m_i, l_i, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty, turn, kd_ptr,
            vd_ptr, n_full, n_full * BLOCK_N, seqlen_k, k_block, v_block, row_scale0, my_turn,
            other_turn, turn_phase, True, PINGPONG, ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW)

    _consumer_store(acc, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                    stride_om, stride_od, seqlen_q, ROWS, HEAD_DIM, NW)


@gluon.jit
def _qk_issue(q_s, k_s, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    """Issue S = Q K^T (async) for q_s, a tuple of Q's FP8 terms: with two (Recipe.q_terms ==
    2, the same descale) the second wgmma accumulates into the first one's registers, so S =
    Q_hi K^T + Q_lo K^T costs one more MMA and no registers."""
    qk = warpgroup_mma(q_s[0], k_s.permute((1, 0)),
                       gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout), use_acc=False,
                       is_async=True)
    if len(q_s) == 2:
        qk = warpgroup_mma(q_s[1], k_s.permute((1, 0)), qk, is_async=True)
    return qk


@gluon.jit
def _ovl_step(acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
              v_empty, turn, kd_ptr, vd_ptr, j, seqlen_k, k_block, v_block, row_scale0, my_turn,
              other_turn, turn_phase, MASKED: gl.constexpr, PINGPONG: gl.constexpr,
              ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr, row_lo=0,
              causal_off=0, CAUSAL: gl.constexpr = 0, g0=0, seqlen_q=0):
    """Overlapped steady state (FA3 section 3.2): issue S_j = Q K_j^T and P_{j-1} @ V_{j-1}
    back to back (one ping-pong turn for both), do the softmax of S_j while P_{j-1} @ V_{j-1}
    still runs, then fold that P @ V tile into acc with the factor of tile j-1.

    p (tile j-1's P as _pack_p's int32 words) crosses the loop's back edge; the new P is
    packed at the end of the step, after the P @ V wait: packing it into the registers the
    in-flight wgmma reads made ptxas wait for that wgmma before the softmax (SASS, session 3).
    Both wgmma groups are waited for inside the step: an accumulator in flight across the back
    edge (a rotated loop) made ptxas serialise every wgmma ("insufficient register resources").
    g0: the ring position of the CTA's tile 0 (persistent CTAs: the tiles of earlier work).
    seqlen_q (masked causal steps): for the end of this warpgroup's own keys; a tile from there
    on is past every one of its rows' diagonals (p = 0, alpha = 1): acc keeps its V-descale
    units and its factor is exactly 1 (not vs / vs, an approximate division that is sometimes
    1 - 1 ulp), so the step changes nothing, as triton_fwd.py's 64-row blocks, which skip such
    tiles."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    g = g0 + j
    slot = g % STAGES
    pslot = (g - 1) % STAGES
    k_s = k_smem.index(slot)
    v_s = v_smem.index(pslot)
    mbarrier.wait(k_full.index(slot), (g // STAGES) & 1)
    mbarrier.wait(v_full.index(pslot), ((g - 1) // STAGES) & 1)
    p8 = _p_operand(p, HEAD_DIM, NW)
    if PINGPONG:
        mbarrier.wait(turn.index(my_turn), turn_phase)
    qk = _qk_issue(q_s, k_s, ROWS, BLOCK_N, s_layout)
    pv = warpgroup_mma(p8, v_s.permute((1, 0)),
                       gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout), use_acc=False,
                       is_async=True)
    if PINGPONG:
        mbarrier.arrive(turn.index(other_turn))
        turn_phase ^= 1
    start_n = j * BLOCK_N
    row_scale = row_scale0 * _tile_descale(kd_ptr, start_n, k_block)
    vs_new = _tile_descale(vd_ptr, start_n, v_block)
    if MASKED and CAUSAL != 0:
        live = start_n < _wg_key_end(row_lo, ROWS, seqlen_q, seqlen_k, causal_off)
        vs_new = gl.where(live, vs_new, vs)
    # wgmma groups complete in order: one outstanding = S_j is ready, P @ V may still run
    qk, _, _ = warpgroup_mma_wait(num_outstanding=1, deps=[qk, q_s[0], k_s])
    mbarrier.arrive(kv_empty.index(slot))
    p, m_i, l_i, alpha = _softmax(qk, m_i, l_i, row_scale, start_n, seqlen_k, MASKED,
                                  BLOCK_N, P_SHIFT, NW, row_lo, causal_off, CAUSAL)
    v_ratio = vs / vs_new
    if MASKED and CAUSAL != 0:
        # past this warpgroup's rows (alpha = 1): V-descale ratio exactly 1 (div.full.f32 is
        # approximate: vs / vs is not always 1)
        v_ratio = gl.where(live, v_ratio, 1.0)
    factor_new = gl.convert_layout(alpha * v_ratio, gl.SliceLayout(1, o_layout))
    # (p8 cannot be a dep: 8-bit registers are rejected by the wait's lowering on 3.6)
    pv, _ = warpgroup_mma_wait(num_outstanding=0, deps=[pv, v_s])
    mbarrier.arrive(v_empty.index(pslot))
    acc = acc * gl.expand_dims(factor, 1) + pv
    return acc, m_i, l_i, _pack_p(p, HEAD_DIM, NW), factor_new, vs_new, turn_phase


@gluon.jit
def _store_quarter(acc, QUARTER: gl.constexpr, l_i, vs, O, row0, start_m, off_b, off_h,
                   stride_oz, stride_oh, stride_om, stride_od, seqlen_q, my_turn,
                   ROWS: gl.constexpr, PART_D: gl.constexpr, NW: gl.constexpr, o_desc, o_smem,
                   TMA_STORE: gl.constexpr):
    """Output columns [QUARTER * PART_D, + PART_D) of _consumer_split's rows (acc: that P @ V
    quarter): plain stores, or with TMA_STORE 1 / 2 one TMA store through this warpgroup's one
    shared tile / two, alternating, so the next quarter fills one while the last is read
    (o_smem: 2 * TMA_STORE (1, 1, ROWS, PART_D) tiles, warpgroup my_turn's from
    my_turn * TMA_STORE)."""
    if TMA_STORE:
        _consumer_store(acc, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                        stride_om, stride_od, seqlen_q, ROWS, PART_D, NW, o_desc=o_desc,
                        o_smem=o_smem.index(my_turn * TMA_STORE + QUARTER % TMA_STORE),
                        TMA_STORE=1, O_COL=QUARTER * PART_D, PENDING=TMA_STORE - 1)
    else:
        _consumer_store(acc, l_i, vs, O + QUARTER * PART_D * stride_od, row0, start_m, off_b,
                        off_h, stride_oz, stride_oh, stride_om, stride_od, seqlen_q, ROWS,
                        PART_D, NW)


@gluon.jit
def _consumer_split(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, turn,
                    QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh,
                    stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                    stride_oz, stride_oh, stride_om, stride_od,
                    seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                    ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                    STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr,
                    PINGPONG: gl.constexpr, SPLIT: gl.constexpr = 0, kv_end=0, full_end=0,
                    causal_off=0, CAUSAL: gl.constexpr = 0, TRACE_PTR=0,
                    TRACE: gl.constexpr = False, o_desc=0, o_smem=0,
                    TMA_STORE: gl.constexpr = 0, g0=0, turn_phase=0, q_phase=0, q_empty=0,
                    PERSISTENT: gl.constexpr = False, q_all=0, qb=0,
                    Q_BUFS: gl.constexpr = 1):
    """_consumer (loads by the producer partition) for head dims above 128, via _tile_split.
    SPLIT (kernel_config's pv_pipe, q_regs, tree_max, pv_eighths as bits 0-3): _tile_split's
    PV_PIPE and PV_EIGHTHS;
    Q_REGS: Q loaded once into registers as the A operand of every Q K^T (the 64-key S GEMM
    then reads only K from shared memory: it read 128 B a clock with both, the SM's whole
    shared-memory bandwidth); TREE_MAX: _softmax's. All four give the same bits.
    CAUSAL: the CTA's tiles are [0, kv_end), those below full_end unmasked (_ovl_work's).
    TRACE: _tile_split's clock stamps, one slot per tile, and the CTA's: 5 entry, 6 Q ready
    (tile 0's slot), 5 loop end (tile 1's), 7 output stored (tile 0's); %globaltimer at entry
    and once stored (tile 1's 6 / 7) and the SM's index (tile 2's 5), for the gaps between
    the CTAs an SM runs (gluon_trace_tiles.analyse_gaps).
    TMA_STORE: _store_quarter's (o_smem: both warpgroups' shared output tiles).
    PERSISTENT (_consumer_split_persistent, once per work item): g0 is the ring position of
    the item's tile 0, turn_phase the ping-pong phase so far, q_phase the parity of the item's
    Q load; the warpgroup arrives on q_empty once it is done with Q (in registers: once
    loaded; else after the item's last Q K^T), and leaves the item's TMA stores draining under
    the next item's tiles (_store_quarter waits for a shared tile before reusing it). The
    trace stamps then hold each CTA's last item. Returns turn_phase.
    Q_BUFS == 2 (persistent, q_all[qb] is q_smem's buffer), causal: the masked tiles read Q
    through a view of q_all whose index ptxas cannot prove equal to the unmasked loop's
    (_opaque_zero), so it cannot reuse that loop's preheader descriptors for them. It did
    (session 24: a ptxas miscompile), and an item without an unmasked tile, which skips that
    preheader, read the previous item's Q buffer or an undefined address. Non-causal, only a
    call with fewer keys than a tile has such items: _launch_plan refuses those (the view
    there would change VARIANT_D256_SHORT's code for calls it never sees), and causal ones
    with fewer keys than a tile (not GPU-tested)."""
    PV_PIPE: gl.constexpr = (SPLIT & 1) != 0
    Q_REGS: gl.constexpr = (SPLIT & 2) != 0
    TREE_MAX: gl.constexpr = (SPLIT & 4) != 0
    PV_EIGHTHS: gl.constexpr = (SPLIT & 8) != 0
    PART_D: gl.constexpr = HEAD_DIM // 4
    _stamp_at(TRACE_PTR, my_turn, 0, 5, TRACE)     # the CTA's stamps: tile 0's slots 5-7, 1's 5
    _stamp_global_at(TRACE_PTR, my_turn, 1, 6, TRACE)              # entry, GPU-wide ns
    _stamp_global_at(TRACE_PTR, my_turn, 2, 5, TRACE, SMID=True)   # which SM
    row_scale0, kd_ptr, vd_ptr, m_i, l_i, acc0 = _consumer_init(
        QD, KD, VD, row0, start_m, off_b, off_h, off_kvh, stride_qdz, stride_qdh, stride_kdz,
        stride_kdh, stride_vdz, stride_vdh, seqlen_q, q_block, qk_scale, ROWS, BLOCK_N, PART_D,
        NW)
    acc1 = gl.zeros_like(acc0)
    acc2 = gl.zeros_like(acc0)
    acc3 = gl.zeros_like(acc0)
    vs = gl.to_tensor(1.0)  # as triton_fwd.py: acc is 0 and alpha 0 on the first tile
    other_turn = 1 - my_turn
    # a tensor from here on: the tile loops carry it (a constexpr default would change type)
    turn_phase = gl.to_tensor(turn_phase)
    q_s = q_smem.slice(row0, ROWS, dim=0)
    mbarrier.wait(q_bar, q_phase)
    if Q_REGS:
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[NW, 1], instr_shape=[16, BLOCK_N, 32])
        q_s = q_s.load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=4))
        if PERSISTENT:
            mbarrier.arrive(q_empty)    # Q is in registers: its buffer may take the next one
    _stamp_at(TRACE_PTR, my_turn, 0, 6, TRACE)
    n_tiles, n_full = _tile_counts(seqlen_k, kv_end, full_end, BLOCK_N, CAUSAL)
    for j in range(n_full):
        acc0, acc1, acc2, acc3, m_i, l_i, vs, turn_phase = _tile_split(
            acc0, acc1, acc2, acc3, m_i, l_i, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
            turn, kd_ptr, vd_ptr, j, j * BLOCK_N, seqlen_k, k_block, v_block, row_scale0,
            my_turn, other_turn, turn_phase, False, PINGPONG, ROWS, BLOCK_N, HEAD_DIM, STAGES,
            P_SHIFT, NW, PV_PIPE, TRACE_PTR=TRACE_PTR, TRACE=TRACE, Q_REGS=Q_REGS,
            TREE_MAX=TREE_MAX, PV_EIGHTHS=PV_EIGHTHS, g0=g0)
    if CAUSAL != 0:
        # the diagonal and the tail: at most three 64-key tiles (two 128-key ones) for a
        # 128-row block (kv_end - full_end < 128), written out (a second loop made ptxas spill
        # in the first)
        row_lo = start_m + row0
        wg_end = _wg_key_end(row_lo, ROWS, seqlen_q, seqlen_k, causal_off)
        q_m = q_s
        if Q_BUFS == 2 and not Q_REGS:
            q_m = q_all.index(qb + _opaque_zero(seqlen_k)).slice(row0, ROWS, dim=0)
        for t in gl.static_range(3):
            if n_full + t < n_tiles:
                acc0, acc1, acc2, acc3, m_i, l_i, vs, turn_phase = _tile_split(
                    acc0, acc1, acc2, acc3, m_i, l_i, vs, q_m, k_smem, v_smem, k_full, v_full,
                    kv_empty, turn, kd_ptr, vd_ptr, n_full + t, (n_full + t) * BLOCK_N,
                    seqlen_k, k_block, v_block, row_scale0, my_turn, other_turn, turn_phase,
                    True, PINGPONG, ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW, PV_PIPE,
                    row_lo, causal_off, CAUSAL, wg_end, TRACE_PTR, TRACE, Q_REGS, TREE_MAX,
                    PV_EIGHTHS, g0)
    elif n_full < n_tiles:
        acc0, acc1, acc2, acc3, m_i, l_i, vs, turn_phase = _tile_split(
            acc0, acc1, acc2, acc3, m_i, l_i, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
            turn, kd_ptr, vd_ptr, n_full, n_full * BLOCK_N, seqlen_k, k_block, v_block,
            row_scale0, my_turn, other_turn, turn_phase, True, PINGPONG, ROWS, BLOCK_N,
            HEAD_DIM, STAGES, P_SHIFT, NW, PV_PIPE, TRACE_PTR=TRACE_PTR, TRACE=TRACE,
            Q_REGS=Q_REGS, TREE_MAX=TREE_MAX, PV_EIGHTHS=PV_EIGHTHS, g0=g0)
    if PERSISTENT and not Q_REGS:
        mbarrier.arrive(q_empty)        # every Q K^T of this item has completed
    _stamp_at(TRACE_PTR, my_turn, 1, 5, TRACE)
    _store_quarter(acc0, 0, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                   stride_om, stride_od, seqlen_q, my_turn, ROWS, PART_D, NW, o_desc, o_smem,
                   TMA_STORE)
    _store_quarter(acc1, 1, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                   stride_om, stride_od, seqlen_q, my_turn, ROWS, PART_D, NW, o_desc, o_smem,
                   TMA_STORE)
    _store_quarter(acc2, 2, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                   stride_om, stride_od, seqlen_q, my_turn, ROWS, PART_D, NW, o_desc, o_smem,
                   TMA_STORE)
    _store_quarter(acc3, 3, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                   stride_om, stride_od, seqlen_q, my_turn, ROWS, PART_D, NW, o_desc, o_smem,
                   TMA_STORE)
    if TMA_STORE and not PERSISTENT:
        tma.store_wait(0)       # o_smem must outlive the last store
    _stamp_at(TRACE_PTR, my_turn, 0, 7, TRACE)
    _stamp_global_at(TRACE_PTR, my_turn, 1, 7, TRACE)              # stored, GPU-wide ns
    return turn_phase


@gluon.jit
def _opaque_zero(seqlen_k):
    """0 for every call (seqlen_k >= 0), as a value the compiler cannot fold."""
    return (seqlen_k < 0).to(gl.int32)


@gluon.jit
def _consumer_any(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, turn, k_desc, v_desc,
                  QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh, kv_row0, vt_row0,
                  stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                  stride_oz, stride_oh, stride_om, stride_od,
                  seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                  ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                  STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr,
                  PINGPONG: gl.constexpr, INLINE_LOADS: gl.constexpr,
                  SPLIT: gl.constexpr = 0, kv_end=0, full_end=0, causal_off=0,
                  CAUSAL: gl.constexpr = 0, TRACE_PTR=0, TRACE: gl.constexpr = False,
                  o_desc=0, o_smem=0, TMA_STORE: gl.constexpr = 0):
    """_consumer's arguments; head dims above 128 go to _consumer_split (producer loads only;
    SPLIT: its options; CAUSAL: its causal mask, TRACE its clock stamps and TMA_STORE its
    output stores, head dims above 128 only)."""
    if HEAD_DIM > 128:
        _consumer_split(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, turn,
                        QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh,
                        stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                        stride_oz, stride_oh, stride_om, stride_od,
                        seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                        ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW, PINGPONG, SPLIT,
                        kv_end, full_end, causal_off, CAUSAL, TRACE_PTR, TRACE, o_desc, o_smem,
                        TMA_STORE)
    else:
        _consumer(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, turn, k_desc, v_desc,
                  QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh, kv_row0, vt_row0,
                  stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                  stride_oz, stride_oh, stride_om, stride_od,
                  seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                  ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW, PINGPONG, INLINE_LOADS)


@gluon.jit
def _consumer_ovl(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, v_empty, turn, QD, KD,
                  VD, O, row0, start_m, off_b, off_h, off_kvh,
                  stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                  stride_oz, stride_oh, stride_om, stride_od,
                  seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                  ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                  STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr,
                  PINGPONG: gl.constexpr, UNROLL2: gl.constexpr, kv_end=0, full_end=0,
                  causal_off=0, CAUSAL: gl.constexpr = 0, LSE=0, stride_lz=0, stride_lh=0,
                  stride_lm=0, RETURN_LSE: gl.constexpr = False, Q_TERMS: gl.constexpr = 1,
                  MASKED_MAX: gl.constexpr = 2, WG_BOUNDS: gl.constexpr = False, o_desc=0,
                  o_smem=0, TMA_STORE: gl.constexpr = 0):
    """One CTA's rows (not persistent): _ovl_work once, from ring position 0. A wrapper
    rather than _ovl_work listed in warp_specialize directly: that failed to compile on Triton
    3.6 (offline, 2026-11-30; _ovl_work returns turn_phase and takes keyword defaults).
    TMA_STORE (three consumers): _consumer_store's, through this warpgroup's o_smem."""
    _ovl_work(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, v_empty, turn, QD, KD,
              VD, O, row0, start_m, off_b, off_h, off_kvh,
              stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
              stride_oz, stride_oh, stride_om, stride_od,
              seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
              ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW, PINGPONG, UNROLL2, kv_end, full_end,
              causal_off, CAUSAL, LSE, stride_lz, stride_lh, stride_lm, RETURN_LSE, Q_TERMS,
              o_desc=o_desc, o_smem=o_smem, TMA_STORE=TMA_STORE, MASKED_MAX=MASKED_MAX,
              WG_BOUNDS=WG_BOUNDS)
    if TMA_STORE:
        tma.store_wait(0)       # o_smem must outlive the store


@gluon.jit
def _ovl_work(q_smem, k_smem, v_smem, q_bar, k_full, v_full, kv_empty, v_empty, turn, QD, KD,
              VD, O, row0, start_m, off_b, off_h, off_kvh,
              stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
              stride_oz, stride_oh, stride_om, stride_od,
              seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
              ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr,
              PINGPONG: gl.constexpr, UNROLL2: gl.constexpr, kv_end=0, full_end=0,
              causal_off=0, CAUSAL: gl.constexpr = 0, LSE=0, stride_lz=0, stride_lh=0,
              stride_lm=0, RETURN_LSE: gl.constexpr = False, Q_TERMS: gl.constexpr = 1,
              g0=0, turn_phase=0, q_phase=0, q_empty=0, ARRIVE_Q_EMPTY: gl.constexpr = False,
              tptr=0, TRACE: gl.constexpr = False, o_desc=0, o_smem=0,
              TMA_STORE: gl.constexpr = 0, MASKED_MAX: gl.constexpr = 2,
              WG_BOUNDS: gl.constexpr = False, q_base=0, q_off=0,
              VARLEN: gl.constexpr = False, OUT_COLS: gl.constexpr = 0):
    """_consumer with the softmax of tile j under the P @ V GEMM of tile j-1 (same numerics:
    every tile's update is the same expression, only the issue order changes).
    q_smem (Q_TERMS, BLOCK_M, HEAD_DIM): Q's FP8 terms (the second: Recipe.q_terms == 2),
    from index q_base (persistent CTAs with two Q buffers: Q_TERMS * the item's buffer).

    CAUSAL: the CTA's tiles are [0, kv_end) (kv_end >= 1: every row sees key 0, see
    gluon_attention_fwd), tiles below full_end are visible to all of its rows, the rest are
    masked: at most MASKED_MAX of them (2 for 128-row blocks, 3 for 192). Every consumer
    warpgroup runs every tile of the CTA, so their turns stay paired; a tile past all of its
    own rows' diagonals is a no-op for a warpgroup (_ovl_step's seqlen_q:
    before session 12 it changed acc's V-descale units, before session 13 it multiplied acc
    by vs / vs, which div.full.f32 sometimes makes 1 - 1 ulp: each an extra rounding against
    triton_fwd.py's 64-row blocks, which skip such tiles, and one-ulp differences in a few
    elements of bottom-right calls).

    Persistent CTAs call it once per work item: g0 is the ring position of this item's first
    KV tile, turn_phase the ping-pong phase so far, q_phase the parity of this item's Q load;
    with ARRIVE_Q_EMPTY the warpgroup arrives on q_empty once its last Q K^T has completed, so
    the producer can load the next item's Q under this item's last P @ V. Returns turn_phase.

    WG_BOUNDS (causal, without turns: the three-consumer kernel): the warpgroup computes only
    its own rows' tiles, unmasked below its own diagonal (the tl kernel's 64-row blocks), at
    most two masked; the CTA's tiles past its rows it only releases (_release_tiles).

    q_off, VARLEN (varlen): _consumer_init's and _consumer_store's."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    row_scale0, kd_ptr, vd_ptr, m_i, l_i, acc = _consumer_init(
        QD, KD, VD, row0, start_m, off_b, off_h, off_kvh, stride_qdz, stride_qdh, stride_kdz,
        stride_kdh, stride_vdz, stride_vdh, seqlen_q, q_block, qk_scale, ROWS, BLOCK_N, HEAD_DIM,
        NW, q_off)
    other_turn = 1 - my_turn
    if not PINGPONG:
        # no turns to count: a constant, as the loops below carry it (a non-constexpr
        # parameter would change type across them and fail to compile)
        turn_phase = 0
    _stamp(tptr, 0, TRACE)
    if Q_TERMS == 2:
        q_s = (q_smem.index(q_base).slice(row0, ROWS, dim=0),
               q_smem.index(q_base + 1).slice(row0, ROWS, dim=0))
    else:
        q_s = (q_smem.index(q_base).slice(row0, ROWS, dim=0),)
    mbarrier.wait(q_bar, q_phase)
    _stamp(tptr, 1, TRACE)
    n_tiles, n_full = _tile_counts(seqlen_k, kv_end, full_end, BLOCK_N, CAUSAL)
    row_lo = start_m + row0
    block_tiles = n_tiles
    if CAUSAL != 0 and WG_BOUNDS:
        wg_kv_end, wg_full_end, _ = _causal_bounds(row_lo, seqlen_q, seqlen_k, ROWS, CAUSAL)
        n_tiles = gl.cdiv(wg_kv_end, BLOCK_N)
        # rows all past seqlen_q (never stored) can have full_end > kv_end
        n_full = gl.minimum(wg_full_end // BLOCK_N, n_tiles)

    # prologue: S_0 and its softmax (masked when tile 0 is already the tail)
    slot0 = g0 % STAGES
    k_s = k_smem.index(slot0)
    mbarrier.wait(k_full.index(slot0), (g0 // STAGES) & 1)
    if PINGPONG:
        mbarrier.wait(turn.index(my_turn), turn_phase)
    qk = _qk_issue(q_s, k_s, ROWS, BLOCK_N, s_layout)
    if PINGPONG:
        mbarrier.arrive(turn.index(other_turn))
        turn_phase ^= 1
    row_scale = row_scale0 * gl.load(kd_ptr)
    vs = gl.load(vd_ptr)
    qk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=[qk, q_s[0], k_s])
    _stamp(tptr, 2, TRACE)
    mbarrier.arrive(kv_empty.index(slot0))
    if n_full == 0:
        p, m_i, l_i, alpha = _softmax(qk, m_i, l_i, row_scale, 0, seqlen_k, True,
                                      BLOCK_N, P_SHIFT, NW, row_lo, causal_off, CAUSAL)
    else:
        p, m_i, l_i, alpha = _softmax(qk, m_i, l_i, row_scale, 0, seqlen_k, False,
                                      BLOCK_N, P_SHIFT, NW)
    p = _pack_p(p, HEAD_DIM, NW)
    # vs_prev = 1 on the first tile, as in triton_fwd.py (acc is 0 and alpha 0)
    factor = gl.convert_layout(alpha * (1.0 / vs), gl.SliceLayout(1, o_layout))
    _stamp(tptr, 3, TRACE)

    if UNROLL2:
        # two steps per loop iteration: in SASS the first step of each pair then overlaps fully
        # (only the step that writes the loop-carried p waits for P @ V early)
        if CAUSAL != 0:
            n_pairs = gl.maximum(n_full - 1, 0) // 2     # causal: n_full can be 0
        else:
            n_pairs = (n_full - 1) // 2
        for jj in range(n_pairs):
            j = 1 + 2 * jj
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, j, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, False, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, g0=g0)
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, j + 1, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, False, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, g0=g0)
        if 1 + 2 * n_pairs < n_full:
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, n_full - 1, seqlen_k, k_block, v_block,
                row_scale0, my_turn, other_turn, turn_phase, False, PINGPONG, ROWS, BLOCK_N,
                HEAD_DIM, STAGES, P_SHIFT, NW, g0=g0)
    else:
        for j in range(1, n_full):
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, j, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, False, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, g0=g0)
    if CAUSAL != 0:
        # the diagonal and the tail beyond seqlen_k: at most MASKED_MAX tiles (128-row blocks:
        # two, kv_end - full_end < BLOCK_M = BLOCK_N; 192-row blocks: three), written out: a
        # second loop made ptxas spill
        j0 = gl.maximum(n_full, 1)
        if j0 < n_tiles:
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, j0, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, True, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, row_lo, causal_off, CAUSAL, g0=g0, seqlen_q=seqlen_q)
        if j0 + 1 < n_tiles:
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, j0 + 1, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, True, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, row_lo, causal_off, CAUSAL, g0=g0, seqlen_q=seqlen_q)
        if MASKED_MAX == 3 and j0 + 2 < n_tiles:
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, j0 + 2, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, True, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, row_lo, causal_off, CAUSAL, g0=g0, seqlen_q=seqlen_q)
    elif n_full < n_tiles:
        if n_full > 0:
            acc, m_i, l_i, p, factor, vs, turn_phase = _ovl_step(
                acc, m_i, l_i, p, factor, vs, q_s, k_smem, v_smem, k_full, v_full, kv_empty,
                v_empty, turn, kd_ptr, vd_ptr, n_full, seqlen_k, k_block, v_block, row_scale0,
                my_turn, other_turn, turn_phase, True, PINGPONG, ROWS, BLOCK_N, HEAD_DIM,
                STAGES, P_SHIFT, NW, g0=g0)

    _stamp(tptr, 4, TRACE)
    if ARRIVE_Q_EMPTY:
        mbarrier.arrive(q_empty)        # every Q K^T of this item has completed
    # epilogue: P @ V of the last tile
    last = g0 + n_tiles - 1
    lslot = last % STAGES
    v_s = v_smem.index(lslot)
    mbarrier.wait(v_full.index(lslot), (last // STAGES) & 1)
    p8 = _p_operand(p, HEAD_DIM, NW)
    if PINGPONG:
        mbarrier.wait(turn.index(my_turn), turn_phase)
    pv = warpgroup_mma(p8, v_s.permute((1, 0)),
                       gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout), use_acc=False,
                       is_async=True)
    if PINGPONG:
        mbarrier.arrive(turn.index(other_turn))
        turn_phase ^= 1
    # (p8 cannot be a dep: 8-bit registers are rejected by the wait's lowering on 3.6; ptxas
    # tracks the register operand of an in-flight wgmma itself)
    pv, _ = warpgroup_mma_wait(num_outstanding=0, deps=[pv, v_s])
    _stamp(tptr, 5, TRACE)
    mbarrier.arrive(v_empty.index(lslot))
    acc = acc * gl.expand_dims(factor, 1) + pv

    _consumer_store(acc, l_i, vs, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                    stride_om, stride_od, seqlen_q, ROWS, HEAD_DIM, NW, m_i, LSE, stride_lz,
                    stride_lh, stride_lm, RETURN_LSE, P_SHIFT, o_desc, o_smem, TMA_STORE,
                    q_off=q_off, VARLEN=VARLEN, OUT_COLS=OUT_COLS)
    if CAUSAL != 0 and WG_BOUNDS:
        _release_tiles(k_full, v_full, kv_empty, v_empty, g0 + n_tiles, g0 + block_tiles, STAGES)
    _stamp(tptr, 6, TRACE)
    return turn_phase


@gluon.jit
def _release_tiles(k_full, v_full, kv_empty, v_empty, g_begin, g_end, STAGES: gl.constexpr):
    """Ring positions [g_begin, g_end): tiles this warpgroup does not compute, released as if
    it had (the empty barriers count every consumer). Each waits for its tile's load first: an
    arrival before it would count toward the slot's previous use, which another warpgroup may
    still be reading."""
    for gg in range(g_begin, g_end):
        slot = gg % STAGES
        ph = (gg // STAGES) & 1
        mbarrier.wait(k_full.index(slot), ph)
        mbarrier.arrive(kv_empty.index(slot))
        mbarrier.wait(v_full.index(slot), ph)
        mbarrier.arrive(v_empty.index(slot))


@gluon.jit
def _trace_slot(TRACE_PTR, part, it):
    """TRACE: the 8 stamps of this CTA's partition `part` (consumer warpgroups 0 / 1, producer
    2) for its work item `it` (persistent CTAs) or KV tile `it` (the non-persistent split
    consumer); those past TRACE_ITEMS share the last slot. CTAs in row-major grid order."""
    cta = gl.program_id(0) + gl.program_id(1) * gl.num_programs(0)
    return TRACE_PTR + ((cta * 3 + part) * TRACE_ITEMS + gl.minimum(it, TRACE_ITEMS - 1)) * 8


@gluon.jit
def _stamp_at(TRACE_PTR, part, it, i: gl.constexpr, TRACE: gl.constexpr):
    """TRACE only: _stamp into _trace_slot(TRACE_PTR, part, it)[i]."""
    if TRACE:
        _stamp(_trace_slot(TRACE_PTR, part, it), i, TRACE)


@gluon.jit
def _stamp_global_at(TRACE_PTR, part, it, i: gl.constexpr, TRACE: gl.constexpr,
                     SMID: gl.constexpr = False):
    """TRACE only: the GPU-wide nanosecond timer (%globaltimer: comparable across SMs, unlike
    %clock64), or with SMID the SM's index, into _trace_slot(TRACE_PTR, part, it)[i]."""
    if TRACE:
        if SMID:
            t = gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=gl.int32,
                                          is_pure=False, pack=1).to(gl.int64)
        else:
            t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [],
                                          dtype=gl.int64, is_pure=False, pack=1)
        gl.store(_trace_slot(TRACE_PTR, part, it) + i, t)


@gluon.jit
def _stamp(tptr, i: gl.constexpr, TRACE: gl.constexpr):
    """TRACE only: the SM's cycle counter into tptr[i] (one int64; every thread of the
    partition writes the same value). Off, it compiles to nothing."""
    if TRACE:
        t = gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64,
                                      is_pure=False, pack=1)
        gl.store(tptr + i, t)


@gluon.jit
def _tile_counts(seqlen_k, kv_end, full_end, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    """(n_tiles, n_full) of a consumer's loop: causal, the CTA's tiles [0, kv_end), those below
    full_end unmasked (_causal_bounds); otherwise every tile of seqlen_k, the last masked when
    partial."""
    if CAUSAL != 0:
        return gl.cdiv(kv_end, BLOCK_N), full_end // BLOCK_N
    return gl.cdiv(seqlen_k, BLOCK_N), seqlen_k // BLOCK_N


@gluon.jit
def _wg_key_end(row_lo, ROWS: gl.constexpr, seqlen_q, seqlen_k, causal_off):
    """The end of the keys a warpgroup's rows [row_lo, row_lo + ROWS) see: a tile from there on
    changes nothing for it (_ovl_step, _tile_split)."""
    return gl.minimum(seqlen_k, gl.minimum(row_lo + ROWS, seqlen_q) + causal_off)


@gluon.jit
def _causal_bounds(start_m, seqlen_q, seqlen_k, BLOCK_M: gl.constexpr, CAUSAL: gl.constexpr):
    """(kv_end, full_end, causal_off) of the query block at start_m: keys [0, kv_end) are the
    block's (the producer loads them), [0, full_end) visible to all of its rows (triton_fwd.py's
    hi and full_end for a 128-row block); non-causal: every key, unmasked."""
    kv_end = seqlen_k
    full_end = seqlen_k
    causal_off = 0
    if CAUSAL == 2:
        causal_off = seqlen_k - seqlen_q
    if CAUSAL != 0:
        last_row = gl.minimum(start_m + BLOCK_M, seqlen_q) - 1
        kv_end = gl.maximum(gl.minimum(seqlen_k, last_row + causal_off + 1), 0)
        full_end = gl.maximum(gl.minimum(seqlen_k, start_m + causal_off + 1), 0)
    return kv_end, full_end, causal_off


@gluon.jit
def _work_item(w, n_m, n_work, H, GQA_GROUP, seqlen_k, section_heads, BLOCK_M: gl.constexpr,
               VT_ROWS: gl.constexpr, CAUSAL: gl.constexpr):
    """Persistent CTAs: work item w -> (start_m, off_hz, off_b, off_h, off_kvh, kv_row0,
    vt_row0) (VT_ROWS: rows of V^T a head). Non-causal: the query blocks of one head are
    consecutive items, so the CTAs working at the same time share a head's K / V in L2 (as the
    non-persistent grid's order).
    Causal (a block's work grows with its index): heads in sections of section_heads (the
    last one may be smaller) whose K / V fit in L2 together; within a section the longest
    query blocks first, heads minor (FA3's longest-processing-time-first order); which CTA
    runs which item is _causal_schedule's table (_item_loop)."""
    if CAUSAL != 0:
        per_section = n_m * section_heads
        sec = w // per_section
        r = w - sec * per_section
        heads = gl.minimum(section_heads, n_work // n_m - sec * section_heads)
        pid_m = n_m - 1 - r // heads
        off_hz = sec * section_heads + r % heads
    else:
        pid_m = w % n_m
        off_hz = w // n_m
    off_b = off_hz // H
    off_h = off_hz % H
    off_kvh = off_h // GQA_GROUP
    kv_head = off_b * (H // GQA_GROUP) + off_kvh
    return (pid_m * BLOCK_M, off_hz, off_b, off_h, off_kvh, kv_head * seqlen_k,
            kv_head * VT_ROWS)


@gluon.jit
def _item_loop(SCHED, n_work, CAUSAL: gl.constexpr):
    """(first, end, step) of this CTA's positions k; the item at position k is _item_at's.
    Non-causal (equal items): items pid, pid + grid, ... Causal: the CTA's run of the host's
    table SCHED (_causal_schedule: grid + 1 offsets, then the items CTA by CTA)."""
    first = gl.program_id(0)
    end = n_work
    step = gl.num_programs(0)
    if CAUSAL != 0:
        first = gl.load(SCHED + gl.program_id(0))
        end = gl.load(SCHED + gl.program_id(0) + 1)
        step = 1
    return first, end, step


@gluon.jit
def _item_at(SCHED, k, n_m, n_work, H, GQA_GROUP, seqlen_q, seqlen_k, section_heads,
             BLOCK_M: gl.constexpr, VT_ROWS: gl.constexpr, CAUSAL: gl.constexpr):
    """The work item at this CTA's position k (_item_loop; causal: the table SCHED's entry):
    _work_item's (start_m, off_hz, off_b, off_h, off_kvh, kv_row0, vt_row0), then
    _causal_bounds' (kv_end, full_end, causal_off) of its query block. Shared by the
    persistent producer and consumers, so they walk the same items."""
    w = k
    if CAUSAL != 0:
        w = gl.load(SCHED + gl.num_programs(0) + 1 + k)
    start_m, off_hz, off_b, off_h, off_kvh, kv_row0, vt_row0 = _work_item(
        w, n_m, n_work, H, GQA_GROUP, seqlen_k, section_heads, BLOCK_M, VT_ROWS, CAUSAL)
    kv_end, full_end, causal_off = _causal_bounds(start_m, seqlen_q, seqlen_k, BLOCK_M, CAUSAL)
    return (start_m, off_hz, off_b, off_h, off_kvh, kv_row0, vt_row0, kv_end, full_end,
            causal_off)


@gluon.jit
def _varlen_item(k, n_t, H, GQA_GROUP, seqlen_q, seqlen_k, CU_Q, CU_K, KV_STARTS, Q_TILES,
                 Q_TILE_SEQ, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                 CAUSAL: gl.constexpr, LONGEST_FIRST: gl.constexpr = False):
    """Varlen work item k: query tile k % n_t (VarlenTables.q_tiles) of head k // n_t; causal,
    tile k // H of head k % H (heads minor: H200, session 35, 16k packed tokens, GPU time, 374
    / 437 TFLOP/s on 8 x 2048 / seven mixed lengths; 371 / 408 heads major in an earlier run,
    334 / 386 with the tiles sorted longest first in the same run; RESULTS.md "Session 35"), as
    (start_m, q_off, sq, sk, off_h, off_kvh, kv_start, n_tiles, kv_end, full_end, causal_off,
    rows): start_m the tile's first query in its sequence, q_off the sequence's first packed
    row, sq / sk its query / key counts, kv_start its first row in K's padded rows, n_tiles
    the KV tiles the item loads (0: nothing to load), rows the tile's queries (0: an empty
    tile, nothing to store). seqlen_q / seqlen_k: the packed Q rows and K's padded rows; every
    offset is clamped into them, as the tl kernel's (cu_seqlens are checked after the launch).
    Shared by the producer and the consumers, so they skip the same items. LONGEST_FIRST
    (causal, the DYNAMIC schedule): a sequence's tiles in reverse (_tile_longest_first)."""
    if CAUSAL != 0:
        t = k // H
        off_h = k % H
        if LONGEST_FIRST:
            # each sequence's tiles from its last (most keys) to its first: with items handed
            # out as CTAs come free (DYNAMIC), the short ones fill in at the end
            t = _tile_longest_first(t, n_t, seqlen_q, CU_Q, Q_TILES, Q_TILE_SEQ, BLOCK_M)
    else:
        t = k % n_t
        off_h = k // n_t
    first = gl.load(Q_TILES + 2 * t)
    rows = gl.load(Q_TILES + 2 * t + 1)
    seq = gl.load(Q_TILE_SEQ + t)
    q_off = gl.minimum(gl.maximum(gl.load(CU_Q + seq), 0), seqlen_q)
    q_end = gl.minimum(gl.maximum(gl.load(CU_Q + seq + 1), q_off), seqlen_q)
    kv_start = gl.minimum(gl.maximum(gl.load(KV_STARTS + seq), 0), seqlen_k)
    sk = gl.minimum(gl.maximum(gl.load(CU_K + seq + 1) - gl.load(CU_K + seq), 0),
                    seqlen_k - kv_start)
    return _varlen_fields(first - q_off, q_off, q_end - q_off, sk, off_h, kv_start, rows,
                          GQA_GROUP, BLOCK_M, BLOCK_N, CAUSAL)


@gluon.jit
def _varlen_fields(start_m, q_off, sq, sk, off_h, kv_start, rows, GQA_GROUP,
                   BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    """_varlen_item's tuple from what its table lookups give (ITEM_WORDS of them: start_m,
    q_off, sq, sk, off_h, kv_start, rows); the rest is arithmetic."""
    kv_end, full_end, causal_off = _causal_bounds(start_m, sq, sk, BLOCK_M, CAUSAL)
    n_tiles = gl.cdiv(kv_end, BLOCK_N)
    n_tiles = gl.where(rows > 0, n_tiles, 0)
    return (start_m, q_off, sq, sk, off_h, off_h // GQA_GROUP, kv_start, n_tiles, kv_end,
            full_end, causal_off, rows)


@gluon.jit
def _tile_longest_first(t, n_t, seqlen_q, CU_Q, Q_TILES, Q_TILE_SEQ, BLOCK_M: gl.constexpr):
    """Query tile t's mirror within its sequence (tile j of n -> tile n - 1 - j): a bijection
    on each sequence's tiles (tiles without rows map to themselves), clamped into the table
    (the offsets are checked after the launch)."""
    rows = gl.load(Q_TILES + 2 * t + 1)
    seq = gl.load(Q_TILE_SEQ + t)
    lo = gl.minimum(gl.maximum(gl.load(CU_Q + seq), 0), seqlen_q)
    hi = gl.minimum(gl.maximum(gl.load(CU_Q + seq + 1), lo), seqlen_q)
    j = (gl.load(Q_TILES + 2 * t) - lo) // BLOCK_M
    mirror = t + gl.cdiv(hi - lo, BLOCK_M) - 1 - 2 * j
    return gl.where(rows > 0, gl.minimum(gl.maximum(mirror, 0), n_t - 1), t)


@gluon.jit
def _take_item(WORK):
    """The DYNAMIC varlen schedule: the launch's next item, WORK[0] taken and advanced
    atomically by the producer (items go to CTAs as they come free: a greedy
    longest-processing-time schedule with the items in order). Items from n_work on mean: no
    more. Taken before the wait for the Q buffer (_publish_item), so that the atomic's round
    trip runs under the item before."""
    return gl.atomic_add(WORK, 1)


# int32 words of a CTA's item slot in the DYNAMIC schedule's work buffer: the item's index and
# _varlen_fields' seven looked-up values (32 bytes: the consumers' loads of one slot are one
# round trip to L2)
ITEM_WORDS = gl.constexpr(8)


@gluon.jit
def _publish_item(WORK, q_bar, q_empty, k, it, start_m, q_off, sq, sk, off_h, kv_start, rows,
                  Q_BUFS: gl.constexpr):
    """Once both consumers are done with the Q buffer item `it` takes (q_empty), item k and its
    looked-up values (_varlen_item) go into the CTA's slot for that buffer, ITEM_WORDS words
    from WORK[1 + (pid * Q_BUFS + it % Q_BUFS) * ITEM_WORDS], and the producer arrives on the
    buffer's item barrier (q_bar.index(Q_BUFS + buffer)): mbarrier arrive / wait order memory
    within the CTA, so the consumers read the slot after their wait (_published_item), before
    the item's Q has landed, without the tables' chain of dependent loads."""
    qb = it % Q_BUFS
    mbarrier.wait(q_empty.index(qb), ((it // Q_BUFS) & 1) ^ 1)
    slot = WORK + 1 + (gl.program_id(0) * Q_BUFS + qb) * ITEM_WORDS
    gl.store(slot, k)
    gl.store(slot + 1, start_m)
    gl.store(slot + 2, q_off)
    gl.store(slot + 3, sq)
    gl.store(slot + 4, sk)
    gl.store(slot + 5, off_h)
    gl.store(slot + 6, kv_start)
    gl.store(slot + 7, rows)
    mbarrier.arrive(q_bar.index(Q_BUFS + qb))


@gluon.jit
def _take_varlen_item(SCHED, q_bar, q_empty, it, n_work, n_t, H, GQA_GROUP, seqlen_q, seqlen_k,
                      CU_Q, CU_K, KV_STARTS, Q_TILES, Q_TILE_SEQ, BLOCK_M: gl.constexpr,
                      BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr, Q_BUFS: gl.constexpr):
    """The DYNAMIC varlen schedule, producer side: the next item k (_take_item), its table
    lookups (_varlen_item) made before the wait for its Q buffer and published with it
    (_publish_item), so the consumers read one slot instead of the tables' chain of dependent
    loads; past the end, k's lookups are the last item's (clamped into the tables, unused).
    Returns (k, start_m, q_off, off_h, off_kvh, kv_start, n_tiles)."""
    k = _take_item(SCHED)
    (start_m, q_off, sq, sk, off_h, off_kvh, kv_start, n_tiles, _, _, _,
     rows) = _varlen_item(gl.minimum(k, n_work - 1), n_t, H, GQA_GROUP, seqlen_q, seqlen_k,
                          CU_Q, CU_K, KV_STARTS, Q_TILES, Q_TILE_SEQ, BLOCK_M, BLOCK_N, CAUSAL,
                          True)
    _publish_item(SCHED, q_bar, q_empty, k, it, start_m, q_off, sq, sk, off_h, kv_start, rows,
                  Q_BUFS)
    return k, start_m, q_off, off_h, off_kvh, kv_start, n_tiles


@gluon.jit
def _published_item(WORK, q_bar, it, Q_BUFS: gl.constexpr):
    """The DYNAMIC schedule, consumer side: item it's slot as _publish_item wrote it, (k,
    start_m, q_off, sq, sk, off_h, kv_start, rows)."""
    qb = it % Q_BUFS
    mbarrier.wait(q_bar.index(Q_BUFS + qb), (it // Q_BUFS) & 1)
    slot = WORK + 1 + (gl.program_id(0) * Q_BUFS + qb) * ITEM_WORDS
    return (gl.load(slot, volatile=True), gl.load(slot + 1, volatile=True),
            gl.load(slot + 2, volatile=True), gl.load(slot + 3, volatile=True),
            gl.load(slot + 4, volatile=True), gl.load(slot + 5, volatile=True),
            gl.load(slot + 6, volatile=True), gl.load(slot + 7, volatile=True))


@gluon.jit
def _load_q(q_desc, ql_desc, q_smem, q_bar, row, Q_BOX: gl.constexpr, Q_LOADS: gl.constexpr,
            Q_TERMS: gl.constexpr, q_base=0):
    """TMA loads of a block's Q terms (rows [row, row + Q_LOADS * Q_BOX) of the flattened Q)
    into q_smem.index(q_base) (and q_base + 1: the second term), Q_LOADS boxes of Q_BOX rows
    each, all on q_bar."""
    mbarrier.expect(q_bar, Q_TERMS * Q_LOADS * q_desc.block_type.nbytes)
    for c in gl.static_range(Q_LOADS):
        tma.async_copy_global_to_shared(q_desc, [row + c * Q_BOX, 0], q_bar,
                                        q_smem.index(q_base).slice(c * Q_BOX, Q_BOX, dim=0))
        if Q_TERMS == 2:
            tma.async_copy_global_to_shared(ql_desc, [row + c * Q_BOX, 0], q_bar,
                                            q_smem.index(q_base + 1).slice(c * Q_BOX, Q_BOX,
                                                                           dim=0))


@gluon.jit
def _load_varlen_item(q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar_b, k_full,
                      v_full, kv_empty, v_empty, g, qb, start_m, q_off, off_h, off_kvh, kv_start,
                      n_tiles, seqlen_q, seqlen_k, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                      VT_ROWS: gl.constexpr, STAGES: gl.constexpr, Q_TERMS: gl.constexpr,
                      Q_LOADS: gl.constexpr, SPLIT_EMPTY: gl.constexpr):
    """_producer_persistent's loads for a varlen item (_varlen_item's fields) with n_tiles > 0,
    once its Q buffer qb is free: Q onto q_bar_b, then its KV tiles into the ring from
    position g. Returns the ring position after them."""
    _load_q(q_desc, ql_desc, q_smem, q_bar_b, off_h * seqlen_q + q_off + start_m,
            BLOCK_M // Q_LOADS, Q_LOADS, Q_TERMS, qb * Q_TERMS)
    for j in range(n_tiles):
        gg = g + j
        _fill_slot(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                   off_kvh * seqlen_k + kv_start, off_kvh * VT_ROWS, j * BLOCK_N, gg % STAGES,
                   ((gg // STAGES) & 1) ^ 1, SPLIT_EMPTY, kv_start)
    return g + n_tiles


@gluon.jit
def _producer_persistent(q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar,
                         q_empty, k_full, v_full, kv_empty, v_empty, n_m, n_work, H, GQA_GROUP,
                         seqlen_q, seqlen_k, section_heads, SCHED, BLOCK_M: gl.constexpr,
                         BLOCK_N: gl.constexpr, VT_ROWS: gl.constexpr, STAGES: gl.constexpr,
                         Q_TERMS: gl.constexpr, CAUSAL: gl.constexpr, TRACE_PTR=0,
                         TRACE: gl.constexpr = False, Q_LOADS: gl.constexpr = 1,
                         Q_BUFS: gl.constexpr = 1, SPLIT_EMPTY: gl.constexpr = True,
                         VARLEN: gl.constexpr = False, CU_Q=0, CU_K=0, KV_STARTS=0, Q_TILES=0,
                         Q_TILE_SEQ=0, n_t=1, DYNAMIC: gl.constexpr = False):
    """_producer for persistent CTAs: per work item, Q (once every consumer is done with the
    Q that used its buffer before: q_empty; in Q_LOADS boxes of BLOCK_M / Q_LOADS rows) and
    then its K / V tiles (causal: those below the item's kv_end), the ring position g running
    on across items (the consumers count the same way). Q_BUFS = 2: item it's Q in buffer
    it % 2, so the next item's Q loads while this item's last Q K^T still reads the other.
    SPLIT_EMPTY: _fill_slot's (False: the head-dim > 128 consumers). VT_ROWS: rows of V^T a
    head (the kernel's VT_ROWS). VARLEN: the items are _varlen_item's (B = 1; seqlen_q /
    seqlen_k the packed Q rows and K's padded rows), w = pid, pid + grid, ..., and those
    without a KV tile to load are skipped (the consumers skip the same). DYNAMIC (varlen):
    the items come from the launch's counter instead (SCHED: its work buffer, _take_item),
    every one published to the consumers in turn on the Q buffers (_publish_item), the last
    one from n_work on (the end); an item without a KV tile completes its buffer's q_bar
    phase by a plain arrive, so that the phases keep counting items."""
    g = 0
    it = 0
    if VARLEN and DYNAMIC:
        k, start_m, q_off, off_h, off_kvh, kv_start, n_tiles = _take_varlen_item(
            SCHED, q_bar, q_empty, it, n_work, n_t, H, GQA_GROUP, seqlen_q, seqlen_k, CU_Q,
            CU_K, KV_STARTS, Q_TILES, Q_TILE_SEQ, BLOCK_M, BLOCK_N, CAUSAL, Q_BUFS)
        while k < n_work:
            qb = it % Q_BUFS
            if n_tiles > 0:
                g = _load_varlen_item(q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem,
                                      q_bar.index(qb), k_full, v_full, kv_empty, v_empty, g, qb,
                                      start_m, q_off, off_h, off_kvh, kv_start, n_tiles,
                                      seqlen_q, seqlen_k, BLOCK_M, BLOCK_N, VT_ROWS, STAGES,
                                      Q_TERMS, Q_LOADS, SPLIT_EMPTY)
            else:
                mbarrier.arrive(q_bar.index(qb))
            it += 1
            k, start_m, q_off, off_h, off_kvh, kv_start, n_tiles = _take_varlen_item(
                SCHED, q_bar, q_empty, it, n_work, n_t, H, GQA_GROUP, seqlen_q, seqlen_k, CU_Q,
                CU_K, KV_STARTS, Q_TILES, Q_TILE_SEQ, BLOCK_M, BLOCK_N, CAUSAL, Q_BUFS)
    elif VARLEN:
        for k in range(gl.program_id(0), n_work, gl.num_programs(0)):
            (start_m, q_off, _, _, off_h, off_kvh, kv_start, n_tiles, _, _, _,
             _) = _varlen_item(k, n_t, H, GQA_GROUP, seqlen_q, seqlen_k, CU_Q, CU_K,
                               KV_STARTS, Q_TILES, Q_TILE_SEQ, BLOCK_M, BLOCK_N, CAUSAL)
            if n_tiles > 0:
                qb = it % Q_BUFS
                mbarrier.wait(q_empty.index(qb), ((it // Q_BUFS) & 1) ^ 1)
                g = _load_varlen_item(q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem,
                                      q_bar.index(qb), k_full, v_full, kv_empty, v_empty, g, qb,
                                      start_m, q_off, off_h, off_kvh, kv_start, n_tiles,
                                      seqlen_q, seqlen_k, BLOCK_M, BLOCK_N, VT_ROWS, STAGES,
                                      Q_TERMS, Q_LOADS, SPLIT_EMPTY)
                it += 1
    else:
        first, end, step = _item_loop(SCHED, n_work, CAUSAL)
        for k in range(first, end, step):
            start_m, off_hz, off_b, off_h, off_kvh, kv_row0, vt_row0, kv_end, _, _ = _item_at(
                SCHED, k, n_m, n_work, H, GQA_GROUP, seqlen_q, seqlen_k, section_heads, BLOCK_M,
                VT_ROWS, CAUSAL)
            n_tiles = gl.cdiv(kv_end, BLOCK_N)
            tptr = _trace_slot(TRACE_PTR, 2, it)
            _stamp(tptr, 0, TRACE)
            qb = it % Q_BUFS
            mbarrier.wait(q_empty.index(qb), ((it // Q_BUFS) & 1) ^ 1)
            _stamp(tptr, 1, TRACE)
            _load_q(q_desc, ql_desc, q_smem, q_bar.index(qb), off_hz * seqlen_q + start_m,
                    BLOCK_M // Q_LOADS, Q_LOADS, Q_TERMS, qb * Q_TERMS)
            for j in range(n_tiles):
                gg = g + j
                slot = gg % STAGES
                ph = ((gg // STAGES) & 1) ^ 1
                _fill_slot(k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                           kv_row0, vt_row0, j * BLOCK_N, slot, ph, SPLIT_EMPTY)
            _stamp(tptr, 2, TRACE)
            g += n_tiles
            it += 1


@gluon.jit
def _store_no_keys(O, row0, start_m, off_b, off_h, stride_oz, stride_oh, stride_om, stride_od,
                   seqlen_q, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                   NW: gl.constexpr, LSE, stride_lz, stride_lh, stride_lm,
                   RETURN_LSE: gl.constexpr, P_SHIFT: gl.constexpr, q_off,
                   OUT_COLS: gl.constexpr = 0):
    """_consumer_store for rows that see no key: zeros, and LSE -inf (plain stores)."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, BLOCK_N, 32])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                       instr_shape=[16, HEAD_DIM, 32])
    m_i = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([ROWS], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    _consumer_store(acc, l_i, 1.0, O, row0, start_m, off_b, off_h, stride_oz, stride_oh,
                    stride_om, stride_od, seqlen_q, ROWS, HEAD_DIM, NW, m_i, LSE, stride_lz,
                    stride_lh, stride_lm, RETURN_LSE, P_SHIFT, q_off=q_off, OUT_COLS=OUT_COLS)


@gluon.jit
def _varlen_work(k, g, it, turn_phase, q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                 kv_empty, v_empty, turn, QD, KD, VD, O, row0, H, GQA_GROUP, stride_qdz,
                 stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh, stride_oz,
                 stride_oh, stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block, v_block,
                 qk_scale, my_turn, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                 BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                 P_SHIFT: gl.constexpr, NW: gl.constexpr, UNROLL2: gl.constexpr, LSE, stride_lz,
                 stride_lh, stride_lm, RETURN_LSE: gl.constexpr, Q_TERMS: gl.constexpr,
                 CAUSAL: gl.constexpr, TURNS: gl.constexpr, o_desc, o_smem,
                 TMA_STORE: gl.constexpr, MASKED_MAX: gl.constexpr, Q_BUFS: gl.constexpr, CU_Q,
                 CU_K, KV_STARTS, Q_TILES, Q_TILE_SEQ, n_t, DYNAMIC: gl.constexpr,
                 OUT_COLS: gl.constexpr = 0, slot=None):
    """A consumer warpgroup's varlen item k (_varlen_item; g / it: the ring position and the
    items that took a Q buffer so far): _ovl_work on its KV tiles, or zeros (LSE -inf) for
    queries without a key. DYNAMIC: the item's looked-up values come in slot (as
    _published_item read them; unread otherwise), and every item took a Q buffer turn, so one
    without a KV tile releases its buffer at once. OUT_COLS: _store_rows's. Returns
    (turn_phase, the item's KV tiles)."""
    if DYNAMIC:
        (start_m, q_off, sq, sk, off_h, off_kvh, kv_start, n_tiles, kv_end, full_end,
         causal_off, rows) = _varlen_fields(slot[0], slot[1], slot[2], slot[3], slot[4],
                                            slot[5], slot[6], GQA_GROUP, BLOCK_M, BLOCK_N,
                                            CAUSAL)
    else:
        (start_m, q_off, sq, sk, off_h, off_kvh, kv_start, n_tiles, kv_end, full_end,
         causal_off, rows) = _varlen_item(k, n_t, H, GQA_GROUP, seqlen_q, seqlen_k, CU_Q, CU_K,
                                          KV_STARTS, Q_TILES, Q_TILE_SEQ, BLOCK_M, BLOCK_N,
                                          CAUSAL)
    zero = off_h * 0                    # off_b: one batch (a tensor: .to() below)
    kd_i = KD
    vd_i = VD
    if k_block != 0:
        kd_i = KD + kv_start // k_block
    if v_block != 0:
        vd_i = VD + kv_start // v_block
    qb = it % Q_BUFS
    if n_tiles > 0:
        turn_phase = _ovl_work(
            q_smem, k_smem, v_smem, q_bar.index(qb), k_full, v_full, kv_empty, v_empty, turn, QD,
            kd_i, vd_i, O, row0, start_m, zero, off_h, off_kvh, stride_qdz, stride_qdh,
            stride_kdz, stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh, stride_om,
            stride_od, sq, sk, q_block, k_block, v_block, qk_scale, my_turn, ROWS, BLOCK_N,
            HEAD_DIM, STAGES, P_SHIFT, NW, TURNS, UNROLL2, kv_end, full_end, causal_off, CAUSAL,
            LSE, stride_lz, stride_lh, stride_lm, RETURN_LSE, Q_TERMS, g0=g,
            turn_phase=turn_phase, q_phase=(it // Q_BUFS) & 1, q_empty=q_empty.index(qb),
            ARRIVE_Q_EMPTY=True, o_desc=o_desc, o_smem=o_smem, TMA_STORE=TMA_STORE,
            MASKED_MAX=MASKED_MAX, q_base=qb * Q_TERMS, q_off=q_off, VARLEN=True,
            OUT_COLS=OUT_COLS)
    else:
        if DYNAMIC:
            mbarrier.arrive(q_empty.index(qb))      # the slot is read: the buffer is free
        if rows > 0:
            _store_no_keys(O, row0, start_m, zero, off_h, stride_oz, stride_oh, stride_om,
                           stride_od, sq, ROWS, BLOCK_N, HEAD_DIM, NW, LSE, stride_lz,
                           stride_lh, stride_lm, RETURN_LSE, P_SHIFT, q_off, OUT_COLS)
    return turn_phase, n_tiles


@gluon.jit
def _consumer_persistent(q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full, kv_empty,
                         v_empty, turn, QD, KD, VD, O, row0, n_m, n_work, H, GQA_GROUP,
                         stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                         stride_oz, stride_oh, stride_om, stride_od,
                         seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                         ROWS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                         HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, P_SHIFT: gl.constexpr,
                         NW: gl.constexpr, UNROLL2: gl.constexpr, LSE, stride_lz, stride_lh,
                         stride_lm, RETURN_LSE: gl.constexpr, Q_TERMS: gl.constexpr,
                         section_heads, SCHED, CAUSAL: gl.constexpr,
                         TURNS: gl.constexpr = True, TRACE_PTR=0,
                         TRACE: gl.constexpr = False, o_desc=0, o_smem=0,
                         TMA_STORE: gl.constexpr = 0, MASKED_MAX: gl.constexpr = 2,
                         WG_BOUNDS: gl.constexpr = False, Q_BUFS: gl.constexpr = 1,
                         ITEM_LICM: gl.constexpr = False, VARLEN: gl.constexpr = False, CU_Q=0,
                         CU_K=0, KV_STARTS=0, Q_TILES=0, Q_TILE_SEQ=0, n_t=1,
                         DYNAMIC: gl.constexpr = False, OUT_COLS: gl.constexpr = 0):
    """A consumer warpgroup of a persistent CTA: _ovl_work per work item, with the ring
    position, the ping-pong phase and the Q buffer (Q_BUFS) carried from item to item.
    TURNS=False: no ping-pong turns (the two warpgroups run free, for head dims where the
    softmax outweighs the GEMMs).

    The item loop is compiled without loop-invariant code motion unless ITEM_LICM (session 17).
    With it, LLVM hoisted the masked steps' column indices (gl.arange: 32 registers a set,
    two sets) out of the item loop, so they stayed live through every tile loop; ptxas then
    ran short of registers and waited for each tile's P @ V before starting the next tile's
    softmax (no overlap in the SASS), and spilled (8-448 B at hdim 128).

    VARLEN: _producer_persistent's items; an item with queries but no KV tile (a sequence
    without keys, or causal rows before its first key) stores zeros (LSE -inf) and waits for
    nothing. DYNAMIC: the items _take_item hands the producer, read from the CTA's slot
    (_published_item), every one taking a Q buffer turn (an item without a KV tile releases it
    at once, without waiting for its q_bar phase: the producer completes that phase before it
    publishes the next item). OUT_COLS (varlen): _store_rows's, the output's head dim where it
    is below HEAD_DIM."""
    g = 0
    it = 0
    turn_phase = 0
    if VARLEN and DYNAMIC:
        k, sm, so, sq, sk, sh, sv, sr = _published_item(SCHED, q_bar, it, Q_BUFS)
        # (no loop-invariant code motion, as the static item loop below: session 17)
        while tl.condition(k < n_work, disable_licm=not ITEM_LICM):
            turn_phase, n_tiles = _varlen_work(
                k, g, it, turn_phase, q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                kv_empty, v_empty, turn, QD, KD, VD, O, row0, H, GQA_GROUP, stride_qdz,
                stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh, stride_oz,
                stride_oh, stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block, v_block,
                qk_scale, my_turn, ROWS, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW,
                UNROLL2, LSE, stride_lz, stride_lh, stride_lm, RETURN_LSE, Q_TERMS, CAUSAL, TURNS,
                o_desc, o_smem, TMA_STORE, MASKED_MAX, Q_BUFS, CU_Q, CU_K, KV_STARTS, Q_TILES,
                Q_TILE_SEQ, n_t, DYNAMIC, OUT_COLS, (sm, so, sq, sk, sh, sv, sr))
            g += n_tiles
            it += 1             # every item takes a Q buffer turn
            k, sm, so, sq, sk, sh, sv, sr = _published_item(SCHED, q_bar, it, Q_BUFS)
    elif VARLEN:
        for k in tl.range(gl.program_id(0), n_work, gl.num_programs(0),
                          disable_licm=not ITEM_LICM):
            turn_phase, n_tiles = _varlen_work(
                k, g, it, turn_phase, q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                kv_empty, v_empty, turn, QD, KD, VD, O, row0, H, GQA_GROUP, stride_qdz,
                stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh, stride_oz,
                stride_oh, stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block, v_block,
                qk_scale, my_turn, ROWS, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW,
                UNROLL2, LSE, stride_lz, stride_lh, stride_lm, RETURN_LSE, Q_TERMS, CAUSAL, TURNS,
                o_desc, o_smem, TMA_STORE, MASKED_MAX, Q_BUFS, CU_Q, CU_K, KV_STARTS, Q_TILES,
                Q_TILE_SEQ, n_t, DYNAMIC, OUT_COLS, (k, k, k, k, k, k, k))   # (slot: unread)
            if n_tiles > 0:     # items without a KV tile took no Q buffer
                g += n_tiles
                it += 1
    else:
        first, end, step = _item_loop(SCHED, n_work, CAUSAL)
        # (tl.range: Gluon has no range of its own with disable_licm)
        for k in tl.range(first, end, step, disable_licm=not ITEM_LICM):
            (start_m, off_hz, off_b, off_h, off_kvh, kv_row0, vt_row0, kv_end, full_end,
             causal_off) = _item_at(SCHED, k, n_m, n_work, H, GQA_GROUP, seqlen_q, seqlen_k,
                                    section_heads, BLOCK_M, HEAD_DIM, CAUSAL)
            tptr = _trace_slot(TRACE_PTR, my_turn, it)
            qb = it % Q_BUFS
            turn_phase = _ovl_work(
                q_smem, k_smem, v_smem, q_bar.index(qb), k_full, v_full, kv_empty, v_empty, turn,
                QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh, stride_qdz, stride_qdh,
                stride_kdz, stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh, stride_om,
                stride_od,
                seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW, TURNS, UNROLL2, kv_end, full_end,
                causal_off, CAUSAL, LSE, stride_lz, stride_lh, stride_lm, RETURN_LSE, Q_TERMS,
                g0=g, turn_phase=turn_phase, q_phase=(it // Q_BUFS) & 1,
                q_empty=q_empty.index(qb), ARRIVE_Q_EMPTY=True, tptr=tptr, TRACE=TRACE,
                o_desc=o_desc, o_smem=o_smem, TMA_STORE=TMA_STORE, MASKED_MAX=MASKED_MAX,
                WG_BOUNDS=WG_BOUNDS, q_base=qb * Q_TERMS)
            g += gl.cdiv(kv_end, BLOCK_N)
            it += 1
    if TMA_STORE:
        tma.store_wait(0)       # o_smem must outlive the last store


@gluon.jit
def _consumer_split_persistent(q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full, kv_empty,
                               turn, QD, KD, VD, O, row0, n_m, n_work, H, GQA_GROUP,
                               stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                               stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                               seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
                               section_heads, SCHED, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                               BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                               STAGES: gl.constexpr, P_SHIFT: gl.constexpr, NW: gl.constexpr,
                               PINGPONG: gl.constexpr, SPLIT: gl.constexpr,
                               CAUSAL: gl.constexpr, TRACE_PTR=0, TRACE: gl.constexpr = False,
                               o_desc=0, o_smem=0, TMA_STORE: gl.constexpr = 0,
                               Q_BUFS: gl.constexpr = 1, ITEM_LICM: gl.constexpr = False):
    """_consumer_persistent for head dims above 128: _consumer_split once per work item, the
    ring position, the ping-pong phase and the Q buffer carried from item to item; with
    TMA_STORE an item's output stores drain under the next item's tiles."""
    g = 0
    it = 0
    turn_phase = 0
    first, end, step = _item_loop(SCHED, n_work, CAUSAL)
    for k in tl.range(first, end, step, disable_licm=not ITEM_LICM):
        (start_m, off_hz, off_b, off_h, off_kvh, kv_row0, vt_row0, kv_end, full_end,
         causal_off) = _item_at(SCHED, k, n_m, n_work, H, GQA_GROUP, seqlen_q, seqlen_k,
                                section_heads, BLOCK_M, HEAD_DIM, CAUSAL)
        qb = it % Q_BUFS
        turn_phase = _consumer_split(
            q_smem.index(qb), k_smem, v_smem, q_bar.index(qb), k_full, v_full, kv_empty, turn,
            QD, KD, VD, O, row0, start_m, off_b, off_h, off_kvh, stride_qdz, stride_qdh,
            stride_kdz, stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh, stride_om,
            stride_od, seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, my_turn,
            ROWS, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, NW, PINGPONG, SPLIT, kv_end, full_end,
            causal_off, CAUSAL, TRACE_PTR, TRACE, o_desc, o_smem, TMA_STORE, g0=g,
            turn_phase=turn_phase, q_phase=(it // Q_BUFS) & 1, q_empty=q_empty.index(qb),
            PERSISTENT=True, q_all=q_smem, qb=qb, Q_BUFS=Q_BUFS)
        g += gl.cdiv(kv_end, BLOCK_N)
        it += 1
    if TMA_STORE:
        tma.store_wait(0)       # o_smem must outlive the last store


@gluon.jit
def _out_tiles(o_desc, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, CONSUMERS: gl.constexpr,
               TMA_STORE: gl.constexpr):
    """TMA_STORE: the consumers' shared output tiles, o_desc's blocks (out_tile_layout): one a
    warpgroup (three consumers), one or two a warpgroup used in turn (head dims above 128,
    quarter-width: _store_quarter), or one a warpgroup for its one full- / two half-width
    stores (persistent, head dims up to 128). Returns (all tiles, tile 0, tile 1, the last
    tile: the third consumer's), or zeros without TMA_STORE."""
    if TMA_STORE:
        O_TILES: gl.constexpr = 3 if CONSUMERS == 3 else (2 * TMA_STORE if HEAD_DIM > 128
                                                          else 2)
        O_COLS: gl.constexpr = HEAD_DIM // 4 if HEAD_DIM > 128 else HEAD_DIM // TMA_STORE
        o_smem = gl.allocate_shared_memory(o_desc.dtype,
                                           [O_TILES, 1, 1, BLOCK_M // CONSUMERS, O_COLS],
                                           o_desc.layout)
        return o_smem, o_smem.index(0), o_smem.index(1), o_smem.index(O_TILES - 1)
    else:
        return 0, 0, 0, 0


@gluon.jit
def _attn_fwd_gluon(q_desc, ql_desc, k_desc, v_desc, o_desc, QD, KD, VD, O, LSE,
                    stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                    stride_oz, stride_oh, stride_om, stride_od, stride_lz, stride_lh, stride_lm,
                    H, GQA_GROUP, seqlen_q, seqlen_k, q_block, k_block: gl.constexpr,
                    v_block: gl.constexpr, qk_scale, n_m, n_work, section_heads, SCHED,
                    MODE: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr,
                    BLOCK_N: gl.constexpr, STAGES: gl.constexpr, P_SHIFT: gl.constexpr,
                    PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                    OVERLAP: gl.constexpr, TURNS: gl.constexpr, UNROLL2: gl.constexpr,
                    CAUSAL: gl.constexpr = 0, RETURN_LSE: gl.constexpr = False,
                    Q_TERMS: gl.constexpr = 1, PERSISTENT: gl.constexpr = False,
                    SPLIT: gl.constexpr = 0, TRACE_PTR=0, TRACE: gl.constexpr = False,
                    TMA_STORE: gl.constexpr = 0, CONSUMERS: gl.constexpr = 2,
                    WG_BOUNDS: gl.constexpr = False, Q_BUFS: gl.constexpr = 1,
                    ITEM_LICM: gl.constexpr = False, V_ROWS: gl.constexpr = 0,
                    VARLEN: gl.constexpr = False, CU_Q=0, CU_K=0, KV_STARTS=0, Q_TILES=0,
                    Q_TILE_SEQ=0, n_t=1, DYNAMIC: gl.constexpr = False):
    """CAUSAL (mode pingpong, with overlap up to head dim 128, without above; 1 top-left, 2
    bottom-right as triton_fwd.py's CAUSAL_MODES): every row must see key 0 (bottom-right
    needs seqlen_k >= seqlen_q).
    n_m: query blocks per head; n_work = n_m * B * H. PERSISTENT (mode pingpong with overlap):
    a 1-D grid of at most one CTA per SM, each looping over work items (query block, head) =
    w, w + grid, ... (non-causal) or the items SCHED lists for it (causal, _causal_schedule),
    in _work_item's order (section_heads: causal only); otherwise the grid is (n_m, B * H) and
    one CTA one item. V_ROWS: rows of V^T a head where that is not HEAD_DIM (0: HEAD_DIM), the
    true head dim of a call run on a wider kernel (gluon_dispatch.kernel_head_dim).
    VARLEN (persistent, two consumers, tma_store 0 / 1): one batch of packed sequences, items
    (query tile of VarlenTables.q_tiles, head), n_work = n_t * H (_varlen_item); seqlen_q is
    the packed Q rows, seqlen_k K's padded rows, CAUSAL 2 per sequence. DYNAMIC (varlen):
    the items go to CTAs as they come free (_take_item), SCHED being the launch's work
    buffer (int32, 1 + grid * Q_BUFS, WORK[0] zero)."""
    VT_ROWS: gl.constexpr = HEAD_DIM if V_ROWS == 0 else V_ROWS
    pid_m = gl.program_id(0)
    if CAUSAL != 0:
        pid_m = gl.num_programs(0) - 1 - pid_m      # longest rows first, as triton_fwd.py
    off_hz = gl.program_id(1)
    off_b = off_hz // H
    off_h = off_hz % H
    off_kvh = off_h // GQA_GROUP
    start_m = pid_m * BLOCK_M
    kv_end, full_end, causal_off = _causal_bounds(start_m, seqlen_q, seqlen_k, BLOCK_M, CAUSAL)
    hkv = H // GQA_GROUP
    kv_row0 = (off_b * hkv + off_kvh) * seqlen_k
    vt_row0 = (off_b * hkv + off_kvh) * VT_ROWS

    # Q's FP8 terms (ql_desc: the second, Q_TERMS == 2 with mode pingpong + overlap only)
    # three consumers: q_desc's block is one consumer's 64 rows (TMA blocks and shared buffers
    # have power-of-two shapes), loaded three times into a 256-row buffer
    Q_ROWS: gl.constexpr = 256 if CONSUMERS == 3 else BLOCK_M
    Q_LOADS: gl.constexpr = 3 if CONSUMERS == 3 else 1
    # persistent, Q_BUFS = 2: two Q buffers (item it's in it % 2), each Q_TERMS entries
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [Q_BUFS * Q_TERMS, Q_ROWS, HEAD_DIM],
                                       q_desc.layout)
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, HEAD_DIM, BLOCK_N], v_desc.layout)
    # DYNAMIC: Q_BUFS more barriers, the item barriers of _publish_item
    Q_BARS: gl.constexpr = 2 * Q_BUFS if DYNAMIC else Q_BUFS
    q_bar = gl.allocate_shared_memory(gl.int64, [Q_BARS, 1], mbarrier.MBarrierLayout())
    k_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    N_CONSUMERS: gl.constexpr = CONSUMERS if MODE == 2 else 1
    for b in gl.static_range(Q_BARS):
        mbarrier.init(q_bar.index(b), count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(k_full.index(s), count=1)
        mbarrier.init(v_full.index(s), count=1)
        mbarrier.init(kv_empty.index(s), count=N_CONSUMERS)
        mbarrier.init(v_empty.index(s), count=N_CONSUMERS)
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    q_empty = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
    for b in gl.static_range(Q_BUFS):
        mbarrier.init(q_empty.index(b), count=CONSUMERS)    # persistent: every consumer
    fence_async_shared()
    # three consumers: a 192-row block crosses up to three 128-key tiles on its diagonal, a
    # warpgroup's 64 rows (WG_BOUNDS) up to two
    TRI_MASKED: gl.constexpr = 2 if WG_BOUNDS else 3

    # each branch allocates its output tiles (_out_tiles) itself: allocated once up here, the
    # head-dim-256 kernels' barriers moved in shared memory (offline PTX, session 22)
    if PERSISTENT and CONSUMERS == 3:
        # three turn-free consumer warpgroups, as the non-persistent form below
        THIRD_P: gl.constexpr = BLOCK_M // 3
        o_smem, o_tile0, o_tile1, o_tile2 = _out_tiles(o_desc, BLOCK_M, HEAD_DIM, CONSUMERS,
                                                       TMA_STORE)
        gl.warp_specialize([
            (_consumer_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                                    kv_empty, v_empty, turn, QD, KD, VD, O, 0, n_m,
                                    n_work, H, GQA_GROUP, stride_qdz, stride_qdh, stride_kdz,
                                    stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh,
                                    stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block,
                                    v_block, qk_scale, 0, THIRD_P, BLOCK_M, BLOCK_N, HEAD_DIM,
                                    STAGES, P_SHIFT, 4, UNROLL2, LSE, stride_lz, stride_lh,
                                    stride_lm, RETURN_LSE, Q_TERMS, section_heads, SCHED, CAUSAL,
                                    False, TRACE_PTR, TRACE, o_desc, o_tile0,
                                    TMA_STORE, TRI_MASKED, WG_BOUNDS, Q_BUFS, ITEM_LICM)),
            (_consumer_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                                    kv_empty, v_empty, turn, QD, KD, VD, O, THIRD_P, n_m,
                                    n_work, H, GQA_GROUP, stride_qdz, stride_qdh, stride_kdz,
                                    stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh,
                                    stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block,
                                    v_block, qk_scale, 1, THIRD_P, BLOCK_M, BLOCK_N, HEAD_DIM,
                                    STAGES, P_SHIFT, 4, UNROLL2, LSE, stride_lz, stride_lh,
                                    stride_lm, RETURN_LSE, Q_TERMS, section_heads, SCHED, CAUSAL,
                                    False, TRACE_PTR, TRACE, o_desc, o_tile1,
                                    TMA_STORE, TRI_MASKED, WG_BOUNDS, Q_BUFS, ITEM_LICM)),
            (_consumer_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                                    kv_empty, v_empty, turn, QD, KD, VD, O, 2 * THIRD_P, n_m,
                                    n_work, H, GQA_GROUP, stride_qdz, stride_qdh, stride_kdz,
                                    stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh,
                                    stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block,
                                    v_block, qk_scale, 0, THIRD_P, BLOCK_M, BLOCK_N, HEAD_DIM,
                                    STAGES, P_SHIFT, 4, UNROLL2, LSE, stride_lz, stride_lh,
                                    stride_lm, RETURN_LSE, Q_TERMS, section_heads, SCHED, CAUSAL,
                                    False, TRACE_PTR, TRACE, o_desc, o_tile2,
                                    TMA_STORE, TRI_MASKED, WG_BOUNDS, Q_BUFS, ITEM_LICM)),
            (_producer_persistent, (q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem,
                                    q_bar, q_empty, k_full, v_full, kv_empty, v_empty, n_m,
                                    n_work, H, GQA_GROUP, seqlen_q, seqlen_k, section_heads,
                                    SCHED, BLOCK_M, BLOCK_N, VT_ROWS, STAGES, Q_TERMS,
                                    CAUSAL, TRACE_PTR, TRACE, Q_LOADS, Q_BUFS)),
        ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
        return      # without it the CTA went on into the non-persistent path below and hung
    elif PERSISTENT and HEAD_DIM > 128:
        # the split consumers (P @ V in four parts) on persistent CTAs
        mbarrier.arrive(turn.index(0))
        HALF_S: gl.constexpr = BLOCK_M // 2
        o_smem, o_tile0, o_tile1, o_tile2 = _out_tiles(o_desc, BLOCK_M, HEAD_DIM, CONSUMERS,
                                                       TMA_STORE)
        gl.warp_specialize([
            (_consumer_split_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full,
                                          v_full, kv_empty, turn, QD, KD, VD, O, 0, n_m,
                                          n_work, H, GQA_GROUP, stride_qdz, stride_qdh,
                                          stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                                          stride_oz, stride_oh, stride_om, stride_od,
                                          seqlen_q, seqlen_k, q_block, k_block, v_block,
                                          qk_scale, 0, section_heads, SCHED, HALF_S, BLOCK_M,
                                          BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, TURNS, SPLIT,
                                          CAUSAL, TRACE_PTR, TRACE, o_desc, o_smem,
                                          TMA_STORE, Q_BUFS, ITEM_LICM)),
            (_consumer_split_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full,
                                          v_full, kv_empty, turn, QD, KD, VD, O, HALF_S, n_m,
                                          n_work, H, GQA_GROUP, stride_qdz, stride_qdh,
                                          stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                                          stride_oz, stride_oh, stride_om, stride_od,
                                          seqlen_q, seqlen_k, q_block, k_block, v_block,
                                          qk_scale, 1, section_heads, SCHED, HALF_S, BLOCK_M,
                                          BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, TURNS, SPLIT,
                                          CAUSAL, TRACE_PTR, TRACE, o_desc, o_smem,
                                          TMA_STORE, Q_BUFS, ITEM_LICM)),
            (_producer_persistent, (q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem,
                                    q_bar, q_empty, k_full, v_full, kv_empty, v_empty, n_m,
                                    n_work, H, GQA_GROUP, seqlen_q, seqlen_k, section_heads,
                                    SCHED, BLOCK_M, BLOCK_N, VT_ROWS, STAGES, Q_TERMS,
                                    CAUSAL, TRACE_PTR, False, 1, Q_BUFS, False)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
        return
    elif PERSISTENT:
        mbarrier.arrive(turn.index(0))
        HALF_P: gl.constexpr = BLOCK_M // 2
        # a varlen call's plain stores keep to the output's columns (V_ROWS: its head dim where
        # that is below HEAD_DIM); the dense calls take a HEAD_DIM-wide output there
        OUT_COLS: gl.constexpr = V_ROWS if VARLEN else 0
        o_smem, o_tile0, o_tile1, o_tile2 = _out_tiles(o_desc, BLOCK_M, HEAD_DIM, CONSUMERS,
                                                       TMA_STORE)
        gl.warp_specialize([
            (_consumer_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                                    kv_empty, v_empty, turn, QD, KD, VD, O, 0, n_m, n_work, H,
                                    GQA_GROUP, stride_qdz, stride_qdh, stride_kdz, stride_kdh,
                                    stride_vdz, stride_vdh, stride_oz, stride_oh, stride_om,
                                    stride_od, seqlen_q, seqlen_k, q_block, k_block, v_block,
                                    qk_scale, 0, HALF_P, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES,
                                    P_SHIFT, 4, UNROLL2, LSE, stride_lz, stride_lh, stride_lm,
                                    RETURN_LSE, Q_TERMS, section_heads, SCHED, CAUSAL,
                                    TURNS, TRACE_PTR, TRACE, o_desc, o_tile0,
                                    TMA_STORE, 2, False, Q_BUFS, ITEM_LICM, VARLEN, CU_Q, CU_K,
                                    KV_STARTS, Q_TILES, Q_TILE_SEQ, n_t, DYNAMIC, OUT_COLS)),
            (_consumer_persistent, (q_smem, k_smem, v_smem, q_bar, q_empty, k_full, v_full,
                                    kv_empty, v_empty, turn, QD, KD, VD, O, HALF_P, n_m, n_work,
                                    H, GQA_GROUP, stride_qdz, stride_qdh, stride_kdz,
                                    stride_kdh, stride_vdz, stride_vdh, stride_oz, stride_oh,
                                    stride_om, stride_od, seqlen_q, seqlen_k, q_block, k_block,
                                    v_block, qk_scale, 1, HALF_P, BLOCK_M, BLOCK_N, HEAD_DIM,
                                    STAGES, P_SHIFT, 4, UNROLL2, LSE, stride_lz, stride_lh,
                                    stride_lm, RETURN_LSE, Q_TERMS, section_heads, SCHED, CAUSAL,
                                    TURNS, TRACE_PTR, TRACE, o_desc, o_tile1,
                                    TMA_STORE, 2, False, Q_BUFS, ITEM_LICM, VARLEN, CU_Q, CU_K,
                                    KV_STARTS, Q_TILES, Q_TILE_SEQ, n_t, DYNAMIC, OUT_COLS)),
            (_producer_persistent, (q_desc, ql_desc, k_desc, v_desc, q_smem, k_smem, v_smem,
                                    q_bar, q_empty, k_full, v_full, kv_empty, v_empty, n_m,
                                    n_work, H, GQA_GROUP, seqlen_q, seqlen_k, section_heads,
                                    SCHED, BLOCK_M, BLOCK_N, VT_ROWS, STAGES, Q_TERMS,
                                    CAUSAL, TRACE_PTR, TRACE, 1, Q_BUFS, True, VARLEN, CU_Q,
                                    CU_K, KV_STARTS, Q_TILES, Q_TILE_SEQ, n_t, DYNAMIC)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
        return

    q_bar0 = q_bar.index(0)
    _load_q(q_desc, ql_desc, q_smem, q_bar0, off_hz * seqlen_q + start_m, BLOCK_M // Q_LOADS,
            Q_LOADS, Q_TERMS)
    q_one = q_smem.index(0)     # the consumers without overlap take one Q term

    if MODE == 0:
        _consumer(q_one, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, turn, k_desc, v_desc,
                  QD, KD, VD, O, 0, start_m, off_b, off_h, off_kvh, kv_row0, vt_row0,
                  stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                  stride_oz, stride_oh, stride_om, stride_od,
                  seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                  BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, gl.num_warps(), False, True)
    elif MODE == 1 and OVERLAP:
        gl.warp_specialize([
            (_consumer_ovl, (q_smem, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, v_empty,
                             turn, QD, KD, VD, O, 0, start_m, off_b, off_h, off_kvh,
                             stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                             stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                             seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                             BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, gl.num_warps(),
                             False, UNROLL2)),
            (_producer, (k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                         kv_row0, vt_row0, seqlen_k, BLOCK_N, STAGES, OVERLAP)),
        ], [1], [PRODUCER_REGS])
    elif MODE == 1:
        gl.warp_specialize([
            (_consumer, (q_one, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, turn, k_desc,
                         v_desc, QD, KD, VD, O, 0, start_m, off_b, off_h, off_kvh, kv_row0,
                         vt_row0, stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                         stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                         seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                         BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, gl.num_warps(), False,
                         False)),
            (_producer, (k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                         kv_row0, vt_row0, seqlen_k, BLOCK_N, STAGES, OVERLAP)),
        ], [1], [PRODUCER_REGS])
    elif OVERLAP and CONSUMERS == 3:
        # three turn-free consumer warpgroups of BLOCK_M / 3 rows (FA3's hdim-64 shape, 192 rows)
        THIRD: gl.constexpr = BLOCK_M // 3
        o_smem, o_tile0, o_tile1, o_tile2 = _out_tiles(o_desc, BLOCK_M, HEAD_DIM, CONSUMERS,
                                                       TMA_STORE)
        gl.warp_specialize([
            (_consumer_ovl, (q_smem, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, v_empty,
                             turn, QD, KD, VD, O, 0, start_m, off_b, off_h, off_kvh,
                             stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                             stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                             seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                             THIRD, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, False,
                             UNROLL2, kv_end, full_end, causal_off, CAUSAL, LSE, stride_lz,
                             stride_lh, stride_lm, RETURN_LSE, Q_TERMS, TRI_MASKED,
                             WG_BOUNDS, o_desc, o_tile0, TMA_STORE)),
            (_consumer_ovl, (q_smem, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, v_empty,
                             turn, QD, KD, VD, O, THIRD, start_m, off_b, off_h, off_kvh,
                             stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                             stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                             seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 1,
                             THIRD, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, False,
                             UNROLL2, kv_end, full_end, causal_off, CAUSAL, LSE, stride_lz,
                             stride_lh, stride_lm, RETURN_LSE, Q_TERMS, TRI_MASKED,
                             WG_BOUNDS, o_desc, o_tile1, TMA_STORE)),
            (_consumer_ovl, (q_smem, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, v_empty,
                             turn, QD, KD, VD, O, 2 * THIRD, start_m, off_b, off_h, off_kvh,
                             stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                             stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                             seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                             THIRD, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, False,
                             UNROLL2, kv_end, full_end, causal_off, CAUSAL, LSE, stride_lz,
                             stride_lh, stride_lm, RETURN_LSE, Q_TERMS, TRI_MASKED,
                             WG_BOUNDS, o_desc, o_tile2, TMA_STORE)),
            (_producer, (k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                         kv_row0, vt_row0, kv_end, BLOCK_N, STAGES, OVERLAP)),
        ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
    elif OVERLAP:
        mbarrier.arrive(turn.index(0))
        HALF: gl.constexpr = BLOCK_M // 2
        gl.warp_specialize([
            (_consumer_ovl, (q_smem, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, v_empty,
                             turn, QD, KD, VD, O, 0, start_m, off_b, off_h, off_kvh,
                             stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                             stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                             seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                             HALF, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, TURNS,
                             UNROLL2, kv_end, full_end, causal_off, CAUSAL, LSE, stride_lz,
                             stride_lh, stride_lm, RETURN_LSE, Q_TERMS)),
            (_consumer_ovl, (q_smem, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, v_empty,
                             turn, QD, KD, VD, O, HALF, start_m, off_b, off_h, off_kvh,
                             stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                             stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                             seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 1,
                             HALF, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, TURNS,
                             UNROLL2, kv_end, full_end, causal_off, CAUSAL, LSE, stride_lz,
                             stride_lh, stride_lm, RETURN_LSE, Q_TERMS)),
            (_producer, (k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                         kv_row0, vt_row0, kv_end, BLOCK_N, STAGES, OVERLAP)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
    else:
        # consumer warpgroup 0 starts: its first turn is already granted
        mbarrier.arrive(turn.index(0))
        HALF: gl.constexpr = BLOCK_M // 2
        o_smem, o_tile0, o_tile1, o_tile2 = _out_tiles(o_desc, BLOCK_M, HEAD_DIM, CONSUMERS,
                                                       TMA_STORE)
        gl.warp_specialize([
            (_consumer_any, (q_one, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, turn, k_desc,
                         v_desc, QD, KD, VD, O, 0, start_m, off_b, off_h, off_kvh, kv_row0,
                         vt_row0, stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                         stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                         seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 0,
                         HALF, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, TURNS, False, SPLIT,
                         kv_end, full_end, causal_off, CAUSAL, TRACE_PTR, TRACE, o_desc,
                         o_smem, TMA_STORE)),
            (_consumer_any, (q_one, k_smem, v_smem, q_bar0, k_full, v_full, kv_empty, turn, k_desc,
                         v_desc, QD, KD, VD, O, HALF, start_m, off_b, off_h, off_kvh, kv_row0,
                         vt_row0, stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz,
                         stride_vdh, stride_oz, stride_oh, stride_om, stride_od,
                         seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale, 1,
                         HALF, BLOCK_N, HEAD_DIM, STAGES, P_SHIFT, 4, TURNS, False, SPLIT,
                         kv_end, full_end, causal_off, CAUSAL, TRACE_PTR, TRACE, o_desc,
                         o_smem, TMA_STORE)),
            (_producer, (k_desc, v_desc, k_smem, v_smem, k_full, v_full, kv_empty, v_empty,
                         kv_row0, vt_row0, kv_end, BLOCK_N, STAGES, OVERLAP)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


# ----------------------------------------------------------------------------------------------
# Host side

# the variants the scripts compile and time: name -> kernel_config kwargs
VARIANTS = {
    "plain_s2": dict(mode="plain", stages=2),
    "ws_s2": dict(mode="ws", stages=2),
    "ws_s3": dict(mode="ws", stages=3),
    "pingpong_s2": dict(mode="pingpong", stages=2),
    "pingpong_s3": dict(mode="pingpong", stages=3),
    # hdim 128 non-causal on 256-key tiles (session 20, not timed; needs 256-key or per-head
    # K / V descale blocks): offline no spills (147,808 / 213,392 B of shared memory with two /
    # three stages); the overlap kernels spill 2.1-4.0 KB there
    "pingpong_n256_s2": dict(mode="pingpong", stages=2, block_n=256),
    "pingpong_n256_s3": dict(mode="pingpong", stages=3, block_n=256),
    # round 2: intra-warpgroup overlap (S_j under P_{j-1} @ V_{j-1}, one turn per GEMM pair)
    "ws_ovl_s2": dict(mode="ws", stages=2, overlap=True),
    "ws_ovl_s3": dict(mode="ws", stages=3, overlap=True),
    "pingpong_ovl_s2": dict(mode="pingpong", stages=2, overlap=True),
    "pingpong_ovl_s3": dict(mode="pingpong", stages=3, overlap=True),
    # two consumer warpgroups without turn barriers (is the turn protocol the cost?)
    "dual_s2": dict(mode="pingpong", stages=2, turns=False),
    "dual_ovl_s2": dict(mode="pingpong", stages=2, overlap=True, turns=False),
    "dual_ovl_s3": dict(mode="pingpong", stages=3, overlap=True, turns=False),
    # BLOCK_N 64: S and P take half the registers, so the overlap fits beside acc and P @ V
    "pingpong_n64_s3": dict(mode="pingpong", stages=3, block_n=64),
    "pingpong_ovl_n64_s3": dict(mode="pingpong", stages=3, overlap=True, block_n=64),
    "pingpong_ovl_n64_s4": dict(mode="pingpong", stages=4, overlap=True, block_n=64),
    # head dim 256: the four P @ V parts pipelined (session 9)
    "pingpong_n64_s3_pipe": dict(mode="pingpong", stages=3, block_n=64, pv_pipe=True),
    # Q in registers as the A operand of Q K^T (session 19), and the tree row max
    "pingpong_n64_s3_qreg": dict(mode="pingpong", stages=3, block_n=64, pv_pipe=True,
                                 q_regs=True),
    "pingpong_n64_s3_qreg_tree": dict(mode="pingpong", stages=3, block_n=64, pv_pipe=True,
                                      q_regs=True, tree_max=True),
    # 128-key tiles at hdim 256 (session 19: offline 380-436 B spilled, timed 9-11% faster than
    # 64-key tiles all the same; dispatched). _eighths: P @ V quarters as two eighth-width
    # GEMMs each (offline 232 / 200 B non-causal, 60 / 100 causal; session 20: 4-6% slower
    # non-causal, causal without turns +8-10%: VARIANT_D256_CAUSAL)
    "pingpong_n128_s2_pipe": dict(mode="pingpong", stages=2, block_n=128, pv_pipe=True),
    "pingpong_n128_s2_pipe_noturn": dict(mode="pingpong", stages=2, block_n=128, pv_pipe=True,
                                         turns=False),
    # the output quarters through shared memory and TMA (session 21, not timed yet): one / two
    # (64, 64) tiles a warpgroup; the non-causal and causal dispatches
    "pingpong_n128_s2_pipe_noturn_ts": dict(mode="pingpong", stages=2, block_n=128,
                                            pv_pipe=True, turns=False, tma_store=1),
    "pingpong_n128_s2_pipe_noturn_ts2": dict(mode="pingpong", stages=2, block_n=128,
                                             pv_pipe=True, turns=False, tma_store=2),
    "pingpong_n128_s2_eighths_noturn_ts": dict(mode="pingpong", stages=2, block_n=128,
                                               pv_eighths=True, turns=False, tma_store=1),
    "pingpong_n128_s2_eighths_noturn_ts2": dict(mode="pingpong", stages=2, block_n=128,
                                                pv_eighths=True, turns=False, tma_store=2),
    "pingpong_n128_s2_eighths": dict(mode="pingpong", stages=2, block_n=128, pv_eighths=True),
    "pingpong_n128_s3_eighths": dict(mode="pingpong", stages=3, block_n=128, pv_eighths=True),
    "pingpong_n128_s2_eighths_noturn": dict(mode="pingpong", stages=2, block_n=128,
                                            pv_eighths=True, turns=False),
    # (the eighths pipelined, pv_pipe with pv_eighths, ran slower causal and not in session 21
    # (RESULTS.md "Session 21") and were removed in session 23)
    "pingpong_n128_s2_eighths_qreg": dict(mode="pingpong", stages=2, block_n=128,
                                          pv_eighths=True, q_regs=True),
    "pingpong_n64_s3_qreg_tree_noturn": dict(mode="pingpong", stages=3, block_n=64,
                                             pv_pipe=True, q_regs=True, tree_max=True,
                                             turns=False),
    # overlap loop unrolled by two (u2_s3: the dispatched variant since session 6)
    "pingpong_ovl_u2_s2": dict(mode="pingpong", stages=2, overlap=True, unroll2=True),
    "pingpong_ovl_u2_s3": dict(mode="pingpong", stages=3, overlap=True, unroll2=True),
    # one CTA per SM looping over (query block, head) items (dispatched non-causal, session 8)
    "pingpong_ovl_u2_s3_persist": dict(mode="pingpong", stages=3, overlap=True, unroll2=True,
                                       persistent=True),
    "pingpong_ovl_s3_persist": dict(mode="pingpong", stages=3, overlap=True, persistent=True),
    # persistent without the ping-pong turns (session 9), tried for head dim 64: as fast as
    # with the turns, 0.86-0.96x the tl kernel (H200, 2026-11-30, gluon_check_d64_dual_s10.json)
    "dual_ovl_u2_s3_persist": dict(mode="pingpong", stages=3, overlap=True, unroll2=True,
                                   turns=False, persistent=True),
    "dual_ovl_s3_persist": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                                persistent=True),
    # session 28: gluon_dispatch.VARIANT (hdim 128 non-causal up to 8k keys) without the turns,
    # as hdim 256 gained from dropping them in session 21; offline the same registers (168, no
    # spills) and the same softmax placement under P @ V as with them. Timed (H200, 2026-12-02
    # 03:13 UTC, results/gluon_check_nt128_s28.json): 770 / 820 / 846 TFLOP/s at 2k / 4k / 16k
    # keys against 802 / 824 / 836 with the turns (plain stores 734 / 813 / 861, turn-free 711
    # / 791 / 840); same bits. Not dispatched: at hdim 128 the turns pay.
    "dual_ovl_u2_s3_persist_ts": dict(mode="pingpong", stages=3, overlap=True, unroll2=True,
                                      turns=False, persistent=True, tma_store=1),
    # session 14: three turn-free consumer warpgroups, 192 query rows (FA3's hdim-64 tile)
    "tri_ovl_u2_s3": dict(mode="pingpong", stages=3, overlap=True, unroll2=True, turns=False,
                          consumers=3, block_m=192, consumer_regs=160),
    "tri_ovl_s3": dict(mode="pingpong", stages=3, overlap=True, turns=False, consumers=3,
                       block_m=192, consumer_regs=160),
    # session 15: persistent (GPU-tested bits; non-causal slower than tri_ovl_s3 from 4k keys)
    "tri_ovl_s3_persist": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                               consumers=3, block_m=192, consumer_regs=160, persistent=True),
    # session 15: causal, each warpgroup only its own rows' tiles
    "tri_ovl_s3_wgb": dict(mode="pingpong", stages=3, overlap=True, turns=False, consumers=3,
                           block_m=192, consumer_regs=160, wg_bounds=True),
    "tri_ovl_s3_persist_wgb": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                                   consumers=3, block_m=192, consumer_regs=160,
                                   persistent=True, wg_bounds=True),
    # session 22: head dim 256 on persistent CTAs with the output through TMA (the dispatched
    # VARIANT_D256 / VARIANT_D256_CAUSAL looping over work items). Session 23 (H200): causal
    # with item_licm dispatched (VARIANT_D256_CAUSAL); non-causal slower than one CTA per block
    # from 4k keys (results/gluon_check_d256persist_s23.json). The two-Q-buffer forms (q_bufs=2)
    # gave wrong causal bits (a ptxas miscompile, session 24; _consumer_split's Q_BUFS since
    # session 25).
    "pingpong_n128_s2_pipe_noturn_ts2_persist": dict(mode="pingpong", stages=2, pv_pipe=True,
                                                     turns=False, tma_store=2, persistent=True),
    "pingpong_n128_s2_eighths_noturn_ts2_persist": dict(mode="pingpong", stages=2,
                                                        pv_eighths=True, turns=False,
                                                        tma_store=2, persistent=True),
    # the same with LLVM's loop-invariant code motion left on in the item loop: offline
    # (Triton 3.6) ptxas then spills 20 / 20 B non-causal (488 / 448 without it, 428 / 372
    # for the dispatched non-persistent kernel, whose tile loop holds 34 of its LDL / STL) and
    # 156 / 172 causal (872 / 836; 64 / 116 not persistent)
    "pingpong_n128_s2_pipe_noturn_ts2_persist_licm": dict(
        mode="pingpong", stages=2, pv_pipe=True, turns=False, tma_store=2, persistent=True,
        item_licm=True),
    "pingpong_n128_s2_eighths_noturn_ts2_persist_licm": dict(
        mode="pingpong", stages=2, pv_eighths=True, turns=False, tma_store=2, persistent=True,
        item_licm=True),
    # two Q buffers, non-causal: 870 / 872 TFLOP/s at 1k keys against 840 / 830 for
    # VARIANT_D256 (sessions 23 / 24); dispatched up to 1.5k keys since session 24
    # (gluon_dispatch.VARIANT_D256_SHORT)
    "pingpong_n128_s2_pipe_noturn_ts2_persist_licm_q2": dict(
        mode="pingpong", stages=2, pv_pipe=True, turns=False, tma_store=2, persistent=True,
        item_licm=True, q_bufs=2),
    # session 25: causal (gluon_dispatch.VARIANT_D256_CAUSAL) with two Q buffers, once the
    # masked tiles read Q through a view ptxas cannot merge with the unmasked loop's
    "pingpong_n128_s2_eighths_noturn_ts2_persist_licm_q2": dict(
        mode="pingpong", stages=2, pv_eighths=True, turns=False, tma_store=2, persistent=True,
        item_licm=True, q_bufs=2),
    # session 22: the three consumers' output through shared memory and TMA (one (64, 64)
    # tile a warpgroup), one CTA a block and persistent (gluon_dispatch.VARIANT_D64: causal
    # calls since session 22, non-causal ones since session 28)
    "tri_ovl_s3_ts": dict(mode="pingpong", stages=3, overlap=True, turns=False, consumers=3,
                          block_m=192, consumer_regs=160, tma_store=1),
    "tri_ovl_s3_persist_wgb_q2_ts": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                                         consumers=3, block_m=192, consumer_regs=160,
                                         persistent=True, wg_bounds=True, q_bufs=2,
                                         tma_store=1),
    # session 11: the output through shared memory and an asynchronous TMA store
    "pingpong_ovl_u2_s3_persist_ts": dict(mode="pingpong", stages=3, overlap=True, unroll2=True,
                                          persistent=True, tma_store=1),
    "pingpong_ovl_s3_persist_ts": dict(mode="pingpong", stages=3, overlap=True, persistent=True,
                                       tma_store=1),
    "pingpong_ovl_u2_s3_persist_ts2": dict(mode="pingpong", stages=3, overlap=True, unroll2=True,
                                           persistent=True, tma_store=2),
    "pingpong_ovl_s3_persist_ts2": dict(mode="pingpong", stages=3, overlap=True,
                                        persistent=True, tma_store=2),
    # session 16: two Q buffers (the next item's Q loads under this item's last tiles)
    "pingpong_ovl_s3_persist_ts2_q2": dict(mode="pingpong", stages=3, overlap=True,
                                           persistent=True, tma_store=2, q_bufs=2),
    "pingpong_ovl_u2_s3_persist_ts_q2": dict(mode="pingpong", stages=3, overlap=True,
                                             unroll2=True, persistent=True, tma_store=1,
                                             q_bufs=2),
    # session 18: causal with one full-width TMA store (0 B spilled, session 17's full overlap)
    "pingpong_ovl_s3_persist_ts_q2": dict(mode="pingpong", stages=3, overlap=True,
                                          persistent=True, tma_store=1, q_bufs=2),
    "tri_ovl_s3_persist_q2": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                                  consumers=3, block_m=192, consumer_regs=160, persistent=True,
                                  q_bufs=2),
    "tri_ovl_s3_persist_wgb_q2": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                                      consumers=3, block_m=192, consumer_regs=160,
                                      persistent=True, wg_bounds=True, q_bufs=2),
    # session 17: the dispatched persistent kernels with LLVM's loop-invariant code motion left
    # on in the item loop (as before session 17; _consumer_persistent), for timing beside them
    "pingpong_ovl_u2_s3_persist_licm": dict(mode="pingpong", stages=3, overlap=True,
                                            unroll2=True, persistent=True, item_licm=True),
    "pingpong_ovl_u2_s3_persist_ts_licm": dict(mode="pingpong", stages=3, overlap=True,
                                               unroll2=True, persistent=True, tma_store=1,
                                               item_licm=True),
    "pingpong_ovl_s3_persist_ts2_licm": dict(mode="pingpong", stages=3, overlap=True,
                                             persistent=True, tma_store=2, item_licm=True),
    # session 26: the three-consumer kernels' K / V ring two and four tiles deep (offline: the
    # same registers, spills and softmax placement; shared memory 49.5 / 82.3 KB non-causal);
    # timed within 1% of the three-deep ring, causal or not (results/gluon_check_d64stages_*)
    "tri_ovl_s2": dict(mode="pingpong", stages=2, overlap=True, turns=False, consumers=3,
                       block_m=192, consumer_regs=160),
    "tri_ovl_s4": dict(mode="pingpong", stages=4, overlap=True, turns=False, consumers=3,
                       block_m=192, consumer_regs=160),
    # (session 27's tail split, the last query block in a second launch on the SMs the full
    # blocks' last wave leaves idle, was dispatched at hdim 64 4k keys until the persistent
    # form above took those calls in session 28; removed after it, code in commit 65080c8)
    "tri_ovl_s4_persist_wgb_q2_ts": dict(mode="pingpong", stages=4, overlap=True, turns=False,
                                         consumers=3, block_m=192, consumer_regs=160,
                                         persistent=True, wg_bounds=True, q_bufs=2,
                                         tma_store=1),
    "tri_ovl_s3_persist_wgb_licm": dict(mode="pingpong", stages=3, overlap=True, turns=False,
                                        consumers=3, block_m=192, consumer_regs=160,
                                        persistent=True, wg_bounds=True, item_licm=True),
}


def kernel_config(mode: str = "ws", block_n: int = 128, stages: int = 2,
                  producer_regs: int = 24, consumer_regs: int = 240, overlap: bool = False,
                  block_m: int = 128, turns: bool = True, unroll2: bool = False,
                  persistent: bool = False, pv_pipe: bool = False, tma_store: int = 0,
                  consumers: int = 2, wg_bounds: bool = False, q_bufs: int = 1,
                  item_licm: bool = False, q_regs: bool = False, tree_max: bool = False,
                  pv_eighths: bool = False, dynamic: bool = False) -> dict:
    """Constexprs and launch options of one variant. overlap: the intra-warpgroup pipeline of
    _consumer_ovl (modes ws and pingpong only). turns=False: mode pingpong without the turn
    barriers (two independent consumer warpgroups). unroll2: overlap loop unrolled by two.
    persistent: one CTA per SM looping over (query block, head) items (mode pingpong with
    overlap; GPU tests: tests/test_gluon_dispatch.py; or, head dims above 128, with pv_pipe /
    pv_eighths: _consumer_split_persistent, session 22, dispatched since session 23). pv_pipe: head
    dims above 128 (mode pingpong without overlap), the four P @ V parts pipelined
    (_tile_split). tma_store
    (persistent, or mode pingpong without overlap at head dims above 128): 0 plain stores of
    the output; persistent, 1 one TMA store a warpgroup and item through a (64, head_dim)
    shared tile, 2 two half-width ones through half the shared memory (_consumer_store); head
    dims above 128, four quarter-width ones through 1 / 2 shared tiles (_store_quarter).
    consumers: 2, or 3 turn-free consumer warpgroups of block_m / 3 = 64 rows each (mode
    pingpong with overlap, turns=False; FA3's shape at hdim 64: more warps to hide the exp2
    unit's latency), persistent or not, with tma_store 0 or 1 (one (64, head_dim) shared tile
    a warpgroup). wg_bounds (three consumers): causal, each
    warpgroup computes only its own rows' tiles (_ovl_work's WG_BOUNDS). q_bufs (persistent):
    1, or 2 Q buffers, so that an item's Q loads while the previous item's last Q K^T runs.
    item_licm (persistent): leave LLVM's loop-invariant code motion on in the item loop (off
    by default since session 17: it cost the softmax / P @ V overlap, _consumer_persistent).
    q_regs (with pv_pipe): Q as a register operand of Q K^T; tree_max: the softmax's row max
    as a tree (_row_max); pv_eighths: each P @ V quarter as two eighth-width GEMMs
    (_pv_quarter_in_eighths; not with pv_pipe: the eighths pipelined measured slower, causal
    or not, and were removed in session 23); all head dims above 128 (_consumer_split's SPLIT
    bits). dynamic (persistent, varlen launches only): items handed to CTAs as they come free
    from a counter in device memory, causal tiles longest first within each sequence
    (_take_item), instead of items pid, pid + grid, ..."""
    if consumers not in (2, 3) or (consumers == 3 and not (
            mode == "pingpong" and overlap and not turns and tma_store in (0, 1)
            and block_m == 192)):
        raise ValueError("consumers: 2, or 3 with mode 'pingpong', overlap=True, turns=False, "
                         "tma_store 0 / 1 and block_m=192")
    if wg_bounds and consumers != 3:
        raise ValueError("wg_bounds needs consumers=3 (with turns, every warpgroup runs every "
                         "tile)")
    if overlap and mode == "plain":
        raise ValueError("overlap needs a producer partition (mode ws or pingpong)")
    split_opts = pv_pipe or q_regs or tree_max or pv_eighths
    if persistent and not (mode == "pingpong" and (overlap or split_opts)):
        raise ValueError("persistent needs mode 'pingpong' with overlap=True, or with pv_pipe / "
                         "pv_eighths (head dims > 128)")
    if split_opts and not (mode == "pingpong" and not overlap):
        raise ValueError("pv_pipe, q_regs, tree_max and pv_eighths need mode 'pingpong' with "
                         "overlap=False (head dims > 128)")
    if pv_pipe and pv_eighths:
        raise ValueError("pv_pipe and pv_eighths: one or the other (the pipelined eighths were "
                         "slower in session 21 and are gone)")
    if q_regs and not (pv_pipe or pv_eighths):
        raise ValueError("q_regs needs pv_pipe=True or pv_eighths=True (the register budget "
                         "was measured with them)")
    if q_bufs not in (1, 2) or (q_bufs == 2 and not persistent):
        raise ValueError("q_bufs: 1, or 2 with persistent=True")
    if dynamic and not (persistent and consumers == 2 and overlap):
        raise ValueError("dynamic needs persistent=True with two consumers and overlap (the "
                         "varlen items)")
    if item_licm and not persistent:
        raise ValueError("item_licm needs persistent=True (the item loop)")
    if tma_store not in (0, 1, 2) or (tma_store and not (
            persistent or consumers == 3 or (mode == "pingpong" and not overlap))):
        raise ValueError("tma_store: 0, or 1 / 2 with persistent=True (the output in one / two "
                         "TMA stores), 1 with three consumers, or with mode 'pingpong', "
                         "overlap=False (head dims > 128: through one / two shared tiles)")
    num_warps = 4 if mode == "pingpong" else block_m // 16
    return dict(MODE=MODES[mode], BLOCK_M=block_m, BLOCK_N=block_n, STAGES=stages,
                PRODUCER_REGS=producer_regs, CONSUMER_REGS=consumer_regs, OVERLAP=overlap,
                TURNS=turns, UNROLL2=unroll2, PERSISTENT=persistent,
                SPLIT=int(pv_pipe) | int(q_regs) << 1 | int(tree_max) << 2 | int(pv_eighths) << 3,
                TMA_STORE=int(tma_store), CONSUMERS=consumers, WG_BOUNDS=wg_bounds,
                Q_BUFS=q_bufs, ITEM_LICM=item_licm, DYNAMIC=dynamic, num_warps=num_warps)


@functools.lru_cache(maxsize=None)
def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


L2_SECTION_BYTES = 16 << 20     # K + V bytes of the heads a causal persistent section spans


def _section_heads(seqlen_k: int, head_dim: int) -> int:
    """Heads per section of the causal persistent order (_work_item): their FP8 K and V fit in
    L2_SECTION_BYTES (a third of the H100's / H200's 50 MB L2)."""
    return max(1, L2_SECTION_BYTES // (2 * seqlen_k * head_dim))


# _causal_schedule's arguments -> its table on the device. Never evicted: a CUDA graph that
# captured a launch keeps reading the table's memory on every replay. A table is 4 bytes per
# (query block, head) item (8 KB for 16 heads x 16k queries).
_SCHEDULES: dict = {}


def causal_schedule_for(*args) -> torch.Tensor | None:
    """_causal_schedule(*args), cached per shape (device_tables.cached_table: built outside any
    CUDA-graph pool, never evicted); None when the table is not cached yet and the current
    stream is capturing a CUDA graph (the host-to-device copy cannot be captured: the caller
    launches the non-persistent variant instead, which gives the same bits)."""
    return cached_table(_SCHEDULES, args, args[-1], _causal_schedule, *args,
                        in_capture=_no_schedule)


def _no_schedule(*args) -> None:
    return None


def causal_item_tiles(w: int, n_m: int, n_hz: int, section_heads: int, seqlen_q: int,
                      seqlen_k: int, block_m: int, block_n: int, causal_mode: int) -> int:
    """KV tiles of causal work item w (_work_item's order and _causal_bounds' kv_end, on the
    host)."""
    off = seqlen_k - seqlen_q if causal_mode == 2 else 0
    sec, r = divmod(w, n_m * section_heads)
    heads = min(section_heads, n_hz - sec * section_heads)
    start_m = (n_m - 1 - r // heads) * block_m
    last_row = min(start_m + block_m, seqlen_q) - 1
    return -(-max(min(seqlen_k, last_row + off + 1), 0) // block_n)


def _causal_schedule(n_m: int, n_hz: int, section_heads: int, grid: int, seqlen_q: int,
                     seqlen_k: int, block_m: int, block_n: int, causal_mode: int,
                     device) -> torch.Tensor:
    """Which persistent CTA runs which causal item: int32 (grid + 1 offsets, then the items CTA
    by CTA, each CTA's in increasing order). Items in _work_item's order (longest query blocks
    first within each L2 section) go one by one to the CTA with the least work so far (a greedy
    longest-processing-time schedule, as a dynamic scheduler would hand them out), work = the
    item's KV tiles + 1 for its prologue and epilogue. A plain stride (item w to CTA w % grid)
    left CTA 0 ~15% more work than the mean at 4k-16k keys (benchmarks/experiments/
    causal_balance_sim.py) and ran 7-14% slower than one CTA per block; this table's worst CTA
    is within 1%.
    Built on the host and copied to the device once per shape (causal_schedule_for caches
    it)."""
    loads = [(0, c) for c in range(grid)]
    owned: list[list[int]] = [[] for _ in range(grid)]
    for w in range(n_m * n_hz):
        tiles = causal_item_tiles(w, n_m, n_hz, section_heads, seqlen_q, seqlen_k, block_m,
                                  block_n, causal_mode)
        load, c = heapq.heappop(loads)
        owned[c].append(w)
        heapq.heappush(loads, (load + tiles + 1, c))
    offsets = [0]
    for items in owned:
        offsets.append(offsets[-1] + len(items))
    flat = offsets + [w for items in owned for w in items]
    return torch.tensor(flat, dtype=torch.int32, device=device)


_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}


def _tma_strides(out) -> list | None:
    """out (B, Hq, Sq, D)'s strides for a TMA descriptor, or None where TMA cannot address it
    (TMA's rules: 16-byte aligned base and strides, unit last stride; and no overlapping rows):
    the kernel then stores with plain stores. A size-1 dim's coordinate is always 0, so its
    stride is never used: an unusable one is replaced by the extent of the dims inside it."""
    if out.dim() != 4 or out.stride(-1) != 1 or out.data_ptr() % 16:
        return None
    es = out.element_size()

    def usable(st):
        return st > 0 and (st * es) % 16 == 0
    strides = list(out.stride())
    for i in (2, 1, 0):
        if out.shape[i] == 1 and not usable(strides[i]):
            strides[i] = strides[i + 1] * out.shape[i + 1]
    return strides if all(usable(st) for st in strides[:-1]) else None


def _check_trace(trace, grid: tuple, persistent: bool, consumers: int, head_dim: int) -> None:
    """gluon_attention_fwd's trace buffer: what the TRACE kernel writes into (one slot per CTA
    of the grid, row-major: _trace_slot)."""
    want = (math.prod(grid), 3, TRACE_ITEMS.value, 8)
    if not persistent and head_dim <= 128:
        raise ValueError("trace: clock stamps are taken by persistent launches, and by the "
                         "head-dim > 128 kernel (per KV tile)")
    if consumers != 2:
        # _trace_slot has one slot per consumer of two (and the producer's): a third
        # consumer's stamps would overwrite the first's
        raise ValueError("trace: clock stamps are taken with two consumer warpgroups only")
    if trace.dtype != torch.int64 or tuple(trace.shape) != want or not trace.is_contiguous():
        raise ValueError(f"trace must be a contiguous int64 tensor of shape {want}, got "
                         f"{trace.dtype} {tuple(trace.shape)}")


@functools.lru_cache(maxsize=None)
def smem_layouts(head_dim: int, block_m: int, block_n: int):
    """NVMMA shared layouts of the Q, K and V^T tiles (used by the descriptors and the kernel).
    Cached: building them took about a fifth of a launch's host time (cProfile, H200)."""
    q = gl.NVMMASharedLayout.get_default_for([block_m, head_dim], gl.float8e4nv)
    k = gl.NVMMASharedLayout.get_default_for([block_n, head_dim], gl.float8e4nv)
    v = gl.NVMMASharedLayout.get_default_for([head_dim, block_n], gl.float8e4nv)
    return q, k, v


def q_box_rows(block_m: int, consumers: int) -> int:
    """Rows of Q's TMA block: block_m, or with three consumers one consumer's block_m / 3
    (TMA blocks have power-of-two shapes)."""
    return block_m // 3 if consumers == 3 else block_m


@functools.lru_cache(maxsize=None)
def out_tile_layout(rows: int, head_dim: int, tma_store: int, dtype: torch.dtype):
    """Block shape and NVMMA shared layout of the output tile a warpgroup stores with TMA
    (rows: a warpgroup's, block_m / consumers; tma_store 1: all head_dim columns, 2: half the
    columns a store; head dims above 128: a quarter of the columns, _store_quarter's: the
    kernel's tiles, _out_tiles); cached, as smem_layouts."""
    blk = [1, 1, rows, head_dim // 4 if head_dim > 128 else head_dim // tma_store]
    return blk, gl.NVMMASharedLayout.get_default_for(blk, _GL_DTYPES[dtype])


def gluon_attention_fwd(q8, k8, vt8, q_descale, k_descale, v_descale, q_block, k_block, v_block,
                        softmax_scale, out=None, causal=None, lse=None,
                        v_key_order: str = "natural", q_lo=None, trace=None,
                        varlen: VarlenTables | None = None, **variant):
    """FP8 attention forward on already-quantised inputs (CUDA, Hopper).

    variant: the kernel's options, kernel_config's keyword arguments (mode, block_n, stages,
    overlap, persistent, tma_store, ...; its docstring says what each does and which go
    together), e.g. **VARIANTS[name] or a gluon_dispatch VARIANT*; left out, kernel_config's
    defaults. An unknown name is a TypeError, a bad combination a ValueError.

    q8 (B, Hq, Sq, D) and k8 (B, Hkv, Sk, D) float8_e4m3fn, contiguous (D: 64, 128, 256, or
    80 / 96 / 112 on the 128 kernel, gluon_dispatch.kernel_head_dim); vt8 (B, Hkv, D, Sk)
    float8_e4m3fn with unit stride along Sk and a row stride (stride(-2)) that is a multiple of 16
    (a view of a (B, Hkv, D, Sk16) buffer is fine), its keys in `v_key_order`: "mma" (the order
    the kernel reads, quant/key_order.py; what quantize(..., key_order="mma") writes) or
    "natural" (permuted here first: one more pass over V^T); q/k/v_descale (B, H, NB) float32,
    row r uses descale[..., r // *_block]. k_block and v_block must be multiples of block_n
    (one K and one V descale per KV tile) or cover all Sk keys (one per head); each value
    compiles its own kernel. out: optional (B, Hq, Sq, D) tensor (any strides) of bfloat16
    (the default), float16 or float32: the store converts to out's type, as triton_fwd.py's.
    causal: None, "top_left" or "bottom_right" (triton_fwd.CAUSAL_MODES; mode "pingpong" with
    overlap, or without it above head dim 128; bottom-right needs Sk >= Sq so that every row
    sees a key). sm_90a, Triton 3.6 (2026-11-30, after the descale and P changes): 0 spills
    with or without unroll2, except unroll2 with top-left and the LSE (16 B).
    lse: optional (B, Hq, Sq) float32 tensor (any strides, mode "pingpong" with overlap) that
    receives the natural-log LSE of every row, as attention_fwd_fp8's.
    q_lo: None, or Q's second FP8 term (Recipe.q_terms == 2; shape, dtype and layout of q8,
    sharing q_descale; mode "pingpong" with overlap): S = (q8 + q_lo) K^T, one more wgmma a tile.
    Persistent causal calls run their items in _work_item's longest-first order; with three
    consumers Q's TMA block is 64 rows (q_box_rows). tma_store falls back to 0 where TMA
    cannot address out (an unaligned base or stride, _tma_strides) or the CTAs are not
    persistent (a causal call under a capture without its schedule; head dims up to 128),
    same bits either way.
    trace: None, or an int64 CUDA tensor (CTAs, 3, TRACE_ITEMS, 8) that a persistent launch fills
    with clock stamps per work item (a debugging aid: benchmarks/experiments/gluon_trace.py),
    the head-dim > 128 kernel per KV tile (gluon_trace_tiles.py).
    varlen: None, or the VarlenTables of one batch of packed sequences (B = 1): q8 (1, Hq,
    total_q, D), k8 / vt8 in padded rows (each sequence starting on a KV tile, k_block and
    v_block multiples of block_n), out / lse over the packed rows; the head-dim-128 kernel
    (head dims 80 / 96 / 112 on it too: the plain stores keep to out's D columns), persistent
    variants with tma_store 0 or 1 (1: a warpgroup's rows all in the sequence through TMA, a
    sequence's last rows through plain stores), causal None or "bottom_right" (per sequence).
    The host work after the first call of a kind (the shapes, strides, dtypes, alignments and
    variant: _launch_plan's key) is cached: the checks, the launch constants, and the compiled
    kernel (fp8attn.kernel_launch, which skips Triton's per-call argument binding).
    Returns out.
    """
    if out is None:
        out = torch.empty(q8.shape, dtype=torch.bfloat16, device=q8.device)
    d = q8.shape[-1]
    hd = kernel_head_dim(d)
    if hd not in (None, d) and out.shape[-1] == d and not _stores_with_tma(variant, out) \
            and varlen is None:
        # a head dim run on the 128 kernel with plain stores, which would write all 128
        # columns: into a 128-wide buffer, then its first d columns into out (head dims the
        # kernel cannot run go on to _launch_plan's error)
        wide = torch.empty(*out.shape[:-1], hd, dtype=out.dtype, device=out.device)
        gluon_attention_fwd(q8, k8, vt8, q_descale, k_descale, v_descale, q_block, k_block,
                            v_block, softmax_scale, wide, causal, lse, v_key_order, q_lo, trace,
                            **variant)
        return out.copy_(wide[..., :d])
    key = (_meta(q8), _meta(k8), _meta(vt8), _meta(q_lo), _meta(q_descale), _meta(k_descale),
           _meta(v_descale), _meta(out), _meta(lse), _meta(trace), q_block, k_block, v_block,
           causal, v_key_order, tuple(variant.items()), q8.device,
           None if varlen is None else tuple(map(_meta, varlen)))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _launch_plan(q8, k8, vt8, q_lo, (q_descale, k_descale, v_descale), out, lse,
                            trace, q_block, k_block, v_block, causal, v_key_order,
                            variant, varlen)._replace(key=key)
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    sched = q_descale
    if plan.constants["DYNAMIC"]:
        # the work counter (zero) and each CTA's item slots (_take_item, _publish_item)
        sched = torch.zeros(1 + plan.grid[0] * plan.constants["Q_BUFS"] * ITEM_WORDS.value,
                            dtype=torch.int32, device=q8.device)
    if plan.schedule is not None:
        sched = causal_schedule_for(*plan.schedule)
        if sched is None:       # capturing, table not built yet: one CTA per block, same bits
            # one CTA an item: no item loop, one Q buffer; plain stores up to head dim 128 (the
            # split kernel above it stores through TMA without persistent CTAs too)
            one_cta = dict(variant, persistent=False, q_bufs=1, item_licm=False)
            if q8.shape[-1] <= 128:
                one_cta["tma_store"] = 0
            return gluon_attention_fwd(
                q8, k8, vt8, q_descale, k_descale, v_descale, q_block, k_block, v_block,
                softmax_scale, out, causal, lse, v_key_order, q_lo, trace, **one_cta)
    if v_key_order == "natural":
        vt8 = to_mma(vt8)
    q_desc = _descriptor(q8, plan.q_desc)
    vt16 = padded_view(vt8)
    kernel_launch.launch(_attn_fwd_gluon, plan.grid, plan.key, dict(
        plan.constants, q_desc=q_desc,
        ql_desc=q_desc if q_lo is None else _descriptor(q_lo, plan.q_desc),
        k_desc=_descriptor(k8, plan.k_desc), v_desc=_descriptor(vt16, plan.v_desc),
        o_desc=_descriptor(out, plan.o_desc) if plan.o_desc else q_desc,
        QD=q_descale, KD=k_descale, VD=v_descale, O=out, LSE=out if lse is None else lse,
        qk_scale=float(softmax_scale) * LOG2E, SCHED=sched,
        TRACE_PTR=q_descale if trace is None else trace,
        **({} if varlen is None else dict(CU_Q=varlen.cu_q, CU_K=varlen.cu_k,
                                          KV_STARTS=varlen.kv_starts, Q_TILES=varlen.q_tiles,
                                          Q_TILE_SEQ=varlen.q_tile_seq))))
    return out


MAX_PLANS = 256         # launch plans kept (a new kind of call beyond: all are dropped)
_PLANS: dict = {}


def _stores_with_tma(variant: dict, out) -> bool:
    """Whether a launch of variant stores into out through TMA (_launch_plan's choice)."""
    return _variant_tma_store(tuple(variant.items())) and _tma_strides(out) is not None


@functools.lru_cache(maxsize=None)
def _variant_tma_store(items: tuple) -> bool:
    # kernel_config takes about 6 us (CPU, 2026-12-02), asked on every call at head dims 80 /
    # 96 / 112 before the launch-plan cache; the dispatch has a handful of variants
    return bool(kernel_config(**dict(items))["TMA_STORE"])


def _meta(t) -> tuple | None:
    """What a launch plan depends on of a tensor argument (the data's alignment: TMA and
    Triton's pointer specialisation)."""
    return None if t is None else (t.shape, t.stride(), t.dtype, t.data_ptr() % 16 == 0)


class _Plan(NamedTuple):
    """The host work of a kind of call, done once (gluon_attention_fwd)."""
    key: tuple              # for kernel_launch (also fixes every specialisation)
    grid: tuple
    constants: dict         # the kernel's arguments that are not tensors or descriptors
    q_desc: tuple           # (shape, strides, block, layout) of each TMA descriptor
    k_desc: tuple
    v_desc: tuple
    o_desc: tuple | None    # None: plain stores
    schedule: tuple | None  # causal_schedule_for's arguments (persistent causal launches)


def _check_varlen(varlen: VarlenTables, cfg: dict, B: int, D: int, HD: int, causal_mode: int,
                  q_lo, block_n: int, k_block: int, v_block: int) -> None:
    """What a varlen launch needs (gluon_attention_fwd's varlen)."""
    if not (cfg["PERSISTENT"] and cfg["CONSUMERS"] == 2 and cfg["OVERLAP"] and HD == 128
            and cfg["TMA_STORE"] in (0, 1)):
        raise ValueError("varlen needs the head-dim-128 kernel (head dims 80 to 128) and a "
                         "persistent two-consumer variant with overlap, tma_store 0 or 1")
    if B != 1 or causal_mode == 1 or q_lo is not None:
        raise ValueError("varlen takes one batch of packed sequences, causal None or "
                         "'bottom_right', one Q term")
    if k_block % block_n or v_block % block_n:
        raise ValueError(f"varlen: k_block {k_block} and v_block {v_block} must be multiples of "
                         f"block_n {block_n} (K / V in padded rows, one descale a tile)")
    n_t = varlen.q_tiles.shape[0]
    for name, t, shape in (("cu_q", varlen.cu_q, None), ("cu_k", varlen.cu_k, None),
                           ("kv_starts", varlen.kv_starts, None),
                           ("q_tiles", varlen.q_tiles, (n_t, 2)),
                           ("q_tile_seq", varlen.q_tile_seq, (n_t,))):
        if t.dtype != torch.int32 or not t.is_contiguous() or (shape and t.shape != shape):
            raise ValueError(f"varlen {name}: want a contiguous int32 tensor"
                             + (f" of shape {shape}" if shape else "")
                             + f", got {t.dtype} {tuple(t.shape)}")


def _descriptor(base, params):
    """A TensorDescriptor over base with params (shape, strides, block, layout) that
    _launch_plan validated: built without the constructor's checks, which took about a third of
    the launch's own host time (cProfile, this sandbox). Only base.data_ptr() and its dtype are
    read from base (the launcher encodes the TMA descriptor from them and params)."""
    d = object.__new__(TensorDescriptor)
    d.base, (d.shape, d.strides, d.block_shape, d.layout) = base, params
    d.padding = "zero"
    return d


def _validated(base, shape, strides, block, layout) -> tuple:
    """(shape, strides, block, layout) for _descriptor, checked once by TensorDescriptor."""
    TensorDescriptor(base, shape, strides, block, layout)
    return shape, strides, block, layout


def _launch_plan(q8, k8, vt8, q_lo, descales, out, lse, trace, q_block, k_block, v_block,
                 causal, v_key_order, variant: dict, varlen=None) -> _Plan:
    """gluon_attention_fwd's checks and launch constants for a kind of call; keeps no tensor.
    variant: kernel_config's keyword arguments; varlen: gluon_attention_fwd's."""
    from ..quant.key_order import check_key_order, padded_len
    cfg = kernel_config(**variant)
    overlapped = cfg["MODE"] == MODES["pingpong"] and cfg["OVERLAP"]
    block_n, persistent, tma_store = cfg["BLOCK_N"], cfg["PERSISTENT"], cfg["TMA_STORE"]
    check_key_order(v_key_order)
    B, Hq, Sq, D = q8.shape
    Hkv, Sk = k8.shape[1], k8.shape[2]
    for name, t in (("q8", q8), ("k8", k8), ("vt8", vt8)):
        if t.dtype != torch.float8_e4m3fn:
            raise TypeError(f"{name} must be float8_e4m3fn, got {t.dtype}")
    HD = kernel_head_dim(D)     # the kernel's head dim: D, or 128 for 80 / 96 / 112
    if HD is None:
        raise ValueError(f"head dim {D}: the kernel runs {tuple(TILE_KEYS)}, and the multiples "
                         f"of 16 between 64 and 128 on its 128 form")
    if tuple(out.shape) not in (tuple(q8.shape), (B, Hq, Sq, HD)):
        raise ValueError(f"out shape {tuple(out.shape)}: want q8's {tuple(q8.shape)}")
    if not (q8.is_contiguous() and k8.is_contiguous()):
        raise ValueError(f"q8 {tuple(q8.stride())} and k8 {tuple(k8.stride())} must be contiguous")
    rs = vt8.stride(-2)
    if vt8.shape != (B, Hkv, D, Sk) or vt8.stride(-1) != 1 or rs % 16 \
            or vt8.stride(1) != D * rs or vt8.stride(0) != Hkv * D * rs:
        raise ValueError(f"vt8 shape {tuple(vt8.shape)} strides {tuple(vt8.stride())}: want "
                         f"({B}, {Hkv}, {D}, {Sk}), unit last stride, row stride % 16 == 0, "
                         f"heads packed")
    causal_mode = {None: 0, "top_left": 1, "bottom_right": 2}[causal]
    split = HD > 128        # P @ V in four parts: mode pingpong without overlap (_tile_split)
    if (lse is not None or q_lo is not None or (causal_mode and not split)) and not overlapped:
        raise ValueError("causal (head dims up to 128), lse and q_lo need mode 'pingpong' with "
                         "overlap=True")
    if q_lo is not None and (q_lo.shape != q8.shape or q_lo.dtype != q8.dtype
                             or not q_lo.is_contiguous()):
        raise ValueError(f"q_lo (shape {tuple(q_lo.shape)}, {q_lo.dtype}) must be a contiguous "
                         f"tensor of q8's shape {tuple(q8.shape)} and dtype {q8.dtype}")
    if cfg["SPLIT"] and D <= 128:
        raise ValueError(f"pv_pipe, q_regs, tree_max and pv_eighths change the P @ V in four "
                         f"parts of head dims above 128, not head dim {D}")
    if split and cfg["Q_BUFS"] == 2 and Sk < block_n:
        # Triton 3.6's ptxas miscompiles the non-causal form (session 24, compute-sanitizer and
        # the SASS: benchmarks/experiments/sass_loop_skip_check.py): the masked tile after the
        # full-tile loop reads Q K^T descriptors (a uniform register) that only the loop's
        # preheader writes, so an item with no unmasked tile reads the previous item's Q buffer
        # or an undefined address. Causal items have _consumer_split's Q view (session 25),
        # but calls with no unmasked tile at all are not GPU-tested: refused too
        raise ValueError(f"q_bufs=2 with head dim {D} (> 128) is not supported for seqlen_k "
                         f"{Sk} < {block_n} (no unmasked KV tile: miscompiled non-causal, "
                         f"untested causal); use q_bufs=1")
    if split and not (cfg["MODE"] == MODES["pingpong"] and not cfg["OVERLAP"]):
        raise ValueError(f"head dim {D} (> 128: P @ V in four parts) needs mode 'pingpong' "
                         f"with overlap=False, so no lse and one Q term")
    if varlen is not None:
        _check_varlen(varlen, cfg, B, D, HD, causal_mode, q_lo, block_n, k_block, v_block)
    elif cfg["DYNAMIC"]:
        raise ValueError("dynamic schedules varlen items; this launch has no varlen tables")
    elif causal_mode == 2 and Sk < Sq:
        raise ValueError(f"bottom-right causal with seqlen_q {Sq} > seqlen_k {Sk}: rows without "
                         f"keys are not handled by this kernel")
    if (k_block < Sk and k_block % block_n) or (v_block < Sk and v_block % block_n):
        raise ValueError(f"k_block {k_block} and v_block {v_block} must be multiples of "
                         f"block_n {block_n} or cover all {Sk} keys (per-tile K/V descales)")
    if out.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"out must be bfloat16, float16 or float32, got {out.dtype}")
    # compile-time descale blocks: 0 = one descale for the whole head
    k_block = 0 if k_block >= Sk else k_block
    v_block = 0 if v_block >= Sk else v_block
    bm = cfg["BLOCK_M"]
    n_m = triton.cdiv(Sq, bm)
    section = _section_heads(Sk, D)
    n_work = n_m * B * Hq
    n_t = 1
    if varlen is not None:
        n_t = varlen.q_tiles.shape[0]
        n_work = n_t * Hq
    grid = (min(n_work, _sm_count(q8.device)),) if persistent else (n_m, B * Hq)
    schedule = None
    if persistent and causal_mode and varlen is None:
        schedule = (n_m, B * Hq, section, grid[0], Sq, Sk, bm, block_n, causal_mode,
                    q8.device)
    if tma_store and not (persistent or split or cfg["CONSUMERS"] == 3):
        raise ValueError(f"tma_store needs persistent=True, three consumers or a head dim above "
                         f"128, not head dim {D}")
    o_strides = _tma_strides(out)
    if o_strides is None:
        tma_store = cfg["TMA_STORE"] = 0
    # (varlen calls' plain stores keep to out's columns: the kernel's OUT_COLS)
    if out.shape[-1] < HD and not tma_store and varlen is None:
        raise ValueError(f"head dim {D} on the {HD} kernel stores through TMA only (plain stores "
                         f"write {HD} columns: gluon_attention_fwd passes a {HD}-wide out)")
    if trace is not None:
        _check_trace(trace, grid, persistent, cfg["CONSUMERS"], HD)
    q_box = q_box_rows(bm, cfg["CONSUMERS"])
    ql, kl, vl = smem_layouts(HD, q_box, block_n)
    # HD > D: TMA zero-fills the columns of Q and K past D (kernel_head_dim), and reads the
    # next HD - D rows of V^T as the tile's last rows (the next head's, or zeros past the end):
    # they make only output columns past D, which the store drops
    q_desc = _validated(q8, [B * Hq * Sq, D], [D, 1], [q_box, HD], ql)
    k_desc = _validated(k8, [B * Hkv * Sk, D], [D, 1], [block_n, HD], kl)
    # V^T as (B*Hkv*D, Sk16) rows of stride rs, Sk16 = Sk rounded up to 16 (padded_view): in the
    # "mma" order the last group's positions past Sk can hold keys below Sk; columns >= Sk16
    # are zero-filled by TMA. A natural-order V^T is permuted first (to_mma: rows of Sk16).
    sk16 = padded_len(Sk)
    rs = sk16 if v_key_order == "natural" else rs
    v_desc = _validated(vt8, [B * Hkv * D, sk16], [rs, 1], [HD, block_n], vl)
    o_desc = None
    if tma_store:
        blk, ol = out_tile_layout(bm // cfg["CONSUMERS"], HD, tma_store, out.dtype)
        o_desc = _validated(out, list(out.shape), o_strides, blk, ol)
    constants = dict(
        H=Hq, GQA_GROUP=Hq // Hkv, seqlen_q=Sq, seqlen_k=Sk, q_block=q_block, k_block=k_block,
        v_block=v_block, n_m=n_m, n_work=n_work, section_heads=section, HEAD_DIM=HD, P_SHIFT=8,
        CAUSAL=causal_mode, RETURN_LSE=lse is not None, Q_TERMS=1 if q_lo is None else 2,
        TRACE=trace is not None, V_ROWS=0 if D == HD else D, VARLEN=varlen is not None,
        n_t=n_t, **cfg)
    for name, t in zip("qkv", descales):
        constants.update(zip((f"stride_{name}dz", f"stride_{name}dh"), t.stride()[:2]))
    constants.update(zip(("stride_oz", "stride_oh", "stride_om", "stride_od"), out.stride()))
    constants.update(zip(("stride_lz", "stride_lh", "stride_lm"),
                         (0, 0, 0) if lse is None else lse.stride()))
    return _Plan(None, grid, constants, q_desc, k_desc, v_desc, o_desc, schedule)
