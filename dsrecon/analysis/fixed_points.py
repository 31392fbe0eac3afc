"""Fixed points and k-cycles of any model or benchmark system: one entry point, three methods.

Glossary: B seeds, k cycle order, M latent dim (models), N state dim (systems), S pattern bits.

:func:`fixed_points` dispatches on what it is given:

* piecewise-linear models (PLRNN family, AL-RNN): per order k, **exhaustive** enumeration of all
  (2^S)^k region itineraries when that is at most ``exhaustive_limit`` (exact; this is how the
  AL-RNN's 2^P structure is used directly), else **SCYFI** (:mod:`.scyfi`);
* smooth models (any other DynamicalModel) and discrete systems: **Newton** on
  ``G(z) = F^k(z) - z`` with ``dG = J_{k-1} ... J_0 - I``;
* flows: Newton on the vector field, ``f(x) = 0`` (equilibria; order 1 only).

The Newton solver is a batched Levenberg-Marquardt iteration in torch float64 (damping adapted per
seed; Nocedal & Wright 2006, ch. 10), run from ``n_seeds`` states sampled along trajectories (and
a few random states around them); converged solutions are reduced to their minimal period,
de-duplicated and classified (:mod:`.cycles`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from dsrecon.analysis._targets import initial_states, resolve
from dsrecon.analysis.cycles import (
    DEFAULT_TOL,
    Cycle,
    CycleSet,
    canonical_rotation,
    classify,
    minimal_period,
    sort_cycles,
    sort_eigenvalues,
)
from dsrecon.analysis.enumeration import enumerate_cycles
from dsrecon.analysis.lyapunov_ode import FlowTangent, autograd_jacobian, default_flow_dt
from dsrecon.analysis.pwl_view import float64_copy, make_view
from dsrecon.analysis.scyfi import RegionPool, scyfi
from dsrecon.errors import ConfigError
from dsrecon.models.base import DynamicalModel, PiecewiseLinearModel

METHODS = ("auto", "scyfi", "exhaustive", "newton")


def fixed_points(
    model_or_system: Any,
    max_order: int = 1,
    *,
    method: str = "auto",
    n_seeds: int = 256,
    seed: int | None = None,
    x0: Any = None,
    exhaustive_limit: int = 2**14,
    n_chains: int = 64,
    outer: int | None = None,
    inner: int | None = None,
    max_iter: int = 100,
    tol: float = DEFAULT_TOL,
    jacobian: str = "analytic",
    device: str | torch.device | None = None,
) -> list[Cycle]:
    """All fixed points and cycles up to order ``max_order`` that the method finds.

    Parameters
    ----------
    model_or_system : DynamicalModel, System or str
        A model (latent map), a system from :func:`dsrecon.systems.get`, or a system name.
    max_order : int
        Largest cycle order k searched (flows: must be 1).
    method : {"auto", "scyfi", "exhaustive", "newton"}
        See the module docstring. "scyfi"/"exhaustive" need a piecewise-linear model.
    n_seeds : int
        Newton: number of seeds (trajectory states).
    seed : int, optional
        Seeds all random choices.
    x0 : array (B, D), optional
        Starting states of the seeding trajectories (latent states for models).
    exhaustive_limit : int
        "auto": enumerate an order exhaustively when (2^S)^k <= this.
    n_chains, outer, inner : int
        SCYFI parameters (:func:`dsrecon.analysis.scyfi.scyfi`).
    max_iter : int
        Newton iterations.
    tol : float
        Relative tolerance for convergence (Newton) and for identifying points.
    jacobian : {"analytic", "autograd"}
        Newton's Jacobians.
    device : optional
        Torch device for Newton (PWL searches run in NumPy on CPU).

    Returns
    -------
    list of Cycle sorted by (order, stability kind, saddle index, first point).
    """
    kind, obj = resolve(model_or_system)
    if not isinstance(max_order, (int, np.integer)) or isinstance(max_order, bool) or max_order < 1:
        raise ConfigError(f"max_order must be an integer >= 1, got {max_order!r}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    if kind == "flow" and max_order > 1:
        raise ConfigError(
            "periodic orbits of flows are not searched (only equilibria); use max_order=1, or analyse a "
            "model of the flow's sampled map"
        )
    if int(n_seeds) < 1 or int(max_iter) < 1 or not tol > 0:
        raise ConfigError(f"n_seeds and max_iter must be >= 1 and tol > 0, got {n_seeds}, {max_iter}, {tol}")
    if jacobian not in ("analytic", "autograd"):
        raise ConfigError(f"jacobian must be 'analytic' or 'autograd', got {jacobian!r}")
    pwl = kind == "model" and isinstance(obj, PiecewiseLinearModel)
    if method in ("scyfi", "exhaustive") and not pwl:
        raise ConfigError(
            f"method={method!r} needs a piecewise-linear model (PLRNN family / AL-RNN); "
            f"use method='newton' (or 'auto') for {type(obj).__name__}"
        )
    rng = np.random.default_rng(seed)
    if pwl and method != "newton":
        return _pwl_cycles(obj, max_order, method, rng, x0=x0, exhaustive_limit=exhaustive_limit,
                           n_chains=n_chains, outer=outer, inner=inner, tol=tol, seed=seed)
    return _newton_cycles(kind, obj, max_order, rng, x0=x0, n_seeds=int(n_seeds), max_iter=int(max_iter),
                          tol=tol, jacobian=jacobian, device=device)


# ------------------------------------------------------------------ PWL models
def _pwl_cycles(model: PiecewiseLinearModel, max_order: int, method: str, rng: np.random.Generator, *,
                x0: Any, exhaustive_limit: int, n_chains: int, outer: int | None, inner: int | None,
                tol: float, seed: int | None) -> list[Cycle]:
    view = make_view(model)
    S = view.n_bits
    plan = []
    for k in range(1, max_order + 1):
        exact = S * k < 62 and 2 ** (S * k) <= exhaustive_limit
        if method == "exhaustive" and not exact and not (S * k < 62 and 2 ** (S * k) <= 2**24):
            raise ConfigError(
                f"exhaustive enumeration of order {k} needs 2^{S * k} itineraries (at most 2^24 allowed); "
                "use method='scyfi' or a smaller max_order"
            )
        plan.append("exhaustive" if method == "exhaustive" or (method == "auto" and exact) else "scyfi")
    found = CycleSet(tol)
    pool = None
    for k, how in zip(range(1, max_order + 1), plan):
        if how == "exhaustive":
            enumerate_cycles(view, k, found=found, tol=tol, max_candidates=2**24)
        else:
            if pool is None:
                z0 = None if x0 is None else initial_states("model", model, x0, 1, rng)
                pool = RegionPool.from_model(view, rng, z0=z0)
            scyfi(view, k, found=found, pool=pool, n_chains=n_chains, outer=outer, inner=inner,
                  seed=None if seed is None else seed + k, tol=tol)
    return sort_cycles([c for c in found.all_items() if c.order <= max_order])


# ---------------------------------------------------------------------- Newton
def levenberg_marquardt(
    fun: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    z0: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Levenberg-Marquardt for G(z) = 0: z0 (B, D) -> (z (B, D), converged (B,) bool).

    ``fun(z) -> (G (B', D), dG (B', D, D))`` on any subset of rows. Each seed has its own damping
    mu: a step that lowers ||G|| is accepted and mu /= 3, otherwise mu *= 4. Converged:
    ||G||_inf <= tol (1 + ||z||_inf). Only rows still iterating are evaluated; a row stops when it
    converges or its damping exceeds 1e10 (stuck).
    """
    z = z0.clone()
    G, J = fun(z)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)

    def norms(g: torch.Tensor) -> torch.Tensor:
        n = g.abs().amax(dim=1)
        return torch.where(torch.isfinite(n), n, torch.full_like(n, float("inf")))

    norm = norms(G)
    mu = torch.full_like(norm, 1e-3)
    conv = norm <= tol * (1.0 + z.abs().amax(dim=1))
    for _ in range(max_iter):
        act = torch.nonzero(~conv & (mu < 1e10)).flatten()
        if act.numel() == 0:
            break
        Ja, Ga, za, ma = J[act], G[act], z[act], mu[act]
        JT = Ja.transpose(1, 2)
        A = JT @ Ja
        diag = torch.diagonal(A, dim1=1, dim2=2).clamp_min(1e-12)
        A = A + ma[:, None, None] * torch.diag_embed(diag) + 1e-14 * eye
        g = (JT @ Ga[..., None])[..., 0]
        ok = torch.isfinite(A).all(dim=(1, 2)) & torch.isfinite(g).all(dim=1)
        A = torch.where(ok[:, None, None], A, eye.expand_as(A))
        g = torch.where(ok[:, None], g, torch.zeros_like(g))
        z_new = za - torch.linalg.solve(A, g)
        G_new, J_new = fun(z_new)
        n_new = norms(G_new)
        better = (n_new < norm[act]) & ok
        idx = act[better]
        z[idx], G[idx], J[idx], norm[idx] = z_new[better], G_new[better], J_new[better], n_new[better]
        mu[act] = torch.where(better, ma / 3.0, ma * 4.0).clamp_min(1e-12)
        conv[act] = norm[act] <= tol * (1.0 + z[act].abs().amax(dim=1))
    return z, conv


def _orbit_and_jac(step: Callable, jac: Callable, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k steps: points (B, k + 1, D) and the k-step Jacobian product (B, D, D)."""
    pts = [z]
    P = None
    for _ in range(k):
        J = jac(z)
        P = J if P is None else J @ P
        z = step(z)
        pts.append(z)
    return torch.stack(pts, dim=1), P


def _newton_cycles(kind: str, obj: Any, max_order: int, rng: np.random.Generator, *, x0: Any, n_seeds: int,
                   max_iter: int, tol: float, jacobian: str, device: Any) -> list[Cycle]:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if kind == "model":
        m64 = float64_copy(obj, dev)
        step = m64.step
        jac = m64.jacobian if jacobian == "analytic" else (lambda z: DynamicalModel.jacobian(m64, z))
    else:
        step = obj.rhs if kind == "flow" else obj.step
        jac = obj.jacobian if jacobian == "analytic" else (lambda z: autograd_jacobian(step, z))

    def as_t(a: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a, dtype=torch.float64,
                               device=dev)

    def f_t(z: torch.Tensor) -> torch.Tensor:
        return as_t(step(z))

    def j_t(z: torch.Tensor) -> torch.Tensor:
        return as_t(jac(z))

    seeds = _seeds(kind, obj, f_t, x0, n_seeds, rng, dev)
    found = CycleSet(tol)
    for k in range(1, max_order + 1):
        if kind == "flow":
            def fun(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return f_t(z), j_t(z)
        else:
            def fun(z: torch.Tensor, k: int = k) -> tuple[torch.Tensor, torch.Tensor]:
                with torch.no_grad():
                    pts, P = _orbit_and_jac(f_t, j_t, z, k)
                eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
                return pts[:, -1] - z, P - eye
        with torch.no_grad():
            z, conv = levenberg_marquardt(fun, seeds, max_iter=max_iter, tol=tol * 1e-4)
        for zi in z[conv]:
            _add_newton(kind, obj, found, zi[None], k, f_t, j_t, tol)
    return sort_cycles([c for c in found.all_items() if c.order <= max_order])


def _seeds(kind: str, obj: Any, f_t: Callable, x0: Any, n: int, rng: np.random.Generator,
           dev: torch.device) -> torch.Tensor:
    """n seeds (n, D): states along 8 trajectories (from their start, so transients near unstable
    sets count) plus 10% random states around them."""
    n_traj, n_points = 8, max(64, n)
    x = initial_states(kind, obj, x0, n_traj, rng)
    traj: list[np.ndarray] = []
    with torch.no_grad():
        if kind == "flow":
            tangent = FlowTangent(obj, default_flow_dt(obj, x))
            xs = x
            for _ in range(n_points // n_traj + 1):
                xs = tangent.advance_state(xs, 5)
                traj.append(np.asarray(xs))
        else:
            z = torch.as_tensor(x, dtype=torch.float64, device=dev)
            for _ in range(n_points // n_traj + 1):
                traj.append(z.cpu().numpy())
                z = f_t(z)
    pts = np.concatenate(traj, axis=0)
    pts = pts[np.isfinite(pts).all(axis=1) & (np.abs(pts).max(axis=1) < 1e8)]
    if pts.shape[0] == 0:  # every trajectory diverged: fall back to the starting states
        pts = x
    n_rand = max(1, n // 10)
    pick = pts[rng.integers(0, pts.shape[0], size=n - n_rand)]
    spread = np.std(pts, axis=0) + 1e-3
    rand = pts.mean(axis=0) + spread * rng.standard_normal((n_rand, pts.shape[1]))
    return torch.as_tensor(np.concatenate([pick, rand], axis=0), dtype=torch.float64, device=dev)


def _add_newton(kind: str, obj: Any, found: CycleSet, z: torch.Tensor, k: int, f_t: Callable, j_t: Callable,
                tol: float) -> None:
    if kind == "flow":
        pts = z.cpu().numpy()
        if found.contains(pts):
            return
        J = j_t(z)[0].cpu().numpy()
        ev = sort_eigenvalues(np.linalg.eigvals(J), continuous=True)
        stable, kd, idx = classify(ev, continuous=True)
        resid = float(f_t(z).abs().max())
        found.add(pts, Cycle(order=1, points=pts, eigenvalues=ev, stable=stable, kind=kd, saddle_index=idx,
                             regions=None, time="continuous", residual=resid))
        return
    with torch.no_grad():
        orbit, _ = _orbit_and_jac(f_t, j_t, z, k)
    pts = orbit[0, :k].cpu().numpy()
    p = minimal_period(pts, tol)
    pts = canonical_rotation(pts[:p])
    if found.contains(pts):
        return
    zt = torch.as_tensor(pts[:1], dtype=torch.float64, device=z.device)
    with torch.no_grad():
        orbit, P = _orbit_and_jac(f_t, j_t, zt, p)
    ev = sort_eigenvalues(np.linalg.eigvals(P[0].cpu().numpy()))
    stable, kd, idx = classify(ev)
    o = orbit[0].cpu().numpy()
    resid = float(np.abs(o[1:] - np.roll(o[:-1], -1, axis=0)).max())
    regions = None
    if kind == "model" and isinstance(obj, PiecewiseLinearModel):
        with torch.no_grad():
            m64 = float64_copy(obj, "cpu")
            regions = m64.region_code(torch.as_tensor(pts)).numpy().astype(bool)
    found.add(pts, Cycle(order=p, points=pts, eigenvalues=ev, stable=stable, kind=kd, saddle_index=idx,
                         regions=regions, time="discrete", residual=resid))
