"""Delay embedding (against a hand-written loop) and partial observation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.data import Trajectory, delay_embed, partial_observation
from dsrecon.errors import ConfigError, DataError


def _embed_loop(x, lags, dims=None, direction="past"):
    """Reference: x (T, N) -> rows t = tau_max..T-1 (past) or 0..T-1-tau_max (future)."""
    T, N = x.shape
    tmax = max(lags)
    pairs = [(t, d) for t in lags for d in range(N)] if dims is None else list(zip(lags, dims))
    rows = []
    times = range(tmax, T) if direction == "past" else range(0, T - tmax)
    for t in times:
        rows.append([x[t - tau, d] if direction == "past" else x[t + tau, d] for tau, d in pairs])
    return np.array(rows)


@pytest.fixture
def x():
    return np.random.default_rng(2).standard_normal((120, 3))


@pytest.mark.parametrize("direction", ["past", "future"])
@pytest.mark.parametrize("lags", [[0, 20, 68, 55, 10], [0, 1], [3], [5, 0, 2]])
def test_delay_embed_matches_loop(x, lags, direction):
    got = delay_embed(x, lags, direction=direction)
    ref = _embed_loop(x, lags, direction=direction)
    assert got.shape == (120 - max(lags), 3 * len(lags))
    np.testing.assert_array_equal(got, ref)


def test_ecg_convention_on_scalar_series():
    s = np.arange(200.0)  # s(t) = t makes the convention visible
    y = delay_embed(s, [0, 20, 68, 55, 10])
    assert y.shape == (132, 5)
    np.testing.assert_array_equal(y[0], [68, 48, 0, 13, 58])  # row 0 is t = 68: s(t - tau_k)
    yf = delay_embed(s, [0, 20, 68, 55, 10], direction="future")
    np.testing.assert_array_equal(yf[0], [0, 20, 68, 55, 10])  # s(t + tau_k) at t = 0


def test_uniform_variant_and_dims(x):
    np.testing.assert_array_equal(delay_embed(x, dim=3, tau=4), delay_embed(x, [0, 4, 8]))
    np.testing.assert_array_equal(delay_embed(x[:, 0], dim=3, tau=4), _embed_loop(x[:, :1], [0, 4, 8]))
    got = delay_embed(x, [0, 7, 0], dims=[0, 0, 2])
    np.testing.assert_array_equal(got, _embed_loop(x, [0, 7, 0], dims=[0, 0, 2]))
    # uniform lags: the two directions give the same vectors, coordinates reversed
    np.testing.assert_array_equal(delay_embed(x[:, 0], dim=4, tau=3),
                                  delay_embed(x[:, 0], dim=4, tau=3, direction="future")[:, ::-1])


def test_batched_torch_and_trajectory(x):
    b = np.stack([x, 2 * x])
    got = delay_embed(b, [0, 5])
    assert got.shape == (2, 115, 6)
    for i in range(2):
        np.testing.assert_array_equal(got[i], _embed_loop(b[i], [0, 5]))
    gt = delay_embed(torch.tensor(b), [0, 5])
    assert isinstance(gt, torch.Tensor)
    np.testing.assert_array_equal(gt.numpy(), got)
    t = Trajectory(b, dt=0.1).standardize()
    e = delay_embed(t, [0, 5], dims=[2, 1])
    assert isinstance(e, Trajectory) and e.shape == (2, 115, 2) and e.dt == 0.1
    np.testing.assert_array_equal(e.mean, t.mean[[2, 1]])
    np.testing.assert_allclose(e.destandardize().values[0], _embed_loop(x, [0, 5], dims=[2, 1]))
    assert e.meta["delay_embedding"] == {"lags": [0, 5], "dims": [2, 1], "direction": "past"}


def test_delay_embed_bad_input(x):
    with pytest.raises(ConfigError, match="not both"):
        delay_embed(x, [0, 1], dim=2, tau=1)
    with pytest.raises(ConfigError, match="pass lags"):
        delay_embed(x, dim=2)
    with pytest.raises(ConfigError, match=">= 0"):
        delay_embed(x, [0, -3])
    with pytest.raises(ConfigError, match="integers"):
        delay_embed(x, [0, 1.5])
    with pytest.raises(ConfigError, match="dim must be >= 1"):
        delay_embed(x, dim=0, tau=1)
    with pytest.raises(ConfigError, match="empty"):
        delay_embed(x, [])
    with pytest.raises(ConfigError, match="direction"):
        delay_embed(x, [0, 1], direction="forward")
    with pytest.raises(ConfigError, match="dims has 1 entries but there are 2 lags"):
        delay_embed(x, [0, 1], dims=[0])
    with pytest.raises(ConfigError, match=r"dims \[3\] out of range.*N=3"):
        delay_embed(x, [0, 1], dims=[0, 3])
    with pytest.raises(ConfigError, match="identical columns"):
        delay_embed(x, [1, 1])
    with pytest.raises(DataError, match="T=120 time steps but the largest delay is 120"):
        delay_embed(x, [0, 120])
    with pytest.raises(DataError, match="expected"):
        delay_embed(np.zeros((2, 3, 4, 5)), [0, 1])


def test_partial_observation(x):
    np.testing.assert_array_equal(partial_observation(x, [2, 0]), x[:, [2, 0]])
    np.testing.assert_array_equal(partial_observation(x, 1), x[:, [1]])
    tt = partial_observation(torch.tensor(x), [1])
    assert isinstance(tt, torch.Tensor) and tt.shape == (120, 1)
    t = Trajectory(x, dt=0.01).standardize()
    p = partial_observation(t, [2, 1])
    assert p.shape == (1, 120, 2) and p.meta["observed_dims"] == [2, 1]
    np.testing.assert_array_equal(p.std, t.std[[2, 1]])
    q = partial_observation(p, [1])
    assert q.meta["observed_dims"] == [1]  # indexes the original coordinates
    np.testing.assert_allclose(q.destandardize().values[0, :, 0], x[:, 1])


def test_partial_observation_bad_dims(x):
    with pytest.raises(ConfigError, match=r"dims \[3, -1\] out of range for data with N=3.*0\.\.2"):
        partial_observation(x, [0, 3, -1])
    with pytest.raises(ConfigError, match="repeats"):
        partial_observation(x, [0, 0])
    with pytest.raises(ConfigError, match="at least one"):
        partial_observation(x, [])
    with pytest.raises(DataError, match="expected"):
        partial_observation(x[:, 0], [0])
