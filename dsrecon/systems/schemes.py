"""Embedded Runge-Kutta schemes (one step, error norm, dense output) for the batched integrator.

Glossary: B batch (active trajectories), N state dimension, S stages, M rows needing output.

Each scheme works on a stage buffer ``K`` of shape (S_total, B, N) and per-row step sizes
``h`` (B, 1). All functions are backend-neutral (NumPy or torch via
:mod:`dsrecon.systems.backend`).

References: Hairer, Norsett & Wanner, *Solving ODEs I* (2nd ed. 1993), sections II.4 (step-size
control and starting step), II.5-6 (dense output) and II.10 (DOP853); Dormand & Prince (1980)
J. Comput. Appl. Math. 6:19; Shampine (1986) Math. Comp. 46:135 (DOPRI5 dense output).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dsrecon.systems import tableaus as tb

__all__ = ["SCHEMES", "Dop853", "Dopri5"]


class Dop853:
    """Dormand-Prince 8(5,3) with the 7th-order continuous extension."""

    name = "dop853"
    order = 8
    error_exponent = -1.0 / 8.0  # 1 / (error-estimator order 7 + 1)
    n_stages = tb.DOP853_STAGES  # 12 evaluations per step (+1 FSAL at the new point)
    n_buffer = tb.DOP853_STAGES_EXTENDED  # 16 (3 extra stages for dense output)
    fsal_index = tb.DOP853_STAGES  # K[12] = f(t + h, y_new)
    A_rows = [tb.DOP853_A[s, :s].copy() for s in range(tb.DOP853_STAGES_EXTENDED)]
    C = tb.DOP853_C
    B = tb.DOP853_B
    E3 = tb.DOP853_E3
    E5 = tb.DOP853_E5
    D = tb.DOP853_D

    E53 = np.stack([tb.DOP853_E5, tb.DOP853_E3])  # (2, 13)

    @classmethod
    def error_norm(cls, be, K, h: np.ndarray, scale) -> np.ndarray:
        """Hairer's combined 5th/3rd-order estimate (dop853.f), per row -> numpy (B,)."""
        e = be.combine_many(be.coef(cls.E53), K) / scale  # (2, B, N)
        n53 = be.numpy(be.sumsq(e))  # (2, B)
        n5, n3 = n53[0], n53[1]
        denom = n5 + 0.01 * n3
        n = K.shape[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(h) * n5 / np.sqrt(denom * n)
        return np.where(denom == 0, 0.0, err)

    @classmethod
    def dense(cls, be, f: Callable, K, y_old, y_new, t_old: np.ndarray, h: np.ndarray, to_time: Callable):
        """Return ``interp(theta)`` (theta (M,) in [0, 1]) -> (M, N) for the M rows given.

        Costs 3 extra evaluations of f (stages 14-16 of the extended tableau).
        """
        hb = be.asarray(h)[:, None]
        for s in range(cls.n_stages + 1, cls.n_buffer):
            dy = hb * be.combine(be.coef(cls.A_rows[s]), K)
            K[s] = f(to_time(t_old + cls.C[s] * h), y_old + dy)
        delta = y_new - y_old
        F = [
            delta,
            hb * K[0] - delta,
            2.0 * delta - hb * (K[cls.fsal_index] + K[0]),
        ]
        for row in cls.D:
            F.append(hb * be.combine(be.coef(row), K))

        def interp(theta: np.ndarray):
            x = be.asarray(theta)[:, None]
            y = 0.0
            for i, Fi in enumerate(reversed(F)):
                y = (y + Fi) * (x if i % 2 == 0 else 1.0 - x)
            return y + y_old

        return interp


class Dopri5:
    """Dormand-Prince 5(4) (FSAL) with Shampine's 4th-order dense output."""

    name = "rk45"
    order = 5
    error_exponent = -1.0 / 5.0
    n_stages = tb.DOPRI5_STAGES  # 6 (+1 FSAL)
    n_buffer = tb.DOPRI5_STAGES + 1
    fsal_index = tb.DOPRI5_STAGES
    A_rows = [tb.DOPRI5_A[s, :s].copy() for s in range(tb.DOPRI5_STAGES)]
    C = tb.DOPRI5_C
    B = tb.DOPRI5_B
    E = tb.DOPRI5_E
    P = tb.DOPRI5_P

    @classmethod
    def error_norm(cls, be, K, h: np.ndarray, scale) -> np.ndarray:
        e = be.combine(be.coef(cls.E), K) / scale
        return np.abs(h) * be.numpy(be.rms(e))

    @classmethod
    def dense(cls, be, f: Callable, K, y_old, y_new, t_old, h, to_time):
        hb = be.asarray(h)[:, None]

        def interp(theta: np.ndarray):
            powers = np.cumprod(np.repeat(np.asarray(theta)[None, :], 4, axis=0), axis=0)  # (4, M)
            q = be.asarray(cls.P @ powers)  # (7, M)
            return y_old + hb * (q[:, :, None] * K[: cls.n_buffer]).sum(0)

        return interp


SCHEMES: dict[str, Any] = {"dop853": Dop853, "rk45": Dopri5, "dopri5": Dopri5}
