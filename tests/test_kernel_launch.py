"""fp8attn.kernel_launch and the Gluon launch plan on the CPU, with Triton's launch recorded instead
of run: a repeated kind of call skips the JIT and hands the compiled kernel every argument in the
kernel's parameter order, the same values the JIT got."""
import pytest
import torch

from fp8attn import kernel_launch
from fp8attn.attention import gluon_dispatch, gluon_fwd


class FakeJit:
    """Stands for a @jit function: kernel[grid](**kwargs) records the call (the JIT path) and
    returns a compiled kernel whose [grid](*args) records the positional arguments."""

    def __init__(self, params):
        self.params = params
        self.jit_calls, self.direct_calls = [], []

    def __getitem__(self, grid):
        def run(**kwargs):
            self.jit_calls.append((grid, kwargs))
            return FakeCompiled(self, grid)
        return run


class FakeCompiled:
    def __init__(self, jit, grid):
        self.jit, self.grid = jit, grid

    def __getitem__(self, grid):
        # Triton's CompiledKernel[grid] indexes grid[0], grid[1] and grid[2]
        assert len(grid) == 3 and tuple(grid[:len(self.grid)]) == tuple(self.grid)
        assert all(g == 1 for g in grid[len(self.grid):])
        return lambda *args: self.jit.direct_calls.append((self.grid, args))


class Param:
    def __init__(self, name, default=None, has_default=False):
        self.name, self.default, self.has_default = name, default, has_default


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv("FP8ATTN_FAST_LAUNCH", raising=False)
    kernel_launch.clear()
    yield
    kernel_launch.clear()


def test_second_call_of_a_key_goes_to_the_compiled_kernel_in_parameter_order(monkeypatch):
    k = FakeJit([Param("x"), Param("n"), Param("BLOCK"), Param("FLAG", False, True)])
    kernel_launch.launch(k, (4,), ("key", 1), dict(x="t0", n=5, BLOCK=64, num_warps=4))
    assert k.jit_calls == [((4,), dict(x="t0", n=5, BLOCK=64, num_warps=4))]
    kernel_launch.launch(k, (4,), ("key", 1), dict(x="t1", n=5, BLOCK=64, num_warps=4))
    # the default filled in, the launch option (fixed by the key) not passed again
    assert k.direct_calls == [((4,), ("t1", 5, 64, False))]
    kernel_launch.launch(k, (4,), ("key", 2), dict(x="t2", n=6, BLOCK=64, num_warps=4))
    kernel_launch.launch(k, (8,), ("key", 1), dict(x="t3", n=5, BLOCK=64, num_warps=4))
    kernel_launch.launch(k, (4,), None, dict(x="t4", n=5, BLOCK=64, num_warps=4))
    assert [c[1]["x"] for c in k.jit_calls] == ["t0", "t2", "t3", "t4"]     # new key, grid, none
    monkeypatch.setenv("FP8ATTN_FAST_LAUNCH", "0")
    kernel_launch.launch(k, (4,), ("key", 1), dict(x="t5", n=5, BLOCK=64, num_warps=4))
    assert k.jit_calls[-1][1]["x"] == "t5" and len(k.direct_calls) == 1


def test_a_call_missing_a_required_argument_is_never_cached():
    k = FakeJit([Param("x"), Param("n")])
    for _ in range(2):
        kernel_launch.launch(k, (1,), "key", dict(x="t"))
    assert len(k.jit_calls) == 2 and not k.direct_calls


def test_cache_drops_the_oldest_entries_beyond_its_size(monkeypatch):
    monkeypatch.setattr(kernel_launch, "MAX_ENTRIES", 2)
    k = FakeJit([Param("x")])
    for key in ("a", "b", "c", "a"):
        kernel_launch.launch(k, (1,), key, dict(x=key))
    assert [c[1]["x"] for c in k.jit_calls] == ["a", "b", "c", "a"]


def _gluon_inputs(b=2, h=3, s=1000, d=128):
    q8, k8 = (torch.zeros(b, h, s, d, dtype=torch.float8_e4m3fn) for _ in range(2))
    vt8 = torch.zeros(b, h, d, 1008, dtype=torch.float8_e4m3fn)[..., :s]
    ds = torch.ones(b, h, 8)
    return q8, k8, vt8, ds


@pytest.mark.parametrize("variant", ["VARIANT", "CAUSAL_VARIANT"])
def test_gluon_launch_repeats_the_jit_arguments_through_the_compiled_kernel(monkeypatch, variant):
    """gluon_attention_fwd: the second call of a kind (new tensors, new softmax scale) reaches the
    compiled kernel with, for each of the real kernel's parameters, what the JIT path would have
    been given for that call."""
    fake = FakeJit(gluon_fwd._attn_fwd_gluon.params)
    monkeypatch.setattr(gluon_fwd, "_attn_fwd_gluon", fake)
    monkeypatch.setattr(gluon_fwd, "_sm_count", lambda device: 132)
    monkeypatch.setattr(gluon_fwd, "_PLANS", {})
    kw = dict(getattr(gluon_dispatch, variant), causal=None if variant == "VARIANT" else "top_left")

    def call(scale):
        q8, k8, vt8, ds = _gluon_inputs()
        out = torch.empty(q8.shape, dtype=torch.bfloat16)
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds * 2, ds * 3, 128, 128, 128, scale,
                                      out=out, v_key_order="mma", **kw)
        return q8, out
    q8a, _ = call(0.1)
    q8b, outb = call(0.2)
    assert len(fake.jit_calls) == 1 and len(fake.direct_calls) == 1
    (grid, jit_kw), = fake.jit_calls
    (grid2, args), = fake.direct_calls
    assert grid2 == grid
    names = [p.name for p in fake.params]
    assert len(args) == len(names)
    got = dict(zip(names, args))
    for name, first in jit_kw.items():
        if name == "num_warps":
            continue
        second = got[name]
        if isinstance(first, torch.Tensor):
            assert second.shape == first.shape and second.dtype == first.dtype, name
        elif name.endswith("_desc"):
            assert (second.shape, second.strides, second.block_shape, second.layout) == \
                (first.shape, first.strides, first.block_shape, first.layout), name
        elif name == "qk_scale":
            assert second == pytest.approx(first * 2)
        else:
            assert second == first, name
    assert got["q_desc"].base is q8b and jit_kw["q_desc"].base is q8a
    assert got["O"] is outb
    # a parameter the JIT call left to its default is passed with that default
    for p in fake.params:
        if p.name not in jit_kw:
            assert p.has_default and got[p.name] == p.default


def test_gluon_launch_plan_follows_the_output_alignment(monkeypatch):
    """The plan's key holds each tensor's alignment: an output TMA cannot address gets its own
    plan (plain stores), not the cached TMA-store one."""
    fake = FakeJit(gluon_fwd._attn_fwd_gluon.params)
    monkeypatch.setattr(gluon_fwd, "_attn_fwd_gluon", fake)
    monkeypatch.setattr(gluon_fwd, "_sm_count", lambda device: 132)
    monkeypatch.setattr(gluon_fwd, "_PLANS", {})
    q8, k8, vt8, ds = _gluon_inputs()
    buf = torch.empty(q8.numel() + 8, dtype=torch.bfloat16)
    for off in (0, 1, 0):
        out = buf[off:off + q8.numel()].view(q8.shape)
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                      v_key_order="mma", **gluon_dispatch.VARIANT)
    assert [c[1]["TMA_STORE"] for c in fake.jit_calls] == [1, 0]
    assert len(fake.direct_calls) == 1


def test_gluon_launch_plan_refuses_bad_inputs_every_call(monkeypatch):
    """The plan's checks raise as the launch's own did, on every call of a bad kind (a refused
    call is not cached), and a good call after them still launches."""
    fake = FakeJit(gluon_fwd._attn_fwd_gluon.params)
    monkeypatch.setattr(gluon_fwd, "_attn_fwd_gluon", fake)
    monkeypatch.setattr(gluon_fwd, "_sm_count", lambda device: 132)
    monkeypatch.setattr(gluon_fwd, "_PLANS", {})
    q8, k8, vt8, ds = _gluon_inputs()

    def call(q=q8, k=k8, vt=vt8, **kw):
        gluon_fwd.gluon_attention_fwd(q, k, vt, ds, ds, ds, 128, 128, 128, 0.1,
                                      v_key_order="mma", **dict(gluon_dispatch.VARIANT, **kw))
    for _ in range(2):
        with pytest.raises(TypeError, match="float8_e4m3fn"):
            call(q=q8.view(torch.uint8))
        with pytest.raises(ValueError, match="contiguous"):
            call(k=k8.transpose(2, 3).contiguous().transpose(2, 3))
        with pytest.raises(ValueError, match="vt8 shape"):
            call(vt=vt8[:, :, :, :900])
        with pytest.raises(ValueError, match="pv_pipe"):
            call(pv_pipe=True)
        with pytest.raises(ValueError, match="tree_max"):
            call(tree_max=True)
        with pytest.raises(ValueError, match="bottom-right"):
            call(q=torch.zeros(2, 3, 1100, 128, dtype=torch.float8_e4m3fn),
                 causal="bottom_right", **gluon_dispatch.CAUSAL_PERSISTENT_VARIANT)
    assert not gluon_fwd._PLANS and not fake.jit_calls
    call()
    assert len(fake.jit_calls) == 1 and len(gluon_fwd._PLANS) == 1


class FakeJitNamed(FakeJit):
    """FakeJit with the argument names launch_call maps positional arguments to."""

    def __init__(self, names):
        super().__init__([Param(n) for n in names])
        self.arg_names = names    # FakeJit has .params: a compiled kernel, not the interpreter


def test_launch_call_names_positional_arguments_and_keys_on_their_specialisation():
    k = FakeJitNamed(["x", "n", "scale", "BLOCK"])
    a = torch.zeros(64)
    kernel_launch.launch_call(k, (2,), a, 16, 0.5, BLOCK=32, num_warps=4)
    assert k.jit_calls == [((2,), dict(x=a, n=16, scale=0.5, BLOCK=32, num_warps=4))]
    b = torch.ones(64)                               # a new tensor of the same kind: direct
    kernel_launch.launch_call(k, (2,), b, 16, 0.5, BLOCK=32, num_warps=4)
    assert len(k.direct_calls) == 1 and k.direct_calls[0][1][0] is b
    # every change Triton could specialise on takes the JIT path again: an int's value, a
    # float constexpr's value, a dtype, the data's 16-byte alignment, a launch option
    for args, kw in (((b, 17, 0.5), {}), ((b, 16, 0.25), {}), ((b.double(), 16, 0.5), {}),
                     ((b[1:], 16, 0.5), {}), ((b, 16, 0.5), dict(num_warps=8))):
        kernel_launch.launch_call(k, (2,), *args, **{"BLOCK": 32, "num_warps": 4, **kw})
    assert len(k.jit_calls) == 6 and len(k.direct_calls) == 1


def test_spec_key_ignores_values_and_places_but_not_kinds_of_tensors():
    key = kernel_launch.spec_key
    x, y = torch.zeros(32), torch.ones(32)
    assert key(dict(a=x, n=3)) == key(dict(a=y, n=3))
    assert key(dict(a=x, n=3)) != key(dict(b=x, n=3))          # names count
    assert key(dict(a=x, n=3)) != key(dict(a=x.half(), n=3))
    assert key(dict(a=x, n=3)) != key(dict(a=x[2:], n=3))       # 8 bytes in: not 16-aligned
    assert key(dict(a=x, n=True)) != key(dict(a=x, n=1)) != key(dict(a=x, n=1.0))
