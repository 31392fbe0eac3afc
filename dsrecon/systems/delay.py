"""Batched integration of scalar delay differential equations, with dysts' delay embedding.

Glossary: B trajectories, T samples, K delay coordinates (dysts' embedding dimension).

dx/dt = f(x(t), x(t - tau), t), constant history x(t) = x_0 for t <= 0 (dysts' convention).
Method of steps on a uniform fine grid with step h = tau / m (m integer, so the delayed
argument of every stage falls on grid nodes or their midpoints): classical RK4, where the
delayed values at half steps come from the cubic Hermite interpolant of the stored solution
and derivative (error O(h^4), so the scheme keeps order 4; Bellen & Zennaro, *Numerical
Methods for Delay Differential Equations*, OUP 2003, ch. 3-4). The samples are delay
coordinates like dysts' ``DynSysDelay.make_trajectory``: coordinate k of sample j is
x(s_j - k tau / (K - 1)), with s_j = tau + transient + j dt, read off the same Hermite
interpolant.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

__all__ = ["integrate_delay"]


def _hermite(x: np.ndarray, f: np.ndarray, h: float, times: np.ndarray) -> np.ndarray:
    """Cubic Hermite interpolation of node values x (B, M) / slopes f (B, M) at ``times`` (...)."""
    m = x.shape[1]
    pos = np.clip(times / h, 0.0, m - 1)
    i = np.minimum(np.floor(pos).astype(np.int64), m - 2)
    s = pos - i
    h00, h10 = (1 + 2 * s) * (1 - s) ** 2, s * (1 - s) ** 2
    h01, h11 = s * s * (3 - 2 * s), s * s * (s - 1)
    return h00 * x[:, i] + h10 * h * f[:, i] + h01 * x[:, i + 1] + h11 * h * f[:, i + 1]


def integrate_delay(
    fd: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    history: np.ndarray,
    tau: float,
    n_samples: int,
    dt: float,
    n_delays: int,
    *,
    start: float = 0.0,
    substeps: int = 4,
    max_norm: float = 1e10,
    max_time: float | None = 3600.0,
) -> tuple[np.ndarray, np.ndarray, list]:
    """Integrate B scalar DDEs and return delay coordinates.

    Parameters
    ----------
    fd : f(x (B,), x_delayed (B,), t (B,)) -> (B,)
    history : ndarray (B,) -- constant history x(t) = history for t <= 0
    tau : float -- the delay
    n_samples : int -- T
    dt : float -- sampling interval
    n_delays : int -- K delay coordinates, lags k tau / (K - 1), k = 0..K-1 (K = 1: x only)
    start : float -- time after tau of the first sample (a transient)
    substeps : int -- fine steps per sampling interval (at least; h also divides tau)

    Returns
    -------
    values (B, T, K), failed (B,), reasons (list)
    """
    b = history.shape[0]
    h_target = dt / substeps
    m = max(1, math.ceil(tau / h_target))  # fine steps per delay
    h = tau / m
    t_last = tau + start + (n_samples - 1) * dt
    n_fine = int(math.ceil(t_last / h)) + 2
    x = np.empty((b, n_fine))
    fx = np.empty((b, n_fine))
    x[:, 0] = history
    failed = np.zeros(b, dtype=bool)
    fail_t = np.full(b, np.inf)
    reasons: list = [None] * b
    zeros = np.zeros(b)
    fx[:, 0] = fd(x[:, 0], history, zeros)
    clock = time.perf_counter()

    def delayed(node: int, half: bool) -> np.ndarray:
        j = node - m  # node index of t - tau
        if j < 0:
            return history
        if not half:
            return x[:, j]
        return 0.5 * (x[:, j] + x[:, j + 1]) + 0.125 * h * (fx[:, j] - fx[:, j + 1])

    with np.errstate(all="ignore"):
        for n in range(n_fine - 1):
            t = n * h
            y = x[:, n]
            k1 = fx[:, n]
            xd_half = delayed(n, True) if n - m >= 0 else history
            tt = np.full(b, t + 0.5 * h)
            k2 = fd(y + 0.5 * h * k1, xd_half, tt)
            k3 = fd(y + 0.5 * h * k2, xd_half, tt)
            k4 = fd(y + h * k3, delayed(n + 1, False), np.full(b, t + h))
            x[:, n + 1] = y + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            fx[:, n + 1] = fd(x[:, n + 1], delayed(n + 1, False), np.full(b, t + h))
            bad = ~np.isfinite(x[:, n + 1]) | (np.abs(x[:, n + 1]) > max_norm)
            if bad.any():
                for r in np.nonzero(bad & ~failed)[0]:
                    failed[r], fail_t[r] = True, t
                    reasons[r] = f"non-finite or exploding delay solution (|x| > {max_norm:.3g}) at t={t + h:.6g}"
                x[bad, n + 1], fx[bad, n + 1] = 0.0, 0.0  # keep the others going; rows masked below
            if max_time is not None and time.perf_counter() - clock > max_time:
                for r in np.nonzero(~failed)[0]:
                    failed[r], fail_t[r] = True, t
                    reasons[r] = f"wall-time limit max_time={max_time:g} s exceeded"
                break
    sample_t = tau + start + dt * np.arange(n_samples)  # (T,)
    lags = np.linspace(0.0, tau, n_delays) if n_delays > 1 else np.zeros(1)
    query = sample_t[:, None] - lags[None, :]  # (T, K)
    values = _hermite(x, fx, h, query)  # (B, T, K)
    # samples that need the solution at or after a row's failure time are NaN
    values[query.max(axis=1)[None, :] >= fail_t[:, None]] = np.nan
    return values, failed, reasons
