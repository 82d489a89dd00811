"""FP8 quantisation: fused Triton kernel (interpreter on the CPU) against the torch reference for every
granularity and format, rotation, transposed V, strided inputs, odd lengths, zeros / NaN / Inf."""
import pytest
import torch

from fp8attn import Recipe, quantize
from fp8attn.formats import finite_amax
from fp8attn.hadamard import hadamard_signs, random_hadamard_reference
from fp8attn.quant import QuantizedTensor, quantize_qkv, quantize_reference
from fp8attn.quant.key_order import padded_view
from fp8attn.quant.triton import S_ALIGN, quantize_triton

GRANS = ("block", "token", "head", "tensor")
MBITS_EMIN = {"e4m3": (3, -6), "e5m2": (2, -14)}


def _x(shape, seed, dtype=torch.bfloat16, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3).to(dtype).to(device)


def assert_same_quantization(got: QuantizedTensor, ref: QuantizedTensor, *, ignore_rows=None):
    """Descales to 1e-6 relative; FP8 values within one FP8 ulp (the kernel's float32 rotation sums
    in another order, which can move a value across a rounding boundary), and such moves rare.
    ignore_rows: (B, H, S) bool of rows not compared (NaN rows: the interpreter casts NaN to a number)."""
    assert got.fmt == ref.fmt and got.block_size == ref.block_size
    assert got.transposed == ref.transposed and got.data.shape == ref.data.shape
    assert got.data.dtype == ref.data.dtype and got.descale.dtype == torch.float32
    assert got.descale.shape == ref.descale.shape
    torch.testing.assert_close(got.descale.cpu(), ref.descale.cpu(), rtol=1e-6, atol=0)
    a = got.data.cpu().float()
    r = ref.data.cpu().float()
    if got.transposed:
        a, r = a.transpose(-1, -2), r.transpose(-1, -2)
    if ignore_rows is not None:
        keep = ~ignore_rows.cpu()[..., None]
        a, r = torch.where(keep, a, 0.0), torch.where(keep, r, 0.0)
    mbits, emin = MBITS_EMIN[ref.fmt]
    ulp = torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(2.0 ** emin))) - mbits)
    assert ((a - r).abs() <= ulp).all()
    assert (a != r).float().mean() <= 1e-3
    assert torch.equal(a.isnan(), r.isnan())


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("granularity", GRANS)
@pytest.mark.parametrize("rotate,transpose", [(True, False), (False, True)])
def test_triton_matches_reference(granularity, fmt, rotate, transpose, device):
    B, H, S, D = 2, 3, 113, 64
    seed = GRANS.index(granularity) * 4 + 2 * (fmt == "e5m2") + rotate
    x = _x((B, H, S, D), seed=seed, device=device)
    signs = hadamard_signs(D, 11, device) if rotate else None
    got = quantize(x, fmt, granularity, 32, signs=signs, transpose=transpose, backend="triton")
    ref = quantize_reference(x, fmt, granularity, 32, signs=signs, transpose=transpose)
    assert_same_quantization(got, ref)
    nb = {"block": 4, "token": S, "head": 1, "tensor": 1}[granularity]
    assert got.descale.shape == (B, H, nb)


@pytest.mark.parametrize("D,S,block,dtype", [(96, 1, 16, torch.float16), (80, 40, 24, torch.float32),
                                             (72, 33, 64, torch.bfloat16), (128, 17, 1, torch.float32)])
def test_odd_sizes_dtypes_and_blocks(D, S, block, dtype, device):
    """S = 1 and odd S; a block that is no power of two (two-pass path); a block longer than S; head
    dims with a 12/20 factor (rotated) and one the Hadamard does not support (72, not rotated)."""
    x = _x((1, 2, S, D), seed=D + S, dtype=dtype, device=device)
    signs = hadamard_signs(D, 1, device) if D != 72 else None
    for transpose in (False, True):
        got = quantize(x, "e4m3", "block", block, signs=signs, transpose=transpose, backend="triton")
        ref = quantize_reference(x, "e4m3", "block", block, signs=signs, transpose=transpose)
        assert_same_quantization(got, ref)


def test_strided_bshd_input_is_read_in_place(device):
    B, S, H, D = 2, 50, 3, 64
    x_bshd = _x((B, S, H, D), seed=5, device=device)
    x = x_bshd.transpose(1, 2)                         # (B, H, S, D) view, not contiguous
    assert not x.is_contiguous()
    signs = hadamard_signs(D, 2, device)
    got = quantize(x, "e4m3", "block", 16, signs=signs, backend="triton")
    ref = quantize_reference(x.contiguous(), "e4m3", "block", 16, signs=signs)
    assert_same_quantization(got, ref)
    assert got.data.is_contiguous()


def test_transposed_layout_is_padded_and_aligned(device):
    B, H, S, D = 1, 2, 37, 32
    got = quantize(_x((B, H, S, D), 6, device=device), "e4m3", "block", 16, transpose=True,
                   backend="triton")
    pad = -(-S // S_ALIGN) * S_ALIGN
    assert got.data.shape == (B, H, D, S) and got.data.stride(-1) == 1
    assert got.data.stride(-2) == pad
    full = torch.as_strided(got.data, (B, H, D, pad), got.data.stride())
    assert (full[..., S:].float() == 0).all()
    assert got.seqlen == S and got.dequantize().shape == (B, H, S, D)


@pytest.mark.parametrize("granularity", GRANS)
def test_dequantized_error_is_fp8_rounding(granularity, device):
    """Round trip: |x - dequant(quant(x))| <= half an e4m3 ulp (2^-4 relative) + the scale floor."""
    x = _x((1, 2, 70, 64), 7, dtype=torch.float32, device=device)
    got = quantize(x, "e4m3", granularity, 32, backend="triton")
    back = got.dequantize().cpu()
    desc = got.row_descale().cpu()[..., None]
    err = (back - x.cpu()).abs()
    assert (err <= 2.0 ** -4 * x.cpu().abs() + 2.0 ** -10 * desc).all()


@pytest.mark.parametrize("rotate", [False, True])
def test_zero_block_gives_zeros_and_unit_descale(rotate, device):
    x = _x((1, 2, 64, 32), 8, device=device)
    x[:, :, 16:32] = 0
    x[1:, 1] = 0
    signs = hadamard_signs(32, 0, device) if rotate else None
    got = quantize(x, "e4m3", "block", 16, signs=signs, backend="triton")
    assert (got.data[:, :, 16:32].float() == 0).all()
    assert torch.isfinite(got.descale).all()
    assert (got.descale[:, :, 1] == 1).all()
    assert_same_quantization(got, quantize_reference(x, "e4m3", "block", 16, signs=signs))
    z = quantize(torch.zeros(1, 1, 5, 16, device=device), "e5m2", "tensor", backend="triton")
    assert (z.data.float() == 0).all() and (z.descale == 1).all()


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("granularity", ["block", "tensor"])
def test_nan_row_does_not_poison_its_block(rotate, granularity, device):
    x = _x((1, 1, 32, 32), 9, dtype=torch.float32, device=device)
    x[0, 0, 5, 3] = float("nan")
    signs = hadamard_signs(32, 0, device) if rotate else None
    got = quantize(x, "e4m3", granularity, 16, signs=signs, backend="triton")
    ref = quantize_reference(x, "e4m3", granularity, 16, signs=signs)
    clean = x.clone()
    clean[0, 0, 5] = 0
    xr = random_hadamard_reference(clean, signs) if rotate else clean
    expected_amax = finite_amax(xr[0, 0, :16]) if granularity == "block" else finite_amax(xr)
    assert torch.isfinite(got.descale).all()
    torch.testing.assert_close(got.descale[0, 0, 0].cpu(), (expected_amax / 448.0).cpu(),
                               rtol=1e-6, atol=0)
    nan_rows = torch.zeros(1, 1, 32, dtype=torch.bool)
    nan_rows[0, 0, 5] = True
    assert_same_quantization(got, ref, ignore_rows=nan_rows)
    if x.is_cuda:                                       # the interpreter casts NaN to a number
        assert got.data[0, 0, 5].float().isnan().any()


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_inf_becomes_nan(fmt, device):
    """+-Inf is quantised as NaN (not saturated to a plausible 448); its block's scale and the
    other rows are those of the finite values."""
    x = _x((1, 1, 20, 16), 10, dtype=torch.float32, device=device)
    x[0, 0, 2, 4] = float("inf")
    x[0, 0, 3, 5] = -float("inf")
    ref = quantize_reference(x, fmt, "block", 8)
    assert ref.data[0, 0, 2, 4].float().isnan() and ref.data[0, 0, 3, 5].float().isnan()
    finite = x.clone()
    finite[0, 0, 2, 4] = finite[0, 0, 3, 5] = 0.0
    torch.testing.assert_close(ref.descale, quantize_reference(finite, fmt, "block", 8).descale,
                               rtol=0, atol=0)
    got = quantize(x, fmt, "block", 8, backend="triton")
    assert torch.isfinite(got.descale).all()
    inf_rows = torch.zeros(1, 1, 20, dtype=torch.bool)
    inf_rows[0, 0, 2:4] = True
    assert_same_quantization(got, ref, ignore_rows=inf_rows)
    if x.is_cuda:                                       # the interpreter casts NaN to a number
        assert got.data[0, 0, 2, 4].float().isnan() and got.data[0, 0, 3, 5].float().isnan()


def test_quantize_qkv_follows_the_recipe(device):
    B, H, S, D = 1, 2, 45, 64
    q, k, v = (_x((B, H, S, D), s, device=device) for s in (20, 21, 22))
    recipe = Recipe(block_q=16, block_kv=32, seed=4, q_search=1)   # Q in blocks, as K and V
    qq, kq, vq = quantize_qkv(q, k, v, recipe, backend="triton")
    signs = hadamard_signs(D, 4, device)
    assert_same_quantization(qq, quantize_reference(q, "e4m3", "block", 16, signs=signs))
    assert_same_quantization(kq, quantize_reference(k, "e4m3", "block", 32, signs=signs))
    assert_same_quantization(vq, quantize_reference(v, "e4m3", "block", 32, transpose=True))
    # same rotation on Q and K: scores survive up to FP8 rounding
    s_ref = q.double() @ k.double().transpose(-1, -2)
    s_q = qq.dequantize().double() @ kq.dequantize().double().transpose(-1, -2)
    assert (s_q - s_ref).norm() / s_ref.norm() < 0.05
    ref = quantize_qkv(q, k, v, Recipe(fmt="e5m2", granularity="token", hadamard=False),
                       backend="torch")
    assert ref[0].block_size == 1 and not ref[0].transposed and ref[2].transposed


@pytest.mark.parametrize("hq,hkv,sq,sk,dtype,recipe,v_order,launches", [
    # GQA, tails, (B, S, H, D) views; V^T in the Gluon kernel's key order
    (4, 2, 100, 200, torch.bfloat16, Recipe(), "mma", "qkv"),
    (2, 2, 64, 300, torch.float16, Recipe(), "natural", "qkv"),
    (2, 1, 130, 70, torch.bfloat16, Recipe(hadamard=False), "mma", "qkv"),
    # not as words; V's first config (128 rows) is not Q's (64 rows, 2 warps)
    (2, 2, 50, 90, torch.float32, Recipe(granularity="token"), "natural", "qk"),
    (2, 2, 50, 90, torch.bfloat16, Recipe(granularity="head"), "natural", ""),  # 50 vs 90
    (2, 2, 64, 64, torch.bfloat16, Recipe(q_terms=2), "natural", ""),           # Q's 2nd term
])
def test_quantize_qkv_one_launch_same_bits(hq, hkv, sq, sk, dtype, recipe, v_order, launches,
                                           device, monkeypatch):
    """Q and K share one launch of the pairs kernel where they can (quantize_pair_triton), and
    V joins it where its tiles take the same config (launches "qkv"), with the bits of
    separate launches, NaN rows included."""
    import fp8attn.quant.triton as qt
    seen = []
    run = qt._run_pairs

    def spy(*args, **kwargs):
        if kwargs.get("second") is not None:
            seen.append("qkv" if kwargs.get("third") is not None else "qk")
        return run(*args, **kwargs)
    monkeypatch.setattr(qt, "_run_pairs", spy)
    q = _x((1, sq, hq, 64), 30, dtype, device).transpose(1, 2)
    k = _x((1, sk, hkv, 64), 31, dtype, device).transpose(1, 2)
    v = _x((1, hkv, sk, 64), 32, dtype, device)
    q[0, 1, 3, 5] = float("nan")
    v[0, 0, 7, 2] = float("nan")
    q8, k8, v8 = quantize_qkv(q, k, v, recipe, backend="triton", v_key_order=v_order)
    assert seen == ([launches] if launches else [])
    signs = hadamard_signs(64, recipe.seed, device) if recipe.hadamard else None
    for got, x, block, tr in ((q8, q, recipe.block_q, False), (k8, k, recipe.block_kv, False),
                              (v8, v, recipe.block_kv, True)):
        ref = quantize(x, recipe.fmt, recipe.granularity, block, signs=None if tr else signs,
                       backend="triton", residual=got is q8 and recipe.q_terms == 2,
                       transpose=tr, key_order=v_order if tr else "natural")
        assert got.block_size == ref.block_size and got.key_order == ref.key_order
        assert got.data.shape == ref.data.shape and got.data.stride() == ref.data.stride()
        assert torch.equal(padded_view(got.data).view(torch.uint8) if tr else
                           got.data.view(torch.uint8),
                           padded_view(ref.data).view(torch.uint8) if tr else
                           ref.data.view(torch.uint8))
        assert torch.equal(got.descale, ref.descale)


def test_bad_arguments_raise_before_launch():
    x = torch.zeros(1, 2, 8, 16)
    with pytest.raises(ValueError, match=r"\(2, 8, 16\)"):
        quantize(torch.zeros(2, 8, 16), backend="triton")
    with pytest.raises(TypeError, match="int32"):
        quantize(x.int(), backend="triton")
    with pytest.raises(ValueError, match="FP8 format"):
        quantize(x, "e3m4", backend="triton")
    with pytest.raises(ValueError, match="granularity"):
        quantize(x, granularity="channel", backend="triton")
    with pytest.raises(ValueError, match="block"):
        quantize(x, block=0, backend="triton")
    with pytest.raises(ValueError, match="signs"):
        quantize(x, signs=torch.ones(8), backend="triton")
    with pytest.raises(ValueError, match="unsupported Hadamard size 72"):
        quantize(torch.zeros(1, 1, 4, 72), signs=torch.ones(72), backend="triton")
    with pytest.raises(ValueError, match="backend"):
        quantize(x, backend="cuda")
    with pytest.raises(TypeError, match="Recipe"):
        quantize_qkv(x, x, x, {"fmt": "e4m3"})


@pytest.mark.gpu
def test_gpu_bf16_large_against_reference():
    for D in (64, 128, 256, 96):
        x = _x((2, 4, 1000, D), D).cuda()
        signs = hadamard_signs(D, 0, "cuda")
        for granularity in GRANS:
            for transpose, sg in ((False, signs), (True, None)):
                got = quantize(x, "e4m3", granularity, 128, signs=sg, transpose=transpose)
                ref = quantize_reference(x, "e4m3", granularity, 128, signs=sg, transpose=transpose)
                assert_same_quantization(got, ref)


_VARIANTS = [dict(layout=0), dict(layout=1, store_2d=True), dict(layout=1, store_2d=False),
             dict(layout=2), dict(layout=2, const_signs=False, store_2d=False),
             dict(layout=2, words=False), dict(layout=2, coalesced=True)]


@pytest.mark.parametrize("variant", _VARIANTS, ids=["layout0", "layout1-store2d", "layout1-direct",
                                                     "pairs", "pairs-signs-loaded-direct",
                                                     "pairs-element-loads", "pairs-coalesced"])
@pytest.mark.parametrize("granularity,rotate,transpose", [("block", True, False),
                                                          ("token", True, False),
                                                          ("head", True, False),
                                                          ("block", False, True)])
def test_kernel_variants_agree(variant, granularity, rotate, transpose, device):
    """Every kernel variant (tile layout, store path) gives the reference's quantisation, a NaN row
    included: the layouts differ only in which thread holds which element."""
    B, H, S, D = 1, 2, 45, 32
    x = _x((B, H, S, D), seed=31, device=device)
    x[0, 1, 7, 3] = float("nan")
    signs = hadamard_signs(D, 4, device) if rotate else None
    got = quantize_triton(x, "e4m3", granularity, 16, signs=signs, transpose=transpose,
                          variant=variant)
    ref = quantize_reference(x, "e4m3", granularity, 16, signs=signs, transpose=transpose)
    nan_rows = torch.zeros(B, H, S, dtype=torch.bool)
    nan_rows[0, 1, 7] = True
    assert_same_quantization(got, ref, ignore_rows=nan_rows)


@pytest.mark.parametrize("D", [96, 80, 48])
@pytest.mark.parametrize("granularity", ["block", "token", "head"])
def test_small_factor_rotation_in_thread_matches_reference(D, granularity, device):
    """Head dims with a 12 / 20 factor rotate in LAYOUT 1 since session 29, the M x M factor
    mixed inside each thread (`_small_factor_in_thread`); LAYOUT 0 (the factor as a tl.dot)
    stays a variant. Both give the reference's quantisation, a NaN row included, and LAYOUT 1
    is the default there."""
    from fp8attn.quant.triton import _quant_kernel_layout, _tile_params
    assert _quant_kernel_layout(_tile_params(D, True), True) == 1
    B, H, S = 1, 2, 45
    x = _x((B, H, S, D), seed=D + 3, device=device)
    x[0, 1, 7, 3] = float("nan")
    signs = hadamard_signs(D, 5, device)
    ref = quantize_reference(x, "e4m3", granularity, 16, signs=signs)
    nan_rows = torch.zeros(B, H, S, dtype=torch.bool)
    nan_rows[0, 1, 7] = True
    for variant in (None, dict(layout=1, store_2d=False), dict(layout=0)):
        got = quantize_triton(x, "e4m3", granularity, 16, signs=signs, variant=variant)
        assert_same_quantization(got, ref, ignore_rows=nan_rows)


def test_small_factor_layout_limits():
    """LAYOUT 1 takes a 12 / 20 factor where the padded row fits 128 values with groups of at
    most 8 (the P_LO slices); wider ones (160, 192) keep LAYOUT 0, and no rotation takes the
    plain layouts."""
    from fp8attn.quant.triton import _qr_mask, _quant_kernel_layout, _tile_params
    assert [_quant_kernel_layout(_tile_params(d, True), True) for d in (24, 40, 80, 96)] == [1] * 4
    assert [_quant_kernel_layout(_tile_params(d, True), True) for d in (160, 192)] == [0, 0]
    assert _quant_kernel_layout(_tile_params(96, False), False) == 0
    assert _qr_mask(12) == sum(1 << r for r in (1, 3, 4, 5, 9))      # residues mod 11
    assert _qr_mask(1) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_gpu_hardware_cast_is_bit_identical(fmt):
    """On the GPU the FP8 cast (round to nearest even, satfinite) replaces the software clamp and
    rounding: every FP8 value equals the software path's and the reference's, with NaN, Inf,
    an all-zero block and a loud row (values near the saturation bound and subnormals) present."""
    x = _x((2, 3, 300, 128), seed=41).cuda()
    x[0, 0, 5, 7] = float("nan")
    x[1, 2, 200, 0] = float("inf")
    x[1, 1, 128:256] = 0
    x[0, 2, 17] *= 1e4
    signs = hadamard_signs(128, 0, "cuda")
    for granularity in ("block", "token"):
        for sg, transpose in ((signs, False), (None, True)):
            ref = quantize_reference(x, fmt, granularity, 128, signs=sg, transpose=transpose)
            for var in (dict(layout=0), dict(layout=1), dict(layout=2),
                        dict(layout=2, coalesced=True)):
                outs = [quantize_triton(x, fmt, granularity, 128, signs=sg, transpose=transpose,
                                        variant=dict(var, soft_cast=soft))
                        for soft in (False, True)]
                # descales: the same code for both casts; torch on the GPU divides by fp8_max as a
                # product with its reciprocal (1 ulp off the kernel's division at times)
                assert torch.equal(outs[0].descale, outs[1].descale)
                torch.testing.assert_close(outs[0].descale, ref.descale, rtol=1e-6, atol=0)
                for got in outs:
                    a, r = got.data.float(), ref.data.float()
                    assert torch.equal(a.isnan(), r.isnan())
                    assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(r))


@pytest.mark.parametrize("rotate", [True, False])
def test_nonfinite_and_overflow_tiles(rotate, device):
    """The pairs kernel's rare path (a tile holding NaN or Inf after the rotation): rows with a NaN
    or Inf input are NaN rows when rotated, only those elements when not; a finite row whose
    rotation overflows float32 keeps its finite values in the amax and saturates the rest."""
    x = _x((1, 2, 40, 32), 51, device=device)
    x[0, 0, 3, 5] = float("nan")
    x[0, 0, 9, 1] = float("inf")
    x[0, 1, 20, :2] = 3.0e38                # bf16: the rotation's first sums overflow float32
    x[0, 1, 33, 6:8] = -3.0e38              # (Inf in half the row's outputs, no NaN)
    signs = hadamard_signs(32, 5, device) if rotate else None
    got = quantize_triton(x, "e4m3", "block", 16, signs=signs, variant=dict(layout=2))
    ref = quantize_reference(x, "e4m3", "block", 16, signs=signs)
    bad = torch.zeros(1, 2, 40, dtype=torch.bool)
    bad[0, 0, 3] = bad[0, 0, 9] = True     # the interpreter casts NaN to a number
    assert torch.isfinite(got.descale).all()
    assert_same_quantization(got, ref, ignore_rows=bad)
    a, r = got.data.cpu().float(), ref.data.cpu().float()
    # the rest of a non-rotated row keeps its values (only its Inf / NaN element is NaN)
    assert torch.equal(a[~r.isnan()], r[~r.isnan()])
    if x.is_cuda:
        assert torch.equal(a.isnan(), r.isnan())


def test_signs_changed_in_place_are_seen(device):
    """The kernel bakes the signs in as constants, cached per signs tensor and version."""
    x = _x((1, 1, 24, 16), 52, device=device)
    signs = hadamard_signs(16, 6, device)
    first = quantize_triton(x, "e4m3", "block", 8, signs=signs, variant=dict(layout=2))
    assert_same_quantization(first, quantize_reference(x, "e4m3", "block", 8, signs=signs))
    signs[:5] *= -1
    second = quantize_triton(x, "e4m3", "block", 8, signs=signs, variant=dict(layout=2))
    assert_same_quantization(second, quantize_reference(x, "e4m3", "block", 8, signs=signs))
    assert not torch.equal(first.data.float(), second.data.float())


def test_quant_kernel_repeated_call_launches_the_chosen_config(device, monkeypatch):
    """After the autotuner's first call of a kind, `_quant_kernel` launches the config it chose
    through kernel_launch (no autotuner, no JIT binding): the same bits."""
    import fp8attn.quant.triton as qt
    from fp8attn import kernel_launch
    launched = []
    real = kernel_launch.launch_call

    def spy(kernel, grid, *args, **kwargs):
        if kernel is qt._quant_kernel.fn:
            launched.append(kwargs["BLOCK_S"])
        return real(kernel, grid, *args, **kwargs)
    monkeypatch.setattr(kernel_launch, "launch_call", spy)
    monkeypatch.setattr(qt, "_CHOSEN", {})
    x = _x((1, 2, 70, 96), 40, torch.bfloat16, device)          # 12 x 8 rotation: _quant_kernel
    signs = hadamard_signs(96, 0, device)
    first = quantize(x, "e4m3", "block", 128, signs=signs, backend="triton")
    assert launched == [] and len(qt._CHOSEN) == 1
    second = quantize(x, "e4m3", "block", 128, signs=signs, backend="triton")
    assert launched == [next(iter(qt._CHOSEN.values())).kwargs["BLOCK_S"]]
    assert torch.equal(first.data.view(torch.uint8), second.data.view(torch.uint8))
    assert torch.equal(first.descale, second.descale)
