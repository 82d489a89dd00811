"""Inputs on a GPU other than the current one (a model spread over GPUs in one process): every
public entry point launches on the inputs' GPU (fp8attn/device_guard.py) and gives the bits of
the same call made with that GPU current, touching no memory of the current one. Runs on
machines with two or more GPUs."""
import pytest
import torch

import fp8attn
from fp8attn.quant import quantize

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def _inputs(seed, shapes, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).to("cuda:1") for s in shapes]


def _cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32,
                        device="cuda:1")


def _calls():
    q, k, v = _inputs(0, [(2, 2048, 8, 128)] * 3)                   # dense, the Gluon kernel's size
    qs, ks, vs = _inputs(1, [(1, 4, 300, 64), (1, 2, 300, 64), (1, 2, 300, 64)])   # GQA, tails
    lens = [100, 0, 700, 33]
    qv, kv, vv = _inputs(2, [(sum(lens), 4, 128), (sum(lens), 2, 128), (sum(lens), 2, 128)])
    q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
    qv8, kv8, vv8 = (x.to(torch.float8_e4m3fn) for x in (qv, kv, vv))
    ds = torch.rand(len(lens), 2, device="cuda:1") + 0.5
    one = torch.ones(2, 8, device="cuda:1")
    x = _inputs(3, [(1, 3, 200, 128)])[0]
    return {
        "flash_attn_func": lambda: fp8attn.flash_attn_func(q, k, v, causal=True),
        "sdpa_gqa": lambda: fp8attn.scaled_dot_product_attention(qs, ks, vs, enable_gqa=True),
        "varlen": lambda: fp8attn.flash_attn_varlen_func(qv, kv, vv, _cu(lens), _cu(lens),
                                                         max(lens), max(lens), causal=True),
        "fp8": lambda: fp8attn.flash_attn_func(q8, k8, v8, q_descale=one, k_descale=one,
                                               v_descale=one),
        "fp8_varlen": lambda: fp8attn.flash_attn_varlen_func(
            qv8, kv8, vv8, _cu(lens), _cu(lens), max(lens), max(lens), q_descale=ds,
            k_descale=ds, v_descale=ds),
        "quantize": lambda: quantize(x, "e4m3", "block", 64).data,
        "hadamard": lambda: fp8attn.random_hadamard_transform(x, seed=5),
    }


def _bits(t):
    return t.view(torch.uint8) if t.element_size() == 1 else t


@pytest.mark.parametrize("name", ["flash_attn_func", "sdpa_gqa", "varlen", "fp8", "fp8_varlen",
                                  "quantize", "hadamard"])
def test_call_runs_on_the_inputs_gpu(name):
    with torch.cuda.device(1):
        want = _calls()[name]()
    torch.cuda.synchronize(1)
    torch.cuda.set_device(0)
    before = torch.cuda.memory_allocated(0)
    got = _calls()[name]()
    torch.cuda.synchronize(1)
    assert torch.cuda.current_device() == 0                  # the caller's device is kept
    assert got.device == torch.device("cuda:1")
    assert torch.equal(_bits(got), _bits(want)), name
    assert torch.cuda.memory_allocated(0) == before, name
