"""Generic swap for plain PyTorch modules that call torch.nn.functional.scaled_dot_product_attention.

No source changes are needed: the module's forward is wrapped so that, while it runs, a
TorchFunctionMode redirects its SDPA calls (however the function was imported) to fp8attn with that
module's LayerState. The semantics are torch SDPA's: is_causal is top-left aligned, boolean / additive
masks go through core.analyze_mask (key padding decomposed exactly; other masks fall back or raise).
Undo restores the original forward.
"""
from __future__ import annotations

import functools
import inspect

import torch
from torch.overrides import TorchFunctionMode

from ..attention.reference import default_softmax_scale
from .core import AttentionCall, LayerState, run_layer

_SDPA_FUNCS = {torch.nn.functional.scaled_dot_product_attention,
               torch._C._nn.scaled_dot_product_attention}
_SDPA_SIG = inspect.Signature([
    inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in (
        ("query", inspect.Parameter.empty), ("key", inspect.Parameter.empty),
        ("value", inspect.Parameter.empty), ("attn_mask", None), ("dropout_p", 0.0),
        ("is_causal", False), ("scale", None), ("enable_gqa", False))])
WRAPPED_ATTR = "_fp8attn_wrapped_forward"
STATE_ATTR = "_fp8attn_state"


class _RedirectSDPA(TorchFunctionMode):
    """Routes SDPA calls to fp8attn for one module's forward; every other op passes through."""

    def __init__(self, state: LayerState):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _SDPA_FUNCS:
            return func(*args, **kwargs)
        bound = _SDPA_SIG.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        if a["dropout_p"]:
            raise ValueError(f"{self.state.name}: dropout_p={a['dropout_p']}: fp8attn is "
                             f"inference-only")
        q, k, v = a["query"], a["key"], a["value"]
        if q.shape[1] != k.shape[1] and not a["enable_gqa"]:
            raise ValueError(f"{self.state.name}: query has {q.shape[1]} heads, key/value "
                             f"{k.shape[1]}: pass enable_gqa=True for grouped-query attention")
        if a["attn_mask"] is not None and a["is_causal"]:
            raise ValueError(f"{self.state.name}: attn_mask and is_causal together are refused "
                             f"(as torch SDPA does)")
        call = AttentionCall(name=self.state.name, query=q, key=k, value=v, mask=a["attn_mask"],
                             causal="top_left" if a["is_causal"] else None,
                             scale=default_softmax_scale(a["scale"], q.shape[-1]),
                             on_unsupported_mask=self.state.on_unsupported_mask)
        return run_layer(call, self.state, baseline=lambda: func(*args, **kwargs))


def _forward(module, original, *args, **kwargs):
    with _RedirectSDPA(getattr(module, STATE_ATTR)):
        return original(*args, **kwargs)


def attention_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules whose own forward source calls scaled_dot_product_attention (model order)."""
    found, seen = [], {}
    for name, mod in model.named_modules():
        cls = type(mod)
        if cls not in seen:
            try:
                seen[cls] = "scaled_dot_product_attention" in inspect.getsource(cls.forward)
            except (OSError, TypeError):
                seen[cls] = False
        if seen[cls]:
            found.append((name, mod))
    return found


def apply(model: torch.nn.Module, states: dict[str, LayerState]) -> None:
    modules = dict(model.named_modules())
    for name, state in states.items():
        mod = modules[name]
        setattr(mod, STATE_ATTR, state)
        if WRAPPED_ATTR in mod.__dict__:
            continue
        # keep an instance-level forward someone else installed (e.g. accelerate hooks)
        mod.__dict__[WRAPPED_ATTR] = mod.__dict__.get("forward")
        mod.forward = functools.partial(_forward, mod, mod.forward)


def undo(model: torch.nn.Module) -> None:
    for _, mod in model.named_modules():
        if WRAPPED_ATTR in mod.__dict__:
            previous = mod.__dict__.pop(WRAPPED_ATTR)
            del mod.__dict__["forward"]
            if previous is not None:
                mod.forward = previous
        if STATE_ATTR in mod.__dict__:
            delattr(mod, STATE_ATTR)
