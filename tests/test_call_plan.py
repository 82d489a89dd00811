"""fp8attn.call_plan: a kind of call recorded once, then its allocations and launches replayed.

Under Triton's interpreter (CPU): the public calls give the same bits with plans as without
(FP8ATTN_PLAN=0) on new data, the plan is really used, and everything the recorder cannot
replay (another aten op, a launch past kernel_launch, an integer that is an address) leaves
the kind without a plan. The compiled-kernel path (integer pointers, TMA descriptors moved to
the new tensors) with a stand-in for Triton's compiled kernel; on a GPU, the public calls again.
"""
import os
import re
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

import fp8attn
from fp8attn import Recipe, call_plan, kernel_launch

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    """The Triton kernels (through the interpreter on the CPU): the emulation has no plan."""
    monkeypatch.setenv("FP8ATTN_BACKEND", "triton")


def _bits(t):
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


def _unplanned(fn, *args, **kwargs):
    os.environ["FP8ATTN_PLAN"] = "0"
    try:
        return fn(*args, **kwargs)
    finally:
        del os.environ["FP8ATTN_PLAN"]


def _planned_kinds():
    return [p for p in call_plan._PLANS.values() if p is not None]


CASES = [
    # (flash_attn_func or sdpa, q shape (B, S, Hq, D) / (B, Hq, S, D), Hkv, Sk, kwargs, planned)
    ("flash", (1, 70, 4, 64), 4, 70, dict(causal=True), True),
    ("flash", (1, 33, 4, 64), 2, 90, dict(causal=True, return_lse=True), True),
    ("flash", (2, 40, 2, 96), 2, 40, dict(recipe=Recipe(q_terms=2)), True),
    ("sdpa", (1, 2, 50, 64), 1, 50, dict(is_causal=True), True),
    # per-head scales come from torch reductions (amax ...): no plan, the same bits
    ("sdpa", (1, 2, 50, 64), 2, 50, dict(recipe=Recipe(granularity="head")), False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_planned_calls_give_the_bits_of_unplanned_ones(case):
    kind, qshape, hkv, sk, kwargs, planned = case
    g = torch.Generator().manual_seed(1)
    if kind == "flash":
        b, sq, _, d = qshape
        kshape = (b, sk, hkv, d)
        fn = fp8attn.flash_attn_func
    else:
        b, _, sq, d = qshape
        kshape = (b, hkv, sk, d)
        fn = fp8attn.scaled_dot_product_attention
        kwargs = dict(kwargs, enable_gqa=True)
    outs = []
    for _ in range(4):            # the first call compiles, the second records, two replays
        q = torch.randn(qshape, generator=g).to(DEV, torch.bfloat16)
        k, v = (torch.randn(kshape, generator=g).to(DEV, torch.bfloat16) for _ in range(2))
        got = fn(q, k, v, **kwargs)
        want = _unplanned(fn, q, k, v, **kwargs)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        assert all(_same(x, y) for x, y in zip(got, want))
        outs.append(got[0])
    assert len(_planned_kinds()) == planned
    # every call its own output
    assert len({o.data_ptr() for o in outs}) == len(outs)


def test_an_fp8_input_call_is_planned_and_gives_the_same_bits():
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        q, k, v = (torch.randn(1, 48, 2, 64, generator=g).to(DEV).to(torch.float8_e4m3fn)
                   for _ in range(3))
        qd, kd, vd = (torch.rand(1, 2, generator=g).to(DEV) + 0.5 for _ in range(3))
        got = fp8attn.flash_attn_func(q, k, v, causal=True, q_descale=qd, k_descale=kd,
                                      v_descale=vd)
        want = _unplanned(fp8attn.flash_attn_func, q, k, v, causal=True, q_descale=qd,
                          k_descale=kd, v_descale=vd)
        assert _same(got, want)
    # on the GPU, where the Gluon kernel takes the call, torch copies Q and K by head
    # (fp8_inputs.by_head): clones, replayed
    assert len(_planned_kinds()) == 1


@pytest.mark.parametrize("kind", ["bf16", "fp8", "varlen"])
def test_calls_under_inference_mode_are_planned(kind):
    # serving stacks run under torch.inference_mode. There composite ops reach the recorder
    # whole (a `.to` to where the signs already are), and a table first built there must not
    # become an inference tensor: a new seed makes the call build its signs there. Session 41
    # (H200): before this, no plan at all under inference_mode (dense host time 0.34 ms, not
    # 0.08), and on the Triton path a crash on the signs' version counter
    g = torch.Generator().manual_seed(13)
    recipe = Recipe(seed=4100 + ["bf16", "fp8", "varlen"].index(kind))
    with torch.inference_mode():
        for _ in range(4):
            if kind == "varlen":
                args, _ = _varlen_args(g, 150, 150, 2, 2, 64, 3, DEV)
                fn, kwargs = fp8attn.flash_attn_varlen_func, dict(causal=True, recipe=recipe)
            else:
                args = [torch.randn(1, 48, 2, 64, generator=g).to(DEV, torch.bfloat16)
                        for _ in range(3)]
                fn, kwargs = fp8attn.flash_attn_func, dict(causal=True, recipe=recipe)
                if kind == "fp8":
                    args = [a.to(torch.float8_e4m3fn) for a in args]
                    kwargs = dict(causal=True)
            got = fn(*args, **kwargs)
            assert _same(got, _unplanned(fn, *args, **kwargs))
    assert len(_planned_kinds()) == 1, call_plan.refusals()
    from fp8attn.hadamard.reference import cached_hadamard_signs
    assert not cached_hadamard_signs(64, recipe.seed, DEV).is_inference()


def test_an_op_the_recorder_cannot_replay_leaves_the_kind_unplanned():
    # a negative softmax scale flips Q's sign bits with a torch op (ops._launch): not a plan
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        q, k, v = (torch.randn(1, 40, 2, 64, generator=g).to(DEV, torch.bfloat16)
                   for _ in range(3))
        got = fp8attn.flash_attn_func(q, k, v, softmax_scale=-0.1)
        assert _same(got, _unplanned(fp8attn.flash_attn_func, q, k, v, softmax_scale=-0.1))
    assert list(call_plan._PLANS.values()) == [None]
    assert ("_attention_impl", "aten.bitwise_xor.Scalar") in call_plan.refusals()


def test_the_environment_variables_the_package_reads_are_in_the_key():
    src = "\n".join(p.read_text() for p in Path(fp8attn.__file__).parent.rglob("*.py"))
    names = set(re.findall(r'(?:environ(?:\.get)?\(?\[?|_env\()"([A-Z][A-Z0-9_]+)"', src))
    not_on_the_call_path = {"FP8ATTN_MINILM_DIR"}   # a model folder
    assert names - not_on_the_call_path <= set(call_plan.ENV_NAMES), names
    assert {"FP8ATTN_BACKEND", "FP8ATTN_TUNE", "TRITON_INTERPRET"} <= names   # the regex works


# ---------------------------------------------------------------------------------------------
# the recorder on small functions of its own (the interpreter on the CPU, the GPU where present)

@triton.jit
def _add_one(x_ptr, y_ptr, n, unused, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=m) + 1.0, mask=m)


def _through_kernel_launch(x, tag: str):
    y = torch.empty_like(x) if tag == "empty_like" else torch.empty(x.shape, device=x.device)
    kernel_launch.launch_call(_add_one, (1,), x, y, x.numel(), 0, BLOCK=64)
    return y


def _direct_launch(x, tag: str):
    y = torch.empty(x.shape, device=x.device)
    _add_one[(1,)](x, y, x.numel(), 0, BLOCK=64)
    return y


def _address_as_int(x, tag: str):
    y = torch.empty(x.shape, device=x.device)
    kernel_launch.launch_call(_add_one, (1,), x, y, x.numel(), y.data_ptr(), BLOCK=64)
    return y


def _in_place(x, tag: str):
    y = torch.empty(x.shape, device=x.device)
    kernel_launch.launch_call(_add_one, (1,), x, y, x.numel(), 0, BLOCK=64)
    return y.mul_(2)


@pytest.mark.parametrize("impl, why", [
    (_through_kernel_launch, None), (_direct_launch, "1 launches, 0 through kernel_launch"),
    (_address_as_int, "an integer argument points into the call's tensors"),
    (_in_place, "aten.mul_.Tensor")], ids=lambda x: getattr(x, "__name__", str(x)))
def test_the_recorder_plans_only_what_it_can_replay(impl, why):
    run = call_plan.planned(impl)
    for i in range(5):
        x = torch.arange(50, dtype=torch.float32, device=DEV) * (i + 1)
        want = (x + 1) * (2 if impl is _in_place else 1)
        assert torch.equal(run(x, "empty"), want)
    assert [p is not None for p in call_plan._PLANS.values()] == [why is None]
    if impl is _direct_launch and not GPU:
        # the interpreter's own copies of the arguments are the first ops the recorder sees
        why = "aten.set_.source_Storage_storage_offset, aten.set_.source_Storage"
    assert call_plan.refusals() == ([] if why is None else [(impl.__name__, why)])


def test_an_allocation_shaped_after_a_tensor_is_replayed():
    run = call_plan.planned(_through_kernel_launch)
    for i in range(4):
        x = torch.arange(20, dtype=torch.float32, device=DEV) + i
        assert torch.equal(run(x, "empty_like"), x + 1)
    assert len(_planned_kinds()) == 1


@pytest.mark.parametrize("flag,plans", [("0", 0), (" 0 ", 0), ("1", 1), ("", 1)])
def test_fp8attn_plan_0_turns_plans_off(flag, plans, monkeypatch):
    monkeypatch.setenv("FP8ATTN_PLAN", flag)
    run = call_plan.planned(_through_kernel_launch)
    for i in range(4):
        x = torch.arange(20, dtype=torch.float32, device=DEV) + i
        assert torch.equal(run(x, "empty_like"), x + 1)
    assert len(_planned_kinds()) == plans and (plans or not call_plan._SEEN)


def test_a_new_kind_of_call_is_recorded_on_its_own():
    run = call_plan.planned(_through_kernel_launch)
    for n in (10, 10, 10, 30, 30, 30, 10):
        x = torch.rand(n, device=DEV)
        assert torch.equal(run(x, "empty"), x + 1)
    assert len(_planned_kinds()) == 2


# ---------------------------------------------------------------------------------------------
# the compiled-kernel path: pointers as integers, TMA descriptors over the new tensors

class _Compiled:
    """A stand-in for Triton's CompiledKernel[grid]: records its arguments, and tells the
    recorder it launched (Triton's launch hook)."""
    calls: list = []

    def __getitem__(self, grid):
        def runner(*args):
            _Compiled.calls.append(args)
            rec = call_plan.recording()
            if rec is not None:
                rec.count()
        return runner


class _FakeJit:
    def __init__(self, names):
        self.params = [type("P", (), dict(name=n, has_default=False, default=None))()
                       for n in names]

    def __getitem__(self, grid):
        return lambda **kwargs: _Compiled()


class _Desc:
    def __init__(self, base, block_shape):
        self.base, self.block_shape, self.shape = base, block_shape, list(base.shape)


def test_replayed_launches_get_the_new_tensors_addresses(monkeypatch):
    monkeypatch.setattr(call_plan, "_count_launches", lambda rec: (lambda: None))
    monkeypatch.delenv("FP8ATTN_FAST_LAUNCH", raising=False)
    kernel_launch.clear()
    _Compiled.calls = []
    kern = _FakeJit(["x", "tail", "desc", "n", "w", "w_desc"])

    def impl(x):
        y = torch.empty(8, 4, device=x.device)
        # intermediates: replayed from one workspace, 512-byte aligned (w: 80 bytes)
        w, w2 = torch.empty(5, 4, device=x.device), torch.empty(3, 4, device=x.device)
        kernel_launch.launch(kern, (2,), ("k",), dict(x=x, tail=y[4:], desc=_Desc(x[1:], [2, 4]),
                                                      n=7, w=w, w_desc=_Desc(w2[1:], [2, 4])))
        return y
    run = call_plan.planned(impl)
    xs = [torch.rand(6, 4, device=DEV) for _ in range(4)]
    ys = [run(x) for x in xs]
    (plan,) = _planned_kinds()
    assert [s[0] for s in plan.steps] == ["alloc", "alloc", "runner"]     # workspace, y
    # calls: the JIT's first (not recorded here), the direct launch recorded, two replays
    for x, y, args in zip(xs[2:], ys[2:], _Compiled.calls[-2:]):
        xp, tail, desc, n, w, w_desc = args
        assert xp == x.data_ptr() and tail == y[4:].data_ptr() and n == 7
        assert desc.base.data_ptr() == x[1:].data_ptr() and desc.block_shape == [2, 4]
        assert w % call_plan.WORKSPACE_ALIGN == 0 or DEV == "cpu"
        assert w_desc.base.data_ptr() - w == call_plan.WORKSPACE_ALIGN + 16


def _copies(x, tag: str):
    # a clone of a transposed input (`.contiguous()`), a kernel into a wider buffer, then its
    # part copied into the output (gluon_fwd's padded head dims), the output's tail zeroed
    xc = x.t().contiguous()
    wide = torch.zeros(xc.numel() + 3, device=x.device)
    kernel_launch.launch_call(_add_one, (1,), xc, wide[3:], xc.numel(), 0, BLOCK=64)
    out = torch.empty(xc.numel() + 2, device=x.device)
    out[-2:].zero_()
    out[:-2].copy_(wide[3:])
    return out


def _copy_into_input(x, tag: str):
    y = _through_kernel_launch(x, tag)
    x.copy_(y)              # writes the caller's tensor: not the call's own, no plan
    return y


def test_copies_between_the_calls_own_tensors_are_replayed():
    run = call_plan.planned(_copies)
    for i in range(4):
        x = torch.rand(4, 6, device=DEV)
        want = torch.cat([x.t().flatten() + 1, torch.zeros(2, device=DEV)])
        assert torch.equal(run(x, ""), want)
    assert len(_planned_kinds()) == 1
    run = call_plan.planned(_copy_into_input)
    for i in range(4):
        x = torch.rand(8, device=DEV)
        assert torch.equal(run(x.clone(), "empty"), x + 1)
    assert [p is not None for p in call_plan._PLANS.values()] == [True, False]


def test_inputs_sharing_a_buffer_and_inputs_that_do_not_are_different_kinds():
    # q, k, v views of one packed (B, S, 3, H, D) buffer, then of three buffers with the same
    # shapes, strides and offsets: a plan recorded on the first must not read the second's
    # k and v from q's buffer
    g = torch.Generator().manual_seed(5)

    def packed(i):
        return torch.randn(1, 40, 3, 2, 64, generator=g).to(DEV, torch.bfloat16).unbind(2)[i]
    for _ in range(3):
        qkv = torch.randn(1, 40, 3, 2, 64, generator=g).to(DEV, torch.bfloat16).unbind(2)
        fp8attn.flash_attn_func(*qkv, causal=True)
    assert len(_planned_kinds()) == 1
    for _ in range(3):
        q, k, v = packed(0), packed(1), packed(2)
        assert _same(fp8attn.flash_attn_func(q, k, v, causal=True),
                     _unplanned(fp8attn.flash_attn_func, q, k, v, causal=True))


def test_intermediates_come_from_one_workspace_and_outputs_from_their_own():
    g = torch.Generator().manual_seed(10)
    outs = []
    for _ in range(4):
        q, k, v = (torch.randn(1, 64, 2, 64, generator=g).to(DEV, torch.bfloat16)
                   for _ in range(3))
        out, lse = fp8attn.flash_attn_func(q, k, v, causal=True, return_lse=True)
        assert _same(out, _unplanned(fp8attn.flash_attn_func, q, k, v, causal=True))
        outs.append((out, lse))
    (plan,) = _planned_kinds()
    allocs = [s for s in plan.steps if s[0] == "alloc"]
    # the workspace (q8, k8, V^T and their descales), the output and the LSE
    assert len(allocs) == 3 and allocs[0][2][0] % call_plan.WORKSPACE_ALIGN == 0
    for out, lse in outs[2:]:           # replayed: each output owns exactly its bytes
        for t in (out, lse):
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _random_offsets(g, total, nseq, device):
    """nseq + 1 int32 offsets splitting total rows at random (empty sequences possible)."""
    cuts = torch.sort(torch.randint(0, total + 1, (nseq - 1,), generator=g)).values
    return torch.cat([torch.tensor([0]), cuts, torch.tensor([total])]).to(device, torch.int32)


def _varlen_args(g, total_q, total_k, hq, hkv, d, nseq, device, fp8=False):
    """(positional arguments, keyword descales) of a varlen call on new data and new random
    offsets (self-attention, total_q == total_k: one offsets tensor for both, as models pass
    it); bf16, or e4m3 with descales per sequence and head."""
    dtype = torch.float8_e4m3fn if fp8 else torch.bfloat16
    q = torch.randn(total_q, hq, d, generator=g).to(device).to(dtype)
    k, v = (torch.randn(total_k, hkv, d, generator=g).to(device).to(dtype) for _ in range(2))
    cu_q = _random_offsets(g, total_q, nseq, device)
    cu_k = cu_q if total_q == total_k else _random_offsets(g, total_k, nseq, device)
    descales = {} if not fp8 else dict(
        q_descale=torch.rand(nseq, hq, generator=g).to(device) + 0.5,
        k_descale=torch.rand(nseq, hkv, generator=g).to(device) + 0.5,
        v_descale=torch.rand(nseq, hkv, generator=g).to(device) + 0.5)
    return (q, k, v, cu_q, cu_k, total_q, total_k), descales


@pytest.mark.parametrize("total_q,total_k,causal,align", [
    (300, 300, True, "1"), (150, 260, False, "1"), (150, 260, True, "0")])
def test_a_varlen_plan_holds_for_other_offsets_of_the_same_shape(total_q, total_k, causal, align,
                                                                 monkeypatch):
    # the plan replays the device work only (the layout kernel reads the offsets), so each
    # call's new offsets give the bits of the unplanned call on them; max_seqlen_q is part of
    # the kind, so it is held at the total here. FP8ATTN_VARLEN_ALIGN=1: K and V in padded
    # rows (the layout kernel's tables; unset, these short sequences stay packed)
    monkeypatch.setenv("FP8ATTN_VARLEN_ALIGN", align)
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        args, _ = _varlen_args(g, total_q, total_k, 2, 2, 64, 3, DEV)
        got = fp8attn.flash_attn_varlen_func(*args, causal=causal, return_lse=True)
        want = _unplanned(fp8attn.flash_attn_varlen_func, *args, causal=causal,
                          return_lse=True)
        assert all(_same(x, y) for x, y in zip(got, want))
    assert len(_planned_kinds()) == 1, call_plan.refusals()


@pytest.mark.parametrize("total_q,total_k,causal", [(300, 300, True), (150, 260, False)])
def test_an_fp8_varlen_plan_holds_for_other_offsets(total_q, total_k, causal):
    # pre-quantised varlen inputs: K / V packed by one kernel, Q's per-row descales by another
    # (row_descales), so the plan holds for new offsets and descales of the same shapes
    g = torch.Generator().manual_seed(12)
    for _ in range(4):
        args, descales = _varlen_args(g, total_q, total_k, 2, 1, 64, 3, DEV, fp8=True)
        got = fp8attn.flash_attn_varlen_func(*args, causal=causal, **descales)
        want = _unplanned(fp8attn.flash_attn_varlen_func, *args, causal=causal, **descales)
        assert _same(got, want)
    assert len(_planned_kinds()) == 1, call_plan.refusals()


def test_varlen_offsets_are_still_checked_on_a_planned_kind():
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(200, 2, 64, generator=g).to(DEV, torch.bfloat16) for _ in range(3))
    for _ in range(3):
        cu = _random_offsets(g, 200, 3, DEV)
        fp8attn.flash_attn_varlen_func(q, k, v, cu, cu, 200, 200)
    assert len(_planned_kinds()) == 1
    bad = torch.tensor([0, 150, 120, 200], dtype=torch.int32, device=DEV)   # decreasing
    with pytest.raises(ValueError, match="never decrease"):
        fp8attn.flash_attn_varlen_func(q, k, v, bad, bad, 200, 200)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [96, 128])
def test_gpu_planned_calls_on_the_gluon_kernel(d):
    # 2k keys: the Gluon kernel takes bf16 calls at head dims 96 (padded to the 128 kernel) and
    # 128, and FP8 inputs at 128 (Q and K copied by head first)
    from fp8attn.attention import gluon_dispatch
    assert gluon_dispatch.enabled()
    g = torch.Generator(device="cuda").manual_seed(6)
    for _ in range(4):
        q, k, v = (torch.randn(2, 2048, 4, d, device="cuda", generator=g, dtype=torch.bfloat16)
                   for _ in range(3))
        for causal in (False, True):
            assert _same(fp8attn.flash_attn_func(q, k, v, causal=causal),
                         _unplanned(fp8attn.flash_attn_func, q, k, v, causal=causal))
        if d == 128:
            q8, k8, v8 = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
            got = fp8attn.flash_attn_func(q8, k8, v8, causal=True)
            assert _same(got, _unplanned(fp8attn.flash_attn_func, q8, k8, v8, causal=True))
    assert len(_planned_kinds()) == (3 if d == 128 else 2), list(call_plan._PLANS.values())


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_varlen_plans_on_new_offsets(d):
    # hdim 128: the Gluon kernel's varlen items (query tiles from the layout kernel); 64: the
    # Triton kernel. New offsets every call, self-attention and cross
    g = torch.Generator().manual_seed(9)
    for _ in range(4):
        for total_q, total_k, causal in ((4096, 4096, True), (4096, 4096, False),
                                         (1024, 3000, False)):
            # bf16; at 128 also pre-quantised (the Gluon kernel, Q copied by head)
            for fp8 in (False, True) if d == 128 else (False,):
                args, descales = _varlen_args(g, total_q, total_k, 4, 2, d, 4, "cuda", fp8)
                got = fp8attn.flash_attn_varlen_func(*args, causal=causal, **descales)
                assert _same(got, _unplanned(fp8attn.flash_attn_varlen_func, *args,
                                             causal=causal, **descales))
    assert len(_planned_kinds()) == (6 if d == 128 else 3), call_plan.refusals()
