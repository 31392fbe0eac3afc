"""Forcing strategies and the forced rollouts: known answers and the fused/generic equivalence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dsrecon.errors import ConfigError, UnknownNameError
from dsrecon.models import build
from dsrecon.models.base import DynamicalModel
from dsrecon.training import TrainConfig
from dsrecon.training.forcing import (
    AdaptiveGTF,
    ConstantGTF,
    FreeRunning,
    SparseTF,
    data_states,
    force_mask,
    fused_available,
    fused_rollout,
    generic_rollout,
    jacobian_kappa,
    make_forcing,
)


class LinearMap(DynamicalModel):
    """z' = A z (identity observation of the first N units): a hand-checkable test model."""

    name = "test-linear"

    def __init__(self, A: torch.Tensor, obs_dim: int) -> None:
        super().__init__(obs_dim, A.shape[0])
        self.A = nn.Parameter(A.clone())

    def step(self, z):
        return z @ self.A.T


class OwnForce(LinearMap):
    """A model with its own forcing rule (not of the mask form): the fused path must not apply."""

    def force(self, z, x, alpha):
        return z * (1 - alpha)


# ------------------------------------------------------------------- strategies
def test_constant_free_and_sparse_alpha_vectors():
    assert np.array_equal(ConstantGTF(0.3).alpha_vector(4), [0.3] * 4)
    assert np.array_equal(FreeRunning().alpha_vector(3), [0.0] * 3)
    a = SparseTF(3).alpha_vector(10)
    assert np.array_equal(a, [1, 0, 0, 1, 0, 0, 1, 0, 0, 1])  # window steps 0, tau, 2 tau, ...
    assert SparseTF(1).alpha_vector(5).tolist() == [1.0] * 5
    assert SparseTF(2, n_members=3).alpha_matrix(4).shape == (3, 4)


def test_sparse_tf_agrees_with_fused_helper():
    fused = pytest.importorskip("dsrecon.training.fused")
    for T, tau in [(10, 3), (200, 16), (7, 8)]:
        assert np.array_equal(SparseTF(tau).alpha_vector(T), fused.stf_alpha(T, tau).numpy())


def test_adaptive_gtf_rule_known_answers():
    f = AdaptiveGTF(alpha0=1.0, update_every=5, decay=0.999)
    assert [s for s in range(12) if f.wants_update(s)] == [4, 9]  # every 5th optimiser step
    f.update(np.array([2.0]))  # ahat = 0.5 < a = 1: slow decay
    assert f.current_alpha[0] == pytest.approx(0.999 * 1.0 + 0.001 * 0.5)
    f.update(np.array([0.5]))  # kappa < 1: ahat = max(0, 1 - 2) = 0
    assert f.current_alpha[0] == pytest.approx(0.999 * (0.999 + 0.0005))
    f.load_state_dict({"alpha": [0.2]})
    f.update(np.array([4.0]))  # ahat = 0.75 > a: jump up
    assert f.current_alpha[0] == pytest.approx(0.75)
    f.update(np.array([math.nan]))  # a broken model leaves alpha unchanged
    assert f.current_alpha[0] == pytest.approx(0.75)
    f.update(np.array([0.0]))
    assert f.current_alpha[0] == pytest.approx(0.999 * 0.75)


def test_adaptive_gtf_members_adapt_independently():
    f = AdaptiveGTF(alpha0=0.1, n_members=2)
    f.update(np.array([10.0, 1.0]))
    assert f.current_alpha == pytest.approx([0.9, 0.999 * 0.1])
    assert np.allclose(f.alpha_matrix(3), [[0.9] * 3, [0.0999] * 3])
    with pytest.raises(ConfigError):
        f.load_state_dict({"alpha": [0.1]})


def test_make_forcing_uses_config():
    assert make_forcing(TrainConfig(forcing="gtf", alpha=0.25)).alpha_vector(2).tolist() == [0.25, 0.25]
    agtf = make_forcing(TrainConfig(forcing="agtf"))
    assert agtf.adaptive and agtf.current_alpha == [1.0]  # the reference start value
    assert make_forcing(TrainConfig(forcing="stf", tau=4)).alpha_vector(5).tolist() == [1, 0, 0, 0, 1]
    assert make_forcing(TrainConfig(forcing="free")).alpha_vector(2).tolist() == [0, 0]
    with pytest.raises(UnknownNameError, match="forcing"):
        TrainConfig(forcing="teacher")


def test_jacobian_kappa_is_max_of_geometric_means():
    # J(z) = diag(|z|): spectral norm = max |z_i|
    jac = lambda z: torch.diag_embed(z.abs())  # noqa: E731
    zhat = torch.tensor([[[2.0, 0.1], [8.0, 0.0]],  # norms 2, 8 -> geometric mean 4
                         [[0.5, 1.0], [1.0, 0.0]]])  # norms 1, 1 -> 1
    assert jacobian_kappa(jac, zhat) == pytest.approx(4.0)


# ------------------------------------------------------------------- rollouts
def _linear(M=2, N=2):
    A = torch.tensor([[0.5, 0.2], [-0.1, 0.9]], dtype=torch.float64)[:M, :M]
    return LinearMap(A, N)


def test_generic_rollout_known_answers():
    m = _linear()
    x = torch.randn(3, 5, 2, dtype=torch.float64)  # (B, T+1, N), T = 4
    A = m.A.detach()
    full = generic_rollout(m, x, [1.0] * 4)  # full forcing: z_{t+1} = A x_t
    assert torch.allclose(full, x[:, :4] @ A.T)
    free = generic_rollout(m, x, [0.0] * 4)  # free: A^t x_0
    z = x[:, 0]
    for t in range(4):
        z = z @ A.T
        assert torch.allclose(free[:, t], z)
    half = generic_rollout(m, x, [0.5] * 4)  # GTF: z_{t+1} = A ((1 - a) z_t + a x_t)
    z = x[:, 0]
    for t in range(4):
        z = (0.5 * z + 0.5 * x[:, t]) @ A.T
        assert torch.allclose(half[:, t], z)


def test_sparse_forcing_cuts_the_gradient_at_forced_steps():
    m = _linear()
    x = torch.randn(2, 7, 2, dtype=torch.float64, requires_grad=True)
    z = generic_rollout(m, x, SparseTF(3).alpha_vector(6))  # forced at window steps 0 and 3
    (g,) = torch.autograd.grad(z[:, 5].sum(), x)
    assert torch.count_nonzero(g[:, :3]) == 0  # before the forcing at t = 3: cut
    assert torch.count_nonzero(g[:, 3]) > 0
    z = generic_rollout(m, x, FreeRunning().alpha_vector(6))
    (g,) = torch.autograd.grad(z[:, 5].sum(), x)
    assert torch.count_nonzero(g[:, 0]) > 0  # free running: everything flows back to x_0


def test_force_mask_detects_partial_full_and_other_forcing():
    m = build("shplrnn", obs_dim=2, latent_dim=5, hidden_dim=4, seed=0)
    assert force_mask(m).tolist() == [True, True, False, False, False]
    a = build("shplrnn", obs_dim=2, latent_dim=5, hidden_dim=4, obs="affine", seed=0)
    assert force_mask(a).tolist() == [True] * 5
    assert force_mask(OwnForce(torch.eye(2), 2)) is None
    assert fused_available(m, torch.device("cpu"), "off") is None
    assert fused_available(_linear(), torch.device("cpu"), "on") is None  # not piecewise linear


def test_data_states_free_units_are_zero():
    m = build("alrnn", obs_dim=2, latent_dim=4, n_pwl=2, seed=0)
    x = torch.randn(3, 5, 2)
    zh = data_states(m, x)
    assert zh.shape == (3, 5, 4) and torch.equal(zh[..., :2], x) and not zh[..., 2:].any()


CASES = [
    ("plrnn", {}, "identity"),
    ("dendplrnn", {"n_bases": 3}, "identity"),
    ("dendplrnn", {"n_bases": 3, "clipped": True}, "identity"),
    ("shplrnn", {"hidden_dim": 6}, "identity"),
    ("shplrnn", {"hidden_dim": 6}, "affine"),
    ("clipped-shplrnn", {"hidden_dim": 6}, "identity"),
    ("alrnn", {"n_pwl": 2}, "identity"),
]


@pytest.mark.parametrize("name,hyper,obs", CASES)
@pytest.mark.parametrize("alpha", ["gtf", "stf", "mixed"])
def test_fused_rollout_equals_generic_rollout(name, hyper, obs, alpha):
    """Values and gradients (parameters and data) of the two paths agree in float64."""
    pytest.importorskip("dsrecon.training.fused")
    m = build(name, obs_dim=2, latent_dim=4, seed=3, obs=obs, dtype=torch.float64, **hyper)
    mask = force_mask(m)
    assert mask is not None
    T = 9
    a = {"gtf": np.full(T, 0.3), "stf": SparseTF(4).alpha_vector(T),
         "mixed": np.linspace(0, 1, T)}[alpha]
    x = torch.randn(5, T + 1, 2, dtype=torch.float64, requires_grad=True)
    outs = []
    for path in ("generic", "fused"):
        z = generic_rollout(m, x, a) if path == "generic" else fused_rollout(m, x, a, mask)
        w = torch.cos(torch.arange(z.numel(), dtype=z.dtype).reshape(z.shape))  # fixed weights
        grads = torch.autograd.grad((z * w).sum(), [x, *m.parameters()], allow_unused=True)
        outs.append((z.detach(), grads))
    (z1, g1), (z2, g2) = outs
    assert torch.allclose(z1, z2, atol=1e-10)
    for a1, a2 in zip(g1, g2):
        if a1 is None or a2 is None:
            assert (a1 is None or not a1.any()) and (a2 is None or not a2.any())
        else:
            assert torch.allclose(a1, a2, atol=1e-9)


def test_spectral_norms_equal_svd_norm():
    """sqrt(lambda_max(J^T J)) equals matrix_norm(ord=2), including rank-deficient and zero J."""
    from dsrecon.training.forcing import spectral_norms

    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 7, 4, generator=g, dtype=torch.float64)
    mats = torch.randn(5, 7, 4, 4, generator=g, dtype=torch.float64) * torch.logspace(-3, 3, 7, dtype=torch.float64)[None, :, None, None]
    mats[0, 0] = 0.0
    mats[0, 1] = torch.outer(torch.arange(1.0, 5.0, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    lookup = {tuple(zz.tolist()): m for zz, m in zip(z.reshape(-1, 4), mats.reshape(-1, 4, 4))}

    def jac(c):
        return torch.stack([lookup[tuple(v.tolist())] for v in c.reshape(-1, 4)]).reshape(*c.shape[:-1], 4, 4)

    got = spectral_norms(jac, z)
    want = torch.linalg.matrix_norm(mats, ord=2)
    assert got.shape == (5, 7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
