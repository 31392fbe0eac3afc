"""PE(n) on a rotation model with an exactly known answer; batching; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics import prediction_error


def reference_pe(model, x, n):
    """Python loop over start points (the slow reference)."""
    errs = []
    with torch.no_grad():
        for t in range(len(x) - n):
            z = model.init_state(torch.as_tensor(x[t : t + 1]))
            for _ in range(n):
                z = model.step(z)
            errs.append(((model.observe(z)[0].numpy() - x[t + n]) ** 2).mean())
    return float(np.mean(errs))


@pytest.mark.parametrize("n", [1, 5, 20])
def test_rotation_known_answer(rotation_model, circle_data, n):
    # model rotates by 0.1, data by 0.13 per step, unit circle: PE(n) = 2 sin^2(n * 0.03 / 2)
    model = rotation_model(theta=0.1)
    x = circle_data(300, 0.13, phase=0.4)
    r = prediction_error(model, x, n)
    assert r.value == pytest.approx(2 * math.sin(n * 0.03 / 2) ** 2, rel=1e-10)
    assert r.name == "pe" and r.n_steps == 300 and r.details["n_starts"] == 300 - n and r.flag is None


def test_exact_model_has_zero_error(rotation_model, circle_data):
    r = prediction_error(rotation_model(theta=0.2), circle_data(100, 0.2), 20)
    assert r.value == pytest.approx(0.0, abs=1e-24)


def test_batched_over_start_points_and_equals_loop_reference(rotation_model, circle_data):
    model = rotation_model(theta=0.1, radius=0.99)
    x = circle_data(120, 0.11) * np.linspace(1, 2, 120)[:, None]
    r = prediction_error(model, x, 7)
    assert model.calls == 7  # all 113 start points advanced together, one call per step
    assert r.value == pytest.approx(reference_pe(model, x, 7), rel=1e-12)
    model.calls = 0
    chunked = prediction_error(model, x, 7, batch_size=10)
    assert model.calls == 7 * 12 and chunked.value == pytest.approx(r.value, rel=1e-12)


def test_diverging_model_gives_inf_with_flag(rotation_model, circle_data):
    model = rotation_model(theta=0.1, radius=1e200)  # float64 overflow to inf within 2 steps
    r = prediction_error(model, circle_data(50, 0.1), 3)
    assert r.value == math.inf and r.flag == "diverged"


def test_device_argument_does_not_move_the_callers_model(rotation_model, circle_data):
    model = rotation_model(theta=0.1)
    r = prediction_error(model, circle_data(50, 0.1), 2, device="cpu")
    assert r.value == pytest.approx(0.0, abs=1e-24) and model.theta.device.type == "cpu"


def test_eval_mode_is_restored(rotation_model, circle_data):
    model = rotation_model(theta=0.1)
    model.train()
    prediction_error(model, circle_data(50, 0.1), 2)
    assert model.training


def test_bad_inputs(rotation_model, circle_data):
    model, x = rotation_model(), circle_data(30, 0.1)
    with pytest.raises(DataError, match="model observes 2"):
        prediction_error(model, np.c_[x, x], 2)
    with pytest.raises(DataError, match="longer than 30"):
        prediction_error(model, x, 30)
    with pytest.raises(ConfigError, match="n must be"):
        prediction_error(model, x, 0)
    with pytest.raises(ConfigError, match="batch_size"):
        prediction_error(model, x, 2, batch_size=0)
    with pytest.raises(DataError, match="non-finite"):
        prediction_error(model, np.r_[x, [[np.nan, 0]]], 2)


@pytest.mark.gpu
def test_cuda_device_gives_the_cpu_answer(rotation_model, circle_data):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from dsrecon.metrics import evaluate_model

    model, x = rotation_model(theta=0.1), circle_data(400, 0.12)
    cpu = prediction_error(model, x, 5)
    gpu = prediction_error(model, x, 5, device="cuda")
    assert gpu.value == pytest.approx(cpu.value, rel=1e-9) and model.theta.device.type == "cpu"
    out = evaluate_model(model, x, device="cuda", metrics=("dstsp", "dh"))
    assert out["dstsp"] == pytest.approx(evaluate_model(model, x, metrics=("dstsp", "dh"))["dstsp"], rel=1e-9)
