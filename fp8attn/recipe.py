"""Recipe: every numerical choice of the FP8 attention path in one frozen dataclass."""
from __future__ import annotations

import dataclasses

from .formats import check_fmt

GRANULARITIES = ("block", "head", "tensor", "token")
MAX_SEARCH = 64     # most candidate scales a row's search may try (Recipe.q_search, quantize)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How Q, K, V are rotated and quantised before FP8 attention.

    fmt:          "e4m3" (default, FA3) or "e5m2": the FP8 format of Q, K, V and P.
    granularity:  scale groups: "block" (block_q / block_kv rows of one head), "head" (one per
                  batch and head), "tensor" (one for the whole tensor) or "token" (one per row).
                  Finer is not more accurate in e4m3: its rounding error is relative, and with
                  "token" V's per-key descales are folded into P before P's FP8 cast, which
                  costs P precision. FA3's outlier data (CPU emulation, fp32 inputs, twenty
                  draws, benchmarks/experiments/rmse_draws.py): mean RMSE 8.24e-3 "block",
                  8.27e-3 "head", 8.26e-3 "tensor", 9.20e-3 "token".
    block_q:      rows per Q scale block (granularity "block"); matches the kernel's BLOCK_M.
    block_kv:     rows per K and V scale block; matches the kernel's BLOCK_N.
    hadamard:     rotate Q and K by the same seeded random Hadamard matrix before quantising
                  ("incoherent processing"); leaves Q K^T unchanged in exact arithmetic.
    seed:         seed of the random sign vector of the rotation.
    q_terms:      1 (default) or 2 FP8 terms for Q. With 2, y = (rotated) Q in fp32 times its scale
                  (the value cast to q8) also gives q8_lo = cast(y - float(q8)) in the same format,
                  with the SAME descale as q8 (|y - q8| <= half an ulp of q8, far inside the range;
                  it underflows only for |y| below ~0.25), and the kernel computes
                  S = (q8 @ k8^T + q8_lo @ k8^T) in fp32 * q_descale * k_descale * softmax_scale
                  * log2(e): one more QK MMA per tile for about 17% less RMSE on FA3's outlier data
                  (65% of the recipe's error energy comes from rounding the rotated Q and K).
    q_search:     candidate scales tried for each row of Q (1..64; default 1: off). With
                  q_search > 1 Q gets one scale per token (whatever `granularity` says; K and V
                  keep it), chosen among amax-scale * 2**(-j/q_search), j < q_search, as the one
                  with the least squared rounding error of the row
                  (quant.reference.search_row_scales). e4m3's rounding error of a row depends on
                  where its values fall on the grid, so another scale can round it better. The
                  kernel applies per-row Q descales at no cost; the search runs in the quantiser:
                  on an H200 (2026-11-30, FA3's outlier data, bf16 in) q_search=4 took the RMSE
                  from 9.00e-3 to 8.63e-3 (-4%), but made quantize_qkv 0.24-0.29 ms slower at 16k
                  tokens x 16 heads x 128 (26% less end-to-end throughput at seqlen 4096, 7% at
                  16384), hence off by default. q_terms=2 gains more (7.41e-3) for kernel time.
    """

    fmt: str = "e4m3"
    granularity: str = "block"
    block_q: int = 128
    block_kv: int = 128
    hadamard: bool = True
    seed: int = 0
    q_terms: int = 1
    q_search: int = 1

    def __post_init__(self):
        check_fmt(self.fmt)
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"unknown granularity {self.granularity!r}; expected one of {GRANULARITIES}")
        for name in ("block_q", "block_kv"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if (isinstance(self.q_terms, bool) or not isinstance(self.q_terms, int)
                or self.q_terms not in (1, 2)):
            raise ValueError(f"q_terms must be 1 or 2 (FP8 terms of Q), got {self.q_terms!r}")
        if (isinstance(self.q_search, bool) or not isinstance(self.q_search, int)
                or not 1 <= self.q_search <= MAX_SEARCH):
            raise ValueError(f"q_search must be an int in 1..{MAX_SEARCH} (candidate scales per "
                             f"Q row), got {self.q_search!r}")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Recipe fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


DEFAULT_RECIPE = Recipe()
