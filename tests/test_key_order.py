"""V^T's "mma" key order (fp8attn/quant/key_order.py): the permutation, the quantiser writing it
(torch and Triton through the interpreter, same bits), and the tl path taking it back."""
import pytest
import torch
import triton
import triton.language as tl

from fp8attn.attention import gluon_dispatch, triton_fwd
from fp8attn.quant import QuantizedTensor, quantize, quantize_qkv
from fp8attn.quant.key_order import (mma_key, mma_key_tl, padded_view, to_mma, to_natural)
from fp8attn import Recipe


def test_mma_key_is_the_gluon_kernels_register_permutation():
    """The permutation gluon_fwd._pack_p applies to P's columns (reshape to 16-key groups of
    2 x 2 x 2 x 2, dims (c3, c2, c1, c0) -> (c2, c1, c3, c0)) is the one mma_key describes, and
    it permutes each group in place."""
    cols = torch.arange(128)
    permuted = cols.reshape(1, 8, 2, 2, 2, 2).permute(0, 1, 3, 4, 2, 5).reshape(128)
    assert torch.equal(permuted, mma_key(cols))
    groups = mma_key(cols).reshape(8, 16)
    assert torch.equal(groups.sort(-1).values, cols.reshape(8, 16))
    assert not torch.equal(groups, cols.reshape(8, 16))


@triton.jit
def _keys(out_ptr, N: tl.constexpr):
    pos = tl.arange(0, N)
    tl.store(out_ptr + pos, mma_key_tl(pos))


def test_mma_key_tl_matches_torch(device):
    out = torch.empty(64, dtype=torch.int32, device=device)
    _keys[(1,)](out, N=64)
    assert torch.equal(out.long().cpu(), mma_key(torch.arange(64)))


@pytest.mark.parametrize("s", [1, 15, 16, 17, 100, 128])
def test_to_mma_round_trip_and_padding(s):
    x = torch.randn(2, 3, 5, s).to(torch.float8_e4m3fn)
    m = to_mma(x)
    assert m.shape == x.shape and m.stride(-2) == -(-s // 16) * 16
    full = padded_view(m).view(torch.uint8)
    keys = mma_key(torch.arange(full.shape[-1]))
    past = keys >= s                                   # positions of keys past S hold zeros
    assert (full[..., past] == 0).all()
    assert torch.equal(full[..., ~past], x.view(torch.uint8)[..., keys[~past]])
    back = to_natural(m)
    assert torch.equal(back.view(torch.uint8), x.view(torch.uint8))


def test_padded_view_refuses_rows_without_the_padding():
    x = torch.zeros(1, 1, 4, 20, dtype=torch.uint8)[..., :17]     # rows of 20 < 32 positions
    with pytest.raises(ValueError, match="rows of 32"):
        padded_view(x)


def test_key_order_arguments_are_checked():
    x = torch.randn(1, 1, 8, 64)
    with pytest.raises(ValueError, match="transpose=True"):
        quantize(x, key_order="mma")
    with pytest.raises(ValueError, match="key_order"):
        quantize(x, transpose=True, key_order="reversed")
    with pytest.raises(ValueError, match="key_order"):
        quantize_qkv(x, x, x, Recipe(), v_key_order="mma16")
    q = quantize(x)
    with pytest.raises(ValueError, match="transposed"):
        QuantizedTensor(data=q.data, descale=q.descale, block_size=q.block_size, fmt="e4m3",
                        key_order="mma")


@pytest.mark.parametrize("s,d,granularity", [
    (37, 128, "block"),      # the pairs kernel, permuting its row loads; a partial last group
    (300, 128, "block"),
    (256, 64, "block"),
    (45, 96, "block"),       # _quant_kernel (head dim 96), then one gather
    (50, 128, "head"),       # two-pass amax path
    (33, 128, "token"),      # groups of 1 row: gathered after the kernel
])
def test_quantise_into_mma_order_both_backends(s, d, granularity, device):
    x = torch.randn(1, 2, s, d, generator=torch.Generator().manual_seed(s)).bfloat16().to(device)
    nat = quantize(x, transpose=True, granularity=granularity, backend="triton")
    got = quantize(x, transpose=True, granularity=granularity, key_order="mma", backend="triton")
    ref = quantize(x, transpose=True, granularity=granularity, key_order="mma", backend="torch")
    assert got.key_order == ref.key_order == "mma"
    assert torch.equal(padded_view(got.data).view(torch.uint8),
                       padded_view(ref.data).view(torch.uint8))
    assert torch.equal(to_natural(got.data).view(torch.uint8), nat.data.view(torch.uint8))
    assert torch.equal(got.descale, nat.descale)
    assert torch.equal(got.dequantize(), nat.dequantize())


def test_tl_path_takes_mma_order_back(device):
    """attention_fwd_fp8 with an "mma"-order V^T that the Gluon kernel does not take (head dim
    64) puts it back in natural order for the tl kernel: the same output."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 70, 64, generator=g).to(device) for _ in range(3))
    outs = []
    for order in ("natural", "mma"):
        q8, k8, v8 = quantize_qkv(q, k, v, Recipe(), backend="triton", v_key_order=order)
        assert v8.key_order == order
        outs.append(triton_fwd.attention_fwd_fp8(
            q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
            q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
            softmax_scale=0.125, v_key_order=order))
    assert torch.equal(outs[0], outs[1])


def test_v_key_order_for_is_natural_off_the_gluon_path():
    x = torch.zeros(1, 2, 4096, 128)
    kw = dict(fmt="e4m3", granularity="block", block_kv=128, causal=None, varlen=False,
              two_terms=False, out_dtype=torch.bfloat16)
    assert gluon_dispatch.v_key_order_for(x, x, **kw) == "natural"       # CPU / interpreter


def test_v_key_order_for_follows_the_dispatch_rules(monkeypatch):
    """On an sm_90 device with Triton 3.6 (faked): "mma" exactly where why_not would take the
    quantised call."""
    import types
    monkeypatch.setattr(gluon_dispatch, "_capability", lambda index: (9, 0))
    monkeypatch.setattr(gluon_dispatch.triton, "__version__", "3.6.0")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)

    def t(s, d=128):
        return types.SimpleNamespace(shape=(1, 2, s, d), is_cuda=True,
                                     device=types.SimpleNamespace(index=0))
    kw = dict(fmt="e4m3", granularity="block", block_kv=128, causal=None, varlen=False,
              two_terms=False, out_dtype=torch.bfloat16)
    assert gluon_dispatch.v_key_order_for(t(4096), t(4096), **kw) == "mma"
    assert gluon_dispatch.v_key_order_for(t(100), t(5000), **dict(kw, granularity="head")) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096), t(4096), **dict(kw, causal="top_left")) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096, 256), t(4096, 256), **kw) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096, 256), t(4096, 256),
                                          **dict(kw, causal="top_left")) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096), t(4096), **dict(kw, two_terms=True)) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096), t(4096),
                                          **dict(kw, out_dtype=torch.float16)) == "mma"
    assert gluon_dispatch.v_key_order_for(t(1024), t(1024), **kw) == "mma"    # MIN_SEQLEN_K
    # head dim 256 on 128-key tiles: from 512 keys (MIN_SEQLEN_K_D256_N128), causal or not
    assert gluon_dispatch.v_key_order_for(t(1024, 256), t(1024, 256), **kw) == "mma"
    assert gluon_dispatch.v_key_order_for(t(512, 256), t(512, 256), **kw) == "mma"
    assert gluon_dispatch.v_key_order_for(t(512, 256), t(512, 256),
                                          **dict(kw, causal="top_left")) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096, 64), t(4096, 64), **dict(kw, lse=True)) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096, 64), t(16384, 64),
                                          **dict(kw, causal="top_left")) == "mma"
    assert gluon_dispatch.v_key_order_for(t(4096, 64), t(4096, 64),
                                          **dict(kw, causal="top_left")) == "mma"
    assert gluon_dispatch.v_key_order_for(t(1536, 64), t(1536, 64), **kw) == "mma"
    assert gluon_dispatch.v_key_order_for(t(2048, 64), t(2048, 64),
                                          **dict(kw, causal="top_left")) == "mma"
    for q, k, change in [(t(4096), t(1000), {}), (t(500, 256), t(500, 256), {}),
                         (t(500, 256), t(500, 256), dict(causal="top_left")),
                         # 64-key tiles at head dim 256: MIN_SEQLEN_K_D256
                         (t(2048, 256), t(2048, 256), dict(causal="top_left", block_kv=64)),
                         (t(4096, 64), t(1535, 64), {}),          # MIN_SEQLEN_K_D64
                         (t(2000, 64), t(2000, 64), dict(causal="top_left")),  # _D64_CAUSAL
                         (t(5000), t(4096), dict(causal="bottom_right")),  # Sq > Sk
                         (t(4096, 256), t(4096, 256), dict(lse=True)),
                         (t(4096), t(4096), dict(varlen=True)),
                         (t(4096, 256), t(4096, 256), dict(two_terms=True)),
                         (t(4096), t(4096), dict(fmt="e5m2")),
                         (t(4096), t(4096), dict(block_kv=64)),
                         # Q / K the caller will not make contiguous
                         (t(4096), t(4096), dict(contiguous=False))]:
        assert gluon_dispatch.v_key_order_for(q, k, **dict(kw, **change)) == "natural", change
    monkeypatch.setenv("FP8ATTN_GLUON", "0")
    assert gluon_dispatch.v_key_order_for(t(4096), t(4096), **kw) == "natural"
