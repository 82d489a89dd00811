"""Fused rotate + quantise Triton kernel: (B, H, S, D) bf16/fp16/fp32 -> FP8 + float32 descales.

One kernel, three modes (constexpr MODE):
  MODE_FUSED (0)  "block" (power-of-two block that fits a tile) and "token": each program loads a tile
                  of BLOCK_S rows once, rotates it, takes the finite amax of each scale group inside the
                  tile, writes the descales and the FP8 data. One read of x, one write of FP8.
  MODE_AMAX  (1)  writes the finite amax of every rotated row (B, H, S).
  MODE_CAST  (2)  rotates again and casts with scales computed on the host from those row amaxes.
"head" and "tensor" (and blocks too large for one tile, or not a power of two) take MODE_AMAX then
MODE_CAST: a group's scale depends on every row of the head (or tensor), which many programs hold, and
a grid-wide barrier does not exist in a plain launch; the row amaxes (S floats per head, 1/D of the
input) are reduced per group with the reference's own torch code, so scale and descale come out
bit-identical to formats.scales_from_amax. The second pass re-reads x (partly from L2).

`_pairs_kernel` (layout 2, MODE_FUSED only, the default where it applies) holds whole rows (or four
rows of a quarter of the columns, for transposed V) in each thread as bf16 column pairs; its
docstring and `default_variant`'s say how, and what it measured.

Tile layouts of `_quant_kernel` (constexpr LAYOUT, same results): 1 (rotations, head dims
2**k <= 128) holds each row in one thread, so the butterfly needs no shuffles and no shared-memory
layout conversions (the rows-first tile of LAYOUT 0 needed three fp32 round trips through shared
memory per tile at d = 128 in sm_90 PTX; LAYOUT 1 ran 2.6x faster on an H200); 0 (no rotation, head
dims with a 12 / 20 factor, or 256) uses `hadamard_tile`. `default_variant` picks; the numbers are in
its docstring.

Casts: x8 = cast(clamp(x * scale, -fp8_max, fp8_max)) with NaN kept NaN. The GPU's cast
(cvt.rn.satfinite) rounds to nearest even and saturates finite values by itself, so the clamp and the
software rounding (`round_to_fp8_grid`) run only under the interpreter, whose cast does neither
(SOFT_CAST; benchmarks/sweep_quant.py and tests/test_quant.py check the two bit for bit on the GPU).
"""
from __future__ import annotations

import os
import weakref

import torch
import triton
import triton.language as tl

from ..formats import fp8_dtype, fp8_max, scales_from_amax
from ..hadamard.triton import DEFAULT_BUTTERFLY, hadamard_tile, small_factor_tensor, tile_params
from .reference import QuantizedTensor, group_block_size

MODE_FUSED, MODE_AMAX, MODE_CAST = 0, 1, 2
MAX_TILE = 32768        # elements of one [BLOCK_S, D_PAD] register tile (fp32: 128 KB per program)
_MBITS_EMIN = {"e4m3": (3, -6), "e5m2": (2, -14)}   # mantissa bits, exponent of the smallest normal
S_ALIGN = 16            # transposed V: rows of (B, H, D, S) start 16-element (16-byte) aligned


def _prune(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}
    d_pad, mode, group, layout = args["D_PAD"], args["MODE"], args["GROUP"], args["LAYOUT"]
    ok = []
    for c in configs:
        rows, warps = c.kwargs["BLOCK_S"], c.num_warps
        if layout == 1:
            if rows != 32 * warps:            # one row per thread: the lanes cover the rows once
                continue
        elif rows * d_pad > MAX_TILE or (rows * d_pad > 16384 and warps < 8) or warps < 4:
            continue
        if mode == MODE_FUSED and rows % group:
            continue
        ok.append(c)
    if not ok:
        ok = [c for c in configs if mode != MODE_FUSED or c.kwargs["BLOCK_S"] % group == 0][-1:]
    return ok[:1] if _env("FP8ATTN_TUNE") == "minimal" else ok


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


# LAYOUT 1 (one row per thread) first: under FP8ATTN_TUNE=minimal the first config that fits is used
CONFIGS = ([triton.Config({"BLOCK_S": 32 * w}, num_warps=w) for w in (4, 1, 2, 8)]
           + [triton.Config({"BLOCK_S": s}, num_warps=w)
              for s, w in ((16, 4), (32, 4), (64, 4), (64, 8), (128, 4), (128, 8), (256, 8),
                           (128, 16), (256, 16))])


@triton.autotune(
    configs=CONFIGS,
    key=["D_PAD", "M", "MODE", "GROUP", "HAS_SIGNS", "TRANSPOSE", "BUTTERFLY", "LAYOUT",
         "SOFT_CAST", "SOFT_AMAX", "STORE_2D"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _quant_kernel(x_ptr, out_ptr, descale_ptr, scale_ptr, row_amax_ptr, signs_ptr, hm_ptr,
                  H, S, NB, group_rt,
                  stride_xb, stride_xh, stride_xs, stride_xd,
                  stride_ob, stride_oh, stride_os, stride_od,
                  HEAD_DIM: tl.constexpr,
                  M: tl.constexpr, M_PAD: tl.constexpr, P: tl.constexpr, LOG2_P: tl.constexpr,
                  D_PAD: tl.constexpr, NORM: tl.constexpr, HAS_SIGNS: tl.constexpr,
                  MODE: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr,
                  MBITS: tl.constexpr, EMIN: tl.constexpr,
                  TRANSPOSE: tl.constexpr, BUTTERFLY: tl.constexpr, LAYOUT: tl.constexpr,
                  P_LO: tl.constexpr, LOG2_LO: tl.constexpr, SOFT_CAST: tl.constexpr,
                  SOFT_AMAX: tl.constexpr, STORE_2D: tl.constexpr,
                  BLOCK_S: tl.constexpr):
    """x (B, H, S, D) any strides -> out FP8 at out[b, h, s, d] = out_ptr + b*stride_ob + h*stride_oh
    + s*stride_os + d*stride_od (the launcher passes (B, H, S, D) or (B, H, D, S_pad) strides).
    descale / scale: float32 (B, H, NB) contiguous; row_amax: float32 (B, H, S) contiguous.

    LAYOUT 0: the tile is [BLOCK_S, M_PAD, P] (rows first), rotated by `hadamard_tile`.
    LAYOUT 1 (M == 1 only): the tile is [P // P_LO, BLOCK_S, P_LO], element (j, r, i) = x[r, j*P_LO + i]:
    the coalescer spreads the lanes over the rows, so each thread holds whole rows and every butterfly
    stage stays inside a thread (no shuffles, no shared-memory layout conversions).
    SOFT_CAST: clamp and round in software before the cast (the interpreter's cast neither saturates
    nor rounds right); the GPU's cast rounds to nearest even and saturates finite values by itself.
    SOFT_AMAX: zero NaN and Inf before the max. Without it (GPU only, a benchmark variant) the
    max.f32 reductions skip NaN by themselves and an all-NaN row or group is zeroed after the
    reduction, but an Inf made by the rotation (inputs near the float32 limit) would set the scale."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(S, BLOCK_S)
    bh = pid // n_tiles
    tile = pid % n_tiles
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rows = tile * BLOCK_S + tl.arange(0, BLOCK_S)
    if LAYOUT == 0:
        groups = tl.arange(0, M_PAD)
        col = groups[:, None] * P + tl.arange(0, P)[None, :]            # [M_PAD, P] head-dim index
        col = col[None, :, :]
        r3 = rows[:, None, None]
    else:
        P_HI: tl.constexpr = P // P_LO
        col = tl.arange(0, P_HI)[:, None, None] * P_LO + tl.arange(0, P_LO)[None, None, :]
        r3 = rows[None, :, None]
    mask = (r3 < S) & (col < HEAD_DIM)
    x_offs = r3.to(tl.int64) * stride_xs + col * stride_xd
    x = tl.load(x_ptr + b * stride_xb + h * stride_xh + x_offs, mask=mask, other=0.0)
    x = x.to(tl.float32)
    x = tl.where(tl.abs(x) == float("inf"), float("nan"), x)         # as the reference: Inf -> NaN
    if HAS_SIGNS:
        sg = tl.load(signs_ptr + col, mask=col < HEAD_DIM, other=0.0)
        if LAYOUT == 0:
            x = hadamard_tile(x * sg, hm_ptr, BLOCK_S, M, M_PAD, P, LOG2_P, NORM, BUTTERFLY)
        else:
            x = _fwht_in_thread(x * sg, P // P_LO, BLOCK_S, P_LO, LOG2_P - LOG2_LO, LOG2_LO)
            x = x * NORM

    if MODE != 2:                                                        # not MODE_CAST
        a = tl.abs(x)
        if SOFT_AMAX:
            a = tl.where(a <= 3.4028234663852886e38, a, 0.0)            # NaN (Inf is NaN now) -> 0
        if MODE == 1 or BLOCK_S != GROUP:
            if LAYOUT == 0:
                row_amax = tl.max(tl.max(a, axis=2), axis=1)             # [BLOCK_S]
            else:
                row_amax = tl.max(tl.max(a, axis=2), axis=0)
            if not SOFT_AMAX:
                row_amax = tl.where(row_amax == row_amax, row_amax, 0.0)  # an all-NaN row
    if MODE == 1:                                                        # MODE_AMAX
        tl.store(row_amax_ptr + bh.to(tl.int64) * S + rows, row_amax, mask=rows < S)
    else:
        if MODE == 0:                                                    # MODE_FUSED
            NG: tl.constexpr = BLOCK_S // GROUP                          # groups in this tile
            if NG == 1:
                # one group per tile: a whole-tile max reduces inside each thread first, then
                # across lanes once (12x fewer shuffles than per-row maxima first)
                g_amax = tl.zeros([1], dtype=tl.float32) + tl.max(a)
                if not SOFT_AMAX:
                    g_amax = tl.where(g_amax == g_amax, g_amax, 0.0)
            else:
                g_amax = tl.max(tl.reshape(row_amax, [NG, GROUP]), axis=1)
            zero = g_amax < 1e-30                                        # formats.AMAX_FLOOR
            safe = tl.where(zero, 1.0, g_amax)
            # torch evaluates `fp8_max / amax` (formats.scales_from_amax) as
            # reciprocal(amax) * fp8_max: the same two roundings give bit-identical scales
            scale_g = tl.math.div_rn(tl.full([NG], 1.0, tl.float32), safe) * FP8_MAX
            scale_g = tl.where(zero, 1.0, scale_g)
            descale_g = tl.math.div_rn(safe, tl.full([NG], FP8_MAX, tl.float32))
            descale_g = tl.where(zero, 1.0, descale_g)
            g_idx = tile * NG + tl.arange(0, NG)
            tl.store(descale_ptr + bh.to(tl.int64) * NB + g_idx, descale_g, mask=g_idx < NB)
            if NG == 1:
                y = x * tl.max(scale_g)                                  # one scalar for the tile
            else:
                row_scale = tl.reshape(tl.broadcast_to(scale_g[:, None], [NG, GROUP]), [BLOCK_S])
                y = x * _rows_expand(row_scale, LAYOUT)
        else:
            row_scale = tl.load(scale_ptr + bh.to(tl.int64) * NB + rows // group_rt,
                                mask=rows < S, other=1.0)
            y = x * _rows_expand(row_scale, LAYOUT)
        if SOFT_CAST:
            y = tl.where(y != y, y, tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX))  # keep NaN
            y = round_to_fp8_grid(y, MBITS, EMIN)
        y8 = y.to(out_ptr.dtype.element_ty)
        if LAYOUT == 1 and STORE_2D:
            # FP8 rows as a [BLOCK_S, P] tile: the store takes the coalescer's layout (16-byte
            # vectors, consecutive lanes on consecutive bytes), the FP8 values pass through shared
            # memory once (1 byte each) instead of every lane writing 8 bytes of its own row
            rows2 = rows[:, None]
            col2 = tl.arange(0, P)[None, :]
            o_offs2 = rows2.to(tl.int64) * stride_os + col2 * stride_od
            y2 = tl.reshape(tl.permute(y8, [1, 0, 2]), [BLOCK_S, P])
            tl.store(out_ptr + b * stride_ob + h * stride_oh + o_offs2, y2,
                     mask=(rows2 < S) & (col2 < HEAD_DIM))
        else:
            o_offs = r3.to(tl.int64) * stride_os + col * stride_od
            tl.store(out_ptr + b * stride_ob + h * stride_oh + o_offs, y8, mask=mask)


@triton.jit
def _rows_expand(v, LAYOUT: tl.constexpr):
    """[BLOCK_S] per-row values -> broadcastable against the tile of LAYOUT."""
    if LAYOUT == 0:
        return v[:, None, None]
    else:
        return v[None, :, None]


@triton.jit
def _fwht_in_thread(x, P_HI: tl.constexpr, N: tl.constexpr, P_LO: tl.constexpr,
                    LOG2_HI: tl.constexpr, LOG2_LO: tl.constexpr):
    """Unnormalised Sylvester transform along the head dim of a [P_HI, N, P_LO] tile (column
    j * P_LO + i at (j, :, i)): the textbook stage order of `sylvester_rows` (bit s of the column
    index at stage s: the P_LO bits first, then the P_HI bits), so the sums are the same."""
    for s in tl.static_range(LOG2_LO):                     # bits of i
        x5 = tl.reshape(x, [P_HI, N, P_LO // (2 << s), 2, 1 << s])
        a, b = tl.split(tl.permute(x5, [0, 1, 2, 4, 3]))
        x = tl.reshape(tl.permute(tl.join(a + b, a - b), [0, 1, 2, 4, 3]), [P_HI, N, P_LO])
    for s in tl.static_range(LOG2_HI):                     # bits of j
        x5 = tl.reshape(x, [P_HI // (2 << s), 2, 1 << s, N, P_LO])
        a, b = tl.split(tl.permute(x5, [0, 2, 3, 4, 1]))
        x = tl.reshape(tl.permute(tl.join(a + b, a - b), [0, 4, 1, 2, 3]), [P_HI, N, P_LO])
    return x


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
                      "SOFT_CAST", "SIGN_BITS", "COALESCED"],
                 prune_configs_by={"early_config_prune": _prune_pairs})
@triton.heuristics({"EVEN_S": lambda a: a["S"] % a["BLOCK_S"] == 0})
@triton.jit
def _pairs_kernel(x_ptr, out_ptr, descale_ptr, signs_ptr, H, S, NB,
                  stride_xb, stride_xh, stride_xs, stride_xd,
                  stride_ob, stride_oh, stride_os, stride_od,
                  HEAD_DIM: tl.constexpr, P: tl.constexpr, NORM: tl.constexpr,
                  HAS_SIGNS: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr,
                  MBITS: tl.constexpr, EMIN: tl.constexpr, WORDS: tl.constexpr,
                  TRANSPOSE: tl.constexpr, SOFT_CAST: tl.constexpr, STORE_2D: tl.constexpr,
                  SIGN_BITS: tl.constexpr, EVEN_S: tl.constexpr, COALESCED: tl.constexpr,
                  R_LO: tl.constexpr, DQ: tl.constexpr, BLOCK_S: tl.constexpr):
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
    (stride_os == 1) write R_LO consecutive rows of a column per thread as one word.

    NaN / Inf cost nothing per element: one NaN-propagating max gives both the amax and whether the
    tile holds a non-finite value; only such tiles re-read x to find the rows with a non-finite
    input (NaN rows when rotated, as the reference turns Inf into NaN first; else just those
    elements) and take the amax of the finite values. EVEN_S: S % BLOCK_S == 0, no row masks."""
    _pairs_tile(tl.program_id(0), x_ptr, out_ptr, descale_ptr, signs_ptr, H, S, NB, stride_xb,
                stride_xh, stride_xs, stride_xd, stride_ob, stride_oh, stride_os, stride_od,
                HEAD_DIM, P, NORM, HAS_SIGNS, GROUP, FP8_MAX, MBITS, EMIN, WORDS, SOFT_CAST,
                STORE_2D, SIGN_BITS, EVEN_S, COALESCED, R_LO, DQ, BLOCK_S)


@triton.jit
def _pairs_tile(pid, x_ptr, out_ptr, descale_ptr, signs_ptr, H, S, NB,
                stride_xb, stride_xh, stride_xs, stride_xd,
                stride_ob, stride_oh, stride_os, stride_od,
                HEAD_DIM: tl.constexpr, P: tl.constexpr, NORM: tl.constexpr,
                HAS_SIGNS: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr,
                MBITS: tl.constexpr, EMIN: tl.constexpr, WORDS: tl.constexpr,
                SOFT_CAST: tl.constexpr, STORE_2D: tl.constexpr, SIGN_BITS: tl.constexpr,
                EVEN_S: tl.constexpr, COALESCED: tl.constexpr,
                R_LO: tl.constexpr, DQ: tl.constexpr, BLOCK_S: tl.constexpr):
    """One [BLOCK_S, HEAD_DIM] tile (program or loop index pid) of `_pairs_kernel`."""
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
    wbase = (qq * W_HI + jj) * W_LO                                   # [1, DQ, 1, W_HI, 1]
    x_base = x_ptr + b * stride_xb + h * stride_xh
    lo, hi = _load_pairs(x_base, rows, wbase, S, stride_xs, stride_xd, HEAD_DIM, W_LO, WORDS,
                         EVEN_S, COALESCED and R_LO == 1 and DQ == 1, row0, BLOCK_S, W_HI,
                         LW_HI)
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
            row_bad = _rows_nonfinite(x_base, rows, S, stride_xs, stride_xd, HEAD_DIM, WORDS,
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
    if SOFT_CAST:
        y = tl.where(y != y, y, tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX))  # keep NaN
        y = round_to_fp8_grid(y, MBITS, EMIN)
    y8 = tl.reshape(y.to(out_ptr.dtype.element_ty), [R_HI, DQ, R_LO, W_HI, 2 * W_LO])
    o_base = out_ptr + b * stride_ob + h * stride_oh
    cols = 2 * wbase + tl.arange(0, 2 * W_LO)
    if STORE_2D:
        # non-transposed: FP8 rows as a [BLOCK_S, D_PAD] tile, the coalescer's store layout
        # (16-byte vectors along a row); the bytes pass once through shared memory
        D_PAD: tl.constexpr = 2 * W
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
                N_WHI: tl.constexpr = 1, LOG2_WHI: tl.constexpr = 0):
    """(lo, hi) float32 [.., W_LO]: columns (2k, 2k + 1) for the words k = wbase + i, i < W_LO,
    rows `rows`; zero outside S x HEAD_DIM."""
    if WORDS:
        # x_ptr is the bf16 input seen as int32 (strides in words): bf16 -> float32 is a 16-bit
        # shift, one integer op per value
        word = wbase + tl.arange(0, W_LO)
        if COALESCED:
            # (R_LO == DQ == 1) lanes along a row (a warp load: 2 rows of 256 bytes, whole
            # sectors; 16-byte pieces of 32 rows fetch each sector twice from L2 when L1 misses),
            # then whole rows into each thread: the split / join pairs of every word-index bit
            # ask for that layout, so the compiler converts once, through shared memory
            r3 = tl.arange(0, N_ROWS)[None, :, None] + row0
            k3 = tl.arange(0, N_WHI)[:, None, None] * W_LO + tl.arange(0, W_LO)[None, None, :]
            w3 = tl.load(x_base + r3.to(tl.int64) * stride_xs + k3 * stride_xd,
                         mask=((r3 < S) | EVEN_S) & (k3 < HEAD_DIM // 2), other=0)
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


@triton.jit
def round_to_fp8_grid(y, MBITS: tl.constexpr, EMIN: tl.constexpr):
    """Round float32 y (already clamped to +-fp8_max) to the nearest FP8 value, ties to even,
    subnormals included, in float32 arithmetic. The cast of the result is then exact everywhere:
    the interpreter's own FP8 rounding is wrong when the mantissa carries into the exponent
    (31.9 -> 16 instead of 32) and flushes subnormals."""
    e = ((y.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127            # floor(log2 |y|)
    e_ulp = tl.maximum(e, EMIN) - MBITS                                 # exponent of one FP8 ulp
    ulp = ((e_ulp + 127) << 23).to(tl.float32, bitcast=True)
    inv_ulp = ((127 - e_ulp) << 23).to(tl.float32, bitcast=True)
    # |y * inv_ulp| <= 2**(MBITS + 1): adding 1.5 * 2**23 rounds it to an integer, ties to even
    r = (y * inv_ulp + 12582912.0) - 12582912.0
    return r * ulp


def _tile_params(d: int, rotate: bool) -> dict:
    if rotate:
        return tile_params(d)
    # no rotation: any head dim, one group of the next power of two, masked
    p = triton.next_power_of_2(d)
    return dict(M=1, M_PAD=1, P=p, LOG2_P=p.bit_length() - 1, NORM=1.0)


def default_variant(d: int, rotate: bool) -> dict:
    """Kernel variant (same results) for head dim d: layout 2 (`_pairs_kernel`) where it applies
    (block / token scales, head dims 2**k >= 8 without a 12 / 20 factor, even; rotation up to 128),
    else LAYOUT 1 (rotations) or 0; software rounding only under the interpreter.

    Layout 2 keeps bf16 column pairs as int32 words (one integer op unpacks a value), the signs as
    compile-time constants (free operand negations in the first butterfly stage), one
    NaN-propagating max for both the amax and the NaN / Inf check: about 14 instructions a value
    against 23 (sm_90 SASS, Triton 3.6). Rotations load rows coalesced and convert once through
    shared memory (`coalesced`: loads of 16-byte pieces of 32 rows a warp fetched sectors twice
    from L2, which ran at 85-88% of its throughput); without rotation each lane loads its rows.

    H200 (Triton 3.6, 2026-11-22 04:50-05:07 UTC, benchmarks/sweep_quant.py, bf16 (4, 32, 8192,
    128), % of a bf16 copy of 4100-4130 GB/s in the same run, results/sweep_quant_h200_0450/0500/0507):
      rotate + quantise e4m3 block 128: 69% (LAYOUT 1) -> 85.8% and 85.4% (0.114 ms; ncu 109-111
        us, DRAM 73%, L2 81-83%); e5m2 86.1%; but 64.8% and 62.0% for the same kernel in the last
        run (0507, through the autotuner's launch path; 80.8% there with the signs loaded).
      rotate + quantise token: 42% -> 89.3%, 89.1%, 89.5% (BLOCK_S 64, 2 warps).
      quantise block 128, V transposed: 57% (LAYOUT 0) -> 78.6%, 80.3%, 80.0%, but also 61.8%,
        46.2%, 34.2% (four rows a thread, one 4-byte store per column, maxnreg 168: three programs
        an SM); maxnreg 160: 77.2%, 77.0%; no maxnreg: 70.9%, 71.9%.
      quantise block 128 (no rotation): 75% -> 84.1%, 84.0%, 83.4%, 83.8%.
    Note: at ~0.11 ms a call these timings (do_bench, one event pair a call) moved by up to 2x
    between identical kernels and runs while the older, slower kernels stayed within 1%: host
    time a call comparable to the kernel's is the likely cause (hence the direct launch in
    `_run_pairs`); ncu's kernel durations did not move.
    Knobs (benchmarks): variant keys layout, soft_cast, store_2d, coalesced, const_signs, words;
    environment FP8ATTN_QUANT_LAYOUT=0|1|2, FP8ATTN_QUANT_STORE2D=0|1, FP8ATTN_QUANT_SOFT=1,
    FP8ATTN_TUNE=all (autotune `_pairs_kernel` over every config that fits)."""
    tp = _tile_params(d, rotate)
    layout = 2
    forced = _env("FP8ATTN_QUANT_LAYOUT")
    if forced in ("0", "2") or (forced == "1" and tp["M"] == 1 and tp["P"] >= 8):
        layout = int(forced)
    soft = os.environ.get("TRITON_INTERPRET") == "1" or _env("FP8ATTN_QUANT_SOFT") == "1"
    store_2d = _env("FP8ATTN_QUANT_STORE2D") != "0"
    return dict(layout=layout, soft_cast=soft, soft_amax=True, store_2d=store_2d)


def quantize_triton(x: torch.Tensor, fmt: str, granularity: str, block: int, *,
                    signs: torch.Tensor | None = None, transpose: bool = False,
                    butterfly: int = DEFAULT_BUTTERFLY, variant: dict | None = None,
                    config: dict | None = None) -> QuantizedTensor:
    """Launcher; the caller (fp8attn.quant.quantize) has validated every argument.

    transpose=True returns data as a (B, H, D, S) view of a (B, H, D, S_pad) buffer, S_pad = S rounded
    up to a multiple of 16 (zero-filled tail): rows along S start 16-byte aligned for the attention
    kernel's loads; data.stride(-2) == S_pad.
    variant: dict(layout, soft_cast, soft_amax) (default `default_variant`; same results, for
    benchmarks). config: dict(BLOCK_S, num_warps[, maxnreg]) launches that config without autotuning.
    """
    B, H, S, D = x.shape
    bs = group_block_size(granularity, S, block)
    nb = -(-S // bs)
    tp = _tile_params(D, signs is not None)
    d_pad = tp["M_PAD"] * tp["P"]
    dev = x.device
    dtype8 = fp8_dtype(fmt)
    if transpose:
        s_pad = -(-S // S_ALIGN) * S_ALIGN
        full = torch.empty(B, H, D, s_pad, dtype=dtype8, device=dev)
        if s_pad > S:
            full[..., S:].zero_()
        data = full[..., :S]
        o_strides = (full.stride(0), full.stride(1), 1, full.stride(2))
    else:
        data = torch.empty(B, H, S, D, dtype=dtype8, device=dev)
        o_strides = (data.stride(0), data.stride(1), data.stride(2), 1)
    descale = torch.empty(B, H, nb, dtype=torch.float32, device=dev)
    hm = small_factor_tensor(tp["M"], dev)
    signs_arg = signs.to(device=dev, dtype=torch.float32).contiguous() if signs is not None else hm
    var = {**default_variant(D, signs is not None), **(variant or {})}
    p_lo = min(8, tp["P"])
    fused = (granularity in ("block", "token") and bs & (bs - 1) == 0 and bs <= 256
             and bs * d_pad <= MAX_TILE)

    if fused and var["layout"] == 2 and _pairs_ok(x, tp, bs, signs is not None, transpose):
        _run_pairs(x, data, descale, signs_arg, signs is not None, nb, bs, tp, fmt, o_strides, var,
                   transpose, config)
        return QuantizedTensor(data=data, descale=descale, block_size=bs, fmt=fmt,
                               transposed=transpose)
    if var["layout"] == 2:
        var["layout"] = 1 if signs is not None and tp["M"] == 1 and 8 <= tp["P"] <= 128 else 0
    common = dict(M=tp["M"], M_PAD=tp["M_PAD"], P=tp["P"], LOG2_P=tp["LOG2_P"], D_PAD=d_pad,
                  NORM=tp["NORM"], HAS_SIGNS=signs is not None, FP8_MAX=fp8_max(fmt),
                  MBITS=_MBITS_EMIN[fmt][0], EMIN=_MBITS_EMIN[fmt][1],
                  TRANSPOSE=transpose, BUTTERFLY=butterfly, LAYOUT=var["layout"],
                  P_LO=p_lo, LOG2_LO=p_lo.bit_length() - 1, SOFT_CAST=var["soft_cast"],
                  SOFT_AMAX=var["soft_amax"], STORE_2D=var["store_2d"])
    args = (x, data, descale)
    if fused:
        _run(args, None, None, signs_arg, hm, B, H, S, D, nb, bs, x.stride(), o_strides, config,
             MODE=MODE_FUSED, GROUP=bs, **common)
    else:
        row_amax = torch.empty(B, H, S, dtype=torch.float32, device=dev)
        _run(args, descale, row_amax, signs_arg, hm, B, H, S, D, nb, bs, x.stride(), o_strides,
             config, MODE=MODE_AMAX, GROUP=1, **common)
        amax = _group_amax(row_amax, granularity, bs, nb)
        scale, descale_t = scales_from_amax(amax, fmt)
        descale.copy_(descale_t)
        _run(args, scale.contiguous(), row_amax, signs_arg, hm, B, H, S, D, nb, bs, x.stride(),
             o_strides, config, MODE=MODE_CAST, GROUP=1, **common)
    return QuantizedTensor(data=data, descale=descale, block_size=bs, fmt=fmt, transposed=transpose)


def _pairs_ok(x, tp, bs, rotate, transpose) -> bool:
    """`_pairs_kernel` takes the tile: 2**k columns (>= 8), an even head dim, some config fits."""
    d, p = x.shape[-1], tp["P"]
    if tp["M"] != 1 or p < 8 or d % 2 or (rotate and p > 128):
        return False
    return _pairs_first_config(p, bs, rotate, transpose) is not None


def _pairs_first_config(p, bs, rotate, transpose):
    return next((c for c in PAIRS_CONFIGS
                 if _pairs_fits(c.kwargs, c.num_warps, p, bs, rotate, transpose)), None)


def _as_words(x: torch.Tensor):
    """x viewed as int32 (one word per bf16 column pair) if its layout allows, else None."""
    if x.dtype != torch.bfloat16 or x.stride(-1) != 1 or x.storage_offset() % 2:
        return None
    if any(st % 2 for st in x.stride()[:-1]):
        return None
    return x.view(torch.int32)


def _run_pairs(x, data, descale, signs_arg, rotate, nb, bs, tp, fmt, o_strides, var, transpose,
               config):
    B, H, S, D = x.shape
    xw = _as_words(x)
    words = xw is not None and var.get("words", True)
    xin = xw if words else x
    meta = dict(HEAD_DIM=D, P=tp["P"], NORM=tp["NORM"], HAS_SIGNS=rotate,
                GROUP=bs, FP8_MAX=fp8_max(fmt), MBITS=_MBITS_EMIN[fmt][0], EMIN=_MBITS_EMIN[fmt][1],
                WORDS=words, TRANSPOSE=transpose, SOFT_CAST=var["soft_cast"],
                STORE_2D=var.get("store_2d", True) and not transpose,
                SIGN_BITS=_sign_bits(signs_arg) if rotate and var.get("const_signs", True) else -1,
                COALESCED=var.get("coalesced", rotate))
    kernel = _pairs_kernel
    if config is None and _env("FP8ATTN_TUNE") != "all":
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

    grid = lambda m: (B * H * triton.cdiv(S, m["BLOCK_S"]),)
    kernel[grid](xin, data, descale, signs_arg, H, S, nb, *xin.stride(), *o_strides, **meta)


_SIGN_BITS: dict = {}


def _sign_bits(signs: torch.Tensor) -> int:
    """The +-1 signs as an int (bit c set: column c negative), read to the host once per signs
    tensor (cached_hadamard_signs hands out one tensor per (d, seed, device)) and version."""
    hit = _SIGN_BITS.get(id(signs))
    if hit is not None and hit[0]() is signs and hit[1] == signs._version:
        return hit[2]
    neg = (signs.detach().float().cpu() < 0).tolist()
    bits = sum(1 << c for c, n in enumerate(neg) if n)
    if len(_SIGN_BITS) > 64:                       # drop entries of tensors freed since
        for k in [k for k, v in _SIGN_BITS.items() if v[0]() is None]:
            del _SIGN_BITS[k]
    _SIGN_BITS[id(signs)] = (weakref.ref(signs), signs._version, bits)
    return bits


def _run(args, scale, row_amax, signs_arg, hm, B, H, S, D, nb, bs, x_strides, o_strides, config,
         **meta):
    x, data, descale = args
    kernel = _quant_kernel
    if config is not None:                  # a forced config: the jitted function, no autotuning
        kernel = _quant_kernel.fn
        meta.update(config)
    grid = lambda m: (B * H * triton.cdiv(S, m["BLOCK_S"]),)
    kernel[grid](x, data, descale, scale if scale is not None else descale,
                 row_amax if row_amax is not None else descale, signs_arg, hm,
                 H, S, nb, bs, *x_strides, *o_strides, HEAD_DIM=D, **meta)


def _group_amax(row_amax: torch.Tensor, granularity: str, bs: int, nb: int) -> torch.Tensor:
    """(B, H, S) row amaxes -> (B, H, NB) group amaxes, as quant.reference.compute_descale_groups."""
    B, H, S = row_amax.shape
    if granularity == "tensor":
        return row_amax.amax().reshape(1, 1, 1).expand(B, H, 1).contiguous()
    pad = nb * bs - S
    if pad:
        row_amax = torch.nn.functional.pad(row_amax, (0, pad))
    return row_amax.reshape(B, H, nb, bs).amax(dim=-1)
