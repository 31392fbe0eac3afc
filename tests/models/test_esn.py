"""Echo state network: reservoir construction, closed-form readout, closed-loop generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError
from dsrecon.models import build

F64 = torch.float64


def linear_data(B=20, T=60, seed=0):
    """x_{t+1} = A x_t + c with a slowly decaying rotation, random initial conditions."""
    g = torch.Generator().manual_seed(seed)
    A = torch.tensor([[0.95, 0.25], [-0.25, 0.95]], dtype=F64)
    c = torch.tensor([0.1, -0.2], dtype=F64)
    xs = [torch.randn(B, 2, generator=g, dtype=F64)]
    for _ in range(T - 1):
        xs.append(xs[-1] @ A.T + c)
    return torch.stack(xs, 1), A, c


def test_reservoir_hyper_parameters_are_respected():
    m = build("esn", obs_dim=2, latent_dim=None, reservoir_size=200, spectral_radius=0.8, density=0.1, input_scaling=0.5, seed=0)
    assert m.latent_dim == 202 and not list(m.parameters())
    rho = torch.linalg.eigvals(m.W.double()).abs().max().item()
    assert rho == pytest.approx(0.8, rel=1e-5)
    assert 0.08 < (m.W != 0).double().mean().item() < 0.12
    assert m.W_in.abs().max() <= 0.5 and torch.equal(m.bias, torch.zeros(200))


def test_readout_recovers_a_linear_system_exactly():
    x, A, c = linear_data()
    m = build("esn", obs_dim=2, latent_dim=2 + 15, seed=0, dtype=F64)
    m.fit_readout(x, washout=5, ridge=0.0)
    assert m.train_mse_ < 1e-20
    torch.testing.assert_close(m.W_out[:, 0], c, atol=1e-8, rtol=0)  # bias feature
    torch.testing.assert_close(m.W_out[:, 1:3], A, atol=1e-8, rtol=0)  # input features
    assert m.W_out[:, 3:].abs().max() < 1e-7  # reservoir unused
    gen = m.generate(x[:, :10], 50)  # closed loop after a 9-step warm-up
    torch.testing.assert_close(gen, x[:, 9:59], atol=1e-7, rtol=0)


def test_ridge_shrinks_the_readout():
    x, _, _ = linear_data()
    m = build("esn", obs_dim=2, latent_dim=30, seed=0, dtype=F64)
    norms = [m.fit_readout(x, washout=5, ridge=r).W_out[:, 1:].norm().item() for r in (1e-8, 1e-1, 1e2)]
    assert norms[0] > norms[1] > norms[2]


def test_fit_closed_form_on_a_trajectory_drops_failed_rows():
    x, _, _ = linear_data(B=3)
    vals = x.numpy().copy()
    vals[1] = np.nan
    traj = Trajectory(values=vals, dt=0.1, failed=np.array([False, True, False]))
    m = build("esn", obs_dim=2, latent_dim=20, seed=0, dtype=F64, washout=5)
    assert m.fit_closed_form(traj) is m and bool(m.fitted)
    ref = build("esn", obs_dim=2, latent_dim=20, seed=0, dtype=F64).fit_readout(x[[0, 2]], washout=5)
    torch.testing.assert_close(m.W_out, ref.W_out)
    assert m.trainable_by_gradient is False


def test_generate_with_a_long_warm_up_tracks_a_chaotic_map():
    """Logistic map x -> 3.9 x (1 - x): a fitted ESN predicts several steps accurately."""
    T = 2000
    xs = np.empty(T)
    xs[0] = 0.3
    for t in range(T - 1):
        xs[t + 1] = 3.9 * xs[t] * (1 - xs[t])
    x = torch.tensor(xs, dtype=F64)[None, :, None]
    m = build("esn", obs_dim=1, latent_dim=101, seed=0, dtype=F64, input_scaling=0.5, spectral_radius=0.5, ridge=1e-10)
    m.fit_readout(x[:, :1500], washout=100)
    assert m.train_mse_ < 1e-6
    gen = m.generate(x[:, 1400:1600], 6)  # gen[:, 0] = x[1599]
    assert (gen[0, :, 0] - x[0, 1599:1605, 0]).abs().max() < 1e-2


def test_errors():
    m = build("esn", obs_dim=2, latent_dim=12, seed=0)
    with pytest.raises(ConfigError, match="fit"):
        m.generate(torch.zeros(1, 2), 3)
    with pytest.raises(DataError):
        m.fit_readout(torch.zeros(50, 3))
    with pytest.raises(DataError):
        m.fit_readout(torch.zeros(50, 2), washout=60)
    with pytest.raises(DataError):
        m.fit_readout(torch.full((50, 2), float("nan")))
    with pytest.raises(ConfigError):
        m.fit_readout(torch.zeros(50, 2), ridge=-1.0)
    with pytest.raises(ConfigError):
        build("esn", obs_dim=2, latent_dim=None)
    with pytest.raises(ConfigError, match="12"):
        build("esn", obs_dim=2, latent_dim=20, reservoir_size=10)
    for bad in (dict(leak_rate=1.5), dict(density=0.0), dict(spectral_radius=-1.0), dict(washout=-2), dict(ridge=-1.0)):
        with pytest.raises(ConfigError):
            build("esn", obs_dim=2, latent_dim=12, **bad)
