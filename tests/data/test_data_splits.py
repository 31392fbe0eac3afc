"""Train/val/test splits and standardisation with training statistics."""

from __future__ import annotations

import numpy as np
import pytest

from dsrecon.data import Trajectory, split_time, split_trajectories, standardize_splits
from dsrecon.errors import ConfigError, DataError


@pytest.fixture
def traj():
    vals = np.random.default_rng(0).standard_normal((4, 100, 3)) * [1.0, 2.0, 5.0] + [0.0, 1.0, -3.0]
    return Trajectory(vals, dt=0.01, meta={"system": "test"})


def test_split_time_is_contiguous_and_tiles(traj):
    tr, va, te = split_time(traj)
    assert (tr.n_steps, va.n_steps, te.n_steps) == (80, 10, 10)
    np.testing.assert_array_equal(np.concatenate([tr.values, va.values, te.values], axis=1), traj.values)
    assert tr.meta["split"] == [0, 80] and va.meta["split"] == [80, 90] and te.meta["split"] == [90, 100]
    assert tr.dt == 0.01 and tr.meta["system"] == "test"
    assert "split" not in traj.meta  # the input is untouched


def test_split_time_arrays_and_partial_fractions(traj):
    x = traj.series(0)
    a, b = split_time(x, (0.5, 0.25))
    assert isinstance(a, np.ndarray) and a.shape == (50, 3) and b.shape == (25, 3)
    np.testing.assert_array_equal(b, x[50:75])
    p, q = split_time(traj.values, (0.7, 0.3))
    assert p.shape == (4, 70, 3) and q.shape == (4, 30, 3)


def test_split_time_bad_input(traj):
    with pytest.raises(ConfigError, match="sum to at most 1"):
        split_time(traj, (0.8, 0.3))
    with pytest.raises(ConfigError, match="positive"):
        split_time(traj, (0.8, 0.0))
    with pytest.raises(ConfigError, match="positive"):
        split_time(traj, ())
    with pytest.raises(DataError, match=r"\[98, 1, 1\] steps out of T=100.*at least 2"):
        split_time(traj, (0.98, 0.01, 0.01))
    with pytest.raises(DataError, match=r"\(T, N\) or \(B, T, N\)"):
        split_time(np.arange(10.0))


def test_split_trajectories_disjoint(traj):
    tr, va, te = split_trajectories(traj, 2, 1, 1)
    assert (tr.n_trajectories, va.n_trajectories, te.n_trajectories) == (2, 1, 1)
    idx = [tr.meta["split_indices"], va.meta["split_indices"], te.meta["split_indices"]]
    assert idx == [[0, 1], [2], [3]]
    np.testing.assert_array_equal(va.values[0], traj.values[2])
    s1 = split_trajectories(traj, 2, 1, 1, shuffle=True, seed=5)
    s2 = split_trajectories(traj, 2, 1, 1, shuffle=True, seed=5)
    all_idx = sum((p.meta["split_indices"] for p in s1), [])
    assert sorted(all_idx) == [0, 1, 2, 3]  # disjoint and complete
    assert [p.meta["split_indices"] for p in s1] == [p.meta["split_indices"] for p in s2]
    for part in s1:
        for k, i in enumerate(part.meta["split_indices"]):
            np.testing.assert_array_equal(part.values[k], traj.values[i])


def test_split_trajectories_skips_failed(traj):
    vals = traj.values.copy()
    vals[1] = np.nan
    t = Trajectory(vals, failed=np.array([False, True, False, False]))
    tr, va, te = split_trajectories(t, 1, 1, 1)
    assert [tr.meta["split_indices"], va.meta["split_indices"], te.meta["split_indices"]] == [[0], [2], [3]]
    assert np.isfinite(np.concatenate([tr.values, va.values, te.values])).all()
    with pytest.raises(DataError, match=r"needs 4 trajectories.*only 3 are usable.*1 flagged failed"):
        split_trajectories(t, 2, 1, 1)
    _, v0, _ = split_trajectories(traj, 4)
    assert v0.n_trajectories == 0


def test_split_trajectories_bad_counts(traj):
    with pytest.raises(ConfigError, match="n_train must be at least 1"):
        split_trajectories(traj, 0, 1, 1)
    with pytest.raises(ConfigError, match="n_val must be a non-negative integer"):
        split_trajectories(traj, 1, -1, 1)
    with pytest.raises(ConfigError, match="n_test"):
        split_trajectories(traj, 1, 1, 1.5)


def test_standardize_splits_uses_train_statistics(traj):
    tr, va, te = split_time(traj)
    trs, vas, tes = standardize_splits(tr, va, te)
    mean = tr.values.reshape(-1, 3).mean(0)
    std = tr.values.reshape(-1, 3).std(0)
    np.testing.assert_allclose(trs.mean, mean)
    np.testing.assert_allclose(trs.std, std)
    np.testing.assert_allclose(trs.values.reshape(-1, 3).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(trs.values.reshape(-1, 3).std(0), 1)
    for raw, s in ((va, vas), (te, tes)):
        np.testing.assert_allclose(s.values, (raw.values - mean) / std)
        np.testing.assert_array_equal(s.mean, trs.mean)
        np.testing.assert_allclose(s.destandardize().values, raw.values)
    # the validation split's own statistics differ from the train ones, so this is a real check
    assert not np.allclose(va.values.reshape(-1, 3).mean(0), mean)


def test_standardize_splits_bad_input(traj):
    tr, va, _ = split_time(traj)
    with pytest.raises(DataError, match="split 1 has N=2 dimensions but train has N=3"):
        standardize_splits(tr, va.values[..., :2])
    with pytest.raises(DataError, match="split 1 is already standardised"):
        standardize_splits(tr, va.standardize())
    (only,) = standardize_splits(tr.values[0])
    assert only.is_standardized
