"""The FP8 attention kernel on Hopper hardware at real sizes (skipped without CUDA).

Yardsticks: the float64 oracle (computed on the GPU) and the emulation of the same numerics.
"""
import pytest
import torch

import fp8attn
from fp8attn import Recipe
from fp8attn.attention import triton_fwd
from fp8attn.attention.reference import attention_oracle, fp8_flash_emulation
from fp8attn.quant import quantize_qkv

pytestmark = pytest.mark.gpu


def outliers(*shape, gen):
    """FA3's accuracy distribution: N(0, 1) + N(0, 100) * Bernoulli(0.001), on the GPU."""
    x = torch.randn(*shape, generator=gen, device="cuda")
    big = torch.rand(*shape, generator=gen, device="cuda") < 1e-3
    return x + 10.0 * torch.randn(*shape, generator=gen, device="cuda") * big


def rmse(a, b):
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def block_n(d):
    cfgs = triton_fwd._prune(triton_fwd._configs(), {"HEAD_DIM_PAD": triton_fwd._tuned_dim(d)})
    return cfgs[0].kwargs["BLOCK_N"]


@pytest.mark.parametrize("causal,floor", [(False, 9.1e-3), (True, 9.5e-3)])
def test_fa3_accuracy_setting(causal, floor):
    """FA3's accuracy test (batch 2, heads 16, seqlen 2048, dim 128, default recipe): within 10%
    of the emulation, and under FA3-level floors. On these inputs (seed 0) the emulation gives
    8.94e-3 / 9.31e-3 and FA3 FP8 with per-head scales after the same rotation 8.86e-3 / 9.34e-3
    (H200, 2026-11-22, benchmarks/bench_attention.py), so the floors sit 2% above the numerics;
    FACTS.md's 8.5e-3 came from another draw."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (outliers(2, 16, 2048, 128, gen=g) for _ in range(3))
    out = fp8attn.scaled_dot_product_attention(q, k, v, is_causal=causal)
    c = "top_left" if causal else None
    ref = attention_oracle(q, k, v, causal=c)
    emu = fp8_flash_emulation(q, k, v, causal=c, block_n=block_n(128))
    err, err_emu = rmse(out, ref), rmse(emu, ref)
    assert err <= floor
    assert abs(err - err_emu) <= 0.1 * err_emu


def _long_context_rel_rmse(seqlen_k, acc_mode):
    g = torch.Generator(device="cuda").manual_seed(1)
    q = outliers(1, 8, 128, 128, gen=g)
    k = outliers(1, 8, seqlen_k, 128, gen=g)
    v = outliers(1, 8, seqlen_k, 128, gen=g) + 0.5  # a mean keeps the output away from 0
    q8, k8, v8 = quantize_qkv(q, k, v, Recipe())
    out = triton_fwd.attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale,
                                       v8.descale, q_block=q8.block_size, k_block=128,
                                       v_block=128,
                                       softmax_scale=128 ** -0.5, out_dtype=torch.float32,
                                       acc_mode=acc_mode)
    ref = attention_oracle(q, k, v)
    return rmse(out, ref) / ref.pow(2).mean().sqrt().item()


def test_long_context_two_level_accumulation():
    """Few queries x long keys: relative RMSE at seqlen_k 65536 at most 1.5x that at 4096.

    The whole-loop tensor-core accumulation ("fp22", test-only mode) fails the same check
    (measured 9x on an H200), so the check can tell the two apart."""
    short, long = (_long_context_rel_rmse(s, "tile") for s in (4096, 65536))
    assert long <= 1.5 * short
    short22, long22 = (_long_context_rel_rmse(s, "fp22") for s in (4096, 65536))
    assert long22 > 1.5 * short22


@pytest.mark.parametrize("d", [64, 96, 128, 256])
@pytest.mark.parametrize("causal,sq,sk", [(None, 1000, 1000), ("top_left", 1023, 1500),
                                          ("bottom_right", 777, 1500), ("bottom_right", 1500, 700)])
def test_head_dims_and_masks(d, causal, sq, sk):
    g = torch.Generator(device="cuda").manual_seed(d + sq)
    q = outliers(2, 4, sq, d, gen=g).bfloat16()
    k = outliers(2, 2, sk, d, gen=g).bfloat16()
    v = outliers(2, 2, sk, d, gen=g).bfloat16()
    from fp8attn.attention.ops import fp8_attention_bhsd
    out, lse = fp8_attention_bhsd(q, k, v, causal=causal, softmax_scale=d ** -0.5,
                                  recipe=Recipe(), return_lse=True)
    ref, ref_lse = attention_oracle(q, k, v, causal=causal, return_lse=True)
    emu, emu_lse = fp8_flash_emulation(q, k, v, causal=causal, block_n=block_n(d),
                                       return_lse=True)
    assert out.dtype == torch.bfloat16
    # bf16 output rounding (~2e-3 relative) on top of the FP8 error
    assert rmse(out, ref) <= 2 * rmse(emu, ref) + 2e-3
    fin = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), fin)
    assert (lse - emu_lse)[fin].abs().mean().item() < 1e-3
    lse_err = (lse.double() - ref_lse)[fin].abs().max().item()
    assert lse_err <= 2 * (emu_lse.double() - ref_lse)[fin].abs().max().item() + 1e-3


def test_e5m2_and_fp16():
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (outliers(1, 8, 1111, 128, gen=g).half() for _ in range(3))
    r = Recipe(fmt="e5m2")
    out = fp8attn.scaled_dot_product_attention(q, k, v, is_causal=True, recipe=r)
    ref = attention_oracle(q, k, v, causal="top_left")
    emu = fp8_flash_emulation(q, k, v, causal="top_left", recipe=r, block_n=block_n(128))
    assert out.dtype == torch.float16
    assert rmse(out, ref) <= 2 * rmse(emu, ref) + 1e-3


@pytest.mark.parametrize("align", ["0", "1"])
def test_varlen_matches_per_sequence(monkeypatch, align):
    monkeypatch.setenv("FP8ATTN_VARLEN_ALIGN", align)       # K / V starts padded to the blocks
    g = torch.Generator(device="cuda").manual_seed(4)
    lens = [1, 300, 1029, 77]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    q = outliers(sum(lens), 8, 128, gen=g).bfloat16()
    k = outliers(sum(lens), 2, 128, gen=g).bfloat16()
    v = outliers(sum(lens), 2, 128, gen=g).bfloat16()
    out = fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True)
    for i in range(len(lens)):
        a, b = cu[i].item(), cu[i + 1].item()
        qs, ks, vs = (x[a:b].transpose(0, 1)[None] for x in (q, k, v))
        ref = attention_oracle(qs, ks, vs, causal="bottom_right")
        emu = fp8_flash_emulation(qs, ks, vs, causal="bottom_right", block_n=block_n(128))
        assert rmse(out[a:b].transpose(0, 1)[None], ref) <= 2 * rmse(emu, ref) + 2e-3


def test_varlen_under_cuda_graph_capture():
    """flash_attn_varlen_func captured in a CUDA graph (nothing read on the host there: padded
    K / V starts computed on the device): replays follow new data and new sequence boundaries
    in the same buffers and give the eager call's bits."""
    g = torch.Generator(device="cuda").manual_seed(14)
    total, mx = 1407, 1100
    q = outliers(total, 8, 128, gen=g).bfloat16()
    k, v = (outliers(total, 2, 128, gen=g).bfloat16() for _ in range(2))
    cu = torch.tensor([0, 1, 301, 1330, total], dtype=torch.int32, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, mx, mx, causal=True)   # compile, tune
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, mx, mx, causal=True)
    for seed, bounds in ((15, [0, 700, 700, 1200, total]), (16, [0, 128, 256, 1300, total])):
        g.manual_seed(seed)
        for t in (q, k, v):
            t.copy_(outliers(total, t.shape[1], 128, gen=g).bfloat16())
        cu.copy_(torch.tensor(bounds, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, mx, mx,
                                                               causal=True)), seed


# (offsets, max_seqlen_q, whether the offsets are wrong as cu_seqlens_k too)
@pytest.mark.parametrize("bounds,max_q,keys_bad", [
    ([0, 10 ** 7, 1407], 1100, True),               # far past the rows
    ([0, 1300, 5, 1407], 1300, True),               # decreasing
    ([-10 ** 6, 700, 1407], 1407, True),            # negative
    ([0, 700, 2 ** 31 - 1], 1407, True),            # past the total
    ([0, 700, 1407], 100, False)])                  # only max_seqlen_q too short
@pytest.mark.parametrize("head_dim", [128, 96])        # 96: K from the padded copy
def test_varlen_bad_offsets_raise_after_the_launches(bounds, max_q, keys_bad, head_dim):
    """On the GPU the offsets are checked on the host after the launches (no wait for the GPU
    before them): bad ones still raise the ValueError, and the kernels, which clamp every
    offset into the buffers, touched nothing outside them: the CUDA context works and the next
    call gives the bits of a call before."""
    g = torch.Generator(device="cuda").manual_seed(17)
    total = 1407
    q = outliers(total, 8, head_dim, gen=g).bfloat16()
    k, v = (outliers(total, 2, head_dim, gen=g).bfloat16() for _ in range(2))
    good = torch.tensor([0, 700, total], dtype=torch.int32, device="cuda")
    want = fp8attn.flash_attn_varlen_func(q, k, v, good, good, 707, 707, causal=True)
    bad = torch.tensor(bounds, dtype=torch.int32, device="cuda")
    good_k = good if len(bounds) == 3 else torch.tensor([0, 700, 700, total], dtype=torch.int32,
                                                        device="cuda")
    with pytest.raises(ValueError, match="cu_seqlens_q|max_seqlen_q"):
        fp8attn.flash_attn_varlen_func(q, k, v, bad, good_k, max_q, 1407, causal=True)
    if keys_bad:
        with pytest.raises(ValueError, match="cu_seqlens_k"):
            fp8attn.flash_attn_varlen_func(q, k, v, good_k, bad, 1407, 1407, causal=True)
    torch.cuda.synchronize()
    again = fp8attn.flash_attn_varlen_func(q, k, v, good, good, 707, 707, causal=True)
    assert torch.equal(again, want)


def test_nan_semantics_on_hardware():
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (torch.randn(1, 2, 300, 64, generator=g, device="cuda") for _ in range(3))
    q[0, 1, 5, 3] = float("nan")
    k[0, 0, 200, 0] = float("nan")
    out = fp8attn.scaled_dot_product_attention(q, k, v, is_causal=True)
    rows = out.isnan().any(-1)[0]
    assert rows[1, 5] and rows[1].sum() == 1
    assert not rows[0, :200].any() and rows[0, 200:].all()


def test_torch_compile_inductor():
    g = torch.Generator(device="cuda").manual_seed(6)
    q, k, v = (torch.randn(2, 500, 4, 128, generator=g, device="cuda").bfloat16() for _ in range(3))
    eager = fp8attn.flash_attn_func(q, k, v, causal=True)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, c: fp8attn.flash_attn_func(a, b, c, causal=True) * 2,
                             fullgraph=True)
    assert torch.equal(compiled(q, k, v), eager * 2)


def test_torch_compile_reduce_overhead():
    """mode="reduce-overhead" (Inductor's CUDA graphs, the fix for short host-bound calls):
    replays give the eager bits on new data in new tensors. One eager call first, as the README
    says: it builds the small tables the package keeps on the device (rotation signs); built
    inside the compiled call's first pass they would land in the CUDA-graph pool, which then
    raises ("tensor(s) in the cudagraph pool not tracked as outputs": H200, 2026-11-30, when
    the compiled call was a fresh process's first; building them on a side stream did not
    keep them out of the pool)."""
    torch._dynamo.reset()
    g = torch.Generator(device="cuda").manual_seed(8)
    fp8attn.flash_attn_func(*(torch.randn(2, 512, 4, 128, generator=g, device="cuda").bfloat16()
                              for _ in range(3)))
    compiled = torch.compile(lambda a, b, c: fp8attn.flash_attn_func(a, b, c),
                             mode="reduce-overhead", fullgraph=True)
    g = torch.Generator(device="cuda").manual_seed(8)
    for _ in range(4):          # the first calls record, later ones replay the graph
        q, k, v = (torch.randn(2, 512, 4, 128, generator=g, device="cuda").bfloat16()
                   for _ in range(3))
        assert torch.equal(compiled(q, k, v).clone(), fp8attn.flash_attn_func(q, k, v))


def test_prequantised_like_fa3():
    """FA3-style FP8 inputs with (B, Hkv) descales: same result as quantising the dequantised
    values per head with the kernel's own path (no rotation)."""
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (torch.randn(2, 1000, 8, 128, generator=g, device="cuda") for _ in range(3))
    desc = torch.rand(2, 8, generator=g, device="cuda") + 0.5
    q8, k8, v8 = ((x / desc[:, None, :, None]).to(torch.float8_e4m3fn) for x in (q, k, v))
    out = fp8attn.flash_attn_func(q8, k8, v8, causal=True, q_descale=desc, k_descale=desc,
                                  v_descale=desc)
    deq = [(x.float() * desc[:, None, :, None]).transpose(1, 2) for x in (q8, k8, v8)]
    ref = attention_oracle(*deq, causal="bottom_right")
    assert rmse(out.transpose(1, 2), ref) / ref.pow(2).mean().sqrt().item() < 0.03

