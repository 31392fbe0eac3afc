"""Speed of the DSR metrics against straightforward reference implementations, side by side.

Cases (issue 3):

* **D_stsp binned** on two 100 000 x 3 series (the paper Lorenz-63 files: clean test vs noisy
  train, when ``../shared/data/dsr-paper`` is present; synthetic correlated noise otherwise).
  Reference: a dense histogram via ``np.histogramdd`` over all 30**3 cells and the smoothed KL
  summed over the dense arrays.
* **D_H** on the same series. Reference: a per-dimension loop with a full complex FFT and the
  Gaussian kernel applied by ``np.convolve`` on a reflect-padded spectrum.
* **D_stsp GMM** on two 10 000 x 64 series (1000 Monte-Carlo samples). Reference: a Python loop
  over samples, each computing its squared distances to all 10 000 means and a
  ``scipy.special.logsumexp`` for both mixtures.
* **D_stsp binned, N = 4 and 5** on synthetic Gaussian series (100 000 points), same reference:
  the dense histogram grows as 30**N (24.3 M cells for N = 5, about 1.5 GB in the reference).
* **D_stsp binned, N = 10** (30**10 cells; no dense reference is possible: 4.7 PB).

Every case prints our time, the reference time, the ratio (reference / ours) and the largest
absolute difference of the values. Times are the best of ``--repeats`` runs.

Usage: ``python benchmarks/bench_metrics.py [--repeats 3] [--threads 1] [--gmm-ref-samples 1000]``
(``--gmm-ref-samples`` < 1000 runs the slow GMM reference on fewer samples and extrapolates its
time linearly; the values are then compared on that subset).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsr-paper"


def best_time(fn, repeats: int):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ------------------------------------------------------------------------------ references
def ref_binned(x_true, x_gen, n_bins=30, a=1e-5):
    sd = x_true.std(axis=0, ddof=1)
    lo, hi = x_true.min(0) - 0.1 * sd, x_true.max(0) + 0.1 * sd
    edges = [np.linspace(lo[d], hi[d], n_bins + 1) for d in range(x_true.shape[1])]
    h, _ = np.histogramdd(x_true, bins=edges)
    g, _ = np.histogramdd(x_gen, bins=edges)
    p = (h + a) / (h.sum() + a * h.size)
    q = (g + a) / (g.sum() + a * g.size)
    return float(np.sum(p * np.log(p / q)))


def ref_dh(x_true, x_gen, sigma=20.0):
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    out = []
    for d in range(x_true.shape[1]):
        spectra = []
        for x in (x_true[:, d], x_gen[:, d]):
            z = (x - x.mean()) / x.std()
            ps = np.abs(np.fft.fft(z)[: len(z) // 2 + 1]) ** 2
            padded = np.concatenate([ps[:radius][::-1], ps, ps[-radius:][::-1]])
            sm = np.convolve(padded, kernel, mode="valid")
            sm[sm < 0] = 0
            spectra.append(sm / sm.sum())
        out.append(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(spectra[0] * spectra[1]))))))
    return float(np.mean(out))


def ref_gmm(x_true, x_gen, samples, sigma2=1.0):
    n_dim = x_true.shape[1]
    const = -0.5 * n_dim * math.log(sigma2)
    diffs = []
    for s in samples:
        lp = logsumexp(-0.5 * np.sum((s - x_true) ** 2, axis=1) / sigma2) - math.log(len(x_true)) + const
        lq = logsumexp(-0.5 * np.sum((s - x_gen) ** 2, axis=1) / sigma2) - math.log(len(x_gen)) + const
        if lp > -103.28 and lq > -103.28:
            diffs.append(lp - lq)
    return float(np.mean(diffs))


# ------------------------------------------------------------------------------ data
def series_3d():
    f_true, f_gen = PAPER / "lorenz63_test.npy", PAPER / "lorenz63_on0.05_train.npy"
    if f_true.exists() and f_gen.exists():
        return np.load(f_true).astype(np.float64), np.load(f_gen).astype(np.float64), "paper Lorenz-63 (test vs noisy train)"
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
    return rng.standard_normal((100000, 3)) @ mix, rng.standard_normal((100000, 3)) @ mix, "synthetic correlated noise"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch threads")
    ap.add_argument("--gmm-ref-samples", type=int, default=1000)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    from dsrecon.metrics import hellinger_distance, state_space_divergence
    from dsrecon.metrics.state_space import gmm_samples

    x_true, x_gen, source = series_3d()
    rows = []

    t_ours, r = best_time(lambda: state_space_divergence(x_true, x_gen, method="binned"), args.repeats)
    t_ref, v_ref = best_time(lambda: ref_binned(x_true, x_gen), args.repeats)
    rows.append(("D_stsp binned 100000x3", "np.histogramdd dense", t_ours, t_ref, r.value, v_ref))

    t_ours, r = best_time(lambda: hellinger_distance(x_true, x_gen), args.repeats)
    t_ref, v_ref = best_time(lambda: ref_dh(x_true, x_gen), args.repeats)
    rows.append(("D_H 100000x3", "per-dim fft + np.convolve", t_ours, t_ref, r.value, v_ref))

    for n_dim in (4, 5):  # the dense reference grows as 30**N (5: 24.3 M cells, ~1.5 GB)
        rng = np.random.default_rng(n_dim)
        b_true, b_gen = rng.standard_normal((100000, n_dim)), 1.1 * rng.standard_normal((100000, n_dim))
        t_ours, r = best_time(lambda: state_space_divergence(b_true, b_gen, method="binned"), args.repeats)
        t_ref, v_ref = best_time(lambda: ref_binned(b_true, b_gen), 1 if n_dim == 5 else args.repeats)
        rows.append((f"D_stsp binned 100000x{n_dim}", "np.histogramdd dense (synthetic)", t_ours, t_ref, r.value, v_ref))

    rng = np.random.default_rng(1)
    g_true = rng.standard_normal((10000, 64))
    g_gen = 1.1 * rng.standard_normal((10000, 64)) + 0.05
    t_ours, r = best_time(lambda: state_space_divergence(g_true, g_gen, method="gmm", seed=0), args.repeats)
    samples = gmm_samples(g_true, 1000, 1.0, 0)
    k = min(args.gmm_ref_samples, 1000)
    t_ref, v_ref = best_time(lambda: ref_gmm(g_true, g_gen, samples[:k]), 1)
    t_ref *= 1000 / k
    v_ours = r.value if k == 1000 else state_space_divergence(g_true, g_gen, method="gmm", seed=0, n_samples=1000).value
    rows.append((f"D_stsp GMM 10000x64", f"per-sample loop{'' if k == 1000 else f' ({k} extrap.)'}", t_ours, t_ref, v_ours, v_ref if k == 1000 else math.nan))

    rng = np.random.default_rng(2)
    h_true, h_gen = rng.standard_normal((100000, 10)), 1.1 * rng.standard_normal((100000, 10))
    t_ours, r = best_time(lambda: state_space_divergence(h_true, h_gen, method="binned"), args.repeats)
    rows.append(("D_stsp binned 100000x10", "(dense: 30**10 cells, impossible)", t_ours, math.nan, r.value, math.nan))

    print(f"data (3-d cases): {source}; threads {args.threads}; best of {args.repeats}")
    print(f"{'case':<26}{'reference':<36}{'ours [s]':>10}{'ref [s]':>10}{'ratio':>8}  {'value':>12}{'|diff|':>10}")
    for name, ref, t_o, t_r, v_o, v_r in rows:
        ratio = t_r / t_o if math.isfinite(t_r) else math.nan
        diff = abs(v_o - v_r) if math.isfinite(v_r) else math.nan
        print(f"{name:<26}{ref:<36}{t_o:>10.4f}{t_r:>10.4f}{ratio:>8.1f}  {v_o:>12.6g}{diff:>10.2g}")


if __name__ == "__main__":
    main()
