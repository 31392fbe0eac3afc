"""Delay-coordinate embedding and partial observation.

Glossary: B trajectories, T time steps, N observed dimensions, K delay coordinates.

**Convention.** A delay embedding is given by a list of absolute delays tau_0 .. tau_{K-1}
(integers >= 0, in samples; not cumulative) and optionally the observed dimension d_k each
coordinate takes (a *generalised* embedding with different delays per series, Judd & Mees,
Physica D 1998; Kraemer et al., New J. Phys. 2021). With ``direction="past"`` (default, the
usual Takens convention)

    y_t = ( x_{d_0}(t - tau_0), ..., x_{d_{K-1}}(t - tau_{K-1}) ),   t = tau_max .. T-1,

so the output has T - tau_max rows and row i belongs to time t = i + tau_max. With
``direction="future"`` the coordinates are x_{d_k}(t + tau_k) for t = 0 .. T-1-tau_max (the
convention of DelayEmbeddings.jl's ``embed``/``genembed``, used by PECUZAL and hence by the
ECG data of Hess et al., ICML 2023, lags 0, 20, 68, 55, 10). For uniform lags the two
directions give the same vectors with the coordinate order reversed; for irregular lags they
differ, so use the direction your lags were chosen for. Without ``dims`` every lag is applied to every input dimension and the columns are
ordered lag-major: column k * N + d holds x_d(t -+ tau_k).

References: Takens (1981) Detecting strange attractors in turbulence, LNM 898; Sauer, Yorke &
Casdagli (1991) Embedology, J. Stat. Phys. 65.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from dsrecon.data.io import _to_numpy
from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError


def _int_list(values: Any, name: str) -> list[int]:
    try:
        out = [int(v) for v in values]
        ok = all(float(v) == int(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of integers, got {values!r}") from None
    if not ok:
        raise ConfigError(f"{name} must be a list of integers, got {values!r}")
    return out


def _resolve_lags(lags, dim, tau) -> list[int]:
    if lags is not None:
        if dim is not None or tau is not None:
            raise ConfigError("pass either lags=[...] or dim= and tau=, not both")
        lags = _int_list(np.atleast_1d(lags), "lags")
    else:
        if dim is None or tau is None:
            raise ConfigError("pass lags=[tau_0, ...] or both dim= (embedding dimension) and tau= (delay)")
        if int(dim) < 1 or int(tau) < 0:
            raise ConfigError(f"dim must be >= 1 and tau >= 0, got dim={dim}, tau={tau}")
        lags = [k * int(tau) for k in range(int(dim))]
    if not lags:
        raise ConfigError("lags must not be empty")
    if min(lags) < 0:
        raise ConfigError(
            f"lags must be delays >= 0 (in samples), got {lags}; use direction='future' for "
            "coordinates ahead in time"
        )
    return lags


def delay_embed(
    x: Any,
    lags: Sequence[int] | None = None,
    *,
    dim: int | None = None,
    tau: int | None = None,
    dims: Sequence[int] | None = None,
    direction: str = "past",
):
    """Delay-coordinate embedding with arbitrary delays (see the module docstring).

    Parameters
    ----------
    x : ndarray / tensor (T,), (T, N) or (B, T, N), or Trajectory (B, T, N)
    lags : sequence of int
        Absolute delays tau_k >= 0 in samples, e.g. ``[0, 20, 68, 55, 10]``.
    dim, tau : int
        Uniform variant: lags 0, tau, 2 tau, ..., (dim - 1) tau.
    dims : sequence of int, optional
        Observed dimension used by each delay coordinate (same length as the lags). Default:
        every lag applied to every dimension (lag-major column order).
    direction : {"past", "future"}
        x(t - tau_k) (default) or x(t + tau_k).

    Returns
    -------
    Same kind as ``x``: (T - tau_max, K') for (T,) / (T, N) input, (B, T - tau_max, K') for
    batched input, a Trajectory (meta['delay_embedding'] records lags, dims and direction;
    mean/std follow the columns) for Trajectory input. K' = len(lags) if ``dims`` is given or
    the input is 1-d, else len(lags) * N.
    """
    if direction not in ("past", "future"):
        raise ConfigError(f"direction must be 'past' or 'future', got {direction!r}")
    lag_list = _resolve_lags(lags, dim, tau)
    is_traj, is_torch = isinstance(x, Trajectory), isinstance(x, torch.Tensor)
    a = x if is_torch else _to_numpy(x, "data")
    if is_torch and (a.dtype.is_complex or a.dtype == torch.bool):
        raise DataError(f"data have non-numeric dtype {a.dtype}")
    squeeze_in = a.ndim == 1
    if squeeze_in:
        a = a[:, None]
    if a.ndim not in (2, 3):
        raise DataError(f"data have shape {tuple(a.shape)}; expected (T,), (T, N) or (B, T, N)")
    n_steps, n_dim = a.shape[-2], a.shape[-1]
    if dims is None:
        pairs = [(t, d) for t in lag_list for d in range(n_dim)]
    else:
        dim_list = _int_list(np.atleast_1d(dims), "dims")
        if len(dim_list) != len(lag_list):
            raise ConfigError(f"dims has {len(dim_list)} entries but there are {len(lag_list)} lags")
        bad = [d for d in dim_list if not 0 <= d < n_dim]
        if bad:
            raise ConfigError(f"dims {bad} out of range for data with N={n_dim} dimensions (valid 0..{n_dim - 1})")
        pairs = list(zip(lag_list, dim_list))
    if len(set(pairs)) != len(pairs):
        raise ConfigError(f"repeated (lag, dimension) pairs {pairs} would give identical columns")
    tau_max = max(lag_list)
    n_out = n_steps - tau_max
    if n_out < 1:
        raise DataError(
            f"data have T={n_steps} time steps but the largest delay is {tau_max}; "
            "delay embedding needs T > max(lags)"
        )
    cols = []
    for t, d in pairs:
        start = tau_max - t if direction == "past" else t
        cols.append(a[..., start:start + n_out, d:d + 1])
    out = torch.cat(cols, dim=-1) if is_torch else np.concatenate(cols, axis=-1)
    if not is_traj:
        return out
    col_dims = [d for _, d in pairs]
    mean = None if x.mean is None else np.asarray(x.mean)[col_dims]
    std = None if x.std is None else np.asarray(x.std)[col_dims]
    meta = {**x.meta, "delay_embedding": {"lags": [t for t, _ in pairs], "dims": col_dims,
                                         "direction": direction}}
    return replace(x, values=out, mean=mean, std=std, meta=meta)


def partial_observation(traj: Any, dims: int | Sequence[int]):
    """Keep only the observed coordinates ``dims`` (e.g. the x coordinate of Lorenz-63).

    Parameters
    ----------
    traj : Trajectory (B, T, N), ndarray / tensor (T, N) or (B, T, N)
    dims : int or sequence of int
        Indices into the last axis, 0 <= d < N, no repeats; the order is kept.

    Returns
    -------
    Same kind as the input with last axis len(dims); a Trajectory keeps dt, failed flags and
    the matching mean/std entries and records ``meta['observed_dims']`` (composed with any
    earlier selection, so it always indexes the original coordinates).
    """
    is_traj, is_torch = isinstance(traj, Trajectory), isinstance(traj, torch.Tensor)
    a = traj if is_torch else _to_numpy(traj, "data")
    if a.ndim not in (2, 3):
        raise DataError(f"data have shape {tuple(a.shape)}; expected (T, N) or (B, T, N)")
    n_dim = a.shape[-1]
    sel = _int_list(np.atleast_1d(dims), "dims")
    if not sel:
        raise ConfigError("dims must name at least one observed coordinate")
    bad = [d for d in sel if not 0 <= d < n_dim]
    if bad:
        raise ConfigError(f"dims {bad} out of range for data with N={n_dim} dimensions (valid 0..{n_dim - 1})")
    if len(set(sel)) != len(sel):
        raise ConfigError(f"dims {sel} contains repeats")
    out = a[..., sel]
    if not is_traj:
        return out
    previous = traj.meta.get("observed_dims")
    original = [previous[d] for d in sel] if isinstance(previous, list) else sel
    return replace(
        traj,
        values=out,
        mean=None if traj.mean is None else np.asarray(traj.mean)[sel],
        std=None if traj.std is None else np.asarray(traj.std)[sel],
        meta={**traj.meta, "observed_dims": original},
    )
