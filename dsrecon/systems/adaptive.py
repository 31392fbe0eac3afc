"""The batched adaptive embedded Runge-Kutta engine (per-trajectory step-size control).

Glossary: B trajectories (active rows), T samples, N state dimension, S stages.

Called by :func:`dsrecon.systems.integrate` (which documents the behaviour). Per-row state
(time, step size, next sample index, counters) lives in NumPy; states and stages in the
backend of the initial conditions (NumPy or torch). Step-size control: I-controller with safety
0.9, factor limits [0.2, 10], no growth right after a rejection, Hairer's starting step
(Hairer, Norsett & Wanner 1993, II.4).
"""

from __future__ import annotations

import time

import numpy as np

from dsrecon.systems.result import Bookkeeping, IntegrationResult

__all__ = ["adaptive"]

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_EPS = np.finfo(np.float64).eps


def _initial_step(be, f, to_time, t0, y, fy, t_end, rtol, atol, order) -> np.ndarray:
    """Hairer's starting step (Solving ODEs I, II.4), batched -> numpy (B,)."""
    scale = atol + rtol * abs(y)
    d0 = be.numpy(be.rms(y / scale))
    d1 = be.numpy(be.rms(fy / scale))
    with np.errstate(divide="ignore", invalid="ignore"):
        h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    h0 = np.minimum(np.nan_to_num(h0, nan=1e-6), t_end - t0)
    y1 = y + be.asarray(h0)[:, None] * fy
    f1 = f(to_time(t0 + h0), y1)
    d2 = be.numpy(be.rms((f1 - fy) / scale)) / h0
    dm = np.maximum(d1, d2)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(dm <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / dm) ** (1.0 / (order + 1)))
    h1 = np.where(np.isfinite(h1), h1, h0)
    return np.minimum(np.minimum(100 * h0, h1), t_end - t0)


def adaptive(f, x, grid, sc, rtol, atol, limits, first_step, be) -> IntegrationResult:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _adaptive_loop(f, x, grid, sc, rtol, atol, limits, first_step, be)


def _adaptive_loop(f, x, grid, sc, rtol, atol, limits, first_step, be) -> IntegrationResult:
    """The batched embedded-RK loop: one step of every active row per iteration."""
    max_norm, max_steps, max_time = limits
    book = Bookkeeping(be, x, len(grid), sc.name)
    b, n = x.shape
    if len(grid) == 1:
        return book.result(grid)
    to_time = be.asarray if be.is_torch else (lambda a: a)
    sel_b = be.from_numpy if be.is_torch else (lambda m: m)
    n_grid, t_end = len(grid), grid[-1]
    grid_pad = np.append(grid, np.inf)
    h_min_scale = 16 * _EPS * max(abs(grid[0]), abs(t_end), t_end - grid[0])
    snap = 4 * _EPS * abs(t_end)
    idx = np.arange(b)
    t = np.full(b, grid[0])
    y = x
    fy = f(to_time(t), y)
    book.n_evals += 1
    if first_step is not None:
        h = np.full(b, min(float(first_step), t_end - grid[0]))
    else:
        h = _initial_step(be, f, to_time, t, y, fy, t_end, rtol, atol, sc.order)
        book.n_evals += 1
    nxt = np.ones(b, dtype=np.int64)
    steps = np.zeros(b, dtype=np.int64)
    rejected = np.zeros(b, dtype=np.int64)
    rejected_last = np.zeros(b, dtype=bool)
    saw_nonfinite = np.zeros(b, dtype=bool)
    K = be.empty((sc.n_buffer, b, n))
    coefs = [be.coef(a) for a in sc.A_rows]
    weights = be.coef(sc.B)
    c_col = sc.C[: sc.n_stages, None]
    start = time.perf_counter()
    drop = ~be.numpy(be.row_finite(fy))
    if drop.any():
        book.fail(idx[drop], "the vector field is not finite at the initial condition")
    while True:
        if drop.any():  # record and compact the active set
            book.n_acc[idx[drop]] = steps[drop] - rejected[drop]
            book.n_rej[idx[drop]] = rejected[drop]
            keep = ~drop
            idx, t, h, nxt, steps, rejected = idx[keep], t[keep], h[keep], nxt[keep], steps[keep], rejected[keep]
            rejected_last, saw_nonfinite = rejected_last[keep], saw_nonfinite[keep]
            kb = sel_b(keep)
            y, fy, K = y[kb], fy[kb], K[:, kb]
        if idx.size == 0:
            break
        h_eff = np.minimum(h, t_end - t)
        hb = be.asarray(h_eff[:, None])
        t_stage = t + c_col * h_eff  # (S, B) stage times
        K[0] = fy
        for s in range(1, sc.n_stages):
            K[s] = f(to_time(t_stage[s]), y + hb * be.combine(coefs[s], K))
        y_new = y + hb * be.combine(weights, K)
        t_new = t + h_eff
        t_new[t_end - t_new <= snap] = t_end
        f_new = f(to_time(t_new), y_new)
        K[sc.fsal_index] = f_new
        book.n_evals += sc.n_stages
        ay, ayn = abs(y), abs(y_new)
        scale = atol + rtol * be.where(ay > ayn, ay, ayn)
        # the error combines every stage, so a finite error implies finite stages and y_new
        err = sc.error_norm(be, K, h_eff, scale)
        accept = err <= 1.0
        factor = np.clip(_SAFETY * err ** sc.error_exponent, _MIN_FACTOR, _MAX_FACTOR)
        all_ok = accept.all()
        if not all_ok:
            finite = np.isfinite(err)
            factor[~finite] = _MIN_FACTOR
            saw_nonfinite |= ~finite
        if rejected_last.any():
            factor = np.where(accept & rejected_last, np.minimum(factor, 1.0), factor)
        # ---- samples inside accepted steps, from the continuous extension
        need = accept & (grid_pad[nxt] <= t_new)
        bad_dense = None
        if need.any():
            bad_dense = _fill_samples(book, be, sc, f, to_time, sel_b, need, K, y, y_new, t, t_new, h_eff, idx, nxt,
                                      grid, grid_pad)
        # ---- advance accepted rows
        if all_ok:
            y, fy, t = y_new, f_new, t_new
        else:
            ab = sel_b(accept)[:, None]
            y = be.where(ab, y_new, y)
            fy = be.where(ab, f_new, fy)
            t = np.where(accept, t_new, t)
            rejected += ~accept
        h = h_eff * factor
        steps += 1
        rejected_last = ~accept
        # ---- termination and failures
        drop = nxt >= n_grid
        if bad_dense is not None and bad_dense.any():
            book.fail(idx[bad_dense], lambda r: f"non-finite dense-output stage near t={t[idx == r][0]:.6g}")
            drop |= bad_dense
        blow = accept & ~drop & (be.numpy(be.row_absmax(y_new)) > max_norm)
        if blow.any():
            tn = dict(zip(idx.tolist(), t_new.tolist()))
            book.fail(idx[blow], lambda r: f"blow-up: |x| exceeded max_norm={max_norm:.3g} at t={tn[r]:.6g}")
            drop |= blow
        if not all_ok:
            underflow = ~accept & (h < h_min_scale + 16 * _EPS * np.abs(t))
            if underflow.any():
                tt = dict(zip(idx.tolist(), t.tolist()))
                book.fail(idx[underflow & saw_nonfinite],
                          lambda r: f"non-finite values near t={tt[r]:.6g} (blow-up or singularity): step size underflow")
                book.fail(idx[underflow & ~saw_nonfinite],
                          lambda r: f"step size underflow at t={tt[r]:.6g} (stiff or singular system); try method='rk4' with small substeps")
                drop |= underflow
        too_many = ~drop & (steps >= max_steps)
        if too_many.any():
            book.fail(idx[too_many], f"max_steps={max_steps} steps exceeded (stiff system?); raise max_steps or loosen rtol")
            drop |= too_many
        if max_time is not None and time.perf_counter() - start > max_time:
            book.fail(idx[~drop], f"wall-time limit max_time={max_time:g} s exceeded")
            drop[:] = True
    return book.result(grid, rtol=rtol, atol=atol)


def _fill_samples(book, be, sc, f, to_time, sel_b, need, K, y, y_new, t, t_new, h_eff, idx, nxt, grid, grid_pad):
    """Write every grid sample inside the accepted steps of rows ``need`` (dense output).

    Returns a (B,) mask of rows whose interpolated samples are not finite (they fail).
    """
    if need.all():
        rows = np.arange(need.size)
        interp = sc.dense(be, f, K, y, y_new, t, h_eff, to_time)
    else:
        rows = np.nonzero(need)[0]
        rb = sel_b(rows)
        interp = sc.dense(be, f, K[:, rb], y[rb], y_new[rb], t[rows], h_eff[rows], to_time)
    book.n_evals += sc.n_buffer - sc.n_stages - 1
    t_sub, h_sub, tn_sub = t[rows], h_eff[rows], t_new[rows]
    pos = np.arange(rows.size)  # rows (of the subset) that still have samples in this step
    theta = np.ones(rows.size)
    bad = np.zeros(need.size, dtype=bool)
    while pos.size:
        r = rows[pos]
        theta[pos] = (grid[nxt[r]] - t_sub[pos]) / h_sub[pos]
        yi = interp(theta)
        yi = yi if pos.size == rows.size else yi[sel_b(pos)]
        book.write(idx[r], nxt[r], yi)
        bad[r] |= ~be.numpy(be.row_finite(yi))
        nxt[r] += 1
        pos = pos[grid_pad[nxt[r]] <= tn_sub[pos]]
    return bad
