"""Packed variable-length rows laid out again with every sequence starting at a multiple of
`align` rows: how varlen K and V reach the attention kernel (fp8attn.attention.ops), so each KV
tile and each scale block belongs to one sequence.

The quantiser writes K and V straight into that layout where its kernel can
(`quant/triton_pairs.py`, ROW_MAP: each output tile reads its sequence's rows, zeros after);
`pad_rows` is the same layout as a copy, for the reference and for the kernels without it.
The layout is built on the device without reading the offsets on the host, so a CUDA graph
can capture it and an eager call need not wait for the GPU: the padded length is the worst
case for the sizes, not the one the offsets give."""
from __future__ import annotations

import dataclasses
import os

import torch
import triton
import triton.language as tl

from .. import kernel_launch


@dataclasses.dataclass(frozen=True)
class PaddedRows:
    """Sequence i's packed rows cu[i] .. cu[i + 1] - 1 go to rows starts[i] .. of a buffer of
    `rows` rows (zeros between sequences and after the last).

    cu: (nseq + 1,) int32 offsets; starts: (nseq,) int32, multiples of `align` (what the
    attention kernel takes as kv_starts); total: the packed rows; rows: total + nseq *
    (align - 1) rounded up to `align` (room for any offsets). int32 as FA3's cu_seqlens."""

    cu: torch.Tensor
    starts: torch.Tensor
    align: int
    total: int
    rows: int
    _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def dest(self) -> torch.Tensor:
        """(total,) int64: the padded row of every packed row (clamped into the buffer, as
        every index here, so that offsets not yet checked cannot index outside it). Made once
        per layout: K's and V's copies share it."""
        if "dest" not in self._cache:
            packed = torch.arange(self.total, device=self.cu.device, dtype=torch.int32)
            seq = row_sequences(self.cu, self.total)
            self._cache["dest"] = ((packed - self.cu[seq] + self.starts[seq]).to(torch.int64)
                                   .clamp_(0, self.rows - 1))
        return self._cache["dest"]

    def tiles(self, block: int) -> torch.Tensor:
        """(rows // block, 2) int32 for `block` (a divisor of align): output tile t holds the
        packed rows first .. first + count - 1, [first, count], then zero rows (count 0 for
        tiles between sequences or past the last)."""
        if self.align % block or self.rows % block:
            raise ValueError(f"tiles of {block} rows do not divide the alignment {self.align}")
        if ("tiles", block) not in self._cache:      # K's and V's launches share the map
            self._cache["tiles", block] = self._make_tiles(block)
        return self._cache["tiles", block]

    def block_sequences(self, block: int) -> torch.Tensor:
        """(rows // block,) int64: the sequence whose padded span holds each block of `block`
        rows, the last one starting at or before it (empty sequences share their start with
        the next one; right=True skips them); clamped to a sequence."""
        t0 = torch.arange(0, self.rows, block, device=self.cu.device, dtype=torch.int32)
        seq = torch.searchsorted(self.starts, t0, right=True) - 1
        return seq.clamp_(0, max(self.starts.numel() - 1, 0))

    def tile_sequences(self) -> torch.Tensor:
        """(rows // align,) int32: the sequence of each `align`-row tile (block_sequences;
        made by the layout's own launch where padded_rows(..., sequences=True) built it): what
        the Gluon attention kernel's varlen items read for the query tiles."""
        if "seqs" not in self._cache:
            self._cache["seqs"] = self.block_sequences(self.align).to(torch.int32)
        return self._cache["seqs"]

    def _make_tiles(self, block: int) -> torch.Tensor:
        cu, starts = self.cu, self.starts
        t0 = torch.arange(0, self.rows, block, device=cu.device, dtype=torch.int32)
        seq = self.block_sequences(block)
        first = (cu[seq] + (t0 - starts[seq])).clamp_(0, self.total)
        count = (cu[seq + 1] - first).clamp_(0, block)
        return torch.stack([first, count], 1).to(torch.int32)


def row_sequences(cu: torch.Tensor, total: int) -> torch.Tensor:
    """(total,) int64: the sequence holding each packed row of offsets cu (int32), clamped to a
    sequence (offsets not yet checked)."""
    rows = torch.arange(total, device=cu.device, dtype=torch.int32)
    return torch.searchsorted(cu[1:], rows, right=True).clamp_(max=max(cu.numel() - 2, 0))


# sequences (and tiles) per step of `_layout_kernel`: each step's loop runs one iteration per
# tile of its longest sequence over all BLOCK lanes. 8 x 2048 tokens: 1.4 us above an empty
# graph at 128 against 8.2 us at 1024; 64 x 256: 1.0 against 1.9 (H200, session 38,
# results/probe_quant_configs_s38.json)
LAYOUT_BLOCK = 128


def padded_rows(cu: torch.Tensor, total: int, align: int,
                sequences: bool = False) -> PaddedRows:
    """The layout for packed rows split by cu (int32 or int64 offsets, nseq + 1 of them, on the
    data's device; not read on the host: the caller checks them, before or after the
    launches, and every index derived here is clamped into the buffers). On CUDA (and in
    Triton's interpreter) one launch of `_layout_kernel` makes the starts and the tiles for
    `align` (sequences: and each tile's sequence, PaddedRows.tile_sequences); elsewhere torch
    ops (the reference the tests hold the kernel to)."""
    cu = cu.to(torch.int32)
    nseq = cu.numel() - 1
    rows = (total + nseq * (align - 1) + align - 1) // align * align
    if _kernel_builds(cu):
        starts = torch.empty(nseq, dtype=torch.int32, device=cu.device)
        tiles = torch.empty(rows // align, 2, dtype=torch.int32, device=cu.device)
        cache = {("tiles", align): tiles}
        if sequences:
            cache["seqs"] = torch.empty(rows // align, dtype=torch.int32, device=cu.device)
        # the torch ops below (about twenty small launches with _make_tiles) took about a
        # fifth of a varlen call's host time (H200, session 32); one launch instead
        kernel_launch.launch_call(_layout_kernel, (1,), cu, starts, tiles,
                                  cache.get("seqs", tiles), nseq, total, rows // align,
                                  ALIGN=align, BLOCK=LAYOUT_BLOCK, SEQS=sequences)
        return PaddedRows(cu=cu, starts=starts, align=align, total=total, rows=rows,
                          _cache=cache)
    lens = (cu[1:] - cu[:-1]).clamp_(min=0)
    padded = (lens + align - 1) // align * align
    starts = (torch.cumsum(padded, 0) - padded).to(torch.int32)
    return PaddedRows(cu=cu, starts=starts, align=align, total=total, rows=rows)


def _kernel_builds(cu: torch.Tensor) -> bool:
    return cu.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _layout_kernel(cu_ptr, starts_ptr, tiles_ptr, seqs_ptr, nseq, total, n_tiles,
                   ALIGN: tl.constexpr, BLOCK: tl.constexpr, SEQS: tl.constexpr = False):
    """One program: PaddedRows' starts (nseq,) and tile map for ALIGN-row tiles (n_tiles, 2)
    from cu, as padded_rows' torch ops and PaddedRows._make_tiles make them (SEQS: also each
    tile's sequence (n_tiles,), as tile_sequences'). Every tile starts as [total, 0] (no rows;
    sequence 0 where no sequence has it, as block_sequences' clamp gives for tiles before the
    first non-empty sequence); then the sequences in chunks of BLOCK (a running sum carries
    the starts over) write their tiles, one tile of each sequence a step. Lengths below 0
    count as 0 and every store is masked to the buffers: the offsets may not have been
    checked yet."""
    for c in range(0, n_tiles, BLOCK):
        t = c + tl.arange(0, BLOCK)
        tl.store(tiles_ptr + 2 * t, tl.zeros([BLOCK], tl.int32) + total, mask=t < n_tiles)
        tl.store(tiles_ptr + 2 * t + 1, tl.zeros([BLOCK], tl.int32), mask=t < n_tiles)
        if SEQS:
            tl.store(seqs_ptr + t, tl.zeros([BLOCK], tl.int32), mask=t < n_tiles)
    tl.debug_barrier()                  # those stores land before the sequences' ones below
    carry = tl.sum(tl.zeros([BLOCK], tl.int32), 0)
    for c in range(0, nseq, BLOCK):
        i = c + tl.arange(0, BLOCK)
        ok = i < nseq
        lo = tl.load(cu_ptr + i, mask=ok, other=0)
        hi = tl.load(cu_ptr + i + 1, mask=ok, other=0)
        pad = (tl.maximum(hi - lo, 0) + ALIGN - 1) // ALIGN * ALIGN
        start = carry + tl.cumsum(pad, 0) - pad
        tl.store(starts_ptr + i, start, mask=ok)
        n_mine = pad // ALIGN                                   # tiles of each sequence
        t0 = start // ALIGN
        for j in range(0, tl.minimum(tl.max(n_mine, 0), n_tiles)):
            t = t0 + j
            first = tl.minimum(tl.maximum(lo + j * ALIGN, 0), total)
            count = tl.minimum(tl.maximum(hi - first, 0), ALIGN)
            put = ok & (j < n_mine) & (t >= 0) & (t < n_tiles)
            tl.store(tiles_ptr + 2 * t, first, mask=put)
            tl.store(tiles_ptr + 2 * t + 1, count, mask=put)
            if SEQS:
                tl.store(seqs_ptr + t, i, mask=put)
        carry += tl.sum(pad, 0)


def pad_rows(x: torch.Tensor, layout: PaddedRows) -> torch.Tensor:
    """x (1, H, total, D) -> (1, H, layout.rows, D): the rows moved to the padded layout, zeros
    elsewhere (a new tensor, rows contiguous as a (rows, H, D) buffer's view)."""
    if x.shape[0] != 1 or x.shape[2] != layout.total:
        raise ValueError(f"pad_rows takes (1, H, {layout.total}, D) packed rows, got "
                         f"{tuple(x.shape)}")
    rows = x[0].transpose(0, 1)                                            # (total, H, D)
    out = rows.new_zeros((layout.rows,) + tuple(rows.shape[1:]))
    copy_rows(out, layout.dest(), rows)
    return out.transpose(0, 1).unsqueeze(0)


def copy_rows(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    """dst[index[i]] = src[i] for rows of a contiguous dst, moving 8-byte words where a row
    allows: torch's index_copy_ goes element by element, and on 2-byte elements it took 0.1 ms
    for 64 MB of bf16 K (H200, session 31), a quarter of the attention kernel's time."""
    src = src.reshape(src.shape[0], -1)
    flat = dst.view(dst.shape[0], -1)
    row_bytes = flat.shape[1] * flat.element_size()
    if row_bytes % 8 == 0 and src.is_contiguous() and src.data_ptr() % 8 == 0:
        flat, src = flat.view(torch.int64), src.view(torch.int64)
    elif flat.element_size() == 1:
        flat, src = flat.view(torch.uint8), src.view(torch.uint8)    # FP8: bytes
    flat.index_copy_(0, index, src)
