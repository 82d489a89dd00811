"""Calibration: observe a model's Q, K, V on real data, choose static scales and per-layer recipes.

    calib = calibrate(model, batches)            # batches: dicts for model(**b) or tensors for model(b)
    fp8attn.quantize_model(model, calib)         # the per-layer recipes are what gets applied
    save_recipe(calib, "out/recipe")             # out/recipe.json + out/recipe.safetensors
    export_kv_cache_scales(calib, "out/kv_scales.safetensors")   # static scales for FP8 KV caches

Scale selection, per layer and head, on the observed |x| (clip c; descale = c / fp8_max, so
x ~= x8 * descale and values beyond c saturate):
  "max"         c = absmax over the calibration set
  "percentile"  c = the p-th percentile of |x|
  "mse"         c minimising the mean squared quantise-dequantise error of the sampled values:
                a log-spaced grid over [absmax / 64, absmax], refined by scipy.optimize.minimize_scalar
The default is "max": on all-MiniLM-L6-v2 (static K / V scales from 114 sentences, applied to 228),
"mse" clipping lowered the average attention error but saturated rare large K / V entries, and the
worst sentence's embedding cosine fell to 0.99867 (0.99926 with "max").
Per-layer recipe choice: every candidate (rotation on / off x format x granularity) runs FP8
attention on the captured inputs of the layer; the candidate with the lowest relative L2 error against
the FP32 reference replaces the base recipe only if it lowers that error by more than `min_gain`
(relative), so noise does not flip layers away from the kernel's default.

What is applied vs exported: by default fp8attn quantises Q, K, V dynamically (scales from each
block's own amax), and the applied result of calibration is the per-layer Recipe.
fp8attn.quantize_model(model, calib, static_kv_scales=True) applies the static per-kv-head K / V
scales instead, through fp8attn's pre-quantised FP8 path (what an FP8 KV cache does). The same
scales are exported for inference engines (export_kv_cache_scales); `kv_cache_rel_l2` records
the attention error static-scale FP8 K / V add on the calibration inputs (FP32 attention otherwise).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import sys

import torch

from fp8attn.formats import fp8_max, saturating_cast
from fp8attn.recipe import DEFAULT_RECIPE, Recipe

from .observers import QKVObserver, TensorStats

SCALE_METHODS = ("max", "percentile", "mse")
DEFAULT_SEARCH = {"hadamard": (True, False), "fmt": ("e4m3", "e5m2"),
                  "granularity": ("block", "token")}
TENSOR_NAMES = ("q_amax", "k_amax", "v_amax", "q_scale", "k_scale", "v_scale",
                "q_hist", "k_hist", "v_hist")


def progress(iterable, total=None, desc="", enable=True):
    """tqdm progress bar when tqdm is installed, else a plain counter on stderr."""
    if not enable:
        yield from iterable
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=desc)
        return
    step = max(1, (total or 10) // 10)
    for i, item in enumerate(iterable, 1):
        yield item
        if i % step == 0 or i == total:
            sys.stderr.write(f"{desc}: {i}/{total if total else '?'}\n")


def _qdq_mse(values: torch.Tensor, clip: float, fmt: str) -> float:
    """Mean squared error of quantise-dequantise of |x| values with clip c (descale c / fp8_max)."""
    scale = fp8_max(fmt) / clip
    deq = saturating_cast(values * scale, fmt).float() / scale
    return float(((deq - values) ** 2).mean())


def mse_clip(values: torch.Tensor, amax: float, fmt: str) -> float:
    """Clip minimising the quantisation MSE of `values` (1-D |x|), searched in [amax / 64, amax]."""
    from scipy.optimize import minimize_scalar
    if amax <= 0 or values.numel() == 0:
        return float(amax)
    values = values.float()
    grid = [amax * 2.0 ** e for e in torch.linspace(-6, 0, 25).tolist()]
    errs = [_qdq_mse(values, c, fmt) for c in grid]
    i = min(range(len(grid)), key=errs.__getitem__)
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    best_c, best_e = grid[i], errs[i]
    if hi > lo:
        res = minimize_scalar(lambda lc: _qdq_mse(values, math.exp(lc), fmt), bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-3})
        if res.fun < best_e:
            best_c = math.exp(float(res.x))
    return min(best_c, amax)


def select_descales(stats: TensorStats, fmt: str, method: str, percentile: float = 99.99
                    ) -> torch.Tensor:
    """(H,) float32 static descales (clip / fp8_max) of one tensor kind, per head."""
    if method not in SCALE_METHODS:
        raise ValueError(f"unknown scale method {method!r}; expected one of {SCALE_METHODS}")
    amax = stats.absmax
    if method == "max":
        clip = amax
    elif method == "percentile":
        clip = torch.minimum(stats.percentile(percentile), amax)
    else:
        clip = torch.tensor([mse_clip(stats.sample[h], float(amax[h]), fmt)
                             for h in range(amax.numel())], dtype=torch.float64)
    clip = torch.where(clip > 0, clip, torch.ones_like(clip) * fp8_max(fmt))  # all-zero head: 1
    return (clip / fp8_max(fmt)).float()


@dataclasses.dataclass
class LayerCalibration:
    """Calibration of one attention layer.

    tensors: q_amax (Hq,), k_amax / v_amax (Hkv,) float32 observed absmax; q_scale (Hq,),
    k_scale / v_scale (Hkv,) float32 static descales (x ~= x8 * k_scale, vLLM's convention);
    q_hist (Hq, HIST_BINS), k_hist / v_hist (Hkv, HIST_BINS) int64 power-of-two histograms.
    errors: relative L2 error vs FP32 of each candidate recipe on the captured inputs.
    kv_cache_rel_l2: relative L2 error of FP32 attention over static-scale FP8 K, V, per method.
    """

    name: str
    index: int
    recipe: Recipe
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tensors: dict
    errors: dict = dataclasses.field(default_factory=dict)
    kv_cache_rel_l2: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CalibratedRecipe:
    """Per-layer recipes + static scales + provenance; pass it to fp8attn.quantize_model."""

    default: Recipe
    layers: dict
    scale_method: str
    percentile: float
    kv_fmt: str
    provenance: dict = dataclasses.field(default_factory=dict)

    def recipe_for(self, name: str, index: int) -> Recipe:
        if name not in self.layers:
            raise ValueError(f"calibrated recipe has no layer {name!r} (it knows "
                             f"{list(self.layers)[:3]}...): calibrated for another model?")
        return self.layers[name].recipe

    def static_scales(self, name: str):
        """(k_descale (Hkv,), v_descale (Hkv,), kv_fmt) of one layer, for quantize_model's
        static_kv_scales=True."""
        lc = self.layers[name]
        return lc.tensors["k_scale"], lc.tensors["v_scale"], self.kv_fmt

    def check_layers(self, names) -> None:
        """Raise if the model's attention layer names differ from the calibrated ones."""
        names = list(names)
        unknown = [n for n in self.layers if n not in names]
        missing = [n for n in names if n not in self.layers]
        if unknown or missing:
            raise ValueError(f"calibrated recipe does not match the model: layers unknown to the "
                             f"model {unknown[:5]}, model layers missing from the recipe "
                             f"{missing[:5]}")

    def kv_cache_scales(self, per_head: bool = True) -> dict:
        """{layer: {"k_scale", "v_scale"}} float32 descales, (Hkv,) per kv head, or () per layer
        (the max over heads: one scale must not saturate any head)."""
        out = {}
        for name, lc in self.layers.items():
            k, v = lc.tensors["k_scale"], lc.tensors["v_scale"]
            out[name] = {"k_scale": k.clone() if per_head else k.max().reshape(()),
                         "v_scale": v.clone() if per_head else v.max().reshape(())}
        return out

    def equals(self, other: "CalibratedRecipe") -> bool:
        """Exact equality, tensors bit for bit (what a save / load round trip must keep)."""
        if (self.default, self.scale_method, self.kv_fmt, self.provenance) != (
                other.default, other.scale_method, other.kv_fmt, other.provenance):
            return False
        if self.percentile != other.percentile or list(self.layers) != list(other.layers):
            return False
        for name, a in self.layers.items():
            b = other.layers[name]
            plain = ("index", "recipe", "num_heads", "num_kv_heads", "head_dim", "errors",
                     "kv_cache_rel_l2")
            if any(getattr(a, f) != getattr(b, f) for f in plain):
                return False
            if set(a.tensors) != set(b.tensors):
                return False
            for key, t in a.tensors.items():
                u = b.tensors[key]
                if t.dtype != u.dtype or t.shape != u.shape or not torch.equal(t, u):
                    return False
        return True


def _candidates(base: Recipe, search: dict) -> list[Recipe]:
    keys = list(search)
    out = [base]
    for combo in itertools.product(*(search[k] for k in keys)):
        r = base.replace(**dict(zip(keys, combo)))
        if r not in out:
            out.append(r)
    return out


def _label(r: Recipe) -> str:
    return f"{r.fmt}/{r.granularity}/{'hadamard' if r.hadamard else 'no-hadamard'}"


def _rel_l2(calls, fn) -> float:
    err2 = ref2 = 0.0
    for call in calls:
        ref = call.reference(torch.float32).double()
        out = fn(call).double()
        w = call.valid_q[:, None, :, None]
        err2 += float((((out - ref) ** 2) * w).sum())
        ref2 += float(((ref ** 2) * w).sum())
    return math.sqrt(err2 / ref2) if ref2 > 0 else 0.0


def _static_kv(call, k_descale, v_descale, fmt):
    """FP32 attention over K, V stored as FP8 with static per-kv-head descales (an FP8 KV cache)."""
    def qdq(x, d):
        d = d.view(1, -1, 1, 1).to(x.device)
        return saturating_cast(x.float() / d, fmt).float() * d
    from fp8attn.integration import AttentionCall
    c = AttentionCall(name=call.name, query=call.query.float(), key=qdq(call.key, k_descale),
                      value=qdq(call.value, v_descale), mask=call.mask, causal=call.causal,
                      scale=call.scale)
    return c.reference(torch.float32)


def _run_model(model, batches, forward, enable_progress):
    total = len(batches) if hasattr(batches, "__len__") else None
    with torch.inference_mode():
        for batch in progress(batches, total, "calibration forward", enable_progress):
            if forward is not None:
                forward(model, batch)
            elif isinstance(batch, dict):
                model(**batch)
            else:
                model(batch)


def calibrate(model: torch.nn.Module, batches, *, base_recipe: Recipe | None = None,
              scale_method: str = "max", percentile: float = 99.99, kv_fmt: str = "e4m3",
              search: dict | None = None, min_gain: float = 0.02, forward=None,
              sample_size: int = 8192, capture_calls: int = 2, progress_bar: bool = True,
              provenance: dict | None = None, attention_modules=None) -> CalibratedRecipe:
    """Observe `model` on `batches` and return a CalibratedRecipe (see the module docstring).

    forward(model, batch) runs one batch when the default (model(**batch) / model(batch)) does not
    fit. search maps Recipe fields to the values tried per layer (default DEFAULT_SEARCH; {} keeps
    base_recipe everywhere). The model is left as it was (quantised or not).
    """
    from fp8attn.integration import dequantize_model, layer_states, quantize_model, tapped
    base = base_recipe or DEFAULT_RECIPE
    if scale_method not in SCALE_METHODS:
        raise ValueError(f"unknown scale method {scale_method!r}; expected one of {SCALE_METHODS}")
    search = DEFAULT_SEARCH if search is None else search
    bad = [k for k in search if k not in Recipe.__dataclass_fields__]
    if bad:
        raise ValueError(f"search keys {bad} are not Recipe fields")
    was_quantised = "_fp8attn_applied" in model.__dict__
    if not was_quantised:
        quantize_model(model, base, attention_modules=attention_modules)
    observer = QKVObserver(sample_size=sample_size, capture_calls=capture_calls)
    try:
        with tapped(model, observer):
            _run_model(model, batches, forward, progress_bar)
        order = [(s.name, s.index) for s in layer_states(model).values()]
    finally:
        if not was_quantised:
            dequantize_model(model)
    if not observer.stats:
        raise ValueError("calibration saw no attention call: empty batches, or a forward that "
                         "does not reach the attention layers")
    candidates = _candidates(base, search)
    layers = {}
    for name, index in progress(order, len(order), "per-layer search", progress_bar):
        if name not in observer.stats:
            continue
        st, shp, calls = observer.stats[name], observer.shapes[name], observer.captured[name]
        errors = {}
        for r in candidates:
            if r.hadamard and not _hadamard_ok(shp["head_dim"]):
                continue
            errors[_label(r)] = _rel_l2(calls, lambda c, r=r: c.fp8(r).float())
        best = min((r for r in candidates if _label(r) in errors), key=lambda r: errors[_label(r)])
        chosen = base if _label(base) in errors and (
            errors[_label(base)] - errors[_label(best)] <= min_gain * errors[_label(base)]) else best
        tensors = {"q_amax": st["q"].absmax.float(), "k_amax": st["k"].absmax.float(),
                   "v_amax": st["v"].absmax.float(),
                   "q_hist": st["q"].histogram.clone(), "k_hist": st["k"].histogram.clone(),
                   "v_hist": st["v"].histogram.clone()}
        kv_err = {}
        for method in SCALE_METHODS:
            d = {kind: select_descales(st[kind], kv_fmt, method, percentile) for kind in "qkv"}
            kv_err[method] = _rel_l2(calls, lambda c, d=d: _static_kv(c, d["k"], d["v"], kv_fmt))
            if method == scale_method:
                tensors.update(q_scale=d["q"], k_scale=d["k"], v_scale=d["v"])
        layers[name] = LayerCalibration(name=name, index=index, recipe=chosen, errors=errors,
                                        kv_cache_rel_l2=kv_err, tensors=tensors, **shp)
    prov = {"tokens": observer.tokens, "batches": len(batches) if hasattr(batches, "__len__") else None,
            "sample_size": sample_size, "capture_calls": capture_calls, "min_gain": min_gain,
            "search": {k: list(v) for k, v in search.items()}, "torch": torch.__version__}
    prov.update(provenance or {})
    return CalibratedRecipe(default=base, layers=layers, scale_method=scale_method,
                            percentile=float(percentile), kv_fmt=kv_fmt, provenance=prov)


def _hadamard_ok(d: int) -> bool:
    from fp8attn.hadamard.reference import is_supported_dim
    return is_supported_dim(d)
