"""D_H: known answers, a reference smoothing, properties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics import hellinger_distance
from dsrecon.metrics.hellinger import min_length

COS = [1.0, 0.0, -1.0, 0.0]  # rfft power (0, 4, 0): all power in bin 1
ALT = [1.0, -1.0, 1.0, -1.0]  # rfft power (0, 0, 16): all power in bin 2
MIX = [2.0, -1.0, 0.0, -1.0]  # COS + ALT: power (0, 4, 16) -> (0, 0.2, 0.8)


def reference_dh(x, y, sigma):
    """Straightforward D_H: explicit Gaussian kernel with scipy's 'reflect' padding (d c b a | a b c d)."""
    radius = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()

    def spectrum(col):
        z = (col - col.mean()) / col.std()
        ps = np.abs(np.fft.rfft(z)) ** 2
        padded = np.concatenate([ps[:radius][::-1], ps, ps[-radius:][::-1]])
        sm = np.array([np.dot(k, padded[i : i + 2 * radius + 1]) for i in range(len(ps))])
        sm[sm < 0] = 0
        return sm / sm.sum()

    d = [math.sqrt(max(0.0, 1 - np.sum(np.sqrt(spectrum(x[:, i]) * spectrum(y[:, i]))))) for i in range(x.shape[1])]
    return float(np.mean(d))


def test_identical_series_give_zero():
    x = np.random.default_rng(0).standard_normal((1000, 3))
    r = hellinger_distance(x, x)
    assert r.value == 0.0 and r.details["per_dim"] == [0.0, 0.0, 0.0]


def test_hand_case_disjoint_spectra_n1():
    r = hellinger_distance(np.c_[COS], np.c_[ALT], smoothing=0)
    assert r.value == pytest.approx(1.0, abs=1e-12) and r.n_steps == 4


def test_hand_case_partial_overlap_n2():
    # dim 0: p = (0, 1, 0), q = (0, 0.2, 0.8) -> sqrt(1 - sqrt(0.2)); dim 1: identical -> 0
    r = hellinger_distance(np.c_[COS, ALT], np.c_[MIX, ALT], smoothing=0)
    expected0 = math.sqrt(1 - math.sqrt(0.2))
    assert r.details["per_dim"] == pytest.approx([expected0, 0.0], abs=1e-12)
    assert r.value == pytest.approx(expected0 / 2, abs=1e-12)


def test_two_point_series_have_all_power_in_one_bin():
    assert hellinger_distance([[0.0], [1.0]], [[5.0], [-3.0]], smoothing=0).value == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sigma", [1.5, 20])
def test_equals_reference_with_explicit_kernel(sigma):
    rng = np.random.default_rng(1)
    t = np.arange(2000)
    x = np.c_[np.sin(0.05 * t), np.sin(0.11 * t) + 0.3 * rng.standard_normal(2000)]
    y = np.c_[np.sin(0.06 * t) + 0.1 * rng.standard_normal(2000), rng.standard_normal(2000)]
    assert hellinger_distance(x, y, smoothing=sigma).value == pytest.approx(reference_dh(x, y, sigma), rel=1e-9)


@pytest.mark.parametrize("n_freq,sigma", [(161, 20.0), (1001, 1.5), (20001, 20.0), (7, 0.6), (3, 0.3), (2, 2.0)])
def test_fft_smoothing_equals_scipy_gaussian_filter1d(n_freq, sigma):
    from scipy.ndimage import gaussian_filter1d

    from dsrecon.metrics.hellinger import gaussian_smooth

    ps = np.exp(5 * np.random.default_rng(n_freq).standard_normal((n_freq, 3)))  # 10 decades
    expected = gaussian_filter1d(ps, sigma, axis=0)
    np.testing.assert_allclose(gaussian_smooth(ps, sigma), expected, rtol=0, atol=1e-15 * ps.sum(0).max())


def test_symmetric_and_affine_invariant():
    rng = np.random.default_rng(2)
    t = np.arange(3000)
    x = np.c_[np.sin(0.05 * t), np.cos(0.2 * t)] + 0.2 * rng.standard_normal((3000, 2))
    y = np.c_[np.sin(0.07 * t), np.cos(0.15 * t)] + 0.2 * rng.standard_normal((3000, 2))
    d = hellinger_distance(x, y).value
    assert 0.05 < d < 1
    assert hellinger_distance(y, x).value == pytest.approx(d, rel=1e-12)
    y_affine = y * np.array([-7.0, 0.01]) + np.array([100.0, -3.0])
    assert hellinger_distance(x, y_affine).value == pytest.approx(d, rel=1e-9)


def test_paper_lorenz_floor(lorenz_pair):
    test, noisy_train = lorenz_pair
    r = hellinger_distance(test, noisy_train)
    assert r.value == pytest.approx(0.07, rel=0.10) and r.n_steps == 100000


def test_time_shuffle_moves_dh_far(lorenz_pair):
    test, noisy_train = lorenz_pair
    shuffled = noisy_train[np.random.default_rng(0).permutation(len(noisy_train))]
    floor = hellinger_distance(test, noisy_train).value
    assert hellinger_distance(test, shuffled).value > 0.5 > 5 * floor


def test_unequal_lengths_are_cut_to_the_common_prefix():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((1500, 2)), rng.standard_normal((1000, 2))
    r = hellinger_distance(x, y)
    assert r.details["truncated"] and r.n_steps == 1000
    assert r.value == hellinger_distance(x[:1000], y).value


def test_minimum_length_for_the_kernel():
    assert min_length(20) == 320 and min_length(0) == 2
    rng = np.random.default_rng(4)
    x = rng.standard_normal((320, 1))
    assert math.isfinite(hellinger_distance(x, x[::-1]).value)
    with pytest.raises(DataError, match="at least 320 time steps"):
        hellinger_distance(x[:319], x[:319])


def test_constant_generated_dimension_is_flagged_with_distance_one():
    x = np.random.default_rng(5).standard_normal((500, 2))
    y = x.copy()
    y[:, 1] = 0.25
    r = hellinger_distance(x, y)
    assert r.flag == "constant_dimension" and r.details["constant_dims"] == [1]
    assert r.details["per_dim"] == [0.0, 1.0] and r.value == 0.5


@pytest.mark.parametrize("bad", [np.nan, -np.inf, 1e6])
def test_diverged_generated_data(bad):
    x = np.random.default_rng(6).standard_normal((500, 2))
    y = x.copy()
    y[-1, 0] = bad
    r = hellinger_distance(x, y)
    assert r.value == 1.0 and r.flag == "diverged" and r.details["per_dim"] == [1.0, 1.0]


def test_bad_inputs():
    x = np.random.default_rng(7).standard_normal((500, 2))
    with pytest.raises(DataError, match="dimensions"):
        hellinger_distance(x, x[:, :1])
    with pytest.raises(DataError, match="constant in dimension"):
        hellinger_distance(np.c_[x[:, 0], np.zeros(500)], x)
    with pytest.raises(ConfigError, match="smoothing"):
        hellinger_distance(x, x, smoothing=-1)
    with pytest.raises(ConfigError, match="smoothing"):
        hellinger_distance(x, x, smoothing="wide")
