"""The result container of the batched integrators and the per-trajectory bookkeeping.

Glossary: B trajectories, T samples, N state dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["IntegrationResult", "Bookkeeping"]


@dataclass
class IntegrationResult:
    """Output of :func:`integrate`.

    values : ndarray / tensor (B, T, N) -- same type (and device) as x0; NaN after a failure
    t : ndarray (T,) -- sample times t0 + k dt
    failed : ndarray (B,) of bool
    reasons : list of (str or None), one per trajectory
    n_evals : int -- calls of f (each on the batch of still-active rows)
    n_accepted, n_rejected : ndarray (B,) of int -- steps per trajectory
    """

    values: Any
    t: np.ndarray
    failed: np.ndarray
    reasons: list
    n_evals: int
    n_accepted: np.ndarray
    n_rejected: np.ndarray
    method: str
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not bool(self.failed.any())


class Bookkeeping:
    """Output buffer, failure flags and reasons shared by the engines."""

    def __init__(self, be, x0, n_samples: int, method: str) -> None:
        b, n = x0.shape
        self.be = be
        self.values = be.full((b, n_samples, n), float("nan"))
        self.values[:, 0] = x0
        self.failed = np.zeros(b, dtype=bool)
        self.reasons: list = [None] * b
        self.n_acc = np.zeros(b, dtype=np.int64)
        self.n_rej = np.zeros(b, dtype=np.int64)
        self.n_evals = 0
        self.method = method

    def fail(self, rows: np.ndarray, reason: str | Callable[[int], str]) -> None:
        for r in np.atleast_1d(rows):
            if not self.failed[r]:
                self.failed[r] = True
                self.reasons[r] = reason(int(r)) if callable(reason) else reason

    def write(self, rows: np.ndarray, cols: np.ndarray, y) -> None:
        be = self.be
        if be.is_torch:
            self.values[be.from_numpy(rows), be.from_numpy(cols)] = y
        else:
            self.values[rows, cols] = y

    def result(self, grid: np.ndarray, **info) -> IntegrationResult:
        return IntegrationResult(self.values, grid, self.failed, self.reasons, self.n_evals,
                                 self.n_acc, self.n_rej, self.method, info)


