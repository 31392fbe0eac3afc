"""Input validation shared by the metrics (private).

Glossary: T time steps, N observed dimensions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dsrecon.data.io import as_series
from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics.result import DIVERGENCE_FACTOR


def true_series(x: Any, what: str = "x_true", *, min_steps: int = 1) -> np.ndarray:
    """Reference data as a finite float64 (T, N) array; DataError otherwise."""
    a = as_series(x, what, dtype=np.float64)
    if a.shape[0] < min_steps:
        raise DataError(f"{what} has {a.shape[0]} time steps; at least {min_steps} are needed")
    if a.shape[1] == 0:
        raise DataError(f"{what} has no dimensions (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        n_bad = int(np.sum(~np.isfinite(a)))
        raise DataError(
            f"{what} (the reference data) contains {n_bad} non-finite value(s); "
            "clean the test series (remove or interpolate NaN/inf) before computing metrics"
        )
    return a


def generated_series(x: Any, n_dim: int, what: str = "x_gen", *, min_steps: int = 1) -> np.ndarray:
    """Generated / predicted data as float64 (T', N); may hold non-finite values (not checked)."""
    a = as_series(x, what, dtype=np.float64)
    if a.shape[1] != n_dim:
        raise DataError(
            f"{what} has {a.shape[1]} dimensions but the reference data have {n_dim}; "
            "both series must be (T, N) with the same N (did you pass latent states instead of observations?)"
        )
    if a.shape[0] < min_steps:
        raise DataError(f"{what} has {a.shape[0]} time steps; at least {min_steps} are needed")
    return a


def divergence_box(x_true: np.ndarray) -> float:
    """Half-width of the box outside which generated data count as diverged."""
    scale = float(np.max(np.abs(x_true))) if x_true.size else 0.0
    return DIVERGENCE_FACTOR * (scale if scale > 0 else 1.0)


def has_diverged(x_gen: np.ndarray, x_true: np.ndarray) -> bool:
    """True if ``x_gen`` holds a non-finite value or leaves the divergence box (see result.py)."""
    if not x_gen.size:
        return False
    hi, lo = float(np.max(x_gen)), float(np.min(x_gen))  # NaN propagates through np.max/np.min
    if not (math.isfinite(hi) and math.isfinite(lo)):
        return True
    return max(hi, -lo) > divergence_box(x_true)


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= minimum, or a ConfigError."""
    try:
        iv = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if iv != value and not (isinstance(value, float) and value.is_integer()):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if iv < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return iv


def constant_columns(a: np.ndarray) -> np.ndarray:
    """Boolean (N,) mask of columns whose values are all equal."""
    return np.ptp(a, axis=0) == 0
