"""Compiled Lyapunov-spectrum kernel for piecewise-linear models in shallow canonical form.

Glossary: B initial conditions, M latent dim, L hidden units, n_blocks convergence blocks.

Every PLRNN-family model is ``F(z) = a*z + W1 act(W2 z + h2) + h1`` (or the clipped form,
:class:`dsrecon.models.base.PiecewiseLinearModel`), with Jacobian
``J = diag(a) + W1 diag(d) W2`` (d the slopes of the hidden units at z). The generic torch path
of :func:`dsrecon.analysis.lyapunov_spectrum` pays Python/torch overhead on every one of the
10^5 steps; this numba kernel runs the whole Benettin loop (state, Jacobian over the active hidden
units only, tangent frame ``J Q``, modified Gram-Schmidt QR with re-orthogonalisation) in compiled code, one initial
condition per thread. It is the fast path; the torch loop is its reference (tests check that
both give the same exponents).
"""

from __future__ import annotations

import numpy as np
import torch

from dsrecon.errors import ConfigError, IntegrationError
from dsrecon.models.base import PiecewiseLinearModel

try:  # numba is a declared dependency; keep the import failure readable
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None


def available() -> bool:
    return numba is not None


if numba is not None:

    @njit(cache=True, fastmath=False)
    def _step_tangent(z, Q, a, W1, W2, h1, h2, relu, clipped, do_tangent, u, d, phi, V, znew, Qnew):
        M, L = W1.shape
        for l in range(L):
            s = 0.0
            for j in range(M):
                s += W2[l, j] * z[j]
            u[l] = s
        for l in range(L):
            v = u[l] + h2[l]
            if clipped:
                on = 1.0 if v > 0.0 else 0.0
                off = 1.0 if u[l] > 0.0 else 0.0
                phi[l] = on * v - off * u[l]
                d[l] = on - off
            elif relu[l]:
                if v > 0.0:
                    phi[l] = v
                    d[l] = 1.0
                else:
                    phi[l] = 0.0
                    d[l] = 0.0
            else:
                phi[l] = v
                d[l] = 1.0
        for i in range(M):
            s = a[i] * z[i] + h1[i]
            for l in range(L):
                s += W1[i, l] * phi[l]
            znew[i] = s
        if do_tangent:
            # J = diag(a) + W1 diag(d) W2 (M, M), skipping inactive hidden units; Qnew = J Q
            for i in range(M):
                for j in range(M):
                    V[i, j] = 0.0
                V[i, i] = a[i]
            for l in range(L):
                dl = d[l]
                if dl == 0.0:
                    continue
                for i in range(M):
                    w = W1[i, l] * dl
                    for j in range(M):
                        V[i, j] += w * W2[l, j]
            for i in range(M):
                for c in range(M):
                    s = 0.0
                    for j in range(M):
                        s += V[i, j] * Q[j, c]
                    Qnew[i, c] = s

    @njit(cache=True)
    def _mgs(Q, logs):
        """In-place modified Gram-Schmidt (twice) of the columns of Q; logs[c] = log R_cc."""
        M = Q.shape[0]
        for c in range(M):
            for _ in range(2):
                for p in range(c):
                    s = 0.0
                    for i in range(M):
                        s += Q[i, p] * Q[i, c]
                    for i in range(M):
                        Q[i, c] -= s * Q[i, p]
            nrm = 0.0
            for i in range(M):
                nrm += Q[i, c] * Q[i, c]
            nrm = np.sqrt(nrm)
            if nrm < 1e-300:
                nrm = 1e-300
            logs[c] = np.log(nrm)
            for i in range(M):
                Q[i, c] /= nrm

    @njit(cache=True, parallel=True)
    def _kernel(Z, a, W1, W2, h1, h2, relu, clipped, n_transient, n_steps, reorth, block_len, n_blocks):
        B, M = Z.shape
        L = W1.shape[1]
        sums = np.zeros((B, n_blocks, M))
        zend = np.empty((B, M))
        bad = np.zeros(B, dtype=np.int64) - 1
        for b in prange(B):
            z = Z[b].copy()
            znew = np.empty(M)
            Q = np.eye(M)
            Qnew = np.empty((M, M))
            u = np.empty(L)
            d = np.empty(L)
            phi = np.empty(L)
            V = np.empty((M, M))  # the Jacobian
            logs = np.empty(M)
            for t in range(n_transient):
                _step_tangent(z, Q, a, W1, W2, h1, h2, relu, clipped, False, u, d, phi, V, znew, Qnew)
                z[:] = znew
            for t in range(n_steps):
                _step_tangent(z, Q, a, W1, W2, h1, h2, relu, clipped, True, u, d, phi, V, znew, Qnew)
                z[:] = znew
                Q[:, :] = Qnew
                if (t + 1) % reorth == 0 or t == n_steps - 1:
                    finite = True
                    for i in range(M):
                        if not np.isfinite(z[i]):
                            finite = False
                    if not finite:
                        bad[b] = t
                        break
                    _mgs(Q, logs)
                    blk = t // block_len
                    for i in range(M):
                        sums[b, blk, i] += logs[i]
            zend[b] = z
        return sums, zend, bad


def pwl_block_sums(
    z0: np.ndarray,
    form: dict[str, np.ndarray],
    clipped: bool,
    *,
    n_transient: int,
    n_steps: int,
    reorth_every: int,
    block_len: int,
    n_blocks: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel: z0 (B, M) float64 -> (block log sums (B, n_blocks, M), z_end (B, M),
    first bad step per IC (B,) int, -1 when the trajectory stayed finite)."""
    f = {k: np.ascontiguousarray(v, dtype=np.bool_ if k == "relu_mask" else np.float64) for k, v in form.items()}
    return _kernel(
        np.ascontiguousarray(z0, dtype=np.float64),
        f["a"], f["W1"], f["W2"], f["h1"], f["h2"], f["relu_mask"], bool(clipped),
        int(n_transient), int(n_steps), int(reorth_every), int(block_len), int(n_blocks),
    )


def pwl_model_sums(
    model: object,
    x: np.ndarray,
    *,
    transient: int,
    n_steps: int,
    reorth_every: int,
    block_len: int,
    n_blocks: int,
    usable: bool,
    required: bool,
) -> np.ndarray | None:
    """Block log sums (B, n_blocks, M) of a PWL model by the kernel, or None when the kernel does
    not apply (not PWL, no ``shallow_form``, no numba, or ``usable`` False) and ``required`` is
    False. ``required`` (method="numba") turns "does not apply" into a ConfigError."""
    why = None
    if not isinstance(model, PiecewiseLinearModel):
        why = f"{type(model).__name__} is not piecewise-linear"
    elif not usable:
        why = "it needs jacobian='analytic' and a CPU device"
    elif not available():
        why = "numba is not installed"
    form = None
    if why is None:
        try:
            with torch.no_grad():
                form = {k: v.detach().cpu().numpy() for k, v in model.shallow_form().items()}
        except NotImplementedError:
            why = f"{type(model).__name__} has no shallow_form()"
    if why is not None:
        if required:
            raise ConfigError(f"method='numba' cannot be used: {why}; use method='torch'")
        return None
    form.setdefault("relu_mask", np.ones(form["W2"].shape[0], dtype=bool))
    sums, _, bad = pwl_block_sums(x, form, bool(getattr(model, "clipped", False)), n_transient=transient,
                                  n_steps=n_steps, reorth_every=reorth_every, block_len=block_len, n_blocks=n_blocks)
    if (bad >= 0).any() or not np.isfinite(sums).all():
        raise IntegrationError(
            f"the trajectory of the {type(model).__name__} became non-finite; the spectrum is undefined there -- "
            "choose latent initial states in the basin of a bounded attractor (x0=...)"
        )
    return sums
