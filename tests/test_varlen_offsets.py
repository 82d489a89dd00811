"""Varlen offsets checked once per tensor (attention/varlen_offsets.py), and the direct launches
of repeated calls (fp8attn.kernel_launch.launch_call): the remembering on the CPU, the calls on
the GPU."""
import gc

import pytest
import torch

import fp8attn
from fp8attn.attention import varlen_offsets as vo

LENGTHS = (30, 30, 16)


@pytest.fixture(autouse=True)
def nothing_remembered():
    vo.forget()
    yield
    vo.forget()


def _cu(values, device="cpu"):
    return torch.tensor(values, dtype=torch.int32, device=device)


def test_a_checked_pair_is_known_until_either_tensor_changes():
    cu_q, cu_k = _cu([0, 10, 30]), _cu([0, 10, 30])
    assert not vo._known_good(cu_q, cu_k, LENGTHS)
    vo._remember(cu_q, cu_k, LENGTHS)
    assert vo._known_good(cu_q, cu_k, LENGTHS)
    assert not vo._known_good(cu_q, cu_k, (30, 30, 8))           # another max_seqlen_q
    assert not vo._known_good(cu_k, cu_q, LENGTHS)               # the other way round
    assert not vo._known_good(cu_q, _cu([0, 10, 30]), LENGTHS)   # equal values, new tensor
    cu_k[1] = 20                                                 # written in place
    assert not vo._known_good(cu_q, cu_k, LENGTHS)
    vo._remember(cu_q, cu_k, LENGTHS)
    cu_q[:2].add_(0)                                             # through a view
    assert not vo._known_good(cu_q, cu_k, LENGTHS)


def test_a_freed_tensor_is_not_mistaken_for_a_new_one_at_its_address():
    cu_q, cu_k = _cu([0, 10, 30]), _cu([0, 10, 30])
    vo._remember(cu_q, cu_k, LENGTHS)
    key = (id(cu_q), id(cu_k))
    del cu_q
    gc.collect()
    assert vo._CHECKED[key][0]() is None        # the entry cannot match any live tensor


def test_inference_tensors_are_never_remembered():
    with torch.inference_mode():
        cu = _cu([0, 10, 30])
    vo._remember(cu, cu, LENGTHS)
    assert not vo._CHECKED and not vo._known_good(cu, cu, LENGTHS)


def test_offsets_made_as_ordinary_tensors_are_remembered_under_inference_mode():
    # the README's advice for serving loops: build a forward's cu_seqlens under
    # torch.inference_mode(False), so the layers after the first skip the check; writes made
    # in place under inference_mode still move such a tensor's version
    with torch.inference_mode():
        with torch.inference_mode(False):
            cu = _cu([0, 10, 30])
        vo._remember(cu, cu, LENGTHS)
        assert vo._known_good(cu, cu, LENGTHS)
        cu[1] = 20
        assert not vo._known_good(cu, cu, LENGTHS)


def test_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(vo, "MAX_REMEMBERED", 3)
    keep = [_cu([0, 10, 30]) for _ in range(4)]
    for t in keep:
        vo._remember(t, t, LENGTHS)
    assert len(vo._CHECKED) <= 3 and vo._known_good(keep[-1], keep[-1], LENGTHS)


def _varlen_inputs(total=1407, heads=4, d=128, seed=3):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(total, heads, d, generator=g, device="cuda").bfloat16()
            for _ in range(3)]


@pytest.mark.gpu
def test_checked_offsets_are_not_copied_to_the_host_again(monkeypatch):
    """The second call with the same cu_seqlens neither copies them nor waits for the GPU; a
    change made in place is checked again (and raises if bad); inference tensors are checked
    every call."""
    copies = []
    real = vo._offsets_to_host
    monkeypatch.setattr(vo, "_offsets_to_host", lambda a, b: copies.append(1) or real(a, b))
    q, k, v = _varlen_inputs()
    cu = _cu([0, 700, 1407], "cuda")
    first = fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, 707, 707, causal=True)
    again = fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, 707, 707, causal=True)
    assert len(copies) == 1 and torch.equal(first, again)
    fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, 800, 707, causal=True)   # new max_seqlen_q
    assert len(copies) == 2
    cu[1] = 10 ** 7
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, 707, 707, causal=True)
    with torch.inference_mode():
        cu_inf = _cu([0, 700, 1407], "cuda")
        for _ in range(2):
            fp8attn.flash_attn_varlen_func(q, k, v, cu_inf, cu_inf, 707, 707, causal=True)
        assert len(copies) == 5
        with torch.inference_mode(False):         # an ordinary tensor: checked once
            cu_ord = _cu([0, 700, 1407], "cuda")
        for _ in range(2):
            fp8attn.flash_attn_varlen_func(q, k, v, cu_ord, cu_ord, 707, 707, causal=True)
    assert len(copies) == 6


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_direct_launches_give_the_jit_launches_bits(monkeypatch, causal):
    """Repeated calls of a kind go straight to the compiled kernels (kernel_launch): the
    quantiser's, the tl attention kernel's (varlen), the layout kernels' (FP8 inputs). Their
    outputs equal those of the JIT path (FP8ATTN_FAST_LAUNCH=0) on new data, call after call."""
    q, k, v = _varlen_inputs()
    cu = _cu([0, 300, 1029, 1407], "cuda")
    qd, kd, vd = (x[:1024].view(2, 512, 4, 128) for x in (q, k, v))
    q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (qd, kd, vd))
    ones = torch.ones(2, 4, device="cuda")
    calls = {
        "varlen": lambda: fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, 729, 729,
                                                         causal=causal),
        "dense": lambda: fp8attn.flash_attn_func(qd, kd, vd, causal=causal),
        "fp8 in": lambda: fp8attn.flash_attn_func(q8, k8, v8, causal=causal, q_descale=ones,
                                                  k_descale=ones, v_descale=ones)}
    for name, call in calls.items():
        for step in range(3):
            for x in (q, k, v):
                x.mul_(-1 if step % 2 else 1.5)
            q8.copy_(qd.to(torch.float8_e4m3fn))
            k8.copy_(kd.to(torch.float8_e4m3fn))
            v8.copy_(vd.to(torch.float8_e4m3fn))
            fast = call()
            monkeypatch.setenv("FP8ATTN_FAST_LAUNCH", "0")
            jit = call()
            monkeypatch.delenv("FP8ATTN_FAST_LAUNCH")
            assert torch.equal(fast, jit), (name, step)
