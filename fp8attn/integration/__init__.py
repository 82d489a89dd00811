"""Switch a model's attention to fp8attn, per layer, and undo it.

    fp8attn.quantize_model(model)                               # default recipe, every layer
    fp8attn.quantize_model(model, Recipe(fmt="e5m2"), layers={0: None, "*.layer.5.*": Recipe(hadamard=False)})
    fp8attn.dequantize_model(model)                             # back to the original attention

transformers models (PreTrainedModel) switch through transformers' attention registry
(attn_implementation "fp8attn"); any other nn.Module is swapped at its SDPA calls (see sdpa.py).
transformers is imported only when the model is one of its models.
"""
from __future__ import annotations

import contextlib
import fnmatch
import sys

import torch

from ..recipe import DEFAULT_RECIPE, Recipe
from .core import MASK_POLICIES, AttentionCall, LayerState, StaticScales

_APPLIED_ATTR = "_fp8attn_applied"


def _backend_module(model: torch.nn.Module):
    if "transformers" in sys.modules:
        from transformers import PreTrainedModel
        if isinstance(model, PreTrainedModel):
            from . import transformers as tf_backend
            return tf_backend
    from . import sdpa
    return sdpa


def attention_layers(model: torch.nn.Module, attention_modules=None) -> list[tuple[str, torch.nn.Module]]:
    """The (name, module) pairs quantize_model treats as attention layers, in model order.

    attention_modules: None (auto: transformers attention classes, or modules whose forward calls
    scaled_dot_product_attention), or an iterable of qualified names / module classes."""
    if attention_modules is None:
        found = _backend_module(model).attention_modules(model)
        if not found:
            raise ValueError(f"no attention module found in {type(model).__name__}: its modules do not "
                             f"call scaled_dot_product_attention in their own forward; pass "
                             f"attention_modules=[names or classes]")
        return found
    wanted = list(attention_modules)
    out = []
    for name, mod in model.named_modules():
        if any((isinstance(w, str) and w == name) or (isinstance(w, type) and isinstance(mod, w))
               for w in wanted):
            out.append((name, mod))
    names = {n for n, _ in out}
    missing = [w for w in wanted if isinstance(w, str) and w not in names]
    if missing or not out:
        raise ValueError(f"attention_modules {missing or wanted} not found in {type(model).__name__}")
    return out


def _resolve_recipe(name: str, index: int, default, layers) -> Recipe | None:
    """Per-layer recipe: layers maps int index / exact name / fnmatch pattern -> Recipe or None."""
    if layers is None:
        return default
    if callable(layers):
        return layers(name, index)
    if index in layers:
        return layers[index]
    if name in layers:
        return layers[name]
    for key, value in layers.items():
        if isinstance(key, str) and fnmatch.fnmatchcase(name, key):
            return value
    return default


def quantize_model(model: torch.nn.Module, recipe=None, *, layers=None, attention_modules=None,
                   on_unsupported_mask: str = "fallback",
                   static_kv_scales: bool = False) -> torch.nn.Module:
    """Run the model's attention layers through fp8attn (in place; returns the model).

    recipe:  a Recipe for every layer (default: the FA3 recipe), or a calibrated recipe
             (calibration.CalibratedRecipe: any object with .recipe_for(name, index)).
    layers:  per-layer overrides: {int index | qualified name | fnmatch pattern: Recipe | None},
             None skips the layer (it keeps its original attention); or a callable
             (name, index) -> Recipe | None. Indices count attention layers in model order.
    attention_modules: which modules are attention layers (see attention_layers).
    on_unsupported_mask: "fallback" (torch SDPA with a one-time warning per layer) or "raise"
             for masks that are not key-padding / causal masks.
    static_kv_scales: with a calibrated recipe, quantise K and V with its static per-kv-head
             scales (as an FP8 KV cache would) through fp8attn's pre-quantised FP8 path, instead
             of the recipe's dynamic block scales (Q stays dynamic per head; no rotation).
    """
    if on_unsupported_mask not in MASK_POLICIES:
        raise ValueError(f"on_unsupported_mask={on_unsupported_mask!r}; expected one of {MASK_POLICIES}")
    if recipe is not None and not isinstance(recipe, Recipe) and not hasattr(recipe, "recipe_for"):
        raise TypeError(f"recipe must be an fp8attn.Recipe, a calibrated recipe or None, got "
                        f"{type(recipe).__name__}")
    if layers is not None and not callable(layers) and not isinstance(layers, dict):
        raise TypeError(f"layers must be a dict or a callable, got {type(layers).__name__}")
    found = attention_layers(model, attention_modules)
    if isinstance(layers, dict):
        names = {n for n, _ in found}
        unknown = [k for k in layers if not (
            (isinstance(k, int) and 0 <= k < len(found)) or k in names
            or (isinstance(k, str) and any(fnmatch.fnmatchcase(n, k) for n in names)))]
        if unknown:
            raise ValueError(f"layers keys {unknown} match no attention layer; the model has "
                             f"{len(found)} ({found[0][0]!r} ... {found[-1][0]!r})")
    if hasattr(recipe, "check_layers"):
        recipe.check_layers([n for n, _ in found])
    if static_kv_scales and not hasattr(recipe, "static_scales"):
        raise ValueError("static_kv_scales=True needs a calibrated recipe (calibration.calibrate "
                         "or calibration.load_recipe)")
    states = {}
    for index, (name, _) in enumerate(found):
        base = recipe.recipe_for(name, index) if hasattr(recipe, "recipe_for") else (
            recipe if recipe is not None else DEFAULT_RECIPE)
        r = _resolve_recipe(name, index, base, layers)
        if r is not None and not isinstance(r, Recipe):
            raise TypeError(f"layer {name!r}: expected a Recipe or None, got {type(r).__name__}")
        static = None
        if static_kv_scales and r is not None:
            k_descale, v_descale, fmt = recipe.static_scales(name)
            static = StaticScales(k_descale=k_descale, v_descale=v_descale, fmt=fmt)
        states[name] = LayerState(name=name, index=index, recipe=r,
                                  on_unsupported_mask=on_unsupported_mask, static=static)
    backend = _backend_module(model)
    if getattr(model, _APPLIED_ATTR, None) is not None:
        dequantize_model(model)
    backend.apply(model, states)
    model.__dict__[_APPLIED_ATTR] = states
    return model


def dequantize_model(model: torch.nn.Module) -> torch.nn.Module:
    """Undo quantize_model: original attention everywhere (in place; returns the model)."""
    if model.__dict__.get(_APPLIED_ATTR) is None:
        raise ValueError(f"{type(model).__name__} was not quantised by fp8attn.quantize_model")
    _backend_module(model).undo(model)
    del model.__dict__[_APPLIED_ATTR]
    return model


def layer_states(model: torch.nn.Module) -> dict[str, LayerState]:
    """name -> LayerState of a quantised model (raises if it is not quantised)."""
    states = model.__dict__.get(_APPLIED_ATTR)
    if states is None:
        raise ValueError(f"{type(model).__name__} is not quantised: call fp8attn.quantize_model first")
    return states


@contextlib.contextmanager
def tapped(model: torch.nn.Module, tap):
    """Attach `tap(call, recipe) -> Tensor | None` to every layer of a quantised model for the block."""
    states = list(layer_states(model).values())
    for s in states:
        s.taps.append(tap)
    try:
        yield tap
    finally:
        for s in states:
            s.taps.remove(tap)


__all__ = ["AttentionCall", "LayerState", "StaticScales", "attention_layers", "dequantize_model", "layer_states",
           "quantize_model", "tapped"]
