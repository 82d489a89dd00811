"""Fast Walsh-Hadamard transform: reference against scipy / the Kronecker matrix, Triton kernel
(through the interpreter on the CPU) against the reference, randomized variant, errors."""
import math
import os

import pytest
import scipy.linalg
import torch

from fp8attn.hadamard import (fwht_reference, hadamard_matrix, hadamard_signs, hadamard_transform,
                              is_supported_dim, random_hadamard_reference,
                              random_hadamard_transform, split_dim)
from fp8attn.hadamard.reference import small_hadamard

SUPPORTED = [d for d in range(1, 1100) if is_supported_dim(d)]
POW2 = [2 ** k for k in range(1, 11)]
KRON = [d for d in SUPPORTED if d not in POW2]
# unit roundoff of the output dtype
UNIT = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8,
        torch.float64: 2.0 ** -53}


def test_supported_sizes_are_the_documented_ones():
    assert POW2 == [d for d in SUPPORTED if d & (d - 1) == 0]
    assert KRON == sorted([12 * 2 ** k for k in range(7)] + [20 * 2 ** k for k in range(6)])
    assert SUPPORTED[-1] == 1024 and SUPPORTED[0] == 2


@pytest.mark.parametrize("d", POW2)
def test_reference_matches_scipy(d):
    h = torch.from_numpy(scipy.linalg.hadamard(d)).double() / math.sqrt(d)
    assert (hadamard_matrix(d) - h).abs().max() <= 1e-12
    x = torch.randn(7, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    assert (fwht_reference(x) - x @ h.T).abs().max() <= 1e-12


@pytest.mark.parametrize("d", KRON)
def test_reference_matches_kronecker_matrix(d):
    m, p = split_dim(d)
    hm = small_hadamard(m)
    assert torch.equal(hm @ hm.T, m * torch.eye(m, dtype=torch.float64))     # a Hadamard matrix
    h = torch.kron(hm, torch.from_numpy(scipy.linalg.hadamard(p)).double()) / math.sqrt(d)
    assert (hadamard_matrix(d) - h).abs().max() <= 1e-12
    assert (h @ h.T - torch.eye(d, dtype=torch.float64)).abs().max() <= 1e-12
    x = torch.randn(7, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    assert (fwht_reference(x) - x @ h.T).abs().max() <= 1e-12


@pytest.mark.parametrize("d", SUPPORTED)
def test_inverse_undoes_forward(d):
    x = torch.randn(3, 5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    assert (hadamard_transform(hadamard_transform(x), inverse=True) - x).abs().max() <= 1e-12
    assert (hadamard_transform(hadamard_transform(x, inverse=True)) - x).abs().max() <= 1e-12


@pytest.mark.parametrize("d", [2, 12, 64, 80, 128, 1024])
def test_random_rotation_preserves_qk_and_inverts(d):
    g = torch.Generator().manual_seed(100 + d)
    q = torch.randn(2, 9, d, dtype=torch.float64, generator=g)
    k = torch.randn(2, 11, d, dtype=torch.float64, generator=g)
    qr, kr = random_hadamard_transform(q, 7), random_hadamard_transform(k, 7)
    ref = q @ k.transpose(-1, -2)
    assert (qr @ kr.transpose(-1, -2) - ref).abs().max() <= 1e-12 * d
    assert (random_hadamard_transform(qr, 7, inverse=True) - q).abs().max() <= 1e-12
    assert not torch.allclose(qr, hadamard_transform(q))      # the signs do something (d >= 2)


def test_signs_reproducible_and_seeded():
    a, b = hadamard_signs(128, 3), hadamard_signs(128, 3)
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(a, hadamard_signs(128, 4))


# ---- Triton kernel (interpreter on the CPU) ----

# The interpreter's float32 -> bf16/fp16 cast truncates instead of rounding to nearest: one ulp there.
OUT_ROUNDING_ULPS = 1.0 if os.environ.get("TRITON_INTERPRET") == "1" else 0.5


def _kernel_tolerance(x: torch.Tensor, ref: torch.Tensor, dtype) -> torch.Tensor:
    """Output rounding (half an ulp of |ref| on the GPU, one in the interpreter) plus float32 butterfly
    rounding, which grows like log2(d) + m unit roundoffs of the row's 2-norm (|y|_2 == |x|_2)."""
    d = x.shape[-1]
    m, p = split_dim(d)
    row_norm = x.double().norm(dim=-1, keepdim=True)
    butterfly = 2 * (math.log2(p) + m + 2) * 2.0 ** -24 * row_norm
    return 2.02 * OUT_ROUNDING_ULPS * UNIT[dtype] * ref.abs() + butterfly


SIZES_KERNEL = POW2 + [12, 24, 96, 192, 768, 20, 80, 160, 320, 640]


@pytest.mark.parametrize("d", SIZES_KERNEL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_reference(d, dtype, device):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(3, 5, d, generator=g).to(dtype)
    for inverse in (False, True):
        y = hadamard_transform(x.to(device), inverse=inverse, backend="triton").cpu()
        assert y.dtype == dtype and y.shape == x.shape
        ref = fwht_reference(x.double(), inverse=inverse)
        err = (y.double() - ref).abs()
        assert (err <= _kernel_tolerance(x, ref, dtype)).all(), (d, dtype, inverse, err.max())


@pytest.mark.parametrize("d", [8, 96, 160, 256])
def test_triton_random_and_float64(d, device):
    g = torch.Generator().manual_seed(d + 1)
    x = torch.randn(2, 3, 7, d, dtype=torch.float64, generator=g).to(device)
    y = random_hadamard_transform(x, 5, backend="triton")
    ref = random_hadamard_reference(x, hadamard_signs(d, 5, device))
    assert (y - ref).abs().max() <= 1e-12
    back = random_hadamard_transform(y, 5, inverse=True, backend="triton")
    assert (back - x).abs().max() <= 1e-12


def test_triton_strided_and_empty_inputs(device):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 5, dtype=torch.float32, generator=g).to(device)
    x = base.T                                       # last dim strided: (5, 64) with stride (1, 5)
    y = hadamard_transform(x, backend="triton")
    ref = fwht_reference(x.cpu().double())
    assert (y.cpu().double() - ref).abs().max() <= 1e-5
    e = torch.empty(0, 32, device=device)
    assert hadamard_transform(e, backend="triton").shape == (0, 32)


@pytest.mark.parametrize("bad", [1, 3, 6, 36, 48 * 3, 100, 2048, 1280])
def test_unsupported_sizes_raise(bad):
    x = torch.zeros(2, bad)
    for backend in (None, "torch", "triton"):
        with pytest.raises(ValueError, match=f"unsupported Hadamard size {bad}"):
            hadamard_transform(x, backend=backend)
    with pytest.raises(ValueError):
        random_hadamard_transform(x, 0)


def test_bad_dtypes_and_backend_raise():
    with pytest.raises(TypeError, match="int64"):
        hadamard_transform(torch.zeros(2, 8, dtype=torch.int64), backend="triton")
    with pytest.raises(TypeError, match="float8"):
        hadamard_transform(torch.zeros(2, 8).to(torch.float8_e4m3fn))
    with pytest.raises(TypeError):
        hadamard_transform([1.0, 2.0])
    with pytest.raises(ValueError, match="backend"):
        hadamard_transform(torch.zeros(2, 8), backend="cuda")


@pytest.mark.gpu
def test_gpu_large_rows_bf16():
    g = torch.Generator().manual_seed(3)
    for d in (64, 128, 96, 256):
        x = torch.randn(4099, d, generator=g).to(torch.bfloat16)
        y = hadamard_transform(x.cuda()).cpu()
        ref = fwht_reference(x.double())
        assert ((y.double() - ref).abs() <= _kernel_tolerance(x, ref, torch.bfloat16)).all()


@pytest.mark.parametrize("d", [2, 32, 128, 1024, 12, 160])
def test_triton_butterfly_orders_agree(d, device):
    """Both stage orders of `sylvester_rows` compute the same transform (float64: to rounding)."""
    from fp8attn.hadamard.triton import hadamard_transform_triton
    x = torch.randn(5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d)).to(device)
    ref = fwht_reference(x)
    for butterfly in (0, 1):
        assert (hadamard_transform_triton(x, butterfly=butterfly) - ref).abs().max() <= 1e-12
