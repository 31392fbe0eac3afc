"""SCYFI's region pool and its NumPy reference implementation (C chains in lock-step).

Glossary: C parallel search chains, k cycle order, M latent dim, n trajectories, P pool patterns,
S pattern bits (:mod:`dsrecon.analysis.pwl_view`), T trajectory length.

:func:`dsrecon.analysis.scyfi.scyfi` documents the algorithm (Eisenmann, Monfared, Goering &
Durstewitz, NeurIPS 2023; Durstewitz 2017, PLoS Comput Biol 13:e1005542) and dispatches to one of
two implementations. Here:

* :class:`RegionPool` -- where both implementations draw fresh itineraries from: patterns along
  trajectories of the model and at random points, built in NumPy or by the compiled
  :func:`.scyfi_kernel.build_pool` (the same pool);
* :func:`_scyfi_numpy` with :class:`_Frontier` (memo of evaluated itineraries, queue of neighbour
  seeds) -- the batched NumPy search: C chains per round, one batched LAPACK solve per round
  (:func:`.enumeration.check_candidates`), for any :class:`.pwl_view.PWLView`. It is the
  reference the compiled search of :mod:`.scyfi_kernel` is tested against;
* :func:`_use_kernel` -- which implementation an ``impl`` argument selects for a view.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from dsrecon.analysis import scyfi_kernel
from dsrecon.analysis.cycles import Cycle, CycleSet, sort_cycles
from dsrecon.analysis.enumeration import check_candidates
from dsrecon.analysis.pwl_view import PWLView
from dsrecon.errors import ConfigError

#: implementations of the search: compiled kernel, NumPy reference, or the kernel where it applies
IMPLS = ("auto", "numba", "numpy")


def unique_rows(bits: np.ndarray) -> np.ndarray:
    """Distinct rows of a bool array (n, S) -> (u, S), via packed bytes (fast for any S)."""
    if bits.shape[0] == 0:
        return bits
    packed = np.ascontiguousarray(np.packbits(bits, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return bits[np.sort(first)]


class RegionPool:
    """Where SCYFI draws fresh itineraries from.

    Attributes
    ----------
    traj_bits : (n, T, S) bool
        Patterns along model trajectories (itineraries are windows of k consecutive patterns).
    valid_len : (n,) int
        Number of finite leading states of each trajectory.
    pool : (P, S) bool
        Distinct patterns seen along the trajectories and at random points.
    """

    def __init__(self, traj_bits: np.ndarray, valid_len: np.ndarray, pool: np.ndarray) -> None:
        self.traj_bits, self.valid_len, self.pool = traj_bits, valid_len, pool

    @classmethod
    def from_model(
        cls,
        view: PWLView,
        rng: np.random.Generator,
        *,
        n_trajectories: int = 16,
        n_steps: int = 200,
        n_random: int = 512,
        z0: np.ndarray | None = None,
        impl: str = "auto",
    ) -> "RegionPool":
        """Simulate trajectories from ``z0`` (B, M) if given plus ``n_trajectories`` N(0, 1) states,
        and sample ``n_random`` random points N(mean, s^2), s = spread of the trajectories (>= 1).

        ``impl``: "numba" (compiled simulation and patterns, :mod:`.scyfi_kernel`), "numpy", or
        "auto" (numba when the view has a shallow form). Both give the same pool (up to rounding
        in the spread, which moves the random points by ~1e-16)."""
        use_kernel = _use_kernel(view, impl)
        M = view.M
        z = rng.standard_normal((n_trajectories, M))
        if z0 is not None:
            z = np.concatenate([np.asarray(z0, dtype=np.float64).reshape(-1, M), z], axis=0)
        n = z.shape[0]
        if use_kernel:  # the same pool, compiled (random points drawn after the trajectories, as below)
            bits_traj, valid_len, pool = scyfi_kernel.build_pool(view, z, n_steps, rng.standard_normal((n_random, M)))
            return cls(bits_traj, valid_len, pool)
        traj = np.empty((n, n_steps, M))
        alive = np.ones(n, dtype=bool)
        valid_len = np.full(n, n_steps)
        with np.errstate(all="ignore"):
            for t in range(n_steps):
                good = np.isfinite(z).all(axis=1) & (np.abs(z).max(axis=1) < 1e8)
                newly_dead = alive & ~good
                valid_len[newly_dead] = t
                alive &= good
                z = np.where(alive[:, None], z, 0.0)
                traj[:, t] = z
                z = view.step(z)
        flat = np.concatenate([traj[i, : valid_len[i]] for i in range(n)], axis=0)
        center, spread = _spread(flat, M)
        rand_pts = center + spread * rng.standard_normal((n_random, M))
        bits_traj = view.bits(traj.reshape(n * n_steps, M)).reshape(n, n_steps, -1)
        seen = view.bits(np.concatenate([flat, rand_pts], axis=0))
        return cls(bits_traj, valid_len, unique_rows(seen))

    def draw(self, n: int, k: int, S: int, rng: np.random.Generator) -> np.ndarray:
        """n itineraries (n, k, S): 1/3 trajectory windows, 1/3 from the pool, 1/3 uniform."""
        out = rng.random((n, k, S)) < 0.5  # uniformly random patterns
        src = rng.integers(0, 3, size=n)
        use_pool = np.flatnonzero(src == 1)
        if use_pool.size and self.pool.shape[0]:
            out[use_pool] = self.pool[rng.integers(0, self.pool.shape[0], size=(use_pool.size, k))]
        ok_traj = np.flatnonzero(self.valid_len >= k)
        use_traj = np.flatnonzero(src == 2)
        if use_traj.size and ok_traj.size:
            ti = ok_traj[rng.integers(0, ok_traj.size, size=use_traj.size)]
            starts = (rng.random(use_traj.size) * (self.valid_len[ti] - k + 1)).astype(np.int64)
            win = starts[:, None] + np.arange(k)[None]
            out[use_traj] = self.traj_bits[ti[:, None], win]
        return out


def _spread(flat: np.ndarray, M: int) -> tuple[np.ndarray, float]:
    """Centre (M,) and spread (>= 1) of the valid trajectory states flat (n, M)."""
    spread = float(np.std(flat)) if flat.size else 1.0
    spread = max(1.0, spread if np.isfinite(spread) else 1.0)
    return (flat.mean(axis=0) if flat.size else np.zeros(M)), spread


def _use_kernel(view: PWLView, impl: str) -> bool:
    """Resolve ``impl`` ("auto" | "numba" | "numpy") for a view."""
    if impl not in IMPLS:
        raise ConfigError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "numba" and not scyfi_kernel.supports(view):
        raise ConfigError(
            f"impl='numba' needs numba and a view with a shallow form (got {type(view).__name__}); "
            "use impl='numpy' (or 'auto') for models that only implement region_code / affine_piece"
        )
    return impl == "numba" or (impl == "auto" and scyfi_kernel.supports(view))


class _Frontier:
    """Itineraries to try next: a memo of evaluated ones and a queue of neighbour seeds.

    Keys are the packed bytes of an itinerary (k, S). The SCYFI iteration is deterministic, so an
    itinerary evaluated once never needs evaluating again: a chain that reaches a known itinerary
    has joined a known path and is restarted.
    """

    def __init__(self, k: int, S: int, pool: RegionPool, rng: np.random.Generator) -> None:
        self.k, self.S, self.pool, self.rng = k, S, pool, rng
        self.memo: set[bytes] = set()
        self.queue: deque[np.ndarray] = deque()
        self.n_total = 2 ** (k * S) if k * S < 62 else None

    def keys(self, seqs: np.ndarray) -> list[bytes]:
        """Keys of itineraries (n, k, S) -> n bytes objects."""
        packed = np.packbits(seqs.reshape(seqs.shape[0], -1), axis=1)
        return [row.tobytes() for row in packed]

    def known(self, seqs: np.ndarray) -> np.ndarray:
        """(n, k, S) -> (n,) bool: already evaluated."""
        return np.fromiter((kk in self.memo for kk in self.keys(seqs)), dtype=bool, count=seqs.shape[0])

    def exhausted(self) -> bool:
        return self.n_total is not None and len(self.memo) >= self.n_total

    def mark(self, seqs: np.ndarray) -> None:
        self.memo.update(self.keys(seqs))

    def push_neighbours(self, seq: np.ndarray) -> None:
        """Queue the k*S itineraries one bit flip away from ``seq`` (k, S)."""
        n = self.k * self.S
        flips = np.repeat(seq.reshape(1, n), n, axis=0)
        flips[np.arange(n), np.arange(n)] ^= True
        flips = flips.reshape(n, self.k, self.S)
        self.queue.extend(flips[~self.known(flips)])

    def _select(self, cand: np.ndarray, n: int, taken: set[bytes]) -> list[np.ndarray]:
        out = []
        for seq, kk in zip(cand, self.keys(cand)):
            if len(out) >= n:
                break
            if kk not in self.memo and kk not in taken:
                taken.add(kk)
                out.append(seq)
        return out

    def draw(self, n: int) -> tuple[np.ndarray, int]:
        """Up to n unevaluated, distinct itineraries (m, k, S) and the number of draws consumed.

        Neighbour seeds first, then random itineraries from the pool (see :meth:`RegionPool.draw`).
        """
        out: list[np.ndarray] = []
        taken: set[bytes] = set()
        draws = 0
        while self.queue and len(out) < n:
            m = min(len(self.queue), 2 * (n - len(out)))
            cand = np.stack([self.queue.popleft() for _ in range(m)])
            draws += m
            out += self._select(cand, n - len(out), taken)
        tries = 0
        while len(out) < n and tries < 8 and not self.exhausted():
            tries += 1
            m = n - len(out)
            draws += m
            out += self._select(self.pool.draw(m, self.k, self.S, self.rng), m, taken)
        if not out:
            return np.zeros((0, self.k, self.S), dtype=bool), draws
        return np.stack(out), draws


def _scyfi_numpy(view: PWLView, k: int, found: CycleSet, pool: RegionPool, rng: np.random.Generator, C: int,
                 outer: int, inner: int, max_evaluations: int, neighbours: bool, tol: float, btol: float,
                 stats: dict) -> list[Cycle]:
    """The batched NumPy implementation (the reference of the compiled kernel)."""
    S = view.n_bits
    front = _Frontier(k, S, pool, rng)
    if neighbours:  # lower-order cycles seed their repeated itineraries and neighbours
        for p in range(1, k):
            if k % p == 0:
                for cyc in found.items(p):
                    rep = np.tile(view.bits(cyc.points), (k // p, 1))
                    if not front.known(rep[None])[0]:
                        front.queue.append(rep)
                    front.push_neighbours(rep)
    seqs, _ = front.draw(C)
    since_new = n_fresh = seqs.shape[0]  # fresh (never evaluated) starts (since the last discovery)
    age = np.zeros(seqs.shape[0], dtype=np.int64)
    n_eval = 0
    while seqs.shape[0] and n_eval < max_evaluations:
        front.mark(seqs)
        visited, status, n_new = check_candidates(view, seqs, found, btol=btol, tol=tol)
        n_eval += seqs.shape[0]
        if n_new:
            since_new = 0
            if neighbours:
                for i in np.flatnonzero(status == 3):
                    front.push_neighbours(visited[i])
        known_next = front.known(visited)
        restart = (status != 1) | (age >= inner) | known_next
        if neighbours:  # a virtual candidate whose full update leads to known ground: try partial updates
            for i in np.flatnonzero((status == 1) & known_next):
                diff = np.flatnonzero((visited[i] != seqs[i]).ravel())
                if 1 < diff.size <= 4:
                    for j in diff:
                        alt = seqs[i].copy().ravel()
                        alt[j] = ~alt[j]
                        front.queue.append(alt.reshape(k, S))
        keep = np.flatnonzero(~restart)
        seqs, age = visited[keep], age[keep] + 1
        # drop duplicates among the continuing chains (two chains that merged)
        if seqs.shape[0] > 1:
            _, first = np.unique(np.packbits(seqs.reshape(seqs.shape[0], -1), axis=1), axis=0, return_index=True)
            first = np.sort(first)
            seqs, age = seqs[first], age[first]
        if since_new >= outer or front.exhausted():
            break
        fresh, _ = front.draw(C - seqs.shape[0])
        since_new += fresh.shape[0]
        n_fresh += fresh.shape[0]
        if fresh.shape[0]:
            seqs = np.concatenate([seqs, fresh], axis=0)
            age = np.concatenate([age, np.zeros(fresh.shape[0], dtype=np.int64)])
    stats.update(impl="numpy", n_evaluations=n_eval, n_fresh_starts=n_fresh)
    return sort_cycles(found.items(k))
