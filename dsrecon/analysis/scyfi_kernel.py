"""Compiled SCYFI search loop (numba) for piecewise-linear models in shallow canonical form.

Glossary: k cycle order, M latent dim, L hidden units, S pattern bits, n trajectories, T steps.

:func:`dsrecon.analysis.scyfi.scyfi` documents the algorithm (Eisenmann et al., NeurIPS 2023).
Its NumPy implementation (:mod:`.scyfi_numpy`) batches C chains per round and pays Python/NumPy
overhead on every round; this kernel runs the *whole* search in compiled code -- drawing
itineraries from the region pool, building each region's affine map
``W_s = diag(a) + W1 diag(d_s) W2``, composing the k-fold map, the LU solve of
``(I - P) z = c``, the k-step simulation with its self-consistency and closure checks,
de-duplication against the cycles already known (:mod:`.scyfi_solve`), the memo of evaluated
itineraries and the neighbour queue (:mod:`.scyfi_jit`) -- one chain after the other, as in the
reference implementation. Chains, restarts and the stopping rule are those of the NumPy version:

* a chain starts from a neighbour seed or a random itinerary not evaluated before and follows
  ``itinerary <- regions actually visited`` until a real cycle, a singular system, ``inner``
  iterations, or an itinerary already evaluated (it would retrace a known path);
* the search stops after ``outer`` consecutive fresh starts without a new cycle, when every
  itinerary has been evaluated, after ``max_evaluations`` solves, or when no unevaluated
  itinerary can be drawn (256 tries).

Itineraries of up to 16 bits are looked up in a flat table, longer ones hashed. The region pool
(:meth:`.scyfi_numpy.RegionPool.from_model`) is built by one compiled call as well
(:func:`build_pool`). Random numbers come from a SplitMix64 stream (Steele, Lea & Flood, OOPSLA
2014) seeded by the caller, so a seeded search is reproducible. The cycles found are classified
by :func:`.scyfi.add_cycles`, the batched form of :func:`.enumeration.add_cycle`.
"""

from __future__ import annotations

import weakref

import numpy as np

try:  # numba is a declared dependency; keep the import failure readable
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

if numba is not None:
    from dsrecon.analysis.scyfi_jit import _borrow, _borrow_form, _draw, _grow, _rehash, _room, _slot
    from dsrecon.analysis.scyfi_solve import _evaluate, _margins_step

#: random draws tried per fresh start before the search gives up (no unevaluated itinerary found)
MAX_DRAW_TRIES = 256
#: itineraries of at most this many bits are looked up in a table of 2^bits flags, longer ones hashed
DIRECT_BITS = 16
#: stop reasons reported in the statistics
STOP_REASONS = ("outer budget", "all itineraries evaluated", "max_evaluations", "nothing left to draw")


def available() -> bool:
    return numba is not None


class KernelForm:
    """The arrays the kernels read, from a :class:`~.pwl_view.ShallowView` (float64, contiguous).

    a (M,), W1T (L, M) = W1^T, sparse rows of W2 (ptr (L+1,), idx, val), h1 (M,), h2 (L,); per
    hidden unit the bit of its "on" ReLU (bon; -1: always on, identity unit) and of its "off" ReLU
    (boff; -1: none, else the clipped form's relu(W2 z)); per bit its unit and whether h2 enters
    its pre-activation (bit_unit, bit_h2 (S,)). Slopes d = on - off, offset gates g = on.
    For the fixed-point solve: invb = 1 / (1 - a) (M,) and G = W2 diag(invb) W1 (L, L), empty
    when some a_i = 1 (see :func:`_fixed_point`); nrm = [max|a|, max row sum |W1|, max|h1|, max|h2|]
    bounds max|F(z)| (see :func:`_evaluate`).
    """

    def __init__(self, view: object) -> None:
        L, M = view.W2.shape
        self.M, self.L, self.S = M, L, int(view.n_bits)
        self.a = np.ascontiguousarray(view.a, dtype=np.float64)
        self.W1T = np.ascontiguousarray(view.W1.T, dtype=np.float64)
        nz = view.W2 != 0
        self.ptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int64)
        self.idx = np.nonzero(nz)[1].astype(np.int64)
        self.val = np.ascontiguousarray(view.W2[nz], dtype=np.float64)
        self.h1 = np.ascontiguousarray(view.h1, dtype=np.float64)
        self.h2 = np.ascontiguousarray(view.h2, dtype=np.float64)
        if view.clipped:
            self.bon = np.arange(L, dtype=np.int64)
            self.boff = np.arange(L, 2 * L, dtype=np.int64)
            self.bit_unit = np.concatenate([np.arange(L), np.arange(L)]).astype(np.int64)
            self.bit_h2 = np.concatenate([np.ones(L), np.zeros(L)])
        else:
            self.bon = np.full(L, -1, dtype=np.int64)
            self.bon[view.relu_idx] = np.arange(view.relu_idx.size)
            self.boff = np.full(L, -1, dtype=np.int64)
            self.bit_unit = np.asarray(view.relu_idx, dtype=np.int64)
            self.bit_h2 = np.ones(view.relu_idx.size)
        one_minus = 1.0 - self.a
        if np.all(one_minus != 0):
            self.invb = 1.0 / one_minus
            self.G = np.ascontiguousarray((view.W2 * self.invb) @ view.W1)
        else:
            self.invb, self.G = np.zeros(M), np.zeros((0, 0))
        # bounds for max|F(z)| <= nrm0 max|z| + nrm1 (max|W2 z| + nrm3) + nrm2
        self.nrm = np.array([np.abs(self.a).max(initial=0.0), np.abs(view.W1).sum(axis=1).max(initial=0.0),
                             np.abs(self.h1).max(initial=0.0), np.abs(self.h2).max(initial=0.0)])

    def args(self) -> tuple:
        return (self.a, self.W1T, self.ptr, self.idx, self.val, self.h1, self.h2, self.bon, self.boff,
                self.bit_unit, self.bit_h2, self.invb, self.G, self.nrm)


_FORMS: "weakref.WeakKeyDictionary[object, KernelForm]" = weakref.WeakKeyDictionary()


def kernel_form(view: object) -> KernelForm:
    """The view's :class:`KernelForm`, built once per view (views are immutable snapshots)."""
    f = _FORMS.get(view)
    if f is None:
        f = _FORMS[view] = KernelForm(view)
    return f


def supports(view: object) -> bool:
    """Whether the kernel can run on ``view`` (a shallow-form view and numba installed)."""
    return available() and all(hasattr(view, n) for n in ("a", "W1", "W2", "h1", "h2", "relu_idx", "clipped"))


if numba is not None:
    # ----------------------------------------------------------------------- the search
    @njit(cache=True)
    def _search(F, k, S, traj_bits, valid_len, ok_traj, pool, queue0, known_pts, known_ord, outer, inner, max_eval,
                neighbours, tol, btol, n_total, direct, keys, used, ws_f, ws_i, pats, key, state):
        """The whole SCYFI search (module docstring) -> (new_pts (n, M), new_bits (n, S) uint8,
        new_cyc (n,) cycle id of each row, stats [n_eval, n_fresh, max_gap, stop, n_new, n_draws, n_direct]).

        direct / keys / used: the memo's kind (see _slot) and initial table; ws_f = (mats (6, M, M),
        vec (8, M), pts (k+1, M), marg (k, S), dgu (3, L)), ws_i = (act (L,),): work arrays; pats
        (3, k S) uint8 rows cur, vis, alt; key (words,) uint64; state (1,) uint64 the random
        stream. All are allocated by the caller, which keeps them alive: the search works on
        borrowed views (see _borrow).
        """
        L, M = F[1].shape
        kS = k * S
        Fb = _borrow_form(F)
        tb, vl, okt, pl = _borrow(traj_bits), _borrow(valid_len), _borrow(ok_traj), _borrow(pool)
        mats, vec, pts, marg, dgu = (_borrow(ws_f[0]), _borrow(ws_f[1]), _borrow(ws_f[2]), _borrow(ws_f[3]),
                                     _borrow(ws_f[4]))
        act, pb, kb, st = _borrow(ws_i[0]), _borrow(pats), _borrow(key), _borrow(state)
        d, g, u = dgu[0], dgu[1], dgu[2]
        cur, vis, alt = pb[0], pb[1], pb[2]
        keyb, usedb = _borrow(keys), _borrow(used)
        mcount, n_out, n_new = 0, 0, 0
        q, head, tail = _grow(queue0.copy(), 64), 0, queue0.shape[0]
        qb = _borrow(q)
        fpts, ford, fcount = _grow(known_pts.copy(), 16), _grow(known_ord.copy(), 16), known_pts.shape[0]
        fpb, fob = _borrow(fpts), _borrow(ford)
        out_pts, out_bits, out_cyc = np.zeros((16, M)), np.zeros((16, S), dtype=np.uint8), np.zeros(16, np.int64)
        since_new, n_eval, n_fresh, max_gap, stop, n_draws, n_direct = 0, 0, 0, 0, -1, 0, 0
        while True:
            stop = 0 if since_new >= outer else 1 if 0 <= n_total <= mcount else 2 if n_eval >= max_eval else -1
            if stop >= 0:
                break
            got = False
            ci = 0  # the slot of cur (kb holds its packed key)
            while head < tail and not got:  # neighbour seeds first, then random itineraries
                cur[:] = qb[head]
                head += 1
                ci = _slot(keyb, usedb, cur, kb, direct)
                got = not usedb[ci]
            for _ in range(MAX_DRAW_TRIES if not got else 0):
                n_draws += 1
                _draw(cur, k, S, st, pl, tb, vl, okt)
                ci = _slot(keyb, usedb, cur, kb, direct)
                got = not usedb[ci]
                if got:
                    break
            if not got:
                stop = 3
                break
            since_new += 1
            n_fresh += 1
            age = 0
            while n_eval < max_eval:  # one chain
                if not direct and 2 * (mcount + 1) > used.size:
                    keys, used = _rehash(keys, used)
                    keyb, usedb = _borrow(keys), _borrow(used)
                    ci = _slot(keyb, usedb, cur, kb, direct)
                usedb[ci] = True
                if not direct:
                    keyb[ci] = kb
                mcount += 1
                n_eval += 1
                status, p, direct_solve = _evaluate(cur, vis, k, Fb, tol, btol, mats, vec, act, d, g, pts, marg, u,
                                                    fpb, fob, fcount)
                n_direct += direct_solve
                if status == 3:
                    fpts, ford = _grow(fpts, fcount + p), _grow(ford, fcount + p)
                    fpb, fob = _borrow(fpts), _borrow(ford)
                    out_pts, out_bits, out_cyc = _grow(out_pts, n_out + p), _grow(out_bits, n_out + p), \
                        _grow(out_cyc, n_out + p)
                    for j in range(p):
                        fpts[fcount + j], ford[fcount + j] = pts[j], p
                        out_pts[n_out + j], out_bits[n_out + j] = pts[j], vis[j * S:(j + 1) * S]
                        out_cyc[n_out + j] = n_new
                    fcount, n_out, n_new = fcount + p, n_out + p, n_new + 1
                    max_gap, since_new = max(max_gap, since_new), 0
                    for j in range(kS if neighbours else 0):  # the itineraries one bit flip away
                        alt[:] = vis
                        alt[j] ^= 1
                        if not usedb[_slot(keyb, usedb, alt, kb, direct)]:
                            if tail == q.shape[0]:
                                q, head, tail = _room(q, head, tail)
                                qb = _borrow(q)
                            qb[tail] = alt
                            tail += 1
                if status != 1:
                    break
                ci_next = _slot(keyb, usedb, vis, kb, direct)
                known_next = usedb[ci_next]
                nd = 0
                for j in range(kS if known_next and neighbours else 0):
                    nd += cur[j] != vis[j]
                if 1 < nd <= 4:  # partial updates towards known ground
                    for j in range(kS):
                        if cur[j] != vis[j]:
                            if tail == q.shape[0]:
                                q, head, tail = _room(q, head, tail)
                                qb = _borrow(q)
                            qb[tail] = cur
                            qb[tail, j] ^= 1
                            tail += 1
                if known_next or age >= inner:
                    break
                cur[:] = vis
                ci = ci_next
                age += 1
        # the owners of the borrowed tables stay alive up to here
        stats = np.array([n_eval, n_fresh, max_gap, stop, n_new, n_draws, n_direct, used.size, keys.size,
                          fpts.size, ford.size, q.size], dtype=np.int64)
        return out_pts[:n_out], out_bits[:n_out], out_cyc[:n_out], stats

    # --------------------------------------------------------------------- region pools
    @njit(cache=True)
    def _build_pool(F, z0, n_steps, normals, S, tb, valid, rows, key, direct):
        """RegionPool.from_model in one pass: simulate z0 (n, M) for n_steps with the NumPy
        pool's divergence rule (a non-finite state or one beyond 1e8 ends the valid part),
        patterns into tb (n, T, S) uint8 and valid lengths into valid
        (n,); random points centre + spread * normals (n_random, M) (centre, spread: mean and
        standard deviation of the valid states, spread >= 1); the distinct patterns of the valid
        states then the random points, in order of first appearance -> row count P, rows[:P]
        (n T + n_random, S) holding them. A trajectory at an exact fixed point (F(z) == z)
        repeats its last row; patterns past the valid part stay 0 (never read)."""
        n, M = z0.shape
        Fb, tbb, vb, rb, kb = _borrow_form(F), _borrow(tb), _borrow(valid), _borrow(rows), _borrow(key)
        nb = _borrow(normals)
        u, marg, z, znew = np.zeros(Fb[1].shape[0]), np.zeros(S), np.zeros(M), np.zeros(M)
        tot, tot2, cnt = np.zeros(M), 0.0, 0
        for b in range(n):
            z[:] = z0[b]
            vb[b] = n_steps
            for t in range(n_steps):
                alive = True
                for i in range(M):
                    alive = alive and np.isfinite(z[i]) and abs(z[i]) < 1e8
                if not alive:  # the patterns past the valid part are never read
                    vb[b] = t
                    break
                cnt += 1
                for i in range(M):
                    tot[i] += z[i]
                    tot2 += z[i] * z[i]
                _margins_step(z, Fb, u, marg, tbb[b, t], znew, True)
                same = True
                for i in range(M):
                    same = same and znew[i] == z[i]
                if same:  # at an exact fixed point: constant from here on
                    rest = n_steps - 1 - t
                    for r in range(t + 1, n_steps):
                        for j in range(S):
                            tbb[b, r, j] = tbb[b, t, j]
                    cnt += rest
                    for i in range(M):
                        tot[i] += rest * z[i]
                        tot2 += rest * z[i] * z[i]
                    break
                z[:] = znew
        spread = 1.0
        if cnt > 0:
            mean_all = tot.sum() / (cnt * M)
            var = tot2 / (cnt * M) - mean_all * mean_all
            spread = max(1.0, np.sqrt(var)) if np.isfinite(var) and var > 0 else 1.0
        cap = 1024
        while cap < 2 * rb.shape[0] + 2:
            cap *= 2
        keys = np.zeros((1 if direct else cap, kb.size), dtype=np.uint64)
        used = np.zeros(2**S if direct else cap, dtype=np.bool_)
        m = 0
        for b in range(n):
            for t in range(vb[b]):
                i = _slot(keys, used, tbb[b, t], kb, direct)
                if not used[i]:
                    keys[0 if direct else i], used[i] = kb, True
                    rb[m] = tbb[b, t]
                    m += 1
        for r in range(nb.shape[0]):
            for i in range(M):
                z[i] = (tot[i] / cnt if cnt > 0 else 0.0) + spread * nb[r, i]
            _margins_step(z, Fb, u, marg, rb[m], znew, False)
            i = _slot(keys, used, rb[m], kb, direct)
            if not used[i]:
                keys[0 if direct else i], used[i] = kb, True
                m += 1
        return m


# --------------------------------------------------------------------------- Python entry points
def build_pool(view: object, z0: np.ndarray, n_steps: int, normals: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compiled :meth:`.scyfi_numpy.RegionPool.from_model`: z0 (n, M) starts, normals (n_random, M)
    standard normal draws -> (trajectory patterns (n, T, S) bool, valid lengths (n,), distinct
    patterns (P, S) bool)."""
    F = kernel_form(view)
    n, S = z0.shape[0], F.S
    tb = np.zeros((n, int(n_steps), S), dtype=np.uint8)
    valid = np.zeros(n, dtype=np.int64)
    rows = np.zeros((n * int(n_steps) + normals.shape[0], S), dtype=np.uint8)
    m = _build_pool(F.args(), np.ascontiguousarray(z0, dtype=np.float64), int(n_steps),
                    np.ascontiguousarray(normals, dtype=np.float64), S, tb, valid, rows,
                    np.zeros((S + 63) // 64, dtype=np.uint64), S <= DIRECT_BITS)
    return tb.view(np.bool_), valid, rows[:m].view(np.bool_)


def search(
    view: object,
    k: int,
    pool: object,
    known: list[np.ndarray],
    queue0: np.ndarray,
    *,
    outer: int,
    inner: int,
    max_evaluations: int,
    neighbours: bool,
    seed: int,
    tol: float,
    btol: float,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, object]]:
    """Run the compiled search for order k.

    Parameters
    ----------
    pool : RegionPool
        traj_bits (n, T, S), valid_len (n,), pool (P, S).
    known : list of (p, M) arrays
        Cycles already known whose minimal period p divides k.
    queue0 : (q, k, S) bool
        Neighbour seeds tried first.
    seed : int
        Seeds the SplitMix64 stream (0 <= seed < 2^64).

    Returns
    -------
    new : list of (points (p, M), patterns (p, S) bool), in discovery order.
    stats : dict with n_evaluations, n_fresh_starts, max_gap (the most fresh starts up to a
        discovery since the previous one: the same search with ``outer >= max_gap`` finds the
        same cycles), stop (reason), n_draws (random itineraries drawn), n_direct_solves
        (candidates solved by the M x M system instead of the Woodbury one).
    """
    F = kernel_form(view)
    S, M = F.S, F.M
    if known:
        kp = np.ascontiguousarray(np.concatenate(known, axis=0), dtype=np.float64)
        ko = np.concatenate([np.full(c.shape[0], c.shape[0], dtype=np.int64) for c in known])
    else:
        kp, ko = np.zeros((0, M)), np.zeros(0, dtype=np.int64)
    q0 = np.ascontiguousarray(queue0, dtype=np.bool_).reshape(-1, k * S).view(np.uint8)
    kS = k * S
    direct = kS <= DIRECT_BITS
    words = (kS + 63) // 64
    keys = np.zeros((1 if direct else 1024, words), dtype=np.uint64)
    used = np.zeros(2**kS if direct else 1024, dtype=np.bool_)
    ws_f = (np.zeros((6, M, M)), np.zeros((8, M)), np.zeros((k + 1, M)), np.zeros((k, S)), np.zeros((3, F.L)))
    ws_i = (np.zeros(F.L, dtype=np.int64),)
    valid_len = np.ascontiguousarray(pool.valid_len, dtype=np.int64)
    ok_traj = np.flatnonzero(valid_len >= k).astype(np.int64)
    state = np.array([seed], dtype=np.uint64)
    pts, bits, cyc, st = _search(
        F.args(), int(k), S, np.ascontiguousarray(pool.traj_bits).view(np.uint8), valid_len, ok_traj,
        np.ascontiguousarray(pool.pool).view(np.uint8), q0, kp, ko, int(outer), int(inner), int(max_evaluations),
        bool(neighbours), float(tol), float(btol), 2 ** kS if kS < 62 else -1, direct, keys, used, ws_f, ws_i,
        np.zeros((3, kS), dtype=np.uint8), np.zeros(words, dtype=np.uint64), state,
    )
    bits = bits.view(np.bool_)
    new = [(pts[cyc == i], bits[cyc == i]) for i in range(int(st[4]))]
    stats = {"n_evaluations": int(st[0]), "n_fresh_starts": int(st[1]), "max_gap": int(st[2]),
             "stop": STOP_REASONS[int(st[3])], "n_draws": int(st[5]), "n_direct_solves": int(st[6])}
    return new, stats
