"""State-space divergence D_stsp: KL(p_true || p_gen) of the invariant measures.

Glossary: T time steps of the true series, T' of the generated one, N observed dimensions,
S Monte-Carlo samples, C = n_bins**N histogram cells.

Two estimators, as in the DSR papers (Koppe et al. 2019; Brenner et al. 2022; Hess et al.,
ICML 2023) and their reference Julia code (DurstewitzLab/GTF-shPLRNN,
``src/measures/stsp_measure.jl``):

* **binned** (default for N < 6): per dimension, ``n_bins`` equal bins over
  ``[min - 0.1 sd, max + 0.1 sd]`` of the *true* data (sd with the n-1 denominator, as Julia's
  ``std``); bins are closed on the left, ``[e_k, e_{k+1})`` (StatsBase's default), points outside
  are dropped; Laplace smoothing ``p = (h + 1e-5) / (sum h + 1e-5 C)`` (same for q) over *all*
  C cells; ``D = sum_c p_c log(p_c / q_c)``. Computed sparsely: only cells occupied by either
  series are visited; the C - |occupied| cells that are empty in both histograms all have
  ``p = 1e-5 / Z_p`` and ``q = 1e-5 / Z_q`` and are summed in closed form (see
  :func:`smoothed_kl`). Memory is O(T + T'), whatever C is (N = 10 with 30 bins is 30**10 cells).
  Differences from the reference: counts are int64 (the reference's UInt16 histogram wraps
  around above 65535 points in one cell, e.g. a model stuck on a fixed point), and an empty
  generated histogram gives ``inf`` with flag ``"empty_histogram"`` instead of NaN.
* **gmm** (default for N >= 6): the first ``min(T, max_points)`` points of each series are the
  means of an equal-weight mixture of isotropic Gaussians with variance ``sigma_squared``; S
  samples are drawn from the true mixture (uniform component, then Gaussian noise; seeded),
  ``D = mean_s [log p(x_s) - log q(x_s)]`` (Monte-Carlo KL, Hershey & Olsen 2007). Log-densities
  are computed with a log-sum-exp, in float64. The reference computes the densities directly in
  float32 and averages only over samples where *both* densities are > 0; we reproduce that
  filter in the log domain: a sample is kept when both log-densities, in the reference's
  normalisation ``log(mean_t exp(-|x - mu_t|^2 / (2 sigma^2)) / sigma^N)`` (no ``(2 pi)^(N/2)``,
  which cancels in the ratio), exceed ``log(2**-149)``, the log of the smallest positive float32
  (up to float32 rounding at the threshold). ``min_log_density=None`` disables the filter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics._checks import (
    constant_columns,
    generated_series,
    has_diverged,
    positive_int,
    true_series,
)
from dsrecon.metrics.result import MetricResult

#: Laplace smoothing constant of the binned estimator (reference value 1e-5)
LAPLACE_ALPHA = 1e-5
#: log of the smallest positive float32 (2**-149): the reference's "density > 0" in float32
FLOAT32_LOG_TINY = -149.0 * math.log(2.0)
#: N below which method="auto" uses the binned estimator
AUTO_BINNED_MAX_DIM = 5
#: histograms with at most this many cells are counted with a dense np.bincount (faster)
DENSE_CELL_LIMIT = 1 << 21
#: Monte-Carlo samples processed per chunk in the GMM estimator (bounds memory to ~chunk x T)
_GMM_CHUNK = 128


def state_space_divergence(
    x_true: Any,
    x_gen: Any,
    *,
    method: str = "auto",
    n_bins: int = 30,
    sigma_squared: float = 1.0,
    n_samples: int = 1000,
    max_points: int = 10000,
    seed: int | None = 0,
    min_log_density: float | None = FLOAT32_LOG_TINY,
) -> MetricResult:
    """D_stsp = KL(p_true || p_gen) between the state-space distributions of two series.

    Parameters
    ----------
    x_true : array (T, N)
        Reference series (the test data); must be finite.
    x_gen : array (T', N)
        Generated series (e.g. a model's free run after the transient). Non-finite values or
        values beyond the divergence box give ``inf`` with flag ``"diverged"``.
    method : {"auto", "binned", "gmm"}
        ``"auto"``: binned for N < 6, GMM for N >= 6 (the papers' choice).
    n_bins : int
        Bins per dimension (binned).
    sigma_squared : float
        Variance of every mixture component (GMM).
    n_samples, max_points : int
        Monte-Carlo samples and mixture components per series (GMM).
    seed : int or None
        Seeds the Monte-Carlo samples (GMM).
    min_log_density : float or None
        GMM sample filter (see the module docstring); None keeps every sample.

    Returns
    -------
    MetricResult with ``name="dstsp"``, ``n_steps=T'`` (generated points used by the binned
    estimator; mixture size for GMM) and details (method, counts, T of both series).

    References
    ----------
    Koppe et al., PLoS Comput Biol 15 (2019); Brenner et al., ICML 2022; Hess et al., ICML 2023;
    Hershey & Olsen, ICASSP 2007 (Monte-Carlo KL of mixtures).
    """
    if method not in ("auto", "binned", "gmm"):
        raise ConfigError(f"method must be 'auto', 'binned' or 'gmm', got {method!r}")
    xt = true_series(x_true, "x_true", min_steps=2)
    xg = generated_series(x_gen, xt.shape[1], "x_gen", min_steps=1)
    n_dim = xt.shape[1]
    if method == "auto":
        method = "binned" if n_dim <= AUTO_BINNED_MAX_DIM else "gmm"
    if method == "binned":
        n_bins = positive_int(n_bins, "n_bins")
        const = constant_columns(xt)
        if const.any():
            raise DataError(
                f"x_true is constant in dimension(s) {np.flatnonzero(const).tolist()}; the binned "
                "D_stsp needs a spread in every dimension: drop constant dimensions or use method='gmm'"
            )
        if n_bins**n_dim > 1e300:
            raise ConfigError(f"{n_bins}**{n_dim} histogram cells overflow float64; use method='gmm'")
    else:
        if not (np.isfinite(sigma_squared) and sigma_squared > 0):
            raise ConfigError(f"sigma_squared must be a positive number, got {sigma_squared!r}")
        n_samples = positive_int(n_samples, "n_samples")
        max_points = positive_int(max_points, "max_points")
    base = {"method": method, "n_true": int(xt.shape[0]), "n_gen": int(xg.shape[0])}
    if has_diverged(xg, xt):
        return MetricResult(math.inf, xg.shape[0], "dstsp", "diverged", base)
    if method == "binned":
        return _binned(xt, xg, n_bins, base)
    return _gmm(xt, xg, float(sigma_squared), n_samples, max_points, seed, min_log_density, base)


# ----------------------------------------------------------------------------------- binned
def bin_edges(x_true: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Per-dimension bin edges (N lists of n_bins + 1) over [min - 0.1 sd, max + 0.1 sd]."""
    sd = np.std(x_true, axis=0, ddof=1)
    lo = np.min(x_true, axis=0) - 0.1 * sd
    hi = np.max(x_true, axis=0) + 0.1 * sd
    return [np.linspace(lo[d], hi[d], n_bins + 1) for d in range(x_true.shape[1])]


def _bin_1d(col: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Left-closed bin ``k`` with ``e[k] <= v < e[k+1]`` of each value: (T,) -> (T,) int64.

    Values outside ``[e[0], e[-1])`` (and NaN) get -1 or ``n_bins``. The index is computed
    arithmetically and then corrected against the edges themselves, so it equals
    ``np.searchsorted(e, col, side="right") - 1`` exactly (bins closed on the left, StatsBase).
    """
    n = len(e) - 1
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.floor((col - e[0]) * (n / (e[-1] - e[0])))
        k = np.fmin(np.fmax(k, 0), n - 1).astype(np.int64)  # fmax/fmin map NaN to a valid bin
    k -= col < e[k]
    k += col >= e[k + 1]
    nan = np.isnan(col)
    if nan.any():
        k[nan] = n
    return k


def bin_indices(x: np.ndarray, edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension bins of the points inside the grid: (T_inside, N) int64, and the (T,) mask."""
    n_bins = len(edges[0]) - 1
    k = np.stack([_bin_1d(x[:, d], e) for d, e in enumerate(edges)], axis=1)
    inside = np.all(k.view(np.uint64) < n_bins, axis=1)  # -1 wraps to 2**64 - 1
    return k[inside], inside


def cell_ids(x: np.ndarray, edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (C-order) cell id of the points inside the grid: (T_inside,) int64, and the (T,) mask.

    Needs ``n_bins**N <= 2**62``.
    """
    n_bins = len(edges[0]) - 1
    flat = np.zeros(len(x), dtype=np.int64)
    inside = np.ones(len(x), dtype=bool)
    for d, e in enumerate(edges):
        k = _bin_1d(x[:, d], e)
        inside &= k.view(np.uint64) < n_bins
        flat *= n_bins
        flat += k
    return flat[inside], inside


def _counts(ci: np.ndarray, cg: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of true (h) and generated (g) points over the cells occupied by either series."""
    if n_cells <= DENSE_CELL_LIMIT:
        h = np.bincount(ci, minlength=n_cells)
        g = np.bincount(cg, minlength=n_cells)
        occupied = (h > 0) | (g > 0)
        return h[occupied], g[occupied]
    if ci.ndim == 1:
        _, inv = np.unique(np.concatenate([ci, cg]), return_inverse=True)
    else:  # cell ids do not fit in int64: unique over index rows
        _, inv = np.unique(np.concatenate([ci, cg]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_occ = int(inv.max()) + 1 if inv.size else 0
    h = np.bincount(inv[: len(ci)], minlength=n_occ)
    g = np.bincount(inv[len(ci) :], minlength=n_occ)
    return h, g


def smoothed_kl(h: np.ndarray, g: np.ndarray, n_cells: int, alpha: float = LAPLACE_ALPHA) -> float:
    """KL(p || q) of Laplace-smoothed histograms over ``n_cells`` cells, given the occupied ones.

    ``h``, ``g`` are the counts over the cells occupied by either histogram. With
    ``Z_p = sum h + alpha C`` and ``Z_q = sum g + alpha C``, every cell has
    ``log(p_c / q_c) = log((h_c + alpha) / (g_c + alpha)) + log(Z_q / Z_p)``; the first term is 0
    for the ``C - len(h)`` cells empty in both (``p = alpha / Z_p``, ``q = alpha / Z_q``), and
    ``sum_c p_c = 1``, so ``D = sum_occupied p_c log((h_c + alpha) / (g_c + alpha)) + log(Z_q / Z_p)``
    exactly (the empty cells' share ``n_empty alpha / Z_p log(Z_q / Z_p)`` is inside the last term).
    """
    s_p, s_q = float(np.sum(h)), float(np.sum(g))
    z_p = s_p + alpha * float(n_cells)
    p = (h + alpha) / z_p
    log_zq_over_zp = math.log1p((s_q - s_p) / z_p)
    return float(np.sum(p * (np.log(h + alpha) - np.log(g + alpha)))) + log_zq_over_zp


def _binned(xt: np.ndarray, xg: np.ndarray, n_bins: int, base: dict) -> MetricResult:
    edges = bin_edges(xt, n_bins)
    n_cells = n_bins ** xt.shape[1]
    ids = cell_ids if n_cells <= 2**62 else bin_indices
    ki, _ = ids(xt, edges)
    kg, inside = ids(xg, edges)
    details = {
        **base,
        "n_bins": n_bins,
        "n_cells": float(n_cells),
        "n_gen_inside": int(inside.sum()),
        "n_gen_outside": int(len(inside) - inside.sum()),
    }
    if len(kg) == 0:
        return MetricResult(math.inf, xg.shape[0], "dstsp", "empty_histogram", details)
    h, g = _counts(ki, kg, n_cells)
    details["n_cells_occupied"] = int(len(h))
    value = smoothed_kl(h, g, n_cells)
    if -1e-12 < value < 0.0:  # KL >= 0; clear round-off of identical histograms
        value = 0.0
    return MetricResult(value, xg.shape[0], "dstsp", None, details)


# -------------------------------------------------------------------------------------- GMM
def gmm_log_density(samples: np.ndarray, means: np.ndarray, sigma_squared: float) -> np.ndarray:
    """log of the equal-weight isotropic mixture density, reference normalisation.

    ``log( mean_t exp(-|s - mu_t|^2 / (2 sigma^2)) / sigma^N )`` for samples (S, N) and means
    (T, N) -> (S,); the Gaussian constant ``(2 pi)^(-N/2)`` is omitted, as in the reference.
    Chunked over samples (memory ~ chunk x T), log-sum-exp for stability.
    """
    n_dim = means.shape[1]
    m2 = np.einsum("ij,ij->i", means, means)
    out = np.empty(len(samples))
    for start in range(0, len(samples), _GMM_CHUNK):
        s = samples[start : start + _GMM_CHUNK]
        d2 = np.einsum("ij,ij->i", s, s)[:, None] + m2[None, :] - 2.0 * (s @ means.T)
        np.maximum(d2, 0.0, out=d2)
        e = np.multiply(d2, -0.5 / sigma_squared, out=d2)  # log-kernel, in place
        mx = np.max(e, axis=1)
        np.exp(np.subtract(e, mx[:, None], out=e), out=e)
        out[start : start + len(s)] = mx + np.log(np.sum(e, axis=1))
    return out - math.log(len(means)) - 0.5 * n_dim * math.log(sigma_squared)


def gmm_samples(x: np.ndarray, n_samples: int, sigma_squared: float, seed: int | None) -> np.ndarray:
    """S samples (S, N) from the equal-weight mixture centred on the rows of ``x``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=n_samples)
    return x[idx] + math.sqrt(sigma_squared) * rng.standard_normal((n_samples, x.shape[1]))


def _gmm(xt, xg, sigma_squared, n_samples, max_points, seed, min_log_density, base) -> MetricResult:
    shift = np.mean(xt[: min(len(xt), max_points)], axis=0)  # translation-invariant; less round-off
    x_p = xt[: min(len(xt), max_points)] - shift
    x_q = xg[: min(len(xg), max_points)] - shift
    samples = gmm_samples(x_p, n_samples, sigma_squared, seed)
    log_p = gmm_log_density(samples, x_p, sigma_squared)
    log_q = gmm_log_density(samples, x_q, sigma_squared)
    if min_log_density is None:
        keep = np.ones(len(samples), dtype=bool)
    else:
        keep = (log_p > min_log_density) & (log_q > min_log_density)
    details = {
        **base,
        "sigma_squared": sigma_squared,
        "n_samples": n_samples,
        "n_components_true": int(len(x_p)),
        "n_components_gen": int(len(x_q)),
        "n_samples_discarded": int(len(samples) - keep.sum()),
        "seed": seed,
    }
    if not keep.any():
        return MetricResult(math.inf, len(x_q), "dstsp", "no_overlap", details)
    value = float(np.mean(log_p[keep] - log_q[keep]))
    return MetricResult(value, len(x_q), "dstsp", None, details)
