"""Recipe files: settings and provenance in JSON, tensors in safetensors; never pickle.

save_recipe(calib, "out/model") writes
  out/model.json          {"format": "fp8attn-recipe", "version": 1, settings, per-layer recipes,
                          errors, tensor manifest (shape, dtype per tensor), provenance,
                          "tensors_file", "tensors_sha256"}
  out/model.safetensors   "<layer name>/<tensor>" -> tensor (see LayerCalibration.tensors)
load_recipe("out/model.json", model=None) validates everything before returning: JSON syntax,
format and version, field types, Recipe fields, the SHA-256 of the tensor file (tampering), that the
tensor file holds exactly the manifest's tensors with the manifest's shapes and dtypes, shapes
against each layer's head counts, finite positive scales, and (given a model) that the layer names
and head counts match the model's attention layers. Every failure is a RecipeFileError
(a ValueError) naming the file and the problem.

export_kv_cache_scales writes the static K / V descales the way inference engines load them for an
FP8 KV cache (vLLM: "<attention module>.k_scale" / ".v_scale", float32, x ~= x8 * k_scale).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import torch

from fp8attn.output_files import writable
from fp8attn.recipe import Recipe

from .calibrate import SCALE_METHODS, TENSOR_NAMES, CalibratedRecipe, LayerCalibration
from .observers import HIST_BINS

FORMAT = "fp8attn-recipe"
VERSION = 1
_DTYPES = {"float32": torch.float32, "int64": torch.int64}


class RecipeFileError(ValueError):
    """A recipe file that cannot be used; the message names the file and the problem."""


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dtype_name(t: torch.Tensor) -> str:
    for name, dt in _DTYPES.items():
        if t.dtype == dt:
            return name
    raise TypeError(f"recipe tensors must be float32 or int64, got {t.dtype}")


def _expected_shape(key: str, lc: dict) -> tuple:
    heads = lc["num_heads"] if key.startswith("q_") else lc["num_kv_heads"]
    return (heads, HIST_BINS) if key.endswith("_hist") else (heads,)


def save_recipe(calib: CalibratedRecipe, path) -> Path:
    """Write <path>.json and <path>.safetensors; returns the JSON path."""
    from safetensors.torch import save_file
    jpath, tpath = _paths(path)
    writable(jpath)
    tensors, layers = {}, []
    for name, lc in calib.layers.items():
        if "/" in name:
            raise ValueError(f"layer name {name!r} contains '/', which recipe files reserve")
        manifest = {}
        for key, t in lc.tensors.items():
            tensors[f"{name}/{key}"] = t.detach().cpu().contiguous()
            manifest[key] = {"shape": list(t.shape), "dtype": _dtype_name(t)}
        layers.append({"name": name, "index": lc.index, "recipe": lc.recipe.to_dict(),
                       "num_heads": lc.num_heads, "num_kv_heads": lc.num_kv_heads,
                       "head_dim": lc.head_dim, "errors": lc.errors,
                       "kv_cache_rel_l2": lc.kv_cache_rel_l2, "tensors": manifest})
    save_file(tensors, str(tpath))
    doc = {"format": FORMAT, "version": VERSION, "default_recipe": calib.default.to_dict(),
           "scale_method": calib.scale_method, "percentile": calib.percentile,
           "kv_fmt": calib.kv_fmt, "scale_convention": "descale: x ~= x8 * scale (vLLM k_scale)",
           "tensors_file": tpath.name, "tensors_sha256": _sha256(tpath),
           "layers": layers, "provenance": calib.provenance}
    jpath.write_text(json.dumps(doc, indent=1))
    return jpath


def _need(doc: dict, key: str, types, where: str, src: Path):
    if key not in doc:
        raise RecipeFileError(f"{src}: {where} has no {key!r} field")
    value = doc[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise RecipeFileError(f"{src}: {where}.{key} is {type(value).__name__}, expected "
                              f"{getattr(types, '__name__', types)}")
    return value


def _recipe(d, where: str, src: Path) -> Recipe:
    if not isinstance(d, dict):
        raise RecipeFileError(f"{src}: {where} must be an object, got {type(d).__name__}")
    try:
        return Recipe.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise RecipeFileError(f"{src}: {where} is not a valid Recipe: {exc}") from exc


def load_recipe(path, model: torch.nn.Module | None = None, *, attention_modules=None
                ) -> CalibratedRecipe:
    """Load and validate a recipe file (see the module docstring); RecipeFileError on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    jpath, _ = _paths(path)
    if not jpath.is_file():
        raise RecipeFileError(f"{jpath}: recipe file not found")
    try:
        doc = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeFileError(f"{jpath}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RecipeFileError(f"{jpath}: not an fp8attn recipe file (format field "
                              f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    version = doc.get("version")
    if version != VERSION:
        raise RecipeFileError(f"{jpath}: recipe file version {version!r}, this fp8attn reads "
                              f"version {VERSION}")
    default = _recipe(_need(doc, "default_recipe", dict, "file", jpath), "default_recipe", jpath)
    method = _need(doc, "scale_method", str, "file", jpath)
    if method not in SCALE_METHODS:
        raise RecipeFileError(f"{jpath}: unknown scale_method {method!r}")
    percentile = _need(doc, "percentile", (int, float), "file", jpath)
    kv_fmt = _need(doc, "kv_fmt", str, "file", jpath)
    if kv_fmt not in ("e4m3", "e5m2"):
        raise RecipeFileError(f"{jpath}: unknown kv_fmt {kv_fmt!r}")
    tname = _need(doc, "tensors_file", str, "file", jpath)
    if Path(tname).name != tname:
        raise RecipeFileError(f"{jpath}: tensors_file {tname!r} must be a file name beside the JSON")
    tpath = jpath.with_name(tname)
    if not tpath.is_file():
        raise RecipeFileError(f"{jpath}: tensor file {tpath} not found")
    digest = _need(doc, "tensors_sha256", str, "file", jpath)
    if _sha256(tpath) != digest:
        raise RecipeFileError(f"{tpath}: SHA-256 differs from the one recorded in {jpath.name}: "
                              f"the tensor file was modified or belongs to another recipe")
    try:
        stored = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RecipeFileError(f"{tpath}: unreadable safetensors file ({exc})") from exc
    raw_layers = _need(doc, "layers", list, "file", jpath)
    layers, expected_keys = {}, set()
    for i, ld in enumerate(raw_layers):
        where = f"layers[{i}]"
        if not isinstance(ld, dict):
            raise RecipeFileError(f"{jpath}: {where} must be an object")
        name = _need(ld, "name", str, where, jpath)
        where = f"layer {name!r}"
        if name in layers:
            raise RecipeFileError(f"{jpath}: layer {name!r} appears twice")
        fields = {k: _need(ld, k, int, where, jpath)
                  for k in ("index", "num_heads", "num_kv_heads", "head_dim")}
        if min(fields["num_heads"], fields["num_kv_heads"], fields["head_dim"]) < 1 or (
                fields["num_heads"] % fields["num_kv_heads"]):
            raise RecipeFileError(f"{jpath}: {where} has inconsistent head counts {fields}")
        manifest = _need(ld, "tensors", dict, where, jpath)
        if set(manifest) != set(TENSOR_NAMES):
            raise RecipeFileError(f"{jpath}: {where} lists tensors {sorted(manifest)}, expected "
                                  f"{sorted(TENSOR_NAMES)}")
        tensors = {}
        for key, meta in manifest.items():
            full = f"{name}/{key}"
            expected_keys.add(full)
            if full not in stored:
                raise RecipeFileError(f"{tpath}: tensor {full!r} listed in {jpath.name} is missing")
            t = stored[full]
            shape = tuple(meta.get("shape", ())) if isinstance(meta, dict) else None
            want = _expected_shape(key, fields)
            if shape != tuple(t.shape) or shape != want:
                raise RecipeFileError(f"{tpath}: tensor {full!r} has shape {tuple(t.shape)}, the "
                                      f"manifest says {shape}, the layer's head counts need {want}")
            if t.dtype != _DTYPES.get(meta.get("dtype")):
                raise RecipeFileError(f"{tpath}: tensor {full!r} has dtype {t.dtype}, the manifest "
                                      f"says {meta.get('dtype')}")
            if key.endswith("_scale") and not bool((torch.isfinite(t) & (t > 0)).all()):
                raise RecipeFileError(f"{tpath}: tensor {full!r} holds non-finite or non-positive "
                                      f"scales")
            tensors[key] = t
        errors = _need(ld, "errors", dict, where, jpath)
        kv_err = _need(ld, "kv_cache_rel_l2", dict, where, jpath)
        for label, e in itertools.chain(errors.items(), kv_err.items()):
            if not isinstance(e, (int, float)) or isinstance(e, bool):
                raise RecipeFileError(f"{jpath}: {where} error {label!r} is not a number")
        layers[name] = LayerCalibration(name=name, recipe=_recipe(ld.get("recipe"), f"{where}.recipe",
                                                                  jpath),
                                        tensors=tensors, errors=errors, kv_cache_rel_l2=kv_err,
                                        **fields)
    extra = sorted(set(stored) - expected_keys)
    if extra:
        raise RecipeFileError(f"{tpath}: tensors not listed in {jpath.name}: {extra[:5]}")
    prov = doc.get("provenance", {})
    if not isinstance(prov, dict):
        raise RecipeFileError(f"{jpath}: provenance must be an object")
    calib = CalibratedRecipe(default=default, layers=layers, scale_method=method,
                             percentile=float(percentile), kv_fmt=kv_fmt, provenance=prov)
    if model is not None:
        check_model(calib, model, attention_modules=attention_modules, source=jpath)
    return calib


def check_model(calib: CalibratedRecipe, model: torch.nn.Module, *, attention_modules=None,
                source="recipe") -> None:
    """RecipeFileError unless the recipe's layers are exactly the model's, with matching heads."""
    from fp8attn.integration import attention_layers
    found = attention_layers(model, attention_modules)
    names = [n for n, _ in found]
    unknown = [n for n in calib.layers if n not in names]
    missing = [n for n in names if n not in calib.layers]
    if unknown or missing:
        raise RecipeFileError(f"{source}: layers do not match {type(model).__name__}: unknown to "
                              f"the model {unknown[:5]}, model layers missing {missing[:5]}")
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "num_attention_heads"):
        hq = cfg.num_attention_heads
        hkv = getattr(cfg, "num_key_value_heads", None) or hq
        for name, lc in calib.layers.items():
            if (lc.num_heads, lc.num_kv_heads) != (hq, hkv):
                raise RecipeFileError(f"{source}: layer {name!r} was calibrated with "
                                      f"{lc.num_heads} query / {lc.num_kv_heads} kv heads, the "
                                      f"model has {hq} / {hkv}")


def export_kv_cache_scales(calib: CalibratedRecipe, path, *, per_head: bool = False,
                           suffix: str = "{kind}_scale") -> dict:
    """Write static FP8 KV-cache descales as safetensors: "<attention module>.k_scale" and
    ".v_scale", float32 scalars (per_head=False: vLLM's per-layer k_scale / v_scale, the max over
    kv heads) or (num_kv_heads,) vectors (per_head=True). Convention: x ~= x8 * k_scale.
    Returns the written {name: tensor} dict."""
    from safetensors.torch import save_file
    out = {}
    for name, scales in calib.kv_cache_scales(per_head=per_head).items():
        for kind in ("k", "v"):
            t = scales[f"{kind}_scale"].float().contiguous()
            if not math.isfinite(float(t.max())):
                raise ValueError(f"layer {name!r}: non-finite {kind}_scale")
            out[f"{name}.{suffix.format(kind=kind)}"] = t
    save_file(out, str(writable(path)),
              metadata={"format": "fp8-kv-cache-scales", "kv_fmt": calib.kv_fmt,
                        "convention": "x ~= x8 * scale",
                        "granularity": "per_kv_head" if per_head else "per_layer"})
    return out
