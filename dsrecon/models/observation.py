"""Observation models of the PLRNN family and the initial-state mapping.

Glossary: B batch, C context length, N observed dim, M latent dim.

Two observation models, as in the DurstewitzLab reference code (GTF-shPLRNN ``ObservationModels``,
ALRNN-DSR):

``identity`` (default)
    x = z[:N]: the first N latent units are read out (requires M >= N). The initial state is
    ``[x_1; L x_1]`` with a trained L of shape (M - N, N) that estimates the M - N unobserved units
    (the reference ``Identity`` model; no L when M == N). Teacher forcing uses partial forcing:
    the data-inferred state is ``[x; z_{N:}]`` (observed units replaced, free units unchanged;
    DESIGN.md section 3).
    L is initialised Glorot-uniform, U(+-sqrt(6 / M)), in the GTF-shPLRNN code (PLRNN,
    dendPLRNN, shPLRNN; ``l_init="glorot"``) and U(+-1/sqrt(N)) in the AL-RNN code
    (``l_init="uniform"``; the AL-RNN Python tutorial's ``B`` matrix is the same).
    The reference regulariser of this model is the L2 penalty of L. (The GTF-shPLRNN trainer
    without ``partial_forcing`` forces towards ``[x; 0]`` instead, pulling the free units to 0.)

``affine``
    x = B z + b with trained B (N, M) and b (N,). The data-inferred state is the least-squares
    inverse ``zhat = B^+ (x - b)`` (Moore-Penrose pseudo-inverse, differentiable through
    ``torch.linalg.pinv``), used both for ``init_state`` and for teacher forcing (full forcing:
    zhat does not depend on the current z). B ~ N(0, 2/M) (Flux ``kaiming_normal(N, M)``, as in
    the reference), b = 0. The reference regulariser pulls the condition number of B towards 1:
    ``(1 - s_max / (s_min + 1e-8))^2``. The reference code may also leave out the bias (its
    default ``use_bias=false``); here b is always present and trained.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dsrecon.errors import ConfigError, DataError, unknown_name

#: observation model kinds accepted by ``obs=``
OBS_KINDS = ("identity", "affine")
#: initialisations of the identity model's L
L_INITS = ("glorot", "uniform")


def _check_x(x: Any, N: int, who: str) -> torch.Tensor:
    """x (B, N) or a context (B, C, N) -> the last observation (B, N)."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{who}: observations must be a torch.Tensor of shape (B, N={N}), got {type(x).__name__}")
    if x.dim() not in (2, 3) or x.shape[-1] != N:
        raise DataError(
            f"{who}: observations must have shape (B, N={N}) or (B, C, N={N}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise DataError(f"{who}: observations must be floating point, got {x.dtype}")
    return x[:, -1] if x.dim() == 3 else x


def _check_same_dtype(x: torch.Tensor, ref: torch.Tensor, who: str) -> None:
    if x.dtype != ref.dtype:
        raise DataError(f"{who}: tensor has dtype {x.dtype} but the model is {ref.dtype}; convert one of them")


class IdentityObservation(nn.Module):
    """x = z[:N]; init_state [x; L x]; partial teacher forcing ``[x; z_{N:}]``.

    Parameters
    ----------
    obs_dim, latent_dim : int
        N and M (M >= N).
    l_init : {"glorot", "uniform"}
        Initialisation of L (M - N, N); see the module docstring.
    """

    kind = "identity"

    def __init__(self, obs_dim: int, latent_dim: int, *, l_init: str = "glorot") -> None:
        super().__init__()
        N, M = int(obs_dim), int(latent_dim)
        if M < N:
            raise ConfigError(
                f"identity observation reads the first N={N} latent units out, so latent_dim M={M} must be "
                f">= obs_dim N={N}; increase latent_dim or use obs='affine'"
            )
        if l_init not in L_INITS:
            raise ConfigError(f"l_init must be one of {L_INITS}, got {l_init!r}")
        self.obs_dim, self.latent_dim = N, M
        if M > N:
            r = math.sqrt(6.0 / M) if l_init == "glorot" else 1.0 / math.sqrt(N)
            self.L = nn.Parameter(torch.empty(M - N, N).uniform_(-r, r))
        else:
            self.register_parameter("L", None)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """(..., M) -> (..., N): the first N units."""
        return z[..., : self.obs_dim]

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N) or (B, C, N) -> z (B, M) = [x; L x] (last step of a context)."""
        x = _check_x(x, self.obs_dim, "init_state")
        if self.L is None:
            return x.clone()
        _check_same_dtype(x, self.L, "init_state")
        return torch.cat([x, x @ self.L.T], dim=-1)

    def data_state(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Partial forcing: (B, N), (B, M) -> [x; z_{N:}] (B, M)."""
        x = _check_x(x, self.obs_dim, "data_state")
        if z.shape[-1] != self.latent_dim or z.shape[:-1] != x.shape[:-1]:
            want = tuple(x.shape[:-1]) + (self.latent_dim,)
            raise DataError(f"data_state: z must have shape {want}, got {tuple(z.shape)}")
        return torch.cat([x, z[..., self.obs_dim :]], dim=-1)

    def affine_map(self, ref: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The read-out as an affine map: (B (N, M), b (N,)) = ([I 0], 0), dtype/device of ``ref``."""
        ref = self.L if self.L is not None else (ref if ref is not None else torch.empty(0))
        B = torch.eye(self.obs_dim, self.latent_dim, dtype=ref.dtype, device=ref.device)
        return B, B.new_zeros(self.obs_dim)

    def regularization(self, ref: torch.Tensor | None = None) -> torch.Tensor:
        """Reference ``regularize(::Identity)``: sum of squares of L (0 when M == N)."""
        if self.L is None:
            return ref.new_zeros(()) if ref is not None else torch.zeros(())
        return (self.L * self.L).sum()

    def extra_repr(self) -> str:
        return f"N={self.obs_dim}, M={self.latent_dim}"


class AffineObservation(nn.Module):
    """x = B z + b; data-inferred state zhat = B^+ (x - b) (init_state and teacher forcing).

    Parameters
    ----------
    obs_dim, latent_dim : int
        N and M (any sizes; for M >= N and B of full row rank, ``observe(init_state(x)) == x``).
    """

    kind = "affine"

    def __init__(self, obs_dim: int, latent_dim: int) -> None:
        super().__init__()
        N, M = int(obs_dim), int(latent_dim)
        self.obs_dim, self.latent_dim = N, M
        self.B = nn.Parameter(torch.randn(N, M) * math.sqrt(2.0 / M))
        self.b = nn.Parameter(torch.zeros(N))

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """(..., M) -> (..., N) = B z + b."""
        return z @ self.B.T + self.b

    def pinv(self) -> torch.Tensor:
        """B^+ (M, N), differentiable."""
        return torch.linalg.pinv(self.B)

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N) or (B, C, N) -> zhat (B, M) = B^+ (x - b) (last step of a context)."""
        x = _check_x(x, self.obs_dim, "init_state")
        _check_same_dtype(x, self.B, "init_state")
        return (x - self.b) @ self.pinv().T

    def data_state(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Full forcing with the least-squares state: (B, N), (B, M) -> B^+ (x - b) (B, M)."""
        zhat = self.init_state(x)
        if z.shape != zhat.shape:
            raise DataError(f"data_state: z must have shape {tuple(zhat.shape)}, got {tuple(z.shape)}")
        return zhat

    def affine_map(self, ref: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B (N, M), b (N,)); ``ref`` is ignored (same signature as the identity model)."""
        return self.B, self.b

    def regularization(self, ref: torch.Tensor | None = None) -> torch.Tensor:
        """Reference ``regularize(::Affine)``: (1 - s_max / (s_min + 1e-8))^2 of B's singular values."""
        s = torch.linalg.svdvals(self.B)
        return (1.0 - s[0] / (s[-1] + 1e-8)) ** 2

    def extra_repr(self) -> str:
        return f"N={self.obs_dim}, M={self.latent_dim}"


def make_observation(kind: str, obs_dim: int, latent_dim: int, *, l_init: str = "glorot") -> nn.Module:
    """Build the observation model ``kind`` ("identity" or "affine") for N = obs_dim, M = latent_dim."""
    key = str(kind).lower()
    if key == "identity":
        return IdentityObservation(obs_dim, latent_dim, l_init=l_init)
    if key == "affine":
        return AffineObservation(obs_dim, latent_dim)
    raise ConfigError(str(unknown_name("observation model", str(kind), OBS_KINDS)))
