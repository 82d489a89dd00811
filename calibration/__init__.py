"""Calibration for fp8attn: observe Q, K, V of a model on real data, choose static scales and
per-layer recipes, save / load them as recipe files (JSON + safetensors), export FP8 KV-cache scales.

    from calibration import calibrate, save_recipe, load_recipe, export_kv_cache_scales
"""
from .calibrate import (DEFAULT_SEARCH, SCALE_METHODS, CalibratedRecipe, LayerCalibration, calibrate,
                        mse_clip, select_descales)
from .observers import QKVObserver, TensorStats
from .recipe_io import (RecipeFileError, check_model, export_kv_cache_scales, load_recipe,
                        save_recipe)

__all__ = ["DEFAULT_SEARCH", "SCALE_METHODS", "CalibratedRecipe", "LayerCalibration", "QKVObserver",
           "RecipeFileError", "TensorStats", "calibrate", "check_model", "export_kv_cache_scales",
           "load_recipe", "mse_clip", "save_recipe", "select_descales"]
