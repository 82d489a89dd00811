"""Triton fast Walsh-Hadamard transform: jit helpers shared by other kernels, and a launcher.

Layout of a row of size d = M * P (M in {1, 12, 20}, P = 2**k) inside a kernel: a register tile
[BLOCK_ROWS, M_PAD, P] (M_PAD = next power of two >= M, padded groups masked to zero on load),
element (r, j, p) being x[r, j * P + p]. `hadamard_tile` applies H_d = kron(H_M, Sylvester_P) / sqrt(d)
(the matrix of hadamard/reference.py): a butterfly of log2(P) stages on the P axis, then, for M > 1,
an M x M mix of the groups (O(M) work per element, never a d x d product).

Butterfly, two stage orders (BUTTERFLY, same result): 1 (default) is the textbook order, stage s
pairing x[i] with x[i + 2**s]. 0 is "constant geometry" (Pease): every stage takes the pairs
(x[i], x[i + P/2]) and writes (x[i] + x[i + P/2], x[i] - x[i + P/2]) to positions (2i, 2i + 1); each
stage applies H_2 to the top index bit and rotates the bits left by one, so after log2(P) stages every
bit got its H_2 and the bits are back in place (Sylvester's H_P in natural order).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..device_tables import cached_table
from .reference import small_hadamard, split_dim


@triton.jit
def sylvester_rows(x, N: tl.constexpr, P: tl.constexpr, LOG2_P: tl.constexpr,
                   BUTTERFLY: tl.constexpr = 1):
    """Unnormalised Sylvester transform of every row of a [N, P] float tile (P = 2**LOG2_P).

    BUTTERFLY picks one of two equivalent orders (how many register shuffles the compiler needs
    differs; benchmarks/bench_quant.py times both): 0 = constant geometry (module docstring);
    1 = the textbook order, stage s pairing x[i] with x[i + 2**s], low bits (held inside a thread)
    first.
    """
    if P > 1:
        for s in tl.static_range(LOG2_P):
            if BUTTERFLY == 0:
                x3 = tl.reshape(x, [N, 2, P // 2])                # (r, top bit, rest)
                a, b = tl.split(tl.permute(x3, [0, 2, 1]))        # a = x[i], b = x[i + P/2]
                x = tl.reshape(tl.join(a + b, a - b), [N, P])      # written to 2i, 2i + 1
            else:
                x4 = tl.reshape(x, [N, P // (2 << s), 2, 1 << s])  # (r, high bits, bit s, low bits)
                a, b = tl.split(tl.permute(x4, [0, 1, 3, 2]))
                x = tl.reshape(tl.permute(tl.join(a + b, a - b), [0, 1, 3, 2]), [N, P])
    return x


@triton.jit
def hadamard_tile(x, hm_ptr, BLOCK_ROWS: tl.constexpr, M: tl.constexpr, M_PAD: tl.constexpr,
                  P: tl.constexpr, LOG2_P: tl.constexpr, NORM: tl.constexpr,
                  BUTTERFLY: tl.constexpr = 1):
    """y = x @ H_d.T for a float32 tile x [BLOCK_ROWS, M_PAD, P] (d = M * P, padded groups zero).

    hm_ptr: float32 [M_PAD, M_PAD] row-major, the +-1 factor H_M (or H_M^T for the inverse), zero
    padded; unused when M == 1. NORM = 1 / sqrt(d). For M > 1 and float32 tiles the M x M factor is a
    tl.dot, so BLOCK_ROWS * P must be >= 16 there (float64 tiles take an exact loop instead).
    """
    y = tl.reshape(x, [BLOCK_ROWS * M_PAD, P])
    y = sylvester_rows(y, BLOCK_ROWS * M_PAD, P, LOG2_P, BUTTERFLY)
    y = tl.reshape(y, [BLOCK_ROWS, M_PAD, P])
    if M > 1:
        groups = tl.arange(0, M_PAD)
        if y.dtype == tl.float64:
            out = tl.zeros_like(y)
            for i in tl.static_range(M):
                h_row = tl.load(hm_ptr + i * M_PAD + groups)           # H_M[i, :]
                y_i = tl.sum(y * h_row[None, :, None], axis=1)         # [BLOCK_ROWS, P]
                out = tl.where(groups[None, :, None] == i, y_i[:, None, :], out)
            y = out
        else:
            # the m x m factor as a small product [rows * P, M_PAD] @ H_M^T (exact fp32 FMAs):
            # a loop of M sums over the group axis costs M cross-lane reductions instead
            h_t = tl.load(hm_ptr + groups[None, :] * M_PAD + groups[:, None])   # h_t[j, i] = H[i, j]
            y2 = tl.reshape(tl.permute(y, [0, 2, 1]), [BLOCK_ROWS * P, M_PAD])
            y2 = tl.dot(y2, h_t, input_precision="ieee")
            y = tl.permute(tl.reshape(y2, [BLOCK_ROWS, P, M_PAD]), [0, 2, 1])
    return y * NORM


@triton.autotune(
    configs=[triton.Config({"BLOCK_ROWS": r}, num_warps=w)
             for r, w in ((16, 4), (32, 4), (64, 4), (32, 8), (64, 8), (128, 8))],
    key=["D_PAD", "M", "HAS_SIGNS", "BUTTERFLY"],
    prune_configs_by={"early_config_prune": lambda configs, named_args, **kw:
                      _prune_rows(configs, {**named_args, **kw}["D_PAD"])},
)
@triton.jit
def _hadamard_kernel(x_ptr, y_ptr, signs_ptr, hm_ptr, n_rows, stride_xr, stride_yr,
                     M: tl.constexpr, M_PAD: tl.constexpr, P: tl.constexpr,
                     LOG2_P: tl.constexpr, D_PAD: tl.constexpr, NORM: tl.constexpr,
                     HAS_SIGNS: tl.constexpr, INVERSE: tl.constexpr, F64: tl.constexpr,
                     BUTTERFLY: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    """y[r] = H_d x[r] (or the inverse), optionally with signs: forward fwht(x * signs),
    inverse fwht^-1(x) * signs. Computes in float32 (float64 for float64 inputs)."""
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    groups = tl.arange(0, M_PAD)
    cols = tl.arange(0, P)
    col = groups[:, None] * P + cols[None, :]                          # [M_PAD, P]
    mask = (rows[:, None, None] < n_rows) & (groups[None, :, None] < M)
    x = tl.load(x_ptr + rows[:, None, None] * stride_xr + col[None, :, :], mask=mask, other=0.0)
    if F64:
        x = x.to(tl.float64)
    else:
        x = x.to(tl.float32)
    if HAS_SIGNS:
        sg = tl.load(signs_ptr + col, mask=groups[:, None] < M, other=0.0)
        if not INVERSE:
            x = x * sg[None, :, :]
    y = hadamard_tile(x, hm_ptr, BLOCK_ROWS, M, M_PAD, P, LOG2_P, NORM, BUTTERFLY)
    if HAS_SIGNS:
        if INVERSE:
            y = y * sg[None, :, :]
    tl.store(y_ptr + rows[:, None, None] * stride_yr + col[None, :, :],
             y.to(y_ptr.dtype.element_ty), mask=mask)


def _minimal_tuning() -> bool:
    import os
    return os.environ.get("FP8ATTN_TUNE", "").strip().lower() == "minimal"


def _prune_rows(configs, d_pad: int):
    """Keep tiles of at most 16K elements (register budget); one config under FP8ATTN_TUNE=minimal."""
    ok = [c for c in configs if c.kwargs["BLOCK_ROWS"] * d_pad <= 16384] or configs[:1]
    return ok[:1] if _minimal_tuning() else ok


# (m, device, transpose) -> table; device_tables.cached_table (never evicted).
_HM_CACHE: dict = {}


def _small_factor(m: int, device: str, transpose: bool) -> torch.Tensor:
    m_pad = triton.next_power_of_2(m)
    hm = torch.zeros(m_pad, m_pad, dtype=torch.float32)
    h = small_hadamard(m, dtype=torch.float32)
    hm[:m, :m] = h.T if transpose else h
    return hm.to(device)


def small_factor_tensor(m: int, device, *, transpose: bool = False) -> torch.Tensor:
    """float32 [M_PAD, M_PAD] zero-padded H_m (or H_m^T) on `device`, as `hadamard_tile` reads it.
    Built once per (m, device, transpose) outside any CUDA-graph pool; RuntimeError when first
    needed inside a CUDA-graph capture (a host-to-device copy: make a warm-up call first)."""
    device = str(torch.device(device))
    return cached_table(_HM_CACHE, (m, device, transpose), device, _small_factor, m, device,
                        transpose)


def tile_params(d: int) -> dict:
    """Compile-time constants of `hadamard_tile` for head dim d."""
    m, p = split_dim(d)
    return dict(M=m, M_PAD=triton.next_power_of_2(m), P=p, LOG2_P=p.bit_length() - 1,
                NORM=1.0 / math.sqrt(d))


# Stage order 1 ran 15-20% faster than 0 at head dims 128/256 (bf16, H200, Triton 3.6, 2026-11-22,
# benchmarks/bench_quant.py) and adds in the reference's order.
DEFAULT_BUTTERFLY = 1


def hadamard_transform_triton(x: torch.Tensor, signs: torch.Tensor | None = None, *,
                              inverse: bool = False, butterfly: int = DEFAULT_BUTTERFLY
                              ) -> torch.Tensor:
    """Launch `_hadamard_kernel` over the rows of x (..., d); returns a new tensor like x.

    Inputs are validated by the caller (fp8attn.hadamard): float dtype, supported d.
    butterfly: stage order of `sylvester_rows` (same result; for benchmarks).
    """
    d = x.shape[-1]
    tp = tile_params(d)
    x2 = x.reshape(-1, d)
    if x2.numel() and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    y2 = y.view(-1, d)
    n_rows = x2.shape[0]
    if n_rows == 0:
        return y
    hm = small_factor_tensor(tp["M"], x.device, transpose=inverse)
    signs_arg = signs.to(device=x.device, dtype=torch.float32).contiguous() if signs is not None else hm
    grid = lambda meta: (triton.cdiv(n_rows, meta["BLOCK_ROWS"]),)
    _hadamard_kernel[grid](x2, y2, signs_arg, hm, n_rows, x2.stride(0), y2.stride(0),
                           D_PAD=tp["M_PAD"] * tp["P"], HAS_SIGNS=signs is not None,
                           INVERSE=inverse, F64=x.dtype == torch.float64, BUTTERFLY=butterfly,
                           **tp)
    return y
