"""sMAPE, VPT and the max-LE error: hand cases, the dysts reference, flags, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics import lyapunov_exponent_error, smape, valid_prediction_time


def test_smape_hand_cases():
    # terms 0 and |2 - 1| / (2 + 1) = 1/3 -> 200 * mean = 33.33
    r = smape([[1.0], [2.0]], [[1.0], [1.0]])
    assert r.value == pytest.approx(100 / 3, rel=1e-12) and r.n_steps == 2
    assert r.details["per_step"] == pytest.approx([0.0, 200 / 3])
    assert r.details["running"] == pytest.approx([0.0, 100 / 3])
    # terms 2/4 and 2/2 -> 200 * 0.75 = 150
    assert smape([[1.0, -1.0]], [[3.0, 1.0]]).value == pytest.approx(150.0, rel=1e-12)


def test_smape_matches_dysts_unscaled():
    dysts_metrics = pytest.importorskip("dysts.metrics")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 3)), rng.standard_normal((200, 3))
    assert smape(x, y).value == pytest.approx(dysts_metrics.smape(x, y, scaled=False), rel=1e-8)


def test_smape_bounds_and_zero_terms():
    assert smape(np.zeros((3, 2)), np.zeros((3, 2))).value == 0.0
    assert smape([[1.0], [-2.0]], [[-1.0], [2.0]]).value == pytest.approx(200.0)


def test_smape_nonfinite_prediction_counts_as_maximal_term():
    r = smape([[1.0], [1.0]], [[1.0], [np.nan]])
    assert r.value == pytest.approx(100.0) and r.flag == "diverged"


def test_vpt_hand_case():
    # terms 0, 0, 0.5, 0.5...: running sMAPE 0, 0, 33.3 > 30 -> 2 valid steps
    x_true = np.ones((10, 1))
    x_pred = np.r_[np.ones((2, 1)), 3 * np.ones((8, 1))]
    r = valid_prediction_time(x_true, x_pred, dt=0.01, lyapunov_exponent=0.9)
    assert r.details["steps"] == 2 and r.value == pytest.approx(2 * 0.01 * 0.9) and r.flag is None
    # threshold 60: running at index k is 100 (k - 1) / (k + 1) = 33.3, 50, 60 (not > 60), 66.7 -> k = 5
    assert valid_prediction_time(x_true, x_pred, dt=0.01, lyapunov_exponent=0.9, threshold=60).details["steps"] == 5


def test_vpt_matches_dysts_horizoned_convention():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 2)) + 3
    y = x + np.linspace(0, 3, 300)[:, None] * rng.standard_normal((300, 2))
    running = [200 * np.mean(np.abs(x[: i + 1] - y[: i + 1]) / (np.abs(x[: i + 1]) + np.abs(y[: i + 1]))) for i in range(300)]
    expected = int(np.flatnonzero(np.array(running) > 30)[0])
    assert valid_prediction_time(x, y, dt=1.0, lyapunov_exponent=1.0).details["steps"] == expected


def test_vpt_censored_and_diverged():
    x = np.ones((5, 2))
    r = valid_prediction_time(x, x, dt=0.1, lyapunov_exponent=2.0)
    assert r.flag == "censored" and r.value == pytest.approx(5 * 0.1 * 2.0)
    y = x.copy()
    y[0, 0] = np.inf
    r = valid_prediction_time(x, y, dt=0.1, lyapunov_exponent=2.0)
    assert r.flag == "diverged" and r.value == 0.0  # term (1 + 0) / 2 * 200 = 100 > 30 at once


def test_vpt_and_smape_bad_inputs():
    x = np.ones((5, 2))
    with pytest.raises(ConfigError, match="dt"):
        valid_prediction_time(x, x, dt=0, lyapunov_exponent=1)
    with pytest.raises(ConfigError, match="lyapunov_exponent"):
        valid_prediction_time(x, x, dt=0.1, lyapunov_exponent=-0.5)
    with pytest.raises(DataError, match="equal length"):
        smape(x, x[:4])
    with pytest.raises(DataError, match="dimensions"):
        smape(x, x[:, :1])


def test_lyapunov_exponent_error():
    r = lyapunov_exponent_error(0.8, 0.906)
    assert r.value == pytest.approx(0.106 / 0.906) and r.details["signed"] < 0

    class Spectrum:
        exponents = np.array([0.95, 0.0, -14.5])

    assert lyapunov_exponent_error(Spectrum(), [0.906, 0, -14.572]).value == pytest.approx(0.044 / 0.906)
    bad = lyapunov_exponent_error([np.nan, 0.0], 0.906)
    assert bad.value == math.inf and bad.flag == "diverged"
    with pytest.raises(DataError, match="non-zero"):
        lyapunov_exponent_error(0.5, 0.0)
    with pytest.raises(DataError, match="empty"):
        lyapunov_exponent_error([], 0.9)
