"""Exhaustive enumeration of the fixed points and k-cycles of a piecewise-linear map.

Glossary: B batch of candidate region sequences, k cycle order, M latent dim, S pattern bits
(:mod:`dsrecon.analysis.pwl_view`).

The brute-force reference for :mod:`dsrecon.analysis.scyfi`: inside a fixed sequence of regions
(s_1, ..., s_k) the k-fold map is affine, ``F^k(z) = P z + c``, so the only candidate k-cycle with
that itinerary solves ``(I - P) z = c``. A candidate is a real cycle when the k points it visits
lie in the assumed regions (self-consistency, Durstewitz 2017, PLoS Comput Biol 13:e1005542).
Enumerating all (2^S)^k itineraries therefore finds **every** hyperbolic k-cycle (isolated, with
I - P invertible). The candidates are solved in batched chunks (one LAPACK call per chunk), which
makes this reference as fast as an exhaustive search can honestly be.
"""

from __future__ import annotations

import numpy as np

from dsrecon.analysis.cycles import (
    DEFAULT_TOL,
    Cycle,
    CycleSet,
    canonical_rotation,
    classify,
    minimal_period,
    sort_cycles,
    sort_eigenvalues,
)
from dsrecon.analysis.pwl_view import PWLView, simulate_bits, solve_cycle_points
from dsrecon.errors import ConfigError

#: default boundary tolerance: a bit whose pre-activation is within this (relative) margin of 0
#: is consistent with either value (points on region boundaries)
BOUNDARY_TOL = 1e-9


def all_patterns(n_bits: int) -> np.ndarray:
    """All 2^S patterns in binary order (pattern i has bit r = (i >> r) & 1): (2^S, S) bool."""
    i = np.arange(2**n_bits, dtype=np.int64)
    return ((i[:, None] >> np.arange(n_bits)) & 1).astype(bool)


def consistent_mask(
    assumed: np.ndarray, visited: np.ndarray, margins: np.ndarray, points: np.ndarray, btol: float
) -> np.ndarray:
    """Whether each itinerary is self-consistent: (B, k, S) x3, points (B, k+1, M) -> (B,) bool.

    A bit agrees when the visited pattern equals the assumed one, or when the state lies on that
    bit's boundary (|pre-activation| <= btol (1 + max|z|)).
    """
    scale = 1.0 + np.abs(points).max(axis=(1, 2))  # (B,)
    agree = (assumed == visited) | (np.abs(margins) <= btol * scale[:, None, None])
    return agree.all(axis=(1, 2))


def finish_cycle(view: PWLView, points: np.ndarray, bits: np.ndarray) -> Cycle:
    """Build a :class:`Cycle` from a verified cycle (k, M) with patterns (k, S)."""
    k = points.shape[0]
    pts = canonical_rotation(points)
    # the rotation start index: find where pts[0] sits in points
    start = int(np.argmin(np.abs(points - pts[0]).max(axis=1)))
    rot_bits = np.roll(bits, -start, axis=0)
    W, _ = view.pieces(rot_bits)  # (k, M, M)
    J = np.eye(view.M)
    for j in range(k):
        J = W[j] @ J
    ev = sort_eigenvalues(np.linalg.eigvals(J))
    stable, kind, idx = classify(ev)
    nxt = view.step(pts)
    resid = float(np.abs(nxt - np.roll(pts, -1, axis=0)).max())
    return Cycle(
        order=k,
        points=pts,
        eigenvalues=ev,
        stable=stable,
        kind=kind,
        saddle_index=idx,
        regions=view.region_code(pts),
        time="discrete",
        residual=resid,
    )


def check_candidates(
    view: PWLView,
    seqs: np.ndarray,
    found: CycleSet,
    *,
    btol: float = BOUNDARY_TOL,
    tol: float = DEFAULT_TOL,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Solve and verify a batch of itineraries; add the real cycles to ``found``.

    Parameters
    ----------
    seqs : (B, k, S) bool
        Assumed pattern sequences.

    Returns
    -------
    visited : (B, k, S) bool
        Patterns actually visited from each candidate (the assumed ones where unsolvable).
    status : (B,) int8
        0 not solvable, 1 virtual (inconsistent), 2 consistent but known / lower order, 3 new.
    n_new : int
    """
    B, k, S = seqs.shape
    W, h = view.pieces(seqs.reshape(B * k, S))
    W = W.reshape(B, k, view.M, view.M)
    h = h.reshape(B, k, view.M)
    z0, ok = solve_cycle_points(W, h)
    status = np.zeros(B, dtype=np.int8)
    visited = seqs.copy()
    if not ok.any():
        return visited, status, 0
    idx = np.flatnonzero(ok)
    pts, vis, marg = simulate_bits(view, z0[idx], k)
    visited[idx] = vis
    status[idx] = 1
    cons = consistent_mask(seqs[idx], vis, marg, pts, btol)
    # closure: the k-th point must return to the start (guards against ill-conditioned solves)
    atol = tol * (1.0 + np.abs(pts).max(axis=(1, 2)))
    cons &= np.abs(pts[:, k] - pts[:, 0]).max(axis=1) <= atol
    n_new = 0
    for i in np.flatnonzero(cons):
        new = add_cycle(view, pts[i, :k], vis[i], found, tol=tol)
        status[idx[i]] = 3 if new else 2
        n_new += new
    return visited, status, n_new


def add_cycle(view: PWLView, points: np.ndarray, bits: np.ndarray, found: CycleSet, *, tol: float) -> int:
    """Reduce a verified cycle to its minimal period and add it; returns 1 when new else 0."""
    p = minimal_period(points, tol)
    pts, b = points[:p], bits[:p]
    if found.contains(pts):
        return 0
    cyc = finish_cycle(view, pts, b)
    found.add(cyc.points, cyc)
    return 1


def enumerate_cycles(
    view: PWLView,
    order: int = 1,
    *,
    max_candidates: int = 2**24,
    chunk: int = 8192,
    tol: float = DEFAULT_TOL,
    btol: float = BOUNDARY_TOL,
    found: CycleSet | None = None,
) -> list[Cycle]:
    """Every k-cycle of minimal order ``order`` by brute force over all (2^S)^k itineraries.

    Parameters
    ----------
    view : PWLView
        From :func:`dsrecon.analysis.pwl_view.make_view`.
    order : int
        k >= 1.
    max_candidates : int
        Refuse (ConfigError) when (2^S)^k exceeds this.
    chunk : int
        Itineraries solved per batched call.
    found : CycleSet, optional
        Collects the cycles (also those of lower minimal order met on the way).

    Returns
    -------
    list of Cycle of order ``order``, sorted.
    """
    k = int(order)
    if k < 1:
        raise ConfigError(f"order must be >= 1, got {order}")
    S = view.n_bits
    n_total = 2 ** (S * k)
    if n_total > max_candidates:
        raise ConfigError(
            f"exhaustive enumeration of order {k} needs (2^{S})^{k} = 2^{S * k} itineraries "
            f"(limit {max_candidates}); use method='scyfi' or a smaller order"
        )
    found = found if found is not None else CycleSet(tol)
    pats = all_patterns(S)  # (2^S, S)
    n_pat = pats.shape[0]
    for start in range(0, n_total, chunk):
        ids = np.arange(start, min(start + chunk, n_total), dtype=np.int64)
        # itinerary id -> k pattern indices (base 2^S digits)
        digits = np.stack([(ids // n_pat**j) % n_pat for j in range(k)], axis=1)  # (b, k)
        check_candidates(view, pats[digits], found, btol=btol, tol=tol)
    return sort_cycles(found.items(k))
