"""Replaying a public call's kernel launches, for a call of a kind already seen, without the
Python that decided them.

An eager bf16 attention call spends most of its host time in this package's own Python: the
dispatch decisions, the quantiser's and the attention kernel's launch set-up (about 955
Python function calls a call under cProfile, H200 host, session 38). Up to 8 x 2048 tokens that
host time was longer than the GPU work. For a given kind of call (every argument's shape,
strides, dtype, device, storage offset and 16-byte alignment (what Triton and
this package decide on), which of them share a buffer, every other argument's value, the environment
variables the package reads) that Python always ends in the same launches with the same
arguments, except for where the tensors live.

`planned(impl)` wraps an implementation function. The first call of a kind runs it as it is
(it compiles and autotunes). The second runs it under a recorder:
  - a TorchDispatchMode sees every aten op. Allowed: allocations (empty, zeros, full, ...),
    views, and fills, copies and clones of the call's own tensors on one device (replayed on
    the new ones). Any other op means the kind gets no plan: arithmetic, a copy into the
    caller's tensor, a copy to the host or any host read such as `.item()` (the host would
    decide on values).
  - `kernel_launch` hands over each launch it makes through a compiled kernel's launcher, with
    its arguments in order (or, under Triton's interpreter, the kernel, grid and arguments).
  - Triton's launch hook (on the GPU) or the interpreter's grid executor counts every launch.
    A launch that did not come through `kernel_launch` means no plan.
Each tensor argument of a recorded launch is then located: a byte offset into one of the
call's inputs or into one of its allocations, or, for a tensor that existed before the call
(a cached device table), a constant that the plan keeps alive. An integer argument that
points into any of those means no plan. Later calls of the kind then:
  - allocate afresh (outputs are never shared between calls);
  - launch the recorded kernels with the pointers moved to the new tensors;
  - return the new outputs.
Same kernels, same arguments: the same bits (tests/test_call_plan.py; GPU: test_api).

Only eager calls on CUDA tensors are planned, and CPU calls under TRITON_INTERPRET=1 (for the
tests). On CUDA every host read of a value is an aten op (a copy to the host, `.item()`);
on the CPU, `.numpy()` and `.tolist()` read without one, which is why CPU calls outside the
interpreter's tests are never planned, and why only functions that read no values on the
host are wrapped: a varlen call checks `cu_seqlens` on the host first and plans only its
device work (attention/ops.py), whose kernels read the offsets themselves. The call's
uninitialised intermediates come from one workspace allocation at replay (_one_workspace).
A CUDA-graph capture takes the full path. FP8ATTN_PLAN=0 turns plans off, and
`clear()` forgets them; `refusals()` says why recent kinds got none. A change the key cannot see needs `clear()`, such as a monkeypatched
module attribute in a test.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MAX_PLANS = 256         # kinds of call kept (the least recently used dropped beyond)
MAX_SEEN = 4096         # kinds counted before a plan (all forgotten beyond: shapes that change
                        # every call, as a decode loop's, must not grow it without bound)
TRIES = 2               # recordings that may fail before a kind is run without a plan for good
# every environment variable the package reads (tests/test_call_plan.py checks the source for
# others): a plan holds the decisions they steered
ENV_NAMES = ("TRITON_INTERPRET", "FP8ATTN_BACKEND", "FP8ATTN_GLUON", "FP8ATTN_FAST_LAUNCH",
             "FP8ATTN_TUNE", "FP8ATTN_VARLEN_ALIGN", "FP8ATTN_QUANT_LAYOUT",
             "FP8ATTN_QUANT_SOFT", "FP8ATTN_QUANT_STORE2D", "FP8ATTN_PLAN")
_PLAN_FLAG = ENV_NAMES.index("FP8ATTN_PLAN")      # read from the key's tuple: one read a call

_PLANS: OrderedDict = OrderedDict()     # key -> _Plan, or None: this kind runs unplanned
_SEEN: dict = {}                        # key -> calls so far (before it has a plan)
_REFUSALS: OrderedDict = OrderedDict()  # (function name, why) of recordings without a plan
_LOCAL = threading.local()              # .recorder: the _Recorder of this thread's recording

_aten = torch.ops.aten
# allocations, replayed through torch's own functions of the same schema (the OpOverload's
# Python __call__ costs about as much again)
_ALLOCS = {_aten.empty.memory_format: torch.empty, _aten.empty_strided.default: torch.empty_strided,
           _aten.zeros.default: torch.zeros, _aten.full.default: torch.full,
           _aten.ones.default: torch.ones}
# allocations shaped after a tensor: replayed as torch.empty_strided of the output's layout
_ALLOCS_LIKE = {_aten.empty_like.default, _aten.new_empty.default}
_VIEWS = {_aten.view.default, _aten.view.dtype, _aten.transpose.int, _aten.permute.default,
          _aten.unsqueeze.default, _aten.squeeze.dim, _aten.squeeze.default,
          _aten.as_strided.default, _aten.slice.Tensor, _aten.select.int, _aten.expand.default,
          _aten.alias.default, _aten.detach.default, _aten.t.default, _aten._unsafe_view.default}
# device ops on the call's own tensors, replayed on the new ones: fills of its allocations (a
# padded buffer's tail zeroed), copies into them, and clones (`.contiguous()` of a transposed
# view; a clone's output is a new tensor of the call, as an allocation's)
_OPS = {_aten.zero_.default, _aten.fill_.Scalar, _aten.copy_.default, _aten.clone.default}
_IN_PLACE = {_aten.zero_.default, _aten.fill_.Scalar, _aten.copy_.default}
_Tensor = torch.Tensor

try:
    _ENV_DATA = os.environ._data                        # CPython: the bytes-keyed dict behind
    _ENV_KEYS = tuple(os.environ.encodekey(n) for n in ENV_NAMES)
except AttributeError:                                  # pragma: no cover (other Pythons)
    _ENV_DATA, _ENV_KEYS = None, ()


def _env() -> tuple:
    if _ENV_DATA is not None:
        return tuple(map(_ENV_DATA.get, _ENV_KEYS))     # ~0.3 us against ~1 us a name
    return tuple(map(os.environ.get, ENV_NAMES))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _off(flag) -> bool:
    """Whether FP8ATTN_PLAN's value (str, or bytes from _ENV_DATA; None if unset) is "0"."""
    return flag is not None and flag.strip() in ("0", b"0")


def clear() -> None:
    """Forget every plan and refusal (the next two calls of each kind take the full path
    again)."""
    _PLANS.clear()
    _SEEN.clear()
    _REFUSALS.clear()


def planned(impl):
    """impl(*args) (positional tensors and plain values) with its launches replayed for kinds of
    call already recorded; see the module docstring."""
    @functools.wraps(impl)
    def run(*args):
        first = args[0]
        env = _env()
        if not (first.is_cuda or _interpreting()) or _off(env[_PLAN_FLAG]) or (
                first.is_cuda and torch.cuda.is_current_stream_capturing()):
            return impl(*args)
        key = (impl, env, tuple([
            (a.shape, a.stride(), a.dtype, a.device, a.storage_offset(), a.data_ptr() % 16)
            if isinstance(a, _Tensor) else (a.__class__, a) for a in args]), _shared(args))
        plan = _PLANS.get(key, False)
        if plan:
            _PLANS.move_to_end(key)
            return plan.replay(args)
        if plan is None:
            return impl(*args)
        seen = _SEEN.get(key, 0)
        if len(_SEEN) >= MAX_SEEN:
            _SEEN.clear()
        _SEEN[key] = seen + 1
        if seen == 0 or seen > TRIES or recording() is not None:
            return impl(*args)
        result, plan = _record(impl, args)
        if plan is not None or seen == TRIES:
            _PLANS[key] = plan
            _SEEN.pop(key, None)
            while len(_PLANS) > MAX_PLANS:
                _PLANS.popitem(last=False)
        return result
    return run


def _shared(args: tuple) -> tuple:
    """Which tensor arguments share a buffer (q, k, v views of one packed projection): for
    each, the first argument with the same storage base address, its own index if none. A
    plan finds its tensors by buffer, so this is part of the kind."""
    bases = [a.data_ptr() - a.storage_offset() * a.element_size()
             if isinstance(a, _Tensor) else None for a in args]
    return tuple([bases.index(b) for b in bases])


def recording() -> "_Recorder | None":
    """The recorder of this thread's recording call, if one is running (kernel_launch)."""
    return getattr(_LOCAL, "recorder", None)


class _Recorder(TorchDispatchMode):
    """What one call does: its allocations (aten op, args, output), its launches, anything that
    rules a plan out (`bad`)."""

    def __init__(self):
        super().__init__()
        # in call order: ("alloc", torch function, args, kwargs, output), ("op", aten op,
        # args, kwargs, output if it is a new tensor (a clone) else None),
        # ("runner", runner, args) or ("interp", kernel, grid, args, kwargs)
        self.events: list = []
        self.bad: list = []
        self.paused = False
        self.counted = 0                # launches Triton saw

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and _composite(func):
            # under torch.inference_mode composite ops (`.to`, `reshape`) reach the mode whole,
            # no autograd key having decomposed them: record the ops they are made of
            with self:
                return func.decompose(*args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))
        if self.paused or func in _VIEWS:
            return out
        if func in _ALLOCS and isinstance(out, _Tensor):
            self.events.append(("alloc", _ALLOCS[func], args, kwargs or {}, out))
        elif func in _ALLOCS_LIKE and isinstance(out, _Tensor):
            self.events.append(("alloc", torch.empty_strided, (out.shape, out.stride()),
                                dict(dtype=out.dtype, device=out.device), out))
        elif func in _OPS:
            self.events.append(("op", func, args, kwargs or {},
                                None if func in _IN_PLACE else out))
        else:
            self.bad.append(str(func))
        return out

    def launch(self, entry: tuple, run) -> None:
        """Record a launch (kernel_launch's) and run it, aten ops inside unrecorded (the
        interpreter copies tensors)."""
        self.events.append(entry)
        self.paused = True
        try:
            run()
        finally:
            self.paused = False

    def count(self, *_args, **_kwargs) -> None:
        self.counted += 1


_COMPOSITE: dict = {}


def _composite(func) -> bool:
    """Whether an aten op is defined by other aten ops (a CompositeImplicitAutograd kernel)."""
    hit = _COMPOSITE.get(func)
    if hit is None:
        hit = _COMPOSITE[func] = torch._C._dispatch_has_kernel_for_dispatch_key(
            func.name(), torch._C.DispatchKey.CompositeImplicitAutograd)
    return hit


def _record(impl, args):
    """(impl(*args), its _Plan or None)."""
    rec = _Recorder()
    undo = _count_launches(rec)
    _LOCAL.recorder = rec
    try:
        with rec:
            result = impl(*args)
    finally:
        _LOCAL.recorder = None
        undo()
    recorded = sum(e[0] in ("runner", "interp") for e in rec.events)
    if rec.bad:
        why = ", ".join(dict.fromkeys(rec.bad))
    elif rec.counted != recorded:
        why = f"{rec.counted} launches, {recorded} through kernel_launch"
    else:
        try:
            return result, _Plan.build(rec, args, result)
        except _NoPlan as e:
            why = str(e)
    _refused(impl, why)
    return result, None


def _refused(impl, why: str) -> None:
    _REFUSALS[impl.__name__, why] = None
    _REFUSALS.move_to_end((impl.__name__, why))
    while len(_REFUSALS) > 32:
        _REFUSALS.popitem(last=False)


def refusals() -> list:
    """(function, reason) of the latest recordings that made no plan, oldest first: why a kind
    of call runs the full path (a debugging aid)."""
    return list(_REFUSALS)


def _count_launches(rec: _Recorder):
    """Have Triton count rec's launches (the GPU's launch hook, the interpreter's grid
    executor); returns the undo."""
    if _interpreting():
        from triton.runtime.interpreter import GridExecutor
        call = GridExecutor.__call__

        def counted(self, *a, **k):
            rec.count()
            return call(self, *a, **k)
        GridExecutor.__call__ = counted
        return lambda: setattr(GridExecutor, "__call__", call)
    from triton import knobs
    knobs.runtime.launch_enter_hook.add(rec.count)
    return lambda: knobs.runtime.launch_enter_hook.remove(rec.count)


class _NoPlan(Exception):
    pass


class _Addr:
    """A device address where Triton reads a tensor's `data_ptr()` (a TMA descriptor's base)."""
    __slots__ = ("ptr",)

    def __init__(self, ptr: int):
        self.ptr = ptr

    def data_ptr(self) -> int:
        return self.ptr


class _Arg:
    """A tensor argument of a replayed op: its view (_view's) of the call's sources."""
    __slots__ = ("view",)

    def __init__(self, view: tuple):
        self.view = view


class _Plan:
    """The steps of a kind of call, its tensors as (source, byte offset): source i < n_args is
    the call's i-th argument, the rest its allocations in order."""

    def __init__(self, steps, outputs, constants):
        # ("alloc", func, args, kwargs), ("op", func, args (tensors as views), kwargs, whether
        # its output is a new source),
        # ("runner", runner, values, pointers, descriptors) or
        # ("interp", kernel, grid, args, kwargs, views)
        self.steps = steps
        self.outputs = outputs          # ([source index or view], result is a tuple)
        self.constants = constants      # tensors from before the call, kept alive

    @classmethod
    def build(cls, rec: _Recorder, args: tuple, result):
        """The plan of a recording (raises _NoPlan with the reason where there is none)."""
        n_args = len(args)
        sources = [a if isinstance(a, _Tensor) else None for a in args]
        sources += [e[4] for e in rec.events if e[0] in ("alloc", "op") and e[4] is not None]
        by_storage = {}
        for i, t in enumerate(sources):
            if t is not None:
                by_storage.setdefault(t.untyped_storage()._cdata, i)
        spans = [(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                 for t in sources if t is not None]
        constants = []

        def locate(t: _Tensor):
            """(source, byte offset) of t, or (None, t) for a tensor from before the call."""
            i = by_storage.get(t.untyped_storage()._cdata)
            if i is None:
                constants.append(t)
                return None, t
            return i, t.data_ptr() - sources[i].data_ptr()

        def view_of(t: _Tensor) -> tuple:
            i, off = locate(t)
            if i is not None and (sources[i].storage_offset() * sources[i].element_size()
                                  + off) % t.element_size():
                raise _NoPlan("a view that does not start on an element of its dtype")
            return (i, off, t.dtype, tuple(t.shape), t.stride())

        def check_int(v) -> None:
            if isinstance(v, int) and not isinstance(v, bool) and v > 4096 and any(
                    lo <= v < lo + n for lo, n in spans):
                raise _NoPlan("an integer argument points into the call's tensors")

        steps = [cls._step(e, n_args, locate, view_of, check_int) for e in rec.events]
        outputs = []
        for t in result if isinstance(result, tuple) else (result,):
            i, off = locate(t) if isinstance(t, _Tensor) else (None, None)
            if i is None or i < n_args:
                raise _NoPlan("an output that is not one of the call's allocations")
            same = (off == 0 and t.dtype == sources[i].dtype and t.shape == sources[i].shape
                    and t.stride() == sources[i].stride())
            outputs.append(i if same else view_of(t))
        steps, outputs = _one_workspace(steps, outputs, sources, n_args)
        return cls(steps, (outputs, isinstance(result, tuple)), constants)

    @staticmethod
    def _step(event: tuple, n_args: int, locate, view_of, check_int) -> tuple:
        kind = event[0]
        if kind == "alloc":
            _, func, a, kw, _ = event
            return ("alloc", func, a, kw)
        if kind == "op":
            _, func, a, kw, out = event
            tensors = [x for x in a if isinstance(x, _Tensor)]
            if any(isinstance(x, _Tensor) for x in kw.values()) or len(
                    {x.device for x in tensors}) > 1:
                raise _NoPlan("a tensor keyword or a copy between devices")
            views = [_Arg(view_of(x)) if isinstance(x, _Tensor) else x for x in a]
            if out is None and (views[0].view[0] is None or views[0].view[0] < n_args):
                raise _NoPlan("an in-place op on a tensor that is not the call's own")
            return ("op", func, views, kw, out is not None)
        if kind == "runner":
            _, runner, values = event
            values, ptrs, descs = list(values), [], []
            for pos, v in enumerate(values):
                if isinstance(v, _Tensor):
                    i, off = locate(v)
                    if i is not None:
                        ptrs.append((pos, i, off))
                elif isinstance(getattr(v, "base", None), _Tensor) and hasattr(v, "block_shape"):
                    i, off = locate(v.base)         # a TMA descriptor
                    if i is not None:
                        descs.append((pos, i, off, v.__class__, dict(vars(v))))
                else:
                    check_int(v)
            return ("runner", runner, values, ptrs, descs)
        _, kernel, grid, a, kw = event
        views = {}
        for name, v in list(enumerate(a)) + list(kw.items()):
            if isinstance(v, _Tensor):
                views[name] = view_of(v)
            elif hasattr(v, "block_shape") or isinstance(v, (tuple, list)):
                raise _NoPlan("a descriptor or tuple argument under the interpreter")
            else:
                check_int(v)
        return ("interp", kernel, grid, list(a), dict(kw), views)

    def replay(self, args: tuple):
        sources = list(args)
        ptr = [a.data_ptr() if isinstance(a, _Tensor) else 0 for a in args]
        for step in self.steps:
            kind = step[0]
            if kind == "runner":
                _, runner, values, ptrs, descs = step
                values = values.copy()
                for pos, i, off in ptrs:
                    values[pos] = ptr[i] + off
                for pos, i, off, cls, fields in descs:
                    d = object.__new__(cls)
                    d.__dict__.update(fields)
                    d.base = _Addr(ptr[i] + off)
                    values[pos] = d
                runner(*values)
            elif kind == "alloc":
                t = step[1](*step[2], **step[3])
                sources.append(t)
                ptr.append(t.data_ptr())
            elif kind == "op":
                _, func, a, kw, new = step
                t = func(*[_view(sources, x.view) if isinstance(x, _Arg) else x for x in a], **kw)
                if new:
                    sources.append(t)
                    ptr.append(t.data_ptr())
            else:
                _, kernel, grid, a, kw, views = step
                a, kw = a.copy(), kw.copy()
                for name, view in views.items():
                    t = _view(sources, view)
                    if isinstance(name, int):
                        a[name] = t
                    else:
                        kw[name] = t
                kernel[grid](*a, **kw)
        outputs, is_tuple = self.outputs
        outs = [sources[o] if isinstance(o, int) else _view(sources, o) for o in outputs]
        return tuple(outs) if is_tuple else outs[0]


WORKSPACE_ALIGN = 512      # bytes between a workspace's tensors: the CUDA caching allocator's


def _one_workspace(steps: list, outputs: list, sources: list, n_args: int):
    """(steps, outputs) with the call's uninitialised intermediates (torch.empty allocations
    that are not outputs: the quantised Q / K / V, their descales, a varlen call's layout
    tables) carved from one allocation at the start: each torch.empty is a few microseconds of
    host time, and a varlen call makes eleven. Outputs stay allocations of their own (a view
    would keep the intermediates' memory alive). Sources are renumbered: the call's arguments,
    the workspace, then the other allocations and clones in order."""
    out_ids = {o if isinstance(o, int) else o[0] for o in outputs}
    ids = iter(range(n_args, len(sources)))
    # the source each step creates (allocations and clones, in order), else None
    made = [next(ids) if step[0] == "alloc" or (step[0] == "op" and step[4]) else None
            for step in steps]
    merged, size, device = {}, 0, None
    for step, i in zip(steps, made):
        t = sources[i] if i is not None else None
        if (step[0] == "alloc" and step[1] in (torch.empty, torch.empty_strided)
                and i not in out_ids and not step[3].get("pin_memory")
                and t.storage_offset() == 0 and device in (None, t.device)):
            device = t.device
            merged[i] = size
            size += -(-t.untyped_storage().nbytes() // WORKSPACE_ALIGN) * WORKSPACE_ALIGN
    if len(merged) < 2:
        return steps, outputs
    ws = n_args
    where = {i: (i, 0) for i in range(n_args)}
    nxt = n_args + 1
    for i in range(n_args, len(sources)):
        if i in merged:
            where[i] = (ws, merged[i])
        else:
            where[i], nxt = (nxt, 0), nxt + 1

    def moved(i, off):
        if i is None:
            return None, off
        j, base = where[i]
        return j, base + off

    def moved_view(view):
        i, off, *rest = view
        return (*moved(i, off), *rest)

    new_steps = [("alloc", torch.empty, (size,), dict(dtype=torch.uint8, device=device))]
    for step, i in zip(steps, made):
        kind = step[0]
        if kind == "alloc":
            if i not in merged:
                new_steps.append(step)
        elif kind == "op":
            _, func, views, kw, new = step
            new_steps.append(("op", func, [_Arg(moved_view(x.view)) if isinstance(x, _Arg)
                                           else x for x in views], kw, new))
        elif kind == "runner":
            _, runner, values, ptrs, descs = step
            new_steps.append(("runner", runner, values,
                              [(pos, *moved(i, off)) for pos, i, off in ptrs],
                              [(pos, *moved(i, off), c, f) for pos, i, off, c, f in descs]))
        else:
            _, kernel, grid, a, kw, views = step
            new_steps.append(("interp", kernel, grid, a, kw,
                              {n: moved_view(v) for n, v in views.items()}))
    new_outputs = [where[o][0] if isinstance(o, int) else moved_view(o) for o in outputs]
    return new_steps, new_outputs


def _view(sources: list, view: tuple) -> _Tensor:
    """The tensor (source, byte offset, dtype, shape, stride) names in this call's sources (a
    constant's tensor itself)."""
    i, off, dtype, shape, stride = view
    if i is None:
        return off
    base = sources[i]
    elem = (base.storage_offset() * base.element_size() + off) // dtype.itemsize
    return torch.empty(0, dtype=dtype, device=base.device).set_(
        base.untyped_storage(), elem, shape, stride)
