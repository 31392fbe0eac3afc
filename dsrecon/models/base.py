"""The one model protocol (DESIGN.md section 2): every model is a map z_t -> z_{t+1}.

Glossary: B batch, T time, N observed dim (``obs_dim``), M latent dim (``latent_dim``),
C context length, K ensemble members.

A model is an ``nn.Module`` with a latent map ``step`` F: (B, M) -> (B, M), an observation model
``observe`` G: (B, M) -> (B, N), a way to infer a latent state from data (``init_state``) and a
teacher-forcing hook (``force``). Everything else (training, metrics, Lyapunov spectra, fixed
points, reports) talks to models only through this class.

Conventions
-----------
* ``generate(x0, n)`` returns n observations ``[G(z_0), G(z_1), ..., G(z_{n-1})]`` with
  ``z_0 = init_state(x0)`` and ``z_{t+1} = F(z_t)``; so ``out[:, 0]`` reconstructs ``x0`` and
  ``out[:, t]`` is aligned with ``x[t]`` of the series that starts at ``x0``.
* ``force(z, x, alpha)`` is generalised teacher forcing (Hess et al., ICML 2023):
  ``(1 - alpha) * z + alpha * zhat`` where ``zhat = data_state(x, z)`` is the data-inferred state.
  The default ``data_state`` is identity observation with partial forcing: ``[x; z_{N:}]`` (the
  free units keep their values). Models with another observation model override ``data_state``.
* ``jacobian(z)`` defaults to autograd (``torch.func.jacrev`` + ``vmap``); models with an analytic
  Jacobian override it.
* ``config`` is plain JSON: ``{"name": registry name, "obs_dim": N, "latent_dim": M, ...}`` and
  ``from_config(config)`` rebuilds an untrained model with the same architecture.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from dsrecon.errors import ConfigError


class DynamicalModel(nn.Module):
    """Base class of every reconstruction model.

    Subclasses must implement :meth:`step` and may override :meth:`init_state`,
    :meth:`observe`, :meth:`data_state`, :meth:`jacobian` and :attr:`hyper`.

    Parameters
    ----------
    obs_dim : int
        N, the dimension of the observations.
    latent_dim : int
        M, the dimension of the latent state z.
    """

    #: registry name, set by :func:`dsrecon.models.registry.register`
    name: ClassVar[str] = ""
    #: True for piecewise-linear models exposing ``region_code`` / ``affine_piece``
    piecewise_linear: ClassVar[bool] = False

    def __init__(self, obs_dim: int, latent_dim: int) -> None:
        super().__init__()
        if int(obs_dim) < 1 or int(latent_dim) < 1:
            raise ConfigError(f"obs_dim and latent_dim must be >= 1, got {obs_dim} and {latent_dim}")
        self.obs_dim = int(obs_dim)
        self.latent_dim = int(latent_dim)

    # ------------------------------------------------------------- protocol
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """Latent state from observation(s): x (B, N) or a context (B, C, N) -> z (B, M).

        Default (identity observation): the last observation, padded with zeros for the M - N
        unobserved units.
        """
        if x.dim() == 3:
            x = x[:, -1]
        z = x.new_zeros(x.shape[0], self.latent_dim)
        z[:, : self.obs_dim] = x
        return z

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """One step of the latent map F: (B, M) -> (B, M)."""
        raise NotImplementedError

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """Observation model G: (B, M) -> (B, N). Default: the first N latent units."""
        return z[..., : self.obs_dim]

    def data_state(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Data-inferred state zhat for teacher forcing: x (B, N), z (B, M) -> (B, M).

        Default: identity observation with partial forcing, ``[x; z[:, N:]]``.
        """
        return torch.cat([x, z[..., self.obs_dim :]], dim=-1)

    def force(self, z: torch.Tensor, x: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
        """Generalised teacher forcing: ``(1 - alpha) z + alpha zhat``; (B, M), (B, N) -> (B, M)."""
        zhat = self.data_state(x, z)
        return z + alpha * (zhat - z)

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """dF/dz at each state: (B, M) -> (B, M, M). Default: autograd."""
        from torch.func import jacrev, vmap

        def single(zz: torch.Tensor) -> torch.Tensor:
            return self.step(zz[None])[0]

        return vmap(jacrev(single))(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``model(z)`` is ``step(z)`` (so ``torch.func.functional_call`` works on every model)."""
        return self.step(z)

    # -------------------------------------------------------- conveniences
    def rollout(self, z0: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Latent trajectory ``[z_0, ..., z_{n-1}]``: (B, M) -> (B, n_steps, M)."""
        zs = [z0]
        z = z0
        for _ in range(n_steps - 1):
            z = self.step(z)
            zs.append(z)
        return torch.stack(zs, dim=1)

    @torch.no_grad()
    def generate(self, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Free-running trajectory in observation space: x0 (B, N) or (B, C, N) -> (B, n_steps, N).

        ``out[:, 0] = observe(init_state(x0))``. Memory-light: keeps only the observations.
        """
        if n_steps < 1:
            raise ConfigError(f"n_steps must be >= 1, got {n_steps}")
        z = self.init_state(x0)
        out = z.new_empty(z.shape[0], n_steps, self.obs_dim)
        for t in range(n_steps):
            out[:, t] = self.observe(z)
            if t + 1 < n_steps:
                z = self.step(z)
        return out

    # --------------------------------------------------------------- config
    @property
    def hyper(self) -> dict[str, Any]:
        """Architecture hyper-parameters beyond obs_dim/latent_dim (plain JSON). Override."""
        return {}

    @property
    def config(self) -> dict[str, Any]:
        """Plain-JSON description sufficient to rebuild the architecture."""
        return {"name": self.name, "obs_dim": self.obs_dim, "latent_dim": self.latent_dim, **self.hyper}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DynamicalModel":
        cfg = {k: v for k, v in config.items() if k != "name"}
        return cls(**cfg)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, latent_dim={self.latent_dim}"


class PiecewiseLinearModel(DynamicalModel):
    """A model whose latent map is affine inside each region of a partition of latent space.

    Region codes are boolean vectors (the ReLU on/off pattern, a symbol) of length R.
    ``z_{t+1} = W_code z_t + h_code`` for all z with ``region_code(z) == code``.

    Also exposes the *shallow canonical form* used by the fused training kernel
    (:mod:`dsrecon.training.fused`)::

        F(z) = a * z + W1 @ act(W2 @ z + h2) + h1        (act = relu on `relu_mask` units,
                                                            identity on the others)
        clipped:  F(z) = a * z + W1 @ (relu(W2 z + h2) - relu(W2 z)) + h1

    with a (M,), W1 (M, L), W2 (L, M), h1 (M,), h2 (L,), relu_mask (L,) bool, computed
    differentiably from the model's own parameters by :meth:`shallow_form`.
    """

    piecewise_linear: ClassVar[bool] = True
    #: whether shallow_form uses the clipped nonlinearity relu(u + h2) - relu(u)
    clipped: ClassVar[bool] = False

    def region_code(self, z: torch.Tensor) -> torch.Tensor:
        """Region symbol of each state: (B, M) -> (B, R) bool."""
        raise NotImplementedError

    def affine_piece(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map of one region: code (R,) bool -> (W (M, M), h (M,))."""
        raise NotImplementedError

    def shallow_form(self) -> dict[str, torch.Tensor]:
        """Differentiable canonical parameters {a, W1, W2, h1, h2, relu_mask}. See class doc."""
        raise NotImplementedError
