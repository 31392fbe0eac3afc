"""Observation noise: additive Gaussian measurement noise on observed series.

Glossary: B trajectories, T time steps, N observed dimensions.

The DSR benchmarks corrupt clean simulations with white Gaussian observation noise whose
standard deviation is a fraction of each dimension's standard deviation (e.g. the Lorenz-63
training set of Hess et al., ICML 2023, "5% observation noise"; Gilpin, NeurIPS 2021 uses the
same relative convention). Dynamical (process) noise enters the integrator instead and lives in
``dsrecon.systems``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from dsrecon.data.io import _to_numpy
from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError


def add_observation_noise(x: Any, level: float, *, seed: int | None = None, relative: bool = True):
    """Return ``x + eps`` with eps ~ N(0, sigma_d^2) drawn independently per entry.

    Parameters
    ----------
    x : ndarray / tensor (T, N) or (B, T, N), or Trajectory (B, T, N)
    level : float >= 0
        sigma_d = level * sd_d with ``relative=True`` (sd_d the standard deviation of dimension
        d over all finite samples (rows) of all trajectories and times), else sigma_d = level.
    seed : int, optional
        Seed of a NumPy ``default_rng``; the noise is drawn in float64 on the CPU, so the result
        is identical for numpy and torch input on any device.

    Returns
    -------
    Same kind, shape, dtype (and device) as ``x``; a Trajectory records
    ``meta['observation_noise'] = {'level', 'relative', 'seed'}``. NaN entries (failed
    trajectories) stay NaN. ``level = 0`` returns an unchanged copy.
    """
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise ConfigError(f"noise level must be a number, got {level!r}") from None
    if not np.isfinite(level) or level < 0:
        raise ConfigError(f"noise level must be finite and >= 0, got {level}")
    a = _to_numpy(x, "data")
    if a.ndim not in (2, 3):
        raise DataError(f"data have shape {a.shape}; expected (T, N) or (B, T, N)")
    flat = a.reshape(-1, a.shape[-1]).astype(np.float64)
    finite_rows = flat[np.isfinite(flat).all(axis=1)]  # skips failed (NaN) trajectories
    if not relative:
        sd = np.ones(a.shape[-1])
    else:
        sd = finite_rows.std(axis=0) if len(finite_rows) else np.zeros(a.shape[-1])
    eps = np.random.default_rng(seed).standard_normal(a.shape) * (level * sd)  # (..., N)
    out = (a.astype(np.float64) + eps).astype(a.dtype if a.dtype.kind == "f" else np.float64)
    if isinstance(x, torch.Tensor):  # summed in float64 on the CPU, as for numpy input
        return torch.from_numpy(out).to(x.device)
    if isinstance(x, Trajectory):
        meta = {**x.meta, "observation_noise": {"level": level, "relative": bool(relative), "seed": seed}}
        return replace(x, values=out, meta=meta)
    return out
