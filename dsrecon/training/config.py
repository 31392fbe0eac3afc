"""Training settings: one validated dataclass with the reference defaults (DESIGN.md section 3).

The defaults are those of the reference PLRNN implementations:

* GTF-shPLRNN (Hess et al., "Generalized Teacher Forcing for Learning Chaotic Dynamics",
  ICML 2023; ``settings/defaults.json`` of DurstewitzLab/GTF-shPLRNN): RAdam, lr 1e-3 -> 1e-6
  (exponential per epoch), 16 sequences of length 200 per batch, 50 batches per epoch, adaptive
  GTF starting at alpha = 1 and updated every 5 optimiser steps with decay 0.999, 5000 epochs,
  metrics every 25 epochs, no gradient clipping, no input noise.
* Latent regularisation lambda = 1e-5 (DESIGN.md section 3).
* AL-RNN (Brenner et al., "Almost-Linear RNNs Yield Highly Interpretable Symbolic Codes in
  Dynamical Systems Reconstruction", NeurIPS 2024): sparse TF with tau = 16, lr 1e-3 -> 1e-5,
  2000 epochs (``TrainConfig.preset("alrnn")``).

A config round-trips through plain JSON (:meth:`TrainConfig.to_dict` / :meth:`from_dict`) and
can be read from TOML (:meth:`from_toml`; the keys either at top level or in a ``[train]`` table).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsrecon.errors import ConfigError, unknown_name

#: forcing strategies: generalised TF (constant alpha), adaptive GTF, sparse TF, free running
FORCINGS = ("gtf", "agtf", "stf", "free")
OPTIMIZERS = ("radam", "adam")
DTYPES = ("float32", "float64")
FUSED_MODES = ("auto", "on", "off")

#: named presets (reference settings of the papers); values override the defaults
PRESETS: dict[str, dict[str, Any]] = {
    # Hess et al. ICML 2023, settings/defaults.json (+ lambda 1e-5 of DESIGN.md)
    "gtf-shplrnn": {},
    # Brenner et al. NeurIPS 2024, settings/lorenz63.json of DurstewitzLab/ALRNN-DSR
    "alrnn": {"forcing": "stf", "tau": 16, "lr_end": 1e-5, "epochs": 2000},
}


@dataclass
class TrainConfig:
    """Every training setting (plain JSON types only).

    Attributes
    ----------
    epochs : int
        Number of epochs E (>= 1).
    batches_per_epoch : int
        Optimiser steps per epoch.
    batch_size : int
        B, windows per batch.
    seq_len : int
        T, prediction targets per window (a window holds T + 1 samples x_0..x_T).
    optimizer : {"radam", "adam"}
    lr, lr_end : float
        Learning rate at epoch 0 and after the last epoch; exponential decay per epoch,
        ``lr_e = lr * gamma**e`` with ``gamma = (lr_end / lr) ** (1 / epochs)``.
    forcing : {"gtf", "agtf", "stf", "free"}
        Generalised teacher forcing with constant ``alpha``; adaptive GTF; sparse teacher
        forcing every ``tau`` steps; free running (alpha = 0).
    alpha : float or None
        GTF alpha in [0, 1] (constant for "gtf", the start value for "agtf"). None resolves to
        0.1 for "gtf" and 1.0 for "agtf" (the reference start); it is unused by "stf"/"free".
    tau : int
        Sparse-TF forcing interval (>= 1); forced at window steps 0, tau, 2 tau, ...
    alpha_update_every : int
        Adaptive GTF: optimiser steps between alpha updates (reference 5).
    alpha_decay : float
        Adaptive GTF: ``a <- decay * a + (1 - decay) * ahat`` when ahat <= a (reference 0.999).
    lambda_reg : float
        Weight of the model's ``latent_regularization()`` (ignored for models without one).
    input_noise : float
        Standard deviation of Gaussian noise added to the windows used for forcing and for the
        initial state; the loss targets stay clean. (The Julia reference adds the noise to the
        whole window, targets included.)
    grad_clip : float
        Maximal global gradient norm; 0 disables clipping (the default).
    eval_every : int
        Epochs between evaluations (D_stsp, D_H of a generated trajectory); the last epoch is
        always evaluated.
    eval_steps : int
        Length of the generated trajectory, compared with the first ``eval_steps`` points of the
        validation series (capped at its length).
    dh_smoothing : float
        Gaussian smoothing sigma of the power spectra for D_H (reference 20).
    checkpoint_every : int
        Epochs between checkpoints of the full training state (resume point).
    max_rollbacks : int
        Consecutive failed epochs (non-finite or exploding loss) tolerated before stopping.
    explosion_factor : float
        A batch loss above ``explosion_factor`` x the running median counts as an explosion.
    rollback_lr_factor : float
        Learning-rate factor applied at each roll-back (in (0, 1)).
    fused : {"auto", "on", "off"}
        Fast rollout paths: the fused forced-rollout kernel for piecewise-linear models ("auto":
        on CPU, and on CUDA as CUDA-graph replay when ``DSRECON_CUDA_GRAPHS=1`` (opt-in); "on":
        on every device) and the sequence models' own ``forward_window`` (both "auto" and "on");
        "off": always the generic Python loop over ``force``/``step`` (the reference; same
        results).
    dtype : {"float32", "float64"}
        Training precision (float32; float64 for verification).
    seed : int or None
        Seed of initial windows, noise, and everything random in training (None: drawn once and
        recorded).
    device : str
        "cpu" (default), "cuda", "cuda:1", ...
    """

    epochs: int = 5000
    batches_per_epoch: int = 50
    batch_size: int = 16
    seq_len: int = 200
    optimizer: str = "radam"
    lr: float = 1e-3
    lr_end: float = 1e-6
    forcing: str = "agtf"
    alpha: float | None = None
    tau: int = 16
    alpha_update_every: int = 5
    alpha_decay: float = 0.999
    lambda_reg: float = 1e-5
    input_noise: float = 0.0
    grad_clip: float = 0.0
    eval_every: int = 25
    eval_steps: int = 10_000
    dh_smoothing: float = 20.0
    checkpoint_every: int = 10
    max_rollbacks: int = 5
    explosion_factor: float = 1e6
    rollback_lr_factor: float = 0.5
    fused: str = "auto"
    dtype: str = "float32"
    seed: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Check every value; resolve ``alpha``. Raises ConfigError / UnknownNameError."""
        for name in ("epochs", "batches_per_epoch", "batch_size", "seq_len", "tau",
                     "alpha_update_every", "eval_every", "checkpoint_every"):
            _int(self, name, minimum=1)
        _int(self, "eval_steps", minimum=2)
        _int(self, "max_rollbacks", minimum=0)
        for name in ("lr", "lr_end"):
            v = _float(self, name)
            if not v > 0:
                raise ConfigError(f"{name} must be > 0, got {v}; a typical value is 1e-3")
        for name in ("lambda_reg", "input_noise", "grad_clip"):
            if _float(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not _float(self, "dh_smoothing") > 0:
            raise ConfigError(f"dh_smoothing must be > 0, got {self.dh_smoothing}")
        if not 0 <= _float(self, "alpha_decay") < 1:
            raise ConfigError(f"alpha_decay must be in [0, 1), got {self.alpha_decay}; the reference uses 0.999")
        if not _float(self, "explosion_factor") > 1:
            raise ConfigError(f"explosion_factor must be > 1, got {self.explosion_factor}")
        if not 0 < _float(self, "rollback_lr_factor") < 1:
            raise ConfigError(f"rollback_lr_factor must be in (0, 1), got {self.rollback_lr_factor}")
        self.forcing = _choice(self, "forcing", FORCINGS, "forcing strategy")
        self.optimizer = _choice(self, "optimizer", OPTIMIZERS, "optimizer")
        self.dtype = _choice(self, "dtype", DTYPES, "dtype")
        self.fused = _choice(self, "fused", FUSED_MODES, "fused mode")
        if self.alpha is not None:
            a = _float(self, "alpha")
            if not 0.0 <= a <= 1.0:
                raise ConfigError(
                    f"alpha must be in [0, 1], got {a}: 0 is free running, 1 full teacher forcing"
                )
        elif self.forcing in ("gtf", "agtf"):
            self.alpha = 0.1 if self.forcing == "gtf" else 1.0
        if self.seed is not None:
            _int(self, "seed", minimum=0)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        return self

    @property
    def lr_gamma(self) -> float:
        """Per-epoch decay factor ``(lr_end / lr) ** (1 / epochs)``."""
        return (self.lr_end / self.lr) ** (1.0 / self.epochs)

    def lr_at(self, epoch: int) -> float:
        """Scheduled learning rate of (0-based) epoch ``epoch`` (before roll-back factors)."""
        return self.lr * self.lr_gamma ** int(epoch)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every setting."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TrainConfig":
        """Build from a dict; unknown keys raise a ConfigError that suggests close names."""
        d = dict(d or {})
        known = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
        for key in d:
            if key not in known:
                err = unknown_name("training setting", str(key), known)
                raise ConfigError(str(err))
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        """Reference settings by name: ``"gtf-shplrnn"`` (the defaults) or ``"alrnn"``."""
        key = str(name).lower()
        if key not in PRESETS:
            raise unknown_name("training preset", str(name), PRESETS)
        return cls.from_dict({**PRESETS[key], **overrides})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with some settings changed (``alpha`` re-resolved if forcing changes)."""
        d = self.to_dict()
        if "forcing" in changes and "alpha" not in changes and changes["forcing"] != self.forcing:
            d["alpha"] = None
        d.update(changes)
        return TrainConfig.from_dict(d)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read training config {p}: {exc}") from None
        return cls.from_dict(d.get("train", d) if isinstance(d, dict) else d)

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        """Read a TOML file: the keys at top level, or in a ``[train]`` table."""
        doc = read_toml(path)
        train = doc.get("train")
        if train is not None and not isinstance(train, dict):
            raise ConfigError(f"{path}: 'train' must be a table ([train]), got {type(train).__name__}")
        return cls.from_dict(train if train is not None else _top_level(doc))


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file (tomllib) with a ConfigError naming the file on any problem."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found; check the path") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse TOML config {p}: {exc}") from None


def _top_level(d: dict[str, Any]) -> dict[str, Any]:
    """Top-level (non-table) entries of a parsed TOML document."""
    return {k: v for k, v in d.items() if not isinstance(v, dict)}


# ---------------------------------------------------------------------- field checks
def _int(cfg: TrainConfig, name: str, *, minimum: int) -> int:
    v = getattr(cfg, name)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}")
    setattr(cfg, name, v)
    return v


def _float(cfg: TrainConfig, name: str) -> float:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{name} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {v}")
    setattr(cfg, name, v)
    return v


def _choice(cfg: TrainConfig, name: str, choices: tuple[str, ...], kind: str) -> str:
    v = getattr(cfg, name)
    if not isinstance(v, str) or v.lower() not in choices:
        raise unknown_name(kind, str(v), choices)
    return v.lower()
