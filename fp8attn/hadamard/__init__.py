"""Fast Walsh-Hadamard transform: torch reference and Triton kernel behind one function.

Backends: None picks the Triton kernel for CUDA tensors and the torch reference elsewhere;
"torch" forces the reference; "triton" forces the kernel (on the CPU it needs Triton's interpreter,
TRITON_INTERPRET=1 set before triton is imported, as tests/conftest.py does).
"""
from __future__ import annotations

import torch

from ..device_guard import on_inputs_device
from .reference import (fwht_reference, hadamard_matrix, hadamard_signs, is_supported_dim,
                        random_hadamard_reference, split_dim)

__all__ = [
    "fwht_reference", "hadamard_matrix", "hadamard_signs", "hadamard_transform", "is_supported_dim",
    "random_hadamard_reference", "random_hadamard_transform", "split_dim",
]

_BACKENDS = (None, "torch", "triton")


def _check(x, backend) -> str:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"hadamard_transform needs a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x) or x.element_size() == 1:
        raise TypeError(f"hadamard_transform needs a float16/bfloat16/float32/float64 tensor, got "
                        f"{x.dtype} (shape {tuple(x.shape)}, device {x.device})")
    if x.dim() < 1:
        raise ValueError("hadamard_transform needs at least one dimension, got a 0-d tensor")
    split_dim(x.shape[-1])
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend is None:
        return "triton" if x.is_cuda else "torch"
    return backend


@on_inputs_device
def hadamard_transform(x: torch.Tensor, *, inverse: bool = False, backend: str | None = None
                       ) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform along the last dim: y = x @ H_d.T (H_d of
    `hadamard_matrix(d)`), O(d log d). x: (..., d) float, d in {2**k, 12*2**k, 20*2**k}, 2 <= d <= 1024.
    Returns a tensor of x's shape and dtype (computed in float32, float64 for float64 inputs)."""
    if _check(x, backend) == "torch":
        return fwht_reference(x, inverse=inverse)
    from .triton import hadamard_transform_triton
    return hadamard_transform_triton(x, inverse=inverse)


@on_inputs_device
def random_hadamard_transform(x: torch.Tensor, seed: int, *, inverse: bool = False,
                              backend: str | None = None) -> torch.Tensor:
    """y = fwht(x * signs) with signs = hadamard_signs(d, seed); inverse: x = fwht^-1(y) * signs.
    The same seed rotates Q and K identically, so (Q R)(K R)^T = Q K^T. x: (..., d) float."""
    which = _check(x, backend)
    signs = hadamard_signs(x.shape[-1], seed, x.device)
    if which == "torch":
        return random_hadamard_reference(x, signs, inverse=inverse)
    from .triton import hadamard_transform_triton
    return hadamard_transform_triton(x, signs, inverse=inverse)
