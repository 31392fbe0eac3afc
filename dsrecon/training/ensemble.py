"""Vectorised ensembles: K seeds of one configuration trained in one pass (DESIGN.md section 2).

Glossary: K ensemble members, B batch, T window length, N observed dim, M latent dim, L hidden.

The K members' parameters are stacked (``torch.func.stack_module_state``: every parameter gets a
leading K dim) and every protocol method runs on all members at once through
``torch.func.vmap`` over ``torch.func.functional_call``. Piecewise-linear models go through
their K-stacked shallow canonical form and the fused forced-rollout kernel
(:func:`dsrecon.training.fused.forced_rollout`, one call per batch for all K members: the
forcing strengths are passed as alpha (K, T), so the members' adaptive-GTF alphas may differ).
Each member has its own seed for its initialisation, windows and noise, its own adaptive-GTF
alpha (Hess et al., ICML 2023; kappa from its own Jacobians and windows), loss, best checkpoint
and gradient clipping, so member k behaves like ``fit(build(..., seed=s_k), data, seed=s_k)``
(equivalence-tested). Exceptions, documented: one learning rate for all (a roll-back restores
and slows down the whole ensemble) and one training budget. The periodic evaluation generates all
K members' trajectories in one pass too (:meth:`EnsembleEngine.generate_members`: forced
rollouts with alpha = 0 through the stacked form), then scores each member on its own; in float32
a chaotic member's trajectory is not the bit pattern its own ``generate`` would give (different
summation order), but the same dynamics (equivalence-tested in float64).

Each member is saved as a normal model in ``RUN_DIR/member_XX/`` (model.json +
model.safetensors + metrics.json) and loads on its own with
``dsrecon.models.load(RUN_DIR, member=k)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dsrecon.errors import ConfigError
from dsrecon.models.base import DynamicalModel
from dsrecon.models.registry import build
from dsrecon.training.config import TrainConfig
from dsrecon.training.forcing import fused_available, spectral_norms
from dsrecon.training.inputs import (check_trainable, evaluate_generated, prepare_data, resolve_config, resolve_device,
                                     series_metrics)
from dsrecon.training.rundir import RunLog
from dsrecon.training.trainer import FitResult, finish, train_loop


class _Method(nn.Module):
    """``forward(method, *args)`` runs ``model.<method>(*args)`` (a target for functional_call)."""

    def __init__(self, model: DynamicalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, method: str, *args: Any) -> Any:
        return getattr(self.model, method)(*args)


class EnsembleEngine:
    """Training arithmetic of K stacked piecewise-linear models (see the module docstring)."""

    def __init__(self, models: Sequence[DynamicalModel], config: TrainConfig, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.K = len(models)
        self.cfg = config
        self.mask = fused_available(models[0], device, "on")
        if self.mask is None:
            raise ConfigError(
                f"vectorised ensembles need a piecewise-linear model with a shallow form and mask-type "
                f"forcing (plrnn, dendplrnn, shplrnn, clipped-shplrnn, alrnn), got {models[0].name!r}; "
                "train other models one seed at a time with fit(..., seed=s)"
            )
        configs = [m.config for m in models]
        if any(c != configs[0] for c in configs[1:]):
            raise ConfigError("all ensemble members must share one architecture (identical model.config)")
        self.base = copy.deepcopy(models[0]).to(device=device, dtype=dtype)
        self.wrapper = _Method(self.base)
        params, buffers = stack_module_state(list(models))
        self.params = {n: p.detach().to(device=device, dtype=dtype).clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: (b.to(device=device, dtype=dtype) if b.is_floating_point() else b.to(device)).clone()
                        for n, b in buffers.items()}
        self.clipped = bool(self.base.clipped)
        self.impl = "reference" if config.fused == "off" else "auto"
        self.has_reg = callable(getattr(self.base, "latent_regularization", None))
        self._members: list[DynamicalModel | None] = [None] * self.K

    path = "fused-ensemble"
    ensemble = True

    # -------------------------------------------------------------- vectorised calls
    def _vcall(self, method: str, *args: torch.Tensor) -> Any:
        """``model.<method>(*args)`` for every member: args and results carry a leading K dim."""

        def one(p, b, *a):
            state = {**{f"model.{n}": t for n, t in p.items()}, **{f"model.{n}": t for n, t in b.items()}}
            return functional_call(self.wrapper, state, (method, *a))

        return vmap(one, in_dims=(0, 0) + (0,) * len(args), randomness="error")(self.params, self.buffers, *args)

    def form(self) -> dict[str, Any]:
        """The K-stacked shallow form (a (K, M), W1 (K, M, L), ...)."""
        f = self._vcall("shallow_form")
        out = {k: f[k] for k in ("a", "W1", "W2", "h1", "h2")}
        mask = f["relu_mask"]
        out["relu_mask"] = (mask[0] if mask.dim() == 2 else mask).to(torch.bool)
        out["clipped"] = self.clipped
        return out

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    # --------------------------------------------------------------------- training
    def loss(self, x: torch.Tensor, x_in: torch.Tensor, alpha: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Sum over members of each member's objective: x, x_in (K, B, T+1, N), alpha (K, T)."""
        from dsrecon.training.fused import forced_rollout

        K, B, T1, N = x.shape
        T, M = T1 - 1, self.base.latent_dim
        form = self.form()
        z0 = self._vcall("init_state", x_in[:, :, 0])  # (K, B, M)
        flat = x_in[:, :, :T].reshape(K, B * T, N)
        zhat = self._vcall("data_state", flat, flat.new_zeros(K, B * T, M)).reshape(K, B, T, M)
        mask = self.mask.to(x.device)
        a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)  # (K, T): member k follows a[k]
        z = forced_rollout(form, z0, zhat, mask, a, impl=self.impl)  # (K, B, T, M), one call for all members
        xhat = self._vcall("observe", z.reshape(K, B * T, M)).reshape(K, B, T, N)
        per = torch.mean((xhat - x[:, :, 1:]) ** 2, dim=(1, 2, 3))  # (K,)
        if self.cfg.lambda_reg > 0 and self.has_reg:
            per = per + self.cfg.lambda_reg * self._vcall("latent_regularization")
        return per.sum(), per.detach().to("cpu", torch.float64).numpy()

    def kappa(self, x_in: torch.Tensor) -> np.ndarray:
        """Adaptive-GTF kappa of every member (K,) at the data-inferred states x_1..x_T."""
        from dsrecon.training.fused import shallow_jacobian

        with torch.no_grad():
            K, B, T1, N = x_in.shape
            M = self.base.latent_dim
            flat = x_in[:, :, 1:].reshape(K, B * (T1 - 1), N)
            zhat = self._vcall("data_state", flat, flat.new_zeros(K, flat.shape[1], M))  # (K, B*T, M)
            form = self.form()
            norms = spectral_norms(lambda z: shallow_jacobian(form, z), zhat).reshape(K, B, T1 - 1)  # ||J||_2
            geo = torch.exp(torch.log(norms).mean(dim=2))  # (K, B)
            return geo.max(dim=1).values.cpu().numpy()

    def clip_gradients(self, max_norm: float) -> None:
        """Clip each member's gradient to global norm ``max_norm`` on its own."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            return
        sq = sum(g.reshape(self.K, -1).double().pow(2).sum(dim=1) for g in grads)  # (K,)
        coef = torch.clamp(max_norm / (sq.sqrt() + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype).reshape((self.K,) + (1,) * (g.dim() - 1)))

    # ------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def generate_members(self, x0: torch.Tensor, n_steps: int, chunk: int = 4096) -> torch.Tensor:
        """Free-running trajectories of all K members from one observation x0 (N,): (K, n_steps, N).

        Same contract as :meth:`DynamicalModel.generate` per member (``out[:, 0]`` is
        ``observe(init_state(x0))``), computed for all members at once: forced rollouts with
        alpha = 0 through the stacked form (the fused kernels on CPU), ``chunk`` steps per call,
        instead of K Python loops over the steps. Equivalence-tested against the members' own
        ``generate``.
        """
        from dsrecon.training.fused import forced_rollout

        K, M = self.K, self.base.latent_dim
        form = self.form()
        mask = self.mask.to(x0.device)
        z = self._vcall("init_state", x0.reshape(1, 1, -1).expand(K, 1, x0.shape[-1]))  # (K, 1, M)
        out = [self._vcall("observe", z)]                                              # (K, 1, N)
        done = 1
        while done < n_steps:
            c = min(int(chunk), n_steps - done)
            zc = forced_rollout(form, z, z.new_zeros(K, 1, c, M), mask, z.new_zeros(c), impl=self.impl)[:, 0]
            out.append(self._vcall("observe", zc))                                     # (K, c, N)
            z, done = zc[:, -1:], done + c
        return torch.cat(out, dim=1)

    def evaluate(self, val: np.ndarray, steps: int, smoothing: float) -> list[tuple[float, float]]:
        """[(D_stsp, D_H)] per member of trajectories generated from val[0] against val[:steps]."""
        n = min(int(steps), val.shape[0])
        p = next(iter(self.params.values()))
        x_gen = self.generate_members(torch.as_tensor(val[0], dtype=p.dtype, device=p.device), n)
        x_gen = x_gen.to("cpu", torch.float64).numpy()
        return [series_metrics(val[:n], x_gen[k], smoothing) for k in range(self.K)]

    # ------------------------------------------------------------------------ state
    def state(self) -> dict[str, torch.Tensor]:
        out = {f"params.{n}": p.detach().clone() for n, p in self.params.items()}
        out.update({f"buffers.{n}": b.clone() for n, b in self.buffers.items()})
        return out

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for n, p in self.params.items():
            p.copy_(state[f"params.{n}"])
        for n, b in self.buffers.items():
            b.copy_(state[f"buffers.{n}"])

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict (the names of a single model)."""
        out = {n: p[k].detach().clone() for n, p in self.params.items()}
        out.update({n: b[k].clone() for n, b in self.buffers.items()})
        return out

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        for n, p in self.params.items():
            p[k].copy_(state[n])
        for n, b in self.buffers.items():
            b[k].copy_(state[n])

    def member(self, k: int) -> DynamicalModel:
        """Member k as an ordinary model with the current weights (a cached copy, refreshed)."""
        if self._members[k] is None:
            self._members[k] = copy.deepcopy(self.base)
        m = self._members[k]
        m.load_state_dict(self.member_state(k))
        return m


@dataclass
class EnsembleResult:
    """What :func:`fit_ensemble` returns: per-member models, best epochs and metrics."""

    models: list[DynamicalModel]
    history: list[dict[str, Any]]
    run_dir: Path | None
    best_epochs: list[int]
    metrics: list[dict[str, Any]]
    seeds: list[int]
    config: TrainConfig = field(repr=False, default=None)  # type: ignore[assignment]

    def member(self, k: int) -> FitResult:
        """Member k as a :class:`FitResult` (its own history rows)."""
        rows = [{kk: v for kk, v in r.items() if kk != "member"} for r in self.history if r.get("member") == k]
        return FitResult(model=self.models[k], history=rows, run_dir=self.run_dir, best_epoch=self.best_epochs[k],
                         metrics=self.metrics[k], config=self.config)


def fit_ensemble(
    model: str | Sequence[DynamicalModel],
    data: Any,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    n_members: int | None = None,
    seeds: Sequence[int] | None = None,
    latent_dim: int | None = None,
    model_hyper: dict[str, Any] | None = None,
    out: str | Path | None = None,
    val_data: Any = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[list[dict[str, Any]]], None] | None = None,
) -> EnsembleResult:
    """Train K seeds of one piecewise-linear model configuration in one vectorised pass.

    Parameters
    ----------
    model : str or sequence of DynamicalModel
        A registry name (member k is ``build(model, obs_dim=N, latent_dim=latent_dim,
        seed=seeds[k], **model_hyper)``) or K already-built models of one architecture.
    data, config, out, val_data, device, progress, resume, overwrite, callback
        As in :func:`dsrecon.training.fit` (``callback`` receives the K rows of an epoch).
    n_members : int, optional
        K (default: ``len(seeds)``, or 4).
    seeds : sequence of int, optional
        One seed per member for its initialisation and its random windows / noise (default
        ``config.seed + k``; on resume the stored seeds).
    latent_dim : int, optional
        M when ``model`` is a name (default: N).
    model_hyper : dict, optional
        Further hyper-parameters when ``model`` is a name (e.g. ``{"hidden_dim": 50}``).

    Returns
    -------
    EnsembleResult (models, history with a ``member`` column, run_dir, best_epochs, metrics, seeds).
    """
    log = RunLog.open(out, resume=resume, overwrite=overwrite)
    cfg = resolve_config(config, device=device, seed=None, stored=log.stored_train_config())
    dev = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    if seeds is None and log.stored is not None and log.stored.get("ensemble"):
        seeds = log.stored["ensemble"]["seeds"]
    if seeds is None:
        if not isinstance(model, str):
            n_members = len(model) if n_members is None else n_members
        K = 4 if n_members is None else int(n_members)
        if K < 1:
            raise ConfigError(f"n_members must be >= 1, got {n_members}")
        seeds = [int(cfg.seed) + k for k in range(K)]
    seeds = [int(s) for s in seeds]
    if n_members is not None and int(n_members) != len(seeds):
        raise ConfigError(f"n_members={n_members} but {len(seeds)} seeds were given; pass one seed per member")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"ensemble seeds must be distinct, got {seeds}")
    if isinstance(model, str):
        obs_dim, data = _obs_dim(data)
        train = prepare_data(data, "training data", cfg, obs_dim)
        hyper = dict(model_hyper or {})
        M = latent_dim or hyper.pop("latent_dim", None) or obs_dim
        hyper.pop("latent_dim", None)
        models = [build(model, obs_dim=obs_dim, latent_dim=M, seed=s, **hyper) for s in seeds]
    else:
        models = list(model)
        if not models or not all(isinstance(m, DynamicalModel) for m in models):
            raise ConfigError("model must be a registry name or a non-empty sequence of DynamicalModel")
        if len(models) != len(seeds):
            raise ConfigError(f"{len(models)} models but {len(seeds)} seeds; pass one seed per member")
        train = prepare_data(data, "training data", cfg, models[0].obs_dim)
    N = models[0].obs_dim
    val = prepare_data(val_data, "validation data", cfg, N, min_steps=2) if val_data is not None else None
    val_series = (val or train).values[0]
    evaluate_generated(None, val_series, cfg.eval_steps, cfg.dh_smoothing)
    check_trainable(models[0], cfg)
    engine = EnsembleEngine(models, cfg, dev, dtype)
    log.begin(cfg, [m.config for m in models], train, val, seeds=seeds, ensemble=True)
    out_state = train_loop(engine, cfg, train, val_series, log, device=dev, dtype=dtype, seeds=seeds,
                           progress=progress, callback=callback)
    final = [copy.deepcopy(engine.member(k)) for k in range(engine.K)]
    metrics = finish(log, final, out_state, val_series, cfg)
    best = [int((b or {}).get("epoch", 0)) for b in out_state["best"]]
    return EnsembleResult(models=final, history=out_state["history"], run_dir=log.path, best_epochs=best,
                          metrics=metrics, seeds=seeds, config=cfg)


def _obs_dim(data: Any) -> tuple[int, Any]:
    """(N, data) before full validation, which needs N (a path is read into a Trajectory)."""
    from dsrecon.data.io import load_trajectory
    from dsrecon.data.trajectory import Trajectory

    if isinstance(data, (str, Path)):
        data = load_trajectory(data, min_steps=1)
    if isinstance(data, Trajectory):
        return data.dim, data
    shape = np.shape(data)
    if len(shape) not in (2, 3):
        raise ConfigError(f"data must have shape (T, N) or (B, T, N), got {shape}")
    return int(shape[-1]), data
