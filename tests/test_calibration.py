"""Calibration: observers, scale selection, per-layer search, recipe files, KV-cache scale export."""
import json
import math

import pytest
import torch

from calibration import (RecipeFileError, TensorStats, calibrate, export_kv_cache_scales, load_recipe,
                         mse_clip, save_recipe, select_descales)
from calibration.observers import HIST_MIN_EXP, QKVObserver
from fp8attn import Recipe
from fp8attn.formats import saturating_cast
from fp8attn.integration import AttentionCall

transformers = pytest.importorskip("transformers")
from fp8attn.integration.models import ByteTokenizer, read_sentences, tiny_bert, tiny_llama  # noqa: E402


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_tensor_stats_absmax_percentile_histogram():
    g = _gen(0)
    st = TensorStats.empty(2)
    chunks = [torch.randn(2, 300, generator=g) * torch.tensor([[1.0], [5.0]]) for _ in range(3)]
    chunks[1][0, 7] = float("nan")
    chunks[2][1, 0] = float("inf")
    for c in chunks:
        st.update(c, sample_size=10_000, gen=g)
    allv = torch.cat(chunks, 1).abs()
    finite = torch.where(torch.isfinite(allv), allv, torch.zeros(()))
    assert torch.equal(st.absmax, finite.amax(1).double())
    assert st.count.tolist() == [900, 900]
    assert st.histogram.sum(1).tolist() == [900, 900]
    # the sample holds every value (sample_size > count): percentiles are exact
    assert torch.allclose(st.percentile(50.0), torch.quantile(finite.double(), 0.5, dim=1))
    # a value in [2^e, 2^(e+1)) lands in bin e - HIST_MIN_EXP
    one = TensorStats.empty(1)
    one.update(torch.tensor([[1.5, 0.3, 0.0]]), 8, g)
    assert one.histogram[0, 0 - HIST_MIN_EXP] == 1 and one.histogram[0, -2 - HIST_MIN_EXP] == 1
    assert one.histogram[0, 0] == 1  # zero goes to the lowest bin
    small = TensorStats.empty(1)
    small.update(torch.arange(1000.0)[None], 100, g)
    assert small.sample.shape == (1, 100)


def test_observer_ignores_padding():
    g = _gen(1)
    q, k, v = (torch.randn(2, 2, 6, 32, generator=g) for _ in range(3))
    k[1, :, 4:] = 1e4  # padded keys of sequence 1
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False
    obs = QKVObserver()
    out = obs(AttentionCall("l", q, k, v, mask, None, 0.2), Recipe())
    assert float(obs.stats["l"]["k"].absmax.max()) < 10
    assert obs.stats["l"]["k"].count.tolist() == [(6 + 4) * 32] * 2
    ref = AttentionCall("l", q, k, v, mask, None, 0.2).reference()
    assert torch.equal(out, ref)


def test_scale_selection_methods():
    g = _gen(2)
    x = torch.randn(1, 20000, generator=g)
    x[0, :5] = 60.0  # a few outliers
    st = TensorStats.empty(1)
    st.update(x, 20000, g)
    d_max = select_descales(st, "e4m3", "max")
    d_pct = select_descales(st, "e4m3", "percentile", 99.9)
    d_mse = select_descales(st, "e4m3", "mse")
    assert float(d_max) == pytest.approx(60.0 / 448)
    assert float(d_pct) < float(d_max)

    def qdq_mse(d):
        a = x.abs()
        return float(((saturating_cast(a / d, "e4m3").float() * d - a) ** 2).mean())
    assert qdq_mse(d_mse) <= qdq_mse(d_max) * 1.0001
    assert qdq_mse(d_mse) <= qdq_mse(d_pct) * 1.0001
    assert mse_clip(torch.zeros(10), 0.0, "e4m3") == 0.0
    zero = TensorStats.empty(1)
    zero.update(torch.zeros(1, 10), 10, g)
    assert float(select_descales(zero, "e4m3", "max")) == 1.0  # all-zero head: finite scale
    with pytest.raises(ValueError, match="unknown scale method"):
        select_descales(st, "e4m3", "median")


def _llama_data(n=8):
    tok = ByteTokenizer()
    s = read_sentences(limit=n)
    return [dict(zip(("input_ids", "attention_mask"), tok.batch(s[i:i + 4], 48)))
            for i in range(0, n, 4)]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    model = tiny_llama(0)
    calib = calibrate(model, _llama_data(), search={"hadamard": (True, False)},
                      progress_bar=False, provenance={"model": "tiny-llama"})
    path = save_recipe(calib, tmp_path_factory.mktemp("recipe") / "tiny")
    return model, calib, path


def test_calibrate_results(calibrated):
    model, calib, _ = calibrated
    assert list(calib.layers) == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    for lc in calib.layers.values():
        assert set(lc.errors) == {"e4m3/block/hadamard", "e4m3/block/no-hadamard"}
        assert all(0 < e < 0.2 for e in lc.errors.values())
        assert lc.tensors["k_scale"].shape == (2,) and lc.tensors["q_scale"].shape == (4,)
        assert (lc.tensors["k_scale"] <= lc.tensors["k_amax"] / 448 * (1 + 1e-6)).all()
        assert set(lc.kv_cache_rel_l2) == {"max", "percentile", "mse"}
    assert "_fp8attn_applied" not in model.__dict__  # the model is left unquantised
    assert calib.provenance["model"] == "tiny-llama" and calib.provenance["tokens"] > 0


def test_calibrate_choice_rule():
    model = tiny_llama(0)
    data = _llama_data(4)
    keep = calibrate(model, data, search={"hadamard": (False,)}, min_gain=10.0, progress_bar=False)
    assert all(lc.recipe == Recipe() for lc in keep.layers.values())
    best = calibrate(model, data, search={"hadamard": (False,), "granularity": ("block", "token")},
                     min_gain=0.0, progress_bar=False)
    labels = {Recipe(): "e4m3/block/hadamard", Recipe(hadamard=False): "e4m3/block/no-hadamard",
              Recipe(hadamard=False, granularity="token"): "e4m3/token/no-hadamard"}
    for lc in best.layers.values():  # min_gain 0: the lowest error wins
        assert set(lc.errors) == set(labels.values())
        assert lc.errors[labels[lc.recipe]] == min(lc.errors.values())


def test_recipe_round_trip_and_apply(calibrated):
    model, calib, path = calibrated
    loaded = load_recipe(path, model)
    assert loaded.equals(calib)
    assert save_recipe(loaded, path.parent / "again").read_text().replace("again", "tiny") == \
        path.read_text()
    import fp8attn
    from fp8attn.integration.report import logit_kl
    batch = _llama_data(4)[0]
    with torch.no_grad():
        base = model(**batch).logits
        fp8attn.quantize_model(model, loaded)
        try:
            states = fp8attn.integration.layer_states(model)
            assert [s.recipe for s in states.values()] == [lc.recipe for lc in calib.layers.values()]
            assert all(s.static is None for s in states.values())
        finally:
            fp8attn.dequantize_model(model)
        fp8attn.quantize_model(model, loaded, static_kv_scales=True)
        try:
            state = fp8attn.integration.layer_states(model)["model.layers.1.self_attn"]
            assert torch.equal(state.static.k_descale,
                               calib.layers["model.layers.1.self_attn"].tensors["k_scale"])
            static_logits = model(**batch).logits
        finally:
            fp8attn.dequantize_model(model)
    assert 0 < float(logit_kl(base, static_logits, batch["attention_mask"].bool())) < 0.01


def _rewrite(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _copy(path, tmp_path):
    dst = tmp_path / "r.json"
    dst.write_text(path.read_text().replace("tiny.safetensors", "r.safetensors"))
    (tmp_path / "r.safetensors").write_bytes(path.with_suffix(".safetensors").read_bytes())
    return dst


def test_corrupted_files_refused(calibrated, tmp_path):
    model, calib, path = calibrated
    p = _copy(path, tmp_path)
    p.write_text(p.read_text()[:-20])
    with pytest.raises(RecipeFileError, match="not valid JSON"):
        load_recipe(p)

    p = _copy(path, tmp_path)
    _rewrite(p, lambda d: d.update(version=99))
    with pytest.raises(RecipeFileError, match="version 99"):
        load_recipe(p)

    p = _copy(path, tmp_path)
    _rewrite(p, lambda d: d.update(format="something-else"))
    with pytest.raises(RecipeFileError, match="not an fp8attn recipe"):
        load_recipe(p)

    p = _copy(path, tmp_path)
    t = tmp_path / "r.safetensors"
    raw = bytearray(t.read_bytes())
    raw[-3] ^= 0xFF
    t.write_bytes(bytes(raw))
    with pytest.raises(RecipeFileError, match="SHA-256"):
        load_recipe(p)

    p = _copy(path, tmp_path)
    _rewrite(p, lambda d: d["layers"][0]["recipe"].update(fmt="e3m4"))
    with pytest.raises(RecipeFileError, match="not a valid Recipe"):
        load_recipe(p)

    p = _copy(path, tmp_path)
    _rewrite(p, lambda d: d["layers"][1].update(num_kv_heads=4))
    with pytest.raises(RecipeFileError, match="shape"):
        load_recipe(p)

    p = _copy(path, tmp_path)
    (tmp_path / "r.safetensors").unlink()
    with pytest.raises(RecipeFileError, match="not found"):
        load_recipe(p)


def test_wrong_shapes_and_bad_scales_refused_even_with_matching_hash(calibrated, tmp_path):
    """A tensor file rewritten consistently (new hash) is still checked against the manifest."""
    from safetensors.torch import load_file, save_file
    from calibration.recipe_io import _sha256
    _, _, path = calibrated
    for change, message in ((lambda t: t.update({"model.layers.0.self_attn/k_scale":
                                                 torch.ones(3)}), "shape"),
                            (lambda t: t.update({"model.layers.0.self_attn/v_scale":
                                                 torch.tensor([0.1, -1.0])}), "non-positive"),
                            (lambda t: t.update({"extra/k_scale": torch.ones(2)}), "not listed")):
        p = _copy(path, tmp_path)
        tp = tmp_path / "r.safetensors"
        tensors = load_file(str(tp))
        change(tensors)
        save_file(tensors, str(tp))
        _rewrite(p, lambda d: d.update(tensors_sha256=_sha256(tp)))
        with pytest.raises(RecipeFileError, match=message):
            load_recipe(p)


def test_mismatched_model_refused(calibrated, tmp_path):
    import dataclasses
    model, calib, path = calibrated
    first, second = calib.layers.values()
    renamed = dataclasses.replace(calib, layers={
        "model.layers.7.self_attn": dataclasses.replace(first, name="model.layers.7.self_attn"),
        second.name: second})
    p = save_recipe(renamed, tmp_path / "renamed")
    with pytest.raises(RecipeFileError, match=r"unknown to the model \['model.layers.7"):
        load_recipe(p, model)
    load_recipe(p)  # consistent on its own: only the model check refuses it
    with pytest.raises(RecipeFileError, match="layers do not match"):
        load_recipe(path, tiny_bert(0))
    import fp8attn
    with pytest.raises(ValueError, match="does not match the model"):
        fp8attn.quantize_model(tiny_bert(0), load_recipe(path))


def test_export_kv_cache_scales(calibrated, tmp_path):
    from safetensors import safe_open
    _, calib, _ = calibrated
    per_layer = export_kv_cache_scales(calib, tmp_path / "kv.safetensors")
    assert set(per_layer) == {f"model.layers.{i}.self_attn.{k}_scale" for i in (0, 1) for k in "kv"}
    lc = calib.layers["model.layers.0.self_attn"]
    assert per_layer["model.layers.0.self_attn.k_scale"].shape == ()
    assert float(per_layer["model.layers.0.self_attn.k_scale"]) == float(lc.tensors["k_scale"].max())
    per_head = export_kv_cache_scales(calib, tmp_path / "kvh.safetensors", per_head=True)
    assert per_head["model.layers.1.self_attn.v_scale"].shape == (2,)
    with safe_open(str(tmp_path / "kv.safetensors"), "pt") as f:
        assert f.metadata()["convention"] == "x ~= x8 * scale"
        assert torch.equal(f.get_tensor("model.layers.1.self_attn.v_scale"),
                           per_layer["model.layers.1.self_attn.v_scale"])


def test_cli_calibrate_then_evaluate(tmp_path, capsys):
    from fp8attn.cli import main
    stem = tmp_path / "cli"
    assert main(["calibrate", "--model", "tiny-llama", "--limit", "4", "--batch-size", "4",
                 "--method", "max", "--search", "hadamard", "--out", str(stem), "--no-progress",
                 "--kv-scales", str(tmp_path / "kv.safetensors"), "--per-head"]) == 0
    assert (tmp_path / "cli.json").is_file() and (tmp_path / "kv.safetensors").is_file()
    assert main(["evaluate", "--model", "tiny-llama", "--limit", "4", "--batch-size", "4",
                 "--recipe", str(tmp_path / "cli.json"), "--json", str(tmp_path / "ev.json"),
                 "--no-progress"]) == 0
    report = json.loads((tmp_path / "ev.json").read_text())
    assert 0 <= report["end_to_end"]["logit_kl_mean"] < 0.01
    assert math.isfinite(report["per_layer"]["layers"]["model.layers.1.self_attn"]["comparisons"]
                         ["fp8 vs fp32"]["sqnr_db"])
    assert main(["evaluate", "--model", "tiny-llama", "--limit", "4", "--batch-size", "4",
                 "--recipe", str(tmp_path / "cli.json"), "--static-kv-scales", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "chosen recipe" in out and out.count("logit_kl_mean") == 2
