"""The result type of fixed-point / k-cycle searches, de-duplication and stability classification.

Glossary: k cycle order (period), M state dimension (latent M for models, N for systems),
R region-code length of a piecewise-linear model.

A **k-cycle** of a map F is a set of k distinct points with z_{j+1} = F(z_j) and z_k = z_0 (a fixed
point is a 1-cycle). Its stability is decided by the eigenvalues of the k-step Jacobian
``J_{k-1} ... J_1 J_0`` (J_j = dF/dz at z_j): stable when every modulus is < 1, unstable when every
modulus is > 1, otherwise a saddle whose index is the number of moduli > 1. For a **flow**
dx/dt = f(x) only equilibria (order 1) are handled; their eigenvalues are those of df/dx and
the same three kinds are decided by the sign of the real parts.

Every search in :mod:`dsrecon.analysis` returns its cycles through :class:`CycleSet`, which
reduces a candidate to its minimal period, drops duplicates (any point of the candidate within a
tolerance of a point of a known cycle of the same order: for a deterministic map a shared point
means a shared orbit), and rotates each cycle to a canonical starting point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: relative tolerance used to decide that two states are the same point
DEFAULT_TOL = 1e-6


@dataclass(frozen=True, eq=False)
class Cycle:
    """A fixed point (order 1) or k-cycle with its stability.

    Attributes
    ----------
    order : int
        k, the minimal period.
    points : ndarray (k, M) float64
        The cycle's points in orbit order, starting from a canonical point (see
        :func:`canonical_rotation`).
    eigenvalues : ndarray (M,) complex128
        Eigenvalues of the k-step Jacobian product (maps) or of the Jacobian (flows), sorted by
        decreasing modulus (maps) or real part (flows).
    stable : bool
        All moduli < 1 (maps) / all real parts < 0 (flows).
    kind : {"stable", "unstable", "saddle"}
        Saddle: some eigenvalues inside and some outside (or on) the unit circle / imaginary axis.
    saddle_index : int
        Number of unstable directions (moduli > 1, or real parts > 0).
    regions : ndarray (k, R) bool or None
        Region codes (``model.region_code``) of the points, for piecewise-linear models.
    time : {"discrete", "continuous"}
        Whether the cycle belongs to a map or is an equilibrium of a flow.
    residual : float
        max_j ||F(z_j) - z_{j+1}||_inf (maps) or ||f(x)||_inf (flows) at the returned points.
    """

    order: int
    points: np.ndarray
    eigenvalues: np.ndarray
    stable: bool
    kind: str
    saddle_index: int
    regions: np.ndarray | None = None
    time: str = "discrete"
    residual: float = 0.0

    @property
    def point(self) -> np.ndarray:
        """The first (canonical) point, (M,)."""
        return self.points[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (complex eigenvalues as [re, im] pairs)."""
        return {
            "order": int(self.order),
            "kind": self.kind,
            "stable": bool(self.stable),
            "saddle_index": int(self.saddle_index),
            "time": self.time,
            "points": np.asarray(self.points, dtype=float).tolist(),
            "eigenvalues": [[float(e.real), float(e.imag)] for e in np.asarray(self.eigenvalues)],
            "eigenvalue_moduli": np.abs(self.eigenvalues).tolist(),
            "regions": None if self.regions is None else np.asarray(self.regions, dtype=int).tolist(),
            "residual": float(self.residual),
        }


def classify(eigenvalues: np.ndarray, *, continuous: bool = False) -> tuple[bool, str, int]:
    """Stability of a cycle from its eigenvalues (M,) -> (stable, kind, saddle_index).

    Maps: a direction is unstable when |ev| > 1, stable when |ev| < 1. Flows: by the sign of the
    real part. A non-hyperbolic eigenvalue (exactly on the boundary) counts as neither, so such a
    point is a "saddle" with the index of its strictly unstable directions.
    """
    ev = np.asarray(eigenvalues)
    if continuous:
        growth = ev.real
        n_unstable, n_stable = int(np.sum(growth > 0)), int(np.sum(growth < 0))
    else:
        mod = np.abs(ev)
        n_unstable, n_stable = int(np.sum(mod > 1)), int(np.sum(mod < 1))
    if n_stable == ev.size:
        return True, "stable", 0
    if n_unstable == ev.size:
        return False, "unstable", n_unstable
    return False, "saddle", n_unstable


def sort_eigenvalues(ev: np.ndarray, *, continuous: bool = False) -> np.ndarray:
    """Eigenvalues sorted by decreasing modulus (maps) or real part (flows), ties by imag part."""
    ev = np.asarray(ev, dtype=np.complex128)
    key = ev.real if continuous else np.abs(ev)
    order = np.lexsort((-ev.imag, -np.round(key, 12)))
    return ev[order]


def same_point_tol(points: np.ndarray, tol: float) -> float:
    """Absolute tolerance for comparing states of magnitude like ``points``."""
    scale = float(np.max(np.abs(points))) if np.size(points) else 0.0
    return tol * (1.0 + scale)


def minimal_period(points: np.ndarray, tol: float = DEFAULT_TOL) -> int:
    """Smallest p dividing k with points[p] == points[0] (within tol); points (k, M) -> p."""
    k = points.shape[0]
    atol = same_point_tol(points, tol)
    for p in range(1, k):
        if k % p == 0 and np.max(np.abs(points[p] - points[0])) <= atol:
            # a shared point means a shared orbit; check the whole shift for safety
            if np.max(np.abs(np.roll(points, -p, axis=0) - points)) <= atol * 10:
                return p
    return k


def canonical_rotation(points: np.ndarray) -> np.ndarray:
    """Rotate a cycle (k, M) to start at its lexicographically smallest point (rounded to 1e-9)."""
    k = points.shape[0]
    if k == 1:
        return points
    scale = 1.0 + float(np.max(np.abs(points)))
    r = np.round(points / (1e-9 * scale))
    start = int(np.lexsort(r.T[::-1])[0])
    return np.roll(points, -start, axis=0)


class CycleSet:
    """Accumulates distinct cycles per order (de-duplication by shared points).

    Parameters
    ----------
    tol : float
        Relative tolerance: two points are the same when max |difference| <= tol (1 + max |z|).
    """

    def __init__(self, tol: float = DEFAULT_TOL) -> None:
        self.tol = float(tol)
        self._points: dict[int, list[np.ndarray]] = {}
        self._items: dict[int, list[Any]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._items.values())

    def orders(self) -> list[int]:
        return sorted(k for k, v in self._items.items() if v)

    def items(self, order: int) -> list[Any]:
        return list(self._items.get(order, []))

    def all_items(self) -> list[Any]:
        return [it for k in sorted(self._items) for it in self._items[k]]

    def contains(self, points: np.ndarray) -> bool:
        """Whether the orbit through ``points[0]`` (points (k, M), minimal order k) is known."""
        known = self._points.get(points.shape[0])
        if not known:
            return False
        stack = np.concatenate(known, axis=0)  # (n * k, M)
        atol = same_point_tol(points[:1], self.tol)
        return bool(np.any(np.max(np.abs(stack - points[0]), axis=1) <= atol))

    def add(self, points: np.ndarray, item: Any = None) -> bool:
        """Add a cycle of minimal order points.shape[0] unless known; returns True when new."""
        if self.contains(points):
            return False
        k = points.shape[0]
        self._points.setdefault(k, []).append(np.asarray(points, dtype=np.float64))
        self._items.setdefault(k, []).append(item if item is not None else points)
        return True


def sort_cycles(cycles: list[Cycle]) -> list[Cycle]:
    """Sort by (order, kind stable < saddle < unstable, saddle index, canonical point)."""
    rank = {"stable": 0, "saddle": 1, "unstable": 2}

    def key(c: Cycle) -> tuple:
        return (c.order, rank.get(c.kind, 3), c.saddle_index, tuple(np.round(c.points[0], 9)))

    return sorted(cycles, key=key)
