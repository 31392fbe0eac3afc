"""The shallow PLRNN (shPLRNN) and clipped shPLRNN; registry names ``"shplrnn"``, ``"clipped-shplrnn"``.

Glossary: B batch, N observed dim, M latent dim, L hidden dim (``hidden_dim``), R region-code length.

    z_{t+1} = A z_t + W1 relu(W2 z_t + h2) + h1                          (Hess et al. 2023, ICML)
    clipped:  z_{t+1} = A z_t + W1 [relu(W2 z_t + h2) - relu(W2 z_t)] + h1

A = diag(a) (vector ``A`` (M,)), W1 (M, L), W2 (L, M), h1 (M,), h2 (L,). The clipped form has a
bounded nonlinearity, so orbits stay bounded when ||A||_2 < 1.

Initialisation (DESIGN.md section 3 = GTF-shPLRNN ``shallowPLRNN`` / ``clippedShallowPLRNN``):
A = diag(K) with K = R^T R / M + I scaled to spectral radius 1, W1 ~ U(+-1/sqrt(L)),
W2 ~ U(+-1/sqrt(M)), h1 = 0, h2 = 0 (shPLRNN) or h2 ~ U(+-1/sqrt(L)) (clipped shPLRNN; with
h2 = 0 the clipped nonlinearity would vanish identically).

Latent regulariser (reference ``regularize(::AbstractShallowPLRNN)``):
``||1 - A||^2 + ||W1||^2 + ||W2||^2 + ||h1||^2 + ||h2||^2``. The reference defines manifold-attractor
regularisation only for models with a square W; here ``mar_ratio`` regularises the last units'
``1 - A``, rows of W1 and h1 (an extension, documented as such).

Region code: ``W2 z + h2 > 0`` (R = L); clipped: ``[W2 z + h2 > 0, W2 z > 0]`` (R = 2L).
Shallow form: the parameters themselves.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from dsrecon.models.pwl_common import PWLRNN, check_int, normalized_positive_definite, uniform_init
from dsrecon.models.registry import register


class _ShallowPLRNNBase(PWLRNN):
    """Common code of the shPLRNN and the clipped shPLRNN (``clipped`` chooses the map).

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int
        M (>= N for the identity observation model).
    hidden_dim : int
        L, the width of the hidden ReLU layer (>= 1; reference default 50).
    obs : {"identity", "affine"}
        Observation model (:mod:`dsrecon.models.observation`).
    """

    clipped: ClassVar[bool] = False

    def __init__(
        self, obs_dim: int, latent_dim: int, *, hidden_dim: int = 50, obs: str = "identity", **unknown: Any
    ) -> None:
        L = check_int(hidden_dim, "hidden_dim L", 1)
        super().__init__(obs_dim, latent_dim, obs=obs, l_init="glorot", unknown=unknown)
        self.hidden_dim = L
        M = self.latent_dim
        self.A = nn.Parameter(torch.diagonal(normalized_positive_definite(M)).clone())  # (M,)
        self.W1 = nn.Parameter(uniform_init(M, L))  # (M, L) ~ U(+-1/sqrt(L))
        self.W2 = nn.Parameter(uniform_init(L, M))  # (L, M) ~ U(+-1/sqrt(M))
        self.h1 = nn.Parameter(torch.zeros(M))  # (M,)
        self.h2 = nn.Parameter(uniform_init(L) if self.clipped else torch.zeros(L))  # (L,)

    # ------------------------------------------------------------------ map
    def step(self, z: torch.Tensor) -> torch.Tensor:
        """One step of the (clipped) shPLRNN: (B, M) -> (B, M)."""
        self._check_z(z)
        u = z @ self.W2.T  # (..., L)
        phi = torch.relu(u + self.h2)
        if self.clipped:
            phi = phi - torch.relu(u)
        return self.A * z + phi @ self.W1.T + self.h1

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """diag(A) + W1 diag(d) W2, d = [u + h2 > 0] (- [u > 0] clipped): (B, M) -> (B, M, M)."""
        self._check_z(z)
        u = z @ self.W2.T
        d = (u + self.h2 > 0).to(z.dtype)
        if self.clipped:
            d = d - (u > 0).to(z.dtype)
        return (self.W1 * d[..., None, :]) @ self.W2 + torch.diag_embed(self.A.expand(z.shape))

    # --------------------------------------------------------------- regions
    @property
    def code_length(self) -> int:
        return 2 * self.hidden_dim if self.clipped else self.hidden_dim

    def region_code(self, z: torch.Tensor) -> torch.Tensor:
        """[W2 z + h2 > 0] (+ [W2 z > 0] clipped): (B, M) -> (B, R) bool."""
        self._check_z(z)
        u = z @ self.W2.T
        code = u + self.h2 > 0
        if self.clipped:
            code = torch.cat([code, u > 0], dim=-1)
        return code

    def affine_piece(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """code (R,) bool -> (diag(A) + W1 diag(d1 - d0) W2, h1 + W1 (d1 * h2)); batched codes allowed."""
        code = self._check_code(code)
        L, dt = self.hidden_dim, self.A.dtype
        d1 = code[..., :L].to(dt)
        d = d1 - code[..., L:].to(dt) if self.clipped else d1
        Wc = (self.W1 * d[..., None, :]) @ self.W2 + torch.diag_embed(self.A.expand(*d.shape[:-1], -1))
        return Wc, self.h1 + (d1 * self.h2) @ self.W1.T

    def shallow_form(self) -> dict[str, torch.Tensor]:
        """{a, W1, W2, h1, h2, relu_mask}: the parameters themselves (L' = L)."""
        return {
            "a": self.A,
            "W1": self.W1,
            "W2": self.W2,
            "h1": self.h1,
            "h2": self.h2,
            "relu_mask": torch.ones(self.hidden_dim, dtype=torch.bool, device=self.A.device),
        }

    # --------------------------------------------------------- regularisers
    def _reg_terms(self) -> list[torch.Tensor]:
        return [1.0 - self.A, self.W1, self.W2, self.h1, self.h2]

    def _mar_terms(self, n_reg: int) -> list[torch.Tensor]:
        return [1.0 - self.A[-n_reg:], self.W1[-n_reg:], self.h1[-n_reg:]]

    @property
    def hyper(self) -> dict[str, Any]:
        return {"hidden_dim": self.hidden_dim, "obs": self.obs_kind}


@register("shplrnn")
class ShallowPLRNN(_ShallowPLRNNBase):
    """shPLRNN: z' = A z + W1 relu(W2 z + h2) + h1 (Hess et al. 2023). See the module docstring."""

    clipped: ClassVar[bool] = False


@register("clipped-shplrnn")
class ClippedShallowPLRNN(_ShallowPLRNNBase):
    """Clipped shPLRNN: z' = A z + W1 [relu(W2 z + h2) - relu(W2 z)] + h1 (Hess et al. 2023)."""

    clipped: ClassVar[bool] = True
