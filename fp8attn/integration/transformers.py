"""fp8attn as a transformers attention implementation ("fp8attn" in AttentionInterface).

Importing this module registers the implementation, so both work:

    import fp8attn.integration.transformers
    model = AutoModel.from_pretrained(path, attn_implementation="fp8attn")
    # or, on a loaded model, with per-layer settings:
    fp8attn.quantize_model(model, recipe, layers={0: None, "encoder.layer.5.*": Recipe(hadamard=False)})

Masks are built by transformers' SDPA mask function (boolean (B, 1, Sq, Sk), or None when SDPA's
is_causal suffices), so fp8attn sees exactly what torch SDPA would: padding masks are decomposed by
core.analyze_mask, and decode steps with a KV cache (Sq = 1 < Sk) arrive with no mask and no causal
flag (the new query sees every cached key). Causal calls with a materialised mask (left padding,
chunked prefill, Sq < Sk) map to "bottom_right" alignment over the unpadded keys.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from ..attention.reference import default_softmax_scale
from .core import AttentionCall, LayerState, run_layer

IMPLEMENTATION = "fp8attn"
STATE_ATTR = "_fp8attn_state"
_ORIGINAL_ATTR = "_fp8attn_original_implementation"
_UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "position_bias")


def fp8attn_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: torch.Tensor | None,
                              dropout: float = 0.0, scaling: float | None = None,
                              is_causal: bool | None = None, **kwargs):
    """transformers attention function: query (B, Hq, Sq, D), key / value (B, Hkv, Sk, D) ->
    (attn_output (B, Sq, Hq, D), None), with the semantics of transformers' SDPA path."""
    state: LayerState | None = getattr(module, STATE_ATTR, None)

    if state is not None and state.recipe is None and not state.taps:  # skipped layer
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    if dropout and module.training:
        raise ValueError(f"dropout={dropout} in training mode: fp8attn is inference-only "
                         f"(call model.eval())")
    extra = [k for k in _UNSUPPORTED_KWARGS if kwargs.get(k) is not None]
    if extra or kwargs.get("output_attentions"):
        raise ValueError(f"{type(module).__name__} passes {extra or ['output_attentions']} to its "
                         f"attention: fp8attn does not support these; skip this layer "
                         f"(layers={{...: None}}) or use attn_implementation='sdpa'")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    sq = query.shape[2]
    # as in transformers' SDPA path: a mask defines everything; without one, causal needs Sq > 1
    # (a single decode query sees all cached keys) and is top-left aligned (Sq < Sk only happens
    # for a prefill into an empty static cache, where top-left hides the unused cache slots)
    causal = "top_left" if (attention_mask is None and is_causal and sq > 1) else None
    name = state.name if state is not None else f"layer{getattr(module, 'layer_idx', '?')}"
    call = AttentionCall(name=name, query=query, key=key, value=value, mask=attention_mask,
                         causal=causal, scale=default_softmax_scale(scaling, query.shape[-1]),
                         on_unsupported_mask=state.on_unsupported_mask if state else "fallback")
    out = run_layer(call, state, baseline=lambda: call.reference(query.dtype).to(query.dtype))
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register "fp8attn" in transformers' attention and mask registries (idempotent)."""
    AttentionInterface.register(IMPLEMENTATION, fp8attn_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


register()


def is_transformers_model(model) -> bool:
    return isinstance(model, PreTrainedModel)


def attention_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(qualified name, module) of every module whose forward dispatches through transformers'
    attention registry, in model order."""
    import inspect
    found, seen_types = [], {}
    for name, mod in model.named_modules():
        cls = type(mod)
        if cls not in seen_types:
            try:
                src = inspect.getsource(cls.forward)
            except (OSError, TypeError):
                src = ""
            seen_types[cls] = "ALL_ATTENTION_FUNCTIONS" in src
        if seen_types[cls]:
            found.append((name, mod))
    return found


def apply(model: PreTrainedModel, states: dict[str, LayerState]) -> None:
    """Attach per-layer states and switch the model's attention implementation to fp8attn."""
    modules = dict(model.named_modules())
    if not hasattr(model, _ORIGINAL_ATTR):
        setattr(model, _ORIGINAL_ATTR, model.config._attn_implementation)
    for name, state in states.items():
        setattr(modules[name], STATE_ATTR, state)
    model.set_attn_implementation(IMPLEMENTATION)
    if model.config._attn_implementation != IMPLEMENTATION:
        raise ValueError(f"{type(model).__name__} does not accept a registered attention "
                         f"implementation (it does not use transformers' AttentionInterface)")


def undo(model: PreTrainedModel) -> None:
    """Remove the states and restore the attention implementation the model had before."""
    for _, mod in model.named_modules():
        if hasattr(mod, STATE_ATTR):
            delattr(mod, STATE_ATTR)
    original = getattr(model, _ORIGINAL_ATTR, None)
    if original is not None:
        model.set_attn_implementation(original)
        delattr(model, _ORIGINAL_ATTR)
