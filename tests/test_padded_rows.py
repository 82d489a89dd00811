"""Varlen K / V in padded rows (fp8attn.quant.padded_rows): the layout, the copy, and the
quantiser writing straight into it (`_pairs_kernel` ROW_MAP, interpreter on the CPU) with the
bits of quantising the padded copy."""
import pytest
import torch

from fp8attn import Recipe
from fp8attn.quant import quantize_qkv
from fp8attn.quant.padded_rows import copy_rows, pad_rows, padded_rows


def _cu(lens, device="cpu"):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32,
                        device=device)


def _packed(lens, h, d, seed, dtype=torch.bfloat16, device="cpu"):
    """(1, H, total, D) view of packed (total, H, D) rows, as the varlen call hands them over."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(sum(lens), h, d, generator=g) * 3).to(dtype).to(device)
    return x.permute(1, 0, 2).unsqueeze(0)


def test_layout_and_copy():
    k = _packed([50, 300, 45], 2, 64, 0)
    layout = padded_rows(_cu([50, 300, 45]), 395, 128)
    # room for the worst case (395 + 3 * 127 rows, rounded up to 128): a shape from the sizes
    # alone, so the offsets are never read on the host
    assert layout.starts.tolist() == [0, 128, 512] and layout.rows == 896
    kp = pad_rows(k, layout)
    assert kp.shape == (1, 2, 896, 64)
    assert torch.equal(kp[:, :, 128:428], k[:, :, 50:350])
    assert torch.equal(kp[:, :, 512:557], k[:, :, 350:])
    assert not kp[:, :, 50:128].any() and not kp[:, :, 428:512].any() and not kp[:, :, 557:].any()
    # tile t: [first packed row, count]; 128-row tiles, then 64-row ones
    assert layout.tiles(128).tolist() == [[0, 50], [50, 128], [178, 128], [306, 44], [350, 45],
                                          [395, 0], [395, 0]]
    assert layout.tiles(64)[:4].tolist() == [[0, 50], [64, 0], [50, 64], [114, 64]]
    with pytest.raises(ValueError, match="divide"):
        layout.tiles(96)


@pytest.mark.parametrize("built_by", ["kernel", "torch"])
def test_layout_of_bad_offsets_stays_inside_the_buffers(built_by, device, monkeypatch):
    """Offsets not checked yet (the GPU call checks them after its launches) give indices
    inside the buffers: a device-side index error would end the CUDA context."""
    import fp8attn.quant.padded_rows as pr
    monkeypatch.setattr(pr, "_kernel_builds", lambda cu: built_by == "kernel")
    for cu in ([0, 30, 10, 45], [0, 10 ** 6, 45, 45], [-7, 20, 45, 40], [0, 20, 30, 30],
               [0, 2 ** 31 - 1, 45], [0, -2 ** 31, 45]):
        layout = padded_rows(torch.tensor(cu, dtype=torch.int32, device=device), 45, 128)
        dest, tiles = layout.dest(), layout.tiles(128)
        assert dest.min() >= 0 and dest.max() < layout.rows
        assert (tiles[:, 0] >= 0).all() and (tiles[:, 0] <= 45).all()
        assert (tiles[:, 1] >= 0).all() and (tiles[:, 1] <= 128).all()
        pad_rows(torch.ones(1, 2, 45, 8, device=device), layout)


@pytest.mark.parametrize("align", [128, 256, 384])
def test_layout_kernel_matches_the_torch_ops(align, device, monkeypatch):
    """padded_rows' one-launch kernel (CUDA, the interpreter) gives the torch ops' starts and
    tiles: empty sequences, one sequence, more sequences than the kernel's chunk (LAYOUT_BLOCK)."""
    import fp8attn.quant.padded_rows as pr
    g = torch.Generator().manual_seed(align)
    cases = [[50, 0, 300, 45, 0], [0, 0], [5], [2048] * 8,
             torch.randint(0, 300, (1500,), generator=g).tolist()]
    for lens in cases:
        cu = _cu(lens, device)
        monkeypatch.setattr(pr, "_kernel_builds", lambda cu: True)
        got = padded_rows(cu, sum(lens), align, sequences=True)
        monkeypatch.setattr(pr, "_kernel_builds", lambda cu: False)
        want = padded_rows(cu, sum(lens), align)
        assert torch.equal(got.starts, want.starts), lens[:8]
        assert torch.equal(got.tiles(align), want.tiles(align)), lens[:8]
        assert torch.equal(got.tiles(align // 2), want.tiles(align // 2)), lens[:8]
        # each tile's sequence (the Gluon kernel's varlen items), where the tile has rows
        used = want.tiles(align)[:, 1] > 0
        seqs = got.tile_sequences()
        assert seqs.dtype == torch.int32 and seqs.shape == (want.rows // align,)
        assert torch.equal(seqs[used], want.tile_sequences()[used]), lens[:8]


def test_layout_with_empty_and_aligned_sequences():
    cu = _cu([128, 256, 0, 16])                       # aligned, one empty
    layout = padded_rows(cu, 400, 128)
    assert layout.starts.tolist() == [0, 128, 384, 384] and layout.rows == 1024
    k = _packed([128, 256, 0, 16], 1, 8, 1)
    kp = pad_rows(k, layout)
    assert torch.equal(kp[:, :, :400], k) and not kp[:, :, 400:].any()
    assert layout.tiles(128).tolist() == [[0, 128], [128, 128], [256, 128], [384, 16]] + \
        [[400, 0]] * 4
    assert layout.tile_sequences()[:4].tolist() == [0, 1, 1, 3]


@pytest.mark.parametrize("dtype,shape,transpose", [(torch.bfloat16, (10, 3, 8), False),
                                                   (torch.float16, (10, 1, 3), False),
                                                   (torch.bfloat16, (10, 8, 4), True)])
def test_copy_rows_any_row_size_and_layout(dtype, shape, transpose):
    """copy_rows moves rows as 8-byte words where it can (rows of 48 bytes), 2-byte elements
    where not (6 bytes), and copies a non-contiguous source first."""
    src = torch.randn(shape).to(dtype)
    if transpose:
        src = src.transpose(1, 2)
    dst = torch.zeros((16,) + tuple(src.shape[1:]), dtype=dtype)
    index = torch.tensor([0, 2, 3, 5, 6, 7, 9, 11, 12, 15])
    copy_rows(dst, index, src)
    want = torch.zeros_like(dst)
    want[index] = src
    assert torch.equal(dst, want)


def _same(a, b):
    assert a.data.shape == b.data.shape and a.block_size == b.block_size
    assert torch.equal(a.data.view(torch.uint8), b.data.view(torch.uint8))
    assert torch.equal(a.descale, b.descale) and a.key_order == b.key_order


@pytest.mark.parametrize("d,dtype,recipe,in_pass", [
    (64, torch.bfloat16, Recipe(), ("pairs", "pairs")),
    (128, torch.float16, Recipe(), ("pairs", "pairs")),
    (32, torch.float32, Recipe(fmt="e5m2"), ("pairs", "pairs")),     # float32: not as words
    (64, torch.bfloat16, Recipe(hadamard=False), ("pairs", "pairs")),
    # K's 12 x 8 rotation: _quant_kernel's row map (session 37; a copy before)
    (96, torch.bfloat16, Recipe(), ("map", "pairs")),
    # no pairs config: _quant_kernel's row map for both (the copies before session 37)
    (256, torch.bfloat16, Recipe(block_kv=256), ("map", "map")),
    # K in two passes (no one-pass tile for 512-row groups): the row map in both
    (64, torch.bfloat16, Recipe(block_kv=512), ("map", "map")),
])
@pytest.mark.parametrize("v_order", ["natural", "mma"])
def test_quantize_into_padded_rows_same_bits_as_the_copy(d, dtype, recipe, in_pass, v_order,
                                                         device, monkeypatch):
    """K (rotated) and V (transposed) quantised into padded rows give the bits of quantising
    the padded copies, in the kernels' own pass (in_pass: "pairs", `_pairs_kernel`, K in Q's
    launch; "map", `_quant_kernel`'s row map), NaN rows and empty sequences included, and Q
    its own bits; the torch reference agrees. V^T in the "mma" key order (what the Gluon
    kernel reads) too: the keys of each 16-key group permuted inside the same pass, zero keys
    included (after `_quant_kernel`: by the gather, as for any of its outputs)."""
    import fp8attn.quant.triton as qt
    seen = {}
    run_pairs, run = qt._run_pairs, qt._run

    def spy_pairs(*args, **kwargs):
        if kwargs.get("rows") is not None:
            seen["V" if args[11] else "K"] = "pairs"           # args[11]: transpose
            # K into padded rows shares Q's launch (Q as it is, K mapped), and so may V
            assert args[11] or kwargs.get("second") is not None
            if kwargs.get("third") is not None:
                seen["V"] = "pairs"
        return run_pairs(*args, **kwargs)

    def spy(*args, **meta):
        if meta.get("ROW_MAP"):
            seen["V" if meta["TRANSPOSE"] else "K"] = "map"
        return run(*args, **meta)
    monkeypatch.setattr(qt, "_run_pairs", spy_pairs)
    monkeypatch.setattr(qt, "_run", spy)
    lens = [70, 0, 300, 5]
    q = _packed(lens, 4, d, 2, dtype, device)
    k, v = _packed(lens, 2, d, 3, dtype, device), _packed(lens, 2, d, 4, dtype, device)
    k[0, 1, 80, 3] = float("nan")
    layout = padded_rows(_cu(lens, device), sum(lens), recipe.block_kv)
    got = quantize_qkv(q, k, v, recipe, backend="triton", kv_rows=layout, v_key_order=v_order)
    assert (seen.get("K"), seen.get("V")) == in_pass
    assert got[2].key_order == v_order
    want = quantize_qkv(q, pad_rows(k, layout), pad_rows(v, layout), recipe, backend="triton",
                        v_key_order=v_order)
    ref = quantize_qkv(q, k, v, recipe, backend="torch", kv_rows=layout)
    for g, w in zip(got, want):
        _same(g, w)
    assert got[1].data.shape[2] == layout.rows and got[2].data.shape[3] == layout.rows
    # the reference rounds the rotation's sums in another order (test_quant allows a one-ulp
    # move of a value): compared here on the layout and the blocks' descales
    for g, r in zip(got[1:], ref[1:]):
        assert g.data.shape == r.data.shape
        torch.testing.assert_close(g.descale, r.descale, rtol=1e-6, atol=0)


def test_kv_rows_must_match_the_packed_rows(device):
    layout = padded_rows(_cu([10, 20]), 30, 128)
    x = _packed([10, 20], 1, 64, 5, device=device)
    with pytest.raises(ValueError, match="30 packed rows"):
        quantize_qkv(x, x[:, :, :29], x[:, :, :29], Recipe(), backend="triton", kv_rows=layout)


@pytest.mark.parametrize("shared", [True, False])
def test_varlen_query_tiles_from_the_keys_layout(shared, device, monkeypatch):
    """ops.varlen_layouts: one offsets tensor for queries and keys (self-attention) gives one
    layout launch whose tiles and sequences are the query tiles the Gluon kernel reads (the
    tables gluon_dispatch.varlen_tables makes on its own otherwise, the same values); two
    tensors (or another alignment) give none, and the launch makes its own."""
    from fp8attn.attention import gluon_dispatch, ops
    from fp8attn.quant import padded_rows as pr
    launches = []
    real = pr.padded_rows

    def counted(*args, **kwargs):
        launches.append(kwargs.get("sequences", False))
        return real(*args, **kwargs)
    monkeypatch.setattr(pr, "padded_rows", counted)
    monkeypatch.setattr(ops, "padded_rows", counted)
    lens = [300, 0, 129, 1, 640]
    cu = _cu(lens, device)
    cu_k = cu if shared else cu.clone()
    total = sum(lens)
    kv, q_layout = ops.varlen_layouts(cu, cu_k, total, total, 128)
    assert (q_layout is kv) == shared and (q_layout is None) == (not shared)
    got = gluon_dispatch.varlen_tables(cu, cu_k, kv.starts, total, q_layout)
    assert launches == ([True] if shared else [False, True])
    want = gluon_dispatch.varlen_tables(cu, cu_k, kv.starts, total)
    assert torch.equal(got.q_tiles, want.q_tiles)
    assert torch.equal(got.q_tile_seq, want.q_tile_seq)
    # another alignment: K's layout is not the query tiles'
    assert ops.varlen_layouts(cu, cu, total, total, 256)[1] is None
