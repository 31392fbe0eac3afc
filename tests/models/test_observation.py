"""Identity / affine observation models and the initial-state mapping (observation.py)."""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError, DataError
from dsrecon.models.observation import AffineObservation, IdentityObservation, make_observation

D = torch.float64


def test_identity_observation_maps():
    obs = IdentityObservation(2, 4).double()
    with torch.no_grad():
        obs.L.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=D))
    x = torch.tensor([[1.0, 3.0]], dtype=D)
    z = obs.init_state(x)
    torch.testing.assert_close(z, torch.tensor([[1.0, 3.0, 7.0, -3.0]], dtype=D))
    torch.testing.assert_close(obs.observe(z), x)
    zc = torch.tensor([[9.0, 9.0, 5.0, 6.0]], dtype=D)
    torch.testing.assert_close(obs.data_state(x, zc), torch.tensor([[1.0, 3.0, 5.0, 6.0]], dtype=D))
    B, b = obs.affine_map()
    torch.testing.assert_close(B, torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=D))
    assert torch.all(b == 0)
    # gradient reaches L through init_state
    obs.init_state(x).sum().backward()
    torch.testing.assert_close(obs.L.grad, torch.tensor([[1.0, 3.0], [1.0, 3.0]], dtype=D))


def test_identity_square_has_no_L_and_returns_a_copy():
    obs = IdentityObservation(3, 3)
    assert obs.L is None and len(list(obs.parameters())) == 0
    x = torch.randn(2, 3)
    z = obs.init_state(x)
    assert torch.equal(z, x) and z.data_ptr() != x.data_ptr()


def test_identity_requires_enough_latent_units():
    with pytest.raises(ConfigError, match="latent_dim M=2 must be >= obs_dim N=3.*affine"):
        IdentityObservation(3, 2)


@pytest.mark.parametrize("N,M", [(3, 6), (3, 3)])
def test_affine_pseudo_inverse_recovers_observations(N, M):
    torch.manual_seed(0)
    obs = AffineObservation(N, M).double()
    with torch.no_grad():
        obs.b.copy_(torch.randn(N, dtype=D))
    x = torch.randn(10, N, dtype=D)
    z = obs.init_state(x)
    torch.testing.assert_close(obs.observe(z), x)
    torch.testing.assert_close(z, (x - obs.b.detach()) @ torch.linalg.pinv(obs.B.detach()).T)
    # minimum-norm solution: z lies in the row space of B
    P = obs.B.detach().T @ torch.linalg.pinv(obs.B.detach().T)
    torch.testing.assert_close(z @ P.T, z)
    # data_state ignores the current state (full forcing)
    torch.testing.assert_close(obs.data_state(x, torch.randn(10, M, dtype=D)), z)


def test_affine_more_observations_than_latents_is_least_squares():
    torch.manual_seed(1)
    obs = AffineObservation(5, 2).double()
    x = torch.randn(7, 5, dtype=D)
    z = obs.init_state(x)
    sol = torch.linalg.lstsq(obs.B.detach(), (x - obs.b.detach()).T).solution.T
    torch.testing.assert_close(z, sol)


def test_affine_init_state_is_differentiable_in_B_and_b():
    torch.manual_seed(2)
    obs = AffineObservation(2, 4).double()
    x = torch.randn(5, 2, dtype=D)

    def f(B, b):
        return ((x - b) @ torch.linalg.pinv(B).T).pow(2).sum()

    obs.init_state(x).pow(2).sum().backward()
    B0, b0 = obs.B.detach().clone().requires_grad_(), obs.b.detach().clone().requires_grad_()
    gB, gb = torch.autograd.grad(f(B0, b0), [B0, b0])
    torch.testing.assert_close(obs.B.grad, gB)
    torch.testing.assert_close(obs.b.grad, gb)
    assert obs.B.grad.abs().sum() > 0
    # finite differences on one entry of B
    eps = 1e-6
    Bp, Bm = B0.detach().clone(), B0.detach().clone()
    Bp[0, 1] += eps
    Bm[0, 1] -= eps
    fd = (f(Bp, b0.detach()) - f(Bm, b0.detach())) / (2 * eps)
    assert abs(fd.item() - gB[0, 1].item()) < 1e-5 * max(1.0, abs(fd.item()))


def test_make_observation_kinds_and_errors():
    assert isinstance(make_observation("Identity", 2, 3), IdentityObservation)
    assert isinstance(make_observation("affine", 4, 3), AffineObservation)
    with pytest.raises(ConfigError, match="unknown observation model 'afine'.*affine"):
        make_observation("afine", 2, 3)
    with pytest.raises(ConfigError, match="l_init"):
        make_observation("identity", 2, 3, l_init="normal")


@pytest.mark.parametrize("obs", [IdentityObservation(2, 3), AffineObservation(2, 3)])
def test_observation_bad_inputs(obs):
    with pytest.raises(DataError, match="shape"):
        obs.init_state(torch.randn(4, 3))
    with pytest.raises(DataError, match="shape"):
        obs.init_state(torch.randn(2))
    with pytest.raises(DataError, match="torch.Tensor"):
        obs.init_state([[1.0, 2.0]])
    with pytest.raises(DataError, match="floating"):
        obs.init_state(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(DataError, match="dtype"):
        obs.init_state(torch.randn(4, 2, dtype=D))
    with pytest.raises(DataError, match="z must have shape"):
        obs.data_state(torch.randn(4, 2), torch.randn(4, 5))
