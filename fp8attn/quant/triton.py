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

`_pairs_kernel` (layout 2, quant/triton_pairs.py; MODE_FUSED only, the default where it applies)
holds whole rows (or four rows of a quarter of the columns, for transposed V) in each thread as bf16
column pairs; its docstring and `default_variant`'s say how, and what it measured.

Tile layouts of `_quant_kernel` (constexpr LAYOUT, same results): 1 (rotations, head dims
2**k <= 128, and since session 29 those with a 12 / 20 factor up to 128 padded columns: 80, 96)
holds each row in one thread, so the butterfly and the small factor need no shuffles and no
shared-memory layout conversions (the rows-first tile of LAYOUT 0 needed three fp32 round trips
through shared memory per tile at d = 128 in sm_90 PTX; LAYOUT 1 ran 2.6x faster on an H200; at 96
/ 80 the rotated quantise ran 2.4x / 3.5x faster, H200, 2026-12-02,
benchmarks/results/probe_quant_dims_l{0,1}_s29.json; with session 30's shared sum another 1.12x
/ 1.17x: 0.079 -> 0.071 ms at 96, 0.087 -> 0.074 at 80 for (4, 32, 4096, d) bf16,
results/quant_dims_{old,new}_*_s30.json); 0 (no rotation, wider 12 / 20-factor head
dims, or 256) uses `hadamard_tile`. `default_variant` picks; the numbers are in its docstring.

Casts: x8 = cast(clamp(x * scale, -fp8_max, fp8_max)) with NaN kept NaN. The GPU's cast
(cvt.rn.satfinite) rounds to nearest even and saturates finite values by itself, so the clamp and the
software rounding (`round_to_fp8_grid`) run only under the interpreter, whose cast does neither
(SOFT_CAST; benchmarks/sweep_quant.py and tests/test_quant.py check the two bit for bit on the GPU).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from types import MappingProxyType

import torch
import triton
import triton.language as tl

from .. import kernel_launch
from ..formats import fp8_dtype, fp8_max, scales_from_amax
from ..hadamard.triton import DEFAULT_BUTTERFLY, hadamard_tile, small_factor_tensor, tile_params
from ..host_ints import cdiv, next_power_of_2
from .key_order import to_mma
from .reference import QuantizedTensor, cached_search_factors, group_block_size
from .triton_cast import _MBITS_EMIN, _cast_fp8, _env, round_to_fp8_grid
from .padded_rows import PaddedRows, pad_rows
from .triton_pairs import _pairs_first_config, _pairs_ok, _run_pairs, dual_ok, row_map_ok

MODE_FUSED, MODE_AMAX, MODE_CAST = 0, 1, 2
MAX_TILE = 32768        # elements of one [BLOCK_S, D_PAD] register tile (fp32: 128 KB per program)
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


# LAYOUT 1 (one row per thread) first: under FP8ATTN_TUNE=minimal the first config that fits is used
CONFIGS = ([triton.Config({"BLOCK_S": 32 * w}, num_warps=w) for w in (4, 1, 2, 8)]
           + [triton.Config({"BLOCK_S": s}, num_warps=w)
              for s, w in ((16, 4), (32, 4), (64, 4), (64, 8), (128, 4), (128, 8), (256, 8),
                           (128, 16), (256, 16))])


@triton.autotune(
    configs=CONFIGS,
    key=["D_PAD", "M", "MODE", "GROUP", "HAS_SIGNS", "TRANSPOSE", "BUTTERFLY", "LAYOUT",
         "SOFT_CAST", "SOFT_AMAX", "STORE_2D", "RESIDUAL", "SEARCH"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _quant_kernel(x_ptr, out_ptr, res_ptr, descale_ptr, scale_ptr, row_amax_ptr, signs_ptr,
                  hm_ptr, search_ptr, H, S, NB, group_rt,
                  stride_xb, stride_xh, stride_xs, stride_xd,
                  stride_ob, stride_oh, stride_os, stride_od,
                  HEAD_DIM: tl.constexpr,
                  M: tl.constexpr, M_PAD: tl.constexpr, P: tl.constexpr, LOG2_P: tl.constexpr,
                  D_PAD: tl.constexpr, NORM: tl.constexpr, HAS_SIGNS: tl.constexpr,
                  MODE: tl.constexpr, GROUP: tl.constexpr, FP8_MAX: tl.constexpr,
                  MBITS: tl.constexpr, EMIN: tl.constexpr,
                  TRANSPOSE: tl.constexpr, BUTTERFLY: tl.constexpr, LAYOUT: tl.constexpr,
                  P_LO: tl.constexpr, LOG2_LO: tl.constexpr, SOFT_CAST: tl.constexpr,
                  SOFT_AMAX: tl.constexpr, STORE_2D: tl.constexpr, RESIDUAL: tl.constexpr,
                  SEARCH: tl.constexpr, QR_MASK: tl.constexpr, BLOCK_S: tl.constexpr,
                  ROW_MAP: tl.constexpr = False, MAP_ALIGN: tl.constexpr = 1, map_ptr=None,
                  S_SRC=None):
    """x (B, H, S, D) any strides -> out FP8 at out[b, h, s, d] = out_ptr + b*stride_ob + h*stride_oh
    + s*stride_os + d*stride_od (the launcher passes (B, H, S, D) or (B, H, D, S_pad) strides).
    descale / scale: float32 (B, H, NB) contiguous; row_amax: float32 (B, H, S) contiguous.

    LAYOUT 0: the tile is [BLOCK_S, M_PAD, P] (rows first), rotated by `hadamard_tile`.
    LAYOUT 1: the tile is [D_PAD // P_LO, BLOCK_S, P_LO], element (j, r, i) = x[r, j*P_LO + i]:
    the coalescer spreads the lanes over the rows, so each thread holds whole rows and every butterfly
    stage stays inside a thread (no shuffles, no shared-memory layout conversions). With a 12 / 20
    factor (M > 1, P_LO == P: j is the group) the M x M factor mixes the groups inside the thread
    too (`_small_factor_in_thread`; QR_MASK: the quadratic residues of Paley's prime M - 1).
    SOFT_CAST: clamp and round in software before the cast (the interpreter's cast neither saturates
    nor rounds right); the GPU's cast rounds to nearest even and saturates finite values by itself.
    SOFT_AMAX: zero NaN and Inf before the max. Without it (GPU only, a benchmark variant) the
    max.f32 reductions skip NaN by themselves and an all-NaN row or group is zeroed after the
    reduction, but an Inf made by the rotation (inputs near the float32 limit) would set the scale.
    RESIDUAL (MODE_FUSED / MODE_CAST): also store cast(y - float(cast(y))), the second FP8 term of
    the same y = x * scale, at res_ptr with out_ptr's strides.
    SEARCH > 1 (MODE_FUSED, GROUP 1): each row's scale is the best of SEARCH candidates
    (quant.reference.search_row_scales; search_ptr holds its (2, SEARCH) factor table).
    ROW_MAP (varlen K / V into padded rows, quant/padded_rows.py; B == 1): x holds S_SRC
    packed rows, the output S rows; output row r of tile t = r // MAP_ALIGN is packed row
    map_ptr[2t] + r - t * MAP_ALIGN while that offset is below the tile's count map_ptr[2t + 1],
    else a zero row: the bits of quantising padded_rows.pad_rows' copy, without the copy."""
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
        P_HI: tl.constexpr = D_PAD // P_LO
        col = tl.arange(0, P_HI)[:, None, None] * P_LO + tl.arange(0, P_LO)[None, None, :]
        r3 = rows[None, :, None]
    mask = (r3 < S) & (col < HEAD_DIM)
    if ROW_MAP:
        t_row = rows // MAP_ALIGN
        src0 = tl.load(map_ptr + 2 * t_row, mask=rows < S, other=0)
        n_src = tl.load(map_ptr + 2 * t_row + 1, mask=rows < S, other=0)
        r_in = rows - t_row * MAP_ALIGN
        src = tl.where(r_in < n_src, src0 + r_in, S_SRC)    # S_SRC: masked below, a zero row
        if LAYOUT == 0:
            x_r3 = src[:, None, None]
        else:
            x_r3 = src[None, :, None]
        x_mask = (x_r3 < S_SRC) & (col < HEAD_DIM)
    else:
        x_r3 = r3
        x_mask = mask
    x_offs = x_r3.to(tl.int64) * stride_xs + col * stride_xd
    x = tl.load(x_ptr + b * stride_xb + h * stride_xh + x_offs, mask=x_mask, other=0.0)
    x = x.to(tl.float32)
    x = tl.where(tl.abs(x) == float("inf"), float("nan"), x)         # as the reference: Inf -> NaN
    if HAS_SIGNS:
        sg = tl.load(signs_ptr + col, mask=col < HEAD_DIM, other=0.0)
        if LAYOUT == 0:
            x = hadamard_tile(x * sg, hm_ptr, BLOCK_S, M, M_PAD, P, LOG2_P, NORM, BUTTERFLY)
        else:
            x = _fwht_in_thread(x * sg, D_PAD // P_LO, BLOCK_S, P_LO, LOG2_P - LOG2_LO, LOG2_LO)
            if M > 1:
                x = _small_factor_in_thread(x, M, D_PAD // P_LO, QR_MASK)
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
            if SEARCH > 1:
                scale_g, descale_g = _search_rows(x, scale_g, descale_g, search_ptr, SEARCH,
                                                  MBITS, EMIN, LAYOUT)
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
        y8, yq = _cast_fp8(y, out_ptr, SOFT_CAST, FP8_MAX, MBITS, EMIN, RESIDUAL)
        o_off = b * stride_ob + h * stride_oh
        _store_q(out_ptr + o_off, y8, rows, r3, col, mask, S, stride_os, stride_od, HEAD_DIM,
                 D_PAD, LAYOUT, STORE_2D, BLOCK_S)
        if RESIDUAL:
            # second FP8 term of the same y (exact float32 difference; launched without FP
            # fusion, so y is rounded before the subtraction as in the reference), same scale
            r8, _ = _cast_fp8(y - yq, out_ptr, SOFT_CAST, FP8_MAX, MBITS, EMIN)
            _store_q(res_ptr + o_off, r8, rows, r3, col, mask, S, stride_os, stride_od, HEAD_DIM,
                     D_PAD, LAYOUT, STORE_2D, BLOCK_S)


@triton.jit
def _store_q(o_base, y8, rows, r3, col, mask, S, stride_os, stride_od, HEAD_DIM: tl.constexpr,
             D_PAD: tl.constexpr, LAYOUT: tl.constexpr, STORE_2D: tl.constexpr,
             BLOCK_S: tl.constexpr):
    if LAYOUT == 1 and STORE_2D:
        # FP8 rows as a [BLOCK_S, D_PAD] tile: the store takes the coalescer's layout (16-byte
        # vectors, consecutive lanes on consecutive bytes), the FP8 values pass through shared
        # memory once (1 byte each) instead of every lane writing 8 bytes of its own row
        rows2 = rows[:, None]
        col2 = tl.arange(0, D_PAD)[None, :]
        o_offs2 = rows2.to(tl.int64) * stride_os + col2 * stride_od
        y2 = tl.reshape(tl.permute(y8, [1, 0, 2]), [BLOCK_S, D_PAD])
        tl.store(o_base + o_offs2, y2, mask=(rows2 < S) & (col2 < HEAD_DIM))
    else:
        o_offs = r3.to(tl.int64) * stride_os + col * stride_od
        tl.store(o_base + o_offs, y8, mask=mask)


@triton.jit
def _row_sq_err(y, MBITS: tl.constexpr, EMIN: tl.constexpr, LAYOUT: tl.constexpr):
    """Per row: sum of (y - y rounded to the FP8 grid)**2 (|y| <= fp8_max: no clamp needed).
    Software rounding (the exact value the cast gives): FP8 registers are never read back."""
    e = y - round_to_fp8_grid(y, MBITS, EMIN)
    if LAYOUT == 0:
        return tl.sum(tl.sum(e * e, axis=2), axis=1)
    return tl.sum(tl.sum(e * e, axis=2), axis=0)


@triton.jit
def _search_rows(x, scale, descale, search_ptr, SEARCH: tl.constexpr, MBITS: tl.constexpr,
                 EMIN: tl.constexpr, LAYOUT: tl.constexpr):
    """quant.reference.search_row_scales for the rows of one tile: (scale, descale) [BLOCK_S] of
    the candidate scale * 2**(-j/SEARCH) with the least squared rounding error."""
    best_s = scale
    best_d = descale
    best_e = _row_sq_err(x * _rows_expand(scale, LAYOUT), MBITS, EMIN, LAYOUT) * descale * descale
    for j in tl.static_range(1, SEARCH):
        s_j = scale * tl.load(search_ptr + j)
        d_j = descale * tl.load(search_ptr + SEARCH + j)
        err = _row_sq_err(x * _rows_expand(s_j, LAYOUT), MBITS, EMIN, LAYOUT) * d_j * d_j
        better = err < best_e
        best_e = tl.where(better, err, best_e)
        best_s = tl.where(better, s_j, best_s)
        best_d = tl.where(better, d_j, best_d)
    return best_s, best_d


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
def _small_factor_in_thread(x, M: tl.constexpr, G: tl.constexpr, QR_MASK: tl.constexpr):
    """y[i] = sum_j H_M[i, j] x[j] over the groups (dim 0) of a [G, N, P] tile whose dims 0 and
    2 are inside each thread (LAYOUT 1), G = M rounded up to a power of two (groups from M on
    are zero, and so are their outputs). H_M is Paley's construction of
    hadamard.reference._paley_int: 1 on the diagonal and in row 0, -1 in column 0 below it, else
    chi(j - i) for the prime q = M - 1 (+1 where (j - i) mod q is a quadratic residue, the bits
    of QR_MASK). The signs come from the indices, compile-time constants inside a thread, so no
    M x M product is formed (LAYOUT 0 does it as a tl.dot with layout conversions).
    With c = x[0] + ... + x[M-1] (= y[0]) and R_i the sum of the x[j] with chi(j - i) = +1, row
    i >= 1 is x[i] - x[0] + R_i - (c - x[0] - x[i] - R_i) = 2 (x[i] + R_i) - c: (q - 1) / 2
    adds and an FMA a value (6 operations at M = 12, 10 at 20) instead of M - 1 adds (11, 19),
    with c shared:
    offline (Triton 3.6, sm_90a) 1,363 / 1,462 f32 ops a row at 96 / 80 against 1,739 / 1,982,
    the same 254 registers. The sums' order is not the reference's einsum's, so values can
    differ from it by one float32 rounding (tests allow one FP8 ulp, rarely).
    The masked terms are -0.0, which the adds drop (x + -0.0 == x, NaN and -0.0 included)."""
    i = tl.arange(0, G)[:, None, None, None]
    j = tl.arange(0, G)[None, :, None, None]
    q: tl.constexpr = M - 1
    qr = (QR_MASK >> ((j - i + G * q) % q)) & 1          # kept non-negative
    plus = (j >= 1) & (i < M) & (j < M) & ((i == j) | (qr == 1))
    xj = x[None, :, :, :]
    a = tl.sum(tl.where(plus, xj, -0.0), axis=1)                      # x[i] + R_i, [G, N, P]
    # the same sum for every i: one add chain after common-subexpression elimination
    c = tl.sum(tl.where((j < M) & (i >= 0), xj, -0.0), axis=1)     # (i >= 0: the 4-D shape)
    i3 = tl.arange(0, G)[:, None, None]
    return tl.where(i3 == 0, c, tl.where(i3 < M, 2.0 * a - c, 0.0))


def _qr_mask(m: int) -> int:
    """The quadratic residues of Paley's prime m - 1 as bits (0 for m == 1)."""
    if m == 1:
        return 0
    q = m - 1
    return sum(1 << r for r in {(a * a) % q for a in range(1, q)})


@functools.lru_cache(maxsize=None)
def _tile_params(d: int, rotate: bool) -> Mapping:
    """The quantiser's tile constants for head dim d (read-only: one mapping per (d, rotate),
    cached: every call of the attention functions asks for them several times)."""
    if rotate:
        return MappingProxyType(tile_params(d))
    # no rotation: any head dim, one group of the next power of two, masked
    p = next_power_of_2(d)
    return MappingProxyType(dict(M=1, M_PAD=1, P=p, LOG2_P=p.bit_length() - 1, NORM=1.0))


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
                    config: dict | None = None, residual: bool = False,
                    search: int = 1, key_order: str = "natural",
                    rows: PaddedRows | None = None) -> QuantizedTensor:
    """Launcher; the caller (fp8attn.quant.quantize) has validated every argument.

    transpose=True returns data as a (B, H, D, S) view of a (B, H, D, S_pad) buffer, S_pad = S rounded
    up to a multiple of 16 (zero-filled tail): rows along S start 16-byte aligned for the attention
    kernel's loads; data.stride(-2) == S_pad.
    variant: dict(layout, soft_cast, soft_amax) (default `default_variant`; same results, for
    benchmarks). config: dict(BLOCK_S, num_warps[, maxnreg]) launches that config without autotuning.
    residual: also write the second FP8 term (QuantizedTensor.residual, same layout as data) in
    the same launch, every kernel path.
    search: > 1 (granularity "token", not transposed: checked by the caller) picks each row's
    scale among `search` candidates in the same pass of `_quant_kernel` where
    `_search_in_kernel` allows it, else with the torch reference on x's device.
    key_order "mma" (transpose=True): V^T's keys permuted as quant/key_order.py says, in the
    same pass where `_pairs_kernel` runs with scale groups of a multiple of 16 rows, else by
    one gather after the kernel (key_order.to_mma).
    rows: None, or a PaddedRows for x's packed rows (x of batch 1): quantise them into that
    layout (S = rows.rows), in the same pass where `_pairs_kernel` takes it or the tile goes to
    `_quant_kernel` anyway (ROW_MAP; e.g. K's 12 x 8 rotation at head dim 96, session 37), else
    from a copy (padded_rows.pad_rows).
    """
    B, H, S, D = x.shape
    if rows is not None:
        S = rows.rows                                       # the output's rows
    bs = group_block_size(granularity, S, block)
    nb = -(-S // bs)
    tp = _tile_params(D, signs is not None)
    d_pad = tp["M_PAD"] * tp["P"]
    dev = x.device
    var = {**default_variant(D, signs is not None), **(variant or {})}
    fused = _fused_groups(granularity, bs, d_pad)
    # the tile goes to `_pairs_kernel` (it has no scale search: `_quant_kernel` then)
    pairs = (fused and var["layout"] == 2 and search == 1
             and _pairs_ok(x, tp, bs, signs is not None, transpose))
    # K / V into padded rows by `_quant_kernel` (ROW_MAP) where it takes the tile anyway
    quant_map = rows is not None and not pairs and x.shape[0] == 1 and search == 1
    if rows is not None and not quant_map and not (
            pairs and config is None and not residual
            and (key_order == "natural" or bs % 16 == 0)
            and row_map_ok(x, tp, bs, signs is not None, transpose, rows)):
        return quantize_triton(pad_rows(x, rows), fmt, granularity, block, signs=signs,
                               transpose=transpose, butterfly=butterfly, variant=variant,
                               config=config, residual=residual, search=search,
                               key_order=key_order)
    if search > 1:
        # decided before allocating: the torch reference makes its own outputs
        if not fused:
            raise ValueError(f"search={search} needs per-token scale groups (got block size {bs})")
        if var["layout"] == 2:                  # the pairs kernel has no search
            var["layout"] = _quant_kernel_layout(tp, signs is not None)
        if not _search_in_kernel(var["layout"], tp, x):
            from .reference import quantize_reference
            return quantize_reference(x, fmt, granularity, block, signs=signs, residual=residual,
                                      search=search)
    dtype8 = fp8_dtype(fmt)
    if transpose:
        data, o_strides, descale, full = _transposed_outputs(x, dtype8, nb, S)
        res = torch.zeros_like(full)[..., :S] if residual else None
    else:
        data, o_strides, descale = _plain_outputs(x, dtype8, nb, S)
        res = torch.empty_like(data) if residual else None
    hm = small_factor_tensor(tp["M"], dev)
    signs_arg = _signs_arg(signs, hm)
    p_lo = min(8, tp["P"])

    if pairs:
        in_kernel = key_order == "mma" and bs % 16 == 0
        _run_pairs(x, data, descale, signs_arg, signs is not None, nb, bs, tp, fmt, o_strides, var,
                   transpose, config, res, key_perm=in_kernel, rows=rows)
        if in_kernel:
            return QuantizedTensor(data=data, descale=descale, block_size=bs, fmt=fmt,
                                   transposed=True, residual=res, key_order="mma")
        return _in_order(QuantizedTensor(data=data, descale=descale, block_size=bs, fmt=fmt,
                                         transposed=transpose, residual=res), key_order)
    if var["layout"] == 2:
        var["layout"] = _quant_kernel_layout(tp, signs is not None)
    common = dict(M=tp["M"], M_PAD=tp["M_PAD"], P=tp["P"], LOG2_P=tp["LOG2_P"], D_PAD=d_pad,
                  NORM=tp["NORM"], HAS_SIGNS=signs is not None, FP8_MAX=fp8_max(fmt),
                  MBITS=_MBITS_EMIN[fmt][0], EMIN=_MBITS_EMIN[fmt][1],
                  TRANSPOSE=transpose, BUTTERFLY=butterfly, LAYOUT=var["layout"],
                  P_LO=p_lo, LOG2_LO=p_lo.bit_length() - 1, SOFT_CAST=var["soft_cast"],
                  SOFT_AMAX=var["soft_amax"], STORE_2D=var["store_2d"], RESIDUAL=residual,
                  SEARCH=search, QR_MASK=_qr_mask(tp["M"]))
    if residual:
        common["enable_fp_fusion"] = False      # y - float(cast(y)) from the rounded y
    args = (x, data, data if res is None else res, descale,
            cached_search_factors(search, dev) if search > 1 else descale)
    if quant_map:
        common.update(ROW_MAP=True, MAP_ALIGN=rows.align, map_ptr=rows.tiles(rows.align),
                      S_SRC=rows.total)
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
    return _in_order(QuantizedTensor(data=data, descale=descale, block_size=bs, fmt=fmt,
                                     transposed=transpose, residual=res), key_order)


def _fused_groups(granularity: str, bs: int, d_pad: int) -> bool:
    """Scale groups the one-pass kernels take: power-of-two blocks or tokens of at most 256
    rows, a [bs, d_pad] tile within MAX_TILE."""
    return (granularity in ("block", "token") and bs & (bs - 1) == 0 and bs <= 256
            and bs * d_pad <= MAX_TILE)


def _signs_arg(signs, hm: torch.Tensor) -> torch.Tensor:
    """The kernels' signs pointer: the rotation signs as float32 on hm's device, or (no
    rotation: never read) the small-factor matrix hm."""
    if signs is None:
        return hm
    return signs.to(device=hm.device, dtype=torch.float32).contiguous()


def _plain_outputs(x: torch.Tensor, dtype8, nb: int, rows: int | None = None):
    """(data (B, H, S, D) FP8, its strides, descale (B, H, nb) float32) for x, not transposed
    (S: `rows` if given, else x's)."""
    B, H, S, D = x.shape
    S = S if rows is None else rows
    data = torch.empty(B, H, S, D, dtype=dtype8, device=x.device)
    descale = torch.empty(B, H, nb, dtype=torch.float32, device=x.device)
    return data, (data.stride(0), data.stride(1), data.stride(2), 1), descale


def quantize_pair_triton(q: torch.Tensor, k: torch.Tensor, fmt: str, granularity: str,
                         block_q: int, block_k: int, *, signs: torch.Tensor | None = None,
                         k_rows: PaddedRows | None = None, v: torch.Tensor | None = None,
                         v_key_order: str = "natural"):
    """quantize_triton(q, ...) and quantize_triton(k, ...) (natural layout, one FP8 term, no
    scale search) in one `_pairs_kernel` launch where both take that kernel with the same meta
    (same dtype, head dim, scale group size and column stride): the same bits, one launch's
    host time less (H200, 2026-11-30: 599 -> 520 us of host time a call at (4, 4096, 16, 128)
    causal, benchmarks/RESULTS.md session 9). k_rows: quantize_triton's `rows` for k (varlen
    K into padded rows; the same launch where `row_map_ok`), and for v.
    Otherwise two launches. Returns (q8, k8, v8): v given, V^T (quantize_triton(v,
    transpose=True, key_order=v_key_order, rows=k_rows)'s bits) from the same launch where
    `_triple_ok`, else v8 None (the caller quantises V)."""
    B, H, S, D = q.shape
    s_k = k.shape[-2] if k_rows is None else k_rows.rows          # K's output rows
    bs = group_block_size(granularity, S, block_q)
    tp = _tile_params(D, signs is not None)
    var = default_variant(D, signs is not None)
    one = (_fused_groups(granularity, bs, tp["M_PAD"] * tp["P"]) and var["layout"] == 2
           and _env("FP8ATTN_TUNE") != "all")
    if not (one and group_block_size(granularity, s_k, block_k) == bs
            and _pairs_ok(q, tp, bs, signs is not None, False)
            and dual_ok(q, k, var.get("words", True))
            and (k_rows is None or row_map_ok(k, tp, bs, signs is not None, False, k_rows))):
        return (quantize_triton(q, fmt, granularity, block_q, signs=signs),
                quantize_triton(k, fmt, granularity, block_k, signs=signs, rows=k_rows), None)
    dtype8 = fp8_dtype(fmt)
    nb_q, nb_k = -(-S // bs), -(-s_k // bs)
    data_q, o_q, desc_q = _plain_outputs(q, dtype8, nb_q)
    data_k, o_k, desc_k = _plain_outputs(k, dtype8, nb_k, s_k)
    signs_arg = _signs_arg(signs, small_factor_tensor(tp["M"], q.device))
    v8 = third = None
    if v is not None and _triple_ok(q, v, tp, bs, signs is not None, k_rows, v_key_order):
        v8, third = _v_outputs(v, dtype8, bs, k_rows, fmt, v_key_order)
    _run_pairs(q, data_q, desc_q, signs_arg, signs is not None, nb_q, bs, tp, fmt, o_q, var,
               False, None, second=(k, data_k, desc_k, nb_k, o_k), rows=k_rows, third=third)
    return (QuantizedTensor(data=data_q, descale=desc_q, block_size=bs, fmt=fmt),
            QuantizedTensor(data=data_k, descale=desc_k, block_size=bs, fmt=fmt), v8)


def _triple_ok(q, v, tp, bs, rotate, rows, key_order) -> bool:
    """V (transposed, not rotated) can join Q's and K's `_pairs_kernel` launch (TRIPLE):
    quantize_triton would run V's tile on that kernel, in the same pass for its key order and
    rows, with the same P; V's first config has Q's BLOCK_S and launch options; the same
    dtype, device, head dim, column stride and wordness (dual_ok). V's variant
    (default_variant(d, False)) is Q's `var` wherever Q's tile takes the pairs kernel: both
    come from the same environment, and a forced layout applies to both (M == 1, P >= 8)."""
    tp_v = _tile_params(v.shape[-1], False)
    if (tp_v["P"] != tp["P"] or v.numel() == 0 or (key_order != "natural" and bs % 16)
            or not _pairs_ok(v, tp_v, bs, False, True) or not dual_ok(q, v, True)
            or (rows is not None and not row_map_ok(v, tp_v, bs, False, True, rows))):
        return False
    a = _pairs_first_config(tp["P"], bs, rotate, False)
    b = _pairs_first_config(tp["P"], bs, False, True)
    return (a.kwargs["BLOCK_S"] == b.kwargs["BLOCK_S"] and a.num_warps == b.num_warps
            and a.maxnreg == b.maxnreg)


def _v_outputs(v: torch.Tensor, dtype8, bs: int, rows: PaddedRows | None, fmt: str,
               key_order: str):
    """V^T's outputs as quantize_triton(v, transpose=True) makes them: (the QuantizedTensor,
    _run_pairs' `third`)."""
    S = v.shape[2] if rows is None else rows.rows
    nb = -(-S // bs)
    data, o_strides, descale, _ = _transposed_outputs(v, dtype8, nb, S)
    v8 = QuantizedTensor(data=data, descale=descale, block_size=bs, fmt=fmt, transposed=True,
                         key_order=key_order)
    return v8, (v, data, descale, nb, o_strides, key_order == "mma")


def _transposed_outputs(x: torch.Tensor, dtype8, nb: int, rows: int):
    """(data, its strides as the kernels index them (b, h, s, d), descale (B, H, nb) float32,
    the whole buffer) for x's `rows` rows stored transposed: data a (B, H, D, rows) view of a
    (B, H, D, S_pad) buffer, S_pad = rows rounded up to S_ALIGN, zeros past `rows`."""
    B, H, _, D = x.shape
    s_pad = -(-rows // S_ALIGN) * S_ALIGN
    full = torch.empty(B, H, D, s_pad, dtype=dtype8, device=x.device)
    if s_pad > rows:
        full[..., rows:].zero_()
    descale = torch.empty(B, H, nb, dtype=torch.float32, device=x.device)
    return (full[..., :rows], (full.stride(0), full.stride(1), 1, full.stride(2)), descale,
            full)


def _in_order(qt: QuantizedTensor, key_order: str) -> QuantizedTensor:
    """qt (natural order) in `key_order`."""
    if key_order == "natural":
        return qt
    res = None if qt.residual is None else to_mma(qt.residual)
    return dataclasses.replace(qt, data=to_mma(qt.data), residual=res, key_order=key_order)


def _quant_kernel_layout(tp: dict, rotate: bool) -> int:
    """`_quant_kernel`'s layout where the pairs kernel does not run: 1 for rotations of head
    dims 2**k from 8 to 128, and (session 29) of those with a 12 / 20 factor whose padded row
    is at most 128 wide with groups of at most 8 (80, 96, 24, 40, 48; the groups are the P_LO
    slices), else 0."""
    if not rotate:
        return 0
    if tp["M"] == 1:
        return 1 if 8 <= tp["P"] <= 128 else 0
    return 1 if tp["P"] <= 8 and tp["M_PAD"] * tp["P"] <= 128 else 0


def _search_in_kernel(layout: int, tp: dict, x: torch.Tensor) -> bool:
    """Where `_quant_kernel` runs the scale search: LAYOUT 1 (rotated rows, one per thread) at
    head dims 2**k from 32 to 128, checked on the H200 (Triton 3.6, 2026-11-30), and since
    session 30 at those with a 12 / 20 factor that rotate in LAYOUT 1 (80, 96, 24, 40, 48;
    offline at 96: 176 B of spills). Elsewhere (no rotation, head dim 256 or 16: LAYOUT 0 then,
    or narrow rows) it failed there (a compile error at 256; the GPU tests without rotation
    and at 16 failed too, not yet looked into), so the launcher uses the torch reference on x's
    device (same results, slower). The interpreter, which runs both layouts bit-identical to
    the reference, keeps the kernel for the tests."""
    if os.environ.get("TRITON_INTERPRET") == "1" or not x.is_cuda:
        return True
    if layout != 1:
        return False
    return tp["M"] > 1 or 32 <= tp["P"] <= 128


# the config the autotuner chose for each of its keys (see _run)
_CHOSEN: dict = {}


def _run(args, scale, row_amax, signs_arg, hm, B, H, S, D, nb, bs, x_strides, o_strides, config,
         **meta):
    """One launch of `_quant_kernel`. config: None (the autotuner's choice) or a forced
    dict(BLOCK_S, num_warps[, maxnreg]). The autotuner picks a config once per key (its
    constexprs and the arguments' dtypes, not the sizes); after that first call the chosen
    config is launched straight through kernel_launch, as `_pairs_kernel`'s is: the autotuner's
    and the JIT binder's Python took about 0.1 ms of host time a launch (session 33), and
    this kernel quantises Q and K at head dims 80 / 96 / 256, two-term Q and the scale search."""
    x, data, res, descale, search_tab = args
    tensors = (x, data, res, descale, scale if scale is not None else descale,
               row_amax if row_amax is not None else descale, signs_arg, hm, search_tab)
    call_args = (*tensors, H, S, nb, bs, *x_strides, *o_strides)
    if config is not None:                  # a forced config: the jitted function, no autotuning
        meta.update(config)
        kernel_launch.launch_call(_quant_kernel.fn, (B * H * cdiv(S, config["BLOCK_S"]),),
                                  *call_args, HEAD_DIM=D, **meta)
        return
    key = (tuple(meta.get(k) for k in _quant_kernel.keys), _env("FP8ATTN_TUNE"),
           tuple(t.dtype for t in tensors), meta.get("map_ptr") is not None, x.device)
    chosen = _CHOSEN.get(key) if kernel_launch.enabled() else None
    if chosen is None:
        _quant_kernel[lambda m: (B * H * cdiv(S, m["BLOCK_S"]),)](*call_args, HEAD_DIM=D, **meta)
        _CHOSEN[key] = _quant_kernel.best_config
        return
    kernel_launch.launch_call(_quant_kernel.fn, (B * H * cdiv(S, chosen.kwargs["BLOCK_S"]),),
                              *call_args, HEAD_DIM=D, **meta, **chosen.all_kwargs())


def _group_amax(row_amax: torch.Tensor, granularity: str, bs: int, nb: int) -> torch.Tensor:
    """(B, H, S) row amaxes -> (B, H, NB) group amaxes, as quant.reference.compute_descale_groups."""
    B, H, S = row_amax.shape
    if granularity == "tensor":
        return row_amax.amax().reshape(1, 1, 1).expand(B, H, 1).contiguous()
    pad = nb * bs - S
    if pad:
        row_amax = torch.nn.functional.pad(row_amax, (0, pad))
    return row_amax.reshape(B, H, nb, bs).amax(dim=-1)
