"""Partial Lyapunov spectra (n_exponents=k): the k-column frame, propagated by JVPs for models
without an analytic Jacobian, against the full frame (slow reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.analysis import lyapunov_spectrum
from dsrecon.analysis.lyapunov import _map_sums
from dsrecon.analysis.lyapunov_tangent import jvp_tangent, matrix_tangent
from dsrecon.errors import ConfigError
from dsrecon.models import build
from dsrecon.models.base import DynamicalModel


def _lstm():
    return build("lstm", obs_dim=3, latent_dim=19, seed=0).to(torch.float64)   # M = 3 + 2 * 8


def test_jvp_tangent_is_the_jacobian_times_the_frame():
    m = _lstm()
    z = torch.randn(3, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Q = torch.randn(3, 19, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = matrix_tangent(lambda s: DynamicalModel.jacobian(m, s))(z, Q)       # autograd J (B, M, M) @ Q
    torch.testing.assert_close(jvp_tangent(m.step)(z, Q), ref, rtol=1e-12, atol=1e-12)


def test_k_column_frame_gives_the_leading_columns_of_the_full_frame():
    """The QR log-sums of a k-column frame (JVP tangents) equal the first k of the full frame's."""
    m = _lstm()
    z = torch.randn(2, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    jac = lambda s: DynamicalModel.jacobian(m, s)  # noqa: E731
    full = _map_sums(m.step, jac, z, 20, 200, 1, 50, 4, "lstm")                       # (B, blocks, 19)
    part = _map_sums(m.step, jac, z, 20, 200, 1, 50, 4, "lstm", k=4, tangent=jvp_tangent(m.step))
    assert part.shape == (2, 4, 4)
    np.testing.assert_allclose(part, full[..., :4], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,M,hyper", [("lstm", 19, {"hidden_dim": 8}), ("alrnn", 8, {"n_pwl": 2})])
def test_public_api_partial_equals_full(name, M, hyper):
    m = build(name, obs_dim=3, latent_dim=M, seed=0, **hyper)
    full = lyapunov_spectrum(m, n_steps=400, transient=50, seed=1, n_initial_conditions=2, warmup=0)
    part = lyapunov_spectrum(m, n_steps=400, transient=50, seed=1, n_initial_conditions=2, warmup=0, n_exponents=3)
    assert part.exponents.shape == (3,) and part.all.shape == (2, 3)
    assert part.method == ("torch-jvp" if name == "lstm" else full.method)
    np.testing.assert_allclose(part.exponents, full.exponents[:3], rtol=1e-6, atol=1e-9)


def test_systems_and_bad_values():
    lor = lyapunov_spectrum("lorenz", n_steps=2000, transient=200, seed=0, n_exponents=1)
    assert lor.exponents.shape == (1,)
    with pytest.raises(ConfigError, match="n_exponents"):
        lyapunov_spectrum("lorenz", n_steps=100, n_exponents=0)
    with pytest.raises(ConfigError, match="exceeds the state dimension 3"):
        lyapunov_spectrum("lorenz", n_steps=100, n_exponents=4)
