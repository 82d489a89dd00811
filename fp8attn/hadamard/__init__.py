"""Fast Walsh-Hadamard transform: torch reference and Triton kernel behind one function."""
from .reference import (fwht_reference, hadamard_matrix, hadamard_signs, is_supported_dim,
                        random_hadamard_reference, split_dim)


def hadamard_transform(x, *, inverse=False):
    return fwht_reference(x, inverse=inverse)


def random_hadamard_transform(x, seed, *, inverse=False):
    return random_hadamard_reference(x, hadamard_signs(x.shape[-1], seed, x.device), inverse=inverse)
