"""Compiled CPU selective scan (numba): forward and hand-written backward of Mamba's S6 scan.

Private kernels behind :func:`dsrecon.models.scan.selective_scan` (``method="numba"``, which
``"auto"`` picks for float32/float64 CPU tensors). Equivalence with the sequential reference
:func:`dsrecon.models.scan.selective_scan_ref` (values and all gradients) is tested in
``tests/models/test_scan.py``.

Glossary (as in :mod:`dsrecon.models.scan`)
-------------------------------------------
B   batch                     T   time steps
ED  inner width (channels)    S   SSM state size per channel
l   time steps of one slab (a block of consecutive steps processed together)

Recurrence (Gu & Dao 2023, Algorithm 2; zero-order hold for A, dB = Delta B)::

    dA_t = exp(Delta_t A)                               (B, ED, S)
    h_t  = dA_t * h_{t-1} + (Delta_t u_t) B_t           (B, ED, S)
    y_t  = <C_t, h_t>_S                                 (B, ED)    (the D u skip is added outside)

Backward (reverse-mode; lam_t = dL/dh_t, the adjoint state, itself a reverse linear scan)::

    lam_t      = gy_t C_t + dA_{t+1} * lam_{t+1}        lam_{T-1} += dL/dh_T
    dL/dC_t    = sum_e gy_t h_t              dL/dB_t = sum_e lam_t Delta_t u_t
    dL/du_t    = Delta_t sum_s lam_t B_t     dL/dDelta_t = u_t sum_s lam_t B_t + sum_s A G_t
    dL/dA     += Delta_t G_t                 with G_t = lam_t * h_{t-1} * dA_t
    dL/dh0     = dA_0 * lam_0

Where the time goes (B=8, T=2048, ED=S=16, float32, one core): a scalar ``exp`` costs 7-20 ns
in numba here (no SVML), more than all the rest of a step, so the B*T*ED*S exponentials are
taken by torch's vectorised ``exp_`` one *slab* of ``l`` steps at a time, on a (B, l, ED, S)
buffer of 1-2 MB that stays in cache (the product Delta A is compiled: torch's broadcast over
the innermost dim is slow), and the compiled kernels do only multiply-adds. Forward saves one
state per slab (the slab-start checkpoints, (n_slabs, B, ED, S)); backward walks the slabs in
reverse, recomputes dA and the slab's states from its checkpoint (as the CUDA kernel of
mamba-ssm recomputes from its chunk starts) and runs the adjoint recurrence above. Nothing of
size (B, T, ED, S) is allocated. In the backward each statement gets its own short loop over s
that writes few arrays: LLVM vectorises those without run-time alias checks, which one fused
loop over s defeats (about 1.5x slower). fastmath is limited to reassociation and contraction
(no ``nnan``/``ninf``), so NaN and inf propagate as in torch; dL/dA is summed per call in the
working precision and accumulated in float64.

The kernels are single-threaded (they release the GIL and take a batch range b0..b1, so a
caller could split the batch over threads; with a barrier per slab this was several times
slower on a loaded 2-core machine, so it is not done here).

References
----------
A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
arXiv:2312.00752 (2023).
S. K. Lam, A. Pitrou, S. Seibert, "Numba: a LLVM-based Python JIT compiler", LLVM-HPC 2015.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch.autograd.function import once_differentiable

_JIT = dict(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, nogil=True)
SLAB_ELEMENTS = 1 << 18  # default slab: about this many (B * l * ED * S) elements (1-2 MB)
DTYPES = (torch.float32, torch.float64)


@numba.njit(**_JIT)
def _forward_slab(dA, delta, u, Bm, C, t0, h, y, b0, b1):  # pragma: no cover - compiled
    """Steps t0 .. t0+l-1 for sequences b0 .. b1-1; h (B, ED, S) is updated in place.

    dA (B, l, ED, S); delta, u, y (B, T, ED); Bm, C (B, T, S).
    """
    n_t, ED, S = dA.shape[1], dA.shape[2], dA.shape[3]
    for b in range(b0, b1):
        hb = h[b]  # (ED, S)
        for j in range(n_t):
            t = t0 + j
            for e in range(ED):
                x = delta[b, t, e] * u[b, t, e]
                acc = 0.0
                for s in range(S):
                    v = dA[b, j, e, s] * hb[e, s] + x * Bm[b, t, s]
                    hb[e, s] = v
                    acc += v * C[b, t, s]
                y[b, t, e] = acc


@numba.njit(**_JIT)
def _backward_slab(  # pragma: no cover - compiled
    dA, delta, u, A, Bm, C, t0, h_start, hs, gy, lam, g_u, g_delta, g_B, g_C, g_A, b0, b1
):
    """Adjoint of :func:`_forward_slab` for sequences b0 .. b1-1 (see the module docstring).

    h_start (B, ED, S) the slab's checkpoint; hs (B, l, ED, S) scratch for the recomputed
    states; lam (B, ED, S) in: dA_{t0+l} * lam_{t0+l} (or dL/dh_T), out: dA_{t0} * lam_{t0};
    g_u, g_delta (B, T, ED) and g_B, g_C (B, T, S) written for the slab's steps; g_A (ED, S)
    float64 accumulator (the call's partial sum, kept in the working precision, is added once).

    Each statement has its own short loop over s with few arrays written (see the module
    docstring).
    """
    n_t, ED, S = dA.shape[1], dA.shape[2], dA.shape[3]
    gA = np.zeros((ED, S), dA.dtype)  # this call's share of dL/dA, in the working precision
    for b in range(b0, b1):
        prev = h_start[b]  # (ED, S)
        for j in range(n_t):  # recompute the slab's states
            t = t0 + j
            cur = hs[b, j]
            for e in range(ED):
                x = delta[b, t, e] * u[b, t, e]
                for s in range(S):
                    cur[e, s] = dA[b, j, e, s] * prev[e, s] + x * Bm[b, t, s]
            prev = cur
        lb = lam[b]  # (ED, S): the adjoint state
        for j in range(n_t - 1, -1, -1):  # adjoint recurrence, backwards in time
            t = t0 + j
            hcur = hs[b, j]  # h_t
            hprev = h_start[b] if j == 0 else hs[b, j - 1]  # h_{t-1}
            aj = dA[b, j]
            Ct, Bt, gCt, gBt = C[b, t], Bm[b, t], g_C[b, t], g_B[b, t]  # (S,) each
            for s in range(S):
                gCt[s] = 0.0
                gBt[s] = 0.0
            for e in range(ED):
                ge, dt, ut = gy[b, t, e], delta[b, t, e], u[b, t, e]
                x = dt * ut
                for s in range(S):  # lam_t = carry + gy_t C_t;  dL/dC_t
                    lb[e, s] += ge * Ct[s]
                    gCt[s] += ge * hcur[e, s]
                lam_b = 0.0
                for s in range(S):  # dL/dB_t;  <lam_t, B_t>
                    gBt[s] += x * lb[e, s]
                    lam_b += lb[e, s] * Bt[s]
                g_da = 0.0
                for s in range(S):  # G = lam_t h_{t-1} dA_t = dL/d(Delta_t A)
                    G = lb[e, s] * hprev[e, s] * aj[e, s]
                    gA[e, s] += G * dt
                    g_da += G * A[e, s]
                for s in range(S):  # carry to t-1: dA_t lam_t
                    lb[e, s] *= aj[e, s]
                g_u[b, t, e] = lam_b * dt
                g_delta[b, t, e] = lam_b * ut + g_da
    for e in range(ED):
        for s in range(S):
            g_A[e, s] += gA[e, s]


def default_slab(Bsz: int, T: int, ED: int, S: int) -> int:
    """Slab length l: about SLAB_ELEMENTS elements per (B, l, ED, S) buffer, 8 <= l <= T."""
    return max(1, min(T, max(8, SLAB_ELEMENTS // max(1, Bsz * ED * S))))


@numba.njit(**_JIT)
def _delta_a(delta, A, t0, out):  # pragma: no cover - compiled
    """out[b, j, e, s] = delta[b, t0 + j, e] * A[e, s] for the slab: (B, l, ED, S)."""
    n_b, n_t, ED, S = out.shape
    for b in range(n_b):
        for j in range(n_t):
            for e in range(ED):
                d = delta[b, t0 + j, e]
                for s in range(S):
                    out[b, j, e, s] = d * A[e, s]


def _dA(delta: np.ndarray, A: np.ndarray, t0: int, t1: int, buf: torch.Tensor) -> np.ndarray:
    """exp(Delta A) for steps t0 .. t1-1 as a (B, l, ED, S) array, in (a prefix of) ``buf``.

    The product runs compiled (torch's broadcast over the innermost dim is slow), the
    exponential by torch's vectorised ``exp_`` in place.
    """
    out = buf[:, : t1 - t0] if t1 - t0 == buf.shape[1] else buf.new_empty(buf.shape[0], t1 - t0, *buf.shape[2:])
    _delta_a(delta, A, t0, out.numpy())
    return out.exp_().numpy()


class NumbaSelectiveScan(torch.autograd.Function):
    """y (B, T, ED), h_T (B, ED, S) = S6 scan on CPU, with the hand-written backward above.

    ``apply(u, delta, A, Bm, C, h0, slab)``: CPU tensors of one dtype (float32 or float64),
    u/delta (B, T, ED) with T >= 1, A (ED, S), Bm/C (B, T, S), h0 (B, ED, S); ``slab`` is the
    slab length l >= 1 (see :func:`default_slab`). Validation is the caller's
    (:func:`dsrecon.models.scan.selective_scan`). First order only (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, C, h0, slab):  # noqa: D401 - autograd signature
        u, delta, A, Bm, C = (t.detach().contiguous() for t in (u, delta, A, Bm, C))
        Bsz, T, ED = u.shape
        S = A.shape[1]
        h = h0.detach().clone().contiguous()  # (B, ED, S): the running state
        y = u.new_empty(Bsz, T, ED)  # (B, T, ED)
        starts = range(0, T, slab)
        ckpt = u.new_empty(len(starts), Bsz, ED, S)  # state before each slab
        arrs = [t.numpy() for t in (delta, u, Bm, C)]
        a_np, h_np, y_np = A.numpy(), h.numpy(), y.numpy()
        buf = u.new_empty(Bsz, min(slab, T), ED, S)  # (B, l, ED, S) scratch for dA
        for k, t0 in enumerate(starts):
            ckpt[k].copy_(h)
            dA = _dA(arrs[0], a_np, t0, min(T, t0 + slab), buf)
            _forward_slab(dA, *arrs, t0, h_np, y_np, 0, Bsz)
        ctx.slab = slab
        ctx.save_for_backward(u, delta, A, Bm, C, ckpt)
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, A, Bm, C, ckpt = (t.detach() for t in ctx.saved_tensors)
        slab = ctx.slab
        Bsz, T, ED = u.shape
        S = A.shape[1]
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()  # (B, T, ED)
        lam = torch.zeros_like(ckpt[0]) if gh_last is None else gh_last.clone().contiguous()  # (B, ED, S)
        g_u, g_delta = torch.empty_like(u), torch.empty_like(delta)  # (B, T, ED)
        g_B, g_C = torch.empty_like(Bm), torch.empty_like(C)  # (B, T, S)
        buf = u.new_empty(Bsz, min(slab, T), ED, S)  # (B, l, ED, S) scratch for dA
        hs = torch.empty_like(buf).numpy()  # (B, l, ED, S) scratch for the recomputed states
        arrs = [t.numpy() for t in (delta, u, A, Bm, C)]
        outs = [t.numpy() for t in (gy, lam, g_u, g_delta, g_B, g_C)]
        starts = range(0, T, slab)
        g_A = np.zeros((ED, S))  # float64 accumulator
        for k in range(len(starts) - 1, -1, -1):
            t0 = starts[k]
            dA = _dA(arrs[0], arrs[2], t0, min(T, t0 + slab), buf)
            _backward_slab(dA, *arrs, t0, ckpt[k].numpy(), hs, *outs, g_A, 0, Bsz)
        g_A_t = torch.from_numpy(g_A).to(A.dtype)  # (ED, S)
        return g_u, g_delta, g_A_t, g_B, g_C, lam, None


def supported(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernel applies: CPU tensors of one dtype, float32 or float64."""
    dt = tensors[0].dtype
    return dt in DTYPES and all(t.device.type == "cpu" and t.dtype == dt for t in tensors)
