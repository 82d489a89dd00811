"""Input generators, metrics and the `fp8attn report` command."""
import json
import math

import pytest
import torch

from fp8attn.analysis import inputs, metrics, report
from fp8attn.cli import main


# ---------------------------------------------------------------- inputs

@pytest.mark.parametrize("name", sorted(inputs.GENERATORS))
def test_generators_seeded_shapes_dtypes(name):
    a = inputs.make_inputs(name, 2, 4, 33, 64, seed=3, kv_heads=2, seqlen_k=17, dtype=torch.float16)
    b = inputs.make_inputs(name, 2, 4, 33, 64, seed=3, kv_heads=2, seqlen_k=17, dtype=torch.float16)
    c = inputs.make_inputs(name, 2, 4, 33, 64, seed=4, kv_heads=2, seqlen_k=17, dtype=torch.float16)
    assert [t.shape for t in a] == [(2, 4, 33, 64), (2, 2, 17, 64), (2, 2, 17, 64)]
    assert all(t.dtype == torch.float16 for t in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))
    assert all(torch.isfinite(t).all() for t in a)


def test_make_inputs_rejects_unknown_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown input distribution"):
        inputs.make_inputs("gaussian", 1, 1, 8, 64)
    with pytest.raises(ValueError, match="kv_heads"):
        inputs.fa3_outliers(1, 3, 8, 64, kv_heads=2)
    with pytest.raises(ValueError, match="seqlen"):
        inputs.fa3_outliers(1, 1, 0, 64)


def test_fa3_outliers_statistics():
    """Var = 1 + 100 * 0.001 = 1.1; P(|x| > 6) ~ 0.001 * P(|N(0, 101)| > 6) = 5.5e-4 (normal part
    ~2e-9). 2^20 entries: var std ~ sqrt(E x^4 / n) ~ 0.005, count 577 +- 24."""
    q, _, _ = inputs.fa3_outliers(1, 16, 512, 128, seed=0)
    x = q.double().flatten()
    assert abs(float(x.var()) - 1.1) < 0.03
    frac_big = float((x.abs() > 6).double().mean())
    assert 4.5e-4 < frac_big < 6.7e-4
    q0, _, _ = inputs.fa3_outliers(1, 16, 512, 128, seed=0, outlier_prob=0.0)
    assert float(q0.abs().max()) < 6.5


def test_structured_generators():
    _, k, _ = inputs.channel_outliers(1, 2, 256, 64, seed=1, n_channels=3, magnitude=20.0)
    std = k.std(dim=(0, 1, 2))
    assert int((std > 10).sum()) == 3 and float(std[std < 10].max()) < 1.3
    _, k, v = inputs.massive_tokens(1, 2, 256, 64, seed=1, n_tokens=4, magnitude=50.0)
    norms = k.norm(dim=-1)[0, 0]
    assert float(norms[0]) > 20 * float(norms.median())
    assert int((norms > 10 * norms.median()).sum()) == 4
    assert int((v.norm(dim=-1)[0, 0] > 10 * v.norm(dim=-1)[0, 0].median()).sum()) == 4
    q, _, _ = inputs.shifted(1, 2, 512, 64, seed=1, scale=4.0, shift=5.0)
    mean, std = q.mean(dim=(0, 1, 2)), q.std(dim=(0, 1, 2))
    assert float(mean.abs().mean()) > 2.0 and abs(float(std.mean()) - 4.0) < 0.3


# ---------------------------------------------------------------- metrics

def test_metrics_known_values():
    ref = torch.tensor([3.0, 4.0])
    out = torch.tensor([3.0, 5.0], dtype=torch.float16)
    assert metrics.rmse(out, ref) == pytest.approx(math.sqrt(0.5))
    assert metrics.relative_l2(out, ref) == pytest.approx(1 / 5)
    assert metrics.max_abs(out, ref) == 1.0
    assert metrics.sqnr_db(out, ref) == pytest.approx(10 * math.log10(25))
    assert metrics.cosine_similarity(ref * 2, ref) == pytest.approx(1.0)
    assert metrics.cosine_similarity(-ref, ref) == pytest.approx(-1.0)
    assert metrics.sqnr_db(ref, ref) == math.inf
    assert metrics.relative_l2(torch.zeros(2), torch.zeros(2)) == 0.0
    m = metrics.error_metrics(out, ref)
    assert set(m) == {"rmse", "relative_l2", "max_abs", "cosine", "sqnr_db"}
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.rmse(torch.zeros(3), torch.zeros(2))


def test_metrics_in_float64():
    """A difference below float32 resolution at 1.0 must still be seen."""
    ref = torch.ones(4, dtype=torch.float64)
    out = ref + 1e-9
    assert metrics.rmse(out, ref) == pytest.approx(1e-9, rel=1e-6)


# ---------------------------------------------------------------- report

def test_report_claims_on_small_configuration():
    """The report's claims at 4 heads x 2048 tokens (seconds). At 512 tokens the no-Hadamard ratio
    falls to ~1.5 (the plot's sequence-length panel shows the trend), so seqlen stays at 2048."""
    result = report.run_table(batch=1, heads=4, seqlen=2048, head_dim=128, seed=1)
    rmse = {r["name"]: r["rmse"] for r in result["rows"]}
    assert set(rmse) == set(report.PAPER_RMSE)
    failed = [c["claim"] for c in result["claims"] if not c["passed"]]
    assert not failed, (failed, rmse)
    fa3 = next(r for r in result["rows"] if r["name"] == "fp8_fa3")
    assert fa3["ratio_to_fa3_recipe"] == 1.0
    assert fa3["ratio_to_paper"] == pytest.approx(fa3["rmse"] / 9.1e-3)


def test_evaluate_claims_can_fail():
    good = dict(standard_fp16=3e-4, flash_fp16=1e-4, fp8_baseline=2e-2, fp8_fa3=8e-3,
                fp8_no_block=8.5e-3, fp8_no_hadamard=2e-2, fp8_q_search=7.7e-3)
    assert all(c["passed"] for c in report.evaluate_claims(good))
    bad = dict(good, fp8_no_hadamard=1.1e-2, fp8_no_block=1.2e-2, flash_fp16=5e-4,
               fp8_q_search=8e-3)
    passed = [c["passed"] for c in report.evaluate_claims(bad)]
    assert passed == [False, True, True, False, False, False, False]


def test_cli_report_json(tmp_path, capsys):
    path = tmp_path / "out" / "r.json"          # a folder that does not exist yet
    assert main(["report", "--heads", "2", "--seqlen", "256", "--head-dim", "64", "--seed", "3",
                 "--causal", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "FP8 FA3 recipe" in printed and ("PASS" in printed or "FAIL" in printed)
    data = json.loads(path.read_text())
    assert data["shape"] == {"batch": 1, "heads": 2, "seqlen": 256, "head_dim": 64}
    assert data["causal"] is True and data["seed"] == 3
    assert len(data["rows"]) == 7 and len(data["claims"]) == 7
    assert all(0 < r["rmse"] < 0.1 for r in data["rows"])


def test_cli_report_rejects_bad_head_dim():
    with pytest.raises(SystemExit):
        main(["report", "--head-dim", "56"])


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    xs = {"outlier_std": [0.0, 10.0], "seqlen": [128, 256]}
    data = {"shape": report.PLOT_SHAPE}
    for key, x in xs.items():
        data[key] = {"x": x, **{n: [1e-2, 2e-2] for n in report.PLOT_ROWS}}
    path = tmp_path / "p.png"
    report.plot(data, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_small():
    data = report.sweep(outlier_stds=(0.0, 10.0), seqlens=(64,), shape={"batch": 1, "heads": 1,
                                                                        "head_dim": 64})
    assert data["outlier_std"]["x"] == [0.0, 10.0]
    # larger outliers cost accuracy for every FP8 recipe
    for n in ("fp8_fa3", "fp8_no_hadamard", "fp8_baseline"):
        lo, hi = data["outlier_std"][n]
        assert 0 < lo < hi
