"""Additive Gaussian observation noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.data import Trajectory, add_observation_noise
from dsrecon.errors import ConfigError, DataError


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((20000, 3)) * [1.0, 10.0, 0.1]


def test_relative_noise_scales_with_each_dimension(x):
    y = add_observation_noise(x, 0.05, seed=1)
    eps = y - x
    np.testing.assert_allclose(eps.std(0) / x.std(0), 0.05, rtol=0.03)
    np.testing.assert_allclose(eps.mean(0) / x.std(0), 0, atol=0.003)
    # known answer: the noise is level * sd * N(0,1) from default_rng(seed)
    ref = np.random.default_rng(1).standard_normal(x.shape) * 0.05 * x.std(0)
    np.testing.assert_allclose(eps, ref, rtol=1e-12, atol=1e-15)


def test_absolute_noise_and_determinism(x):
    y = add_observation_noise(x, 0.5, seed=3, relative=False)
    np.testing.assert_allclose((y - x).std(0), 0.5, rtol=0.03)
    np.testing.assert_array_equal(y, add_observation_noise(x, 0.5, seed=3, relative=False))
    assert not np.array_equal(y, add_observation_noise(x, 0.5, seed=4, relative=False))
    np.testing.assert_array_equal(add_observation_noise(x, 0.0, seed=0), x)


def test_types_are_preserved(x):
    t = torch.tensor(x, dtype=torch.float32)
    yt = add_observation_noise(t, 0.1, seed=5)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    yn = add_observation_noise(x.astype(np.float32), 0.1, seed=5)
    assert yn.dtype == np.float32
    np.testing.assert_array_equal(yt.numpy(), yn)  # same noise, same rounding
    vals = np.stack([x[:100], x[100:200]])
    vals[1] = np.nan
    tr = Trajectory(vals, failed=np.array([False, True]))
    out = add_observation_noise(tr, 0.1, seed=0)
    assert isinstance(out, Trajectory) and np.isnan(out.values[1]).all() and np.isfinite(out.values[0]).all()
    assert out.meta["observation_noise"] == {"level": 0.1, "relative": True, "seed": 0}
    assert "observation_noise" not in tr.meta


def test_bad_level(x):
    for bad in (-0.1, np.nan, np.inf, "a"):
        with pytest.raises(ConfigError, match="noise level"):
            add_observation_noise(x, bad)
    with pytest.raises(DataError, match="expected"):
        add_observation_noise(x[:, 0], 0.1)
