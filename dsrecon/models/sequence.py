"""Shared base of the sequence models: latent state z = [observation slot; memory].

Glossary (teaching size)
------------------------
B   batch
T   prediction steps of a training window (the window holds T + 1 observations x_0 .. x_T)
N   observed dim (``obs_dim``)
M   latent dim (``latent_dim``) = N + size of the flattened memory
C   context length (warm-up observations for :meth:`init_state`)

LSSL, Mamba, the echo state network, LSTM/GRU and the neural ODE all use the same layout of the
protocol's latent vector (DESIGN.md section 2)::

    z_t = [x_t ; memory_t]        x_t: (N,) the current observation (or the model's prediction
                                  of it), memory_t: everything the model remembers about
                                  x_0 .. x_{t-1} (SSM states, conv buffers, reservoir, h/c, the
                                  unobserved ODE coordinates)

so that ``observe(z) = z[:, :N]``, ``step`` consumes the slot and writes the prediction of the
next observation into it, and teacher forcing is the protocol's default
``force(z, x, a) = [(1 - a) z_:N + a x ; memory]``: the data enter through the slot, the memory
is left alone.

``forward_window`` (the trainer's fast hook)
--------------------------------------------
``forward_window(x (B, T+1, N), alpha_schedule=1.0) -> predictions (B, T, N)`` computes exactly
what the trainer's generic loop computes::

    z_0 = init_state(x[:, 0])
    for t in 0 .. T-1:
        z_{t+1} = step(force(z_t, x[:, t], alpha_t))
        pred[:, t] = observe(z_{t+1})          # compared with x[:, t+1]

``alpha_schedule`` is a float in [0, 1] or a length-T sequence / 1-d tensor (alpha_t is used
when forcing with x_t; alpha_0 is immaterial since z_0 already holds x_0). When every alpha_t
is 1 (full teacher forcing, the observed sequence is fed in and the next observation
predicted), sequence models run their parallel form (convolutional mode for LSSL, the
log-depth scan for Mamba, one fused cuDNN call for LSTM/GRU, one batched solve for a
non-augmented neural ODE). Otherwise (GTF with alpha < 1, free running, sparse forcing given as
a 0/1 schedule) the prediction depends on the model's own earlier outputs and the exact
sequential loop above runs. Gradients flow through everything (nothing is detached); the
memory starts from the state that ``init_state(x_0)`` gives (zeros, or a learned map for LSTM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from dsrecon.errors import ConfigError, DataError
from dsrecon.models.base import DynamicalModel


def resolve_latent_dim(model: str, given: int | None, implied: int, explain: str) -> int:
    """Check a requested latent_dim against the one the hyper-parameters imply.

    ``given=None`` means "derive it". Raises ConfigError naming the implied value otherwise.
    """
    if given is None:
        return implied
    if isinstance(given, bool) or int(given) != given or int(given) != implied:
        raise ConfigError(
            f"{model}: latent_dim={given!r} does not match the state size implied by the "
            f"hyper-parameters, {implied} ({explain}); pass latent_dim=None (derived) or {implied}, "
            "or change the hyper-parameters"
        )
    return implied


def check_positive(model: str, **values: float) -> None:
    """ConfigError unless every value is > 0."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{model}: {k} must be a positive number, got {v!r}")


def check_int(model: str, minimum: int, **values: int) -> None:
    """ConfigError unless every value is an int >= minimum."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{model}: {k} must be an integer >= {minimum}, got {v!r}")


class SequenceModel(DynamicalModel):
    """A :class:`DynamicalModel` with z = [x_t; memory] and a ``forward_window`` hook."""

    #: the trainer fits this model by gradient descent (the ESN overrides: closed-form readout)
    trainable_by_gradient: ClassVar[bool] = True
    #: latent_dim is fixed by the hyper-parameters (LSSL, Mamba): callers should pass
    #: ``latent_dim=None`` (derived) rather than a default such as obs_dim
    latent_dim_from_hyper: ClassVar[bool] = False

    # ------------------------------------------------------------------ windows
    def check_window(self, x: torch.Tensor) -> None:
        """DataError unless x is (B, T+1, N) with T >= 1."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.obs_dim or x.shape[1] < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(
                f"{self.name}: a training window must be a tensor (B, T+1, N) with N = {self.obs_dim} "
                f"and T + 1 >= 2 observations, got {shape}"
            )

    def check_context(self, x: torch.Tensor) -> torch.Tensor:
        """Validate x (B, N) or a context (B, C, N); return it as (B, C, N)."""
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.obs_dim or x.shape[-2] < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{self.name}: init_state needs x (B, N) or a context (B, C, N) with N = {self.obs_dim}, got {shape}")
        return x[:, None] if x.dim() == 2 else x

    @staticmethod
    def alpha_vector(alpha: float | Sequence[float] | torch.Tensor, T: int, like: torch.Tensor) -> torch.Tensor:
        """The forcing schedule as a tensor (T,) on like's device/dtype; ConfigError if invalid."""
        a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
        if a.dim() == 0:
            a = a.expand(T)
        if a.dim() != 1 or a.shape[0] != T:
            raise ConfigError(f"alpha_schedule must be a float or have length T = {T}, got shape {tuple(a.shape)}")
        if not bool(((a >= 0) & (a <= 1)).all()):
            raise ConfigError("alpha_schedule values must lie in [0, 1]")
        return a

    def forward_window(self, x: torch.Tensor, alpha_schedule: float | Sequence[float] | torch.Tensor = 1.0) -> torch.Tensor:
        """Predictions (B, T, N) of x[:, 1:] from the window x (B, T+1, N); see the module doc."""
        self.check_window(x)
        alpha = self.alpha_vector(alpha_schedule, x.shape[1] - 1, x)
        if bool((alpha == 1).all()):
            return self.teacher_forced_window(x)
        return self.protocol_window(x, alpha)

    def teacher_forced_window(self, x: torch.Tensor) -> torch.Tensor:
        """alpha = 1 everywhere: (B, T+1, N) -> (B, T, N). Subclasses override with a parallel form."""
        return self.protocol_window(x, torch.ones(x.shape[1] - 1, dtype=x.dtype, device=x.device))

    def protocol_window(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The reference loop z <- step(force(z, x_t, alpha_t)): (B, T+1, N), (T,) -> (B, T, N)."""
        z = self.init_state(x[:, 0])  # (B, M)
        preds = []
        for t in range(x.shape[1] - 1):
            z = self.step(self.force(z, x[:, t], alpha[t]))  # (B, M)
            preds.append(self.observe(z))  # (B, N)
        return torch.stack(preds, dim=1)
