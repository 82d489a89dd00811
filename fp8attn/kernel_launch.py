"""Launching a Triton or Gluon kernel again, for a call of the same kind, without Triton's per-call
argument binding.

`kernel[grid](...)` runs Triton's binder on every call: it specialises each argument (the Gluon
attention kernel has ~57) to find the compiled kernel in its cache, on the host, before the launch.
At 1k keys a Gluon call's host work, this binding among it, was as long as its GPU work (H200,
session 11), so every timing of such a call measured the host. `launch` runs the JIT path the
first time it sees a key and keeps the compiled kernel it returned; later calls with that key go
straight to the compiled kernel's launcher (`CompiledKernel[grid]`, Triton's own entry point for
a compiled kernel), the arguments in the kernel's parameter order. Same kernel, same arguments:
the same bits.

The caller's key must fix everything Triton specialises a kernel on, so that the JIT would pick
the same compiled kernel: every constexpr, every integer argument's value, every pointer's dtype
and 16-byte alignment, every tensor descriptor's block shape, layout, dtype and base alignment,
the launch options (num_warps, ...), and the device.

`launch_call` builds that key from the arguments themselves, for kernels whose launches are
not worth a plan of their own (the quantiser's, the tl attention kernel's, the FP8-input layout
kernels'): on the H200's host, Triton's binding took about 100 us of a launch under cProfile
(session 33, results/probe_varlen_host_s33last.log), four launches a varlen call.

FP8ATTN_FAST_LAUNCH=0 sends every call through the JIT path (for debugging).

While `call_plan` records a call, `launch` and `launch_call` hand it each launch: a compiled
kernel's launcher and its arguments in order (under the interpreter: the kernel, grid and
arguments). A launch through Triton's JIT path rules the plan out."""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

from .call_plan import recording

_Tensor = torch.Tensor    # bound once: spec_key looks it up for every argument of every launch
MAX_ENTRIES = 512       # (kernel, key, grid) entries kept; the oldest is dropped beyond
_RUNNERS: OrderedDict = OrderedDict()


def enabled() -> bool:
    return os.environ.get("FP8ATTN_FAST_LAUNCH", "").strip() != "0"


def launch(kernel, grid: tuple, key, kwargs: dict) -> None:
    """kernel[grid](**kwargs), the first call of a (kernel, key, grid) through Triton's JIT, later
    ones through the compiled kernel it returned. key: hashable (see the module docstring), or
    None for the JIT path every time. kwargs: every argument by name, launch options included
    (options are fixed by the key: they are not passed again)."""
    rec = recording()
    entry = None if key is None or not enabled() else (id(kernel), key, grid)
    hit = None if entry is None else _RUNNERS.get(entry)
    if hit is not None and hit[0] is kernel:
        _, runner, names, defaults = hit
        values = [kwargs.get(n, d) for n, d in zip(names, defaults)]
        if rec is None:
            runner(*values)
        else:
            rec.launch(("runner", runner, values), lambda: runner(*values))
        return
    if rec is not None:
        rec.bad.append("a launch through Triton's JIT path")
    compiled = kernel[grid](**kwargs)
    if entry is not None and hasattr(compiled, "__getitem__") and hasattr(kernel, "params"):
        names = [p.name for p in kernel.params]
        defaults = [p.default if p.has_default else None for p in kernel.params]
        missing = [n for n, p in zip(names, kernel.params) if n not in kwargs and not p.has_default]
        if not missing:
            # CompiledKernel[grid] reads three grid dims (the JIT pads a shorter grid itself)
            _RUNNERS[entry] = (kernel, compiled[tuple(grid) + (1,) * (3 - len(grid))], names,
                               defaults)
            while len(_RUNNERS) > MAX_ENTRIES:
                _RUNNERS.popitem(last=False)


def launch_call(kernel, grid: tuple, *args, **kwargs) -> None:
    """kernel[grid](*args, **kwargs) through `launch`, keyed on the arguments (`spec_key`).
    kernel: a @triton.jit function (not an autotuner or heuristics wrapper: the caller picks
    the config and passes it, launch options included); grid: a tuple."""
    if not hasattr(kernel, "params"):        # Triton's interpreter: nothing to skip
        rec = recording()
        if rec is None:
            kernel[grid](*args, **kwargs)
        else:
            rec.launch(("interp", kernel, grid, args, kwargs),
                       lambda: kernel[grid](*args, **kwargs))
        return
    if args:
        kwargs = dict(zip(kernel.arg_names, args), **kwargs)
    launch(kernel, grid, spec_key(kwargs), kwargs)


def spec_key(kwargs: dict) -> tuple:
    """Everything Triton specialises a launch on, from its arguments: each tensor's dtype, its
    data's 16-byte alignment and (the first's) device; every other value with its type
    (integers by value cover Triton's == 1 and % 16 specialisations; floats by value, since
    constexprs can be floats); the names, in order."""
    # one comprehension: this runs for every launch (about 10 us for 35 arguments, CPU)
    parts = tuple([(v.dtype, v.data_ptr() % 16 == 0) if isinstance(v, _Tensor)
                   else (v.__class__, v) for v in kwargs.values()])   # True == 1 == 1.0 as keys
    device = None
    for v in kwargs.values():
        if isinstance(v, _Tensor):
            device = v.device
            break
    return tuple(kwargs), parts, device


def clear() -> None:
    """Forget every kept compiled kernel (the next call of each key takes the JIT path again)."""
    _RUNNERS.clear()
