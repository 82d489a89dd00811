"""Two-term Q (Recipe.q_terms == 2): Q as q8 + q8_lo, two FP8 terms sharing one descale.

q8_lo = cast(y - float(q8)), y = rotated Q * its scale; the kernel's scores are
(q8 @ k8^T + q8_lo @ k8^T) * descales. Checked here: the recipe field, the residual of every
quantiser path bit for bit against the torch reference, the kernel against the emulation of the
same numerics (interpreter on the CPU), and the accuracy gain against the float64 oracle.
"""
import os

import pytest
import torch

import fp8attn
from fp8attn import Recipe
from fp8attn.analysis.inputs import fa3_outliers
from fp8attn.attention import triton_fwd
from fp8attn.attention.reference import attention_oracle, fp8_flash_emulation
from fp8attn.hadamard import hadamard_signs
from fp8attn.quant import quantize, quantize_qkv, quantize_reference
from fp8attn.quant.triton import quantize_triton


def rmse(a, b):
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def kernel_block_n(head_dim: int) -> int:
    d = triton_fwd._tuned_dim(head_dim)
    return triton_fwd._prune(triton_fwd._configs(), {"HEAD_DIM_PAD": d})[0].kwargs["BLOCK_N"]


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("FP8ATTN_BACKEND", "triton")


# ---------------------------------------------------------------------------------------------
# Recipe

def test_recipe_q_terms_field():
    assert Recipe().q_terms == 1
    r = Recipe(q_terms=2)
    assert r.to_dict()["q_terms"] == 2 and Recipe.from_dict(r.to_dict()) == r
    old = {k: v for k, v in Recipe().to_dict().items() if k != "q_terms"}
    assert Recipe.from_dict(old).q_terms == 1           # recipes saved before the field
    for bad in (0, 3, True, 2.0, "2", None):
        with pytest.raises(ValueError, match="q_terms"):
            Recipe(q_terms=bad)


# ---------------------------------------------------------------------------------------------
# Quantiser: the residual, every kernel path against the reference

def _x(shape, seed, dtype=torch.bfloat16, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3).to(dtype).to(device)


def _assert_same_bits(got, ref, nan_rows):
    """FP8 data and residual equal bit for bit outside NaN rows (the interpreter casts NaN to a
    number); NaN in the same places on the GPU."""
    assert got.residual is not None and ref.residual is not None
    assert got.residual.shape == got.data.shape and got.residual.dtype == got.data.dtype
    assert got.residual.stride() == got.data.stride()
    torch.testing.assert_close(got.descale.cpu(), ref.descale.cpu(), rtol=1e-6, atol=0)
    for a, r in ((got.data, ref.data), (got.residual, ref.residual)):
        a, r = a.cpu().float(), r.cpu().float()
        if got.transposed:
            a, r = a.transpose(-1, -2), r.transpose(-1, -2)
        keep = ~nan_rows[..., None]
        assert torch.equal(torch.where(keep, a, 0.0), torch.where(keep, r, 0.0))
        if got.data.is_cuda:
            assert torch.equal(a.isnan(), r.isnan())


# (shape, dtype, fmt, granularity, block, rotate, transpose, variant): the pairs kernel (layout 2,
# default for block / token at power-of-two head dims), layouts 0 and 1, the two-pass head /
# tensor path, head dim 96 (12 * 2**3), transposed, fp16 / fp32 inputs, e5m2
RES_CASES = [
    ((1, 2, 45, 64), torch.bfloat16, "e4m3", "block", 16, True, False, None),
    ((1, 2, 45, 64), torch.bfloat16, "e5m2", "token", 1, True, False, None),
    ((2, 1, 33, 128), torch.float32, "e4m3", "block", 32, True, False,
     dict(layout=2, coalesced=False, store_2d=False)),
    ((1, 2, 45, 96), torch.bfloat16, "e4m3", "block", 16, True, False, None),
    ((1, 2, 45, 64), torch.float16, "e4m3", "head", 16, True, False, None),
    ((1, 2, 45, 64), torch.bfloat16, "e4m3", "tensor", 16, False, False, None),
    ((1, 2, 45, 64), torch.bfloat16, "e4m3", "block", 16, False, True, None),
    ((1, 2, 45, 64), torch.bfloat16, "e4m3", "block", 16, True, False, dict(layout=1)),
    ((1, 2, 45, 64), torch.bfloat16, "e4m3", "block", 16, True, False, dict(layout=0)),
]


@pytest.mark.parametrize("shape,dtype,fmt,granularity,block,rotate,transpose,variant", RES_CASES)
def test_residual_bit_identical_to_reference(shape, dtype, fmt, granularity, block, rotate,
                                             transpose, variant, device):
    x = _x(shape, seed=sum(shape) + block, dtype=dtype, device=device)
    x[0, 0, 3, 1] = float("nan")
    signs = hadamard_signs(shape[-1], 3, device) if rotate else None
    if variant is None:
        got = quantize(x, fmt, granularity, block, signs=signs, transpose=transpose,
                       residual=True, backend="triton")
    else:
        got = quantize_triton(x, fmt, granularity, block, signs=signs, transpose=transpose,
                              residual=True, variant=variant)
    ref = quantize_reference(x, fmt, granularity, block, signs=signs, transpose=transpose,
                             residual=True)
    nan_rows = torch.zeros(shape[:3], dtype=torch.bool)
    nan_rows[0, 0, 3] = True
    _assert_same_bits(got, ref, nan_rows)
    # the residual carries information: most entries are nonzero
    assert (ref.residual.float() != 0).float().mean() > 0.9
    plain = quantize(x, fmt, granularity, block, signs=signs, transpose=transpose,
                     backend="triton")
    assert plain.residual is None
    assert torch.equal(torch.nan_to_num(plain.data.cpu().float()),
                       torch.nan_to_num(got.data.cpu().float()))


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_two_terms_shrink_the_rounding_error(fmt):
    """|y - (q8 + q8_lo)| <= 2^-(mbits+1) |y - q8| + half the smallest subnormal step, in units
    of y = x * scale: the residual is y - q8 rounded once more. dequantize() adds both terms."""
    x = _x((1, 2, 70, 64), 7, dtype=torch.float32)
    signs = hadamard_signs(64, 1)
    two = quantize_reference(x, fmt, "block", 32, signs=signs, residual=True)
    y = fp8attn.hadamard.random_hadamard_reference(x, signs) / two.row_descale()[..., None]
    err1 = (y - two.data.float()).abs()
    err2 = (y - two.data.float() - two.residual.float()).abs()
    mbits, emin = {"e4m3": (3, -6), "e5m2": (2, -14)}[fmt]
    # (y recomputed from x: allow float32 rounding of the division, 2^-20 relative)
    assert (err2 <= 2.0 ** -(mbits + 1) * err1 + 2.0 ** (emin - mbits - 1)
            + 2.0 ** -20 * y.abs()).all()
    assert err2.mean() < 0.1 * err1.mean()
    torch.testing.assert_close(two.dequantize(), (two.data.float() + two.residual.float())
                               * two.row_descale()[..., None], rtol=0, atol=0)


def test_quantize_qkv_gives_q_only_a_residual():
    q, k, v = (_x((1, 2, 20, 32), s) for s in (1, 2, 3))
    qq, kq, vq = quantize_qkv(q, k, v, Recipe(q_terms=2), backend="torch")
    assert qq.residual is not None and kq.residual is None and vq.residual is None
    assert quantize_qkv(q, k, v, Recipe(), backend="torch")[0].residual is None
    with pytest.raises(TypeError, match="residual"):
        quantize(q, residual=1)


# ---------------------------------------------------------------------------------------------
# Attention: emulation accuracy, kernel against emulation

def test_emulation_two_terms_lower_the_error():
    """FA3 outliers, float64 oracle: two-term Q cuts RMSE by the Q share of the error budget
    (benchmarks/error_budget.py: 65% of the energy from Q and K rounding, -17% RMSE at d = 128).
    Measured on this seeded case: 8.44e-3 -> 7.05e-3 (ratio 0.836; 0.78-0.87 over seeds 0-5 and
    two shapes). A residual that were zero, or added with the wrong sign, gives >= 1.0."""
    q, k, v = fa3_outliers(1, 4, 512, 128, seed=5, dtype=torch.float16)
    ref = attention_oracle(q, k, v)
    e1 = rmse(fp8_flash_emulation(q, k, v, recipe=Recipe()), ref)
    e2 = rmse(fp8_flash_emulation(q, k, v, recipe=Recipe(q_terms=2)), ref)
    assert e2 <= 0.9 * e1
    # the public function on the CPU runs this emulation
    out = fp8attn.scaled_dot_product_attention(q, k, v, recipe=Recipe(q_terms=2))
    assert rmse(out, ref) == pytest.approx(e2, rel=1e-3)


# Kernel-to-emulation distance allowed, in units of the one-term/two-term gap. Interpreter: its
# dots are exact in fp32 (measured 2e-6 of the gap at most). GPU: the emulation does not model the
# tensor core's FP8 accumulation (about 13 mantissa bits, FACTS.md's "FP22"); modelling it as a
# 13-bit truncation per 32-deep chunk of q8 @ k8^T moves these outputs by 0.07-0.09 of the gap for
# q_terms 1 and 2 alike; measured on an H200 (2026-11-22 08:20 UTC) 0.11 / 0.17 / 0.20 of the gap
# for the varlen / GQA-causal / head-dim-96 cases. A kernel that dropped q_lo sits at ~1.0.
AGREE_GAP = 0.05 if os.environ.get("TRITON_INTERPRET") == "1" else 0.35


def _agrees(out, emu2, emu1):
    """Kernel vs emulation of the same numerics, measured against how far the one-term result
    is: a kernel that dropped q_lo would sit at distance ~1 on this scale."""
    gap = rmse(emu1, emu2)
    assert gap > 0
    assert rmse(out, emu2) <= AGREE_GAP * gap, (rmse(out, emu2), gap)


@pytest.mark.parametrize("b,hq,hkv,sq,sk,d,causal,scale", [
    (1, 4, 2, 70, 90, 64, True, None),           # GQA, bottom-right causal, tails
    (1, 2, 2, 45, 45, 96, False, -0.2),          # head dim 96 (padded), negative scale
])
def test_kernel_matches_emulation(b, hq, hkv, sq, sk, d, causal, scale, device, triton_backend):
    g = torch.Generator().manual_seed(sq + d)
    q = torch.randn(b, hq, sq, d, generator=g).to(device)
    k, v = (torch.randn(b, hkv, sk, d, generator=g).to(device) for _ in range(2))
    r2 = Recipe(q_terms=2, block_q=64, block_kv=64)
    c = "bottom_right" if causal else None
    if causal:
        out = fp8attn.flash_attn_func(*(x.transpose(1, 2) for x in (q, k, v)), causal=True,
                                      recipe=r2).transpose(1, 2)
    else:
        out = fp8attn.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True,
                                                   recipe=r2)
    emu = [fp8_flash_emulation(q, k, v, causal=c, softmax_scale=scale, recipe=r,
                               block_n=kernel_block_n(d)) for r in (r2, r2.replace(q_terms=1))]
    _agrees(out, emu[0], emu[1])


def test_varlen_kernel_matches_emulation(device, triton_backend):
    """Sequences that start on scale-block boundaries (block 16), so the packed quantisation's
    groups are each sequence's own, as in the per-sequence emulation."""
    d, hq, hkv = 64, 2, 1
    lq, lk = (32, 48), (48, 64)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(sum(lq), hq, d, generator=g).to(device)
    k, v = (torch.randn(sum(lk), hkv, d, generator=g).to(device) for _ in range(2))
    cu_q = torch.tensor([0, lq[0], sum(lq)], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, lk[0], sum(lk)], dtype=torch.int32, device=device)
    r2 = Recipe(q_terms=2, block_q=16, block_kv=16)
    out = fp8attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), causal=True,
                                         recipe=r2)
    emus = []
    for r in (r2, r2.replace(q_terms=1)):
        parts = []
        for i in range(2):
            sl_q = slice(int(cu_q[i]), int(cu_q[i + 1]))
            sl_k = slice(int(cu_k[i]), int(cu_k[i + 1]))
            qs, ks, vs = (x[s].transpose(0, 1)[None] for x, s in ((q, sl_q), (k, sl_k), (v, sl_k)))
            parts.append(fp8_flash_emulation(qs, ks, vs, causal="bottom_right", recipe=r,
                                             block_n=kernel_block_n(d))[0].transpose(0, 1))
        emus.append(torch.cat(parts))
    _agrees(out, emus[0], emus[1])


def test_code_shapes_agree_with_two_terms(device):
    """SPLIT / ONE_LOOP / REVERSE change the code, not the arithmetic, with Q_TERMS == 2 too."""
    g = torch.Generator().manual_seed(12)
    q = torch.randn(1, 2, 70, 128, generator=g).to(device)
    k, v = (torch.randn(1, 1, 100, 128, generator=g).to(device) for _ in range(2))
    q8, k8, v8 = quantize_qkv(q, k, v, Recipe(q_terms=2, block_q=64, block_kv=64),
                              backend="torch")
    stages = 1 if os.environ.get("TRITON_INTERPRET") == "1" else 2

    def run(q_lo, **var):
        return triton_fwd.attention_fwd_fp8(
            q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
            q_block=q8.block_size, k_block=64, v_block=64, softmax_scale=0.09, causal="top_left",
            out_dtype=torch.float32, q_lo=q_lo,
            config=dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=stages, **var))
    base = run(q8.residual, SPLIT=1)
    assert (base - run(None, SPLIT=1)).abs().max().item() > 1e-3      # q_lo is used
    for var in (dict(SPLIT=1, ONE_LOOP=True), dict(SPLIT=2, REVERSE=False)):
        assert (run(q8.residual, **var) - base).abs().max().item() < 1e-5, var
    with pytest.raises(ValueError, match="q_lo"):
        run(q8.residual[..., :64], SPLIT=1)


def test_fp8_inputs_take_no_recipe():
    q = torch.zeros(1, 4, 1, 32, dtype=torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="recipe"):
        fp8attn.flash_attn_func(q, q, q, recipe=Recipe(q_terms=2))


# ---------------------------------------------------------------------------------------------
# GPU

def _outliers(*shape, gen):
    x = torch.randn(*shape, generator=gen, device="cuda")
    big = torch.rand(*shape, generator=gen, device="cuda") < 1e-3
    return x + 10.0 * torch.randn(*shape, generator=gen, device="cuda") * big


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_fa3_accuracy_two_terms(causal):
    """FA3's accuracy setting (B 2, H 16, S 2048, D 128; the inputs of test_attention_gpu's
    test_fa3_accuracy_setting): the two-term kernel within 10% of its emulation and at most 0.9x
    the one-term kernel's RMSE (CPU emulation on another draw of the distribution: 8.33e-3 ->
    6.86e-3, ratio 0.82)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (_outliers(2, 16, 2048, 128, gen=g) for _ in range(3))
    c = "top_left" if causal else None
    ref = attention_oracle(q, k, v, causal=c)
    r2 = Recipe(q_terms=2)
    e1 = rmse(fp8attn.scaled_dot_product_attention(q, k, v, is_causal=causal), ref)
    e2 = rmse(fp8attn.scaled_dot_product_attention(q, k, v, is_causal=causal, recipe=r2), ref)
    emu = fp8_flash_emulation(q, k, v, causal=c, recipe=r2, block_n=kernel_block_n(128))
    e_emu = rmse(emu, ref)
    assert abs(e2 - e_emu) <= 0.1 * e_emu
    assert e2 <= 0.9 * e1


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128, 256, 96])
def test_gpu_kernel_matches_emulation_two_terms(d):
    g = torch.Generator(device="cuda").manual_seed(d)
    q = _outliers(2, 8, 1000, d, gen=g).bfloat16()
    k, v = (_outliers(2, 2, 1500, d, gen=g).bfloat16() for _ in range(2))
    r2 = Recipe(q_terms=2)
    for causal in (False, True):
        out = fp8attn.flash_attn_func(*(x.transpose(1, 2) for x in (q, k, v)), causal=causal,
                                      recipe=r2).transpose(1, 2)
        c = "bottom_right" if causal else None
        emu = [fp8_flash_emulation(q, k, v, causal=c, recipe=r, block_n=kernel_block_n(d))
               for r in (r2, Recipe())]
        ref = attention_oracle(q, k, v, causal=c)
        # bf16 output: its rounding (~2^-9 relative) is part of the kernel's distance
        assert rmse(out, emu[0]) <= 0.25 * rmse(emu[1], emu[0])
        assert rmse(out, ref) <= 1.1 * rmse(emu[0], ref) + 1e-4


def assert_two_terms_close(got, ref, what):
    """For rotations whose float32 sums the kernel orders differently from the reference (the 12
    / 20-factor head dims since session 30: a shared sum, `quant.triton._small_factor_in_thread`):
    the first term within one FP8 ulp and such moves rare (as tests/test_quant.py's
    assert_same_quantization), and the two terms' sum within an eighth of the first term's ulp
    of the reference's sum (the second term's own rounding; a missing or stale second term
    misses it by up to half an ulp; plus the subnormal spacing 2^-9 the second terms of small
    values round to)."""
    a, r = got.data.float(), ref.data.float()
    assert torch.equal(a.isnan(), r.isnan()), what
    a, r = torch.nan_to_num(a), torch.nan_to_num(r)
    ulp = torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(2.0 ** -6))) - 3)
    assert ((a - r).abs() <= ulp).all(), what
    assert (a != r).float().mean() <= 1e-3, what
    two = a + torch.nan_to_num(got.residual.float())
    two_ref = r + torch.nan_to_num(ref.residual.float())
    assert ((two - two_ref).abs() <= ulp / 8 + 2.0 ** -9).all(), what


@pytest.mark.gpu
def test_gpu_residual_bit_identical_large():
    """Both terms bit for bit at the power-of-two head dims (the kernels add in the reference's
    stage order); at 96 within assert_two_terms_close's bounds (another order of the sums)."""
    for d in (64, 128, 256, 96):
        x = _x((2, 4, 1000, d), d).cuda()
        x[0, 1, 7, 2] = float("nan")
        signs = hadamard_signs(d, 0, "cuda")
        for granularity in ("block", "token", "head", "tensor"):
            got = quantize(x, "e4m3", granularity, 128, signs=signs, residual=True)
            ref = quantize_reference(x, "e4m3", granularity, 128, signs=signs, residual=True)
            assert torch.equal(got.descale, ref.descale) or torch.allclose(
                got.descale, ref.descale, rtol=1e-6, atol=0)
            if d == 96:
                assert_two_terms_close(got, ref, (d, granularity))
                continue
            for a, r in ((got.data, ref.data), (got.residual, ref.residual)):
                a, r = a.float(), r.float()
                assert torch.equal(a.isnan(), r.isnan())
                assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(r)), (d, granularity)
