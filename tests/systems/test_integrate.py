"""Batched integrator: accuracy against SciPy, convergence order, dense output, failures, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import dsrecon.systems as S
from dsrecon.errors import ConfigError
from dsrecon.systems import tableaus as tb


def _reference(system, x0, n, dt):
    """SciPy DOP853 at rtol=atol=1e-12, one trajectory at a time (the slow reference)."""
    ts = np.arange(n) * dt
    out = []
    for x in x0:
        sol = solve_ivp(lambda t, y: system.rhs(y[None], t)[0], (0, ts[-1]), x, method="DOP853",
                        t_eval=ts, rtol=1e-12, atol=1e-12)
        out.append(sol.y.T)
    return np.stack(out)


@pytest.mark.parametrize("name,horizon", [("Lorenz", 5.0), ("Rossler", 30.0)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_accuracy_against_scipy(name, horizon, backend):
    s = S.get(name)
    rng = np.random.default_rng(0)
    x0 = s.initial_condition + 0.1 * rng.standard_normal((3, 3))
    dt = 0.01 if name == "Lorenz" else 0.05
    n = int(horizon / dt) + 1
    ref = _reference(s, x0, n, dt)
    x = torch.as_tensor(x0) if backend == "torch" else x0
    res = S.integrate(lambda t, y: s.rhs(y, t), x, n, dt, rtol=1e-12, atol=1e-12)
    vals = res.values.numpy() if backend == "torch" else res.values
    assert res.ok and vals.shape == (3, n, 3)
    assert np.abs(vals - ref).max() < 1e-7 * np.abs(ref).max()
    np.testing.assert_array_equal(vals[:, 0], x0)


def test_rk45_accuracy_and_rk4_default():
    s = S.get("Rossler")
    x0 = s.initial_condition[None]
    ref = _reference(s, x0, 201, 0.05)
    r45 = S.integrate(lambda t, y: s.rhs(y, t), x0, 201, 0.05, method="rk45", rtol=1e-10, atol=1e-10)
    assert np.abs(r45.values - ref).max() < 1e-6
    r4 = S.integrate(lambda t, y: s.rhs(y, t), x0, 201, 0.05, method="rk4", substeps=10)
    assert np.abs(r4.values - ref).max() < 1e-4


def test_rk4_convergence_order_four():
    s = S.get("Lorenz")
    x0 = s.initial_condition[None]
    ref = _reference(s, x0, 11, 0.1)[0, -1]
    errs = [np.abs(S.integrate(lambda t, y: s.rhs(y, t), x0, 11, 0.1, method="rk4", substeps=m).values[0, -1] - ref).max()
            for m in (20, 40, 80)]
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all((orders > 3.6) & (orders < 4.4)), orders


@pytest.mark.parametrize("method,tol", [("dop853", 1e-10), ("rk45", 1e-6)])
def test_dense_output_on_a_fine_grid(method, tol):
    """Samples far denser than the steps come from the continuous extension: compare with expm."""
    A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    x0 = np.array([[1.0, 0.0], [0.3, -0.7]])
    res = S.integrate(lambda t, y: y @ A.T, x0, 3001, 0.001, method=method, rtol=1e-12, atol=1e-12)
    assert res.n_accepted.max() < 3000 / 5  # many samples per step
    exact = np.stack([x0 @ expm(A * t).T for t in res.t], axis=1)
    assert np.abs(res.values - exact).max() < tol


def test_tableau_order_conditions():
    for A, b, c, order in ((tb.DOP853_A[:12, :12], tb.DOP853_B, tb.DOP853_C[:12], 8),
                           (tb.DOPRI5_A, tb.DOPRI5_B, tb.DOPRI5_C, 5)):
        np.testing.assert_allclose(A.sum(axis=1), c, atol=1e-14)
        for k in range(1, order + 1):  # quadrature conditions b . c^(k-1) = 1/k
            assert abs(b @ c ** (k - 1) - 1.0 / k) < 1e-13
    scipy_coef = pytest.importorskip("scipy.integrate._ivp.dop853_coefficients")
    np.testing.assert_array_equal(tb.DOP853_A, scipy_coef.A)
    np.testing.assert_array_equal(tb.DOP853_D, scipy_coef.D)


def test_nonautonomous_per_row_times_and_t0():
    res = S.integrate(lambda t, y: np.cos(np.asarray(t))[..., None] + 0 * y, np.array([[0.0], [2.0]]), 101, 0.05, t0=1.0)
    exact = np.sin(res.t) - np.sin(1.0)
    np.testing.assert_allclose(res.values[0, :, 0], exact, atol=1e-10)
    np.testing.assert_allclose(res.values[1, :, 0], 2 + exact, atol=1e-10)
    assert res.t[0] == 1.0


@pytest.mark.parametrize("method", ["dop853", "rk45", "rk4"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_blow_up_fails_only_that_row(method, backend):
    """x' = x^2 blows up at t = 1/x0 for x0 > 0; the other rows follow x0 / (1 - x0 t)."""
    x0 = np.array([[1.0], [-1.0], [0.2]])
    x = torch.as_tensor(x0) if backend == "torch" else x0
    res = S.integrate(lambda t, y: y * y, x, 201, 0.01, method=method, max_norm=1e6, rtol=1e-10, atol=1e-10)
    vals = res.values.numpy() if backend == "torch" else res.values
    assert res.failed.tolist() == [True, False, False]
    assert res.reasons[1] is None and res.reasons[0]
    assert any(w in res.reasons[0] for w in ("blow-up", "non-finite", "underflow"))
    first_nan = np.argmax(np.isnan(vals[0, :, 0]))
    assert 90 <= first_nan <= 101 and np.isnan(vals[0, first_nan:]).all()
    exact = x0[1:, 0, None] / (1 - x0[1:, 0, None] * res.t[None])
    np.testing.assert_allclose(vals[1:, :, 0], exact, rtol=1e-4 if method == "rk4" else 1e-8)


def test_max_steps_and_wall_time_limits():
    f = lambda t, y: -y  # noqa: E731
    res = S.integrate(f, np.ones((2, 1)), 1001, 1.0, max_steps=3)
    assert res.failed.all() and "max_steps" in res.reasons[0]
    res = S.integrate(f, np.ones((2, 1)), 100001, 0.1, max_time=1e-9)
    assert res.failed.all() and "wall-time" in res.reasons[1]


def test_non_finite_vector_field_at_start():
    res = S.integrate(lambda t, y: np.log(y), np.array([[-1.0], [1.0]]), 11, 0.1)
    assert res.failed.tolist() == [True, False]
    assert "initial condition" in res.reasons[0]


def test_row_independent_of_batch():
    s = S.get("Lorenz")
    rng = np.random.default_rng(3)
    x0 = s.initial_condition + rng.standard_normal((4, 3))
    f = lambda t, y: s.rhs(y, t)  # noqa: E731
    full = S.integrate(f, x0, 200, 0.01)
    alone = S.integrate(f, x0[2:3], 200, 0.01)
    np.testing.assert_allclose(full.values[2], alone.values[0], rtol=1e-9, atol=1e-9)
    assert full.n_accepted[2] == alone.n_accepted[0]


def test_float32_tensor_and_single_sample():
    x = torch.tensor([[1.0, 0.5]], dtype=torch.float32)
    res = S.integrate(lambda t, y: -y, x, 5, 0.1, rtol=1e-5, atol=1e-7)
    assert res.values.dtype == torch.float32
    np.testing.assert_allclose(res.values[0, -1].numpy(), np.exp(-0.4) * x[0].numpy(), rtol=1e-5)
    one = S.integrate(lambda t, y: -y, np.ones(3), 1, 0.1)
    assert one.values.shape == (1, 1, 3) and one.ok


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_steps=0), "n_steps"), (dict(n_steps=-3), "n_steps"), (dict(n_steps=2.5), "n_steps"),
    (dict(n_steps=True), "n_steps"), (dict(dt=0.0), "dt"), (dict(dt=-0.1), "dt"),
    (dict(dt=float("nan")), "dt"), (dict(dt=float("inf")), "dt"), (dict(rtol=0.0), "rtol"),
    (dict(atol=-1.0), "atol"), (dict(method="euler"), "method"), (dict(max_steps=0), "max_steps"),
    (dict(substeps=0), "substeps"), (dict(max_norm=0.0), "max_norm"), (dict(max_time=-1.0), "max_time"),
    (dict(x0=np.array([[np.nan, 1.0]])), "NaN"), (dict(x0=np.zeros((2, 2, 2))), "shape"),
    (dict(t0=float("inf")), "t0"), (dict(kick=lambda k, y, r: y), "rk4"),
])
def test_bad_inputs(kwargs, match):
    args = dict(f=lambda t, y: -y, x0=np.ones((2, 2)), n_steps=10, dt=0.1)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        S.integrate(args.pop("f"), args.pop("x0"), args.pop("n_steps"), args.pop("dt"), **args)


def _with_scalar(f, fs):
    f.scalar_rhs = fs
    return f


def test_scalar_engine_equals_batched_engine():
    """The B = 1 pure-Python path runs the same method: same steps, values to rounding."""
    s = S.get("Lorenz")
    x0 = s.initial_condition[None]
    batched = S.integrate(lambda t, y: s.rhs(y, t), x0, 300, 0.01, rtol=1e-10, atol=1e-10)
    fast = S.integrate(_with_scalar(lambda t, y: s.rhs(y, t), s.field.scalar_rhs), x0, 300, 0.01, rtol=1e-10, atol=1e-10)
    assert fast.info["engine"] == "scalar" and batched.info.get("engine") is None
    assert fast.n_accepted[0] == batched.n_accepted[0] and fast.n_rejected[0] == batched.n_rejected[0]
    np.testing.assert_allclose(fast.values, batched.values, rtol=1e-9, atol=1e-9)
    assert S.simulate("Lorenz", 50, cache=False).meta["integrator"]["engine"] == "scalar"
    assert S.simulate("Lorenz", 50, n_trajectories=2, ic="random", seed=0, cache=False).meta["integrator"]["engine"] == "batched"


def test_scalar_engine_failures():
    blow = S.integrate(_with_scalar(lambda t, y: y * y, lambda t, y: [y[0] * y[0]]), np.array([[1.0]]), 201, 0.01,
                       max_norm=1e6)
    assert blow.failed[0] and any(w in blow.reasons[0] for w in ("blow-up", "non-finite"))
    assert 90 <= np.argmax(np.isnan(blow.values[0, :, 0])) <= 101
    div = S.integrate(_with_scalar(lambda t, y: 1 / y, lambda t, y: [1 / y[0]]), np.array([[0.0]]), 11, 0.1)
    assert div.failed[0] and "initial condition" in div.reasons[0]
    steps = S.integrate(_with_scalar(lambda t, y: -y, lambda t, y: [-y[0]]), np.ones((1, 1)), 1001, 1.0, max_steps=3)
    assert steps.failed[0] and "max_steps" in steps.reasons[0]
    ok = S.integrate(_with_scalar(lambda t, y: -y, lambda t, y: [-y[0]]), np.ones((1, 1)), 11, 0.1, rtol=1e-12)
    np.testing.assert_allclose(ok.values[0, :, 0], np.exp(-ok.t), rtol=1e-10)


@pytest.mark.parametrize("name", ["AnishchenkoAstakhov", "CellCycle", "Thomas"])
def test_scalar_path_of_other_evaluation_styles(name):
    """rhs(self, X, t)-style and column-style flows: Python-float path == batched engine."""
    s = S.get(name)
    assert s.field.scalar_rhs is not None
    x0 = s.initial_condition[None]
    dt = s.period / 50
    batched = S.integrate(lambda t, y: s.rhs(y, t), x0, 60, dt, rtol=1e-10, atol=1e-10)
    fast = S.integrate(_with_scalar(lambda t, y: s.rhs(y, t), s.field.scalar_rhs), x0, 60, dt, rtol=1e-10, atol=1e-10)
    assert fast.info["engine"] == "scalar"
    assert abs(int(fast.n_accepted[0]) - int(batched.n_accepted[0])) <= 1
    np.testing.assert_allclose(fast.values, batched.values, rtol=1e-7, atol=1e-9 * np.abs(batched.values).max())
