"""Teacher-forcing training (DESIGN.md sections 3 and 6).

``fit(model, data, config)`` trains one model; ``fit_ensemble(name, data, config, n_members=K)``
trains K seeds of one configuration in a single vectorised pass. Settings live in
:class:`TrainConfig` (the reference defaults); forcing strategies (GTF, adaptive GTF, sparse TF,
free running) in :mod:`.forcing`; run directories, checkpoints and resuming in :mod:`.rundir` and
:mod:`.checkpoint`. The fused forced-rollout kernel is :mod:`dsrecon.training.fused`.

Example
-------
>>> from dsrecon.models import build
>>> from dsrecon.training import fit, TrainConfig
>>> model = build("clipped-shplrnn", obs_dim=3, latent_dim=3, hidden_dim=50, seed=0)
>>> result = fit(model, "lorenz63_on0.05_train.npy", TrainConfig(epochs=100), out="runs/l63")
>>> result.best_epoch, result.metrics["dstsp"]
"""

from dsrecon.training.config import FORCINGS, TrainConfig
from dsrecon.training.ensemble import EnsembleResult, fit_ensemble
from dsrecon.training.forcing import (
    AdaptiveGTF,
    ConstantGTF,
    Forcing,
    FreeRunning,
    SparseTF,
    generic_rollout,
    make_forcing,
)
from dsrecon.training.rundir import read_history
from dsrecon.training.trainer import FitResult, batch_loss, fit

__all__ = [
    "FORCINGS",
    "AdaptiveGTF",
    "ConstantGTF",
    "EnsembleResult",
    "FitResult",
    "Forcing",
    "FreeRunning",
    "SparseTF",
    "TrainConfig",
    "batch_loss",
    "fit",
    "fit_ensemble",
    "generic_rollout",
    "make_forcing",
    "read_history",
]
