"""Batched ODE integration: many initial conditions at once, NumPy or torch (CPU or GPU).

Glossary: B trajectories, T samples, N state dimension.

:func:`integrate` advances B initial conditions of dx/dt = f(t, x) and returns the states on
the uniform grid t_k = t0 + k dt, k = 0..T-1 (the first sample is x0).

Adaptive methods (``"dop853"`` default, ``"rk45"`` = DOPRI5). **Each trajectory keeps its own
step size and its own time**: the whole batch takes one step per iteration, but every row
has its own h, error norm, acceptance and step-size update (Hairer, Norsett & Wanner 1993,
II.4), so a fast-varying trajectory does not slow down the others and a row's result does not
depend on which other rows are in the batch (up to rounding in the batched linear algebra). Samples are filled in from the continuous
extension of each accepted step (DOP853: 7th order, 3 extra stages; DOPRI5: Shampine's 4th
order), so the grid is hit exactly without shortening steps. f is therefore called with a
per-row time array t of shape (B_active,).

Fixed-step ``"rk4"``: classical Runge-Kutta with ``substeps`` steps per sampling interval; f
is called with a scalar t.

Failures are per trajectory and never stop the others: non-finite values, |x|_inf above
``max_norm`` (blow-up), step-size underflow (h below ~16 eps |t|: stiffness or a singularity),
more than ``max_steps`` steps, or the wall-time budget ``max_time``. A failed row keeps the
samples computed before the failure; the rest are NaN; ``reasons`` says what happened.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from dsrecon.errors import ConfigError
from dsrecon.systems.adaptive import adaptive
from dsrecon.systems.backend import backend_for
from dsrecon.systems.result import Bookkeeping, IntegrationResult
from dsrecon.systems.scalar import dop853_scalar
from dsrecon.systems.schemes import SCHEMES

__all__ = ["IntegrationResult", "integrate", "METHODS"]

METHODS = ("dop853", "rk45", "dopri5", "rk4")


def _check(x0: Any, n_steps: Any, dt: Any, method: str, rtol, atol, max_steps, t0, substeps, max_norm, max_time):
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 1:
        raise ConfigError(f"n_steps must be a positive integer (number of samples), got {n_steps!r}")
    for name, v in (("dt", dt), ("rtol", rtol), ("atol", atol), ("max_norm", max_norm)):
        try:
            ok = np.isfinite(float(v)) and float(v) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{name} must be a positive finite number, got {v!r}")
    if not np.isfinite(float(t0)):
        raise ConfigError(f"t0 must be finite, got {t0!r}")
    if method not in METHODS:
        raise ConfigError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
    if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 1):
        raise ConfigError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    if not isinstance(substeps, (int, np.integer)) or substeps < 1:
        raise ConfigError(f"substeps must be a positive integer, got {substeps!r}")
    if max_time is not None and not (float(max_time) > 0):
        raise ConfigError(f"max_time must be positive seconds or None, got {max_time!r}")
    if isinstance(x0, torch.Tensor):
        if not x0.is_floating_point():
            raise ConfigError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
        x = x0
    else:
        try:
            x = np.asarray(x0, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("x0 must be a numeric array of shape (B, N)") from None
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ConfigError(f"x0 must have shape (B, N) (or (N,)), got {tuple(x.shape)}")
    finite = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
    if not bool(finite):
        raise ConfigError("x0 contains NaN or inf; pass finite initial conditions")
    return x


def integrate(
    f: Callable[[Any, Any], Any],
    x0: Any,
    n_steps: int,
    dt: float,
    *,
    method: str = "dop853",
    rtol: float = 1e-9,
    atol: float = 1e-12,
    max_steps: int | None = None,
    t0: float = 0.0,
    substeps: int = 10,
    max_norm: float = 1e10,
    max_time: float | None = 3600.0,
    first_step: float | None = None,
    kick: Callable[[int, Any, np.ndarray], Any] | None = None,
) -> IntegrationResult:
    """Integrate dx/dt = f(t, x) for a batch of initial conditions (see the module docstring).

    Parameters
    ----------
    f : callable f(t, x) -> dx/dt
        Batched: x (B', N) -> (B', N) of x's type; t is a float or a (B',) array/tensor.
    x0 : ndarray or tensor (B, N) (or (N,) for one trajectory)
        NumPy input runs in float64 NumPy; a tensor runs in torch on its device and dtype.
    n_steps : int
        T, number of samples including x0.
    dt : float
        Sampling interval.
    method : {"dop853", "rk45" (alias "dopri5"), "rk4"}
    rtol, atol : float
        Per-component tolerances of the adaptive methods: err_i <= atol + rtol max(|x_i|, |x_i'|).
    max_steps : int, optional
        Bound on steps (accepted + rejected) per trajectory; default max(100 000, 50 T).
    t0 : float
        Time of x0 (matters for non-autonomous f).
    substeps : int
        RK4 steps per sampling interval.
    max_norm : float
        Blow-up bound on max_i |x_i|.
    max_time : float or None
        Wall-time budget in seconds; rows still running then fail with that reason.
    first_step : float, optional
        Initial step for the adaptive methods (default: Hairer's starting-step heuristic).
    kick : callable (k, x, rows) -> x, optional
        RK4 only: ``kick(k, x, rows)`` returns the states after sampling interval k (k = 1..T-1),
        before they are recorded; x (B', N) are the still-running rows ``rows`` (indices into
        the batch). Used for additive dynamical noise (see :func:`dsrecon.systems.simulate`).

    Notes
    -----
    If ``f`` has an attribute ``scalar_rhs(t, y_list) -> sequence of N floats`` (simulate() sets
    it for dysts systems), one NumPy trajectory with DOP853 runs in the pure-Python-float engine
    of :mod:`dsrecon.systems.scalar` (same method, 2-3x less overhead).
    """
    x = _check(x0, n_steps, dt, method, rtol, atol, max_steps, t0, substeps, max_norm, max_time)
    grid = float(t0) + float(dt) * np.arange(int(n_steps), dtype=np.float64)
    if max_steps is None:
        max_steps = max(100_000, 50 * int(n_steps))
    be = backend_for(x)
    x = x.clone() if be.is_torch else x.copy()
    limits = (float(max_norm), int(max_steps), None if max_time is None else float(max_time))
    if kick is not None and method != "rk4":
        raise ConfigError("kick (e.g. dynamical noise) needs method='rk4'")
    if method == "rk4":
        return _rk4(f, x, grid, int(substeps), limits, be, kick)
    scalar_rhs = getattr(f, "scalar_rhs", None)
    if scalar_rhs is not None and method == "dop853" and not be.is_torch and x.shape[0] == 1:
        return _scalar(scalar_rhs, x, grid, float(rtol), float(atol), limits, first_step)
    return adaptive(f, x, grid, SCHEMES[method], float(rtol), float(atol), limits, first_step, be)


def _scalar(fs, x, grid, rtol, atol, limits, first_step) -> IntegrationResult:
    max_norm, max_steps, max_time = limits
    with np.errstate(all="ignore"):
        vals, reason, n_evals, n_acc, n_rej = dop853_scalar(fs, x[0].tolist(), grid, rtol, atol, max_norm,
                                                            max_steps, max_time, first_step)
    return IntegrationResult(vals[None], grid, np.array([reason is not None]), [reason], n_evals,
                             np.array([n_acc]), np.array([n_rej]), "dop853", {"rtol": rtol, "atol": atol, "engine": "scalar"})


def _rk4(f, x, grid, substeps, limits, be, kick=None) -> IntegrationResult:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _rk4_loop(f, x, grid, substeps, limits, be, kick)


def _rk4_loop(f, x, grid, substeps, limits, be, kick) -> IntegrationResult:
    max_norm, max_steps, max_time = limits
    book = Bookkeeping(be, x, len(grid), "rk4")
    dt = grid[1] - grid[0] if len(grid) > 1 else 0.0
    h = dt / substeps
    idx = np.arange(x.shape[0])
    y = x
    start = time.perf_counter()
    for j in range(1, len(grid)):
        for s in range(substeps):
            t = grid[j - 1] + s * h
            k1 = f(t, y)
            k2 = f(t + 0.5 * h, y + (0.5 * h) * k1)
            k3 = f(t + 0.5 * h, y + (0.5 * h) * k2)
            k4 = f(t + h, y + h * k3)
            y = y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            book.n_evals += 4
        book.n_acc[idx] += substeps
        if kick is not None:
            y = kick(j, y, idx)
        finite = be.numpy(be.row_finite(y))
        big = be.numpy(be.row_absmax(y)) > max_norm
        book.write(idx, np.full(idx.shape, j), y)
        bad = ~finite | big
        if bad.any():
            tj = grid[j]
            book.fail(idx[~finite], f"non-finite state before t={tj:.6g} (blow-up or singularity)")
            book.fail(idx[finite & big], f"blow-up: |x| exceeded max_norm={max_norm:.3g} at t={tj:.6g}")
            book.values[be.from_numpy(idx[bad]) if be.is_torch else idx[bad], j] = float("nan")
        elif max_time is not None and time.perf_counter() - start > max_time:
            bad = np.ones(idx.shape, dtype=bool)
            book.fail(idx, f"wall-time limit max_time={max_time:g} s exceeded at t={grid[j]:.6g}")
        if bad.any():
            keep = ~bad
            idx = idx[keep]
            if idx.size == 0:
                break
            y = y[be.from_numpy(keep)] if be.is_torch else y[keep]
    return book.result(grid, substeps=substeps)


