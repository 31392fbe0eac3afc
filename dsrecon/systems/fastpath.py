"""Lean NumPy evaluators for the integrators' hot path (verified against the per-state reference).

Glossary: B batch of states, N state dimension.

* :func:`fast_columns`: ``_rhs(x, y, z, t, *params)``-style flows called once on column arrays
  without per-call checks, and on Python floats for a single state (what dysts' numba code
  computes on; ~5x cheaper than 1-element arrays).
* :func:`scalar_matrix`: ``rhs(self, X, t)``-style flows called on a list of Python floats.

Both return functions only after they reproduce the per-state reference at the probe states
(:mod:`dsrecon.systems.vectorfield`); the Python-float versions feed the single-trajectory
DOP853 engine (:mod:`dsrecon.systems.scalar`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dsrecon.systems.batching import agree

__all__ = ["fast_columns", "scalar_matrix"]


def fast_columns(proxy: Any, n: int, has_t: bool, x: np.ndarray, t: np.ndarray, ref: np.ndarray,
                 general: Callable) -> tuple[Callable, Callable | None]:
    """Lean NumPy evaluator for verified column-style fields (the integrators' hot path).

    Batches go through one call on column arrays; a single state (B = 1) is passed as
    Python floats, which is exactly what dysts' numba code computes on and ~5x cheaper than
    1-element arrays. Anything unexpected (an exception, a complex or non-numeric result)
    falls back to the checked general evaluator for that call.

    Returns (f(x (B, N), t) -> (B, N), scalar_rhs(t, y_list) or None); f is ``general`` if the
    lean evaluator does not reproduce the reference ``ref`` at the probe states (x, t).
    """
    fn = proxy._rhs
    params = tuple(v.item() if isinstance(v, np.generic) else v for v in proxy.param_list)
    shape1 = (1, n)

    def scalar(xb: np.ndarray, tb: Any) -> np.ndarray:
        try:
            tb = float(tb[0])
        except (TypeError, IndexError):
            tb = float(tb)
        out = fn(*xb[0].tolist(), tb, *params) if has_t else fn(*xb[0].tolist(), *params)
        res = np.array((out,), dtype=np.float64)
        if res.shape != shape1:
            raise ValueError("unexpected output shape")
        return res

    def f(xb: np.ndarray, tb: Any = 0.0) -> np.ndarray:
        b = xb.shape[0]
        if b == 1 and scalar_ok:
            try:
                return scalar(xb, tb)
            except Exception:
                return general(xb, tb)
        out = fn(*xb.T, tb, *params) if has_t else fn(*xb.T, *params)
        res = np.empty((n, b))
        try:
            for i in range(n):
                res[i] = out[i]
        except Exception:
            return general(xb, tb)
        return res.T

    try:
        scalar_ok = all(agree(scalar(x[i: i + 1], t[i]), ref[i: i + 1], 1e-12) for i in range(len(x)))
    except Exception:
        scalar_ok = False
    scalar_rhs = (lambda tt, y: fn(*y, tt, *params)) if (scalar_ok and has_t) else None
    try:
        if not agree(f(x, t), ref, 1e-12):
            return general, scalar_rhs
    except Exception:
        return general, scalar_rhs
    return f, scalar_rhs


def scalar_matrix(proxy: Any, x: np.ndarray, t: np.ndarray, ref: np.ndarray) -> Callable | None:
    """Python-float evaluation of an ``rhs(self, X, t)``-style flow, if the probe accepts it."""
    rhs = proxy.rhs

    def scalar(tt: float, y: list):
        out = rhs(y, tt)
        if proxy._written:
            proxy.reset()
        return out.tolist() if isinstance(out, np.ndarray) else out

    try:
        for i in range(len(x)):
            got = np.array([[float(v) for v in scalar(float(t[i]), x[i].tolist())]])
            if not agree(got, ref[i: i + 1], 1e-12):
                return None
    except Exception:
        return None
    return scalar
