"""Attention implementations: float64 oracle, FP16/BF16 baselines and the FP8 flash emulation."""
from .reference import (attention_oracle, flash_attention_fp16, fp8_flash_emulation,
                        fp8_per_tensor_baseline, standard_attention)

__all__ = [
    "attention_oracle",
    "flash_attention_fp16",
    "fp8_flash_emulation",
    "fp8_per_tensor_baseline",
    "standard_attention",
]
