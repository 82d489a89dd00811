"""Pre-quantised FP8 inputs laid out for the kernels (fp8attn.quant.fp8_inputs): each kernel
(CUDA, or the interpreter on the CPU) gives the bits of the torch copies it replaces."""
import pytest
import torch

from fp8attn.quant.padded_rows import padded_rows


def _cu(lens, device="cpu"):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32,
                        device=device)


def _bits(t):
    return t.view(torch.uint8) if t.element_size() == 1 else t


@pytest.mark.parametrize("fmt,d,order", [(torch.float8_e4m3fn, 128, "mma"),
                                         (torch.float8_e4m3fn, 64, "natural"),
                                         (torch.float8_e5m2, 96, "mma"),
                                         (torch.float8_e4m3fn, 256, "natural")])
def test_v_head_dim_major_kernel_matches_torch(fmt, d, order, device, monkeypatch):
    """V^T in either key order: lengths that are and are not multiples of 16 (the "mma"
    buffer's padded positions hold zeros) and of the kernel's block, a strided V, and one
    key."""
    import fp8attn.quant.fp8_inputs as fi
    g = torch.Generator().manual_seed(d)
    for b, s, h in ((2, 70, 3), (1, 128, 2), (1, 1, 1)):
        vv = (torch.randn(b, s, 2 * h, d, generator=g) * 3).to(fmt).to(device)
        v = vv[:, :, 1::2]                                           # strided heads
        monkeypatch.setattr(fi, "_kernel_builds", lambda x: True)
        got = fi.v_head_dim_major(v, order)
        monkeypatch.setattr(fi, "_kernel_builds", lambda x: False)
        want = fi.v_head_dim_major(v, order)
        assert got.shape == want.shape == (b, h, d, s) and got.dtype == fmt
        assert torch.equal(_bits(got), _bits(want)), (b, s, h)
        if order == "mma":
            from fp8attn.quant.key_order import padded_view, to_natural
            assert torch.equal(_bits(padded_view(got)), _bits(padded_view(want)))
            assert torch.equal(_bits(to_natural(got)), _bits(v.permute(0, 2, 3, 1)))
        else:
            assert got.is_contiguous()


@pytest.mark.parametrize("kernel", [True, False])
def test_by_head_keeps_the_bits(kernel, device, monkeypatch):
    """The kernel (CUDA, the interpreter) and torch's word copy: strided heads and rows that
    are not a power of two or a whole number of words."""
    import fp8attn.quant.fp8_inputs as fi
    monkeypatch.setattr(fi, "_kernel_builds", lambda x: kernel)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 83, 6, 64, generator=g) * 3).to(torch.float8_e4m3fn).to(device)
    for t in (x, x[:, :, ::2], x[..., :24], x[:, 1:]):   # strided heads; 24-byte rows; offset
        got = fi.by_head(t)
        assert got.is_contiguous() and got.dtype == t.dtype
        assert torch.equal(_bits(got), _bits(t.transpose(1, 2).contiguous()))
    odd = (torch.randn(1, 5, 2, 12, generator=g)).to(torch.float8_e5m2).to(device)
    assert torch.equal(_bits(fi.by_head(odd)), _bits(odd.transpose(1, 2).contiguous()))


@pytest.mark.parametrize("fmt,d", [(torch.float8_e4m3fn, 64), (torch.float8_e5m2, 96),
                                   (torch.float8_e4m3fn, 256)])
@pytest.mark.parametrize("order", ["natural", "mma"])
def test_pack_fp8_kv_kernel_matches_the_copies(fmt, d, order, device, monkeypatch):
    """pack_fp8_kv's one launch (CUDA, the interpreter) gives the bits of pad_rows, torch's
    transpose and the block_sequences gather: empty sequences (first, middle, last), a
    sequence of exactly one block, head dims that are not powers of two, strided inputs and
    descales; V^T in either key order (the "mma" one: to_mma of the copy); and bad offsets
    stay inside the buffers."""
    import fp8attn.quant.fp8_inputs as fi
    g = torch.Generator().manual_seed(d)
    for lens in ([0, 50, 0, 128, 300, 1, 0], [5], [0, 0, 7]):
        h = 3
        kv = (torch.randn(sum(lens), 2 * h, d, generator=g) * 3).to(fmt).to(device)
        k, v = kv[:, :h], kv[:, h:]                                   # strided rows
        ds = (torch.rand(h, len(lens), 2, generator=g) + 0.5).to(device)
        kd, vd = ds[..., 0].t(), ds[..., 1].t()                      # (nseq, H), strided
        layout = padded_rows(_cu(lens, device), sum(lens), 128)
        monkeypatch.setattr(fi, "_kernel_builds", lambda cu: True)
        got = fi.pack_fp8_kv(k, v, kd, vd, layout, key_order=order)
        monkeypatch.setattr(fi, "_kernel_builds", lambda cu: False)
        want = fi.pack_fp8_kv(k, v, kd, vd, layout, key_order=order)
        for a, b in zip(got, want):
            assert a.shape == b.shape and a.dtype == b.dtype, lens
            assert torch.equal(a.view(torch.uint8) if a.element_size() == 1 else a,
                               b.view(torch.uint8) if b.element_size() == 1 else b), lens
    monkeypatch.setattr(fi, "_kernel_builds", lambda cu: True)
    kv = torch.ones(45, 2, d, device=device).to(fmt)
    one = torch.ones(3, 1, device=device)
    for cu in ([0, 30, 10, 45], [0, 10 ** 6, 45, 45], [-7, 20, 45, 40], [0, -2 ** 31, 40, 45]):
        layout = padded_rows(torch.tensor(cu, dtype=torch.int32, device=device), 45, 128)
        kp, vt, kd, vd = fi.pack_fp8_kv(kv[:, :1], kv[:, 1:], one, one, layout, key_order=order)
        assert (kd == 1).all() and (vd == 1).all()


def test_row_descales_kernel_matches_the_gather(device, monkeypatch):
    """row_descales' launch (CUDA, the interpreter) gives the bits of row_sequences' gather:
    empty sequences (first, middle, last), one sequence, strided descales, a row block past
    the packed rows; bad offsets take a clamped sequence's descale, inside the buffers."""
    import fp8attn.quant.fp8_inputs as fi
    g = torch.Generator().manual_seed(11)
    for lens in ([0, 50, 0, 128, 300, 1, 0], [5], [0, 0, 7], [256, 256]):
        ds = (torch.rand(3, len(lens), generator=g) + 0.5).to(device).t()   # (nseq, H)
        cu = _cu(lens, device)
        monkeypatch.setattr(fi, "_kernel_builds", lambda cu: True)
        got = fi.row_descales(ds, cu, sum(lens))
        monkeypatch.setattr(fi, "_kernel_builds", lambda cu: False)
        want = fi.row_descales(ds, cu, sum(lens))
        assert got.shape == want.shape == (1, 3, sum(lens)) and torch.equal(got, want), lens
    monkeypatch.setattr(fi, "_kernel_builds", lambda cu: True)
    ds = torch.arange(1.0, 4.0, device=device).reshape(3, 1)
    for cu in ([0, 30, 10, 45], [0, 10 ** 6, 45, 45], [-7, 20, 45, 40]):
        got = fi.row_descales(ds, torch.tensor(cu, dtype=torch.int32, device=device), 45)
        assert got.shape == (1, 1, 45) and ((got >= 1) & (got <= 3)).all()
