"""Teacher-forcing training of one model: ``fit(model, data, config)`` (DESIGN.md sections 3, 6).

Glossary: K ensemble members (1 here), B batch, T window length (seq_len), N observed dim,
M latent dim.

Per epoch: ``batches_per_epoch`` batches of ``batch_size`` random windows x_0..x_T; z_0 =
init_state(x_0); the forcing strategy (:mod:`.forcing`) drives the forced rollout; the loss is
MSE(observe(z_t), x_t) on the unforced predictions plus ``lambda_reg * latent_regularization()``;
RAdam with exponential lr decay; optional gradient-norm clipping. Every ``eval_every`` epochs a
trajectory generated from the first validation point is compared with the validation series
(D_stsp, D_H) and the best model (lowest D_stsp) is kept. Failed batches roll back
(:mod:`.rollback`); checkpoints make a killed run resumable with identical results
(:mod:`.rundir`). The same loop trains vectorised ensembles (:mod:`.ensemble`).

Randomness: the windows and the input noise of epoch e are drawn from generators seeded by
(seed, e), so a resumed run redraws exactly the batches it would have drawn.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dsrecon.data.windows import WindowSampler
from dsrecon.errors import ConfigError
from dsrecon.models.base import DynamicalModel
from dsrecon.training.config import TrainConfig
from dsrecon.training.forcing import (
    data_states,
    fused_available,
    fused_rollout,
    generic_rollout,
    jacobian_kappa,
    make_forcing,
    prediction_loss,
)
from dsrecon.training.inputs import (
    DataSpec,
    check_trainable,
    evaluate_generated,
    final_metrics,
    is_better,
    make_optimizer,
    progress_bar,
    progress_postfix,
    prepare_data,
    resolve_config,
    resolve_device,
    stream_seed,
)
from dsrecon.training.rollback import RollbackGuard
from dsrecon.training.rundir import RunLog


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model : DynamicalModel
        The trained model holding the *best* weights (lowest validation D_stsp); it is the model
        passed to ``fit``, trained in place.
    history : list of dict
        One row per epoch: epoch, loss, alpha, lr, dstsp, dh, seconds, rollbacks.
    run_dir : Path or None
        The run directory (None when ``out`` was not given).
    best_epoch : int
        The (1-based) epoch of the best model.
    metrics : dict
        Final metrics of the best model: dstsp, dh, pe (PE(20)), T (evaluation length), ...
    config : TrainConfig
        The resolved settings.
    """

    model: DynamicalModel
    history: list[dict[str, Any]]
    run_dir: Path | None
    best_epoch: int
    metrics: dict[str, Any]
    config: TrainConfig = field(repr=False, default=None)  # type: ignore[assignment]


# ============================================================================ engine
class SingleEngine:
    """Training arithmetic of one model (K = 1): rollout, loss, Jacobians, state."""

    def __init__(self, model: DynamicalModel, config: TrainConfig, device: torch.device) -> None:
        self.model = model
        self.K = 1
        self.ensemble = False
        self.cfg = config
        self.mask = fused_available(model, device, config.fused)
        self.window = self.mask is None and config.fused != "off" and callable(getattr(model, "forward_window", None))
        self.has_reg = callable(getattr(model, "latent_regularization", None))

    @property
    def path(self) -> str:
        return "fused" if self.mask is not None else ("window" if self.window else "generic")

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, x_in: torch.Tensor, alpha: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Objective of one batch: x, x_in (1, B, T+1, N), alpha (1, T) -> (loss, (1,) values)."""
        loss = batch_loss(self.model, x[0], x_in[0], alpha[0], mask=self.mask, lambda_reg=self.cfg.lambda_reg,
                          has_reg=self.has_reg, window=self.window)
        return loss, np.array([loss.item()])

    def kappa(self, x_in: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            zhat = data_states(self.model, x_in[0, :, 1:])  # (B, T, M) at x_1..x_T
            return np.array([jacobian_kappa(self.model.jacobian, zhat)])

    def clip_gradients(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def member(self, k: int) -> DynamicalModel:
        return self.model

    def evaluate(self, val: np.ndarray, steps: int, smoothing: float) -> list[tuple[float, float]]:
        """[(D_stsp, D_H)] of a trajectory generated from val[0] (see :func:`evaluate_generated`)."""
        return [evaluate_generated(self.model, val, steps, smoothing)]

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return self.state()

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def batch_loss(model: DynamicalModel, x: torch.Tensor, x_in: torch.Tensor, alpha, *, mask: torch.Tensor | None,
               lambda_reg: float, has_reg: bool = True, window: bool = False) -> torch.Tensor:
    """Training objective of one batch (B, T+1, N): MSE on unforced predictions + lambda * reg.

    ``x_in`` (the possibly noisy window) drives forcing and the initial state; ``x`` gives the
    targets x_1..x_T. Paths: ``mask`` -> the fused PWL kernel; ``window`` -> the model's own
    ``forward_window`` (sequence models; parallel forms under full forcing); else the generic loop.
    """
    if mask is not None:
        loss = prediction_loss(model, fused_rollout(model, x_in, alpha, mask), x[:, 1:])  # z (B, T, M)
    elif window:
        a = torch.as_tensor(np.asarray(alpha, dtype=float), dtype=x.dtype, device=x.device)  # (T,)
        loss = torch.mean((model.forward_window(x_in, a) - x[:, 1:]) ** 2)  # predictions (B, T, N)
    else:
        loss = prediction_loss(model, generic_rollout(model, x_in, alpha), x[:, 1:])  # z (B, T, M)
    if lambda_reg > 0 and has_reg:
        loss = loss + lambda_reg * model.latent_regularization()
    return loss


# ============================================================================ the loop
def train_loop(engine, cfg: TrainConfig, train: DataSpec, val: np.ndarray, log: RunLog, *, device: torch.device,
               dtype: torch.dtype, seeds: list[int], progress: bool = False,
               callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training of ``engine``'s K members; returns the final bookkeeping.

    ``log`` (:class:`~dsrecon.training.rundir.RunLog`) owns config/history/checkpoints/best
    models; with ``log.resume`` it supplies the state to continue from.
    """
    K = engine.K
    data = torch.as_tensor(train.values, dtype=dtype).to(device)  # (Btraj, T, N), shared by samplers
    samplers = [WindowSampler(data, cfg.seq_len, cfg.batch_size, seed=0, device=device, dtype=dtype) for _ in seeds]
    noise_gens = [torch.Generator() for _ in seeds]
    opt = make_optimizer(engine.parameters(), cfg)
    forcing = make_forcing(cfg, K)
    guard = RollbackGuard(K, explosion_factor=cfg.explosion_factor, max_rollbacks=cfg.max_rollbacks,
                          lr_factor=cfg.rollback_lr_factor)
    st = {"epoch": 0, "step": 0, "seconds": 0.0, "best": [None] * K}
    best_states: list[dict[str, torch.Tensor] | None] = [None] * K
    if log.resume:
        ck = log.load_checkpoint()
        engine.load_state(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        forcing.load_state_dict(ck["trainer"]["forcing"])
        guard.load_state_dict(ck["trainer"]["guard"])
        st.update({k: ck["trainer"][k] for k in ("epoch", "step", "seconds", "best")})
        best_states = ck["best_states"]
    history = log.start(st["epoch"])

    def snapshot() -> dict[str, Any]:
        return {"model": engine.state(), "opt": copy.deepcopy(opt.state_dict()), "forcing": forcing.state_dict(),
                "step": st["step"]}

    guard.commit(snapshot())
    S = cfg.seq_len
    bar = progress_bar(progress, cfg.epochs, st["epoch"])
    try:
        while st["epoch"] < cfg.epochs:
            e = st["epoch"]  # 0-based index of the epoch being trained
            t0 = time.perf_counter()
            lr = cfg.lr_at(e) * guard.lr_scale
            for g in opt.param_groups:
                g["lr"] = lr
            for k, s in enumerate(seeds):
                samplers[k].generator.manual_seed(stream_seed(s, e, 0))
                noise_gens[k].manual_seed(stream_seed(s, e, 1))
            losses, failure = [], None
            for _ in range(cfg.batches_per_epoch):
                x = torch.stack([smp.sample() for smp in samplers])  # (K, B, T+1, N)
                x_in = x
                if cfg.input_noise > 0:
                    noise = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=dtype) for g in noise_gens])
                    x_in = x + cfg.input_noise * noise.to(device)
                if forcing.wants_update(st["step"]):
                    forcing.update(engine.kappa(x_in))
                loss, member_losses = engine.loss(x, x_in, forcing.alpha_matrix(S))
                failure = guard.check(member_losses)
                if failure is not None:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    engine.clip_gradients(cfg.grad_clip)
                opt.step()
                if not all(bool(torch.isfinite(p).all()) for p in engine.parameters()):
                    failure = "the optimiser step produced non-finite parameters"
                    break
                guard.record(member_losses)
                losses.append(member_losses)
                st["step"] += 1
            if failure is not None:
                good = guard.fail(failure, epoch=e + 1, lr=lr)
                engine.load_state(good["model"])
                opt.load_state_dict(good["opt"])
                forcing.load_state_dict(good["forcing"])
                st["step"] = good["step"]
                continue
            st["epoch"] = epoch = e + 1
            mean_loss = np.mean(np.stack(losses), axis=0)  # (K,)
            evals: list[tuple[float, float] | None] = [None] * K
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                evals = engine.evaluate(val, cfg.eval_steps, cfg.dh_smoothing)
                for k in range(K):
                    if is_better(evals[k], st["best"][k]):
                        st["best"][k] = {"epoch": epoch, "dstsp": evals[k][0], "dh": evals[k][1]}
                        best_states[k] = engine.member_state(k)
                        log.save_best(k, engine.member(k))
            st["seconds"] += time.perf_counter() - t0
            alphas = forcing.current_alpha
            rows = []
            for k in range(K):
                rows.append({"epoch": epoch, **({"member": k} if engine.ensemble else {}), "loss": float(mean_loss[k]),
                             "alpha": None if alphas is None else alphas[k], "lr": lr,
                             "dstsp": evals[k][0] if evals[k] else None, "dh": evals[k][1] if evals[k] else None,
                             "seconds": time.perf_counter() - t0, "rollbacks": guard.total})
            history.extend(rows)
            log.append_history(rows)
            guard.commit(snapshot())
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                log.save_checkpoint(
                    model_state=engine.state(), optimizer_state=opt.state_dict(), best_states=best_states,
                    trainer={"epoch": epoch, "step": st["step"], "seconds": st["seconds"], "best": st["best"],
                             "forcing": forcing.state_dict(), "guard": guard.state_dict()},
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(progress_postfix(rows))
            if callback is not None:
                callback(rows if engine.ensemble else rows[0])
    finally:
        if bar is not None:
            bar.close()
    for k in range(K):  # the best weights (or the last ones if no evaluation was finite)
        if best_states[k] is not None:
            engine.load_member_state(k, best_states[k])
    return {"history": history, "best": st["best"], "seconds": st["seconds"], "rollbacks": guard.total,
            "rollback_events": guard.events, "path": engine.path, "epochs": st["epoch"]}


def finish(log: RunLog, models: list[DynamicalModel], out: dict[str, Any], val: np.ndarray,
           cfg: TrainConfig) -> list[dict[str, Any]]:
    """Final metrics of the best model(s); written to metrics.json. Returns one dict per member."""
    per_member = [final_metrics(m, val, cfg, out["best"][k]) for k, m in enumerate(models)]
    log.write_metrics(per_member, {"epochs": out["epochs"], "seconds": out["seconds"], "rollbacks": out["rollbacks"],
                                   "rollback_events": out["rollback_events"], "rollout": out["path"]})
    return per_member


def fit_closed_form(model: DynamicalModel, train: DataSpec, val: np.ndarray, cfg: TrainConfig,
                    log: RunLog) -> dict[str, Any]:
    """Models fitted in closed form (``trainable_by_gradient = False``, e.g. the ESN readout):
    one fit on the training data, one evaluation, recorded as epoch 1 (epochs/lr/forcing unused)."""
    from dsrecon.data.trajectory import Trajectory

    t0 = time.perf_counter()
    model.fit_closed_form(Trajectory(train.values))
    ds, dh = evaluate_generated(model, val, cfg.eval_steps, cfg.dh_smoothing)
    best = {"epoch": 1, "dstsp": ds, "dh": dh}
    log.save_best(0, model)
    seconds = time.perf_counter() - t0
    row = {"epoch": 1, "loss": getattr(model, "train_mse_", None), "alpha": None, "lr": None, "dstsp": ds, "dh": dh,
           "seconds": seconds, "rollbacks": 0}
    log.append_history([row])
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    log.save_checkpoint(model_state=state, optimizer_state={"state": {}, "param_groups": []}, best_states=[state],
                        trainer={"epoch": 1, "step": 0, "seconds": seconds, "best": [best], "closed_form": True})
    return {"history": [row], "best": [best], "seconds": seconds, "rollbacks": 0, "rollback_events": [],
            "path": "closed-form", "epochs": 1}


# ============================================================================ public API
def fit(
    model: DynamicalModel,
    data: Any,
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    val_data: Any = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` with teacher forcing (DESIGN.md section 3).

    Parameters
    ----------
    model : DynamicalModel
        A model from :func:`dsrecon.models.build`; trained in place (it ends with the best weights).
    data : Trajectory, ndarray (T, N) / (B, T, N), tensor, or path (.npy/.npz/.csv)
        Training data, used as given (standardise beforehand). Must be finite, with at least
        seq_len + 1 time steps.
    config : TrainConfig, dict or None
        Settings (None: the reference defaults, :class:`TrainConfig`).
    out : path, optional
        Run directory (DESIGN.md section 6). Without it nothing is written and no checkpoint
        is kept.
    val_data : like ``data``, optional
        Validation series for the periodic D_stsp / D_H (default: the first training series).
    device, seed : optional
        Override ``config.device`` / ``config.seed``. A None seed is drawn and recorded.
    progress : bool
        Show a tqdm progress bar (off by default; the CLI turns it on).
    resume : bool
        Continue the run in ``out`` from its last checkpoint (config None: the stored settings).
    overwrite : bool
        Replace an existing run directory ``out``.
    callback : callable, optional
        Called after every epoch with the history row.

    Returns
    -------
    FitResult (model, history, run_dir, best_epoch, metrics, config).

    Raises
    ------
    ConfigError, DataError, UnknownNameError, RunDirError
        Bad settings, data or run directory, before any work and before anything is written.
    TrainingError
        Training diverged and roll-backs did not help.
    """
    if not isinstance(model, DynamicalModel):
        raise ConfigError(f"model must be a dsrecon DynamicalModel (see dsrecon.models.build), got {type(model).__name__}")
    log = RunLog.open(out, resume=resume, overwrite=overwrite)
    cfg = resolve_config(config, device=device, seed=seed, stored=log.stored_train_config())
    dev = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    train = prepare_data(data, "training data", cfg, model.obs_dim)
    val = prepare_data(val_data, "validation data", cfg, model.obs_dim, min_steps=2) if val_data is not None else None
    val_series = (val or train).values[0]
    evaluate_generated(None, val_series, cfg.eval_steps, cfg.dh_smoothing)  # validates the series for the metrics
    check_trainable(model, cfg)
    model.to(device=dev, dtype=dtype)
    model.train()
    if not getattr(model, "trainable_by_gradient", True):
        log.begin(cfg, [model.config], train, val, seeds=[cfg.seed], ensemble=False)
        out_state = fit_closed_form(model, train, val_series, cfg, log)
        return FitResult(model=model, history=out_state["history"], run_dir=log.path, best_epoch=1,
                         metrics=finish(log, [model], out_state, val_series, cfg)[0], config=cfg)
    engine = SingleEngine(model, cfg, dev)
    log.begin(cfg, [model.config], train, val, seeds=[cfg.seed], ensemble=False)
    out_state = train_loop(engine, cfg, train, val_series, log, device=dev, dtype=dtype, seeds=[cfg.seed],
                           progress=progress, callback=callback)
    best = out_state["best"][0] or {}
    metrics = finish(log, [model], out_state, val_series, cfg)[0]
    return FitResult(model=model, history=out_state["history"], run_dir=log.path, best_epoch=int(best.get("epoch", 0)),
                     metrics=metrics, config=cfg)
