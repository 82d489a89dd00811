"""Pre-quantised FP8 inputs laid out for the attention kernels, one pass over memory each.

Users with their own FP8 Q / K / V (an FP8 KV cache, an FP8 pipeline) hand them over as FA3
takes them: (B, S, H, D) or packed (total, H, D). The kernels want V head-dim major ((B, H, D,
S), contiguous along the keys, in the key order the kernel reads), varlen K / V in padded
rows (quant/padded_rows.py) and, for the Gluon kernel, Q and K as (B, H, S, D). torch's copies
of one-byte elements across those layouts run far below the memory's speed: on an H200 the
varlen call (8 x 2048 tokens, 16 heads, hdim 128) took 0.26 ms longer with them than with one
kernel, which takes 0.036 ms (session 33).
On CUDA (and in Triton's interpreter) the kernels here; elsewhere, and as the references the
tests hold them to, torch's copies."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import kernel_launch
from ..host_ints import cdiv, next_power_of_2
from .key_order import mma_key_tl, padded_len, to_mma
from .padded_rows import PaddedRows, _kernel_builds, pad_rows, row_sequences


def by_head(x: torch.Tensor) -> torch.Tensor:
    """(B, S, H, D) -> contiguous (B, H, S, D). FP8 on CUDA (and in Triton's interpreter): one
    launch of `_by_head_kernel`, which a call plan replays as it does every launch (a torch
    clone is replayed through torch's Python dispatch, about as much host time again);
    elsewhere torch's copy, moving 8-byte words where the rows allow (torch copies the
    one-byte elements of FP8 one at a time)."""
    b, s, h, d = x.shape
    if _kernel_builds(x) and x.element_size() == 1 and x.stride(-1) == 1 and x.numel():
        y = torch.empty(b, h, s, d, dtype=x.dtype, device=x.device)
        block = 64
        kernel_launch.launch_call(
            _by_head_kernel, (cdiv(s, block), b * h), x.view(torch.uint8), y.view(torch.uint8),
            s, h, d, x.stride(0), x.stride(1), x.stride(2), BLOCK_S=block,
            D_P=next_power_of_2(d), num_warps=4)
        return y
    xt = x.transpose(1, 2)
    if (x.element_size() == 1 and d % 8 == 0 and x.stride(-1) == 1
            and all(st % 8 == 0 for st in x.stride()[:-1]) and x.storage_offset() % 8 == 0):
        return xt.view(torch.uint8).view(torch.int64).contiguous().view(x.dtype)
    return xt.contiguous()


@triton.jit
def _by_head_kernel(x_ptr, y_ptr, S, H, D, sx_b, sx_s, sx_h, BLOCK_S: tl.constexpr,
                    D_P: tl.constexpr):
    """Program (position block, batch * head): rows p of y[b, h] (D bytes each, contiguous)
    from x[b, p, h]."""
    pid_s = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    p = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = tl.arange(0, D_P)
    m = (p[:, None] < S) & (c[None, :] < D)
    row = tl.load(x_ptr + b.to(tl.int64) * sx_b + p[:, None].to(tl.int64) * sx_s + h * sx_h
                  + c[None, :], mask=m)
    tl.store(y_ptr + (bh.to(tl.int64) * S + p[:, None]) * D + c[None, :], row, mask=m)


def v_head_dim_major(v: torch.Tensor, key_order: str) -> torch.Tensor:
    """FP8 V (B, S, H, D) -> V^T (B, H, D, S) in key_order: "natural" contiguous; "mma" the
    (B, H, D, S) view of a (B, H, D, S_pad) buffer, zeros at the positions of keys >= S
    (quant/key_order.py)."""
    b, s, h, d = v.shape
    mma = key_order == "mma"
    s_out = padded_len(s) if mma else s
    if _kernel_builds(v) and v.numel():
        vt = torch.empty(b, h, d, s_out, dtype=v.dtype, device=v.device)
        v_in = v if v.stride(-1) == 1 else v.contiguous()
        block = 64
        kernel_launch.launch_call(
            _v_head_dim_major_kernel, (cdiv(s_out, block), b * h), v_in.view(torch.uint8),
            vt.view(torch.uint8), s, s_out, h, d, v_in.stride(0), v_in.stride(1),
            v_in.stride(2), MMA=mma, BLOCK_S=block, D_P=next_power_of_2(d), num_warps=4)
        return vt[..., :s]
    vt = v.permute(0, 2, 3, 1)
    return to_mma(vt) if mma else vt.contiguous()


@triton.jit
def _v_head_dim_major_kernel(v_ptr, vt_ptr, S, S_OUT, H, D, sv_b, sv_s, sv_h,
                             MMA: tl.constexpr, BLOCK_S: tl.constexpr, D_P: tl.constexpr):
    """Program (position block, batch * head): positions p of V^T's rows take key p (natural)
    or mma_key(p), as bytes; zeros for keys >= S. Loads are whole key rows (D bytes each)."""
    pid_s = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    p = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    if MMA:
        key = mma_key_tl(p)
    else:
        key = p
    c = tl.arange(0, D_P)
    col = c[None, :] < D
    x = tl.load(v_ptr + b.to(tl.int64) * sv_b + key[:, None].to(tl.int64) * sv_s + h * sv_h
                + c[None, :], mask=(key[:, None] < S) & col, other=0)
    tl.store(vt_ptr + (bh.to(tl.int64) * D + c[None, :]) * S_OUT + p[:, None], x,
             mask=(p[:, None] < S_OUT) & col)


def pack_fp8_kv(k: torch.Tensor, v: torch.Tensor, k_descale: torch.Tensor,
                v_descale: torch.Tensor, layout: PaddedRows, key_order: str = "natural"):
    """Pre-quantised varlen K / V (total, H, D), FP8, with descales (nseq, H) per sequence and
    head, in the attention kernel's form: K (1, H, rows, D), V head-dim major (1, H, D, rows),
    both in the padded layout, and one descale per `layout.align`-row block (1, H, rows //
    align), its sequence's (block_sequences; blocks between sequences take a clamped one, and
    their rows are zeros). key_order: V^T's ("mma": the Gluon kernel's, quant/key_order.py;
    each 16-key group of a block permuted, in the same pass).

    On CUDA (and in Triton's interpreter) one launch of `_pack_fp8_kv_kernel`; elsewhere, and
    as the reference the tests hold the kernel to, pad_rows and torch's transpose: on an H200
    those copies put the FP8 varlen call at 352 TFLOP/s where the bf16 call, quantiser
    included, ran at 488 (session 33)."""
    h, d, align, n_blocks = k.shape[1], k.shape[2], layout.align, layout.rows // layout.align
    if _kernel_builds(layout.cu) and k.device == layout.cu.device:
        kp = torch.empty(1, h, layout.rows, d, dtype=k.dtype, device=k.device)
        vt = torch.empty(1, h, d, layout.rows, dtype=v.dtype, device=v.device)
        kd, vd = (torch.empty(1, h, n_blocks, dtype=torch.float32, device=k.device)
                  for _ in range(2))
        k_in, v_in = (x if x.stride(-1) == 1 else x.contiguous() for x in (k, v))
        k_ds, v_ds = k_descale.float(), v_descale.float()
        kernel_launch.launch_call(
            _pack_fp8_kv_kernel, (n_blocks, h), k_in.view(torch.uint8), v_in.view(torch.uint8),
            kp.view(torch.uint8), vt.view(torch.uint8), layout.tiles(align), layout.cu, k_ds,
            v_ds, kd, vd,
            layout.cu.numel() - 1, layout.total, layout.rows, n_blocks, d,
            k_in.stride(0), k_in.stride(1), v_in.stride(0), v_in.stride(1),
            k_ds.stride(0), k_ds.stride(1), v_ds.stride(0), v_ds.stride(1),
            ALIGN=align, D_P=next_power_of_2(d), SEARCH=_search_steps(layout.cu.numel()),
            V_MMA=key_order == "mma", num_warps=4)
        return kp, vt, kd, vd
    kp = pad_rows(k.permute(1, 0, 2).unsqueeze(0), layout)
    vt = pad_rows(v.permute(1, 0, 2).unsqueeze(0), layout).transpose(-1, -2).contiguous()
    if key_order == "mma":
        vt = to_mma(vt)
    seq = layout.block_sequences(align)
    kd, vd = (x.float().t()[:, seq].unsqueeze(0).contiguous() for x in (k_descale, v_descale))
    return kp, vt, kd, vd


def row_descales(descale: torch.Tensor, cu: torch.Tensor, total: int) -> torch.Tensor:
    """Descales per sequence and head (nseq, H) -> one per packed row, (1, H, total) float32:
    each row takes its sequence's (clamped to a sequence: the offsets may not have been
    checked yet). On CUDA (and in Triton's interpreter) one launch of `_row_descales_kernel`,
    so a call plan can replay it (the torch ops, the reference here, are a gather a plan
    cannot replay)."""
    h = descale.shape[1]
    if _kernel_builds(cu) and descale.device == cu.device and total > 0:
        out = torch.empty(1, h, total, dtype=torch.float32, device=cu.device)
        ds = descale.float()
        block = 256
        kernel_launch.launch_call(_row_descales_kernel, (cdiv(total, block), h), cu, ds, out,
                                  cu.numel() - 1, total, ds.stride(0), ds.stride(1),
                                  BLOCK=block, SEARCH=_search_steps(cu.numel()), num_warps=4)
        return out
    seq = row_sequences(cu, total)
    return descale.float().t()[:, seq].unsqueeze(0).contiguous()


@triton.jit
def _row_descales_kernel(cu_ptr, ds_ptr, out_ptr, nseq, total, s_seq, s_head,
                         BLOCK: tl.constexpr, SEARCH: tl.constexpr):
    """Program (row block, head): out[0, head, row] = ds[sequence of row, head]."""
    h = tl.program_id(1)
    row = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    seq = _sequence_of(cu_ptr, row, nseq, SEARCH)
    ok = row < total
    tl.store(out_ptr + h.to(tl.int64) * total + row,
             tl.load(ds_ptr + seq * s_seq + h * s_head, mask=ok, other=0.0), mask=ok)


@triton.jit
def _sequence_of(cu_ptr, row, nseq, SEARCH: tl.constexpr):
    """The sequence holding packed row(s) `row` (a scalar or a block): the number of cu[1:]
    entries <= row, as row_sequences' searchsorted (right=True), by binary search, clamped to
    a sequence."""
    lo = row * 0
    hi = row * 0 + nseq
    for _ in range(SEARCH):
        live = lo < hi
        mid = (lo + hi) // 2
        at_or_before = tl.load(cu_ptr + 1 + mid, mask=live, other=0) <= row
        lo = tl.where(live & at_or_before, mid + 1, lo)
        hi = tl.where(live & ~at_or_before, mid, hi)
    return tl.minimum(lo, nseq - 1)


def _search_steps(n: int) -> int:
    """Binary-search steps that narrow n offsets to one (at least one)."""
    return max(int(n - 1).bit_length(), 1)


@triton.jit
def _pack_fp8_kv_kernel(k_ptr, v_ptr, kp_ptr, vt_ptr, tiles_ptr, cu_ptr, kds_ptr, vds_ptr,
                        kd_ptr, vd_ptr, nseq, total, rows, n_blocks, D, sk_row, sk_head, sv_row,
                        sv_head, skd_seq, skd_head, svd_seq, svd_head, ALIGN: tl.constexpr,
                        D_P: tl.constexpr, SEARCH: tl.constexpr, V_MMA: tl.constexpr = False):
    """Program (block, head): the block's packed K / V rows (the tile map's [first, count])
    as bytes into K's padded rows and V's transposed columns, zeros after them, and the
    block's descales: those of the last sequence starting at or before it in the padded
    layout, found as the sequence of the block's first packed row (binary search of cu).
    V_MMA: V^T's column r of the block takes the block's row mma_key(r) (the "mma" key order:
    ALIGN is a multiple of 16, so the groups of the block are the layout's)."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    first = tl.load(tiles_ptr + 2 * t)
    count = tl.load(tiles_ptr + 2 * t + 1)
    r = tl.arange(0, ALIGN)
    c = tl.arange(0, D_P)
    src = (first + r[:, None]).to(tl.int64)
    # bad offsets (checked after the launches) can give a count past the packed rows
    take = (r[:, None] < count) & (src < total) & (c[None, :] < D)
    kb = tl.load(k_ptr + src * sk_row + h * sk_head + c[None, :], mask=take, other=0)
    if V_MMA:
        rv = mma_key_tl(r[:, None])
        src = (first + rv).to(tl.int64)
        take = (rv < count) & (src < total) & (c[None, :] < D)
    vb = tl.load(v_ptr + src * sv_row + h * sv_head + c[None, :], mask=take, other=0)
    row = (t * ALIGN + r[:, None]).to(tl.int64)
    col = c[None, :] < D
    tl.store(kp_ptr + (h * rows + row) * D + c[None, :], kb, mask=col)
    tl.store(vt_ptr + (h * D + c[None, :]).to(tl.int64) * rows + row, vb, mask=col)
    seq = _sequence_of(cu_ptr, first, nseq, SEARCH)
    tl.store(kd_ptr + h * n_blocks + t, tl.load(kds_ptr + seq * skd_seq + h * skd_head))
    tl.store(vd_ptr + h * n_blocks + t, tl.load(vds_ptr + seq * svd_seq + h * svd_head))
