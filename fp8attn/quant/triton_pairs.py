"""Layout-2 quantise kernel (`_pairs_kernel`), the default for block and token scales at
power-of-two head dims >= 8 (rotation up to 128); `quant/triton.py` routes to it and keeps the
other cases. Design and measured numbers: `quant/triton.py` `default_variant`."""
from __future__ import annotations

import functools
import weakref

import torch
import triton
import triton.language as tl

from .. import kernel_launch
from ..formats import fp8_max
from ..host_ints import cdiv
from .key_order import mma_key_tl
from .triton_cast import _MBITS_EMIN, _cast_fp8, _env


@triton.jit
def _max_nan(a, b):
    """max that returns NaN if either operand is NaN (max.NaN.f32: one instruction)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


def _prune_pairs(configs, named_args, **kwargs):
    """The first config that fits (the fastest measured), unless FP8ATTN_TUNE=all: the autotuner
    picked slower configs than the measured best at times (H200, 2026-11-22: token 58% of a copy
    against 82% for 64x2)."""
    a = {**named_args, **kwargs}
    ok = [c for c in configs if _pairs_fits(c.kwargs, c.num_warps, a["P"], a["GROUP"], a["HAS_SIGNS"],
                                            a["TRANSPOSE"])]
    return ok if _env("FP8ATTN_TUNE") == "all" else ok[:1]


def _pairs_fits(kw, warps, p, group, rotate, transpose) -> bool:
    """A config of `_pairs_kernel` covers its tile exactly: lanes over 32 row groups, warps over DQ
    column slices then rows; rotations keep whole rows in a thread; at most 128 values a thread."""
    r_lo, dq, rows = kw["R_LO"], kw["DQ"], kw["BLOCK_S"]
    words_lo = min(4, p // 2)
    return (warps % dq == 0 and rows == r_lo * 32 * (warps // dq) and (p // 2) % (words_lo * dq) == 0
            and r_lo * p // dq <= 128 and rows % group == 0 and not (rotate and (r_lo, dq) != (1, 1))
            and (r_lo >= 4) == transpose)


# (BLOCK_S, R_LO, DQ, warps, maxnreg); the first that fits is the default (FP8ATTN_TUNE=all:
# autotune over all that fit)
# maxnreg 168: three 4-warp programs an SM (the rotation needs about that many registers anyway;
# without it ptxas takes up to 255 for the rare NaN / Inf path: H200, no rotation 81% -> 84% of a
# copy, V transposed 71% -> 79%)
PAIRS_CONFIGS = [triton.Config({"BLOCK_S": s, "R_LO": r, "DQ": q}, num_warps=w, maxnreg=n)
                 for s, r, q, w, n in ((64, 1, 1, 2, 168), (128, 1, 1, 4, 168), (128, 4, 4, 4, 168),
                                       (256, 1, 1, 8, None), (32, 1, 1, 1, None),
                                       (128, 4, 8, 8, 128), (256, 4, 4, 8, None))]


@triton.autotune(configs=PAIRS_CONFIGS,
                 key=["HEAD_DIM", "P", "GROUP", "HAS_SIGNS", "WORDS", "TRANSPOSE", "STORE_2D",
                      "SOFT_CAST", "SIGN_BITS", "COALESCED", "RESIDUAL", "KEY_PERM"],
                 prune_configs_by={"early_config_prune": _prune_pairs})
@triton.heuristics({"EVEN_S": lambda a: a["S"] % a["BLOCK_S"] == 0})
@triton.jit
def _pairs_kernel(x_ptr, out_ptr, res_ptr, descale_ptr, signs_ptr, H, S, S_STORE, NB,
                  stride_xb, stride_xh, stride_xs, stride_xd,
                  stride_ob, stride_oh, stride_os, stride_od,
                  HEAD_DIM: tl.constexpr, P: tl.constexpr, NORM: tl.constexpr,
                  HAS_SIGNS: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr,
                  MBITS: tl.constexpr, EMIN: tl.constexpr, WORDS: tl.constexpr,
                  TRANSPOSE: tl.constexpr, SOFT_CAST: tl.constexpr, STORE_2D: tl.constexpr,
                  SIGN_BITS: tl.constexpr, EVEN_S: tl.constexpr, COALESCED: tl.constexpr,
                  RESIDUAL: tl.constexpr, KEY_PERM: tl.constexpr, R_LO: tl.constexpr,
                  DQ: tl.constexpr, BLOCK_S: tl.constexpr, ROW_MAP: tl.constexpr = False,
                  map_ptr=None, S_SRC=None, DUAL: tl.constexpr = False,
                  x2_ptr=None, out2_ptr=None, descale2_ptr=None, H2=None, S2=None, NB2=None,
                  N_FIRST=None, stride_x2b=None, stride_x2h=None, stride_x2s=None,
                  stride_o2b=None, stride_o2h=None, stride_o2s=None,
                  TRIPLE: tl.constexpr = False, x3_ptr=None, out3_ptr=None, descale3_ptr=None,
                  H3=None, S3=None, S3_STORE=None, NB3=None, N_THIRD=None, stride_x3b=None,
                  stride_x3h=None, stride_x3s=None, stride_o3b=None, stride_o3h=None,
                  stride_o3s=None, stride_o3d=None, R_LO3: tl.constexpr = 4,
                  DQ3: tl.constexpr = 4, KEY_PERM3: tl.constexpr = False,
                  EVEN_S3: tl.constexpr = False, ROW_MAP3: tl.constexpr = False):
    """MODE_FUSED for head dims P = 2**k (>= 8, HEAD_DIM <= P, even), rotation without a 12 / 20
    factor. x (B, H, S, HEAD_DIM) -> out at out_ptr + b*stride_ob + h*stride_oh + s*stride_os
    + d*stride_od; descale float32 (B, H, NB) contiguous.

    The tile holds column pairs: lo = x[:, 2k], hi = x[:, 2k + 1] (WORDS: x_ptr is the bf16 input
    viewed as int32, one word per pair, unpacked with one integer op per value), laid out as
    [R_HI, DQ, R_LO, W_HI, W_LO] with row = R_LO * rh + rl and word k = (q * W_HI + j) * W_LO + i:
    the coalescer orders the dims after the contiguous one (W_LO, one 16-byte vector) by index, so
    lanes and warps go over rh, then q, and each thread holds 2 * W_LO * W_HI columns of R_LO rows
    (no shuffles). Each lane loads 16-byte pieces of its own rows, or (COALESCED, whole rows a
    thread) the warp loads whole rows and one conversion through shared memory follows.
    Rotations need DQ == R_LO == 1; the first butterfly stage pairs lo with hi, with the signs
    folded in (lo * s0 +- hi * s1: exact, as +-1 products are; SIGN_BITS >= 0: compile-time
    signs, so the products become operand negations). FP8 rows leave through a [BLOCK_S, D] tile
    (STORE_2D: 16-byte coalesced stores after one pass through shared memory); transposed stores
    (stride_os == 1) write R_LO consecutive rows of a column per thread as one word (TRANSPOSE
    only selects the launch configs).

    NaN / Inf cost nothing per element: one NaN-propagating max gives both the amax and whether the
    tile holds a non-finite value; only such tiles re-read x to find the rows with a non-finite
    input (NaN rows when rotated, as the reference turns Inf into NaN first; else just those
    elements) and take the amax of the finite values. EVEN_S: S % BLOCK_S == 0, no row masks.
    RESIDUAL: also store the second FP8 term cast(y - float(cast(y))) at res_ptr (same strides
    as out_ptr; the quantised value y = x * scale is the one cast to out).
    KEY_PERM (transposed V in the "mma" key order, quant/key_order.py; GROUP and BLOCK_S
    multiples of 16): output row r is input row mma_key(r), so the loads take the permuted rows
    and the stores stay as they are; rows up to S_STORE (S rounded up to 16) are stored, zeros
    for the keys past S. Else S_STORE == S.
    DUAL: a second tensor in the same launch (Q and K: one launch less of host time; the same
    meta, so the same per-row arithmetic and bits): programs from N_FIRST on take x2 / out2 /
    descale2 with their H2, S2, NB2 and strides (the column strides are the first tensor's;
    not with RESIDUAL or KEY_PERM).
    ROW_MAP (varlen K / V into padded rows, quant/padded_rows.py): x holds S_SRC packed rows and
    output tile t (S rows in all, EVEN_S off) takes the rows map_ptr[2t] .. + map_ptr[2t + 1]
    - 1 of x, then zero rows (not with RESIDUAL; with KEY_PERM, V^T's keys permuted inside each
    tile as above, the zero rows included; with DUAL, for the second tensor only: varlen Q as it
    is, K into padded rows).
    TRIPLE (with DUAL: Q, K and V in one launch; the last wave of V's launch was one sixth full
    and every launch costs host time): programs from N_THIRD on take x3 (V: no rotation, stored
    transposed: stride_o3s == 1) with their own H3, S3, S3_STORE, NB3, strides, tile layout
    (R_LO3, DQ3: V's first config, same BLOCK_S and launch options), KEY_PERM3, EVEN_S3 and
    ROW_MAP3 (varlen V into padded rows: the same tile map as K's); the same GROUP, WORDS and
    column stride as Q and K."""
    pid = tl.program_id(0)
    # _first_two's call twice: an `if` on a runtime value compiles both branches, so V's stays
    # under the constexpr TRIPLE (launches without V compile as before it)
    if TRIPLE:
        if pid >= N_THIRD:
            _pairs_tile(pid - N_THIRD, False, x3_ptr, out3_ptr, out3_ptr, descale3_ptr, signs_ptr,
                        map_ptr, H3, S3, S3_STORE, NB3, S_SRC, stride_x3b, stride_x3h,
                        stride_x3s, stride_xd, stride_o3b, stride_o3h, stride_o3s, stride_o3d,
                        HEAD_DIM, P, 1.0, False, GROUP, FP8_MAX, MBITS, EMIN, WORDS,
                        SOFT_CAST, False, -1, EVEN_S3, False, False, KEY_PERM3, R_LO3, DQ3,
                        BLOCK_S, ROW_MAP3, False)
        else:
            _first_two(pid, x_ptr, out_ptr, res_ptr, descale_ptr, signs_ptr, map_ptr, H, S,
                       S_STORE, NB, S_SRC, stride_xb, stride_xh, stride_xs, stride_xd,
                       stride_ob, stride_oh, stride_os, stride_od, x2_ptr, out2_ptr,
                       descale2_ptr, H2, S2, NB2, N_FIRST, stride_x2b, stride_x2h, stride_x2s,
                       stride_o2b, stride_o2h, stride_o2s, HEAD_DIM, P, NORM, HAS_SIGNS, GROUP,
                       FP8_MAX, MBITS, EMIN, WORDS, SOFT_CAST, STORE_2D, SIGN_BITS, EVEN_S,
                       COALESCED, RESIDUAL, KEY_PERM, R_LO, DQ, BLOCK_S, ROW_MAP, DUAL)
    else:
        _first_two(pid, x_ptr, out_ptr, res_ptr, descale_ptr, signs_ptr, map_ptr, H, S, S_STORE,
                   NB, S_SRC, stride_xb, stride_xh, stride_xs, stride_xd, stride_ob, stride_oh,
                   stride_os, stride_od, x2_ptr, out2_ptr, descale2_ptr, H2, S2, NB2, N_FIRST,
                   stride_x2b, stride_x2h, stride_x2s, stride_o2b, stride_o2h, stride_o2s,
                   HEAD_DIM, P, NORM, HAS_SIGNS, GROUP, FP8_MAX, MBITS, EMIN, WORDS, SOFT_CAST,
                   STORE_2D, SIGN_BITS, EVEN_S, COALESCED, RESIDUAL, KEY_PERM, R_LO, DQ, BLOCK_S,
                   ROW_MAP, DUAL)


@triton.jit
def _first_two(pid, x_ptr, out_ptr, res_ptr, descale_ptr, signs_ptr, map_ptr, H, S, S_STORE, NB,
               S_SRC, stride_xb, stride_xh, stride_xs, stride_xd, stride_ob, stride_oh,
               stride_os, stride_od, x2_ptr, out2_ptr, descale2_ptr, H2, S2, NB2, N_FIRST,
               stride_x2b, stride_x2h, stride_x2s, stride_o2b, stride_o2h, stride_o2s,
               HEAD_DIM: tl.constexpr, P: tl.constexpr, NORM: tl.constexpr,
               HAS_SIGNS: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr,
               MBITS: tl.constexpr, EMIN: tl.constexpr, WORDS: tl.constexpr,
               SOFT_CAST: tl.constexpr, STORE_2D: tl.constexpr, SIGN_BITS: tl.constexpr,
               EVEN_S: tl.constexpr, COALESCED: tl.constexpr, RESIDUAL: tl.constexpr,
               KEY_PERM: tl.constexpr, R_LO: tl.constexpr, DQ: tl.constexpr,
               BLOCK_S: tl.constexpr, ROW_MAP: tl.constexpr, DUAL: tl.constexpr):
    """The programs of x and (DUAL) of x2: _pairs_kernel's tile of either."""
    second = pid < 0
    if DUAL:
        second = pid >= N_FIRST
        pid = tl.where(second, pid - N_FIRST, pid)
        x_ptr = tl.where(second, x2_ptr, x_ptr)
        out_ptr = tl.where(second, out2_ptr, out_ptr)
        descale_ptr = tl.where(second, descale2_ptr, descale_ptr)
        H = tl.where(second, H2, H)
        S = tl.where(second, S2, S)
        S_STORE = S
        NB = tl.where(second, NB2, NB)
        stride_xb = tl.where(second, stride_x2b, stride_xb)
        stride_xh = tl.where(second, stride_x2h, stride_xh)
        stride_xs = tl.where(second, stride_x2s, stride_xs)
        stride_ob = tl.where(second, stride_o2b, stride_ob)
        stride_oh = tl.where(second, stride_o2h, stride_oh)
        stride_os = tl.where(second, stride_o2s, stride_os)
    _pairs_tile(pid, second, x_ptr, out_ptr, res_ptr, descale_ptr, signs_ptr, map_ptr, H, S,
                S_STORE, NB, S_SRC, stride_xb, stride_xh, stride_xs, stride_xd, stride_ob,
                stride_oh, stride_os, stride_od, HEAD_DIM, P, NORM, HAS_SIGNS, GROUP, FP8_MAX,
                MBITS, EMIN, WORDS, SOFT_CAST, STORE_2D, SIGN_BITS, EVEN_S, COALESCED, RESIDUAL,
                KEY_PERM, R_LO, DQ, BLOCK_S, ROW_MAP, DUAL)


@triton.jit
def _pairs_tile(pid, second, x_ptr, out_ptr, res_ptr, descale_ptr, signs_ptr, map_ptr, H, S,
                S_STORE, NB, S_SRC, stride_xb, stride_xh, stride_xs, stride_xd, stride_ob,
                stride_oh, stride_os, stride_od, HEAD_DIM: tl.constexpr, P: tl.constexpr,
                NORM: tl.constexpr, HAS_SIGNS: tl.constexpr, GROUP: tl.constexpr,
                FP8_MAX: tl.constexpr, MBITS: tl.constexpr, EMIN: tl.constexpr,
                WORDS: tl.constexpr, SOFT_CAST: tl.constexpr, STORE_2D: tl.constexpr,
                SIGN_BITS: tl.constexpr, EVEN_S: tl.constexpr, COALESCED: tl.constexpr,
                RESIDUAL: tl.constexpr, KEY_PERM: tl.constexpr, R_LO: tl.constexpr,
                DQ: tl.constexpr, BLOCK_S: tl.constexpr, ROW_MAP: tl.constexpr,
                DUAL: tl.constexpr):
    """Program pid's tile of one tensor (_pairs_kernel's docstring; second: DUAL's second
    tensor, the one ROW_MAP maps)."""
    W: tl.constexpr = P // 2
    W_LO: tl.constexpr = 4 if W >= 4 else W                          # 16-byte vectors
    W_HI: tl.constexpr = W // W_LO // DQ
    R_HI: tl.constexpr = BLOCK_S // R_LO
    NG: tl.constexpr = BLOCK_S // GROUP
    LW_LO: tl.constexpr = W_LO.bit_length() - 1
    LW_HI: tl.constexpr = W_HI.bit_length() - 1
    n_tiles = tl.cdiv(S, BLOCK_S)
    bh = pid // n_tiles
    tile = pid % n_tiles
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    row0 = tile * BLOCK_S
    # [R_HI, DQ, R_LO, W_HI, W_LO] index tensors
    rh = tl.arange(0, R_HI)[:, None, None, None, None]
    qq = tl.arange(0, DQ)[None, :, None, None, None]
    rl = tl.arange(0, R_LO)[None, None, :, None, None]
    jj = tl.arange(0, W_HI)[None, None, None, :, None]
    rows = row0 + rh * R_LO + rl                                     # [R_HI, 1, R_LO, 1, 1]
    if ROW_MAP:
        # rows past the tile's count read row S_SRC: masked, so zero. With DUAL the first
        # tensor's programs read their own rows (as without the map)
        if DUAL:
            src0 = tl.load(map_ptr + 2 * tile, mask=second, other=row0)
            n_src = tl.load(map_ptr + 2 * tile + 1, mask=second, other=BLOCK_S)
            s_in = tl.where(second, S_SRC, S)
        else:
            src0 = tl.load(map_ptr + 2 * tile)
            n_src = tl.load(map_ptr + 2 * tile + 1)
            s_in = S_SRC
        # KEY_PERM: the tile starts on a 16-row group, so the permutation is the same relative
        # to it (mma_key_tl only changes the position inside its group)
        r_in = mma_key_tl(rows - row0) if KEY_PERM else rows - row0
        src = tl.where(r_in < n_src, src0 + r_in, s_in)
    else:
        src0 = row0
        n_src = BLOCK_S
        src = mma_key_tl(rows) if KEY_PERM else rows                 # the input row of a row
        s_in = S
    wbase = (qq * W_HI + jj) * W_LO                                   # [1, DQ, 1, W_HI, 1]
    x_base = x_ptr + b * stride_xb + h * stride_xh
    lo, hi = _load_pairs(x_base, src, wbase, s_in, stride_xs, stride_xd, HEAD_DIM, W_LO, WORDS,
                         EVEN_S, COALESCED and R_LO == 1 and DQ == 1 and not KEY_PERM, src0,
                         BLOCK_S, W_HI, LW_HI, ROW_MAP, n_src)
    if HAS_SIGNS:
        if SIGN_BITS >= 0:
            # the signs as compile-time constants: x * (+-1) folds into the adds' operand signs
            c0 = 2 * (wbase + tl.arange(0, W_LO))
            s0 = _const_sign(c0, SIGN_BITS)
            s1 = _const_sign(c0 + 1, SIGN_BITS)
        else:
            c2 = 2 * wbase + tl.arange(0, 2 * W_LO)
            sg = tl.load(signs_ptr + c2, mask=c2 < HEAD_DIM, other=0.0)  # 16-byte vectors
            s0, s1 = tl.split(tl.reshape(sg, [1, DQ, 1, W_HI, W_LO, 2]))
        t = lo * s0
        u0 = t + hi * s1
        u1 = t - hi * s1
        u0 = tl.reshape(_fwht_rows(tl.reshape(u0, [BLOCK_S, W_HI, W_LO]), BLOCK_S, W_HI, W_LO,
                                   LW_HI, LW_LO), [R_HI, DQ, R_LO, W_HI, W_LO])
        u1 = tl.reshape(_fwht_rows(tl.reshape(u1, [BLOCK_S, W_HI, W_LO]), BLOCK_S, W_HI, W_LO,
                                   LW_HI, LW_LO), [R_HI, DQ, R_LO, W_HI, W_LO])
    else:
        u0 = lo
        u1 = hi
    m = _max_nan(tl.abs(u0), tl.abs(u1))
    m = tl.reduce(tl.reduce(m, 4, _max_nan, keep_dims=True), 3, _max_nan, keep_dims=True)
    m_row = tl.reduce(m, 1, _max_nan, keep_dims=True)                # [R_HI, 1, R_LO, 1, 1]
    t_max = tl.reduce(tl.reshape(m_row, [BLOCK_S]), 0, _max_nan)
    row_bad = tl.zeros(m_row.shape, dtype=tl.int1)
    if (t_max != t_max) | (t_max == float("inf")):
        # rare: a NaN or Inf in the tile; the amax takes finite values only. The reference turns
        # Inf into NaN: rotated, a row with a non-finite input is a NaN row; else that element.
        if HAS_SIGNS:
            row_bad = _rows_nonfinite(x_base, src, s_in, stride_xs, stride_xd, HEAD_DIM, WORDS,
                                      W_HI, R_LO, DQ, R_HI, W_LO)
        else:
            u0 = tl.where(tl.abs(u0) == float("inf"), float("nan"), u0)
            u1 = tl.where(tl.abs(u1) == float("inf"), float("nan"), u1)
        f0 = tl.where(tl.abs(u0) <= 3.4028234663852886e38, tl.abs(u0), 0.0)
        f1 = tl.where(tl.abs(u1) <= 3.4028234663852886e38, tl.abs(u1), 0.0)
        f = tl.max(tl.max(tl.maximum(f0, f1), 4, keep_dims=True), 3, keep_dims=True)
        m_row = tl.where(row_bad, 0.0, tl.max(f, 1, keep_dims=True))
        t_max = tl.max(tl.reshape(m_row, [BLOCK_S]), 0)
    # scale groups of GROUP rows: row = R_LO * rh + rl
    if NG == 1:
        g_amax = tl.zeros([1], dtype=tl.float32) + t_max
    elif GROUP == 1:
        g_amax = m_row
    else:
        g_amax = tl.max(tl.reshape(m_row, [NG, GROUP]), 1)
    g_amax = g_amax * NORM             # rounding is monotonic: max(|u| * NORM) == max(|u|) * NORM
    zero = g_amax < 1e-30                                                # formats.AMAX_FLOOR
    safe = tl.where(zero, 1.0, g_amax)
    scale_g = tl.where(zero, 1.0, tl.math.div_rn(tl.full(safe.shape, 1.0, tl.float32), safe)
                       * FP8_MAX)      # as torch's fp8_max / amax: reciprocal, then product
    descale_g = tl.where(zero, 1.0, tl.math.div_rn(safe, tl.full(safe.shape, FP8_MAX, tl.float32)))
    desc_ptr = descale_ptr + bh.to(tl.int64) * NB
    if NG == 1:
        tl.store(desc_ptr + tile + tl.arange(0, 1), descale_g)
        row_scale = tl.where(row_bad, float("nan"), tl.max(scale_g, 0))
    elif GROUP == 1:
        tl.store(desc_ptr + rows, descale_g, mask=rows < S)
        row_scale = tl.where(row_bad, float("nan"), scale_g)
    else:
        g_idx = tile * NG + tl.arange(0, NG)
        tl.store(desc_ptr + g_idx, descale_g, mask=g_idx < NB)
        rs = tl.reshape(tl.broadcast_to(scale_g[:, None], [NG, GROUP]), [R_HI, 1, R_LO, 1, 1])
        row_scale = tl.where(row_bad, float("nan"), rs)
    if HAS_SIGNS:
        u0 = u0 * NORM
        u1 = u1 * NORM
    y = tl.join(u0 * row_scale, u1 * row_scale)                   # [..., W_LO, 2]: column order
    y8, yq = _cast_fp8(y, out_ptr, SOFT_CAST, FP8_MAX, MBITS, EMIN, RESIDUAL)
    cols = 2 * wbase + tl.arange(0, 2 * W_LO)
    o_off = b * stride_ob + h * stride_oh
    _store_tile(out_ptr + o_off, y8, rows, cols, row0, S_STORE, stride_os, stride_od, HEAD_DIM,
                STORE_2D, BLOCK_S, R_HI, DQ, R_LO, W_HI, W_LO)
    if RESIDUAL:
        # the second FP8 term (two-term Q): cast(y - float(y8)), same scale; the difference
        # is exact in float32 (launched with enable_fp_fusion=False: y * scale - yq must not
        # become one FMA, which would skip the rounding of y the reference does)
        r8, _ = _cast_fp8(y - yq, out_ptr, SOFT_CAST, FP8_MAX, MBITS, EMIN)
        _store_tile(res_ptr + o_off, r8, rows, cols, row0, S_STORE, stride_os, stride_od,
                    HEAD_DIM, STORE_2D, BLOCK_S, R_HI, DQ, R_LO, W_HI, W_LO)


@triton.jit
def _store_tile(o_base, y8, rows, cols, row0, S, stride_os, stride_od, HEAD_DIM: tl.constexpr,
                STORE_2D: tl.constexpr, BLOCK_S: tl.constexpr, R_HI: tl.constexpr,
                DQ: tl.constexpr, R_LO: tl.constexpr, W_HI: tl.constexpr, W_LO: tl.constexpr):
    """Store the FP8 tile y8 ([R_HI, DQ, R_LO, W_HI, W_LO, 2] column pairs) at o_base + row *
    stride_os + col * stride_od."""
    y8 = tl.reshape(y8, [R_HI, DQ, R_LO, W_HI, 2 * W_LO])
    if STORE_2D:
        # non-transposed: FP8 rows as a [BLOCK_S, D_PAD] tile, the coalescer's store layout
        # (16-byte vectors along a row); the bytes pass once through shared memory
        D_PAD: tl.constexpr = 2 * W_LO * W_HI * DQ
        y2 = tl.reshape(tl.permute(y8, [0, 2, 1, 3, 4]), [BLOCK_S, D_PAD])
        r2 = row0 + tl.arange(0, BLOCK_S)[:, None]
        c2 = tl.arange(0, D_PAD)[None, :]
        tl.store(o_base + r2.to(tl.int64) * stride_os + c2 * stride_od, y2,
                 mask=(r2 < S) & (c2 < HEAD_DIM))
    else:
        # direct from the registers, rows innermost: R_LO consecutive rows of one column form
        # one word when transposed (stride_os == 1)
        # ([R_HI, DQ, W_HI, 2 W_LO, R_LO]: the store's coalesced layout, rows innermost, is the
        # tile's own, lanes over rh then warps over q, as for the load)
        yt = tl.permute(y8, [0, 1, 3, 4, 2])
        ct = tl.permute(cols, [0, 1, 3, 4, 2])
        rt = tl.permute(rows, [0, 1, 3, 4, 2])
        tl.store(o_base + rt.to(tl.int64) * stride_os + ct * stride_od, yt,
                 mask=(rt < S) & (ct < HEAD_DIM))


@triton.jit
def _const_sign(col, SIGN_BITS: tl.constexpr):
    """+-1.0 for column indices `col` (thread-independent, so constant per register): bit c of
    SIGN_BITS set = column c negated. Built from 31-bit slices to stay in int32 arithmetic."""
    sign = tl.zeros(col.shape, tl.float32) + 1.0
    for k in tl.static_range(0, 8):
        chunk = (SIGN_BITS >> (31 * k)) & 0x7FFFFFFF               # a constexpr
        if chunk != 0:
            inside = (col >= 31 * k) & (col < 31 * k + 31)
            bit = (chunk >> tl.where(inside, col - 31 * k, 0).to(tl.int32)) & 1  # shift < 31
            sign = tl.where(inside & (bit != 0), -1.0, sign)
    return sign


@triton.jit
def _fwht_rows(x, N: tl.constexpr, P_HI: tl.constexpr, P_LO: tl.constexpr,
               LOG2_HI: tl.constexpr, LOG2_LO: tl.constexpr):
    """Unnormalised Sylvester transform along the head dim of a [N, P_HI, P_LO] tile (column
    j * P_LO + i at (:, j, i)), textbook stage order (the P_LO bits, then the P_HI bits)."""
    for s in tl.static_range(LOG2_LO):                     # bits of i
        x5 = tl.reshape(x, [N, P_HI, P_LO // (2 << s), 2, 1 << s])
        a, b = tl.split(tl.permute(x5, [0, 1, 2, 4, 3]))
        x = tl.reshape(tl.permute(tl.join(a + b, a - b), [0, 1, 2, 4, 3]), [N, P_HI, P_LO])
    for s in tl.static_range(LOG2_HI):                     # bits of j
        x5 = tl.reshape(x, [N, P_HI // (2 << s), 2, 1 << s, P_LO])
        a, b = tl.split(tl.permute(x5, [0, 1, 3, 4, 2]))
        x = tl.reshape(tl.permute(tl.join(a + b, a - b), [0, 1, 4, 2, 3]), [N, P_HI, P_LO])
    return x


@triton.jit
def _load_pairs(x_base, rows, wbase, S, stride_xs, stride_xd, HEAD_DIM: tl.constexpr,
                W_LO: tl.constexpr, WORDS: tl.constexpr, EVEN_S: tl.constexpr,
                COALESCED: tl.constexpr = False, row0=0, N_ROWS: tl.constexpr = 1,
                N_WHI: tl.constexpr = 1, LOG2_WHI: tl.constexpr = 0,
                ROW_LIMIT: tl.constexpr = False, n_rows=0):
    """(lo, hi) float32 [.., W_LO]: columns (2k, 2k + 1) for the words k = wbase + i, i < W_LO,
    rows `rows`; zero outside S x HEAD_DIM. COALESCED reads rows row0 .. row0 + N_ROWS - 1
    instead (ROW_LIMIT: the first n_rows of them)."""
    if WORDS:
        # x_ptr is the bf16 input seen as int32 (strides in words): bf16 -> float32 is a 16-bit
        # shift, one integer op per value
        word = wbase + tl.arange(0, W_LO)
        if COALESCED:
            # (R_LO == DQ == 1) lanes along a row (a warp load: 2 rows of 256 bytes, whole
            # sectors; 16-byte pieces of 32 rows fetch each sector twice from L2 when L1 misses),
            # then whole rows into each thread: the split / join pairs of every word-index bit
            # ask for that layout, so the compiler converts once, through shared memory
            i3 = tl.arange(0, N_ROWS)[None, :, None]
            r3 = i3 + row0
            k3 = tl.arange(0, N_WHI)[:, None, None] * W_LO + tl.arange(0, W_LO)[None, None, :]
            in_rows = (r3 < S) | EVEN_S
            if ROW_LIMIT:
                in_rows = in_rows & (i3 < n_rows)
            w3 = tl.load(x_base + r3.to(tl.int64) * stride_xs + k3 * stride_xd,
                         mask=in_rows & (k3 < HEAD_DIM // 2), other=0)
            w = tl.reshape(tl.permute(w3, [1, 0, 2]), [N_ROWS, 1, 1, N_WHI, W_LO])
            for s in tl.static_range(LOG2_WHI):
                w6 = tl.reshape(w, [N_ROWS, 1, 1, N_WHI // (2 << s), 2, (1 << s) * W_LO])
                u, v = tl.split(tl.permute(w6, [0, 1, 2, 3, 5, 4]))
                w = tl.reshape(tl.permute(tl.join(u, v), [0, 1, 2, 3, 5, 4]),
                               [N_ROWS, 1, 1, N_WHI, W_LO])
        else:
            w = tl.load(x_base + rows.to(tl.int64) * stride_xs + word * stride_xd,
                        mask=((rows < S) | EVEN_S) & (word < HEAD_DIM // 2), other=0)  # even D
        lo = (w << 16).to(tl.float32, bitcast=True)
        hi = (w & -65536).to(tl.float32, bitcast=True)
    else:
        cols = 2 * wbase + tl.arange(0, 2 * W_LO)              # 2 W_LO contiguous columns
        x = tl.load(x_base + rows.to(tl.int64) * stride_xs + cols * stride_xd,
                    mask=((rows < S) | EVEN_S) & (cols < HEAD_DIM), other=0.0).to(tl.float32)
        n0: tl.constexpr = x.shape[0]
        n1: tl.constexpr = x.shape[1]
        n2: tl.constexpr = x.shape[2]
        n3: tl.constexpr = x.shape[3]
        lo, hi = tl.split(tl.reshape(x, [n0, n1, n2, n3, W_LO, 2]))
    return lo, hi


@triton.jit
def _rows_nonfinite(x_base, rows, S, stride_xs, stride_xd, HEAD_DIM: tl.constexpr,
                    WORDS: tl.constexpr, W_HI: tl.constexpr, R_LO: tl.constexpr, DQ: tl.constexpr,
                    R_HI: tl.constexpr, W_LO: tl.constexpr):
    """[R_HI, 1, R_LO, 1, 1] bool: the row holds a NaN or Inf input (re-read, W_HI slices)."""
    bad = tl.zeros([R_HI, 1, R_LO, 1, 1], dtype=tl.float32)
    for j in tl.static_range(W_HI):
        qq = tl.arange(0, DQ)[None, :, None, None, None]
        lo, hi = _load_pairs(x_base, rows, (qq * W_HI + j) * W_LO, S, stride_xs, stride_xd,
                             HEAD_DIM, W_LO, WORDS, False)
        a = tl.where(_max_nan(tl.abs(lo), tl.abs(hi)) <= 3.4028234663852886e38, 0.0, 1.0)
        bad = tl.maximum(bad, tl.max(tl.max(a, 4, keep_dims=True), 1, keep_dims=True))
    return bad != 0.0




def _pairs_ok(x, tp, bs, rotate, transpose) -> bool:
    """`_pairs_kernel` takes the tile: 2**k columns (>= 8), an even head dim, some config fits."""
    d, p = x.shape[-1], tp["P"]
    if tp["M"] != 1 or p < 8 or d % 2 or (rotate and p > 128):
        return False
    return _pairs_first_config(p, bs, rotate, transpose) is not None


@functools.lru_cache(maxsize=None)
def _pairs_first_config(p, bs, rotate, transpose):
    """The first of PAIRS_CONFIGS that fits (a module constant: cached per tile)."""
    return next((c for c in PAIRS_CONFIGS
                 if _pairs_fits(c.kwargs, c.num_warps, p, bs, rotate, transpose)), None)


def _wordable(x: torch.Tensor) -> bool:
    """Whether x can be viewed as int32 words, one per bf16 column pair (_as_words)."""
    if x.dtype != torch.bfloat16 or x.storage_offset() % 2:
        return False
    st = x.stride()
    return st[-1] == 1 and not any(s % 2 for s in st[:-1])


def _as_words(x: torch.Tensor):
    """x viewed as int32 (one word per bf16 column pair) if its layout allows, else None."""
    return x.view(torch.int32) if _wordable(x) else None


def _run_pairs(x, data, descale, signs_arg, rotate, nb, bs, tp, fmt, o_strides, var, transpose,
               config, res=None, key_perm=False, second=None, rows=None, third=None):
    """res: None, or the residual's buffer (same strides as data): also write the second term.
    key_perm: transposed output in the "mma" key order (bs a multiple of 16; data a view of
    rows padded to a multiple of 16). second: None, or (x2, data2, descale2, nb2, o2_strides),
    a second input quantised in the same launch with the same meta (DUAL; the caller,
    quant/triton.py quantize_pair_triton, has checked that dual_ok). rows: None, or a
    padded_rows.PaddedRows for x's packed rows, or with `second` for x2's (ROW_MAP; that
    tensor's data and descale sized for rows.rows; the caller has checked `row_map_ok`), and
    with `third` for x3's too. third: None, or (x3, data3, descale3, nb3, o3_strides,
    key_perm3), with `second`: V (not rotated, transposed) in the same launch (TRIPLE; the
    caller, quant/triton.py quantize_pair_triton, has checked `_triple_ok`)."""
    B, H, S, D = x.shape
    xw = _as_words(x)
    words = xw is not None and var.get("words", True)
    xin = xw if words else x
    meta = dict(HEAD_DIM=D, P=tp["P"], NORM=tp["NORM"], HAS_SIGNS=rotate,
                GROUP=bs, FP8_MAX=fp8_max(fmt), MBITS=_MBITS_EMIN[fmt][0], EMIN=_MBITS_EMIN[fmt][1],
                WORDS=words, TRANSPOSE=transpose, SOFT_CAST=var["soft_cast"],
                STORE_2D=var.get("store_2d", True) and not transpose,
                SIGN_BITS=_sign_bits(signs_arg) if rotate and var.get("const_signs", True) else -1,
                COALESCED=var.get("coalesced", rotate), RESIDUAL=res is not None,
                KEY_PERM=key_perm)
    if res is not None:
        meta["enable_fp_fusion"] = False        # y - float(y8) from the rounded y (see kernel)
    kernel = _pairs_kernel
    if config is None and (_env("FP8ATTN_TUNE") != "all" or rows is not None):
        # the first config that fits (as `_prune_pairs`), launched without the autotuner's and
        # heuristics' Python layers: at ~0.11 ms a launch, host time is not negligible
        c = _pairs_first_config(tp["P"], bs, rotate, transpose)
        config = dict(c.kwargs, num_warps=c.num_warps)
        if c.maxnreg:
            config["maxnreg"] = c.maxnreg
    if config is not None:                  # no autotuning, no heuristics
        kernel = _pairs_kernel.fn.fn
        meta.update(config)
        meta["EVEN_S"] = S % config["BLOCK_S"] == 0

    if key_perm and (bs % 16 or (config is not None and config["BLOCK_S"] % 16)):
        raise ValueError(f"key order 'mma' needs scale groups ({bs}) and BLOCK_S in multiples "
                         f"of 16")
    if rows is not None:
        # the tile map is made for the launch's tile size: a fixed config, rows masked; with
        # `second`, the second tensor is the one in padded rows
        meta.update(ROW_MAP=True, map_ptr=rows.tiles(config["BLOCK_S"]), EVEN_S=False,
                    S_SRC=(S if second is None else second[0].shape[2]))
        if second is None:
            S = rows.rows
    s_store = -(-S // 16) * 16 if key_perm else S
    grid = lambda m: (B * H * cdiv(S, m["BLOCK_S"]),)
    if second is not None:
        x2, data2, descale2, nb2, o2 = second
        B2, H2, S2, _ = x2.shape
        if rows is not None:
            S2 = rows.rows                                  # output rows (ROW_MAP above)
        xin2 = _as_words(x2) if words else x2
        block = config["BLOCK_S"]
        meta["EVEN_S"] = S % block == 0 and S2 % block == 0 and rows is None
        n_first = B * H * cdiv(S, block)
        grid = (n_first + B2 * H2 * cdiv(S2, block),)
        meta.update(DUAL=True, x2_ptr=xin2, out2_ptr=data2, descale2_ptr=descale2, H2=H2, S2=S2,
                    NB2=nb2, N_FIRST=n_first, stride_x2b=xin2.stride(0),
                    stride_x2h=xin2.stride(1), stride_x2s=xin2.stride(2), stride_o2b=o2[0],
                    stride_o2h=o2[1], stride_o2s=o2[2])
    if third is not None:
        x3, data3, descale3, nb3, o3, key_perm3 = third
        B3, H3, S3, _ = x3.shape
        if rows is not None:
            S3 = rows.rows
        xin3 = _as_words(x3) if words else x3
        v_cfg = _pairs_first_config(tp["P"], bs, False, True).kwargs
        n_third = grid[0]
        grid = (n_third + B3 * H3 * cdiv(S3, block),)
        meta.update(TRIPLE=True, x3_ptr=xin3, out3_ptr=data3, descale3_ptr=descale3, H3=H3,
                    S3=S3, S3_STORE=-(-S3 // 16) * 16 if key_perm3 else S3, NB3=nb3,
                    N_THIRD=n_third, stride_x3b=xin3.stride(0), stride_x3h=xin3.stride(1),
                    stride_x3s=xin3.stride(2), stride_o3b=o3[0], stride_o3h=o3[1],
                    stride_o3s=o3[2], stride_o3d=o3[3], R_LO3=v_cfg["R_LO"], DQ3=v_cfg["DQ"],
                    KEY_PERM3=key_perm3, EVEN_S3=S3 % block == 0 and rows is None,
                    ROW_MAP3=rows is not None)
    args = (xin, data, data if res is None else res, descale, signs_arg, H, S, s_store, nb,
            *xin.stride(), *o_strides)
    if kernel is _pairs_kernel:             # the autotuner (FP8ATTN_TUNE=all)
        kernel[grid](*args, **meta)
    else:
        # a fixed config: straight to the compiled kernel after the first call of a kind
        if callable(grid):
            grid = grid(meta)
        kernel_launch.launch_call(kernel, grid, *args, **meta)


def row_map_ok(x, tp, bs, rotate, transpose, rows) -> bool:
    """`_pairs_kernel` can write x's packed rows into the padded layout `rows` (ROW_MAP): it
    takes the tile, x is one batch of packed rows, and its first config's tiles divide the
    alignment (one sequence a tile)."""
    if x.shape[0] != 1 or not _pairs_ok(x, tp, bs, rotate, transpose):
        return False
    return rows.align % _pairs_first_config(tp["P"], bs, rotate, transpose).kwargs["BLOCK_S"] == 0


def dual_ok(x, x2, words: bool) -> bool:
    """x2 can share x's `_pairs_kernel` launch (DUAL): same dtype, device and head dim, both
    viewable as words or neither (the same WORDS), the same column stride."""
    if (x2.dtype != x.dtype or x2.device != x.device or x2.shape[-1] != x.shape[-1]
            or x2.stride(-1) != x.stride(-1)):
        return False
    return not words or _wordable(x2) == _wordable(x)


_SIGN_BITS: dict = {}


def _sign_bits(signs: torch.Tensor) -> int:
    """The +-1 signs as an int (bit c set: column c negative), read to the host once per signs
    tensor (cached_hadamard_signs hands out one tensor per (d, seed, device)) and version. An
    inference tensor (made under torch.inference_mode) has no version: read every call."""
    if signs.is_inference():
        return _bits_of(signs)
    hit = _SIGN_BITS.get(id(signs))
    if hit is not None and hit[0]() is signs and hit[1] == signs._version:
        return hit[2]
    bits = _bits_of(signs)
    if len(_SIGN_BITS) > 64:                       # drop entries of tensors freed since
        for k in [k for k, v in _SIGN_BITS.items() if v[0]() is None]:
            del _SIGN_BITS[k]
    _SIGN_BITS[id(signs)] = (weakref.ref(signs), signs._version, bits)
    return bits


def _bits_of(signs: torch.Tensor) -> int:
    neg = (signs.detach().float().cpu() < 0).tolist()
    return sum(1 << c for c, n in enumerate(neg) if n)

