"""Launch on the inputs' GPU.

Triton launches a kernel on the *current* CUDA device and its current stream, whatever device
the tensors passed to it live on (triton/runtime/jit.py: `driver.active.get_current_device()`).
A model spread over several GPUs in one process (accelerate's device_map="auto", pipeline
stages) calls attention with inputs on a GPU that need not be the current one; the kernels
would then run on the wrong GPU with pointers into another one's memory. Every public entry
point that launches kernels runs under its first tensor's device instead, as torch's own ops
do."""
from __future__ import annotations

import functools

import torch


def on_inputs_device(fn):
    """fn(x, ...) run with x's CUDA device current (and so that device's current stream); a
    no-op off CUDA, when it is current already, and for an x that is not a tensor (fn's own
    checks say what is wrong with it)."""
    @functools.wraps(fn)
    def run(x, *args, **kwargs):
        if (isinstance(x, torch.Tensor) and x.is_cuda
                and x.device.index != torch.cuda.current_device()):
            with torch.cuda.device(x.device):
                return fn(x, *args, **kwargs)
        return fn(x, *args, **kwargs)
    return run
