"""Numba kernels of the fused forced rollout (forward and hand-written BPTT backward).

Private module behind :mod:`dsrecon.training.fused`; works on plain NumPy arrays.

Glossary: K ensemble members, B batch, T time, M latent dim, L hidden dim.

The recurrence (shallow canonical form of the PLRNN family, see
:class:`dsrecon.models.base.PiecewiseLinearModel`; generalised teacher forcing of Hess et al.,
ICML 2023, sparse teacher forcing of Mikhaeil et al., NeurIPS 2022)::

    zin_t = z_{t-1} + c_t * (zhat_t - z_{t-1})            c_t = alpha_{k,t} * force_mask (M,)
    u_t   = W2 zin_t                                        (L,)
    r_t   = act(u_t + h2)            plain   (relu on relu_mask units, identity elsewhere)
          = relu(u_t + h2) - relu(u_t)   clipped
    z_t   = a * zin_t + W1 r_t + h1                         (M,)   -> out[:, :, t]

Backward (g_t = dLoss/dz_t, accumulated through time from t = T-1 down to 0)::

    g_t     = G_t + (1 - c_{t+1}) * gzin_{t+1}
    gr_t    = W1^T g_t ,   dW1 += g_t r_t^T ,  da += g_t * zin_t ,  dh1 += g_t
    gu_t    = gr_t * act'(.)     (clipped: gr_t * (1[u+h2>0] - 1[u>0]); dh2 += gr_t * 1[u+h2>0])
    dW2    += gu_t zin_t^T ,  dh2 += gu_t (plain)
    gzin_t  = a * g_t + W2^T gu_t
    dzhat_t = c_t * gzin_t ,    dz0 = (1 - c_0) * gzin_0

Layout and speed: work is split into blocks of up to ``nb`` sequences of one ensemble member.
Per time step a block does its matrix products with all sequences of the block at once through
BLAS (``?gemm`` of SciPy's ``cython_blas``, called via a function address so that the kernels
stay cacheable). At these sizes (e.g. 16 x 20 x 20) BLAS is 3-5x faster than hand-written
loops, whose short vector loops are dominated by loop and alias-check overhead. Everything
elementwise in between runs over flat (nbb * M) or (nbb * L) slabs. Nothing but the output is
stored: the backward recomputes zin_t from out[t-1] (or z0) and zhat_t with the same arithmetic
(bit-identical), and u_t with one more product per step; this is cheaper than writing and
re-reading (T, B, M + L) buffers, which are memory- and page-fault-bound for ensembles. The
weight gradients are accumulated once per chunk of _TC steps (dW1 += G^T R, dW2 += GU^T ZIN
over the chunk's rows); data are staged per chunk into step-major slabs (prefetch-friendly).
Products per step: forward 2, backward 3 (forward 1, backward 1 when W2 is the identity, as in
the AL-RNN). Gradient accumulators are per block (no shared writes, no races; summed over blocks
by the caller). ``fastmath=False`` keeps IEEE semantics and relu is written
``0 if x <= 0 else x`` (as torch), so NaN/inf propagate for the trainer's roll-back logic. The
drivers run a range of blocks and release the GIL, so the caller can run disjoint block ranges
on several threads.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import get_cython_function_address, intrinsic

_JIT = dict(cache=True, fastmath=False, nogil=True)
_TC = 32  # time steps per chunk (staging of data, weight-gradient products)
_N = 78  # ord("N"): no transpose
_T = 84  # ord("T"): transpose


def gemm_address(dtype) -> int:
    """Address of SciPy's Fortran-convention ``sgemm`` / ``dgemm`` for this dtype."""
    name = "sgemm" if np.dtype(dtype) == np.float32 else "dgemm"
    return get_cython_function_address("scipy.linalg.cython_blas", name)


@intrinsic
def _call13(typingctx, addr, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13):
    """Call the void function at integer address ``addr`` with 13 pointer arguments."""
    sig = types.void(addr, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p] * 13)
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(fn, [builder.inttoptr(v, i8p) for v in args[1:]])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(**_JIT)
def _gemm(addr, ta, tb, m, n, k, A, offa, lda, B, offb, ldb, beta, C, offc, ldc, wi, wf):
    """Row-major C[m, n] = op(A) op(B) + beta * C on flat arrays at element offsets.

    A column-major BLAS call on the swapped operands (C^T = op(B)^T op(A)^T). ``wi`` (int32, 8)
    and ``wf`` (dtype, 2) hold the by-reference scalar arguments.
    """
    wi[0] = n
    wi[1] = m
    wi[2] = k
    wi[3] = ldb
    wi[4] = lda
    wi[5] = ldc
    wi[6] = tb
    wi[7] = ta
    wf[0] = 1
    wf[1] = beta
    isz = A.itemsize
    ip = wi.ctypes.data
    fp = wf.ctypes.data
    _call13(addr, ip + 24, ip + 28, ip, ip + 4, ip + 8, fp, B.ctypes.data + offb * isz, ip + 12,
            A.ctypes.data + offa * isz, ip + 16, fp + isz, C.ctypes.data + offc * isz, ip + 20)


@numba.njit(**_JIT)
def _stage_in(X, k, b0, nbb, t0, tc, buf):
    """buf[(s * nbb + b) * M + m] = X[k, b0 + b, t0 + s, m] for a chunk of tc steps.

    Reads the (K, B, T, M) layout in memory order (prefetch-friendly) into step-major slabs.
    Unsigned indices: numba's negative-index wraparound on signed computed indices would
    otherwise block vectorisation.
    """
    uM, unbb, ub0, ut0 = np.uint64(X.shape[3]), np.uint64(nbb), np.uint64(b0), np.uint64(t0)
    for b in range(unbb):
        for s in range(np.uint64(tc)):
            o = (s * unbb + b) * uM
            for m in range(uM):
                buf[o + m] = X[k, ub0 + b, ut0 + s, m]


@numba.njit(**_JIT)
def _stage_out(buf, k, b0, nbb, t0, tc, X):
    """Inverse of :func:`_stage_in`: X[k, b0 + b, t0 + s, m] = buf[(s * nbb + b) * M + m]."""
    uM, unbb, ub0, ut0 = np.uint64(X.shape[3]), np.uint64(nbb), np.uint64(b0), np.uint64(t0)
    for b in range(unbb):
        for s in range(np.uint64(tc)):
            o = (s * unbb + b) * uM
            for m in range(uM):
                X[k, ub0 + b, ut0 + s, m] = buf[o + m]


@numba.njit(**_JIT)
def _stage_prev(out, z0, k, b0, nbb, t0, tc, buf):
    """Step-major z_{t-1} for t = t0..t0+tc-1: out[k, b, t-1] (z0[k, b] for t = 0)."""
    M = out.shape[3]
    if t0 > 0:
        _stage_in(out, k, b0, nbb, t0 - 1, tc, buf)
        return
    for b in range(nbb):
        for m in range(M):
            buf[b * M + m] = z0[k, b0 + b, m]
    if tc > 1:
        _stage_in(out, k, b0, nbb, 0, tc - 1, buf[nbb * M:])


@numba.njit(**_JIT)
def _force(zp, zh, c, t, nbb, zin):
    """zin = z_prev + c[t] * (zhat_t - z_prev) on (nbb * M,) slabs; c (T, M) of one member."""
    uM = np.uint64(c.shape[1])
    for b in range(np.uint64(nbb)):
        for m in range(uM):
            i = b * uM + m
            p = zp[i]
            zin[i] = p + c[t, m] * (zh[i] - p)


@numba.njit(**_JIT)
def _hidden(addr, k, nbb, zin, W2T, h2t, idt, clipped, all_relu, w2_id, v, r, wi, wf):
    """v = zin W2^T (+ h2 unless clipped) and r = act(v) on (nbb * L,) slabs."""
    M, L = W2T.shape[1], W2T.shape[2]
    nL = nbb * L
    zero = v.dtype.type(0)
    if w2_id:
        for i in range(nL):
            v[i] = zin[i] if clipped else zin[i] + h2t[i]
    elif clipped:
        _gemm(addr, _N, _N, nbb, L, M, zin, 0, M, W2T.reshape(-1), k * M * L, L, 0, v, 0, L,
              wi, wf)
    else:
        for i in range(nL):
            v[i] = h2t[i]
        _gemm(addr, _N, _N, nbb, L, M, zin, 0, M, W2T.reshape(-1), k * M * L, L, 1, v, 0, L,
              wi, wf)
    if clipped:
        for i in range(nL):
            u = v[i]
            w = u + h2t[i]
            r[i] = (zero if w <= zero else w) - (zero if u <= zero else u)
    elif all_relu:
        for i in range(nL):
            r[i] = zero if v[i] <= zero else v[i]
    else:
        for i in range(nL):
            r[i] = zero if (v[i] <= zero and not idt[i]) else v[i]


@numba.njit(**_JIT)
def _setup(h2, relu_mask, k, nbb, dt):
    """Per-block constants: h2[k] and identity flags tiled over nbb sequences, all_relu."""
    L = h2.shape[1]
    h2t = np.empty(nbb * L, dt)
    idt = np.empty(nbb * L, np.bool_)
    all_relu = True
    for l in range(L):
        all_relu = all_relu and relu_mask[l]
    for b in range(nbb):
        for l in range(L):
            h2t[b * L + l] = h2[k, l]
            idt[b * L + l] = not relu_mask[l]
    return h2t, idt, all_relu


@numba.njit(**_JIT)
def _forward_block(addr, j, nblk, nb, a, W1T, W2T, h1, h2, relu_mask, clipped, w2_id, c, z0,
                   zhat, out):
    """One block: member k = j // nblk, sequences b0:b0+nbb. See module doc.

    W1T (K, L, M) and W2T (K, M, L) are the transposed weights (plain BLAS products); c (K, T, M)
    the forcing weights alpha[k, t] * force_mask of every member.
    """
    K, B, T, M = zhat.shape
    L = W2T.shape[2]
    k = j // nblk
    ck = c[k]                        # (T, M) forcing weights of member k
    b0 = (j % nblk) * nb
    nbb = min(nb, B - b0)
    unbb, uM = np.uint64(nbb), np.uint64(M)
    nM, nL = nbb * M, nbb * L
    dt = zhat.dtype
    wi = np.empty(8, np.int32)
    wf = np.empty(2, dt)
    h2t, idt, all_relu = _setup(h2, relu_mask, k, nbb, dt)
    zp = np.empty(nM, dt)            # z_{t-1}
    zin = np.empty(nM, dt)
    zn = np.empty(nM, dt)            # r_t W1^T
    v = np.empty(nL, dt)
    r = np.empty(nL, dt)
    zh_buf = np.empty(_TC * nM, dt)
    out_buf = np.empty(_TC * nM, dt)
    for b in range(nbb):
        for m in range(M):
            zp[b * M + m] = z0[k, b0 + b, m]
    tc = 0
    for t in range(T):
        s = t % _TC
        if s == 0:
            tc = min(_TC, T - t)
            _stage_in(zhat, k, b0, nbb, t, tc, zh_buf)
        _force(zp, zh_buf[s * nM:(s + 1) * nM], ck, t, nbb, zin)
        _hidden(addr, k, nbb, zin, W2T, h2t, idt, clipped, all_relu, w2_id, v, r, wi, wf)
        _gemm(addr, _N, _N, nbb, M, L, r, 0, L, W1T.reshape(-1), k * L * M, M, 0, zn, 0, M,
              wi, wf)
        ob = out_buf[s * nM:(s + 1) * nM]
        for b in range(unbb):        # z_t = a * zin + r W1^T + h1
            for m in range(uM):
                i = b * uM + m
                z = a[k, m] * zin[i] + zn[i] + h1[k, m]
                zp[i] = z
                ob[i] = z
        if s == tc - 1:
            _stage_out(out_buf, k, b0, nbb, t - s, tc, out)


@numba.njit(**_JIT)
def _backward_block(addr, j, nblk, nb, a, W1, W2, W2T, h2, relu_mask, clipped, w2_id,
                    want_dW2, c, z0, zhat, out, gout, dzhat, dz0, dW1b, dW2b, dab, dh1b, dh2b):
    """One block of the BPTT recursion; writes the block's gradient sums at row j."""
    K, B, T, M = gout.shape
    L = W2.shape[1]
    k = j // nblk
    ck = c[k]                         # (T, M) forcing weights of member k
    b0 = (j % nblk) * nb
    nbb = min(nb, B - b0)
    unbb, uM = np.uint64(nbb), np.uint64(M)
    nM, nL = nbb * M, nbb * L
    dt = gout.dtype
    zero = dt.type(0)
    wi = np.empty(8, np.int32)
    wf = np.empty(2, dt)
    h2t, idt, all_relu = _setup(h2, relu_mask, k, nbb, dt)
    W1f, W2f = W1.reshape(-1), W2.reshape(-1)
    dW1f, dW2f = dW1b.reshape(-1), dW2b.reshape(-1)
    carry = np.zeros(nM, dt)          # dLoss/dz_t flowing back from step t+1
    v = np.empty(nL, dt)
    gr = np.empty(nL, dt)
    gz = np.empty(nM, dt)
    da_acc = np.zeros(nM, dt)
    dh1_acc = np.zeros(nM, dt)
    dh2_acc = np.zeros(nL, dt)
    for i in range(M * L):
        dW1f[j * M * L + i] = zero
        dW2f[j * L * M + i] = zero
    go_buf = np.empty(_TC * nM, dt)   # staged gout, overwritten by dzhat
    zh_buf = np.empty(_TC * nM, dt)   # staged zhat
    zp_buf = np.empty(_TC * nM, dt)   # staged z_{t-1}
    Gc = np.empty(_TC * nM, dt)       # the chunk's g, zin, r and gu rows (step-major)
    Zc = np.empty(_TC * nM, dt)
    Rc = np.empty(_TC * nL, dt)
    GUc = np.empty(_TC * nL, dt)
    for t in range(T - 1, -1, -1):
        t0 = (t // _TC) * _TC         # chunk [t0, t0 + tc)
        tc = min(_TC, T - t0)
        s = t - t0
        if s == tc - 1:
            _stage_in(gout, k, b0, nbb, t0, tc, go_buf)
            _stage_in(zhat, k, b0, nbb, t0, tc, zh_buf)
            _stage_prev(out, z0, k, b0, nbb, t0, tc, zp_buf)
        sM, sL = slice(s * nM, (s + 1) * nM), slice(s * nL, (s + 1) * nL)
        go, g, zin, r, gu = go_buf[sM], Gc[sM], Zc[sM], Rc[sL], GUc[sL]
        # recompute the forward step: zin, v and r
        _force(zp_buf[sM], zh_buf[sM], ck, t, nbb, zin)
        _hidden(addr, k, nbb, zin, W2T, h2t, idt, clipped, all_relu, w2_id, v, r, wi, wf)
        for i in range(nM):
            g[i] = go[i] + carry[i]
            da_acc[i] += g[i] * zin[i]
            dh1_acc[i] += g[i]
        # gr = g W1; gu = gr * act'(v)
        _gemm(addr, _N, _N, nbb, L, M, g, 0, M, W1f, k * M * L, L, 0, gr, 0, L, wi, wf)
        if clipped:
            for i in range(nL):
                u = v[i]
                pw = not u + h2t[i] <= zero   # relu'(x) = 1[not x <= 0]: NaN passes as in torch
                gv = gr[i] if pw else zero
                dh2_acc[i] += gv
                gu[i] = gv - (zero if u <= zero else gr[i])
        else:
            for i in range(nL):
                gi = gr[i] if (idt[i] or not v[i] <= zero) else zero
                gu[i] = gi
                dh2_acc[i] += gi
        # gzin = a * g + gu W2, split into the data (zhat) and carried (z_{t-1}) parts
        if w2_id:
            for i in range(nM):
                gz[i] = gu[i]
        else:
            _gemm(addr, _N, _N, nbb, M, L, gu, 0, L, W2f, k * L * M, M, 0, gz, 0, M, wi, wf)
        for b in range(unbb):
            for m in range(uM):
                i = b * uM + m
                gzv = a[k, m] * g[i] + gz[i]
                cm = ck[t, m]
                go[i] = cm * gzv       # dzhat_t, staged in place of gout
                carry[i] = gzv - cm * gzv
        if s == 0:                    # chunk done: dzhat out, weight gradients of its rows
            _stage_out(go_buf, k, b0, nbb, t0, tc, dzhat)
            n = tc * nbb
            _gemm(addr, _T, _N, M, L, n, Gc, 0, M, Rc, 0, L, 1, dW1f, j * M * L, L, wi, wf)
            if want_dW2:
                _gemm(addr, _T, _N, L, M, n, GUc, 0, L, Zc, 0, M, 1, dW2f, j * L * M, M, wi, wf)
    for m in range(M):
        dab[j, m] = zero
        dh1b[j, m] = zero
    for l in range(L):
        dh2b[j, l] = zero
    for b in range(nbb):
        for m in range(M):
            dz0[k, b0 + b, m] = carry[b * M + m]
            dab[j, m] += da_acc[b * M + m]
            dh1b[j, m] += dh1_acc[b * M + m]
        for l in range(L):
            dh2b[j, l] += dh2_acc[b * L + l]


@numba.njit(**_JIT)
def forward(addr, j0, j1, nblk, nb, a, W1T, W2T, h1, h2, relu_mask, clipped, w2_id, c, z0,
            zhat, out):
    """Forward of blocks j0..j1-1 (of K * nblk). Releases the GIL: disjoint block ranges may
    run concurrently from several Python threads."""
    for j in range(j0, j1):
        _forward_block(addr, j, nblk, nb, a, W1T, W2T, h1, h2, relu_mask, clipped, w2_id, c,
                       z0, zhat, out)


@numba.njit(**_JIT)
def backward(addr, j0, j1, nblk, nb, a, W1, W2, W2T, h2, relu_mask, clipped, w2_id, want_dW2,
             c, z0, zhat, out, gout, dzhat, dz0, dW1b, dW2b, dab, dh1b, dh2b):
    """Backward of blocks j0..j1-1 (of K * nblk). Releases the GIL (see :func:`forward`)."""
    for j in range(j0, j1):
        _backward_block(addr, j, nblk, nb, a, W1, W2, W2T, h2, relu_mask, clipped, w2_id,
                        want_dW2, c, z0, zhat, out, gout, dzhat, dz0, dW1b, dW2b, dab, dh1b,
                        dh2b)
