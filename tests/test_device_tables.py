"""device_tables: built_off_pool (the build runs in another thread; its result and its errors
come back to the caller) and cached_table (built once per key, never evicted, never built
inside a CUDA-graph capture), and the caches that use it."""
import threading

import pytest
import torch

from fp8attn import device_tables
from fp8attn.device_tables import built_off_pool, cached_table
from fp8attn.hadamard.reference import cached_hadamard_signs, hadamard_signs
from fp8attn.quant import key_order


def test_built_off_pool_runs_in_another_thread_and_returns_the_result():
    got = built_off_pool(lambda a, b: (a + b, threading.get_ident()), 2, 3)
    assert got[0] == 5
    assert got[1] != threading.get_ident()


def test_built_off_pool_reraises_in_the_caller():
    def bad():
        raise ValueError("no table")
    with pytest.raises(ValueError, match="no table"):
        built_off_pool(bad)


def test_built_off_pool_runs_on_the_callers_cuda_device(monkeypatch):
    """A new thread's current CUDA device is 0: the build thread is set to the caller's (faked
    here: no CUDA needed), so a table for "cuda" lands on the device the caller runs on."""
    set_in = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device",
                        lambda d: set_in.append((d, threading.get_ident())))
    tid = built_off_pool(threading.get_ident)
    assert set_in == [(3, tid)] and tid != threading.get_ident()


def test_cached_table_builds_once_per_key_and_never_evicts():
    cache, calls = {}, []

    def build(n, device):
        calls.append(n)
        return torch.full((2,), n, device=device)
    first = cached_table(cache, (0, "cpu"), "cpu", build, 0, "cpu")
    assert cached_table(cache, (0, "cpu"), "cpu", build, 0, "cpu") is first
    tables = [cached_table(cache, (n, "cpu"), "cpu", build, n, "cpu") for n in range(100)]
    assert calls == list(range(100))
    assert len(cache) == 100
    assert all(cache[(n, "cpu")] is t for n, t in enumerate(tables))
    assert tables[0] is first


def test_capturing_is_false_off_cuda():
    assert not device_tables.capturing(torch.device("cpu"))


def _never_built(*args):
    raise AssertionError("built during a capture")


def test_cached_table_miss_under_capture_uses_in_capture_uncached(monkeypatch):
    """The capture branch, faked: capturing patched to True, so CUDA is never touched."""
    monkeypatch.setattr(device_tables, "capturing", lambda device: True)
    cache, seen = {}, []

    def on_stream(n):
        seen.append(n)
        return torch.arange(n)
    got = cached_table(cache, (3, "cuda"), "cuda", _never_built, 3, in_capture=on_stream)
    assert torch.equal(got, torch.arange(3)) and seen == [3]
    assert not cache
    hit = cache[(4, "cuda")] = torch.zeros(1)
    assert cached_table(cache, (4, "cuda"), "cuda", _never_built, 4, in_capture=on_stream) is hit
    assert seen == [3]


def test_cached_table_miss_under_capture_without_in_capture_raises(monkeypatch):
    monkeypatch.setattr(device_tables, "capturing", lambda device: True)
    cache = {}
    with pytest.raises(RuntimeError, match="warm-up call") as info:
        cached_table(cache, (7, "cuda"), "cuda", _never_built, 7, "cuda")
    assert "_never_built" in str(info.value)
    assert not cache


def test_causal_schedule_cached_once_and_none_under_capture(monkeypatch):
    """gluon_fwd.causal_schedule_for: one table per shape, kept; under a capture with no table
    yet, None (the launch then takes the non-persistent kernel) and nothing cached."""
    from fp8attn.attention import gluon_fwd
    monkeypatch.setattr(gluon_fwd, "_SCHEDULES", {})
    args = (4, 6, 6, 8, 512, 512, 128, 128, 1, torch.device("cpu"))
    t = gluon_fwd.causal_schedule_for(*args)
    assert torch.equal(t, gluon_fwd._causal_schedule(*args))
    assert gluon_fwd.causal_schedule_for(*args) is t
    monkeypatch.setattr(device_tables, "capturing", lambda device: True)
    other = (4, 6, 6, 8, 512, 512, 128, 128, 2, torch.device("cpu"))
    assert gluon_fwd.causal_schedule_for(*other) is None
    assert list(gluon_fwd._SCHEDULES) == [args]


@pytest.mark.parametrize("s", [1, 15, 16, 17, 100, 1000])
def test_key_order_round_trips_and_caches_one_table_per_padded_length(monkeypatch, s):
    monkeypatch.setattr(key_order, "_INDEX", {})
    monkeypatch.setattr(key_order, "_INVERSE", {})
    x = torch.randn(2, 3, 4, s)
    mma = key_order.to_mma(x)
    assert torch.equal(key_order.to_natural(mma), x)
    assert torch.equal(key_order.to_natural(key_order.to_mma(x + 1)), x + 1)
    assert list(key_order._INDEX) == [(key_order.padded_len(s), "cpu")]
    assert list(key_order._INVERSE) == [(key_order.padded_len(s), "cpu")]


def test_key_order_cache_grows_by_one_per_new_padded_length(monkeypatch):
    monkeypatch.setattr(key_order, "_INDEX", {})
    monkeypatch.setattr(key_order, "_INVERSE", {})
    pads = set()
    for s in (1, 15, 16, 17, 100, 1000):
        x = torch.randn(2, s)
        assert torch.equal(key_order.to_natural(key_order.to_mma(x)), x)
        pads.add(key_order.padded_len(s))
        assert len(key_order._INDEX) == len(key_order._INVERSE) == len(pads)


def _mma_on_gpu(x: torch.Tensor) -> torch.Tensor:
    """An "mma"-order CUDA view of x's keys, its buffer holding the padded positions."""
    full = key_order.padded_view(key_order.to_mma(x)).cuda()
    return full[..., :x.shape[-1]]


@pytest.mark.gpu
def test_gpu_key_order_table_not_cached_from_a_capture(monkeypatch):
    """to_natural first called for a padded length inside a CUDA-graph capture: the permutation
    is recorded into the graph, not cached, so an eager call before the replay builds its own
    (a cached table recorded in the capture would hold garbage until the replay)."""
    monkeypatch.setattr(key_order, "_INDEX", {})      # cold; earlier tables stay alive
    monkeypatch.setattr(key_order, "_INVERSE", {})
    s = 12345
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2, 3, s, generator=g) for _ in range(2))
    static_in = _mma_on_gpu(a)
    warm = torch.randn(2, 3, 100)                   # another padded length: loads the kernels
    assert torch.equal(key_order.to_natural(_mma_on_gpu(warm)).cpu(), warm)
    key = (key_order.padded_len(s), str(static_in.device))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = key_order.to_natural(static_in)
    assert key not in key_order._INDEX and key not in key_order._INVERSE
    eager = key_order.to_natural(_mma_on_gpu(b))
    assert torch.equal(eager.cpu(), b)
    assert key in key_order._INVERSE
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), a)


@pytest.mark.gpu
def test_gpu_signs_first_needed_inside_a_capture_raise(monkeypatch):
    """The signs are a host-to-device copy: first needed inside a capture, a clear error (not a
    table of garbage); CUDA stays usable and the eager call afterwards builds them."""
    from fp8attn.hadamard import reference
    monkeypatch.setattr(reference, "_SIGNS", {})       # cold; earlier tables stay alive
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    try:
        with torch.cuda.graph(graph, stream=stream):
            cached_hadamard_signs(128, 987654, "cuda")
    except RuntimeError as e:
        err = str(e)
    else:
        err = None
    torch.cuda.synchronize()
    assert err is not None and "warm-up call" in err
    assert not reference._SIGNS
    signs = cached_hadamard_signs(128, 987654, "cuda")
    assert torch.equal(signs.cpu(), hadamard_signs(128, 987654))
    assert cached_hadamard_signs(128, 987654, "cuda") is signs
