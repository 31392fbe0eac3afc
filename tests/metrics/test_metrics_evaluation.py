"""The paper protocol on a toy model, metrics.json merging, aggregation, MetricResult."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dsrecon.errors import ConfigError, DataError, RunDirError, UnknownNameError
from dsrecon.metrics import (
    MetricResult,
    aggregate,
    aggregate_runs,
    evaluate_model,
    evaluate_run,
    hellinger_distance,
    merge_metrics_json,
    state_space_divergence,
)
from dsrecon.models import save_model


@pytest.fixture
def test_series(circle_data):
    # a quasi-periodic circle orbit with noise: T = 800 (D_H needs >= 320)
    rng = np.random.default_rng(0)
    return circle_data(800, 0.23) * (1 + 0.05 * rng.standard_normal((800, 1)))


# ------------------------------------------------------------------------- protocol
def test_protocol_lengths_and_values_match_direct_computation(rotation_model, test_series):
    model = rotation_model(theta=0.2)
    out = evaluate_model(model, test_series)
    proto = out["protocol"]
    assert (proto["n_test"], proto["n_generate"], proto["transient"], proto["n_compared"]) == (800, 1000, 200, 800)
    assert proto["initial_conditions"] == [0]
    np.testing.assert_allclose(model.x0_seen.numpy(), test_series[:1])
    x_gen = model.generate(torch.as_tensor(test_series[:1]), 1000)[0, 200:].numpy()
    assert out["dstsp"] == pytest.approx(state_space_divergence(test_series, x_gen).value, rel=1e-12)
    assert out["dh"] == pytest.approx(hellinger_distance(test_series, x_gen).value, rel=1e-12)
    assert out["pe_result"]["details"]["n"] == 20 and out["pe"] > 0
    assert out["flags"] == {"dstsp": [], "dh": [], "pe": []}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_several_initial_conditions_report_the_median(rotation_model, test_series):
    model = rotation_model(theta=0.2)
    out = evaluate_model(model, test_series, n_initial_conditions=4, metrics=("dstsp", "dh"), n_generate=500, transient=100)
    assert out["protocol"]["initial_conditions"] == [0, 200, 400, 600]
    np.testing.assert_allclose(model.x0_seen.numpy(), test_series[[0, 200, 400, 600]])
    per = [ic["dstsp"]["value"] for ic in out["per_initial_condition"]]
    assert len(per) == 4 and out["dstsp"] == pytest.approx(np.median(per))
    assert "pe" not in out and out["protocol"]["n_compared"] == 400


def test_exact_model_is_near_the_floor_and_wrong_model_is_not(rotation_model, circle_data):
    x = circle_data(2000, 0.05)
    good = evaluate_model(rotation_model(theta=0.05), x)
    bad = evaluate_model(rotation_model(theta=0.5), x)
    assert good["pe"] == pytest.approx(0.0, abs=1e-20)
    assert good["dh"] < 0.05 < 0.5 < bad["dh"]


def test_diverging_model_gives_flags_and_null_values(rotation_model, test_series):
    out = evaluate_model(rotation_model(theta=0.2, radius=1.5), test_series)
    assert out["dstsp"] is None and out["dh"] == 1.0 and out["pe"] > 1
    assert out["flags"]["dstsp"] == ["diverged"] and out["flags"]["dh"] == ["diverged"]
    json.dumps(out, allow_nan=False)


def test_protocol_bad_inputs(rotation_model, test_series):
    model = rotation_model()
    with pytest.raises(ConfigError, match="transient"):
        evaluate_model(model, test_series, n_generate=100, transient=100)
    with pytest.raises(UnknownNameError, match="metric"):
        evaluate_model(model, test_series, metrics=("dstsp", "mse"))
    with pytest.raises(ConfigError, match="n_initial_conditions"):
        evaluate_model(model, test_series, n_initial_conditions=0)
    with pytest.raises(DataError, match="model observes 2"):
        evaluate_model(model, np.c_[test_series, test_series])
    with pytest.raises(DataError, match="longer than"):
        evaluate_model(model, test_series[:10], metrics=("pe",))
    with pytest.raises(DataError, match="320 compared steps"):
        evaluate_model(model, test_series, n_generate=300, transient=0)
    with pytest.raises(DataError, match="constant in dimension"):
        evaluate_model(model, np.c_[test_series[:, 0], np.ones(800)])
    assert model.x0_seen is None  # nothing was generated before the errors
    with pytest.raises(ConfigError, match="dstsp_method"):
        evaluate_model(model, test_series, dstsp_method="knn")


# ------------------------------------------------------------------------- run dirs
def test_evaluate_run_merges_metrics_json(tmp_path, rotation_model, test_series):
    run = tmp_path / "run"
    save_model(rotation_model(theta=0.2), run)
    (run / "metrics.json").write_text(json.dumps({"train": {"loss": 0.1}, "evaluation": {"stale": 1}}))
    test_file = tmp_path / "test.npy"
    np.save(test_file, test_series)
    out = evaluate_run(run, test_file, metrics=("dstsp", "pe"))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["train"] == {"loss": 0.1}
    assert saved["evaluation"]["dstsp"] == pytest.approx(out["dstsp"]) and "stale" not in saved["evaluation"]
    assert saved["evaluation"]["protocol"]["test"]["sha256"] == out["protocol"]["test"]["sha256"]
    assert len(out["protocol"]["test"]["sha256"]) == 64


def test_evaluate_run_with_array_and_without_writing(tmp_path, rotation_model, test_series):
    run = tmp_path / "run"
    save_model(rotation_model(theta=0.2), run)
    out = evaluate_run(run, test_series[None], metrics=("pe",), write=False)
    assert out["pe"] > 0 and not (run / "metrics.json").exists()


def test_metrics_json_errors(tmp_path):
    with pytest.raises(RunDirError, match="not a directory"):
        merge_metrics_json(tmp_path / "missing", {"a": 1})
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not valid JSON"):
        merge_metrics_json(tmp_path, {"a": 1})
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="not a JSON object"):
        merge_metrics_json(tmp_path, {"a": 1})
    with pytest.raises(RunDirError):
        evaluate_run(tmp_path / "nothing", np.zeros((10, 2)))


def test_merge_writes_strict_json_for_infinite_values(tmp_path):
    merge_metrics_json(tmp_path, {"evaluation": {"dstsp": math.inf, "r": MetricResult(math.inf, 5, "dstsp", "diverged")}})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["evaluation"]["dstsp"] is None and saved["evaluation"]["r"]["flag"] == "diverged"


# ------------------------------------------------------------------------- aggregation
def test_aggregate_known_values():
    s = aggregate([1, 2, 3, 4, 100])
    assert s["median"] == 3 and s["mad"] == 1  # |x - 3| = 2, 1, 0, 1, 97 -> median 1 (unscaled)
    assert s["mean"] == 22 and s["sd"] == pytest.approx(math.sqrt((441 + 400 + 361 + 324 + 6084) / 4))
    assert s["n"] == 5 and s["n_nonfinite"] == 0


def test_aggregate_nonfinite_conventions():
    vals = [1.0, None, 3.0, math.inf, math.nan]
    drop = aggregate(vals)
    assert (drop["median"], drop["mad"], drop["n"], drop["n_nonfinite"]) == (2.0, 1.0, 2, 3)
    worst = aggregate(vals, nonfinite="worst")
    assert worst["median"] == math.inf and worst["mad"] == 0.0 and worst["mean"] == math.inf and worst["sd"] is None
    worst2 = aggregate([1.0, 2.0, 4.0, None], nonfinite="worst")
    assert worst2["median"] == 3.0 and worst2["mad"] == 1.5
    assert aggregate([5.0]) == {"median": 5.0, "mad": 0.0, "mean": 5.0, "sd": None, "n": 1, "n_nonfinite": 0}
    assert aggregate([])["median"] is None
    with pytest.raises(ConfigError):
        aggregate([1.0], nonfinite="ignore")
    with pytest.raises(DataError):
        aggregate(["a lot"])


def test_aggregate_runs():
    runs = [
        {"dstsp": 0.1, "dh": 0.2, "protocol": {"n_test": 5}, "flags": {}},
        {"evaluation": {"dstsp": 0.3, "dh": None}},
        {"dstsp": MetricResult(0.2, 10, "dstsp"), "pe": 1e-3},
    ]
    agg = aggregate_runs(runs)
    assert set(agg) == {"dstsp", "dh", "pe"}
    assert agg["dstsp"]["median"] == pytest.approx(0.2) and agg["dstsp"]["n"] == 3
    assert agg["dh"]["n"] == 1 and agg["dh"]["n_nonfinite"] == 1 and agg["pe"]["n"] == 1


# ------------------------------------------------------------------------- MetricResult
def test_metric_result_contract():
    r = MetricResult(0.5, 100, "dh", None, {"per_dim": np.array([0.25, 0.75]), "k": np.int64(3)})
    assert float(r) == 0.5 and r.ok
    d = r.to_dict()
    assert d == {"name": "dh", "value": 0.5, "n_steps": 100, "flag": None, "details": {"per_dim": [0.25, 0.75], "k": 3}}
    json.dumps(d, allow_nan=False)
    inf = MetricResult(math.inf, 10, "dstsp", "diverged")
    assert inf.to_dict()["value"] is None and MetricResult.from_dict(inf.to_dict()).value == math.inf
    with pytest.raises(ValueError, match="NaN"):
        MetricResult(math.nan, 1, "x")
    with pytest.raises(ValueError, match="flag"):
        MetricResult(1.0, 1, "x", "weird")
    with pytest.raises(AttributeError):
        r.value = 2.0  # frozen
