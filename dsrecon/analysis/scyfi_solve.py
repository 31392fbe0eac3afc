"""Compiled region maps, candidate solves and checks of the SCYFI kernel (numba).

Glossary: k cycle order, M latent dim, L hidden units, S pattern bits, r active hidden units
(slope d_l != 0) of a region.

F is the tuple of :meth:`.scyfi_kernel.KernelForm.args`. Inside region s (pattern bits) the map
is affine, ``F(z) = W_s z + h_s`` with ``W_s = diag(a) + W1 diag(d_s) W2`` and
``h_s = h1 + W1 (g_s * h2)`` (slopes d, offset gates g: :func:`_slopes`). For an itinerary of k
regions the candidate cycle solves ``(I - P) z = c`` for the composed map ``P z + c``
(Eisenmann, Monfared, Goering & Durstewitz, NeurIPS 2023), and :func:`_evaluate` verifies it as
:func:`.enumeration.check_candidates` does: self-consistency of the regions visited, closure,
minimal period, de-duplication against the cycles already known.

Cost per candidate: fixed points solve an r x r system over the r active hidden units (Woodbury
identity, Woodbury 1950; Hager, SIAM Review 31:221, 1989; :func:`_fixed_point`) instead of
M x M, and compute the step F(z*) only for candidates that may be consistent; W2 is stored as
sparse rows (PLRNN-type models, W2 = I, pay O(M) per hidden unit). Every solve is a dense LU with
partial pivoting (:func:`_lu`) followed by the residual test of
:func:`.pwl_view.solve_cycle_points` (:func:`_accept`).

The helpers exist only when numba is installed (:func:`.scyfi_kernel.available`).
"""

from __future__ import annotations

import numpy as np

try:  # numba is a declared dependency; without it the kernel is unavailable (scyfi_kernel.available)
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None


if numba is not None:
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

