"""Newton / Levenberg-Marquardt fixed points and cycles of smooth models and benchmark systems."""

import numpy as np
import pytest
import torch

from analysis_models import AffineMap, HenonModel, LogisticModel, random_plrnn
from dsrecon.analysis import fixed_points, levenberg_marquardt
from dsrecon.errors import ConfigError, DataError, UnknownNameError
from dsrecon.systems import get


def test_lorenz_equilibria_and_eigenvalues():
    L = get("Lorenz")
    s, r, b = (float(L.params[k]) for k in ("sigma", "rho", "beta"))
    cyc = fixed_points(L, seed=0)
    assert len(cyc) == 3 and all(c.time == "continuous" and c.order == 1 for c in cyc)
    q = np.sqrt(b * (r - 1))
    expected = [np.zeros(3), np.array([q, q, r - 1]), np.array([-q, -q, r - 1])]

    def jac(x):
        return np.array([[-s, s, 0.0], [r - x[2], -1.0, -x[0]], [x[1], x[0], -b]])

    for x in expected:
        c = min(cyc, key=lambda c: np.abs(c.points[0] - x).max())
        assert np.allclose(c.points[0], x, atol=1e-8)
        ev_ref = np.sort_complex(np.linalg.eigvals(jac(x)))
        assert np.allclose(np.sort_complex(c.eigenvalues), ev_ref, atol=1e-8)
    origin = min(cyc, key=lambda c: np.abs(c.points[0]).max())
    assert np.allclose(np.sort(origin.eigenvalues.real),
                       np.sort([-8 / 3, (-11 + np.sqrt(1201)) / 2, (-11 - np.sqrt(1201)) / 2]), atol=1e-8)
    assert (origin.kind, origin.saddle_index) == ("saddle", 1)
    assert all(c.kind == "saddle" and c.saddle_index == 2 for c in cyc if c is not origin)


def test_henon_fixed_points_and_two_cycle():
    H = get("Henon")
    cyc = fixed_points(H, max_order=2, seed=0)
    one = [c for c in cyc if c.order == 1]
    two = [c for c in cyc if c.order == 2]
    a, b = float(H.params["a"]), float(H.params["b"])
    # x = 1 - a x^2 + b x  ->  a x^2 + (1 - b) x - 1 = 0
    xs = np.sort(np.roots([a, 1 - b, -1]).real)
    assert np.allclose(np.sort([c.points[0, 0] for c in one]), xs, atol=1e-9)
    assert all(c.kind == "saddle" for c in one)
    assert len(two) == 1
    x0, x1 = two[0].points[:, 0]
    assert abs((x0 + x1) - (1 - b) / a) < 1e-9  # the period-2 orbit of the Henon map
    assert abs(x0 - x1) > 1e-3


def test_affine_model_fixed_point_and_stability():
    A = np.array([[0.5, 0.2], [-0.1, 1.3]])
    b = np.array([1.0, -2.0])
    cyc = fixed_points(AffineMap(A, b), seed=0, n_seeds=16)
    assert len(cyc) == 1
    assert np.allclose(cyc[0].points[0], np.linalg.solve(np.eye(2) - A, b))
    assert np.allclose(np.sort(np.abs(cyc[0].eigenvalues)), np.sort(np.abs(np.linalg.eigvals(A))))
    assert (cyc[0].kind, cyc[0].saddle_index) == ("saddle", 1)


def test_logistic_map_cycles_with_autograd_jacobian():
    r = 3.2
    cyc = fixed_points(LogisticModel(r), max_order=2, seed=1, n_seeds=64, x0=np.full((1, 1), 0.01))  # near the source 0
    one = sorted(c.points[0, 0] for c in cyc if c.order == 1)
    two = [c for c in cyc if c.order == 2]
    assert np.allclose(one, [0.0, 1 - 1 / r], atol=1e-9)
    assert len(two) == 1
    expect = np.sort([(r + 1 - np.sqrt((r - 3) * (r + 1))) / (2 * r), (r + 1 + np.sqrt((r - 3) * (r + 1))) / (2 * r)])
    assert np.allclose(np.sort(two[0].points[:, 0]), expect, atol=1e-9)
    assert two[0].stable and np.isclose(two[0].eigenvalues[0].real, -r * r + 2 * r + 4, atol=1e-8)


def test_henon_model_analytic_vs_autograd_newton():
    m = HenonModel()
    a = fixed_points(m, seed=0, jacobian="analytic")
    b = fixed_points(m, seed=0, jacobian="autograd")
    assert len(a) == len(b) == 2
    for c, d in zip(a, b):
        assert np.allclose(c.points, d.points) and np.allclose(c.eigenvalues, d.eigenvalues)


def test_newton_on_a_pwl_model_finds_a_subset_of_the_exact_set():
    m = random_plrnn(8, 2)
    exact = fixed_points(m, method="exhaustive")
    newton = fixed_points(m, method="newton", seed=0)
    assert 1 <= len(newton) <= len(exact)
    for c in newton:
        assert any(np.allclose(c.points[0], e.points[0], atol=1e-8) and c.kind == e.kind for e in exact)
        assert c.regions is not None


def test_levenberg_marquardt_solves_a_batch():
    def fun(z):
        G = torch.stack([z[:, 0] ** 2 - 2.0, z[:, 1] - z[:, 0]], dim=1)
        J = torch.zeros(z.shape[0], 2, 2, dtype=z.dtype)
        J[:, 0, 0] = 2 * z[:, 0]
        J[:, 1, 0], J[:, 1, 1] = -1.0, 1.0
        return G, J

    z, ok = levenberg_marquardt(fun, torch.tensor([[1.0, 0.0], [-3.0, 5.0], [0.0, 0.0]], dtype=torch.float64))
    assert ok[:2].all()
    assert np.allclose(z[0].numpy(), [np.sqrt(2)] * 2) and np.allclose(z[1].numpy(), [-np.sqrt(2)] * 2)


def test_fixed_points_bad_input():
    m = AffineMap(np.eye(2) * 0.5)
    with pytest.raises(ConfigError, match="max_order"):
        fixed_points(m, max_order=0)
    with pytest.raises(ConfigError, match="method"):
        fixed_points(m, method="magic")
    with pytest.raises(ConfigError, match="periodic orbits of flows"):
        fixed_points("Lorenz", max_order=2)
    with pytest.raises(ConfigError, match="jacobian"):
        fixed_points(m, jacobian="numeric")
    with pytest.raises(ConfigError, match="cannot analyse"):
        fixed_points(np.eye(2))
    with pytest.raises(UnknownNameError, match="Lorenz"):
        fixed_points("Lornz")
    with pytest.raises(DataError, match="latent states"):
        fixed_points(m, x0=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="delay"):
        fixed_points("MackeyGlass")
