"""Compiled SCYFI search loop (numba) for piecewise-linear models in shallow canonical form.

Glossary: k cycle order, M latent dim, L hidden units, S pattern bits, n trajectories, T steps.

:func:`dsrecon.analysis.scyfi.scyfi` documents the algorithm (Eisenmann et al., NeurIPS 2023).
Its NumPy implementation batches C chains per round and pays Python/NumPy overhead on every
round; this kernel runs the *whole* search in compiled code -- drawing itineraries from the
region pool, building each region's affine map ``W_s = diag(a) + W1 diag(d_s) W2``, composing
the k-fold map, the LU solve of ``(I - P) z = c``, the k-step simulation with its
self-consistency and closure checks, de-duplication against the cycles already known, the memo
of evaluated itineraries (an open-addressing hash table over the bit-packed itinerary; exact,
keys are compared word by word) and the neighbour queue -- one chain after the other, as in the
reference implementation. Chains, restarts and the stopping rule are those of the NumPy version:

* a chain starts from a neighbour seed or a random itinerary not evaluated before and follows
  ``itinerary <- regions actually visited`` until a real cycle, a singular system, ``inner``
  iterations, or an itinerary already evaluated (it would retrace a known path);
* the search stops after ``outer`` consecutive fresh starts without a new cycle, when every
  itinerary has been evaluated, after ``max_evaluations`` solves, or when no unevaluated
  itinerary can be drawn (256 tries).

Cost per candidate: fixed points solve an r x r system over the r active hidden units (Woodbury
identity, :func:`_fixed_point`) instead of M x M, and compute the step F(z*) only for
candidates that may be consistent; W2 is stored as sparse rows (PLRNN-type models, W2 = I, pay
O(M) per hidden unit); itineraries of up to 16 bits are looked up in a flat table. The region
pool (:meth:`.scyfi.RegionPool.from_model`) is built by one compiled call as well
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
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    numba = None

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
    _U = np.uint64

    @intrinsic
    def _borrow(typingctx, arr):
        """A view of ``arr`` without a reference count (NULL meminfo).

        Every array a compiled function touches costs an atomic incref/decref pair per call
        (~40% of the search's time on small matrices). The search borrows its arrays once; the
        owners are held by the Python caller (or by live locals of the search) for the whole
        call, so the borrowed views never outlive the data.
        """
        def codegen(context, builder, sig, args):
            src = context.make_array(sig.args[0])(context, builder, value=args[0])
            out = context.make_array(sig.return_type)(context, builder)
            out.meminfo = cgutils.get_null_value(out.meminfo.type)
            out.parent = cgutils.get_null_value(out.parent.type)
            out.nitems, out.itemsize, out.data = src.nitems, src.itemsize, src.data
            out.shape, out.strides = src.shape, src.strides
            return out._getvalue()

        return arr(arr), codegen

    @njit(cache=True)
    def _borrow_form(F):
        return (_borrow(F[0]), _borrow(F[1]), _borrow(F[2]), _borrow(F[3]), _borrow(F[4]), _borrow(F[5]),
                _borrow(F[6]), _borrow(F[7]), _borrow(F[8]), _borrow(F[9]), _borrow(F[10]), _borrow(F[11]),
                _borrow(F[12]), _borrow(F[13]))

    @njit(cache=True, inline="always")
    def _mix(z):
        z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
        return z ^ (z >> _U(31))

    @njit(cache=True, inline="always")
    def _rand(state):
        """SplitMix64: the next 64 random bits of the stream kept in state (1,) uint64."""
        state[0] += _U(0x9E3779B97F4A7C15)
        return _mix(state[0])

    @njit(cache=True, inline="always")
    def _randint(state, n):
        """Uniform in [0, n), n < 2^32 (Lemire's multiply-shift on the top 32 bits)."""
        return np.int64(((_rand(state) >> _U(32)) * _U(n)) >> _U(32))

    # ------------------------------------------------------------------ the map and its pieces
    @njit(cache=True)
    def _margins_step(z, F, u, marg, bits, znew, step):
        """Pre-activations marg (S,), patterns bits (S,) uint8 and u = W2 z (L,) of a state z (M,);
        with ``step`` also znew = F(z) (M,)."""
        a, W1T, ptr, idx, val, h1, h2, bon, boff, bit_unit, bit_h2 = F[:11]
        L, M = W1T.shape
        for l in range(L):
            s = 0.0
            for p in range(ptr[l], ptr[l + 1]):
                s += val[p] * z[idx[p]]
            u[l] = s
        for b in range(bits.size):
            m = u[bit_unit[b]] + bit_h2[b] * h2[bit_unit[b]]
            marg[b] = m
            bits[b] = m > 0.0
        if step:
            for i in range(M):
                znew[i] = a[i] * z[i] + h1[i]
            for l in range(L):
                on = 1.0 if bon[l] < 0 else float(bits[bon[l]])
                off = 0.0 if boff[l] < 0 else float(bits[boff[l]])
                phi = (on - off) * u[l] + on * h2[l]
                for i in range(M):
                    znew[i] += phi * W1T[l, i]

    @njit(cache=True)
    def _slopes(bits, F, d, g):
        """Slopes d (L,) and offset gates g (L,) of the hidden units for a pattern bits (S,)."""
        bon, boff = F[7], F[8]
        for l in range(d.size):
            on = 1.0 if bon[l] < 0 else float(bits[bon[l]])
            d[l] = on - (0.0 if boff[l] < 0 else float(bits[boff[l]]))
            g[l] = on

    @njit(cache=True)
    def _offset(F, g, c):
        """c = h1 + W1 (g * h2): the offset of the region's affine map (M,)."""
        W1T, h1, h2 = F[1], F[5], F[6]
        c[:] = h1
        for l in range(g.size):
            if g[l] != 0.0 and h2[l] != 0.0:
                for i in range(c.size):
                    c[i] += W1T[l, i] * h2[l]

    @njit(cache=True, inline="always")
    def _lu(Ac, z, n):
        """Solve Ac[:n, :n] x = z[:n] in place (LU, partial pivoting); False on a zero pivot."""
        for col in range(n):
            p, best = col, abs(Ac[col, col])
            for r in range(col + 1, n):
                if abs(Ac[r, col]) > best:
                    p, best = r, abs(Ac[r, col])
            if not best > 0.0:
                return False
            if p != col:
                for j in range(n):
                    Ac[col, j], Ac[p, j] = Ac[p, j], Ac[col, j]
                z[col], z[p] = z[p], z[col]
            inv = 1.0 / Ac[col, col]
            for r in range(col + 1, n):
                f = Ac[r, col] * inv
                for j in range(col + 1, n):
                    Ac[r, j] -= f * Ac[col, j]
                z[r] -= f * z[col]
        for i in range(n - 1, -1, -1):
            s = z[i]
            for j in range(i + 1, n):
                s -= Ac[i, j] * z[j]
            z[i] = s / Ac[i, i]
        return True

    @njit(cache=True, inline="always")
    def _accept(res, c, z):
        """The residual test of :func:`.pwl_view.solve_cycle_points`: all finite and
        max|res| <= 1e-8 (1 + max|c| + max|z|)."""
        rmax, cmax, zmax = 0.0, 0.0, 0.0
        for i in range(z.size):
            if not (np.isfinite(z[i]) and np.isfinite(res[i])):
                return False
            rmax, cmax, zmax = max(rmax, abs(res[i])), max(cmax, abs(c[i])), max(zmax, abs(z[i]))
        return rmax <= 1e-8 * (1.0 + cmax + zmax)

    @njit(cache=True, inline="always")
    def _fixed_point(cur, vis, F, btol, C, vec, act, d, u, marg):
        """Order 1, fused: the candidate z* = vec[3] of region cur (S,) by the Woodbury identity, its
        residual test, patterns vis and margins marg; returns 0 (not solved here: use the direct
        solve), 1 (virtual), 2 (possibly consistent: run the full checks).

        ``I - W_s = B - U V`` with B = diag(1 - a), U = W1[:, A] diag(d_A), V = W2[A, :] over the r
        active hidden units A (d != 0), so ``z = y + B^-1 U w`` with ``y = B^-1 c`` and
        ``(I_r - G[A, A] diag(d_A)) w = V y`` (G = W2 B^-1 W1 precomputed): an r x r solve instead
        of M x M (used when r < M). The residual test is that of
        :func:`.pwl_view.solve_cycle_points` on the original system. A virtual verdict needs a
        violated bit with |margin| > btol (1 + max(max|z*|, bound on max|F(z*)|)), so the step
        F(z*) is computed only for candidates that may be consistent.
        """
        a, W1T, ptr, idx, val, h1, h2, bon, boff, bit_unit, bit_h2, invb, G, nrm = F
        L, M = W1T.shape
        S = cur.size
        if G.shape[0] != L:
            return 0
        c, y, w, z, res = vec[0], vec[1], vec[2], vec[3], vec[4]
        for i in range(M):
            c[i] = h1[i]
        r = 0
        for l in range(L):
            on = 1.0 if bon[l] < 0 else float(cur[bon[l]])
            dl = on - (0.0 if boff[l] < 0 else float(cur[boff[l]]))
            d[l] = dl
            act[r] = l
            r += dl != 0.0
            gh = on * h2[l]
            if gh != 0.0:
                for i in range(M):
                    c[i] += W1T[l, i] * gh
        if r >= M:
            return 0
        for i in range(M):
            y[i] = c[i] * invb[i]
        for p in range(r):
            ap = act[p]
            s = 0.0
            for q in range(ptr[ap], ptr[ap + 1]):
                s += val[q] * y[idx[q]]
            w[p] = s
            for q in range(r):
                C[p, q] = -G[ap, act[q]] * d[act[q]]
            C[p, p] += 1.0
        if not _lu(C, w, r):
            return 0
        for i in range(M):
            z[i] = y[i]
        for p in range(r):
            f = d[act[p]] * w[p]
            for i in range(M):
                z[i] += invb[i] * W1T[act[p], i] * f
        # u = W2 z for all hidden units (margins and residual)
        for l in range(L):
            s = 0.0
            for q in range(ptr[l], ptr[l + 1]):
                s += val[q] * z[idx[q]]
            u[l] = s
        for i in range(M):  # residual of the original system: (1 - a) z - W1 D W2 z - c
            res[i] = (1.0 - a[i]) * z[i] - c[i]
        for p in range(r):
            f = d[act[p]] * u[act[p]]
            for i in range(M):
                res[i] -= W1T[act[p], i] * f
        if not _accept(res, c, z):
            return 0
        zmax, umax = 0.0, 0.0
        for i in range(M):
            zmax = max(zmax, abs(z[i]))
        for l in range(L):
            umax = max(umax, abs(u[l]))
        bound = btol * (1.0 + max(zmax, nrm[0] * zmax + nrm[1] * (umax + nrm[3]) + nrm[2]) * (1.0 + 1e-12))
        virtual = False
        for b in range(S):
            m = u[bit_unit[b]] + bit_h2[b] * h2[bit_unit[b]]
            marg[b] = m
            vb = m > 0.0
            vis[b] = vb
            if vb != cur[b] and abs(m) > bound:
                virtual = True
        return 1 if virtual else 2

    @njit(cache=True)
    def _solve_direct(cur, k, F, mats, vec, d, g):
        """Candidate z = vec[3]: compose the k-fold map ``P z + c`` from the regions' maps
        ``W = diag(a) + W1 diag(d) W2`` and solve ``(I - P) z = c`` (M x M LU) with the residual
        test; False when singular or inaccurate."""
        a, W1T, ptr, idx, val = F[0], F[1], F[2], F[3], F[4]
        W, P, T, A, Ac = mats[0], mats[1], mats[2], mats[3], mats[4]
        c, z, res, h, ct = vec[0], vec[3], vec[4], vec[5], vec[6]
        L, M = W1T.shape
        S = cur.size // k
        for j in range(k):
            _slopes(cur[j * S:(j + 1) * S], F, d, g)
            _offset(F, g, h)
            W[:, :] = 0.0
            for i in range(M):
                W[i, i] = a[i]
            for l in range(L):
                if d[l] != 0.0:
                    for p in range(ptr[l], ptr[l + 1]):
                        for i in range(M):
                            W[i, idx[p]] += W1T[l, i] * d[l] * val[p]
            if j == 0:
                P[:, :] = W
                c[:] = h
                continue
            for r in range(M):  # P <- W P, c <- W c + h
                s = h[r]
                for q in range(M):
                    s += W[r, q] * c[q]
                ct[r] = s
                for col in range(M):
                    s = 0.0
                    for q in range(M):
                        s += W[r, q] * P[q, col]
                    T[r, col] = s
            P[:, :] = T
            c[:] = ct
        for r in range(M):
            for col in range(M):
                A[r, col] = (1.0 if r == col else 0.0) - P[r, col]
        Ac[:, :] = A
        z[:] = c
        if not _lu(Ac, z, M):
            return False
        for r in range(M):
            s = -c[r]
            for col in range(M):
                s += A[r, col] * z[col]
            res[r] = s
        return _accept(res, c, z)

    # --------------------------------------------------------------------- one candidate
    @njit(cache=True, inline="always")
    def _evaluate(cur, vis, k, F, tol, btol, mats, vec, act, d, g, pts, marg, u, fpts, ford, fcount):
        """Solve and verify itinerary cur (k S,) uint8; vis <- the patterns actually visited.

        Returns (status, p, direct): status 0 singular, 1 virtual, 2 real but known, 3 real and new
        (pts[:p] is the new cycle, p its minimal period); direct: the M x M solve was used. Checks
        as :func:`.enumeration.check_candidates`.
        """
        M = pts.shape[1]
        S = cur.size // k
        st = _fixed_point(cur, vis, F, btol, mats[5], vec, act, d, u, marg[0]) if k == 1 else 0
        direct = st == 0
        if st == 1:
            return 1, 0, direct
        if direct:
            vis[:] = cur
            if not _solve_direct(cur, k, F, mats, vec, d, g):
                return 0, 0, direct
        pts[0] = vec[3]
        big = 0.0
        for j in range(k):
            _margins_step(pts[j], F, u, marg[j], vis[j * S:(j + 1) * S], pts[j + 1], True)
        for j in range(k + 1):
            for i in range(M):
                big = max(big, abs(pts[j, i]))
        scale = 1.0 + big  # self-consistency up to boundary points, then closure
        for j in range(k * S):
            if cur[j] != vis[j] and not abs(marg[j // S, j % S]) <= btol * scale:
                return 1, 0, direct
        for i in range(M):
            if not abs(pts[k, i] - pts[0, i]) <= tol * scale:
                return 1, 0, direct
        big = 0.0  # minimal period (cycles.minimal_period), de-duplication (CycleSet.contains)
        for j in range(k):
            for i in range(M):
                big = max(big, abs(pts[j, i]))
        p = k
        for q in range(1, k):
            if k % q == 0:
                d0, dall = 0.0, 0.0
                for i in range(M):
                    d0 = max(d0, abs(pts[q, i] - pts[0, i]))
                for j in range(k):
                    for i in range(M):
                        dall = max(dall, abs(pts[(j + q) % k, i] - pts[j, i]))
                if d0 <= tol * (1.0 + big) and dall <= 10.0 * tol * (1.0 + big):
                    p = q
                    break
        big = 0.0
        for i in range(M):
            big = max(big, abs(pts[0, i]))
        for r in range(fcount):
            if ford[r] == p:
                dist = 0.0
                for i in range(M):
                    dist = max(dist, abs(fpts[r, i] - pts[0, i]))
                if dist <= tol * (1.0 + big):
                    return 2, p, direct
        return 3, p, direct

    # --------------------------------------------------- memo (set of itineraries) and queue
    @njit(cache=True, inline="always")
    def _slot(keys, used, seq, key, direct):
        """Pack seq (n,) uint8 into key (words,) uint64; return its slot in the table: the key
        itself when ``direct`` (tables of 2^n entries, n <= DIRECT_BITS), else open addressing with
        linear probing (keys compared word by word: exact)."""
        key[:] = 0
        for w in range(key.size):
            acc = _U(0)
            for i in range(64 * w, min(seq.size, 64 * w + 64)):
                acc |= _U(seq[i]) << _U(i - 64 * w)
            key[w] = acc
        if direct:
            return np.int64(key[0])
        mask = used.size - 1
        h = _U(0x9E3779B97F4A7C15)
        for w in range(key.size):
            h = _mix(h ^ key[w])
        i = np.int64(h & _U(mask))
        while used[i]:
            same = True
            for w in range(key.size):
                same = same and keys[i, w] == key[w]
            if same:
                return i
            i = (i + 1) & mask
        return i

    @njit(cache=True)
    def _rehash(keys, used):
        """The hash table at twice the size."""
        nk = np.zeros((2 * used.size, keys.shape[1]), dtype=np.uint64)
        nu = np.zeros(2 * used.size, dtype=np.bool_)
        for r in range(used.size):
            if used[r]:
                mask, h = nu.size - 1, _U(0x9E3779B97F4A7C15)
                for w in range(keys.shape[1]):
                    h = _mix(h ^ keys[r, w])
                i = np.int64(h & _U(mask))
                while nu[i]:
                    i = (i + 1) & mask
                nk[i], nu[i] = keys[r], True
        return nk, nu

    @njit(cache=True)
    def _grow(a, n):
        """a with room for at least n rows (doubling), contents kept."""
        if n <= a.shape[0]:
            return a
        b = np.zeros((max(n, 2 * a.shape[0]),) + a.shape[1:], dtype=a.dtype)
        b[: a.shape[0]] = a
        return b

    @njit(cache=True)
    def _room(q, head, tail):
        """The FIFO rows q[head:tail] with room for one more row -> (q, head, tail): compacted
        when rows were consumed, else doubled."""
        if tail < q.shape[0]:
            return q, head, tail
        if head > 0:
            q[: tail - head] = q[head:tail].copy()
            return q, 0, tail - head
        return _grow(q, tail + 1), head, tail

    @njit(cache=True)
    def _draw(cur, k, S, state, pool, traj_bits, valid_len, ok_traj):
        """A random itinerary (as RegionPool.draw): 1/3 uniform, 1/3 pool, 1/3 trajectory window."""
        src = _randint(state, 3)
        if src == 1 and pool.shape[0] > 0:
            for j in range(k):
                cur[j * S:(j + 1) * S] = pool[_randint(state, pool.shape[0])]
        elif src == 2 and ok_traj.size > 0:
            ti = ok_traj[_randint(state, ok_traj.size)]
            start = _randint(state, valid_len[ti] - k + 1)
            for j in range(k):
                cur[j * S:(j + 1) * S] = traj_bits[ti, start + j]
        else:
            bits = _U(0)
            for i in range(cur.size):
                if i % 64 == 0:
                    bits = _rand(state)
                cur[i] = np.uint8(bits & _U(1))
                bits >>= _U(1)

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
    """The compiled :meth:`.scyfi.RegionPool.from_model`: z0 (n, M) starts, normals (n_random, M)
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
