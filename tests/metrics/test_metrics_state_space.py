"""D_stsp: known answers, dense/direct references, properties, bad input."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics import state_space_divergence
from dsrecon.metrics import state_space as ss

A = 1e-5  # Laplace constant


# ------------------------------------------------------------------ slow references
def dense_binned_reference(x_true, x_gen, n_bins=30):
    """Straightforward binned D_stsp: per-point Python bin search, dense bins^N arrays."""
    x_true, x_gen = np.asarray(x_true, float), np.asarray(x_gen, float)
    n_dim = x_true.shape[1]
    sd = x_true.std(axis=0, ddof=1)
    lo, hi = x_true.min(0) - 0.1 * sd, x_true.max(0) + 0.1 * sd
    edges = [np.linspace(lo[d], hi[d], n_bins + 1) for d in range(n_dim)]

    def hist(x):
        h = np.zeros((n_bins,) * n_dim)
        for point in x:
            cell = []
            for d in range(n_dim):
                k = next((j for j in range(n_bins) if edges[d][j] <= point[d] < edges[d][j + 1]), None)
                if k is None:
                    break
                cell.append(k)
            else:
                h[tuple(cell)] += 1
        return h

    h, g = hist(x_true), hist(x_gen)
    p = (h + A) / (h.sum() + A * h.size)
    q = (g + A) / (g.sum() + A * g.size)
    return float(np.sum(p * np.log(p / q)))


def direct_gmm_reference(x_true, x_gen, sigma2, samples):
    """O(S T) direct densities (no log-sum-exp), D = mean log p/q over samples with p, q > 0."""
    def dens(s, mu):
        n_dim = mu.shape[1]
        return np.mean(np.exp(-0.5 * np.sum((s - mu) ** 2, axis=1) / sigma2)) / sigma2 ** (n_dim / 2)

    p = np.array([dens(s, x_true) for s in samples])
    q = np.array([dens(s, x_gen) for s in samples])
    keep = (p > 0) & (q > 0)
    return float(np.mean(np.log(p[keep]) - np.log(q[keep])))


def reference_samples(x, n_samples, sigma2, seed):
    """The documented sampling scheme: uniform component index, then Gaussian noise."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=n_samples)
    return x[idx] + math.sqrt(sigma2) * rng.standard_normal((n_samples, x.shape[1]))


# ------------------------------------------------------------------ known answers
def test_identical_series_give_zero():
    x = np.random.default_rng(1).standard_normal((2000, 3))
    assert state_space_divergence(x, x).value == 0.0
    assert state_space_divergence(x, x, method="gmm", max_points=500, n_samples=200).value == pytest.approx(0.0, abs=1e-12)


def test_binned_hand_case_n1_two_bins_two_points():
    # edges [-0.0707, 0.5, 1.0707]: true counts (1, 1), generated (2, 0); Z_p = Z_q = 2 + 2a
    r = state_space_divergence([[0.0], [1.0]], [[0.0], [0.0]], n_bins=2)
    expected = 0.5 * math.log((1 + A) / (2 + A)) + 0.5 * math.log((1 + A) / A)
    assert r.value == pytest.approx(expected, rel=1e-12)
    assert r.name == "dstsp" and r.n_steps == 2 and r.flag is None


def test_binned_hand_case_n2_disjoint_cells():
    # true in cells (0,0), (1,1); generated in (0,1), (1,0): Z = 2 + 4a for both
    r = state_space_divergence([[0, 0], [1, 1]], [[0, 1], [1, 0]], n_bins=2)
    expected = 2 / (2 + 4 * A) * math.log((1 + A) / A)
    assert r.value == pytest.approx(expected, rel=1e-12)


def test_binned_hand_case_unequal_normalisers_and_both_empty_cells():
    # the generated point (5, 5) is outside and dropped: Z_p = 2 + 4a, Z_q = 1 + 4a; cells (0,1)
    # and (1,0) are empty in both and contribute a/Z_p log((a/Z_p) / (a/Z_q)) each
    zp, zq = 2 + 4 * A, 1 + 4 * A
    expected = (
        (1 + A) / zp * math.log(((1 + A) / zp) / ((1 + A) / zq))
        + (1 + A) / zp * math.log(((1 + A) / zp) / (A / zq))
        + 2 * (A / zp) * math.log((A / zp) / (A / zq))
    )
    r = state_space_divergence([[0, 0], [1, 1]], [[0, 0], [5, 5]], n_bins=2)
    assert r.value == pytest.approx(expected, rel=1e-12)
    assert r.details["n_gen_outside"] == 1


def test_gmm_hand_case_two_points_is_gaussian_kl():
    # mixtures are single Gaussians N(0, I) and N((1, 0), I): log p - log q = 0.5 - s_1
    x_true, x_gen = np.zeros((2, 2)), np.array([[1.0, 0.0], [1.0, 0.0]])
    r = state_space_divergence(x_true, x_gen, method="gmm", n_samples=4000, seed=3)
    s = reference_samples(x_true, 4000, 1.0, 3)
    assert r.value == pytest.approx(np.mean(0.5 - s[:, 0]), abs=1e-10)
    assert r.value == pytest.approx(0.5, abs=4 / math.sqrt(4000))  # the exact KL


def test_gmm_float32_underflow_filter_matches_reference_convention():
    # true mixture at 0 and 50, generated at 0 only: samples near 50 have q = 0 in float32 and are
    # dropped; the others have log p - log q = log(1/2) exactly (up to exp(-1250))
    x_true, x_gen = np.array([[0.0], [50.0]]), np.array([[0.0], [0.0]])
    r = state_space_divergence(x_true, x_gen, method="gmm", n_samples=1000, seed=0)
    assert r.value == pytest.approx(-math.log(2), abs=1e-12)
    n_far = int(np.sum(reference_samples(x_true, 1000, 1.0, 0)[:, 0] > 25))
    assert r.details["n_samples_discarded"] == n_far > 0
    unfiltered = state_space_divergence(x_true, x_gen, method="gmm", seed=0, min_log_density=None)
    assert unfiltered.value > 100 and unfiltered.details["n_samples_discarded"] == 0


# ------------------------------------------------------------------ equivalence with references
@pytest.mark.parametrize("n_dim,n_bins", [(1, 7), (2, 30), (3, 6)])
def test_binned_equals_dense_reference(n_dim, n_bins):
    rng = np.random.default_rng(n_dim)
    x_true = rng.standard_normal((300, n_dim))
    x_gen = 1.3 * rng.standard_normal((250, n_dim)) + 0.2  # some points fall outside
    fast = state_space_divergence(x_true, x_gen, n_bins=n_bins).value
    assert fast == pytest.approx(dense_binned_reference(x_true, x_gen, n_bins), rel=1e-10)


def test_bin_search_equals_searchsorted_at_edges_and_beyond():
    rng = np.random.default_rng(4)
    x_true = rng.standard_normal((50, 1)) * 3.7 + 1.1
    e = ss.bin_edges(x_true, 30)[0]
    probes = np.concatenate([
        e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf), rng.uniform(e[0] - 1, e[-1] + 1, 5000),
        [np.inf, -np.inf, 1e300, -1e300],
    ])
    expected = np.searchsorted(e, probes, side="right") - 1
    got = ss._bin_1d(probes, e)
    inside = (expected >= 0) & (expected < 30)
    np.testing.assert_array_equal(got[inside], expected[inside])
    assert np.all((got[~inside] == -1) | (got[~inside] == 30))
    assert ss._bin_1d(np.array([np.nan]), e)[0] == 30
    assert ss.cell_ids(np.c_[probes], [e])[1].sum() == inside.sum()


def test_sparse_unique_path_equals_dense_bincount_path(monkeypatch):
    rng = np.random.default_rng(5)
    x_true, x_gen = rng.standard_normal((3000, 3)), 1.2 * rng.standard_normal((3000, 3))
    dense = state_space_divergence(x_true, x_gen).value
    monkeypatch.setattr(ss, "DENSE_CELL_LIMIT", 0)
    assert state_space_divergence(x_true, x_gen).value == pytest.approx(dense, rel=1e-13)


def test_row_unique_path_for_more_cells_than_int64_matches_dict_reference():
    # 30**14 > 2**62: cells are identified by index rows; compare with a dict-of-tuples count
    rng = np.random.default_rng(6)
    x_true, x_gen = rng.standard_normal((400, 14)), 1.1 * rng.standard_normal((400, 14))
    fast = state_space_divergence(x_true, x_gen, method="binned").value
    edges = ss.bin_edges(x_true, 30)
    counts = [dict(), dict()]
    for c, x in zip(counts, (x_true, x_gen)):
        for row in ss.bin_indices(x, edges)[0]:
            c[tuple(row)] = c.get(tuple(row), 0) + 1
    cells = set(counts[0]) | set(counts[1])
    n_cells = 30**14
    zp, zq = sum(counts[0].values()) + A * n_cells, sum(counts[1].values()) + A * n_cells
    d = sum((counts[0].get(c, 0) + A) / zp * math.log(((counts[0].get(c, 0) + A) / zp) / ((counts[1].get(c, 0) + A) / zq)) for c in cells)
    d += (n_cells - len(cells)) * (A / zp) * math.log((A / zp) / (A / zq))
    assert fast == pytest.approx(d, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("sigma2", [1.0, 0.3])
def test_gmm_equals_direct_dense_reference(sigma2):
    rng = np.random.default_rng(7)
    x_true = rng.standard_normal((300, 6))
    x_gen = 0.8 * rng.standard_normal((200, 6)) + 0.3
    r = state_space_divergence(x_true, x_gen, sigma_squared=sigma2, n_samples=150, seed=11)
    assert r.details["method"] == "gmm"  # auto for N >= 6
    ref = direct_gmm_reference(x_true, x_gen, sigma2, reference_samples(x_true, 150, sigma2, 11))
    assert r.value == pytest.approx(ref, rel=1e-9)


def test_gmm_uses_first_max_points_and_is_seeded():
    rng = np.random.default_rng(8)
    x_true, x_gen = rng.standard_normal((500, 6)), rng.standard_normal((500, 6))
    a = state_space_divergence(x_true, x_gen, max_points=100, n_samples=100, seed=1)
    b = state_space_divergence(x_true[:100], x_gen[:100], n_samples=100, seed=1)
    c = state_space_divergence(x_true, x_gen, max_points=100, n_samples=100, seed=2)
    assert a.value == b.value and a.value != c.value and a.n_steps == 100


# ------------------------------------------------------------------ properties
def test_auto_method_switches_at_six_dimensions():
    rng = np.random.default_rng(9)
    assert state_space_divergence(*rng.standard_normal((2, 500, 5))).details["method"] == "binned"
    assert state_space_divergence(*rng.standard_normal((2, 500, 6)), n_samples=50).details["method"] == "gmm"


def test_not_symmetric_and_not_scale_invariant():
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((5000, 2)), 1.5 * rng.standard_normal((5000, 2))
    assert state_space_divergence(x, y).value != pytest.approx(state_space_divergence(y, x).value, rel=0.05)
    y2 = y.copy()
    y2[:, 0] *= 3.0
    assert state_space_divergence(x, y2).value > state_space_divergence(x, y).value + 0.1


def test_ten_dimensions_binned_is_sparse_and_memory_safe():
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((20000, 10)), rng.standard_normal((20000, 10))
    tracemalloc.start()
    r = state_space_divergence(x, y, method="binned")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.details["n_cells"] == 30.0**10 and math.isfinite(r.value) and r.value >= 0
    assert peak < 100e6  # a dense histogram would need 30**10 * 8 bytes


def test_paper_lorenz_floor(lorenz_pair):
    test, noisy_train = lorenz_pair
    r = state_space_divergence(test, noisy_train)
    assert r.value == pytest.approx(0.12, rel=0.10)
    assert r.n_steps == 100000 and r.details["method"] == "binned"


def test_time_shuffle_keeps_dstsp(lorenz_pair):
    test, noisy_train = lorenz_pair
    shuffled = noisy_train[np.random.default_rng(0).permutation(len(noisy_train))]
    assert state_space_divergence(test, shuffled).value == pytest.approx(
        state_space_divergence(test, noisy_train).value, rel=1e-12
    )


# ------------------------------------------------------------------ flags and bad input
def test_empty_generated_histogram_is_inf_with_flag():
    x = np.random.default_rng(12).standard_normal((500, 2))
    r = state_space_divergence(x, x + 100.0)
    assert r.value == math.inf and r.flag == "empty_histogram" and r.details["n_gen_inside"] == 0
    assert r.to_dict()["value"] is None


@pytest.mark.parametrize("method", ["binned", "gmm"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e7])
def test_diverged_generated_data(method, bad):
    x = np.random.default_rng(13).standard_normal((400, 3))
    y = x.copy()
    y[200, 1] = bad
    r = state_space_divergence(x, y, method=method, n_samples=50)
    assert r.value == math.inf and r.flag == "diverged"


def test_gmm_no_overlap_flag():
    x = np.random.default_rng(14).standard_normal((300, 6))
    r = state_space_divergence(x, x + 200.0, n_samples=50)
    assert r.value == math.inf and r.flag == "no_overlap" and r.details["n_samples_discarded"] == 50


def test_bad_inputs_raise_clear_errors():
    x = np.random.default_rng(15).standard_normal((100, 3))
    with pytest.raises(DataError, match="dimensions"):
        state_space_divergence(x, x[:, :2])
    with pytest.raises(DataError, match="constant in dimension"):
        state_space_divergence(np.c_[x[:, :2], np.ones(100)], x)
    with pytest.raises(DataError, match="non-finite"):
        state_space_divergence(np.r_[x, [[np.nan, 0, 0]]], x)
    with pytest.raises(DataError, match="1-d"):
        state_space_divergence(x[:, 0], x[:, 0])
    with pytest.raises(ConfigError, match="method"):
        state_space_divergence(x, x, method="kde")
    with pytest.raises(ConfigError, match="n_bins"):
        state_space_divergence(x, x, n_bins=0)
    with pytest.raises(ConfigError, match="sigma_squared"):
        state_space_divergence(x, x, method="gmm", sigma_squared=0.0)


def test_constant_true_dimension_is_fine_for_gmm():
    x = np.random.default_rng(16).standard_normal((200, 6))
    x[:, 5] = 1.0
    assert math.isfinite(state_space_divergence(x, x + 0.1, n_samples=50).value)


def test_torch_and_trajectory_inputs():
    import torch

    from dsrecon.data import Trajectory

    x = np.random.default_rng(17).standard_normal((500, 2))
    y = x + 0.3
    ref = state_space_divergence(x, y).value
    assert state_space_divergence(torch.from_numpy(x), Trajectory(y)).value == pytest.approx(ref, rel=1e-12)
