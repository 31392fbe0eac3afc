"""Compiled Lyapunov-spectrum kernel for piecewise-linear models in shallow canonical form.

Glossary: K ensemble members, B initial conditions, M latent dim, L hidden units, n_blocks
convergence blocks.

Every PLRNN-family model is ``F(z) = a*z + W1 act(W2 z + h2) + h1`` (or the clipped form,
:class:`dsrecon.models.base.PiecewiseLinearModel`), with Jacobian
``J = diag(a) + W1 diag(d) W2`` (d the slopes of the hidden units at z). The generic torch path
of :func:`dsrecon.analysis.lyapunov_spectrum` pays Python/torch overhead on every one of the
10^5 steps; this numba kernel runs the whole Benettin loop (state, Jacobian over the active hidden
units only, tangent frame ``J Q``, modified Gram-Schmidt QR with re-orthogonalisation) in compiled
code. Ensembles go through the same call: the members' shallow forms are stacked (K, ...) and the
kernel runs the K x B (member, initial condition) trajectories in parallel, one per thread; a single
model is the case K = 1, so a member's numbers do not depend on whether it is analysed alone or
in an ensemble. It is the fast path; the torch loop is its reference (tests check that both give
the same exponents).
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
        """K members x B initial conditions, one (member, IC) pair per thread.

        Z (K, B, M); a (K, M), W1 (K, M, L), W2 (K, L, M), h1 (K, M), h2 (K, L), relu (K, L) ->
        (sums (K, B, n_blocks, M), z_end (K, B, M), first bad step (K, B), -1 when finite)."""
        K, B, M = Z.shape
        L = W1.shape[2]
        sums = np.zeros((K, B, n_blocks, M))
        zend = np.empty((K, B, M))
        bad = np.zeros((K, B), dtype=np.int64) - 1
        for kb in prange(K * B):
            k, b = kb // B, kb % B
            ak, W1k, W2k, h1k, h2k, rk = a[k], W1[k], W2[k], h1[k], h2[k], relu[k]
            z = Z[k, b].copy()
            znew = np.empty(M)
            Q = np.eye(M)
            Qnew = np.empty((M, M))
            u = np.empty(L)
            d = np.empty(L)
            phi = np.empty(L)
            V = np.empty((M, M))  # the Jacobian
            logs = np.empty(M)
            for t in range(n_transient):
                _step_tangent(z, Q, ak, W1k, W2k, h1k, h2k, rk, clipped, False, u, d, phi, V, znew, Qnew)
                z[:] = znew
            for t in range(n_steps):
                _step_tangent(z, Q, ak, W1k, W2k, h1k, h2k, rk, clipped, True, u, d, phi, V, znew, Qnew)
                z[:] = znew
                Q[:, :] = Qnew
                if (t + 1) % reorth == 0 or t == n_steps - 1:
                    finite = True
                    for i in range(M):
                        if not np.isfinite(z[i]):
                            finite = False
                    if not finite:
                        bad[k, b] = t
                        break
                    _mgs(Q, logs)
                    blk = t // block_len
                    for i in range(M):
                        sums[k, b, blk, i] += logs[i]
            zend[k, b] = z
        return sums, zend, bad


FORM_KEYS = ("a", "W1", "W2", "h1", "h2", "relu_mask")


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
    """Run the kernel for K stacked members (the same code serves one member, K = 1).

    z0 (K, B, M) float64; form: a (K, M), W1 (K, M, L), W2 (K, L, M), h1 (K, M), h2 (K, L),
    relu_mask (K, L) -> (block log sums (K, B, n_blocks, M), z_end (K, B, M), first bad step per
    trajectory (K, B) int, -1 when it stayed finite)."""
    f = {k: np.ascontiguousarray(form[k], dtype=np.bool_ if k == "relu_mask" else np.float64) for k in FORM_KEYS}
    return _kernel(
        np.ascontiguousarray(z0, dtype=np.float64),
        f["a"], f["W1"], f["W2"], f["h1"], f["h2"], f["relu_mask"], bool(clipped),
        int(n_transient), int(n_steps), int(reorth_every), int(block_len), int(n_blocks),
    )


def shallow_form_numpy(model: object) -> dict[str, np.ndarray] | None:
    """The model's shallow form as float64 NumPy arrays {a, W1, W2, h1, h2, relu_mask}, or None
    when the model is not piecewise-linear or has no ``shallow_form``."""
    if not isinstance(model, PiecewiseLinearModel):
        return None
    try:
        with torch.no_grad():
            form = {k: v.detach().cpu().numpy() for k, v in model.shallow_form().items()}
    except NotImplementedError:
        return None
    form.setdefault("relu_mask", np.ones(form["W2"].shape[0], dtype=bool))
    return form


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
    form = shallow_form_numpy(model) if why is None else None
    if why is None and form is None:
        why = f"{type(model).__name__} has no shallow_form()"
    if why is not None:
        if required:
            raise ConfigError(f"method='numba' cannot be used: {why}; use method='torch'")
        return None
    stacked = {k: v[None] for k, v in form.items()}
    sums, _, bad = pwl_block_sums(x[None], stacked, bool(getattr(model, "clipped", False)), n_transient=transient,
                                  n_steps=n_steps, reorth_every=reorth_every, block_len=block_len, n_blocks=n_blocks)
    check_finite(sums, bad, f"the {type(model).__name__}")
    return sums[0]


def check_finite(sums: np.ndarray, bad: np.ndarray, what: str) -> None:
    """IntegrationError when some trajectory (bad >= 0) or block sum became non-finite."""
    if (bad >= 0).any() or not np.isfinite(sums).all():
        raise IntegrationError(
            f"the trajectory of {what} became non-finite; the spectrum is undefined there -- "
            "choose latent initial states in the basin of a bounded attractor (x0=...)"
        )


def pwl_ensemble_sums(
    models: list,
    xs: list[np.ndarray],
    *,
    transient: int,
    n_steps: int,
    reorth_every: int,
    block_len: int,
    n_blocks: int,
) -> list[np.ndarray] | None:
    """Block log sums of K piecewise-linear members in compiled calls: members that share
    (M, L, clipped) are stacked and run by one kernel call over K x B trajectories.

    models: K models; xs: K initial-state arrays (B, M) (one B for all) -> K arrays
    (B, n_blocks, M), or None when some member cannot use the kernel (then analyse them one by
    one). Each member's numbers are those of :func:`pwl_model_sums` (same kernel, K = 1 there).
    """
    if not available():
        return None
    forms = [shallow_form_numpy(m) for m in models]
    if any(f is None for f in forms) or len({x.shape[0] for x in xs}) != 1:
        return None
    groups: dict[tuple, list[int]] = {}
    for i, (m, f) in enumerate(zip(models, forms)):
        groups.setdefault((f["W1"].shape, bool(getattr(m, "clipped", False))), []).append(i)
    out: list[np.ndarray | None] = [None] * len(models)
    for (_, clipped), idx in groups.items():
        stacked = {k: np.stack([forms[i][k] for i in idx]) for k in FORM_KEYS}
        z0 = np.stack([xs[i] for i in idx])
        sums, _, bad = pwl_block_sums(z0, stacked, clipped, n_transient=transient, n_steps=n_steps,
                                      reorth_every=reorth_every, block_len=block_len, n_blocks=n_blocks)
        for j, i in enumerate(idx):
            check_finite(sums[j], bad[j], f"ensemble member {i} ({type(models[i]).__name__})")
            out[i] = sums[j]
    return out  # type: ignore[return-value]
