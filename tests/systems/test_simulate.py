"""Dataset generation: determinism, caching, splits, noise, sampling, every bad input."""

from __future__ import annotations

import numpy as np
import pytest

import dsrecon.systems as S
from dsrecon.data import Trajectory
from dsrecon.errors import ConfigError, UnknownNameError


def test_default_lorenz_trajectory(tmp_cache):
    tr = S.simulate("Lorenz", 300)
    s = S.get("Lorenz")
    assert isinstance(tr, Trajectory) and tr.shape == (1, 300, 3)
    assert tr.dt == pytest.approx(s.period / 100)  # default: dysts' 100 points per period
    np.testing.assert_array_equal(tr.values[0, 0], s.initial_condition)
    ref = S.integrate(lambda t, y: s.rhs(y, t), s.initial_condition[None], 300, tr.dt)  # batched engine
    np.testing.assert_allclose(tr.values, ref.values, rtol=1e-8, atol=1e-8)
    for key in ("system", "params", "dt", "seed", "noise", "method", "initial_conditions", "failures"):
        assert key in tr.meta


def test_pts_per_period_and_dt():
    s = S.get("Rossler")
    assert S.simulate("Rossler", 10, pts_per_period=50, cache=False).dt == pytest.approx(s.period / 50)
    assert S.simulate("Rossler", 10, dt=0.1, cache=False).dt == 0.1
    grid = S.dysts_time_grid(s, 2000, 100)
    assert grid[1] - grid[0] == pytest.approx(s.period * 2000 / (100 * 1999))


def test_deterministic_given_seed():
    kw = dict(n_trajectories=3, ic="random", transient=50, noise=0.1, dynamical_noise=0.05, seed=11,
              substeps=4, cache=False)
    a, b = S.simulate("Lorenz", 200, **kw), S.simulate("Lorenz", 200, **kw)
    np.testing.assert_array_equal(a.values, b.values)
    c = S.simulate("Lorenz", 200, **{**kw, "seed": 12})
    assert not np.allclose(a.values, c.values)
    assert not np.allclose(a.values[0], a.values[1])  # different random initial conditions


def test_cache_hit_miss_and_equality(tmp_cache):
    kw = dict(n_trajectories=2, ic="attractor", noise=0.05, seed=3, standardize=True)
    first = S.simulate("Rossler", 150, **kw)
    assert first.meta["cache"]["hit"] is False
    files = list(tmp_cache.rglob("*.npz"))
    assert len(files) == 1 and files[0].parent.name == "Rossler"
    np.load(files[0], allow_pickle=False).close()  # no pickled objects
    second = S.simulate("Rossler", 150, **kw)
    assert second.meta["cache"]["hit"] is True
    fresh = S.simulate("Rossler", 150, cache=False, **kw)
    for other in (second, fresh):
        np.testing.assert_array_equal(other.values, first.values)
        np.testing.assert_array_equal(other.mean, first.mean)
        np.testing.assert_array_equal(other.std, first.std)
        assert other.dt == first.dt
    assert second.meta["initial_conditions"] == first.meta["initial_conditions"]
    S.simulate("Rossler", 150, **{**kw, "noise": 0.06})  # any setting change -> a new entry
    assert len(list(tmp_cache.rglob("*.npz"))) == 2
    assert not list(tmp_cache.rglob("*.tmp"))


def test_no_cache_without_seed_when_random(tmp_cache):
    S.simulate("Rossler", 50, noise=0.1)
    assert not tmp_cache.exists() or not list(tmp_cache.rglob("*.npz"))


def test_cache_dir_argument_and_corrupt_entry(tmp_path):
    d = tmp_path / "c"
    a = S.simulate("Rossler", 40, cache_dir=d)
    (f,) = list(d.rglob("*.npz"))
    f.write_bytes(b"not an npz")
    b = S.simulate("Rossler", 40, cache_dir=d)  # unreadable entry -> recomputed and rewritten
    assert b.meta["cache"]["hit"] is False
    np.testing.assert_array_equal(a.values, b.values)
    assert S.simulate("Rossler", 40, cache_dir=d).meta["cache"]["hit"] is True


def test_splits_use_different_initial_conditions():
    tr, va, te = S.make_splits("Lorenz", 200, n_train=2, n_val=1, n_test=1, seed=5, cache=False)
    assert tr.shape == (2, 200, 3) and va.shape == (1, 200, 3) and te.shape == (1, 200, 3)
    firsts = np.concatenate([tr.values[:, 0], va.values[:, 0], te.values[:, 0]])
    assert len({tuple(np.round(r, 8)) for r in firsts}) == 4
    np.testing.assert_array_equal(va.mean, tr.mean)
    np.testing.assert_array_equal(te.std, tr.std)
    flat = tr.values.reshape(-1, 3)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-12)
    assert tr.meta["split"] == "train" and te.meta["split"] == "test"
    with pytest.raises(ConfigError, match="different initial conditions"):
        S.make_splits("Lorenz", 50, ic="default")
    with pytest.raises(ConfigError):
        S.make_splits("Lorenz", 50, n_val=0)


def test_observation_noise_level():
    clean = S.simulate("Lorenz", 2000, cache=False)
    noisy = S.simulate("Lorenz", 2000, noise=0.1, seed=0, cache=False)
    resid = (noisy.values - clean.values).reshape(-1, 3)
    ratio = resid.std(0) / clean.values.reshape(-1, 3).std(0)
    np.testing.assert_allclose(ratio, 0.1, rtol=0.1)
    assert abs(resid.mean()) < 0.05 * resid.std()


def test_dynamical_noise_changes_the_path_but_stays_on_scale():
    clean = S.simulate("Rossler", 500, cache=False)
    noisy = S.simulate("Rossler", 500, dynamical_noise=0.01, seed=1, cache=False)
    assert noisy.meta["method"] == "rk4"
    assert np.isfinite(noisy.values).all() and not np.allclose(noisy.values, clean.values)
    assert noisy.values.std() == pytest.approx(clean.values.std(), rel=0.3)


def test_transient_is_a_shift():
    long = S.simulate("Rossler", 130, cache=False)
    cut = S.simulate("Rossler", 100, transient=30, cache=False)
    np.testing.assert_allclose(cut.values[0], long.values[0, 30:], rtol=1e-12, atol=1e-12)


def test_observe_delay_standardize():
    tr = S.simulate("Lorenz", 300, observe=[0], delay={"dim": 3, "tau": 7}, standardize=True, cache=False)
    assert tr.shape == (1, 300, 3)
    full = S.simulate("Lorenz", 314, cache=False).values[0, :, 0]
    raw = tr.destandardize().values[0]
    np.testing.assert_allclose(raw[:, 0], full[14:], rtol=1e-10)
    np.testing.assert_allclose(raw[:, 2], full[:300], rtol=1e-10)
    np.testing.assert_allclose(tr.values.reshape(-1, 3).std(0), 1.0, rtol=1e-10)


def test_maps_and_postprocessing_and_delay_equations():
    h = S.simulate("Henon", 50, cache=False)
    s = S.get("Henon")
    x = s.initial_condition[None]
    for k in range(1, 50):
        x = s.step(x)
        np.testing.assert_allclose(h.values[0, k], x[0], rtol=1e-12)
    dp = S.simulate("DoublePendulum", 200, cache=False)
    raw = S.simulate("DoublePendulum", 200, postprocess=False, cache=False)
    np.testing.assert_allclose(dp.values[0, :, 0], np.sin(raw.values[0, :, 0]), rtol=1e-12)
    mg = S.simulate("MackeyGlass", 300, cache=False)
    assert mg.shape == (1, 300, 10) and np.isfinite(mg.values).all()
    lag = S.get("MackeyGlass").delay_tau / 9 / mg.dt  # coordinate k lags k tau/9
    assert lag > 1


def test_delay_solver_converges():
    a = S.simulate("MackeyGlass", 200, substeps=8, cache=False).values
    b = S.simulate("MackeyGlass", 200, substeps=32, cache=False).values
    assert np.abs(a - b).max() < 1e-5 * np.abs(b).max()


def test_torch_device_path_matches_numpy():
    a = S.simulate("Lorenz", 200, n_trajectories=3, ic="random", seed=2, transient=0, cache=False)
    b = S.simulate("Lorenz", 200, n_trajectories=3, ic="random", seed=2, transient=0, cache=False, device="cpu")
    assert b.meta["backend"] == "torch"
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-6)


def test_failed_trajectories_are_flagged():
    # far from the attractor Lorenz oscillates with a frequency ~|x|: the step budget runs out
    tr = S.simulate("Lorenz", 100, ic=np.array([[1e9, 1e9, 1e9], [1.0, 1.0, 1.0]]), max_steps=300, cache=False)
    assert tr.failed.tolist() == [True, False]
    assert "max_steps" in tr.meta["failures"][0] and tr.meta["failures"][1] is None and tr.meta["n_failed"] == 1
    assert np.isnan(tr.values[0, -1]).all() and np.isfinite(tr.values[1]).all()


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(n_steps=0), ConfigError, "n_steps"), (dict(n_steps=-5), ConfigError, "n_steps"),
    (dict(n_steps=2.5), ConfigError, "n_steps"), (dict(dt=0.0), ConfigError, "dt"),
    (dict(dt=-0.01), ConfigError, "dt"), (dict(dt=float("nan")), ConfigError, "dt"),
    (dict(dt=float("inf")), ConfigError, "dt"), (dict(pts_per_period=0), ConfigError, "pts_per_period"),
    (dict(dt=0.01, pts_per_period=100), ConfigError, "either dt or pts_per_period"),
    (dict(noise=-0.1), ConfigError, "noise"), (dict(noise=float("nan")), ConfigError, "noise"),
    (dict(dynamical_noise=-1.0), ConfigError, "dynamical_noise"),
    (dict(n_trajectories=0), ConfigError, "n_trajectories"), (dict(seed=-1), ConfigError, "seed"),
    (dict(transient=-2), ConfigError, "transient"), (dict(ic="somewhere"), ConfigError, "ic"),
    (dict(ic=np.zeros(4)), ConfigError, "shape"), (dict(ic=np.full(3, np.nan)), ConfigError, "NaN"),
    (dict(observe=[3]), ConfigError, "observe"), (dict(observe=[0, 0]), ConfigError, "observe"),
    (dict(method="euler"), ConfigError, "method"), (dict(params={"gamma": 1}), ConfigError, "parameter"),
    (dict(device="warp-drive"), ConfigError, "device"), (dict(delay="x"), ConfigError, "delay"),
    (dict(rtol=0.0), ConfigError, "rtol"), (dict(substeps=0), ConfigError, "substeps"),
    (dict(max_steps=0), ConfigError, "max_steps"), (dict(max_time=-1), ConfigError, "max_time"),
    (dict(ic="attractor", n_trajectories=-1), ConfigError, "n_trajectories"),
    (dict(name="Lornz"), UnknownNameError, "did you mean"),
    (dict(name="Henon", pts_per_period=10), ConfigError, "map"),
])
def test_bad_inputs_fail_before_work(kwargs, err, match, tmp_cache):
    args = dict(name="Lorenz", n_steps=10)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        S.simulate(args.pop("name"), args.pop("n_steps"), **args)
    assert not tmp_cache.exists()
