"""Recipe: every numerical choice of the FP8 attention path in one frozen dataclass."""
from __future__ import annotations

import dataclasses

from .formats import check_fmt

GRANULARITIES = ("block", "head", "tensor", "token")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How Q, K, V are rotated and quantised before FP8 attention.

    fmt:          "e4m3" (default, FA3) or "e5m2": the FP8 format of Q, K, V and P.
    granularity:  scale groups: "block" (block_q / block_kv rows of one head), "head" (one per
                  batch and head), "tensor" (one for the whole tensor) or "token" (one per row).
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
    """

    fmt: str = "e4m3"
    granularity: str = "block"
    block_q: int = 128
    block_kv: int = 128
    hadamard: bool = True
    seed: int = 0
    q_terms: int = 1

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
