"""fp8attn: FP8 attention for Hopper GPUs with randomized Hadamard rotation and block scales."""
from .api import flash_attn_func, flash_attn_varlen_func, scaled_dot_product_attention
from .hadamard import hadamard_transform, random_hadamard_transform
from .integration import dequantize_model, quantize_model
from .quant import quantize
from .recipe import Recipe

__all__ = [
    "Recipe",
    "dequantize_model",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "hadamard_transform",
    "quantize",
    "quantize_model",
    "random_hadamard_transform",
    "scaled_dot_product_attention",
]
__version__ = "0.1.0"
