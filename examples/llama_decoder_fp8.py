"""A Llama-architecture decoder built from a config, generating text with FP8 attention.

    python examples/llama_decoder_fp8.py [--device cuda] [--train-steps 300] [--out results/llama]

No download: a byte-level Llama (4 layers, 4 query / 2 kv heads of dim 32, rotary embeddings) is
built from a LlamaConfig with seeded weights and trained for a few hundred steps on
examples/data/sentences.txt so that its next-byte distributions are peaked, as a trained model's
are (greedy decoding of a random model is a coin toss between near-equal logits). Then, against the
BF16 baseline (torch SDPA), the same BF16 model with fp8attn:
  * greedy `generate` from held-out prompts: first divergence point, and the logit KL along the
    baseline's continuation;
  * perplexity on held-out sentences and the mean next-token KL;
  * per-layer attention errors against FP32 / BF16 on those sentences.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import fp8attn
from fp8attn.integration import dequantize_model, quantize_model, tapped
from fp8attn.integration.models import ByteTokenizer, read_sentences, tiny_llama
from fp8attn.integration.report import LayerErrorRecorder, format_table, logit_kl, perplexity


def train(model, tok, sentences, steps, device, seed=0, batch=16, lr=5e-3):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(len(sentences), (batch,), generator=g).tolist()
        ids, am = tok.batch([sentences[i] for i in idx], max_len=64)
        ids, am = ids.to(device), am.to(device)
        labels = ids.masked_fill(am == 0, -100)
        loss = model(input_ids=ids, attention_mask=am, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())


def continuation_kl(model_a, model_b, seq):
    """Per-position KL(a || b) of next-token distributions along `seq` (1, S)."""
    with torch.inference_mode():
        la, lb = model_a(input_ids=seq).logits, model_b(input_ids=seq).logits
    lpa, lpb = torch.log_softmax(la.double(), -1), torch.log_softmax(lb.double(), -1)
    return (lpa.exp() * (lpa - lpb)).sum(-1)[0]


def _divergence(a, b):
    """Index of the first differing token of two 1-D token tensors, None if equal."""
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if len(diff) else (None if len(a) == len(b) else n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-steps", type=int, default=500)
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--out", default="results/llama")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tok = ByteTokenizer()
    sentences = read_sentences()
    held_out, train_set = sentences[::10], [s for i, s in enumerate(sentences) if i % 10]
    model = tiny_llama(seed=0, device=args.device, hidden=128, layers=4, weight_gain=1.0)
    final_loss = train(model, tok, train_set, args.train_steps, args.device)
    t_train = time.perf_counter() - t0
    # separate copies, so that nothing fp8attn does can leak into the baselines
    ref32 = tiny_llama(seed=0, device=args.device, hidden=128, layers=4)
    ref32.load_state_dict(model.state_dict())
    model = model.to(torch.bfloat16)
    base = tiny_llama(seed=0, device=args.device, hidden=128, layers=4).to(torch.bfloat16)
    base.load_state_dict(model.state_dict())
    quantize_model(model)

    gen_kw = dict(max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
    prompts = [" ".join(s.split()[:3]) + " " for s in held_out[:args.prompts]]
    generations = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tok.encode(prompt)], device=args.device)
            a = base.generate(input_ids=ids, **gen_kw)[0, ids.shape[1]:]
            b = model.generate(input_ids=ids, **gen_kw)[0, ids.shape[1]:]
            c = ref32.generate(input_ids=ids, **gen_kw)[0, ids.shape[1]:]
            full = torch.cat([ids[0], a])[None]
            kl = continuation_kl(base, model, full)[ids.shape[1] - 1:]
            kl32 = continuation_kl(base, ref32, full)[ids.shape[1] - 1:]
            generations.append({"prompt": prompt, "baseline": tok.decode(a.tolist()),
                                "fp8": tok.decode(b.tolist()), "fp32": tok.decode(c.tolist()),
                                "first_divergence": _divergence(a, b),
                                "fp32_first_divergence": _divergence(a, c),
                                "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
                                "fp32_kl_mean": float(kl32.mean())})

    ids, am = tok.batch(held_out, max_len=96)
    ids, am = ids.to(args.device), am.to(args.device)
    valid = am.bool()
    with torch.inference_mode():
        lb = base(input_ids=ids, attention_mask=am).logits
        lf = model(input_ids=ids, attention_mask=am).logits
        l32 = ref32(input_ids=ids, attention_mask=am).logits
        rec = LayerErrorRecorder(half_dtype=torch.bfloat16)
        with tapped(model, rec):
            model(input_ids=ids, attention_mask=am)
    dequantize_model(model)
    ppl_base, ppl_fp8 = perplexity(lb, ids, valid), perplexity(lf, ids, valid)
    ppl_32 = perplexity(l32, ids, valid)
    kl_all, kl_32 = float(logit_kl(lb, lf, valid)), float(logit_kl(lb, l32, valid))
    elapsed = time.perf_counter() - t0

    print(f"byte-level Llama (4 layers, GQA 4/2 heads, dim 32), trained {args.train_steps} steps "
          f"(final loss {final_loss:.3f}, {t_train:.1f} s); device {args.device}, backend "
          f"{fp8attn.api.select_backend(torch.device(args.device))}")
    print("\ngreedy generation, BF16 baseline vs BF16 + fp8attn:")
    for gres in generations:
        d = gres["first_divergence"]
        print(f"  prompt {gres['prompt']!r}")
        print(f"    baseline: {gres['baseline']!r}")
        d32 = gres["fp32_first_divergence"]
        print(f"    fp8attn : {gres['fp8']!r}")
        print(f"    {'identical' if d is None else f'first divergence at new token {d}'}; "
              f"KL along the baseline continuation mean {gres['kl_mean']:.2e} max {gres['kl_max']:.2e}")
        print(f"    (FP32 model vs BF16 baseline: {'identical' if d32 is None else f'diverges at {d32}'}"
              f", KL mean {gres['fp32_kl_mean']:.2e})")
    print(f"\nheld-out sentences ({len(held_out)}): perplexity BF16 {ppl_base:.4f}, fp8attn "
          f"{ppl_fp8:.4f} ({100 * (ppl_fp8 / ppl_base - 1):+.3f} %), FP32 {ppl_32:.4f}; mean "
          f"next-token KL(BF16 || fp8attn) {kl_all:.2e}, KL(BF16 || FP32) {kl_32:.2e}")
    results = rec.results()
    print("\nPer layer (attention output on the layer's inputs):")
    print(format_table(results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"generations": generations,
              "perplexity": {"bf16": ppl_base, "fp8attn": ppl_fp8, "fp32": ppl_32},
              "mean_kl": kl_all, "mean_kl_fp32": kl_32, "per_layer": results, "train_steps": args.train_steps,
              "final_train_loss": final_loss, "seconds": elapsed, "device": args.device}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'report.json'}; {elapsed:.1f} s")
    return report


if __name__ == "__main__":
    main()
