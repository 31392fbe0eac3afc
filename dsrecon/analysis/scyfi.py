"""SCYFI: fixed points and k-cycles of piecewise-linear maps by self-consistent region iteration.

Glossary: C parallel search chains, k cycle order, M latent dim, S pattern bits
(:mod:`dsrecon.analysis.pwl_view`), T trajectory length.

Algorithm (Eisenmann, Monfared, Goering & Durstewitz, "Bifurcations and loss jumps in RNN
training", NeurIPS 2023; extending the fixed-point heuristic of Durstewitz 2017, PLoS Comput Biol
13:e1005542). For order k:

1. Draw an itinerary of k regions (s_1, ..., s_k). Inside it the k-fold map is affine,
   ``F^k(z) = P z + c`` with ``P = W_{s_k} ... W_{s_1}``; solve ``(I - P) z* = c``.
2. Iterate the true map k times from z*. If the regions visited equal the assumed ones the
   candidate is a real k-cycle (self-consistency); otherwise it is *virtual*, and the search is
   re-initialised **with the regions actually visited** -- the step that makes SCYFI converge in
   few iterations where random restarts would need exponentially many.
3. A chain is restarted with a fresh random itinerary after a real cycle, a singular system, or
   ``inner`` iterations without success. The search stops after ``outer`` consecutive fresh
   starts that found nothing new (the counter is reset by every discovery, as in the reference).

Two implementations (``impl``): the compiled search of :mod:`.scyfi_kernel` (default for every
model with a shallow form: the PLRNN family and the AL-RNN), which runs the chains one after the
other with no Python in the loop, and the NumPy reference of :mod:`.scyfi_numpy`, which runs C
chains in lock-step (one batched LAPACK solve per round) and works for any
:class:`.pwl_view.PWLView`. Both draw fresh itineraries from a pool of regions seen along
trajectories of the model and at random points (:class:`.scyfi_numpy.RegionPool`, plus uniformly
random patterns), reduce cycles found at order k whose minimal period is a divisor of k to that
lower order, de-duplicate and canonicalise them (:mod:`dsrecon.analysis.cycles`). It is an
independent implementation written from the paper and the reference's documented behaviour
(DurstewitzLab/SCYFI), not a port. Three extensions of ours, all switched off by
``neighbours=False`` except the first:

* **memo**: the iteration is deterministic, so every itinerary is solved at most once; a chain
  that reaches an already solved itinerary is restarted (it would retrace a known path), and
  the search can never cost more solves than exhaustive enumeration;
* **neighbour seeding**: after each discovery the itineraries one bit flip away are tried first
  (fixed points born together in border-collision bifurcations sit in adjacent regions), and
  lower-order cycles seed their repeated itineraries at order k;
* **partial updates**: when a virtual candidate's full update leads to known ground and 2-4 bits
  were violated, the single-bit updates are queued as well.

SCYFI remains a heuristic: cycles whose basin under the iteration is tiny (typically high-index
saddles far from the attractor) can be missed; :func:`dsrecon.analysis.enumerate_cycles` is the
exact reference and ``fixed_points(method="auto")`` uses it whenever it is affordable.
"""

from __future__ import annotations

import numpy as np

from dsrecon.analysis import scyfi_kernel
from dsrecon.analysis.cycles import (
    DEFAULT_TOL,
    Cycle,
    CycleSet,
    canonical_rotation,
    classify,
    sort_cycles,
    sort_eigenvalues,
)
from dsrecon.analysis.enumeration import BOUNDARY_TOL
from dsrecon.analysis.pwl_view import PWLView
from dsrecon.analysis.scyfi_numpy import (  # noqa: F401 -- re-exported: this module's names before the split
    IMPLS,
    RegionPool,
    _Frontier,
    _scyfi_numpy,
    _spread,
    _use_kernel,
    unique_rows,
)
from dsrecon.errors import ConfigError


def default_iterations(order: int) -> tuple[int, int]:
    """(outer, inner) defaults for order k.

    ``inner`` follows the reference's schedule (20 for k < 3, 60 for k < 6, 300 for k < 8, 1080
    for k < 20, else 1115). ``outer`` counts fresh chain starts (random itineraries and neighbour
    seeds) without a discovery; the reference restarts 10 / 40 / 100 times, each restart running
    up to ``inner`` evaluations. Ours: 800 for fixed points (about 1100 evaluations after the last
    discovery), 1000 for k < 8, 2000 for k < 30, else 4000. On random PLRNNs (the family of
    ``benchmarks/bench_analysis.py --budget-study``) the fixed-point budget finds the complete set
    for 98 % of 100 models with M = 12, 98 % with M = 14 and 30 of 30 with M = 16 (1000: 99 %,
    98 %, 30; 600: 96 %, 94 %, 29).
    """
    k = int(order)
    inner = 20 if k < 3 else 60 if k < 6 else 300 if k < 8 else 1080 if k < 20 else 1115
    outer = 800 if k == 1 else 1000 if k < 8 else 2000 if k < 30 else 4000
    return outer, inner


def scyfi(
    view: PWLView,
    order: int,
    *,
    found: CycleSet | None = None,
    pool: RegionPool | None = None,
    n_chains: int = 64,
    outer: int | None = None,
    inner: int | None = None,
    max_evaluations: int = 10**7,
    neighbours: bool = True,
    seed: int | None = None,
    tol: float = DEFAULT_TOL,
    btol: float = BOUNDARY_TOL,
    impl: str = "auto",
    stats: dict | None = None,
) -> list[Cycle]:
    """Search the cycles of order ``order`` of a PWL map with SCYFI (see module docstring).

    Parameters
    ----------
    view : PWLView
        From :func:`dsrecon.analysis.pwl_view.make_view`.
    order : int
        k >= 1.
    found : CycleSet, optional
        Shared across orders; cycles with a smaller minimal period met on the way go there too,
        and the lower-order cycles already in it seed the search (repeated itineraries).
    pool : RegionPool, optional
        Built from the model by default.
    n_chains : int
        C, chains iterated in lock-step by the NumPy implementation (one batched solve per
        round). The compiled kernel runs chains one after the other and ignores it.
    outer, inner : int, optional
        Stop after ``outer`` consecutive fresh chain starts without a new cycle; restart a chain
        after ``inner`` iterations. Defaults: :func:`default_iterations`.
    max_evaluations : int
        Hard cap on the number of candidate itineraries solved.
    neighbours : bool
        After each discovery, try the itineraries one bit flip away first (see module docstring).
    seed : int, optional
        Seeds the random itineraries.
    impl : {"auto", "numba", "numpy"}
        "numba": the compiled search of :mod:`.scyfi_kernel` (needs a shallow-form view, i.e.
        every model of the PLRNN family and the AL-RNN); "numpy": the batched NumPy reference
        (any view); "auto": numba where it applies.
    stats : dict, optional
        Filled with the search's statistics: impl, n_evaluations, n_fresh_starts; the kernel
        adds max_gap, stop, n_draws, n_direct_solves (:func:`.scyfi_kernel.search`).

    Returns
    -------
    list of Cycle of minimal order ``order``, sorted.
    """
    k = int(order)
    if k < 1:
        raise ConfigError(f"order must be >= 1, got {order}")
    d_outer, d_inner = default_iterations(k)
    outer = d_outer if outer is None else int(outer)
    inner = d_inner if inner is None else int(inner)
    if outer < 1 or inner < 1 or int(n_chains) < 1:
        raise ConfigError(f"outer, inner and n_chains must be >= 1, got {outer}, {inner}, {n_chains}")
    use_kernel = _use_kernel(view, impl)
    rng = np.random.default_rng(seed)
    found = found if found is not None else CycleSet(tol)
    pool = pool if pool is not None else RegionPool.from_model(view, rng, impl="numba" if use_kernel else "numpy")
    stats = stats if stats is not None else {}
    if use_kernel:
        S = view.n_bits
        seeds = []
        if neighbours:  # lower-order cycles seed their repeated itineraries and neighbours
            for p in range(1, k):
                if k % p == 0:
                    for cyc in found.items(p):
                        rep = np.tile(view.bits(cyc.points), (k // p, 1)).reshape(1, k * S)
                        flips = np.repeat(rep, k * S + 1, axis=0)
                        flips[np.arange(1, k * S + 1), np.arange(k * S)] ^= True
                        seeds.append(flips)
        queue0 = np.concatenate(seeds, axis=0) if seeds else np.zeros((0, k * S), dtype=bool)
        known = [c.points for p in range(1, k + 1) if k % p == 0 for c in found.items(p)]
        new, st = scyfi_kernel.search(view, k, pool, known, queue0, outer=outer, inner=inner,
                                      max_evaluations=max_evaluations, neighbours=neighbours,
                                      seed=int(rng.integers(0, 2**63)), tol=tol, btol=btol)
        add_cycles(view, new, found, tol=tol)
        stats.update(st, impl="numba")
        return sort_cycles(found.items(k))
    return _scyfi_numpy(view, k, found, pool, rng, int(n_chains), outer, inner, max_evaluations, neighbours,
                        tol, btol, stats)


def add_cycles(view: PWLView, new: list[tuple[np.ndarray, np.ndarray]], found: CycleSet, *, tol: float) -> int:
    """Add verified cycles [(points (k, M), patterns (k, S))] of minimal period k (as the kernel
    returns them) to ``found``; returns how many were new.

    The batched form of :func:`dsrecon.analysis.enumeration.add_cycle` (same canonical rotation,
    eigenvalues of the k-step Jacobian product, stability, residual and region codes), with one
    ``pieces`` / ``step`` / ``region_code`` / ``eigvals`` call for all cycles instead of one per
    cycle. Cycles already in ``found`` are skipped.
    """
    cyc = []
    for pts, bits in new:
        if pts.shape[0] == 1:  # a fixed point: nothing to rotate
            cyc.append((pts, bits))
            continue
        rot = canonical_rotation(pts)
        start = int(np.argmin(np.abs(pts - rot[0]).max(axis=1)))
        cyc.append((rot, np.roll(bits, -start, axis=0)))
    if not cyc:
        return 0
    allpts = np.concatenate([r for r, _ in cyc], axis=0)
    W, _ = view.pieces(np.concatenate([b for _, b in cyc], axis=0))  # (sum k, M, M)
    nxt, codes = view.step(allpts), view.region_code(allpts)
    J, i = [], 0
    for rot, _ in cyc:
        P = W[i]
        for j in range(1, rot.shape[0]):
            P = W[i + j] @ P
        J.append(P)
        i += rot.shape[0]
    n_new, i = 0, 0
    for (rot, _), ev in zip(cyc, np.linalg.eigvals(np.stack(J))):
        k = rot.shape[0]
        ev = sort_eigenvalues(ev)
        stable, kind, idx = classify(ev)
        resid = float(np.abs(nxt[i:i + k] - (rot if k == 1 else np.roll(rot, -1, axis=0))).max())
        n_new += found.add(rot, Cycle(order=k, points=rot, eigenvalues=ev, stable=stable, kind=kind,
                                      saddle_index=idx, regions=codes[i:i + k], time="discrete", residual=resid))
        i += k
    return n_new
