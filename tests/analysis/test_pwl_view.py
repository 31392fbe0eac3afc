"""The batched float64 PWL views agree with every PWL model's own step / affine_piece."""

import numpy as np
import pytest
import torch

from analysis_models import ProtocolOnlyPLRNN, random_plrnn
from dsrecon.analysis.pwl_view import ProtocolView, ShallowView, make_view, solve_cycle_points
from dsrecon.errors import ConfigError
from dsrecon.models import build

ZOO = [
    ("plrnn", {}),
    ("plrnn", {"mean_centered": True}),
    ("shplrnn", {"hidden_dim": 7}),
    ("clipped-shplrnn", {"hidden_dim": 5}),
    ("alrnn", {"n_pwl": 2}),
    ("alrnn", {"n_pwl": 0}),
    ("dendplrnn", {"n_bases": 3}),
    ("dendplrnn", {"n_bases": 2, "clipped": True}),
]


def _zoo(name, hyper):
    m = build(name, obs_dim=2, latent_dim=4, seed=3, **hyper)
    with torch.no_grad():  # make biases non-zero so every branch matters
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return m


@pytest.mark.parametrize("name,hyper", ZOO, ids=[f"{n}-{h}" for n, h in ZOO])
def test_shallow_view_reproduces_model(name, hyper):
    m = _zoo(name, hyper)
    v = make_view(m)
    assert isinstance(v, ShallowView)
    z = np.random.default_rng(0).standard_normal((64, 4)) * 2
    with torch.no_grad():
        ref = m.double().step(torch.as_tensor(z)).numpy()
    assert np.allclose(v.step(z), ref, atol=1e-12)
    W, h = v.pieces(v.bits(z))
    assert np.allclose(np.einsum("bij,bj->bi", W, z) + h, ref, atol=1e-12)
    with torch.no_grad():
        J = m.jacobian(torch.as_tensor(z)).numpy()
    assert np.allclose(W, J, atol=1e-12)
    assert v.region_code(z).shape == (64, m.code_length)


def test_protocol_view_matches_shallow_view():
    m = random_plrnn(5, 1)
    z = np.random.default_rng(1).standard_normal((50, 5))
    sv, pv = ShallowView(m), ProtocolView(m)
    assert np.array_equal(sv.bits(z), pv.bits(z))
    Ws, hs = sv.pieces(sv.bits(z))
    Wp, hp = pv.pieces(pv.bits(z))
    assert np.allclose(Ws, Wp) and np.allclose(hs, hp)
    assert np.allclose(sv.step(z), pv.step(z))
    assert isinstance(make_view(ProtocolOnlyPLRNN(m.a.detach(), m.W.detach(), m.h.detach())), ProtocolView)


def test_make_view_rejects_smooth_models_and_bad_preference():
    from analysis_models import AffineMap

    with pytest.raises(ConfigError, match="PiecewiseLinearModel"):
        make_view(AffineMap(np.eye(2) * 0.5))
    with pytest.raises(ConfigError, match="prefer"):
        make_view(random_plrnn(3, 0), prefer="fast")
    with pytest.raises(ConfigError, match="shallow_form"):
        make_view(ProtocolOnlyPLRNN(np.ones(2), np.eye(2), np.zeros(2)), prefer="shallow")


def test_solve_cycle_points_flags_singular_systems():
    W = np.stack([np.eye(2), np.diag([0.5, 0.5])])[:, None]  # (2, 1, 2, 2): I - W singular for the first
    h = np.ones((2, 1, 2))
    z, ok = solve_cycle_points(W, h)
    assert ok.tolist() == [False, True]
    assert np.allclose(z[1], [2.0, 2.0])
