"""The Gluon fast path (FP8ATTN_GLUON=1): which calls it takes, and on an sm_90 GPU with
Triton 3.6, the tl kernel's results for the calls it takes (the same bits without a causal mask)
and the tl kernel itself for the rest.
"""
import pytest
import torch
import triton

import fp8attn
from fp8attn import Recipe
from fp8attn.attention import gluon_dispatch, triton_fwd
from fp8attn.quant import quantize_qkv

GOOD = dict(capability=(9, 0), triton_version="3.6.0", dtype=torch.float8_e4m3fn, head_dim=128,
            seqlen_q=4096, seqlen_k=4096, k_block=128, v_block=128, causal=None, varlen=False,
            two_terms=False, out_dtype=torch.bfloat16, acc_mode="tile",
            forced_config=False, contiguous=True, vt_ok=True)


def test_reason_accepts_the_covered_call():
    assert gluon_dispatch.reason(**GOOD) is None
    # per-head descales (one block for the whole sequence) are per-tile descales too
    assert gluon_dispatch.reason(**dict(GOOD, k_block=4096, v_block=5000)) is None
    for causal, sq in (("top_left", 8192), ("bottom_right", 4096), ("bottom_right", 100)):
        assert gluon_dispatch.reason(**dict(GOOD, causal=causal, seqlen_q=sq)) is None


@pytest.mark.parametrize("change,words", [
    (dict(capability=(9, 0 + 1)), "sm_90"),
    (dict(capability=(8, 9)), "sm_90"),
    (dict(triton_version="3.9.0"), "Triton"),
    (dict(dtype=torch.float8_e5m2), "e4m3"),
    (dict(head_dim=96), "head dim"),
    (dict(head_dim=256), "head dim"),
    (dict(causal="bottom_right", seqlen_q=4097), "causal"),
    (dict(varlen=True), "varlen"),
    (dict(two_terms=True), "two-term"),
    (dict(out_dtype=torch.float16), "bfloat16"),
    (dict(acc_mode="fp22"), "acc_mode"),
    (dict(forced_config=True), "config"),
    (dict(k_block=64), "k_block"),
    (dict(v_block=1), "v_block"),
    (dict(seqlen_k=1024, k_block=1024, v_block=1024), "seqlen_k"),
    (dict(contiguous=False), "contiguous"),
    (dict(vt_ok=False), "V^T"),
])
def test_reason_names_what_is_not_covered(change, words):
    why = gluon_dispatch.reason(**dict(GOOD, **change))
    assert why is not None and words in why


def test_off_by_default_and_cuda_only(monkeypatch):
    x = torch.zeros(1, 1, 8, 128).to(torch.float8_e4m3fn)
    vt = torch.zeros(1, 1, 128, 16).to(torch.float8_e4m3fn)
    kw = dict(k_block=128, v_block=128, causal=None, varlen=False, q_lo=None,
              out_dtype=torch.bfloat16, acc_mode="tile", config=None)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    assert "off" in gluon_dispatch.why_not(x, x, vt, **kw)
    monkeypatch.setenv("FP8ATTN_GLUON", "1")
    assert "CUDA" in gluon_dispatch.why_not(x, x, vt, **kw)


def _gluon_gpu() -> bool:
    return (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
            and triton.__version__.startswith(gluon_dispatch.TRITON_SERIES))


needs_gluon = pytest.mark.skipif(not _gluon_gpu(), reason="needs sm_90 and Triton 3.6")


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls that went to the Gluon kernel."""
    calls = []
    real = gluon_dispatch.launch

    def counted(*a, **kw):
        calls.append(a[0].shape)
        return real(*a, **kw)
    monkeypatch.setattr(gluon_dispatch, "launch", counted)
    return calls


def _run(q8, k8, v8, causal=None):
    """(out, lse) of attention_fwd_fp8."""
    return triton_fwd.attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=128 ** -0.5, causal=causal,
        return_lse=True)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,recipe,d", [
    (1, 16, 16, 4096, 4096, Recipe(), 128),
    (1, 8, 8, 4096, 4096, Recipe(), 64),
    (2, 3, 3, 1000, 2100, Recipe(), 128),                  # tails on both sides
    (1, 4, 2, 777, 3000, Recipe(), 128),                   # GQA
    (1, 2, 2, 2500, 2500, Recipe(granularity="head"), 128),  # one descale per head
    (1, 2, 2, 2048, 2048, Recipe(q_search=4), 128),        # per-row Q descales
])
def test_gpu_gluon_path_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, recipe, d, spy, monkeypatch):
    g = torch.Generator(device="cuda").manual_seed(sq + sk)
    q = torch.randn(b, hq, sq, d, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, sk, d, generator=g, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    q8, k8, v8 = quantize_qkv(q, k, v, recipe)
    monkeypatch.setenv("FP8ATTN_GLUON", "0")
    ref, ref_lse = _run(q8, k8, v8)
    monkeypatch.setenv("FP8ATTN_GLUON", "1")
    got, got_lse = _run(q8, k8, v8)
    assert len(spy) == 1
    assert not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,h,sq,sk,causal,d", [
    (1, 16, 4096, 4096, "top_left", 128),
    (2, 3, 2100, 2100, "bottom_right", 128),
    (1, 4, 1000, 3000, "bottom_right", 128),   # causal_off 2000: diagonal across two tiles
    (1, 2, 3000, 2200, "top_left", 128),       # more queries than keys
    (1, 8, 4096, 4096, "bottom_right", 64),
])
def test_gpu_gluon_causal_matches_tl_kernel(b, h, sq, sk, causal, d, spy, monkeypatch):
    """Causal: both consumer warpgroups run every tile of their CTA (a tile past a warpgroup's
    diagonal only changes acc's V-descale units), so results may differ from the tl kernel by
    rounding, not more."""
    g = torch.Generator(device="cuda").manual_seed(sq + 7 * sk)
    q = torch.randn(b, h, sq, d, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, h, sk, d, generator=g, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    q8, k8, v8 = quantize_qkv(q, k, v, Recipe())
    monkeypatch.setenv("FP8ATTN_GLUON", "0")
    ref, ref_lse = _run(q8, k8, v8, causal)
    monkeypatch.setenv("FP8ATTN_GLUON", "1")
    got, got_lse = _run(q8, k8, v8, causal)
    assert len(spy) == 1
    assert not got.isnan().any()
    torch.testing.assert_close(got.float(), ref.float(), rtol=1e-2, atol=1e-3)
    # m and l do not see the extra tiles (p = 0, alpha = 1 there): the LSE is exact
    assert torch.equal(got_lse, ref_lse)


@pytest.mark.gpu
@needs_gluon
def test_gpu_gluon_public_api_and_fallbacks(spy, monkeypatch):
    """flash_attn_func (B, S, H, D): the output view's strides reach the Gluon kernel, with the
    results of the tl kernel (bit for bit without the causal mask), and the LSE."""
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(1, 2048, 8, 128, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    monkeypatch.setenv("FP8ATTN_GLUON", "0")
    refs = [fp8attn.flash_attn_func(q, k, v), fp8attn.flash_attn_func(q, k, v, causal=True),
            fp8attn.flash_attn_func(q, k, v, return_lse=True)[0]]
    monkeypatch.setenv("FP8ATTN_GLUON", "1")
    gots = [fp8attn.flash_attn_func(q, k, v), fp8attn.flash_attn_func(q, k, v, causal=True),
            fp8attn.flash_attn_func(q, k, v, return_lse=True)[0]]
    assert len(spy) == 3
    assert torch.equal(gots[0], refs[0]) and torch.equal(gots[2], refs[2])
    torch.testing.assert_close(gots[1].float(), refs[1].float(), rtol=1e-2, atol=1e-3)


def test_bench_markdown_gluon_columns():
    """bench_attention.py --gluon: Gluon rows and their ratios, '-' where the dispatch declined."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import bench_attention
    rows = [dict(hdim=128, seqlen=4096, causal=False, ours_kernel=700, ours_e2e=600, fa3_fp8=830,
                 fa3_bf16=645, ours_kernel_gluon=747, ours_e2e_gluon=630),
            dict(hdim=256, seqlen=4096, causal=False, ours_kernel=700, ours_e2e=600, fa3_fp8=1100,
                 fa3_bf16=645, gluon_skipped="head dim 256")]
    md = bench_attention.markdown({"device": "X", "date": "d", "torch": "t", "triton": "3.6"},
                                  rows, {}, (1,), gluon=True)
    lines = md.splitlines()
    assert "Gluon kernel / FA3 FP8" in lines[4] and "ours kernel Gluon" in lines[4]
    assert lines[6].endswith("| 0.90 | 0.98 |") and lines[7].endswith("| - | - |")
    assert "ours_kernel_gluon" not in bench_attention.impls((1,))
