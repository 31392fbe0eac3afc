"""Lyapunov spectra of models and benchmark systems by the QR (Benettin) method, in float64.

Glossary: B initial conditions, K ensemble members, M latent dim (models), N state dim
(systems), n_blocks convergence blocks.

A tangent frame Q (B, D, D) is pushed along the trajectory -- ``Q <- J(z_t) Q`` for maps (models
and discrete systems), the variational equations for flows (:mod:`.lyapunov_ode`) -- and
re-orthonormalised by a QR decomposition every ``reorth_every`` steps; the exponents are the
time averages of ``log |R_ii|`` (Benettin, Galgani, Giorgilli & Strelcyn 1980, Meccanica 15:9;
Shimada & Nagashima 1979, Prog Theor Phys 61:1605). The transient uses the map / flow alone.

Paths (``method``):

* models: ``"torch"`` -- ``model.step`` / ``model.jacobian`` (analytic where the model has one,
  ``jacobian="autograd"`` forces ``torch.func``) on a float64 copy, batched over initial conditions,
  on ``device``; ``"numba"`` -- the compiled kernel of :mod:`.lyapunov_pwl` for piecewise-linear
  models (shallow canonical form, CPU); ``"auto"`` picks numba when it applies.
* flows: ``"rk4"`` (default) or ``"dop853"`` (:mod:`.lyapunov_ode`).
* discrete systems: NumPy (CPU) or torch (``device``).

Ensembles: a list of K models gives a list of K results, each what the member gives on its own,
computed in one pass where the members allow it (:mod:`.lyapunov_ensemble`: one compiled call for
piecewise-linear members, ``torch.func.vmap`` over stacked parameters for members of one
architecture); otherwise member by member.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dsrecon.analysis._targets import initial_states, resolve, state_dim
from dsrecon.analysis.lyapunov_ode import FlowTangent, autograd_jacobian, default_flow_dt
from dsrecon.analysis.lyapunov_qr import _benettin, _blocks, _qr_logs  # noqa: F401 (re-exported)
from dsrecon.analysis.pwl_view import float64_copy
from dsrecon.errors import ConfigError
from dsrecon.models.base import DynamicalModel

MAP_METHODS = ("auto", "torch", "numba")
FLOW_METHODS = ("auto", "rk4", "dop853")


@dataclass
class LyapunovResult:
    """A Lyapunov spectrum estimate.

    Attributes
    ----------
    exponents : ndarray (D,)
        Mean over initial conditions, sorted descending; per time unit when ``dt`` is known,
        else per step.
    per_step : ndarray (D,)
        The same per step (= exponents * dt).
    all : ndarray (B, D)
        Per initial condition (units of ``exponents``).
    convergence : ndarray (D,)
        Spread (max - min) of the running estimate over the last half of the blocks, worst
        initial condition (units of ``exponents``): a practical error bar.
    kaplan_yorke : float
        Kaplan-Yorke (Lyapunov) dimension of ``exponents``.
    dt : float or None
        Time per step (None: unknown, exponents are per step).
    n_steps, transient, reorth_every, warmup : int
        Averaged steps, discarded map-only steps, QR interval, discarded tangent steps.
    method : str
        The path that ran: "numba", "torch", "numpy", "rk4" or "dop853".
    """

    exponents: np.ndarray
    per_step: np.ndarray
    all: np.ndarray
    convergence: np.ndarray
    kaplan_yorke: float
    dt: float | None
    n_steps: int
    transient: int
    reorth_every: int
    method: str
    warmup: int = 0

    @property
    def max_exponent(self) -> float:
        return float(self.exponents[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "exponents": self.exponents.tolist(),
            "per_step": self.per_step.tolist(),
            "all": self.all.tolist(),
            "convergence": self.convergence.tolist(),
            "kaplan_yorke": float(self.kaplan_yorke),
            "dt": self.dt,
            "units": "per time unit" if self.dt is not None else "per step",
            "n_steps": int(self.n_steps),
            "transient": int(self.transient),
            "reorth_every": int(self.reorth_every),
            "warmup": int(self.warmup),
            "n_initial_conditions": int(self.all.shape[0]),
            "method": self.method,
        }


def kaplan_yorke_dimension(exponents: Sequence[float]) -> float:
    """D_KY = j + (l_1 + ... + l_j) / |l_{j+1}|, j the largest index with a non-negative partial
    sum (Kaplan & Yorke 1979); 0 when l_1 < 0, D when every partial sum is >= 0."""
    lam = np.sort(np.asarray(exponents, dtype=np.float64))[::-1]
    csum = np.cumsum(lam)
    nonneg = np.flatnonzero(csum >= 0)
    if nonneg.size == 0:
        return 0.0
    j = int(nonneg[-1]) + 1
    if j >= lam.size:
        return float(lam.size)
    return float(j + csum[j - 1] / abs(lam[j]))


@contextmanager
def small_matrix_threads(device: Any, dim: int):
    """Run torch single-threaded on CPU for tiny matrices (<= 64): intra-op threading only adds
    overhead there (torch.linalg.qr of a batch of 3x3 matrices is ~10x slower with 2 busy
    threads than with one). The previous setting is restored."""
    cpu = device is None or torch.device(device).type == "cpu"
    old = torch.get_num_threads()
    if cpu and dim <= 64 and old > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _summarise(sums: np.ndarray, counts: np.ndarray, dt: float | None, **info: Any) -> LyapunovResult:
    keep = counts > 0  # drop the warm-up blocks
    sums, counts = sums[:, keep], counts[keep]
    n_steps = int(counts.sum())
    per_step_all = sums.sum(axis=1) / n_steps  # (B, D)
    order = np.argsort(-per_step_all.mean(axis=0))
    per_step_all = per_step_all[:, order]
    running = np.cumsum(sums[:, :, order], axis=1) / np.cumsum(counts)[None, :, None]  # (B, nb, D)
    half = running[:, running.shape[1] // 2 :]
    spread = (half.max(axis=1) - half.min(axis=1)).max(axis=0)
    scale = 1.0 / dt if dt else 1.0
    per_step = per_step_all.mean(axis=0)
    exps = per_step * scale
    return LyapunovResult(
        exponents=exps,
        per_step=per_step,
        all=per_step_all * scale,
        convergence=spread * scale,
        kaplan_yorke=kaplan_yorke_dimension(exps),
        dt=dt,
        n_steps=n_steps,
        **info,
    )


def _check_args(n_steps: int, transient: int, reorth_every: int, n_blocks: int, jacobian: str) -> None:
    for name, v, lo in (("n_steps", n_steps, 1), ("transient", transient, 0), ("reorth_every", reorth_every, 1),
                        ("n_blocks", n_blocks, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if reorth_every > n_steps:
        raise ConfigError(f"reorth_every={reorth_every} exceeds n_steps={n_steps}")
    if jacobian not in ("analytic", "autograd", "fd"):
        raise ConfigError(f"jacobian must be 'analytic', 'autograd' or 'fd' (flows only), got {jacobian!r}")


def lyapunov_spectrum(
    model_or_system: Any,
    *,
    x0: Any = None,
    n_steps: int = 20_000,
    transient: int = 1_000,
    reorth_every: int = 1,
    n_initial_conditions: int = 1,
    dt: float | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    jacobian: str = "analytic",
    method: str = "auto",
    n_blocks: int = 20,
    warmup: int | None = None,
    n_exponents: int | None = None,
) -> LyapunovResult | list[LyapunovResult]:
    """Lyapunov spectrum of a model, a benchmark system, or a list of models (ensemble).

    Parameters
    ----------
    model_or_system : DynamicalModel, System, str, or list of DynamicalModel
        A model (its latent map z -> F(z)); a system from :func:`dsrecon.systems.get` or its name
        (flows: variational equations; maps: the map); a list of models -> a list of results.
    x0 : array (D,) or (B, D), optional
        Initial states: *latent* states for models, states for systems. Default: seeded N(0, 1)
        latent states / the system's initial condition (perturbed for B > 1).
    n_steps : int
        Steps after the transient (map iterations, or integration steps of length dt for flows).
    transient : int
        Steps discarded first (state only).
    reorth_every : int
        QR re-orthonormalisation interval in steps.
    n_initial_conditions : int
        B, trajectories averaged (batched).
    dt : float, optional
        Models / maps: time per step, to report exponents per time unit (default: per step).
        Flows: the integration step (default :func:`.lyapunov_ode.default_flow_dt`).
    device : optional
        Torch device for the model / system arithmetic (CPU default).
    seed : int, optional
        Seeds the default initial conditions.
    jacobian : {"analytic", "autograd", "fd"}
        Models: the model's ``jacobian`` or torch.func autograd of ``step``; systems: the
        system's Jacobian or autograd of its vector field / map; flows also "fd": J Q by central
        differences of the vector field in one batched call (:class:`.lyapunov_ode.FlowTangent`).
    method : str
        Models: "auto" | "torch" | "numba"; flows: "auto" (= "rk4") | "rk4" | "dop853".
    n_blocks : int
        Blocks for the convergence estimate.
    warmup : int, optional
        Steps of tangent dynamics (with QR) after the transient that are not averaged, so the
        frame aligns with the Lyapunov vectors first (removes an O(1/n_steps) bias, mostly on
        the exponents near zero). Default ``n_steps // 20``, rounded up to whole blocks.
    n_exponents : int, optional
        Only the k leading exponents (default: all D). Exact: a k-column frame gives the first k
        exponents of the full computation. Models without an analytic Jacobian then propagate
        the frame by k forward-mode Jacobian-vector products per step
        (:mod:`.lyapunov_tangent`) -- what makes SSMs with M in the thousands tractable.

    Returns
    -------
    LyapunovResult (or a list, one per model, for a list input).
    """
    if isinstance(model_or_system, (list, tuple)) and not model_or_system:
        raise ConfigError("an empty list of models was passed")
    _check_args(n_steps, transient, reorth_every, n_blocks, jacobian)
    warmup = n_steps // 20 if warmup is None else warmup
    if not isinstance(warmup, (int, np.integer)) or isinstance(warmup, bool) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    if n_exponents is not None and (not isinstance(n_exponents, (int, np.integer)) or isinstance(n_exponents, bool)
                                    or n_exponents < 1):
        raise ConfigError(f"n_exponents must be an integer >= 1 (or None for all), got {n_exponents!r}")
    kw = dict(x0=x0, n_steps=n_steps, transient=transient, reorth_every=reorth_every,
              n_initial_conditions=n_initial_conditions, dt=dt, device=device, seed=seed,
              jacobian=jacobian, method=method, n_blocks=n_blocks, warmup=warmup)
    if isinstance(model_or_system, (list, tuple)):
        members = list(model_or_system)
        if n_exponents is not None:
            return [lyapunov_spectrum(m, **kw, n_exponents=n_exponents) for m in members]  # type: ignore[misc]
        if len(members) > 1 and all(isinstance(m, DynamicalModel) for m in members):
            from dsrecon.analysis.lyapunov_ensemble import _ensemble  # builds on this module

            _check_kind_args("model", dt, jacobian, method)
            with small_matrix_threads(device, max(int(m.latent_dim) for m in members)):
                res = _ensemble(members, **kw)  # type: ignore[arg-type]
            if res is not None:
                return res
        return [lyapunov_spectrum(m, **kw) for m in members]  # type: ignore[misc]
    kind, obj = resolve(model_or_system)
    with small_matrix_threads(device, state_dim(kind, obj)):
        return _spectrum(kind, obj, x0=x0, n_steps=n_steps, transient=transient, reorth_every=reorth_every,
                         n_initial_conditions=n_initial_conditions, dt=dt, device=device, seed=seed,
                         jacobian=jacobian, method=method, n_blocks=n_blocks, warmup=warmup, k=n_exponents)


def _spectrum(kind: str, obj: Any, *, x0: Any, n_steps: int, transient: int, reorth_every: int,
              n_initial_conditions: int, dt: float | None, device: Any, seed: int | None, jacobian: str,
              method: str, n_blocks: int, warmup: int, k: int | None = None) -> LyapunovResult:
    _check_kind_args(kind, dt, jacobian, method)
    D = state_dim(kind, obj)
    if k is not None and k > D:
        raise ConfigError(f"n_exponents={k} exceeds the state dimension {D}")
    rng = np.random.default_rng(seed)
    x = initial_states(kind, obj, x0, n_initial_conditions, rng)
    block_len, nb, counts, n_warm = _blocks(n_steps, reorth_every, n_blocks, warmup)
    info = dict(transient=transient, reorth_every=reorth_every, warmup=n_warm)
    total = n_warm + n_steps
    if kind == "model":
        return _model_spectrum(obj, x, total, transient, reorth_every, block_len, nb, counts, dt, device,
                               jacobian, method, info, k)
    name = getattr(obj, "name", type(obj).__name__)
    if kind == "flow":
        h = float(dt) if dt is not None else default_flow_dt(obj, x)
        tangent = FlowTangent(obj, h, method="rk4" if method == "auto" else method, jacobian=jacobian, device=device)
        xs = tangent.asarray(x)
        xs = tangent.advance_state(xs, transient)
        sums = _benettin(tangent.advance, xs, tangent.eye(x.shape[0], D), total, reorth_every, block_len, nb, name)
        return _summarise(sums[..., :k], counts, h, method=tangent.method, **info)
    # discrete system
    use_torch = jacobian == "autograd" or (device is not None and torch.device(device).type != "cpu")
    step = obj.step
    jac = obj.jacobian if jacobian == "analytic" else (lambda z: autograd_jacobian(step, z))
    xs = torch.as_tensor(x, dtype=torch.float64, device=device or "cpu") if use_torch else x
    sums = _map_sums(step, jac, xs, transient, total, reorth_every, block_len, nb, name)
    return _summarise(sums[..., :k], counts, dt, method="torch" if use_torch else "numpy", **info)


def _map_sums(step: Callable, jac: Callable, x: Any, transient: int, total: int, reorth: int, block_len: int,
              nb: int, name: str, k: int | None = None, tangent: Callable | None = None) -> np.ndarray:
    """Transient with the map alone, then the QR loop of Q <- J(z) Q (k columns, default all; Q <-
    ``tangent(z, Q)`` when given); NumPy or torch states."""
    B, D = x.shape
    k = D if k is None else k
    with torch.no_grad():
        for _ in range(transient):
            x = step(x)

        def advance(z: Any, Q: Any, n: int) -> tuple[Any, Any]:
            for _ in range(n):
                Q = jac(z) @ Q if tangent is None else tangent(z, Q)
                z = step(z)
            return z, Q

        if isinstance(x, torch.Tensor):
            Q0 = torch.eye(D, dtype=torch.float64, device=x.device)[:, :k].expand(B, D, k).clone()
        else:
            Q0 = np.broadcast_to(np.eye(D)[:, :k], (B, D, k)).copy()
        return _benettin(advance, x, Q0, total, reorth, block_len, nb, name)


def _check_kind_args(kind: str, dt: float | None, jacobian: str, method: str) -> None:
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive number, got {dt!r}")
    if jacobian == "fd" and kind != "flow":
        raise ConfigError("jacobian='fd' is only for flows; use 'analytic' or 'autograd'")
    allowed = FLOW_METHODS if kind == "flow" else MAP_METHODS
    if method not in allowed:
        raise ConfigError(f"method for a {kind} must be one of {allowed}, got {method!r}")


def _model_spectrum(model: DynamicalModel, x: np.ndarray, n_steps: int, transient: int, reorth: int,
                    block_len: int, nb: int, counts: np.ndarray, dt: float | None, device: Any,
                    jacobian: str, method: str, info: dict[str, Any], k: int | None = None) -> LyapunovResult:
    from dsrecon.analysis.lyapunov_pwl import pwl_model_sums
    from dsrecon.analysis.lyapunov_tangent import jvp_tangent

    on_cpu = device is None or torch.device(device).type == "cpu"
    if method in ("auto", "numba"):
        sums = pwl_model_sums(model, x, transient=transient, n_steps=n_steps, reorth_every=reorth,
                              block_len=block_len, n_blocks=nb, usable=jacobian == "analytic" and on_cpu,
                              required=method == "numba")
        if sums is not None:
            return _summarise(sums[..., :k], counts, dt, method="numba", **info)
    m64 = float64_copy(model, device if device is not None else "cpu")
    jac = m64.jacobian if jacobian == "analytic" else (lambda z: DynamicalModel.jacobian(m64, z))
    # no analytic Jacobian (the protocol's autograd default) and a partial spectrum: J Q by JVPs
    by_jvp = k is not None and k < m64.latent_dim and type(m64).jacobian is DynamicalModel.jacobian
    z = torch.as_tensor(x, dtype=torch.float64, device=m64.device)
    sums = _map_sums(m64.step, jac, z, transient, n_steps, reorth, block_len, nb, f"the {type(model).__name__}",
                     k=k, tangent=jvp_tangent(m64.step) if by_jvp else None)
    return _summarise(sums, counts, dt, method="torch-jvp" if by_jvp else "torch", **info)
