"""Initial conditions and sampling intervals for dataset generation.

Glossary: B trajectories, N state dimension.

* ``ic="default"``: dysts' stored initial condition (on or near the attractor) for every row.
* ``ic="random"``: the default plus Gaussian noise of ``ic_scale`` times the attractor's
  per-dimension standard deviation (dysts' stored ``std``; |ic| if unavailable); a transient
  (default: 10 periods) then relaxes the states onto the attractor.
* ``ic="attractor"``: B states sampled at random times from one long trajectory started at the
  default condition (after a transient of 10 periods), i.e. samples from the natural measure.
* an array (N,) or (B, N): explicit initial conditions.

:func:`dysts_time_grid` reproduces exactly the grid of dysts' ``make_trajectory``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrecon.errors import ConfigError

__all__ = ["resolve_dt", "dysts_time_grid", "attractor_scale", "IC_MODES"]

IC_MODES = ("default", "random", "attractor")
DEFAULT_PTS_PER_PERIOD = 100


def _positive(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive finite number, got {v!r}") from None
    if not np.isfinite(f) or f <= 0 or isinstance(v, bool):
        raise ConfigError(f"{name} must be a positive finite number, got {v!r}")
    return f


def resolve_dt(system: Any, dt: Any, pts_per_period: Any) -> tuple[float, float | None]:
    """(dt, pts_per_period actually used). Maps: dt = 1 (one iteration per sample).

    Flows: ``dt`` as given, or period / pts_per_period (default 100 points per period, dysts'
    default resampling).
    """
    if dt is not None and pts_per_period is not None:
        raise ConfigError("give either dt or pts_per_period, not both")
    if system.kind == "map":
        if pts_per_period is not None:
            raise ConfigError(f"{system.name} is a map; pts_per_period applies to flows only")
        if dt is not None and _positive("dt", dt) != 1.0:
            raise ConfigError(f"{system.name} is a map: one sample per iteration, dt must be 1 or None")
        return 1.0, None
    if dt is not None:
        return _positive("dt", dt), None
    ppp = DEFAULT_PTS_PER_PERIOD if pts_per_period is None else _positive("pts_per_period", pts_per_period)
    if not system.period:
        raise ConfigError(f"{system.name} has no stored period; pass dt explicitly")
    return float(system.period) / ppp, ppp


def dysts_time_grid(system: Any, n_steps: int, pts_per_period: float = 100) -> np.ndarray:
    """The sample times of dysts' ``make_trajectory(n_steps, pts_per_period=...)`` (resample=True).

    dysts (0.96, ``DynSys.make_trajectory``) uses ``np.linspace(0, period * n / pts_per_period, n)``:
    the spacing is period * n / (pts_per_period * (n - 1)), slightly *larger* than
    period / pts_per_period. Pass ``dt=grid[1] - grid[0]`` to reproduce it.
    """
    return np.linspace(0.0, float(system.period) * (n_steps / pts_per_period), n_steps)


def attractor_scale(system: Any) -> np.ndarray:
    """Per-dimension attractor standard deviation (N,) from dysts' metadata, else |ic| or 1."""
    n = system.initial_condition.size
    std = np.asarray(system._raw.get("std", []), dtype=np.float64).reshape(-1)
    if std.size == n and np.all(np.isfinite(std)) and np.all(std > 0):
        return std
    fallback = np.abs(system.initial_condition)
    return np.where(fallback > 0, fallback, 1.0)


def explicit_ic(ic: Any, n_traj: int, dim: int) -> np.ndarray:
    """Validate an explicit initial-condition array -> (B, N)."""
    try:
        arr = np.asarray(ic, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"ic must be one of {IC_MODES} or a numeric array, got {ic!r}") from None
    if arr.ndim == 1:
        arr = np.repeat(arr[None], n_traj, axis=0)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ConfigError(f"ic array must have shape ({dim},) or (B, {dim}), got {arr.shape}")
    if arr.shape[0] != n_traj:
        raise ConfigError(f"ic array has {arr.shape[0]} rows but n_trajectories={n_traj}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError("ic contains NaN or inf")
    return arr
