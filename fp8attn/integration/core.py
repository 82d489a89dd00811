"""The attention call every integration path funnels into: mask analysis, FP8 dispatch, taps.

A model's attention call arrives as (B, H, S, D) query / key / value plus either a mask or a
causal flag. fp8attn's kernel knows no masks, only causal alignment, so a mask is decomposed:

  key-padding masks (what encoders and padded decoders pass): for every batch element the keys that
  some query can see are gathered into a compact key tensor, and the remaining pattern over those
  keys must be one of "full", "top_left" causal or "bottom_right" causal. Then fp8attn runs on the
  gathered keys: masked keys are absent, so they stay masked exactly. Query rows that see no key at
  all output 0 (torch SDPA's behaviour for fully masked rows).
  anything else (sliding windows, ALiBi or other additive biases, per-head masks): not expressible;
  the call falls back to torch SDPA with a one-time warning, or raises (policy "raise").
"""
from __future__ import annotations

import dataclasses
import warnings
import weakref
from typing import Callable

import torch

from .. import api
from ..formats import finite_amax, saturating_cast, scales_from_amax
from ..recipe import DEFAULT_RECIPE, Recipe

MASK_POLICIES = ("fallback", "raise")
_WARNED: set = set()


def _attend(q, k, v, *, causal, scale, recipe):
    """The FP8 attention (kernel or emulation, chosen by fp8attn.api); a seam for tests."""
    api.check_qkv(q, k, v, layout="bhsd", recipe=recipe, allow_gqa=True)
    return api.attention_bhsd(q, k, v, causal=causal, softmax_scale=scale, recipe=recipe)


@dataclasses.dataclass(frozen=True)
class StaticScales:
    """Static K / V descales of one layer, as an FP8 KV cache stores them (x ~= x8 * descale).

    k_descale, v_descale: (Hkv,) float32; fmt: "e4m3" or "e5m2". Values beyond 448 * descale
    saturate. Q keeps a dynamic per-(batch, head) scale; no rotation (the scales are of raw K)."""

    k_descale: torch.Tensor
    v_descale: torch.Tensor
    fmt: str = "e4m3"


def _attend_static(q, k, v, *, causal, scale, static: StaticScales):
    """Quantise K, V with static per-kv-head descales and Q per (batch, head), then run fp8attn's
    pre-quantised FP8 path (api.flash_attn_func with q/k/v_descale). Returns q's dtype."""
    b, hq, sq, _ = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    if static.k_descale.shape != (hkv,) or static.v_descale.shape != (hkv,):
        raise ValueError(f"static descales of shape {tuple(static.k_descale.shape)} / "
                         f"{tuple(static.v_descale.shape)} for {hkv} kv heads")
    if causal == "top_left":  # torch's alignment, rewritten for the bottom-right FP8 path
        if sq > sk:  # rows >= Sk see every key; rows < Sk form a square causal problem
            head = _attend_static(q[:, :, :sk], k, v, causal="bottom_right", scale=scale,
                                  static=static)
            tail = _attend_static(q[:, :, sk:], k, v, causal=None, scale=scale, static=static)
            return torch.cat([head, tail], dim=2)
        k, v, causal = k[:, :, :sq], v[:, :, :sq], "bottom_right"  # keys > Sq - 1 never seen
    fmt = static.fmt
    q_scale, q_descale = scales_from_amax(finite_amax(q, dim=(2, 3)), fmt)
    q8 = saturating_cast(q.float() * q_scale[..., None, None], fmt)
    kd = static.k_descale.to(device=q.device, dtype=torch.float32)
    vd = static.v_descale.to(device=q.device, dtype=torch.float32)
    k8 = saturating_cast(k.float() / kd.view(1, -1, 1, 1), fmt)
    v8 = saturating_cast(v.float() / vd.view(1, -1, 1, 1), fmt)
    out = api.flash_attn_func(q8.transpose(1, 2), k8.transpose(1, 2), v8.transpose(1, 2),
                              softmax_scale=scale, causal=causal == "bottom_right",
                              q_descale=q_descale, k_descale=kd.expand(b, hkv).contiguous(),
                              v_descale=vd.expand(b, hkv).contiguous())
    return out.transpose(1, 2).to(q.dtype)


@dataclasses.dataclass
class MaskPlan:
    """How to run one masked call through causal-only attention.

    groups:     list of (batch_index (G,) long, key_index (G, L) long or None, causal): the batch
                elements that share a compact key length L and a causal alignment.
    empty_rows: (B, Sq) bool, query rows that see no key (their output is 0), or None.
    valid_q:    (B, Sq) bool, query rows that carry a real token (for statistics).
    valid_k:    (B, Sk) bool, keys that some query sees.
    """

    groups: list
    empty_rows: torch.Tensor | None
    valid_q: torch.Tensor
    valid_k: torch.Tensor


def _allowed(mask: torch.Tensor) -> torch.Tensor | None:
    """Boolean "may attend" view of a bool or additive float mask; None if the mask carries biases."""
    if mask.dtype == torch.bool:
        return mask
    if not torch.is_floating_point(mask):
        raise TypeError(f"attention mask of dtype {mask.dtype}: expected bool or floating")
    blocked = mask <= torch.finfo(mask.dtype).min / 2  # -inf or transformers' finfo.min
    if not bool(((mask == 0) | blocked).all()):
        return None
    return ~blocked


def _candidates(sq: int, lk: int, device) -> dict:
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(lk, device=device)[None, :]
    return {None: torch.ones(sq, lk, dtype=torch.bool, device=device),
            "bottom_right": j <= i + (lk - sq),
            "top_left": j <= i}


def analyze_mask(mask: torch.Tensor, batch: int, heads: int, sq: int, sk: int) -> MaskPlan | None:
    """Decompose a (B|1, 1|H, Sq|1, Sk) mask; None when it is not a key-padding(+causal) mask."""
    if mask.dim() != 4:
        if mask.dim() == 2 and mask.shape == (sq, sk):
            mask = mask[None, None]
        else:
            raise ValueError(f"attention mask of shape {tuple(mask.shape)}: expected 4 dims "
                             f"broadcastable to ({batch}, {heads}, {sq}, {sk})")
    allowed = _allowed(mask)
    if allowed is None:
        return None
    try:
        allowed = allowed.expand(batch, allowed.shape[1], sq, sk)
    except RuntimeError as exc:
        raise ValueError(f"attention mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"({batch}, {heads}, {sq}, {sk})") from exc
    if allowed.shape[1] > 1 and not bool((allowed == allowed[:, :1]).all()):
        return None
    allowed = allowed[:, 0]
    valid_k = allowed.any(1)
    nonempty = allowed.any(2)
    cache: dict = {}
    keyed: dict = {}
    for b in range(batch):
        kidx = valid_k[b].nonzero().flatten()
        lk = kidx.numel()
        if lk == 0:
            continue
        sub = allowed[b][:, kidx]
        rows = nonempty[b]
        if lk not in cache:
            cache[lk] = _candidates(sq, lk, allowed.device)
        for causal, cand in cache[lk].items():
            if bool((sub[rows] == cand[rows]).all()):
                break
        else:
            return None
        keyed.setdefault((lk, causal), []).append((b, kidx))
    groups = []
    for (lk, causal), items in keyed.items():
        bidx = torch.tensor([b for b, _ in items], dtype=torch.long, device=allowed.device)
        kidx = torch.stack([ix for _, ix in items])
        full = lk == sk
        groups.append((bidx, None if full else kidx, causal))
    empty = ~nonempty
    valid_q = nonempty.clone()
    if sq == sk:
        valid_q &= valid_k  # a padded position is a padded query too (self-attention)
    return MaskPlan(groups=groups, empty_rows=empty if bool(empty.any()) else None,
                    valid_q=valid_q, valid_k=valid_k)


class _PlanCache:
    """Models pass the same mask tensor to every layer: analyse it once per forward."""

    def __init__(self):
        self._ref = None
        self._version = None
        self._key = None
        self._plan = None

    @staticmethod
    def _version_of(mask):
        # inference tensors have no version counter (and are not modified in place by models)
        return None if mask.is_inference() else mask._version

    def get(self, mask, key, fn):
        if (self._ref is not None and self._ref() is mask
                and self._version == self._version_of(mask) and self._key == key):
            return self._plan
        plan = fn()
        self._ref, self._key, self._plan = weakref.ref(mask), key, plan
        self._version = self._version_of(mask)
        return plan


_PLANS = _PlanCache()


@dataclasses.dataclass
class AttentionCall:
    """One attention call of a model, in torch SDPA semantics.

    query (B, Hq, Sq, D), key / value (B, Hkv, Sk, D) with Hq % Hkv == 0 (GQA).
    mask: None, or bool (True = attend) / additive float, broadcastable to (B, Hq, Sq, Sk).
    causal: None, "top_left" (torch's is_causal) or "bottom_right"; only without a mask.
    """

    name: str
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None
    causal: str | None
    scale: float
    on_unsupported_mask: str = "fallback"

    def __post_init__(self):
        if self.mask is not None and self.causal is not None:
            raise ValueError(f"{self.name}: pass either a mask or a causal alignment, not both")
        if self.on_unsupported_mask not in MASK_POLICIES:
            raise ValueError(f"on_unsupported_mask={self.on_unsupported_mask!r}; expected one of "
                             f"{MASK_POLICIES}")
        self._plan_done = False
        self._plan = None

    @property
    def plan(self) -> MaskPlan | None:
        """The mask decomposition (None without a mask, or for a mask fp8attn cannot express)."""
        if self.mask is not None and not self._plan_done:
            b, hq, sq, _ = self.query.shape
            sk = self.key.shape[2]
            self._plan = _PLANS.get(self.mask, (b, hq, sq, sk),
                                    lambda: analyze_mask(self.mask, b, hq, sq, sk))
            self._plan_done = True
        return self._plan

    @property
    def expressible(self) -> bool:
        return self.mask is None or self.plan is not None

    @property
    def valid_q(self) -> torch.Tensor:
        """(B, Sq) bool: query rows holding real tokens (padding excluded where the mask says so)."""
        if self.plan is not None:
            return self.plan.valid_q
        b, _, sq, _ = self.query.shape
        return torch.ones(b, sq, dtype=torch.bool, device=self.query.device)

    @property
    def valid_k(self) -> torch.Tensor:
        """(B, Sk) bool: keys that some query may see."""
        if self.plan is not None:
            return self.plan.valid_k
        b, _, sk, _ = self.key.shape
        return torch.ones(b, sk, dtype=torch.bool, device=self.key.device)

    def reference(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """torch SDPA on the inputs cast to `dtype` with this call's exact mask; float32 result."""
        q, k, v = (t.to(dtype) for t in (self.query, self.key, self.value))
        rep = q.shape[1] // k.shape[1]
        if rep > 1:
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        mask = self.mask
        if self.causal == "bottom_right":
            sq, sk = q.shape[2], k.shape[2]
            i = torch.arange(sq, device=q.device)[:, None]
            mask = torch.arange(sk, device=q.device)[None, :] <= i + (sk - sq)
        elif mask is not None and mask.dtype != torch.bool:
            mask = mask.to(dtype)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal == "top_left", scale=self.scale)
        return out.float()

    def fp8(self, recipe: Recipe | None = None, *, static: StaticScales | None = None
            ) -> torch.Tensor:
        """FP8 attention with `recipe` (default: FA3 recipe), exact mask semantics; query's dtype.

        static: quantise K / V with these static descales instead (the recipe is then unused).
        Masks fp8attn cannot express follow on_unsupported_mask: torch SDPA fallback or ValueError.
        """
        recipe = DEFAULT_RECIPE if recipe is None else recipe

        def attend(q, k, v, causal):
            if static is not None:
                return _attend_static(q, k, v, causal=causal, scale=self.scale, static=static)
            return _attend(q, k, v, causal=causal, scale=self.scale, recipe=recipe)

        q, k, v = self.query, self.key, self.value
        if self.mask is None:
            return attend(q, k, v, self.causal)
        plan = self.plan
        if plan is None:
            return self._fallback()
        out = torch.zeros_like(q)
        for bidx, kidx, causal in plan.groups:
            kg, vg = k[bidx], v[bidx]
            if kidx is not None:
                gather = kidx[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
                kg, vg = kg.gather(2, gather), vg.gather(2, gather)
            out[bidx] = attend(q[bidx], kg, vg, causal)
        if plan.empty_rows is not None:
            out = out.masked_fill(plan.empty_rows[:, None, :, None], 0.0)
        return out

    def _fallback(self) -> torch.Tensor:
        msg = (f"{self.name}: attention mask of shape {tuple(self.mask.shape)} is not a key-padding "
               f"or causal mask (e.g. sliding window, bias, per-head pattern); fp8attn cannot run it")
        if self.on_unsupported_mask == "raise":
            raise ValueError(msg + " (on_unsupported_mask='raise')")
        if self.name not in _WARNED:
            _WARNED.add(self.name)
            warnings.warn(msg + "; running torch SDPA for such calls (on_unsupported_mask="
                          "'fallback'). Pass on_unsupported_mask='raise' to refuse instead.",
                          RuntimeWarning, stacklevel=3)
        return self.reference(self.query.dtype).to(self.query.dtype)


# A tap sees every attention call of the layers it is attached to. It returns None (run the layer as
# configured) or a tensor to use as the layer's output (e.g. the FP32 reference, so that per-layer
# errors are measured on baseline inputs instead of compounding).
Tap = Callable[[AttentionCall, "Recipe | None"], "torch.Tensor | None"]


@dataclasses.dataclass
class LayerState:
    """Per-layer settings attached to an attention module by quantize_model.

    recipe None means the layer is skipped (runs its original attention); static, when set,
    replaces the recipe's dynamic K / V scales by calibrated static ones."""

    name: str
    index: int
    recipe: Recipe | None
    on_unsupported_mask: str = "fallback"
    taps: list = dataclasses.field(default_factory=list)
    static: StaticScales | None = None


def run_layer(call: AttentionCall, state: LayerState | None, baseline: Callable[[], torch.Tensor]):
    """Output of one attention call: taps first, then FP8 (or `baseline()` for skipped layers)."""
    recipe = DEFAULT_RECIPE if state is None else state.recipe
    for tap in (state.taps if state is not None else ()):
        out = tap(call, recipe)
        if out is not None:
            return out.to(call.query.dtype)
    if state is not None and state.recipe is None:
        return baseline()
    return call.fp8(recipe, static=state.static if state is not None else None)

