"""fp8attn.scaled_dot_product_attention on the CPU: torch semantics, validation, NaN / Inf behaviour."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import fp8attn
from fp8attn import Recipe
from fp8attn.analysis.metrics import relative_l2
from fp8attn.attention.reference import attention_oracle, fp8_flash_emulation

sdpa = fp8attn.scaled_dot_product_attention


def qkv(b=1, hq=2, hkv=2, sq=50, sk=50, d=64, seed=0, dtype=torch.float16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, hq, sq, d, generator=g).to(dtype),
            torch.randn(b, hkv, sk, d, generator=g).to(dtype),
            torch.randn(b, hkv, sk, d, generator=g).to(dtype))


@pytest.fixture(autouse=True)
def _emulation_backend(monkeypatch):
    monkeypatch.delenv("FP8ATTN_BACKEND", raising=False)


# ---------------------------------------------------------------- semantics

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cpu_path_is_the_emulation(dtype):
    q, k, v = qkv(2, 4, 2, 113, 77, seed=1, dtype=dtype)
    out = sdpa(q, k, v, is_causal=True, enable_gqa=True)
    assert out.dtype == dtype and out.shape == q.shape
    assert torch.equal(out, fp8_flash_emulation(q, k, v, causal="top_left",
                                                softmax_scale=1 / math.sqrt(64)))


@pytest.mark.parametrize("sq,sk", [(113, 77), (77, 113), (1, 113)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_torch_sdpa_semantics(sq, sk, is_causal):
    """Against torch's own SDPA in float64 (upper-left causal, enable_gqa, scale). The FP8 error on
    N(0, 1) inputs at scale 0.2 is 4-7% relative L2 (peaky rows: about twice the P / V rounding
    step of e4m3); a wrong alignment, head mapping or scale is off by more than 20%."""
    q, k, v = qkv(2, 4, 2, sq, sk, seed=sq + sk)
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=is_causal,
                                          enable_gqa=True, scale=0.2)
    out = sdpa(q, k, v, is_causal=is_causal, enable_gqa=True, scale=0.2)
    assert relative_l2(out, want) < 0.1
    default_scale = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                                   is_causal=is_causal, enable_gqa=True)
    if not (is_causal and sq == 1):  # one visible key: the scale cannot matter
        assert relative_l2(default_scale, want) > 0.2
    if is_causal and sq != sk and sq > 1:
        other = attention_oracle(q, k, v, causal="bottom_right", softmax_scale=0.2)
        assert relative_l2(other, want) > 0.2


def test_recipe_is_used():
    q, k, v = qkv(seed=2)
    a = sdpa(q, k, v)
    b = sdpa(q, k, v, recipe=Recipe(hadamard=False))
    c = sdpa(q, k, v, recipe=Recipe(fmt="e5m2"))
    assert not torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- validation (before any work)

@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if validation lets bad input reach the backend."""
    def boom(*a, **kw):
        raise AssertionError("backend reached")
    monkeypatch.setattr(fp8attn.api, "attention_bhsd", boom)


@pytest.mark.parametrize("make,exc,match", [
    (lambda q, k, v: (q[0], k, v), ValueError, r"query \(shape \(2, 50, 64\)"),
    (lambda q, k, v: (q, k[None], v), ValueError, r"key \(shape \(1, 1, 2, 50, 64\)"),
    (lambda q, k, v: (q, k[:, :1], v), ValueError, "key and value shapes differ"),
    (lambda q, k, v: (torch.cat([q, q]), k, v), ValueError, "batch sizes differ"),
    (lambda q, k, v: (q[..., :32], k, v), ValueError, "head dims differ"),
    (lambda q, k, v: (q, k[:, :, :, :32], v), ValueError, "key and value shapes differ"),
    (lambda q, k, v: (q.int(), k, v), TypeError, "torch.int32"),
    (lambda q, k, v: (q, k.to(torch.float8_e4m3fn), v), TypeError, "float8_e4m3fn"),
    (lambda q, k, v: (q, k.float(), v), TypeError, "mixed dtypes"),
    (lambda q, k, v: (q.numpy(), k, v), TypeError, "torch.Tensor"),
    (lambda q, k, v: (q, k.to("meta"), v), ValueError, "device meta"),
    (lambda q, k, v: (q, k[:, :, :0], v[:, :, :0]), ValueError, "seqlen_k is 0"),
])
def test_bad_inputs(no_work, make, exc, match):
    with pytest.raises(exc, match=match):
        sdpa(*make(*qkv(seed=3)))


def test_bad_heads_and_head_dims(no_work):
    q, k, v = qkv(1, 4, 2, seed=4)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        sdpa(q, k, v)
    q3, k3, v3 = qkv(1, 3, 2, seed=4)
    with pytest.raises(ValueError, match=r"multiple of key/value heads"):
        sdpa(q3, k3, v3, enable_gqa=True)
    q, k, v = qkv(d=56, seed=4)
    with pytest.raises(ValueError, match="head dim 56 has no Hadamard"):
        sdpa(q, k, v)
    for d in (4, 512):
        q, k, v = qkv(d=d, seed=4)
        with pytest.raises(ValueError, match=f"head dim {d} unsupported"):
            sdpa(q, k, v, recipe=Recipe(hadamard=False))


def test_unsupported_arguments(no_work):
    q, k, v = qkv(seed=5)
    with pytest.raises(ValueError, match="attn_mask is not supported"):
        sdpa(q, k, v, attn_mask=torch.ones(50, 50, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout is not supported"):
        sdpa(q, k, v, dropout_p=0.1)
    with pytest.raises(TypeError, match="recipe must be"):
        sdpa(q, k, v, recipe={"fmt": "e4m3"})
    with pytest.raises(ValueError, match="scale must be finite"):
        sdpa(q, k, v, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a float"):
        sdpa(q, k, v, scale=torch.tensor(0.1))


@pytest.mark.parametrize("cu_q,cu_k,max_q,match", [
    ([0, 20, 50], [0, 30, 10], 30, "cu_seqlens_k must start at 0, never decrease"),
    ([0, 20, 49], [0, 20, 50], 30, "cu_seqlens_q must start at 0.*end at the packed length 50"),
    ([1, 20, 50], [0, 20, 50], 30, "cu_seqlens_q must start at 0"),
    ([0, 20, 50], [0, 20, 50], 29, r"max_seqlen_q=29 is below the longest query sequence \(30\)"),
    ([0, 50], [0, 20, 50], 50, "must both have nseq"),
])
@pytest.mark.parametrize("backend", ["emulation", "triton"])
def test_varlen_bad_offsets(monkeypatch, backend, cu_q, cu_k, max_q, match):
    """cu_seqlens that do not partition the packed rows, or a max_seqlen_q below the longest
    query sequence, raise a ValueError naming them: before any kernel runs on the CPU (the
    emulation, and the Triton path through the interpreter), after the launches on the GPU
    (test_attention_gpu.py checks nothing outside the buffers was touched)."""
    if backend == "triton":
        pytest.importorskip("triton")
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("the Triton path on the CPU needs TRITON_INTERPRET=1")
        monkeypatch.setenv("FP8ATTN_BACKEND", "triton")
    dev = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    q, k, v = (t[0].transpose(0, 1).contiguous().to(dev) for t in qkv(seed=7))
    cu_q, cu_k = (torch.tensor(c, dtype=torch.int32, device=dev) for c in (cu_q, cu_k))
    with pytest.raises(ValueError, match=match):
        fp8attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, 50)


def test_varlen_fp8_input_errors():
    """Pre-quantised varlen inputs: descales per (sequence, head), no recipe, one FP8 dtype;
    descales with float inputs are refused."""
    q = torch.randn(10, 2, 64).to(torch.float8_e4m3fn)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    one = torch.ones(2, 2)
    varlen = fp8attn.flash_attn_varlen_func
    with pytest.raises(ValueError, match=r"k_descale.*expected \(batch=2"):
        varlen(q, q, q, cu, cu, 6, 6, q_descale=one, k_descale=torch.ones(3, 2))
    with pytest.raises(TypeError, match="recipe applies to bf16"):
        varlen(q, q, q, cu, cu, 6, 6, recipe=Recipe())
    with pytest.raises(TypeError, match="share one dtype"):
        varlen(q, q.to(torch.float8_e5m2), q, cu, cu, 6, 6)
    with pytest.raises(ValueError, match="go with pre-quantised FP8 inputs"):
        varlen(q.float(), q.float(), q.float(), cu, cu, 6, 6, v_descale=one)


def test_backward_says_forward_only():
    """The ops have no backward: calling it raises an error that says so (torch's default names
    only the op's internals); under no_grad the output needs no graph."""
    q, k, v = (t.requires_grad_() for t in qkv(seed=6))
    bshd = [t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v)]
    cu = torch.tensor([0, 20, 50], dtype=torch.int32)
    packed = [t.detach()[0].transpose(0, 1).contiguous().requires_grad_() for t in (q, k, v)]
    outs = (sdpa(q, k, v), fp8attn.flash_attn_func(*bshd, causal=True),
            fp8attn.flash_attn_varlen_func(*packed, cu, cu, 30, 30))
    for out in outs:
        assert out.requires_grad
        with pytest.raises(RuntimeError, match="no backward pass.*inference"):
            out.float().sum().backward()
    with torch.no_grad():
        assert not sdpa(q, k, v).requires_grad


def test_head_dim_56_runs_without_rotation():
    q, k, v = qkv(d=56, seed=6)
    out = sdpa(q, k, v, recipe=Recipe(hadamard=False))
    assert relative_l2(out, attention_oracle(q, k, v)) < 0.06


# ---------------------------------------------------------------- NaN / Inf (as documented)

@pytest.mark.parametrize("recipe", [Recipe(), Recipe(hadamard=False), Recipe(granularity="tensor")])
def test_nan_stays_where_exact_attention_puts_it(recipe):
    q, k, v = qkv(1, 2, 2, 200, 200, seed=7)
    q2 = q.clone()
    q2[0, 0, 5, 3] = float("nan")
    bad = ~torch.isfinite(sdpa(q2, k, v, is_causal=True, recipe=recipe))
    assert bad[0, 0, 5].all() and int(bad.sum()) == 64  # only query row 5
    k2 = k.clone()
    k2[0, 1, 150, 3] = float("nan")
    bad = ~torch.isfinite(sdpa(q, k2, v, is_causal=True, recipe=recipe))
    assert bad[0, 1, 150:].all() and int(bad.sum()) == 50 * 64  # rows that see key 150
    v2 = v.clone()
    v2[0, 1, 150, 3] = float("nan")
    bad = ~torch.isfinite(sdpa(q, k, v2, is_causal=True, recipe=recipe))
    assert bad[0, 1, 150:, 3].all() and int(bad.sum()) == 50  # column 3 of those rows


def test_inf_acts_as_nan():
    """+-Inf is quantised as NaN (never a silent finite 448): the rows that depend on it are NaN,
    and rows that do not depend on it are unchanged."""
    q, k, v = qkv(1, 1, 1, 64, 64, seed=8)
    clean = sdpa(q, k, v, is_causal=True)
    for idx in range(3):
        t = [q.clone(), k.clone(), v.clone()]
        t[idx][0, 0, 40, 3] = float("inf")
        out = sdpa(*t, is_causal=True)
        assert out[0, 0, 40].isnan().any()
        if idx == 0:                                 # a query row touches only its own output
            assert torch.isfinite(out[0, 0, 41:]).all()
        # block scales come from finite values: rows before 40 never see the Inf (and for Q the
        # other rows of its scale block keep their scale)
        torch.testing.assert_close(out[0, 0, :40], clean[0, 0, :40], rtol=0, atol=0)
