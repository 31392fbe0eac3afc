"""The trajectory container shared by every layer.

Glossary: B trajectories (independent initial conditions), T time steps, N observed dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dsrecon.errors import DataError


@dataclass
class Trajectory:
    """A batch of equally sampled trajectories.

    Attributes
    ----------
    values : ndarray, shape (B, T, N)
        The samples. Always 3-d; a single series is B = 1.
    dt : float or None
        Sampling interval in the system's time units (None if unknown, e.g. real data).
    mean, std : ndarray (N,) or None
        If the values were standardised, the statistics that were subtracted / divided, so that
        ``raw = values * std + mean`` (see :meth:`destandardize`).
    meta : dict
        Plain-JSON provenance: system name, parameters, seed, noise levels, file path, ...
    failed : ndarray (B,) of bool or None
        Per-trajectory failure flags (e.g. an integration blow-up); failed rows hold NaN.
    """

    values: np.ndarray
    dt: float | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    failed: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.values)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3:
            raise DataError(
                f"a Trajectory needs values of shape (T, N) or (B, T, N), got shape {v.shape}; "
                "reshape your array accordingly"
            )
        self.values = v
        if self.dt is not None and not (np.isfinite(self.dt) and self.dt > 0):
            raise DataError(f"dt must be a positive finite number, got {self.dt!r}")

    # ------------------------------------------------------------------ sizes
    @property
    def n_trajectories(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[1])

    @property
    def dim(self) -> int:
        return int(self.values.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.n_trajectories

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def series(self, i: int = 0) -> np.ndarray:
        """The i-th trajectory as a (T, N) array."""
        return self.values[i]

    @property
    def times(self) -> np.ndarray:
        """Sample times (T,), in units of dt (or step indices if dt is unknown)."""
        return np.arange(self.n_steps) * (self.dt if self.dt is not None else 1.0)

    # -------------------------------------------------------- standardisation
    @property
    def is_standardized(self) -> bool:
        return self.mean is not None

    def standardize(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> "Trajectory":
        """Z-score every dimension (statistics over all trajectories and times unless given).

        Constant dimensions (sd 0) are left unscaled (sd treated as 1) rather than divided by 0.
        Returns a new Trajectory holding the statistics used.
        """
        if self.is_standardized:
            raise DataError("trajectory is already standardised; call destandardize() first")
        flat = self.values.reshape(-1, self.dim)
        finite = flat[np.all(np.isfinite(flat), axis=1)]
        mean = np.mean(finite, axis=0) if mean is None else np.asarray(mean, dtype=float)
        std = np.std(finite, axis=0) if std is None else np.asarray(std, dtype=float)
        std = np.where(std > 0, std, 1.0)
        return replace(self, values=(self.values - mean) / std, mean=mean, std=std, meta=dict(self.meta))

    def destandardize(self) -> "Trajectory":
        """Undo :meth:`standardize` (values back in original units)."""
        if not self.is_standardized:
            return self
        return replace(self, values=self.values * self.std + self.mean, mean=None, std=None, meta=dict(self.meta))

    def select(self, index) -> "Trajectory":
        """Trajectories ``index`` (int, slice or index array) as a new Trajectory."""
        vals = self.values[index]
        failed = None if self.failed is None else np.atleast_1d(self.failed[index])
        if vals.ndim == 2:
            vals = vals[None]
        return replace(self, values=vals, failed=failed, meta=dict(self.meta))

    def window(self, start: int = 0, stop: int | None = None) -> "Trajectory":
        """Time slice [start, stop) of every trajectory."""
        return replace(self, values=self.values[:, start:stop], meta=dict(self.meta))
