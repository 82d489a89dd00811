"""Experiment (session 3, 2026-11-22), not part of the package: the attention kernel's numerics
with TMA tensor-descriptor loads, and optionally Triton's automatic Hopper warp specialisation.

Restricted to what the probe needed: per-tile K descale (K_MODE 1), V descale constant per tile,
no varlen, power-of-two head dim, SPLIT 1 or 2. ONE_LOOP=True (required by WS=True) puts every
KV tile in one loop with the masks always applied: Triton 3.6's Hopper warp-specialisation pass
fails ("PassManager::run failed") on a kernel with the unmasked + masked loop pair, and silently
skips a loop whose body has a data-dependent `if`. Results: benchmarks/results/attention_notes.md, session 3.
Run: PYTHONPATH=.:<fa3 wheel dir> python benchmarks/experiments/probe_tma_ws.py (needs CUDA)."""
import torch
import triton
import triton.language as tl
from fp8attn.attention.triton_fwd import _round_mantissa

LOG2E = 1.4426950408889634


@triton.jit
def _tile(acc, acc1, l_i, m_i, vs_prev, q, desc_k, desc_v, kd_ptr, vd_ptr, off_b, off_kvh, start_n,
          offs_m, offs_n, row_scale, seqlen_k, causal_off, k_block, v_block,
          MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, P_SHIFT: tl.constexpr,
          SPLIT: tl.constexpr, INTERPRET: tl.constexpr, ONE_LOOP: tl.constexpr):
    DH: tl.constexpr = HEAD_DIM // SPLIT
    k = desc_k.load([off_b, off_kvh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
    qk = tl.dot(q, tl.trans(k))
    rs = row_scale * tl.load(kd_ptr + start_n // k_block)
    if MASKED or ONE_LOOP:
        cols = start_n + offs_n
        keep = cols[None, :] < seqlen_k
        if CAUSAL != 0:
            keep = keep & (cols[None, :] <= offs_m[:, None] + causal_off)
        qk = tl.where(keep, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1) * rs)
    if MASKED or ONE_LOOP:
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    alpha = tl.math.exp2(m_i - m_use)
    p = tl.math.exp2(qk * rs[:, None] - (m_use - P_SHIFT)[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    vs = tl.load(vd_ptr + start_n // v_block)
    vt = desc_v.load([off_b, off_kvh, 0, start_n]).reshape(DH, BLOCK_N)
    if INTERPRET:
        p = _round_mantissa(p, 3)
    p8 = p.to(vt.dtype)
    factor = alpha * (vs_prev / vs)
    acc = acc * factor[:, None] + tl.dot(p8, tl.trans(vt))
    if SPLIT == 2:
        vt1 = desc_v.load([off_b, off_kvh, DH, start_n]).reshape(DH, BLOCK_N)
        acc1 = acc1 * factor[:, None] + tl.dot(p8, tl.trans(vt1))
    return acc, acc1, l_i, m_new, vs


@triton.jit
def _attn_fwd_tma(desc_q, desc_k, desc_v, QD, KD, VD, O,
                  stride_qdz, stride_qdh, stride_kdz, stride_kdh, stride_vdz, stride_vdh,
                  stride_oz, stride_oh, stride_om,
                  H, GQA_GROUP, seqlen_q, seqlen_k, q_block, k_block, v_block, qk_scale,
                  CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, P_SHIFT: tl.constexpr,
                  WS: tl.constexpr, ONE_LOOP: tl.constexpr, REVERSE: tl.constexpr, SPLIT: tl.constexpr, INTERPRET: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    DH: tl.constexpr = HEAD_DIM // SPLIT
    pid_m = tl.program_id(0)
    off_hz = tl.program_id(1)
    off_b = off_hz // H
    off_h = off_hz % H
    off_kvh = off_h // GQA_GROUP
    if CAUSAL != 0:
        if REVERSE:
            pid_m = tl.num_programs(0) - 1 - pid_m
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, DH)
    row_ok = offs_m < seqlen_q
    q = desc_q.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    qd = tl.load(QD + off_b * stride_qdz + off_h * stride_qdh + offs_m // q_block, mask=row_ok,
                 other=1.0)
    kd_ptr = KD + off_b * stride_kdz + off_kvh * stride_kdh
    vd_ptr = VD + off_b * stride_vdz + off_kvh * stride_vdh
    row_scale = qd * qk_scale
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, DH], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, DH if SPLIT == 2 else 16], dtype=tl.float32)
    vs = tl.full([1], 1.0, dtype=tl.float32).sum(0)
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
        full_end = hi      # one loop, masks always on (WS needs it: see the module docstring)
    for start_n in tl.range(0, full_end, BLOCK_N, warp_specialize=WS):
        acc, acc1, l_i, m_i, vs = _tile(acc, acc1, l_i, m_i, vs, q, desc_k, desc_v, kd_ptr, vd_ptr, off_b,
                                  off_kvh, start_n, offs_m, offs_n, row_scale, seqlen_k,
                                  causal_off, k_block, v_block, False, CAUSAL, HEAD_DIM,
                                  BLOCK_M, BLOCK_N, P_SHIFT, SPLIT, INTERPRET, ONE_LOOP)
    for start_n in tl.range(full_end, hi if not ONE_LOOP else full_end, BLOCK_N):
        acc, acc1, l_i, m_i, vs = _tile(acc, acc1, l_i, m_i, vs, q, desc_k, desc_v, kd_ptr, vd_ptr, off_b,
                                  off_kvh, start_n, offs_m, offs_n, row_scale, seqlen_k,
                                  causal_off, k_block, v_block, True, CAUSAL, HEAD_DIM,
                                  BLOCK_M, BLOCK_N, P_SHIFT, SPLIT, INTERPRET, ONE_LOOP)
    no_key = l_i == 0.0
    l_safe = tl.where(no_key, 1.0, l_i)
    out_scale = tl.where(no_key, 0.0, vs / l_safe)
    o_ptrs = (O + off_b.to(tl.int64) * stride_oz + off_h.to(tl.int64) * stride_oh
              + offs_m[:, None] * stride_om + offs_d[None, :])
    tl.store(o_ptrs, (acc * out_scale[:, None]).to(O.dtype.element_ty), mask=row_ok[:, None])
    if SPLIT == 2:
        tl.store(o_ptrs + DH, (acc1 * out_scale[:, None]).to(O.dtype.element_ty),
                 mask=row_ok[:, None])
