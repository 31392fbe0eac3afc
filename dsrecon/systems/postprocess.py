"""dysts' default coordinate transforms ("postprocessing"), applied batched.

Glossary: N state dimension.

Several dysts flows have unbounded raw coordinates (angles, a clock variable of a forced
oscillator) that dysts' ``make_trajectory`` maps to bounded ones by default, e.g. theta ->
sin(theta), through the class's ``_postprocessing(*coords)``. :func:`apply_postprocessing`
applies the same code to a whole array at once (one call on column arrays), verified once per
system against the per-state evaluation, with a per-state loop as the fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrecon.systems.rebind import InstanceProxy

__all__ = ["apply_postprocessing"]

_VECTORISED_OK: dict[str, bool] = {}


def _call(proxy: InstanceProxy, cols: list[np.ndarray], n: int) -> np.ndarray:
    out = proxy._postprocessing(*cols)
    m = cols[0].shape[0] if np.ndim(cols[0]) else 1
    res = np.empty((m, n))
    for i, v in enumerate(out):
        res[:, i] = np.asarray(v, dtype=np.float64)
    return res


def apply_postprocessing(system: Any, values: np.ndarray) -> np.ndarray:
    """Transformed copy of ``values`` (..., N); unchanged copy for systems without one."""
    values = np.asarray(values, dtype=np.float64)
    if not system.has_postprocessing:
        return values.copy()
    n = values.shape[-1]
    flat = values.reshape(-1, n)
    proxy = InstanceProxy(system.dysts, np)

    def per_row(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([_call(proxy, [np.array([v]) for v in r], n) for r in rows]) if len(rows) else rows.copy()

    ok = _VECTORISED_OK.get(system.name)
    if ok is None:
        probe = flat[np.isfinite(flat).all(axis=1)][:7]
        try:
            ok = bool(np.allclose(_call(proxy, list(probe.T), n), per_row(probe), rtol=1e-12, atol=0, equal_nan=True))
        except Exception:
            ok = False
        _VECTORISED_OK[system.name] = ok
    out = _call(proxy, list(flat.T), n) if ok else per_row(flat)
    return out.reshape(values.shape)
