"""DOP853 for a single trajectory in plain Python floats (the B = 1 fast path).

Glossary: N state dimension, T samples.

For one trajectory the batched engine (:mod:`dsrecon.systems.adaptive`) is dominated by the
~1 microsecond overhead of each NumPy call on 3-element arrays. This module runs the *same*
method -- DOP853 tableau, Hairer's 5th/3rd-order error norm, starting step, I-controller with
the same safety factor and limits, 7th-order dense output -- on Python lists, with the vector
field evaluated on Python floats (how dysts' numba code itself computes). It is used by
:func:`dsrecon.systems.integrate` when B = 1, the input is NumPy and ``f`` carries a
``scalar_rhs(t, y_list) -> sequence`` attribute (``dsrecon.systems.simulate`` provides one for
every system whose vector field passed the scalar probe). The tests check that it agrees with
the batched engine (same accepted and rejected steps, values to rounding).

An exception in the vector field (ZeroDivisionError, OverflowError, a complex result) is treated
like a non-finite value: the step is rejected and shrunk, and the trajectory fails if the step
size underflows.
"""

from __future__ import annotations

import math
import time
from operator import mul
from typing import Callable, Sequence

import numpy as np

from dsrecon.systems import tableaus as tb

__all__ = ["dop853_scalar"]

_A = [list(map(float, tb.DOP853_A[s, :s])) for s in range(tb.DOP853_STAGES_EXTENDED)]
_C = list(map(float, tb.DOP853_C))
_B = list(map(float, tb.DOP853_B))
_E5 = list(map(float, tb.DOP853_E5))
_E3 = list(map(float, tb.DOP853_E3))
_D = [list(map(float, row)) for row in tb.DOP853_D]
_S, _SX = tb.DOP853_STAGES, tb.DOP853_STAGES_EXTENDED
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_EPS = float(np.finfo(np.float64).eps)


def _eval(fs: Callable, t: float, y: list, n: int):
    """f(t, y) as a sequence of N floats, or None if it raises or is not finite.

    The length and type of the output were verified by the vector-field probe; finiteness is
    checked through the sum (NaN/inf propagate; a complex result raises TypeError).
    """
    try:
        out = fs(t, y)
        if math.isfinite(sum(out)):
            return out
    except (ArithmeticError, ValueError, TypeError):
        pass
    return None


def dop853_scalar(fs: Callable[[float, list], Sequence[float]], x0: Sequence[float], grid: np.ndarray,
                  rtol: float, atol: float, max_norm: float, max_steps: int, max_time: float | None,
                  first_step: float | None = None):
    """Integrate one trajectory; returns (values (T, N), reason or None, n_evals, n_acc, n_rej)."""
    n = len(x0)
    T = len(grid)
    grid = grid.tolist()  # Python floats: cheaper comparisons in the loop
    out = np.full((T, n), np.nan)
    out[0] = x0
    t, t_end = float(grid[0]), float(grid[-1])
    if T == 1:
        return out, None, 0, 0, 0
    y = [float(v) for v in x0]
    f0 = _eval(fs, t, y, n)
    n_evals = 1
    if f0 is None:
        return out, "the vector field is not finite at the initial condition", n_evals, 0, 0
    # ---- Hairer's starting step (same as the batched engine)
    if first_step is not None:
        h = min(float(first_step), t_end - t)
    else:
        sc = [atol + rtol * abs(v) for v in y]
        d0 = math.sqrt(sum((v / s) ** 2 for v, s in zip(y, sc)) / n)
        d1 = math.sqrt(sum((v / s) ** 2 for v, s in zip(f0, sc)) / n)
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        h0 = min(h0, t_end - t)
        f1 = _eval(fs, t + h0, [v + h0 * fv for v, fv in zip(y, f0)], n)
        n_evals += 1
        if f1 is None:
            h = h0
        else:
            d2 = math.sqrt(sum(((a - b) / s) ** 2 for a, b, s in zip(f1, f0, sc)) / n) / h0
            dm = max(d1, d2)
            h1 = max(1e-6, h0 * 1e-3) if dm <= 1e-15 else (0.01 / dm) ** (1.0 / 9.0)
            h = min(100 * h0, h1, t_end - t)
    h_min_scale = 16 * _EPS * max(abs(t), abs(t_end), t_end - t)
    snap = 4 * _EPS * abs(t_end)
    Kc = [[0.0] * _SX for _ in range(n)]  # Kc[i][s]: component i of stage s
    rng_n = range(n)
    nxt, steps, rejected, rejected_last, saw_nonfinite = 1, 0, 0, False, False
    start = time.perf_counter()
    while True:
        h_eff = min(h, t_end - t)
        for i in rng_n:
            Kc[i][0] = f0[i]
        ok = True
        for s in range(1, _S):
            a = _A[s]
            ks = _eval(fs, t + _C[s] * h_eff, [y[i] + h_eff * sum(map(mul, a, Kc[i])) for i in rng_n], n)
            if ks is None:
                ok = False
                break
            for i in rng_n:
                Kc[i][s] = ks[i]
        err = math.nan
        if ok:
            y_new = [y[i] + h_eff * sum(map(mul, _B, Kc[i])) for i in rng_n]
            t_new = t + h_eff
            if t_end - t_new <= snap:
                t_new = t_end
            f_new = _eval(fs, t_new, y_new, n)
            if f_new is not None:
                for i in rng_n:
                    Kc[i][_S] = f_new[i]
                e5 = e3 = 0.0
                for i in rng_n:
                    s_i = atol + rtol * max(abs(y[i]), abs(y_new[i]))
                    a5 = sum(map(mul, _E5, Kc[i])) / s_i
                    a3 = sum(map(mul, _E3, Kc[i])) / s_i
                    e5 += a5 * a5
                    e3 += a3 * a3
                denom = e5 + 0.01 * e3
                err = 0.0 if denom == 0 else abs(h_eff) * e5 / math.sqrt(denom * n)
        n_evals += _S
        steps += 1
        accept = err <= 1.0
        if math.isfinite(err):
            factor = _MAX_FACTOR if err == 0 else min(_MAX_FACTOR, max(_MIN_FACTOR, _SAFETY * err ** -0.125))
        else:
            factor, saw_nonfinite = _MIN_FACTOR, True
        if accept and rejected_last:
            factor = min(factor, 1.0)
        if accept:
            if grid[nxt] <= t_new:
                n_evals += _SX - _S - 1
                if not _dense(fs, Kc, y, y_new, t, t_new, h_eff, grid, out, nxt, n):
                    return out, f"non-finite dense-output stage near t={t:.6g}", n_evals, steps - rejected, rejected
                while nxt < T and grid[nxt] <= t_new:
                    nxt += 1
            y, f0, t = y_new, f_new, t_new
            if max(map(abs, y)) > max_norm and nxt < T:
                return out, f"blow-up: |x| exceeded max_norm={max_norm:.3g} at t={t:.6g}", n_evals, steps - rejected, rejected
        else:
            rejected += 1
        rejected_last = not accept
        h = h_eff * factor
        if nxt >= T:
            return out, None, n_evals, steps - rejected, rejected
        if not accept and h < h_min_scale + 16 * _EPS * abs(t):
            why = ("non-finite values near t={:.6g} (blow-up or singularity): step size underflow" if saw_nonfinite
                   else "step size underflow at t={:.6g} (stiff or singular system); try method='rk4' with small substeps")
            return out, why.format(t), n_evals, steps - rejected, rejected
        if steps >= max_steps:
            return out, f"max_steps={max_steps} steps exceeded (stiff system?); raise max_steps or loosen rtol", \
                n_evals, steps - rejected, rejected
        if max_time is not None and time.perf_counter() - start > max_time:
            return out, f"wall-time limit max_time={max_time:g} s exceeded", n_evals, steps - rejected, rejected


def _dense(fs, Kc, y, y_new, t, t_new, h, grid, out, nxt, n) -> bool:
    """Fill every sample in (t, t_new] from the 7th-order continuous extension."""
    for s in range(_S + 1, _SX):
        a = _A[s]
        ks = _eval(fs, t + _C[s] * h, [y[i] + h * sum(map(mul, a, Kc[i])) for i in range(n)], n)
        if ks is None:
            return False
        for i in range(n):
            Kc[i][s] = ks[i]
    F = []
    for i in range(n):
        delta = y_new[i] - y[i]
        k0, kf = Kc[i][0], Kc[i][_S]
        F.append([delta, h * k0 - delta, 2.0 * delta - h * (kf + k0)] + [h * sum(map(mul, d, Kc[i])) for d in _D])
    T = len(grid)
    while nxt < T and grid[nxt] <= t_new:
        x = (grid[nxt] - t) / h
        xm = 1.0 - x
        # the continuous extension in Hairer's nested form (dop853.f, contd8)
        out[nxt] = [((((((F6 * x + F5) * xm + F4) * x + F3) * xm + F2) * x + F1) * xm + F0) * x + yi
                    for (F0, F1, F2, F3, F4, F5, F6), yi in zip(F, y)]
        nxt += 1
    return True
