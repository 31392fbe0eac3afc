"""Shared helpers of the PLRNN family (pwl_common.py) and bad-input handling of every model."""

from __future__ import annotations

import pytest
import torch
from pwl_cases import CASES, IDS, M, N, make

from dsrecon.errors import ConfigError, DataError
from dsrecon.models import build
from dsrecon.models.pwl_common import (
    check_int,
    enumerate_codes,
    offdiagonal,
    shallow_affine_piece,
    shallow_slopes,
    shallow_step,
    unique_codes,
)


def test_enumerate_codes():
    c = enumerate_codes(3)
    assert c.shape == (8, 3) and c.dtype == torch.bool
    assert c[5].tolist() == [True, False, True]  # 5 = 0b101, bit r at column r
    assert len(unique_codes(c)[0]) == 8
    assert enumerate_codes(0).shape == (1, 0)
    with pytest.raises(ConfigError, match="unique_codes"):
        enumerate_codes(40)


def test_unique_codes_counts():
    codes = torch.tensor([[True, False], [True, False], [False, False]])
    u, n = unique_codes(codes)
    assert u.tolist() == [[False, False], [True, False]] and n.tolist() == [1, 2]
    with pytest.raises(DataError):
        unique_codes(codes.long())


def test_offdiagonal_is_differentiable_and_masks_the_diagonal():
    W = torch.randn(4, 4, requires_grad=True)
    O = offdiagonal(W)
    assert torch.all(torch.diagonal(O) == 0) and torch.equal(O + torch.diag(torch.diagonal(W)), W.detach() + 0)
    O.sum().backward()
    torch.testing.assert_close(W.grad, 1 - torch.eye(4))


def test_check_int():
    assert check_int(3, "x", 1) == 3 and check_int(3.0, "x", 1, 5) == 3
    for bad in (0, 6, 2.5, True, "3", None):
        with pytest.raises(ConfigError, match="x must be an integer"):
            check_int(bad, "x", 1, 5)


def test_shallow_affine_piece_on_random_form():
    """The generic affine piece of a random canonical form (unclipped with mixed activations, and
    clipped) reproduces the generic step inside the region."""
    g = torch.Generator().manual_seed(0)
    D = torch.float64
    Lp = 6
    form = {
        "a": torch.randn(M, generator=g, dtype=D), "W1": torch.randn(M, Lp, generator=g, dtype=D),
        "W2": torch.randn(Lp, M, generator=g, dtype=D), "h1": torch.randn(M, generator=g, dtype=D),
        "h2": torch.randn(Lp, generator=g, dtype=D), "relu_mask": torch.tensor([True, False] * 3),
    }
    z = torch.randn(20, M, generator=g, dtype=D)
    u = z @ form["W2"].T
    for clipped in (False, True):
        if clipped:
            W, h = shallow_affine_piece(form, u + form["h2"] > 0, u > 0)
        else:
            W, h = shallow_affine_piece(form, (u + form["h2"] > 0) | ~form["relu_mask"])
        torch.testing.assert_close((W @ z[..., None])[..., 0] + h, shallow_step(form, z, clipped))
        d = shallow_slopes(form, z, clipped)
        assert d.shape == (20, Lp)


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_bad_states_and_codes(name, hyper):
    m = make(name, hyper)
    for fn in (m.step, m.jacobian, m.region_code):
        with pytest.raises(DataError, match=f"M={M}"):
            fn(torch.zeros(4, M + 1, dtype=torch.float64))
        with pytest.raises(DataError, match=f"M={M}"):
            fn(torch.zeros((), dtype=torch.float64))
        with pytest.raises(DataError, match="torch.Tensor"):
            fn([[0.0] * M])
        with pytest.raises(DataError, match="dtype"):
            fn(torch.zeros(4, M, dtype=torch.float32))
    R = m.code_length
    with pytest.raises(DataError, match=f"R={R}"):
        m.affine_piece(torch.zeros(R + 1, dtype=torch.bool))
    if R > 0:  # (an empty code of a linear AL-RNN has no values to be wrong)
        with pytest.raises(DataError, match="bool"):
            m.affine_piece(torch.full((R,), 2))
    with pytest.raises(DataError, match="bool"):
        m.affine_piece(torch.zeros(R))
    with pytest.raises(ConfigError, match="protocol method"):
        m(torch.zeros(2, M, dtype=torch.float64), method="parameters")


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
def test_identity_needs_latent_dim_at_least_obs_dim(name, hyper):
    hyper = dict(hyper)
    if name == "alrnn":
        hyper["n_pwl"] = 1
    with pytest.raises(ConfigError, match="latent_dim M=2 must be >= obs_dim N=3"):
        build(name, obs_dim=3, latent_dim=2, **hyper)
    m = build(name, obs_dim=3, latent_dim=2, obs="affine", **hyper)  # fine with an affine model
    assert m.generate(torch.randn(2, 3), 4).shape == (2, 4, 3)


@pytest.mark.parametrize(
    "name,hyper,match",
    [
        ("alrnn", {"n_pwl": 6}, "n_pwl P"),
        ("alrnn", {"n_pwl": -1}, "n_pwl P"),
        ("alrnn", {"n_pwl": 1.5}, "n_pwl P"),
        ("shplrnn", {"hidden_dim": 0}, "hidden_dim L"),
        ("clipped-shplrnn", {"hidden_dim": -3}, "hidden_dim L"),
        ("dendplrnn", {"n_bases": 0}, "n_bases"),
        ("plrnn", {"obs": "linear"}, "unknown observation model 'linear'"),
        ("plrnn", {"latent_dim": 0}, "latent_dim must be >= 1"),
    ],
)
def test_bad_hyper_parameters(name, hyper, match):
    kw = {"obs_dim": N, "latent_dim": M, **hyper}
    with pytest.raises(ConfigError, match=match):
        build(name, **kw)


def test_unknown_hyper_parameter():
    with pytest.raises(ConfigError, match=r"'plrnn' has no hyper-parameter\(s\) \['hidden_dim'\].*mean_centered"):
        build("plrnn", obs_dim=N, latent_dim=M, hidden_dim=4)
    with pytest.raises(ConfigError, match="n_bases"):
        build("dendplrnn", obs_dim=N, latent_dim=M, n_base=4)
