"""Initialisations of DESIGN.md section 3 and the reference latent regularisers."""

from __future__ import annotations

import math

import pytest
import torch
from pwl_cases import CASES, IDS, make

from dsrecon.errors import ConfigError
from dsrecon.models import build
from dsrecon.models.pwl_common import normalized_positive_definite

M = 40


def test_normalized_positive_definite():
    K = normalized_positive_definite(30)
    assert K.dtype == torch.get_default_dtype()
    K = K.double()
    torch.testing.assert_close(K, K.T)
    ev = torch.linalg.eigvalsh(K)
    assert ev.min() > 0
    assert abs(ev.max().item() - 1.0) < 1e-6


@pytest.mark.parametrize("name,hyper", [("plrnn", {}), ("dendplrnn", {"n_bases": 4})])
def test_plrnn_and_dendplrnn_init_is_the_split_of_K(name, hyper):
    m = build(name, obs_dim=3, latent_dim=M, seed=3, **hyper)
    K = (torch.diag(m.A) + m.W).detach().double()
    torch.testing.assert_close(torch.diagonal(m.W), torch.zeros(M))
    torch.testing.assert_close(K, K.T)
    ev = torch.linalg.eigvalsh(K)
    assert ev.min() > 0 and abs(ev.max().item() - 1.0) < 1e-5  # spectral radius 1
    assert torch.all((m.A > 0) & (m.A <= 1))
    assert torch.all(m.h == 0)
    # the same K as normalized_positive_definite under the same seed (after the identity L draw)
    torch.manual_seed(3)
    torch.empty(M - 3, 3).uniform_()  # the observation model's L is drawn first
    K_ref = normalized_positive_definite(M)
    torch.testing.assert_close(K.float(), K_ref, rtol=1e-5, atol=1e-6)


def test_dendplrnn_basis_init():
    m = build("dendplrnn", obs_dim=3, latent_dim=M, n_bases=25, seed=1)
    assert m.alpha.abs().max() <= 1 / math.sqrt(25) and m.alpha.abs().max() > 0.5 / math.sqrt(25)
    assert m.H.shape == (M, 25) and 0.8 < m.H.std().item() < 1.2
    m.init_thresholds_from_data(torch.tensor([[-3.0, 1.0], [2.0, 5.0]]), generator=torch.Generator().manual_seed(0))
    assert m.H.min() >= -3 and m.H.max() <= 5 and m.H.max() - m.H.min() > 6


def test_alrnn_init():
    m = build("alrnn", obs_dim=3, latent_dim=M, n_pwl=2, seed=2)
    assert abs(m.W.std().item() - 0.01) < 0.001 and abs(m.W.mean().item()) < 0.001
    assert torch.diagonal(m.W).abs().sum() > 0  # full W
    assert torch.all((m.A > 0) & (m.A <= 1)) and torch.all(m.h == 0)
    # AL-RNN initial-state matrix L ~ U(+-1/sqrt(N))
    r = 1 / math.sqrt(3)
    assert m.obs.L.shape == (M - 3, 3) and m.obs.L.abs().max() <= r and m.obs.L.abs().max() > 0.8 * r


@pytest.mark.parametrize("clipped", [False, True])
def test_shplrnn_init(clipped):
    L = 60
    m = build("clipped-shplrnn" if clipped else "shplrnn", obs_dim=3, latent_dim=M, hidden_dim=L, seed=4)
    for w, r in ((m.W1, 1 / math.sqrt(L)), (m.W2, 1 / math.sqrt(M))):
        assert w.abs().max() <= r and w.abs().max() > 0.95 * r
        assert abs(w.std().item() - r / math.sqrt(3)) < 0.1 * r  # U(-r, r) has sd r / sqrt(3)
    assert m.W1.shape == (M, L) and m.W2.shape == (L, M)
    assert torch.all(m.h1 == 0)
    if clipped:
        assert m.h2.abs().max() <= 1 / math.sqrt(L) and m.h2.abs().max() > 0.5 / math.sqrt(L)
    else:
        assert torch.all(m.h2 == 0)
    assert torch.all((m.A > 0) & (m.A <= 1))
    # GTF-shPLRNN identity model: L ~ Glorot uniform, U(+-sqrt(6 / M))
    assert m.obs.L.abs().max() <= math.sqrt(6 / M) and m.obs.L.abs().max() > 0.8 * math.sqrt(6 / M)


def test_affine_observation_init():
    m = build("shplrnn", obs_dim=5, latent_dim=M, hidden_dim=4, obs="affine", seed=0)
    assert m.obs.B.shape == (5, M) and torch.all(m.obs.b == 0)
    assert abs(m.obs.B.std().item() - math.sqrt(2 / M)) < 0.2 * math.sqrt(2 / M)


def _l2(*ts):
    return sum((t.detach() ** 2).sum() for t in ts)


def test_latent_regularization_reference_formulas():
    m = make("plrnn", {})
    W = m.W.detach() - torch.diag(torch.diagonal(m.W.detach()))
    torch.testing.assert_close(m.latent_regularization(), _l2(1 - m.A, W, m.h))
    m = make("dendplrnn", {"n_bases": 3})
    W = m.W.detach() - torch.diag(torch.diagonal(m.W.detach()))
    torch.testing.assert_close(m.latent_regularization(), _l2(1 - m.A, W, m.h, m.alpha))
    for name in ("shplrnn", "clipped-shplrnn"):
        m = make(name, {"hidden_dim": 7})
        torch.testing.assert_close(m.latent_regularization(), _l2(1 - m.A, m.W1, m.W2, m.h1, m.h2))
    m = make("alrnn", {"n_pwl": 2})  # L1 in the AL-RNN reference
    expected = sum(t.detach().abs().sum() for t in (1 - m.A, m.W, m.h))
    torch.testing.assert_close(m.latent_regularization(), expected)


def test_latent_regularization_is_zero_at_its_target_and_differentiable():
    m = build("alrnn", obs_dim=2, latent_dim=4, n_pwl=1)
    with torch.no_grad():
        m.A.fill_(1.0), m.W.zero_(), m.h.zero_()
    assert m.latent_regularization().item() == 0.0
    m = make("shplrnn", {"hidden_dim": 7})
    reg = m.latent_regularization()
    assert reg.dim() == 0 and reg > 0
    g = torch.autograd.grad(reg, [m.A, m.W1])
    torch.testing.assert_close(g[0], -2 * (1 - m.A.detach()))
    torch.testing.assert_close(g[1], 2 * m.W1.detach())


def test_manifold_attractor_regularization():
    m = make("plrnn", {}, latent_dim=10)
    W = m.W.detach() - torch.diag(torch.diagonal(m.W.detach()))
    # kappa = 0.3 -> the last floor(3) units; Euclidean norms, not squared (Schmidt et al. 2021)
    expected = (1 - m.A.detach()[-3:]).norm() + W[-3:].norm() + m.h.detach()[-3:].norm()
    torch.testing.assert_close(m.latent_regularization(mar_ratio=0.3), expected)
    assert m.latent_regularization(mar_ratio=0.05).item() == 0.0  # floor(0.5) = 0 units
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="mar_ratio"):
            m.latent_regularization(mar_ratio=bad)


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_mar_available_for_every_model(name, hyper):
    m = make(name, hyper)
    r = m.latent_regularization(mar_ratio=1.0)
    assert r.dim() == 0 and r > 0


def test_observation_regularization():
    m = make("plrnn", {})
    torch.testing.assert_close(m.observation_regularization(), (m.obs.L.detach() ** 2).sum())
    m = build("plrnn", obs_dim=3, latent_dim=3, dtype=torch.float64)  # no L when M == N
    r = m.observation_regularization()
    assert r.item() == 0.0 and r.dtype == torch.float64
    m = make("plrnn", {}, obs="affine")
    s = torch.linalg.svdvals(m.obs.B.detach())
    torch.testing.assert_close(m.observation_regularization(), (1 - s[0] / (s[-1] + 1e-8)) ** 2)
