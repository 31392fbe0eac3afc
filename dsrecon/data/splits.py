"""Train / validation / test splits and standardisation with training statistics.

Glossary: B trajectories, T time steps, N observed dimensions.

Two ways to hold out data from a dynamical system:

* :func:`split_time` cuts every trajectory into contiguous, consecutive time segments (the
  protocol of the DSR papers on a single long recording, e.g. Hess et al., ICML 2023);
* :func:`split_trajectories` assigns whole trajectories (different initial conditions) to the
  splits, the stronger test of generalisation for simulated benchmarks (Gilpin, NeurIPS 2021).

:func:`standardize_splits` z-scores every split with the statistics of the *training* split
only, so no information about the held-out data leaks into training.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dsrecon.data.io import _to_numpy
from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError


def _as_trajectory(x: Any, what: str) -> Trajectory:
    if isinstance(x, Trajectory):
        return x
    return Trajectory(_to_numpy(x, what))


def split_time(
    traj: Trajectory | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    min_steps: int = 2,
) -> tuple:
    """Cut the time axis into contiguous consecutive segments.

    Parameters
    ----------
    traj : Trajectory (B, T, N) or ndarray (T, N) / (B, T, N)
        The data; every trajectory is cut at the same times.
    fractions : sequence of float
        Positive fractions of T, one per segment, summing to at most 1. Segment k covers
        steps [round(c_{k-1} T), round(c_k T)) with c the cumulative sums; if the fractions sum
        to 1 the segments tile the whole series, otherwise the tail is unused.
    min_steps : int
        Every segment must hold at least this many steps (else DataError).

    Returns
    -------
    tuple of len(fractions) pieces of the same type as ``traj`` (Trajectories keep dt, meta,
    statistics and failed flags and record ``meta['split']`` = (start, stop)).
    """
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or f.size == 0 or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ConfigError(f"fractions must be a non-empty list of positive numbers, got {fractions!r}")
    if f.sum() > 1 + 1e-9:
        raise ConfigError(f"fractions must sum to at most 1, got {list(fractions)} (sum {f.sum():.6g})")
    is_traj = isinstance(traj, Trajectory)
    arr = None if is_traj else _to_numpy(traj, "data")
    if not is_traj and arr.ndim not in (2, 3):
        raise DataError(f"data must be (T, N) or (B, T, N), got shape {arr.shape}")
    n_steps = traj.n_steps if is_traj else arr.shape[-2]
    bounds = np.concatenate([[0], np.rint(np.cumsum(f) * n_steps).astype(int)])
    bounds[-1] = min(bounds[-1], n_steps)
    lengths = np.diff(bounds)
    if np.any(lengths < min_steps):
        raise DataError(
            f"split_time: the segments would have {lengths.tolist()} steps out of T={n_steps}, but "
            f"each needs at least {min_steps}; use a longer series or larger fractions"
        )
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if is_traj:
            piece = traj.window(int(start), int(stop))
            piece.meta = {**traj.meta, "split": [int(start), int(stop)]}
        else:
            piece = arr[..., start:stop, :]
        parts.append(piece)
    return tuple(parts)


def split_trajectories(
    traj: Trajectory | np.ndarray,
    n_train: int,
    n_val: int = 0,
    n_test: int = 0,
    *,
    drop_failed: bool = True,
    shuffle: bool = False,
    seed: int | None = None,
) -> tuple[Trajectory, Trajectory, Trajectory]:
    """Assign whole trajectories (different initial conditions) to train / val / test.

    Parameters
    ----------
    traj : Trajectory (B, T, N) or ndarray (B, T, N)
    n_train, n_val, n_test : int
        Number of trajectories per split (n_train >= 1; the others may be 0, giving a
        Trajectory with B = 0). Their sum must not exceed the usable trajectories.
    drop_failed : bool
        Skip trajectories flagged in ``traj.failed`` (integration failures) before assigning.
    shuffle, seed : bool, int
        Assign a random permutation (deterministic given ``seed``) instead of index order.

    Returns
    -------
    (train, val, test) Trajectories; ``meta['split_indices']`` lists the original indices.
    """
    t = _as_trajectory(traj, "data")
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    for k, v in counts.items():
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"{k} must be a non-negative integer, got {v!r}")
    if n_train < 1:
        raise ConfigError("n_train must be at least 1")
    idx = np.arange(t.n_trajectories)
    if drop_failed and t.failed is not None:
        idx = idx[~np.asarray(t.failed, dtype=bool)]
    need = n_train + n_val + n_test
    if need > idx.size:
        dropped = t.n_trajectories - idx.size
        extra = f" ({dropped} flagged failed were dropped)" if dropped else ""
        raise DataError(
            f"split_trajectories needs {need} trajectories ({n_train}+{n_val}+{n_test}) but only "
            f"{idx.size} are usable{extra}; simulate more initial conditions or ask for fewer"
        )
    if shuffle:
        idx = np.random.default_rng(seed).permutation(idx)
    out = []
    for start, stop in ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, need)):
        sel = idx[start:stop]
        piece = t.select(sel)
        piece.meta = {**t.meta, "split_indices": [int(i) for i in sel]}
        out.append(piece)
    return tuple(out)  # type: ignore[return-value]


def standardize_splits(train: Trajectory | np.ndarray, *others: Trajectory | np.ndarray) -> tuple:
    """Z-score ``train`` and every other split with the training mean and sd.

    Statistics are per dimension over all trajectories and time steps of ``train``
    (:meth:`Trajectory.standardize`); constant dimensions are left unscaled. Inputs that are
    arrays are wrapped in Trajectories. Returns ``(train_std, *others_std)``; each carries
    ``mean``/``std`` so :meth:`Trajectory.destandardize` maps generated data back to raw units.
    """
    tr = _as_trajectory(train, "train")
    rest = [_as_trajectory(o, f"split {i + 1}") for i, o in enumerate(others)]
    for i, o in enumerate(rest):
        if o.dim != tr.dim:
            raise DataError(f"split {i + 1} has N={o.dim} dimensions but train has N={tr.dim}")
        if o.is_standardized:
            raise DataError(f"split {i + 1} is already standardised; pass raw (unstandardised) splits")
    tr_std = tr.standardize()
    return (tr_std, *(o.standardize(tr_std.mean, tr_std.std) for o in rest))
