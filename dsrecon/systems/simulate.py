"""Dataset generation from the benchmark systems: :func:`simulate` and :func:`make_splits`.

Glossary: B trajectories, T samples, N dimensions.

Pipeline of :func:`simulate` (every setting is recorded in ``Trajectory.meta``):

1. initial conditions (:mod:`dsrecon.systems.initial`), then ``transient + n_steps`` samples
   every ``dt`` (flows: :func:`dsrecon.systems.integrate`, DOP853 by default; maps: iteration;
   delay equations: :func:`dsrecon.systems.delay.integrate_delay`, output = dysts' delay
   coordinates); the first ``transient`` samples are dropped;
2. dynamical noise (``dynamical_noise`` > 0, flows and maps): after every sampling interval
   the state receives sqrt(dt) * dynamical_noise * sd_d * N(0, 1) per dimension d (sd_d the
   attractor's standard deviation from dysts' metadata; maps: no sqrt(dt)). The drift between
   kicks is integrated with RK4 (``substeps`` per interval): an Euler-Maruyama discretisation of
   dX = f(X) dt + sigma dW on the sampling grid (strong order 1/2, additive noise);
3. dysts' default coordinate transform (``postprocess=True``; e.g. angles -> sin), as dysts'
   ``make_trajectory`` does by default;
4. observation noise: + noise * sd_d * N(0, 1), sd_d over the generated data
   (:func:`dsrecon.data.add_observation_noise`);
5. partial observation (``observe``) and delay embedding (``delay``; extra samples are
   integrated so that exactly ``n_steps`` remain);
6. z-scoring (``standardize``; statistics stored in the Trajectory).

Randomness (random initial conditions, both noises) comes from independent streams spawned from
``seed`` (NumPy SeedSequence), so results are deterministic given the seed, on any device.
Deterministic configurations are cached on disk (:mod:`dsrecon.systems.cache`); with
``seed=None`` and randomness in use nothing is cached.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dsrecon.data import Trajectory, add_observation_noise, delay_embed, partial_observation, standardize_splits
from dsrecon.errors import ConfigError
from dsrecon.systems import cache as _cache
from dsrecon.systems.delay import integrate_delay
from dsrecon.systems.initial import IC_MODES, attractor_scale, explicit_ic, resolve_dt
from dsrecon.systems.integrate import METHODS, integrate
from dsrecon.systems.registry import System, get

__all__ = ["simulate", "make_splits"]


def _int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _nonneg(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}") from None
    if not np.isfinite(f) or f < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
    return f


def _delay_spec(delay: Any) -> dict[str, Any] | None:
    if delay is None:
        return None
    if isinstance(delay, dict):
        allowed = {"lags", "dim", "tau", "dims", "direction"}
        if set(delay) - allowed:
            raise ConfigError(f"delay dict keys must be among {sorted(allowed)}, got {sorted(delay)}")
        spec = dict(delay)
    elif isinstance(delay, (list, tuple, np.ndarray)):
        spec = {"lags": [int(v) for v in delay]}
    else:
        raise ConfigError("delay must be a list of lags (samples) or a dict for dsrecon.data.delay_embed, "
                          f"e.g. {{'dim': 3, 'tau': 10}}; got {delay!r}")
    lags = spec.get("lags")
    if lags is None:
        if spec.get("dim") is None or spec.get("tau") is None:
            raise ConfigError("delay needs 'lags' or both 'dim' and 'tau'")
        lags = [k * int(spec["tau"]) for k in range(int(spec["dim"]))]
    if not len(lags) or min(lags) < 0:
        raise ConfigError(f"delay lags must be a non-empty list of integers >= 0, got {lags}")
    spec["_tau_max"] = int(max(lags))
    return spec


def _initial_states(system: System, ic: Any, n_traj: int, rng, ic_scale: float, dt: float, method: str,
                    tols: dict) -> np.ndarray:
    n = 1 if system.is_delay else system.dim
    default = system.initial_condition[:n]
    if not isinstance(ic, str):
        return explicit_ic(ic, n_traj, n)
    if ic == "default":
        return np.repeat(default[None], n_traj, axis=0)
    scale = attractor_scale(system)[:n] if not system.is_delay else np.array([max(abs(default[0]), 1.0)])
    if ic == "random":
        return default + ic_scale * scale * rng.standard_normal((n_traj, n))
    # "attractor": sample states at random times of one long trajectory from the default ic
    if system.is_delay or system.kind == "map":
        raise ConfigError(f"ic='attractor' is available for ODE flows; use ic='random' for {system.name}")
    per_period = system.period / dt if system.period else 100.0
    settle = int(10 * per_period)
    length = settle + max(20 * n_traj, int(10 * per_period))
    res = integrate(lambda t, x: system.field(x, t), default[None], length, dt, method=method, **tols)
    pool = res.values[0, settle:]
    pool = pool[np.all(np.isfinite(pool), axis=1)]
    if len(pool) < n_traj:
        raise ConfigError(f"could not sample {n_traj} attractor states of {system.name} "
                          f"({res.reasons[0] or 'too few finite samples'}); use ic='random'")
    return pool[rng.choice(len(pool), size=n_traj, replace=False)]


def simulate(
    name: str | System,
    n_steps: int,
    *,
    dt: float | None = None,
    pts_per_period: float | None = None,
    n_trajectories: int = 1,
    noise: float = 0.0,
    dynamical_noise: float = 0.0,
    seed: int | None = None,
    transient: int | None = None,
    ic: str | np.ndarray = "default",
    ic_scale: float = 0.1,
    method: str = "dop853",
    rtol: float = 1e-9,
    atol: float = 1e-12,
    substeps: int = 10,
    standardize: bool = False,
    observe: Sequence[int] | int | None = None,
    delay: Any = None,
    params: dict[str, Any] | None = None,
    postprocess: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
    device: Any = None,
    max_steps: int | None = None,
    max_time: float | None = 3600.0,
) -> Trajectory:
    """Generate a data set from a benchmark system (see the module docstring for the pipeline).

    Parameters
    ----------
    name : str or System
    n_steps : int -- T samples per trajectory (after transient removal and embedding)
    dt, pts_per_period : sampling interval, or points per dominant period (dt = period / p);
        at most one; default 100 points per period (dysts' default). Maps: one iteration.
    n_trajectories : int -- B
    noise : float -- observation noise, in units of each dimension's standard deviation
    dynamical_noise : float -- process noise amplitude, in attractor standard deviations
    seed : int or None -- makes every random choice reproducible
    transient : int or None -- samples discarded first; None: 0 for ``ic="default"`` /
        ``"attractor"`` / explicit arrays, 10 periods (1000 iterations for maps) for ``"random"``
    ic : "default" | "random" | "attractor" | array (N,) or (B, N) (delay equations: the
        constant history value, N = 1; a (B, N) array sets B when n_trajectories is left at 1);
        ``ic_scale`` sets the perturbation of ``"random"``
    method, rtol, atol, substeps : integrator settings (see :func:`dsrecon.systems.integrate`)
    standardize : bool -- z-score each output dimension (statistics kept in the Trajectory)
    observe : int or sequence of int -- observed dimensions (after postprocessing)
    delay : list of lags or dict(lags= | dim=, tau=, dims=, direction=) for
        :func:`dsrecon.data.delay_embed`
    params : dict -- parameter overrides (e.g. ``{"rho": 24}``)
    postprocess : bool -- apply dysts' default coordinate transform
    cache, cache_dir : use the on-disk cache (deterministic configurations only)
    max_steps, max_time : per-trajectory step budget and wall-time budget of the integrator;
        trajectories that exceed them are flagged as failed (NaN), the others are kept
    device : None for NumPy float64 on the CPU, or a torch device ("cpu", "cuda:0") to integrate
        flows in torch float64 there (large batches); the returned values are NumPy either way

    Returns
    -------
    Trajectory with values (B, T, N'), dt, failed (B,) flags and ``meta`` holding every setting,
    the initial conditions, failure reasons and the cache key.
    """
    system = name if isinstance(name, System) else get(name)
    if params:
        system = system.with_params(**params)
    n_steps = _int("n_steps", n_steps, 1)
    n_traj = _int("n_trajectories", n_trajectories, 1)
    if n_traj == 1 and not isinstance(ic, str) and np.ndim(ic) == 2:
        n_traj = len(ic)  # an explicit (B, N) array sets B
    noise, dyn_noise = _nonneg("noise", noise), _nonneg("dynamical_noise", dynamical_noise)
    ic_scale = _nonneg("ic_scale", ic_scale)
    if seed is not None:
        seed = _int("seed", seed, 0)
    if isinstance(ic, str) and ic not in IC_MODES:
        raise ConfigError(f"ic must be one of {', '.join(IC_MODES)} or an array, got {ic!r}")
    if method not in METHODS:
        raise ConfigError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
    for tname, tval in (("rtol", rtol), ("atol", atol)):
        if not _nonneg(tname, tval) > 0:
            raise ConfigError(f"{tname} must be a positive finite number, got {tval!r}")
    substeps = _int("substeps", substeps, 1)
    if max_steps is not None:
        max_steps = _int("max_steps", max_steps, 1)
    if max_time is not None and not _nonneg("max_time", max_time) > 0:
        raise ConfigError(f"max_time must be positive seconds or None, got {max_time!r}")
    dt, ppp = resolve_dt(system, dt, pts_per_period)
    if transient is None:
        per_period = (system.period / dt) if (system.kind == "flow" and system.period) else 100.0
        transient = int(round(10 * per_period)) if (isinstance(ic, str) and ic == "random") else 0
    transient = _int("transient", transient, 0)
    spec = _delay_spec(delay)
    out_dim = system.dim
    if observe is not None:
        obs = [observe] if isinstance(observe, (int, np.integer)) else list(observe)
        bad = [d for d in obs if not isinstance(d, (int, np.integer)) or not 0 <= d < out_dim]
        if bad or not obs or len(set(obs)) != len(obs):
            raise ConfigError(f"observe must be distinct indices in 0..{out_dim - 1} for {system.name}, got {observe!r}")
        observe = [int(d) for d in obs]
    if dyn_noise > 0 and system.is_delay:
        raise ConfigError(f"dynamical noise is not implemented for delay equations ({system.name})")
    torch_device = None
    if device is not None:
        import torch

        try:
            torch_device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device must be a torch device string such as 'cpu' or 'cuda:0', got {device!r}") from None
    extra = spec["_tau_max"] if spec else 0
    total = transient + n_steps + extra
    random_used = dyn_noise > 0 or noise > 0 or (isinstance(ic, str) and ic != "default")
    config = {
        "system": system.name, "params": system.params, "n_steps": n_steps, "dt": dt, "pts_per_period": ppp,
        "n_trajectories": n_traj, "noise": noise, "dynamical_noise": dyn_noise, "seed": seed,
        "transient": transient, "ic": ic if isinstance(ic, str) else np.asarray(ic, dtype=float).tolist(),
        "ic_scale": ic_scale, "method": "rk4" if dyn_noise > 0 else method, "rtol": float(rtol),
        "atol": float(atol), "substeps": int(substeps), "standardize": bool(standardize), "observe": observe,
        "delay": None if spec is None else {k: v for k, v in spec.items() if not k.startswith("_")},
        "postprocess": bool(postprocess), "backend": "numpy" if torch_device is None else "torch",
        "max_steps": max_steps,
    }
    use_cache = bool(cache) and (seed is not None or not random_used)
    directory = _cache.cache_dir(cache_dir)
    key = _cache.config_key(config)
    if use_cache:
        hit = _cache.load(directory, system.name, key)
        if hit is not None:
            return hit
    streams = np.random.SeedSequence(seed).spawn(3)
    ic_rng, dyn_rng = np.random.default_rng(streams[0]), np.random.default_rng(streams[1])
    obs_seed = int(streams[2].generate_state(1)[0])
    tols = {"rtol": float(rtol), "atol": float(atol), "max_time": max_time, "max_steps": max_steps}
    x0 = _initial_states(system, ic, n_traj, ic_rng, ic_scale, dt, method, tols)
    values, failed, reasons, engine = _generate(system, x0, total, dt, method, tols, int(substeps), dyn_noise,
                                                dyn_rng, torch_device)
    values = values[:, transient:]
    if postprocess and system.kind == "flow" and not system.is_delay and system.has_postprocessing:
        values = system.postprocess(values)
    if noise > 0:
        values = add_observation_noise(values, noise, seed=obs_seed)
    meta = dict(config)
    meta.update({"initial_conditions": x0.tolist(), "failures": reasons, "n_failed": int(failed.sum()),
                 "integrator": engine,
                 "evaluation": system.field.modes.copy(), "cache": {"hit": False, "key": key}})
    traj = Trajectory(values=values, dt=dt, meta=meta, failed=failed)
    if observe is not None:
        traj = partial_observation(traj, observe)
    if spec is not None:
        traj = delay_embed(traj, **{k: v for k, v in spec.items() if not k.startswith("_")})
    if standardize:
        traj = traj.standardize()
    if use_cache and not any(r and "wall-time" in r for r in reasons):  # time limits are not reproducible
        _cache.store(directory, system.name, key, traj)
    return traj


def _generate(system, x0, total, dt, method, tols, substeps, dyn_noise, rng, device):
    """Raw samples (B, total, N), failed (B,), reasons, engine description."""
    b = x0.shape[0]
    if system.is_delay:
        vals, failed, reasons = integrate_delay(system.field.delayed, x0[:, 0], system.delay_tau, total, dt,
                                                system.dim, substeps=substeps, max_time=tols["max_time"])
        return vals, failed, reasons, {"engine": "delay-rk4", "substeps": substeps}
    sigma = dyn_noise * attractor_scale(system)[: x0.shape[1]]
    if system.kind == "map":
        return (*_iterate_map(system, x0, total, sigma, rng), {"engine": "map"})
    x = x0
    if device is not None:
        import torch

        x = torch.as_tensor(x0, dtype=torch.float64, device=device)
    f = system.field

    def rhs(t, y):
        return f(y, t)

    if device is None:
        rhs.scalar_rhs = f.scalar_rhs  # single-trajectory fast path (None if unavailable)

    if dyn_noise > 0:
        amp = np.sqrt(dt) * sigma

        def kick(k, y, rows):
            eps = rng.standard_normal((b, y.shape[1]))[rows] * amp
            return y + (torch.as_tensor(eps, dtype=y.dtype, device=y.device) if device is not None else eps)

        res = integrate(rhs, x, total, dt, method="rk4", substeps=substeps, kick=kick, max_time=tols["max_time"],
                        max_steps=tols["max_steps"])
    else:
        res = integrate(rhs, x, total, dt, method=method, substeps=substeps, **tols)
    vals = res.values if device is None else res.values.detach().cpu().numpy()
    engine = {"engine": res.info.get("engine", "batched"), "method": res.method, "n_evals": int(res.n_evals),
              "n_accepted": res.n_accepted.tolist(), "n_rejected": res.n_rejected.tolist()}
    return vals, res.failed, res.reasons, engine


def _iterate_map(system, x0, total, sigma, rng, max_norm: float = 1e10):
    b, n = x0.shape
    out = np.full((b, total, n), np.nan)
    out[:, 0] = x0
    failed = np.zeros(b, dtype=bool)
    reasons: list = [None] * b
    y = x0.copy()
    with np.errstate(all="ignore"):
        for j in range(1, total):
            y = system.field(y, 0.0)
            if np.any(sigma > 0):
                y = y + sigma * rng.standard_normal((b, n))
            bad = ~np.all(np.isfinite(y), axis=1) | (np.max(np.abs(y), axis=1) > max_norm)
            for r in np.nonzero(bad & ~failed)[0]:
                failed[r], reasons[r] = True, f"map iterate left the finite range (|x| > {max_norm:.3g}) at step {j}"
            y[failed] = np.nan
            out[:, j] = y
    return out, failed, reasons


def make_splits(name: str | System, n_steps: int, *, n_train: int = 1, n_val: int = 1, n_test: int = 1,
                seed: int | None = None, ic: str = "attractor", standardize: bool = True,
                **kwargs: Any) -> tuple[Trajectory, Trajectory, Trajectory]:
    """Train / validation / test data from *different* initial conditions.

    One :func:`simulate` call with B = n_train + n_val + n_test trajectories (``ic="attractor"``
    by default: distinct states sampled on the attractor; ``"random"`` also works), split by
    rows; with ``standardize`` all three are z-scored with the training statistics.
    ``kwargs`` go to :func:`simulate` (not ``standardize``/``n_trajectories``).
    """
    for k in ("n_trajectories", "standardize"):
        if k in kwargs:
            raise ConfigError(f"make_splits sets {k} itself; do not pass it")
    counts = [_int("n_train", n_train, 1), _int("n_val", n_val, 1), _int("n_test", n_test, 1)]
    if not isinstance(ic, str) or ic == "default":
        raise ConfigError("splits need different initial conditions: use ic='attractor' or ic='random'")
    full = simulate(name, n_steps, n_trajectories=sum(counts), seed=seed, ic=ic, standardize=False, **kwargs)
    bounds = np.cumsum([0] + counts)
    parts = []
    for label, lo, hi in zip(("train", "validation", "test"), bounds[:-1], bounds[1:]):
        part = full.select(slice(int(lo), int(hi)))
        part.meta = {**full.meta, "split": label, "rows": [int(lo), int(hi)]}
        parts.append(part)
    if standardize:
        parts = list(standardize_splits(*parts))
    return tuple(parts)  # type: ignore[return-value]
