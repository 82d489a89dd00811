"""Per-layer, per-head error reports of a quantised model against FP32 and FP16/BF16 baselines.

LayerErrorRecorder is a tap (see integration.tapped): on every attention call it computes the FP32
reference (torch SDPA in float32 on the layer's real inputs), the half-precision baseline (torch SDPA
with the inputs cast to float16 or bfloat16) and the FP8 output of each recipe variant, and
accumulates error sums per head over the real (unpadded) query rows. By default it returns the FP32
reference, so each layer is measured on baseline inputs (local error, not compounded); end-to-end
metrics come from a separate run of the quantised model.

Metrics over all accumulated entries (out = tested, ref = baseline):
  rmse = sqrt(mean((out - ref)^2)), relative_l2 = ||out - ref|| / ||ref||,
  cosine = <out, ref> / (||out|| ||ref||), sqnr_db = 10 log10(||ref||^2 / ||out - ref||^2), max_abs.
"""
from __future__ import annotations

import json
import math

import torch

from ..output_files import writable
from ..recipe import Recipe
from .core import AttentionCall

HALF_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


class ErrorAccumulator:
    """Streaming per-head error sums (float64) of out vs ref over valid query rows."""

    def __init__(self):
        self.sums = None

    def update(self, out: torch.Tensor, ref: torch.Tensor, valid_q: torch.Tensor) -> None:
        """out, ref (B, H, S, D); valid_q (B, S) bool."""
        w = valid_q[:, None, :, None].to(torch.float64)
        o, r = out.double(), ref.double()
        e = o - r
        dims = (0, 2, 3)
        count = (w.expand_as(e)).sum(dims)
        part = {"n": count, "err2": (e * e * w).sum(dims), "ref2": (r * r * w).sum(dims),
                "out2": (o * o * w).sum(dims), "dot": (o * r * w).sum(dims),
                "max_abs": (e.abs() * w).amax(dims)}
        part = {k: v.cpu() for k, v in part.items()}
        if self.sums is None:
            self.sums = part
        else:
            for k, v in part.items():
                self.sums[k] = torch.maximum(self.sums[k], v) if k == "max_abs" else self.sums[k] + v

    @staticmethod
    def _metrics(n, err2, ref2, out2, dot, max_abs) -> dict:
        n = max(float(n), 1.0)
        err2, ref2, out2, dot = float(err2), float(ref2), float(out2), float(dot)
        denom = math.sqrt(ref2 * out2)
        return {"rmse": math.sqrt(err2 / n),
                "relative_l2": math.sqrt(err2 / ref2) if ref2 > 0 else float("nan"),
                "cosine": dot / denom if denom > 0 else float("nan"),
                "sqnr_db": 10 * math.log10(ref2 / err2) if err2 > 0 else float("inf"),
                "max_abs": float(max_abs)}

    def metrics(self) -> dict:
        s = self.sums
        total = self._metrics(s["n"].sum(), s["err2"].sum(), s["ref2"].sum(), s["out2"].sum(),
                              s["dot"].sum(), s["max_abs"].max())
        heads = [self._metrics(*(s[k][h] for k in ("n", "err2", "ref2", "out2", "dot", "max_abs")))
                 for h in range(s["n"].numel())]
        total["per_head"] = {k: [hm[k] for hm in heads] for k in heads[0]}
        return total


class LayerErrorRecorder:
    """Tap measuring every attention layer; see the module docstring.

    variants:  {name: Recipe or None}; None means the layer's own recipe (what quantize_model set).
               Default {"fp8": None}. Pass e.g. {"hadamard": Recipe(), "no-hadamard":
               Recipe(hadamard=False)} to see where the rotation helps.
    half_dtype: torch.float16 or torch.bfloat16 for the half-precision baseline.
    propagate: "reference" (return the FP32 reference: local per-layer error) or the name of a
               variant (return its output: errors compound as in deployment).
    """

    def __init__(self, variants: dict | None = None, half_dtype: torch.dtype = torch.float16,
                 propagate: str = "reference"):
        self.variants = dict(variants) if variants else {"fp8": None}
        if half_dtype not in HALF_NAMES:
            raise ValueError(f"half_dtype must be torch.float16 or torch.bfloat16, got {half_dtype}")
        if propagate != "reference" and propagate not in self.variants:
            raise ValueError(f"propagate={propagate!r}: expected 'reference' or one of "
                             f"{list(self.variants)}")
        self.half_dtype, self.half = half_dtype, HALF_NAMES[half_dtype]
        self.propagate = propagate
        self.acc: dict[str, dict[str, ErrorAccumulator]] = {}
        self.recipes: dict[str, dict[str, dict | None]] = {}
        self.heads: dict[str, int] = {}

    def _add(self, layer: str, key: str, out, ref, valid_q):
        self.acc.setdefault(layer, {}).setdefault(key, ErrorAccumulator()).update(out, ref, valid_q)

    def __call__(self, call: AttentionCall, recipe: Recipe | None):
        ref = call.reference(torch.float32)
        half = call.reference(self.half_dtype)
        vq = call.valid_q
        self.heads[call.name] = call.query.shape[1]
        self._add(call.name, f"{self.half} vs fp32", half, ref, vq)
        chosen = ref
        used = self.recipes.setdefault(call.name, {})
        for vname, vrec in self.variants.items():
            r = recipe if vrec is None else vrec
            used[vname] = None if r is None else r.to_dict()
            if r is None:
                continue
            out = call.fp8(r).float()
            self._add(call.name, f"{vname} vs fp32", out, ref, vq)
            self._add(call.name, f"{vname} vs {self.half}", out, half, vq)
            if vname == self.propagate:
                chosen = out
        return chosen

    def results(self) -> dict:
        """{"layers": {name: {"heads", "recipes", "comparisons": {key: metrics}}}, "half"}."""
        layers = {}
        for name, accs in self.acc.items():
            layers[name] = {"heads": self.heads[name], "recipes": self.recipes.get(name, {}),
                            "comparisons": {k: a.metrics() for k, a in accs.items()}}
        return {"half": self.half, "variants": list(self.variants), "layers": layers}


def format_table(results: dict, keys: list[str] | None = None) -> str:
    """Markdown table: one row per (layer, comparison): RMSE, rel L2, cosine, SQNR dB."""
    lines = ["| layer | comparison | RMSE | rel L2 | cosine | SQNR dB |", "|---|---|---|---|---|---|"]
    for name, layer in results["layers"].items():
        for key, m in layer["comparisons"].items():
            if keys is not None and key not in keys:
                continue
            lines.append(f"| {name} | {key} | {m['rmse']:.3e} | {m['relative_l2']:.3e} | "
                         f"{m['cosine']:.6f} | {m['sqnr_db']:.2f} |")
    return "\n".join(lines)


def format_rotation_table(results: dict, on: str, off: str) -> str:
    """Per layer: SQNR vs FP32 with the rotation on / off, the gain, and the best / worst head gain."""
    lines = ["| layer | SQNR dB rotation on | off | gain dB | head gain min / max dB |",
             "|---|---|---|---|---|"]
    for name, layer in results["layers"].items():
        c = layer["comparisons"]
        a, b = c.get(f"{on} vs fp32"), c.get(f"{off} vs fp32")
        if a is None or b is None:
            continue
        gains = [x - y for x, y in zip(a["per_head"]["sqnr_db"], b["per_head"]["sqnr_db"])]
        lines.append(f"| {name} | {a['sqnr_db']:.2f} | {b['sqnr_db']:.2f} | "
                     f"{a['sqnr_db'] - b['sqnr_db']:+.2f} | {min(gains):+.2f} / {max(gains):+.2f} |")
    return "\n".join(lines)


def write_json(report: dict, path) -> None:
    with open(writable(path), "w") as f:
        json.dump(report, f, indent=1, allow_nan=True)


def plot_heatmap(results: dict, path, keys: list[str], metric: str = "sqnr_db") -> None:
    """Per-layer x per-head heatmap of `metric`, one panel per comparison key (PNG via matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results["layers"])
    labels = _short_names(names)
    grids = []
    for key in keys:
        rows = [results["layers"][n]["comparisons"].get(key, {}).get("per_head", {}).get(metric)
                for n in names]
        width = max((len(r) for r in rows if r), default=1)
        grid = torch.full((len(names), width), float("nan"))
        for i, r in enumerate(rows):
            if r:
                grid[i, :len(r)] = torch.tensor(r)
        grids.append(grid)
    finite = torch.cat([g[torch.isfinite(g)] for g in grids])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 + 3.5 * len(keys), 1.2 + 0.45 * len(names)),
                             squeeze=False)
    for ax, key, grid in zip(axes[0], keys, grids):
        im = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(f"{key}: {metric}", fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_yticks(range(len(names)), labels, fontsize=7)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(writable(path), dpi=110)
    plt.close(fig)


def _short_names(names: list[str]) -> list[str]:
    """Drop the dotted prefix and suffix all names share ("encoder.layer.3.attention.self" -> "3")."""
    parts = [n.split(".") for n in names]
    if len(parts) < 2:
        return names
    lo = 0
    while all(len(p) > lo + 1 for p in parts) and len({p[lo] for p in parts}) == 1:
        lo += 1
    hi = 0
    while all(len(p) > lo + hi + 1 for p in parts) and len({p[-1 - hi] for p in parts}) == 1:
        hi += 1
    return [".".join(p[lo:len(p) - hi]) for p in parts]


def embedding_cosine(test: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """(N, E) x (N, E) -> (N,) cosine similarity per row, in float64."""
    return torch.nn.functional.cosine_similarity(test.double(), base.double(), dim=-1)


def logit_kl(base_logits: torch.Tensor, test_logits: torch.Tensor,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid positions of KL(softmax(base) || softmax(test)), logits (..., V)."""
    lb = torch.log_softmax(base_logits.double(), -1)
    lt = torch.log_softmax(test_logits.double(), -1)
    kl = (lb.exp() * (lb - lt)).sum(-1)
    if valid is not None:
        kl = kl[valid]
    return kl.mean()


def perplexity(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> float:
    """exp(mean next-token NLL): logits (B, S, V) predict labels (B, S) shifted by one; valid (B, S)."""
    lp = torch.log_softmax(logits[:, :-1].double(), -1)
    nll = -lp.gather(-1, labels[:, 1:, None]).squeeze(-1)
    m = valid[:, 1:] & valid[:, :-1]
    return float(torch.exp(nll[m].mean()))
