"""Lyapunov spectra: known answers (Lorenz, Roessler, Henon, linear maps), fast path vs reference,
analytic vs autograd Jacobians, bad input."""

import numpy as np
import pytest
import torch

from analysis_models import AffineMap, HenonModel, random_plrnn, zoo_model
from dsrecon.analysis import kaplan_yorke_dimension, lyapunov_spectrum
from dsrecon.errors import ConfigError, DataError, IntegrationError
from dsrecon.systems import get

LORENZ = np.array([0.906, 0.0, -14.572])


def check_lorenz(res, rel):
    L = get("Lorenz")
    trace = -(L.params["sigma"] + 1 + L.params["beta"])
    assert abs(res.exponents[0] - LORENZ[0]) <= rel * LORENZ[0]
    assert abs(res.exponents[2] - LORENZ[2]) <= rel * abs(LORENZ[2])
    assert abs(res.exponents[1]) < 0.01
    assert abs(res.exponents.sum() - trace) < 1e-3 * abs(trace)
    assert 2.0 < res.kaplan_yorke < 2.1


def test_lorenz_spectrum_within_two_percent():
    res = lyapunov_spectrum("Lorenz", n_steps=8_000, transient=500, n_initial_conditions=8, seed=0)
    check_lorenz(res, 0.02)
    assert res.all.shape == (8, 3) and res.dt is not None
    assert np.allclose(res.per_step, res.exponents * res.dt)
    assert res.convergence.shape == (3,) and np.all(res.convergence >= 0)


@pytest.mark.slow
def test_lorenz_spectrum_long_run_within_one_percent():
    res = lyapunov_spectrum("Lorenz", n_steps=100_000, transient=2000, n_initial_conditions=16, seed=1)
    check_lorenz(res, 0.01)


def test_roessler_largest_exponent():
    res = lyapunov_spectrum("Rossler", n_steps=8_000, transient=500, n_initial_conditions=8, seed=0)
    assert abs(res.exponents[0] - 0.0714) <= 0.1 * 0.0714
    assert abs(res.exponents.sum() - (-5.394 + 0.0714)) < 0.15


def test_dop853_matches_rk4_on_a_short_run():
    # RK4's global error at dt = 0.002 is ~1e-7 here; DOP853 runs at rtol 1e-10
    kw = dict(n_steps=1000, transient=0, dt=0.002, reorth_every=10, n_initial_conditions=2, seed=0, warmup=0)
    a = lyapunov_spectrum("Lorenz", method="rk4", **kw)
    b = lyapunov_spectrum("Lorenz", method="dop853", **kw)
    assert np.allclose(a.all, b.all, atol=1e-5)
    assert a.method == "rk4" and b.method == "dop853"


@pytest.mark.parametrize("method", ["rk4", "dop853"])
def test_flow_autograd_and_fd_jacobians_match_analytic(method):
    kw = dict(n_steps=100, transient=10, dt=0.01, n_initial_conditions=2, seed=0, method=method, reorth_every=5)
    a = lyapunov_spectrum("Lorenz", jacobian="analytic", **kw)
    b = lyapunov_spectrum("Lorenz", jacobian="autograd", **kw)
    c = lyapunov_spectrum("Lorenz", jacobian="fd", **kw)
    assert np.allclose(a.all, b.all, atol=1e-9)
    assert np.allclose(a.all, c.all, atol=1e-7)


def test_henon_system_known_spectrum():
    H = get("Henon")
    res = lyapunov_spectrum(H, n_steps=1500, transient=100, n_initial_conditions=16, seed=0)
    assert res.dt is None and np.allclose(res.exponents, res.per_step)
    assert abs(res.exponents[0] - 0.419) < 0.01
    assert abs(res.exponents[1] - (-1.623)) < 0.01
    assert abs(res.exponents.sum() - np.log(H.params["b"])) < 1e-9  # |det J| = b everywhere


def test_henon_model_with_autograd_jacobian_and_dt():
    res = lyapunov_spectrum(HenonModel(), x0=[0.1, 0.1], n_steps=1000, transient=100, dt=0.5, seed=0,
                            n_initial_conditions=32, jacobian="autograd")
    assert abs(res.per_step[0] - 0.419) < 0.015
    assert np.allclose(res.exponents, res.per_step / 0.5)
    assert abs(res.per_step.sum() - np.log(0.3)) < 1e-9


@pytest.mark.parametrize("jac", ["analytic", "autograd"])
def test_linear_map_exponents_are_log_moduli(jac):
    rng = np.random.default_rng(0)
    S = rng.standard_normal((4, 4))
    lam = np.array([1.05, -0.8, 0.5, 0.2])
    A = S @ np.diag(lam) @ np.linalg.inv(S)
    res = lyapunov_spectrum(AffineMap(A), n_steps=400, transient=0, n_initial_conditions=3, seed=0,
                            jacobian=jac, warmup=100)
    assert np.allclose(res.exponents, np.log(np.abs(lam)), atol=1e-6)
    assert res.method == "torch"


@pytest.mark.parametrize("name,hyper", [("clipped-shplrnn", {"hidden_dim": 20}), ("plrnn", {}),
                                        ("alrnn", {"n_pwl": 2}), ("dendplrnn", {"n_bases": 2})])
def test_numba_fast_path_matches_torch_reference(name, hyper):
    m = zoo_model(name, 1, wscale=2.0, latent_dim=4, **hyper)
    # short runs: on chaotic orbits rounding differences would grow like exp(lambda_1 t)
    kw = dict(n_steps=60, transient=5, warmup=0, n_blocks=4, n_initial_conditions=3, seed=0)
    fast = lyapunov_spectrum(m, method="numba", **kw)
    ref = lyapunov_spectrum(m, method="torch", **kw)
    assert fast.method == "numba" and ref.method == "torch"
    assert np.allclose(fast.all, ref.all, atol=1e-9)
    assert np.allclose(fast.convergence, ref.convergence, atol=1e-9)


def test_trained_like_model_analytic_vs_autograd():
    m = random_plrnn(6, 3)
    with torch.no_grad():
        m.W.mul_(0.3)  # a bounded, non-trivial regime
    kw = dict(n_steps=500, transient=50, n_initial_conditions=2, seed=0, method="torch")
    a = lyapunov_spectrum(m, jacobian="analytic", **kw)
    b = lyapunov_spectrum(m, jacobian="autograd", **kw)
    assert np.allclose(a.all, b.all, atol=1e-10)


def test_ensemble_list_gives_one_result_per_member():
    ms = [zoo_model("clipped-shplrnn", s, wscale=2.0, hidden_dim=10) for s in (1, 2)]
    res = lyapunov_spectrum(ms, n_steps=300, transient=10, seed=0)
    assert isinstance(res, list) and len(res) == 2
    single = lyapunov_spectrum(ms[1], n_steps=300, transient=10, seed=0)
    assert np.allclose(res[1].exponents, single.exponents)
    assert not np.allclose(res[0].exponents, res[1].exponents)


def test_kaplan_yorke_dimension():
    assert np.isclose(kaplan_yorke_dimension([0.906, 0.0, -14.572]), 2 + 0.906 / 14.572)
    assert kaplan_yorke_dimension([-0.1, -1.0]) == 0.0
    assert kaplan_yorke_dimension([0.5, 0.1]) == 2.0
    assert np.isclose(kaplan_yorke_dimension([-1.623, 0.419]), 1 + 0.419 / 1.623)


def test_result_to_dict_is_plain_json():
    import json

    res = lyapunov_spectrum(AffineMap(np.diag([0.5, 0.25])), n_steps=50, transient=0, seed=0)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["units"] == "per step" and np.allclose(d["exponents"], np.log([0.5, 0.25]))


def test_bad_input_is_rejected_before_work():
    m = AffineMap(np.eye(2) * 0.5)
    with pytest.raises(ConfigError, match="n_steps"):
        lyapunov_spectrum(m, n_steps=0)
    with pytest.raises(ConfigError, match="reorth_every"):
        lyapunov_spectrum(m, n_steps=10, reorth_every=20)
    with pytest.raises(ConfigError, match="jacobian"):
        lyapunov_spectrum(m, jacobian="numeric")
    with pytest.raises(ConfigError, match="only for flows"):
        lyapunov_spectrum(m, jacobian="fd")
    with pytest.raises(ConfigError, match="method"):
        lyapunov_spectrum(m, method="rk4")
    with pytest.raises(ConfigError, match="method"):
        lyapunov_spectrum("Lorenz", method="numba")
    with pytest.raises(ConfigError, match="numba"):
        lyapunov_spectrum(m, method="numba")
    with pytest.raises(ConfigError, match="dt"):
        lyapunov_spectrum(m, dt=-1.0)
    with pytest.raises(ConfigError, match="warmup"):
        lyapunov_spectrum(m, warmup=-1)
    with pytest.raises(DataError, match="latent states"):
        lyapunov_spectrum(m, x0=np.zeros(3))
    with pytest.raises(DataError, match="non-finite"):
        lyapunov_spectrum(m, x0=[np.nan, 0.0])
    with pytest.raises(ConfigError, match="n_initial_conditions"):
        lyapunov_spectrum(m, x0=np.zeros((3, 2)), n_initial_conditions=2)
    with pytest.raises(ConfigError, match="empty"):
        lyapunov_spectrum([])
    with pytest.raises(ConfigError, match="delay"):
        lyapunov_spectrum("MackeyGlass")


@pytest.mark.parametrize("method", ["torch", "numba"])
def test_diverging_model_raises_integration_error(method):
    m = random_plrnn(3, 0)
    with torch.no_grad():
        m.a.fill_(3.0)  # |a| > 1: every orbit escapes to infinity
    with pytest.raises(IntegrationError, match="non-finite"):
        lyapunov_spectrum(m, n_steps=2000, transient=0, method=method, seed=0)


@pytest.mark.gpu
def test_cuda_paths_match_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from dsrecon.analysis import fixed_points

    m = zoo_model("clipped-shplrnn", 1, wscale=2.0, hidden_dim=10)
    kw = dict(n_steps=60, transient=5, warmup=0, n_initial_conditions=4, seed=0, method="torch")
    assert np.allclose(lyapunov_spectrum(m, device="cuda", **kw).all, lyapunov_spectrum(m, **kw).all, atol=1e-9)
    kw = dict(n_steps=200, transient=5, dt=0.01, n_initial_conditions=2, seed=0)
    assert np.allclose(lyapunov_spectrum("Lorenz", device="cuda", **kw).all, lyapunov_spectrum("Lorenz", **kw).all,
                       atol=1e-8)
    a = fixed_points("Lorenz", device="cuda", seed=0)
    assert len(a) == 3
