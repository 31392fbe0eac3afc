"""Registry: names, metadata, batched vector fields / Jacobians against per-state references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dsrecon.systems as S
from dsrecon.errors import ConfigError, UnknownNameError

# a spread of evaluation styles: numba _rhs, plain _rhs, rhs(self, X) methods, vector params,
# time-dependent, piecewise, postprocessed, per-row fallbacks
SAMPLE = ["Lorenz", "Rossler", "Thomas", "Lorenz96", "DoublePendulum", "Torus", "Chua", "Duffing",
          "MultiChua", "Hopfield", "IsothermalChemical", "AnishchenkoAstakhov", "BeerRNN", "BickleyJet"]


def test_catalogue_matches_dysts():
    from dysts.systems import get_attractor_list

    assert S.list_systems("flow") == get_attractor_list("continuous")
    assert len(S.list_systems("flow")) == 135
    assert S.list_systems("delay") == get_attractor_list("delay")
    maps = [n[:-3] if n == "DuffingMap" else n for n in S.list_systems("map")]
    assert sorted(maps) == get_attractor_list("discrete")
    assert len(S.list_systems()) == 135 + 23


def test_lookup_case_insensitive_and_aliases():
    assert S.get("lorenz") is S.get("LORENZ")
    assert S.get("Roessler").name == "Rossler"
    assert S.get("Duffing").kind == "flow"
    assert S.get("Duffing", kind="map").name == "DuffingMap"
    assert S.get("duffingmap").kind == "map"


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean: Lorenz"):
        S.get("lornz")
    with pytest.raises(UnknownNameError):
        S.get("Henon", kind="flow")
    with pytest.raises(ConfigError):
        S.get("Lorenz", kind="chaos")
    with pytest.raises(ConfigError):
        S.list_systems(kind="continuous")
    with pytest.raises(ConfigError):
        S.get("")


def test_lorenz_attributes_exact():
    s = S.get("Lorenz")
    assert s.params == {"beta": 8.0 / 3.0, "rho": 28, "sigma": 10}
    assert s.kind == "flow" and s.dim == 3 and not s.is_delay
    assert s.initial_condition.shape == (3,)
    assert s.period == pytest.approx(1.5008) and s.dt > 0
    assert isinstance(s.lyapunov_spectrum, np.ndarray) and s.lyapunov_spectrum.shape == (3,)
    assert "Lorenz" in s.citation and s.description
    meta = s.metadata
    assert meta["dsrecon"]["parameter_overrides"] == {"beta": 8.0 / 3.0}
    assert meta["dsrecon"]["evaluation"]["numpy"] == "vectorised"
    x = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, 30.0]])
    expected = np.stack([10 * (x[:, 1] - x[:, 0]), x[:, 0] * (28 - x[:, 2]) - x[:, 1],
                         x[:, 0] * x[:, 1] - 8 / 3 * x[:, 2]], axis=1)
    np.testing.assert_allclose(s.rhs(x), expected, rtol=1e-15)
    J = s.jacobian(x)
    np.testing.assert_allclose(J[0], [[-10, 10, 0], [28 - 3, -1, -1], [2, 1, -8 / 3]], rtol=1e-15)


def test_with_params():
    s = S.get("Lorenz").with_params(rho=24.0)
    assert s.params["rho"] == 24.0 and s.params["beta"] == 8.0 / 3.0
    x = np.array([[1.0, 0.0, 0.0]])
    assert s.rhs(x)[0, 1] == pytest.approx(24.0)
    assert S.get("Lorenz").params["rho"] == 28  # the cached default is untouched
    with pytest.raises(ConfigError, match="no parameter"):
        S.get("Lorenz").with_params(gamma=1.0)


def _states(s, b=6, seed=1):
    rng = np.random.default_rng(seed)
    x0 = s.initial_condition[: s.dim]
    return x0 + 0.02 * (np.abs(x0).max() + 1e-3) * rng.standard_normal((b, s.dim)), rng.uniform(0, 3, b)


@pytest.mark.parametrize("name", SAMPLE)
def test_batched_rhs_matches_dysts_per_state(name):
    """Fast batched NumPy and torch paths vs dysts' own rhs on one state at a time."""
    s = S.get(name)
    x, t = _states(s)
    ref = np.stack([np.asarray(s.dysts.rhs(xi, ti), dtype=float) for xi, ti in zip(x, t)])
    np.testing.assert_allclose(s.rhs(x, t), ref, rtol=1e-11, atol=1e-12 * np.abs(ref).max())
    out_t = s.rhs(torch.as_tensor(x), torch.as_tensor(t))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), ref, rtol=1e-9, atol=1e-10 * np.abs(ref).max())


def test_every_system_fast_path_equals_per_row_path():
    """For all 158 systems: the evaluator in use equals the per-state loop on fresh states."""
    for name in S.list_systems():
        s = S.get(name)
        fld = s.field
        modes = fld.probe_all()
        assert modes["numpy"] in ("vectorised", "per-row", "torch-vmap"), name
        n = fld.dim
        rng = np.random.default_rng(7)
        x = fld._probe_state + 0.01 * (np.abs(fld._probe_state).max() + 1e-3) * rng.standard_normal((9, n))
        t = rng.uniform(0, 1, 9)
        ref = fld._per_row()(x, t)
        ok = np.isfinite(ref)
        fast = fld(x, t)
        np.testing.assert_allclose(fast[ok], ref[ok], rtol=1e-9, atol=1e-12, err_msg=name)
        out_t = fld(torch.as_tensor(x), torch.as_tensor(t)).numpy()
        np.testing.assert_allclose(out_t[ok], ref[ok], rtol=1e-8, atol=1e-10, err_msg=name)


def test_per_row_fallbacks_are_reported():
    modes = S.get("BelousovZhabotinsky").metadata["dsrecon"]["evaluation"]
    assert modes["numpy"] == "per-row"
    assert S.get("InteriorSquirmer").metadata["dsrecon"]["evaluation"]["torch"] == "numpy-per-row"


@pytest.mark.parametrize("name", ["Lorenz", "Rossler", "Thomas", "Chua", "Lorenz96", "Aizawa", "BeerRNN"])
def test_jacobian_analytic_autograd_and_differences_agree(name):
    s = S.get(name)
    x, t = _states(s, b=4)
    J = s.jacobian(x, t)
    assert J.shape == (4, s.dim, s.dim)
    fd = S.vectorfield.central_difference_jacobian(s.field._per_row(), x, t)
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    Jt = s.jacobian(torch.as_tensor(x), torch.as_tensor(t))
    assert isinstance(Jt, torch.Tensor)
    np.testing.assert_allclose(Jt.numpy(), J, rtol=1e-9, atol=1e-9)


def test_jacobian_modes():
    assert S.get("Lorenz").metadata["dsrecon"]["evaluation"]["jacobian"] == "analytic"
    assert S.get("Aizawa").metadata["dsrecon"]["evaluation"]["jacobian"] == "autograd"
    assert S.get("BickleyJet").metadata["dsrecon"]["evaluation"]["jacobian"] == "central-differences"


def test_torch_autograd_through_rhs():
    s = S.get("Thomas")
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64, requires_grad=True)
    s.rhs(x)[0, 0].backward()  # d/dx(-a x + b sin y) = -a
    assert x.grad[0, 0].item() == pytest.approx(-s.params["a"])


def test_maps_step_and_jacobian():
    s = S.get("Henon")
    x = np.array([[0.5, 0.2], [-0.1, 0.3]])
    a, b = s.params["a"], s.params["b"]
    np.testing.assert_allclose(s.step(x), np.stack([1 - a * x[:, 0] ** 2 + x[:, 1], b * x[:, 0]], 1), rtol=1e-15)
    np.testing.assert_allclose(s.jacobian(x)[0], [[-2 * a * 0.5, 1], [b, 0]], rtol=1e-12)
    with pytest.raises(ConfigError, match="map"):
        s.rhs(x)
    with pytest.raises(ConfigError):
        S.get("Lorenz").step(np.zeros((1, 3)))


def test_delay_equation_interface():
    s = S.get("MackeyGlass")
    assert s.is_delay and s.kind == "flow" and s.dim == 10 and s.delay_tau == 16
    beta, gamma, n = s.params["beta"], s.params["gamma"], s.params["n"]
    x, xd = np.array([0.5, 1.2]), np.array([0.9, 0.3])
    np.testing.assert_allclose(s.delayed_rhs(x, xd), beta * xd / (1 + xd ** n) - gamma * x, rtol=1e-13)
    np.testing.assert_allclose(s.delayed_rhs(torch.as_tensor(x), torch.as_tensor(xd)).numpy(),
                               beta * xd / (1 + xd ** n) - gamma * x, rtol=1e-12)
    with pytest.raises(ConfigError, match="delay differential equation"):
        s.rhs(np.zeros((1, 10)))
    with pytest.raises(ConfigError):
        S.get("Lorenz").delayed_rhs(x, xd)


def test_bad_state_shape():
    with pytest.raises(ConfigError, match=r"\(B, 3\)"):
        S.get("Lorenz").rhs(np.zeros(3))


def test_evaluations_are_stateless():
    """dysts' BlinkingVortexMap mutates its instance at every call; ours must not."""
    s = S.get("BlinkingVortexMap")
    x = s.initial_condition[None]
    first = s.step(x)
    np.testing.assert_array_equal(s.step(x), first)
    np.testing.assert_array_equal(s.step(np.repeat(x, 3, axis=0))[1], first[0])
