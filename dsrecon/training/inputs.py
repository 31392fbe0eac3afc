"""What the trainer checks and resolves before any work (settings, device, data, model), and
its helpers for evaluation, optimiser and progress bar.

Glossary: B trajectories, T time steps, N observed dim.

Bad input raises here, before a run directory is touched: unknown or out-of-range settings
(:class:`~dsrecon.training.TrainConfig`), an unavailable device, data that are non-finite,
shorter than one training window or of the wrong dimension, validation data the metrics cannot
use. Also the per-epoch random streams (:func:`stream_seed`) and the periodic evaluation
(:func:`evaluate_generated`: D_stsp and D_H of a generated trajectory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsrecon.data.io import load_trajectory, validate_array
from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError
from dsrecon.models.base import DynamicalModel
from dsrecon.training.config import TrainConfig
from dsrecon.training.rundir import array_sha256


# ---------------------------------------------------------------------------- settings
def resolve_config(config: Any, *, device: Any = None, seed: int | None = None,
                   stored: dict[str, Any] | None = None) -> TrainConfig:
    """A fresh validated TrainConfig from ``config`` (TrainConfig, dict or None) and overrides.

    ``stored`` (the settings of a run being resumed) is used when ``config`` is None and
    supplies the seed when none is given. A seed that is still None is drawn at random (and
    recorded in the run's config.json).
    """
    if config is None:
        cfg = TrainConfig.from_dict(stored) if stored is not None else TrainConfig()
    elif isinstance(config, TrainConfig):
        cfg = TrainConfig.from_dict(config.to_dict())
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(config)
    else:
        raise ConfigError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")
    changes: dict[str, Any] = {}
    if device is not None:
        changes["device"] = str(device)
    if seed is not None:
        changes["seed"] = seed
    elif cfg.seed is None:
        stored_seed = (stored or {}).get("seed")
        changes["seed"] = stored_seed if stored_seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    return cfg.replace(**changes) if changes else cfg


def resolve_device(name: str | torch.device) -> torch.device:
    """torch.device for ``name``; ConfigError if it does not exist on this machine."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {name!r} ({exc}); use 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(name)!r} requested but CUDA is not available here "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(name)!r}: only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device {str(name)!r} requested but MPS is not available; use device='cpu'")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {str(name)!r}; use 'cpu' or 'cuda'")
    return dev


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of random stream ``stream`` (0 windows, 1 noise) in ``epoch`` of a run seeded ``seed``."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(stream)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] % np.uint64(2**63))


# -------------------------------------------------------------------------- model / optimiser
#: adaptive GTF computes ||J||_2 at B*T states every few steps: only for small latent spaces
AGTF_MAX_LATENT = 128


def check_trainable(model: DynamicalModel, cfg: TrainConfig) -> None:
    """ConfigError before any work if the model cannot be trained with these settings."""
    if getattr(model, "trainable_by_gradient", True):
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"model {model.name!r} has no trainable parameters; nothing to fit")
        if cfg.forcing == "agtf" and model.latent_dim > AGTF_MAX_LATENT:
            raise ConfigError(
                f"adaptive GTF needs the spectral norm of the {model.latent_dim}x{model.latent_dim} Jacobian at "
                f"every state of a batch, too expensive for latent_dim > {AGTF_MAX_LATENT}; use forcing='gtf' "
                "with a fixed alpha, or 'stf'"
            )
    elif not callable(getattr(model, "fit_closed_form", None)):
        raise ConfigError(f"model {model.name!r} is not trained by gradient descent and has no fit_closed_form()")


def make_optimizer(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """RAdam (reference) or Adam over ``params`` at the initial learning rate."""
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=cfg.lr)
    return torch.optim.Adam(params, lr=cfg.lr)


def progress_bar(enabled: bool, total: int, initial: int):
    """A tqdm bar over epochs (None when disabled)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)


def progress_postfix(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Bar postfix from an epoch's history rows (medians over ensemble members)."""
    r = rows[0]
    out = {"loss": f"{np.median([x['loss'] for x in rows]):.4g}"}
    if r["alpha"] is not None:
        out["alpha"] = f"{r['alpha']:.3f}"
    if r["dstsp"] is not None:
        out["dstsp"] = f"{np.median([x['dstsp'] for x in rows]):.3g}"
    return out


# -------------------------------------------------------------------------------- data
@dataclass
class DataSpec:
    """Validated data: values (B, T, N) float64 and their provenance (plain JSON ``info``)."""

    values: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def prepare_data(data: Any, what: str, cfg: TrainConfig, obs_dim: int, *, min_steps: int | None = None) -> DataSpec:
    """Load and validate training / validation data (before any work).

    ``data``: Trajectory, ndarray / tensor (T, N) or (B, T, N), or a path (.npy/.npz/.csv).
    Checks: finite, N == obs_dim, at least ``min_steps`` (default seq_len + 1) time steps.
    """
    need = cfg.seq_len + 1 if min_steps is None else int(min_steps)
    info: dict[str, Any] = {"path": None, "file_sha256": None, "meta": {}}
    if data is None:
        raise DataError(f"{what} is None; pass a Trajectory, an array (T, N) or a file path")
    if isinstance(data, (str, Path)):
        data = load_trajectory(data, min_steps=1)
    if isinstance(data, Trajectory):
        if data.meta and data.meta.get("source"):  # read from a file by load_trajectory
            info.update(path=data.meta.get("source"), file_sha256=data.meta.get("sha256"))
        values = data.values
        if data.failed is not None and np.any(data.failed):
            values = values[~np.asarray(data.failed, dtype=bool)]
            if values.shape[0] == 0:
                raise DataError(f"{what}: every trajectory is flagged failed; nothing to train on")
        info["meta"] = {k: v for k, v in (data.meta or {}).items() if k not in ("source", "sha256")}
        if data.dt is not None:
            info["dt"] = float(data.dt)
    else:
        values = data
    values = validate_array(values, what, min_steps=1)
    if values.ndim == 2:
        values = values[None]
    B, T, N = values.shape
    if N != obs_dim:
        raise ConfigError(
            f"{what} have N={N} observed dimensions but the model has obs_dim={obs_dim}; "
            f"build the model with obs_dim={N}"
        )
    if T < need:
        window = f"one training window (seq_len + 1 = {need})" if min_steps is None else f"{need}"
        raise DataError(
            f"{what} have T={T} time steps, fewer than {window}; use a shorter seq_len (--seq-len) "
            "or longer data"
        )
    info.update(sha256=array_sha256(values), shape=[int(B), int(T), int(N)], dtype=str(values.dtype),
                first_point=[float(v) for v in values[0, 0]])
    return DataSpec(np.asarray(values, dtype=np.float64), info)


# -------------------------------------------------------------------------- evaluation
def evaluate_generated(model: Any, val: np.ndarray, steps: int, smoothing: float) -> tuple[float, float]:
    """(D_stsp, D_H) of a trajectory generated from ``val[0]`` vs ``val[:steps]`` (T capped).

    ``model`` None compares the series with itself, which validates it for the metrics (a
    constant dimension, for example, is a DataError) before training starts. A diverged
    trajectory gives (inf, 1.0) (the metrics' worst values).
    """
    n = min(int(steps), val.shape[0])
    x_true = val[:n]
    if model is None:
        x_gen = x_true
    else:
        p = next(iter(model.parameters()), None)
        dtype = p.dtype if p is not None else torch.float32
        x0 = torch.as_tensor(val[:1], dtype=dtype, device=model.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                x_gen = model.generate(x0, n)[0].to("cpu", torch.float64).numpy()
        finally:
            model.train(was_training)
    try:
        return series_metrics(x_true, x_gen, smoothing)
    except DataError as exc:
        if model is not None:
            raise
        raise DataError(
            f"the validation series (first {n} of {val.shape[0]} steps, eval_steps={steps}) cannot be "
            f"evaluated with D_stsp / D_H: {exc}. Adjust eval_steps / dh_smoothing or pass other val_data"
        ) from None


def series_metrics(x_true: np.ndarray, x_gen: np.ndarray, smoothing: float) -> tuple[float, float]:
    """(D_stsp, D_H) of a generated series x_gen (T, N) against x_true (T, N)."""
    from dsrecon.metrics import hellinger_distance, state_space_divergence

    return (float(state_space_divergence(x_true, x_gen)),
            float(hellinger_distance(x_true, x_gen, smoothing=smoothing)))


def final_metrics(model: Any, val: np.ndarray, cfg: TrainConfig, best: dict[str, Any] | None,
                  pe_steps: int = 20) -> dict[str, Any]:
    """Metrics of the best model: its evaluation D_stsp / D_H and PE(pe_steps) on the series."""
    from dsrecon.metrics import prediction_error

    n = min(int(cfg.eval_steps), val.shape[0])
    out: dict[str, Any] = {
        "best_epoch": None if best is None else best["epoch"],
        "dstsp": None if best is None else best["dstsp"],
        "dh": None if best is None else best["dh"],
        "T": n,
        "pe": None,
        "pe_steps": pe_steps,
    }
    if n > pe_steps:
        pe = float(prediction_error(model, val[:n], n=pe_steps))
        out["pe"] = pe if math.isfinite(pe) else None
    return out


def is_better(new: tuple[float, float], best: dict[str, Any] | None) -> bool:
    """Lower D_stsp wins (ties: lower D_H); a non-finite D_stsp never replaces a finite best.

    Without any finite evaluation so far, the most recent evaluation is kept (so the run always
    has a model)."""
    ds, dh = new
    if best is None:
        return True
    bds = best["dstsp"]
    b_ok, n_ok = bds is not None and np.isfinite(bds), np.isfinite(ds)
    if not n_ok:
        return not b_ok
    if not b_ok:
        return True
    if ds != bds:
        return ds < bds
    bdh = best["dh"] if best["dh"] is not None else np.inf
    return dh < bdh
