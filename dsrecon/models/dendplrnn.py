"""The dendritic PLRNN (dendPLRNN) and its clipped variant; registry name ``"dendplrnn"``.

Glossary: B batch, N observed dim, M latent dim, n_bases the number of basis functions (written
B_b below to avoid a clash with the batch B), R region-code length.

    z_{t+1} = A z_t + W sum_b alpha_b relu(z_t - H_b) + h                (Brenner et al. 2022, ICML)
    clipped:  z_{t+1} = A z_t + W sum_b alpha_b [relu(z_t - H_b) - relu(z_t)] + h

A = diag(a) (vector ``A`` (M,)), W (M, M) off-diagonal (diagonal masked out), h (M,), alpha (n_bases,)
basis weights, H (M, n_bases) thresholds (column b is the threshold vector H_b). The clipped form
keeps orbits bounded when ||A||_2 < 1 (the basis expansion is bounded).

Initialisation (DESIGN.md section 3 and GTF-shPLRNN ``dendPLRNN(M, B)``): A and W from
K = R^T R / M + I scaled to spectral radius 1 (A = diag K, W = off-diagonal of K), h = 0,
alpha ~ U(+-1/sqrt(n_bases)), H ~ N(0, 1). The reference can instead spread the thresholds uniformly
over the data range; :meth:`DendPLRNN.init_thresholds_from_data` does that. (The older PyTorch
dendPLRNN code uses relu(z + theta) with theta = -H and h ~ U(+-1/sqrt(M)).)

Latent regulariser (reference ``regularize(::AbstractDendriticPLRNN)``):
``||1 - A||^2 + ||W||^2 + ||h||^2 + ||alpha||^2`` (the thresholds are not regularised).

Region code: ``z_m > H_{m,b}`` for every (m, b), ordered basis-major (index b * M + m), R = M * n_bases;
clipped: followed by ``z > 0`` (M more bits), R = M * (n_bases + 1).
Shallow form: L' = M * n_bases, W2 = [I; ...; I] (n_bases stacked identities), h2 = -[H_1; ...; H_nb],
W1 = W [alpha_1 I, ..., alpha_nb I], a = A, h1 = h.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsrecon.errors import DataError
from dsrecon.models.pwl_common import PWLRNN, check_int, normalized_positive_definite, offdiagonal, uniform_init
from dsrecon.models.registry import register


@register("dendplrnn")
class DendPLRNN(PWLRNN):
    """Dendritic PLRNN with a ReLU basis expansion of n_bases thresholds per unit.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int
        M (>= N for the identity observation model).
    n_bases : int
        Number of basis functions (>= 1; the reference default is 50).
    clipped : bool
        Use the clipped basis expansion ``relu(z - H_b) - relu(z)``. Unlike the shPLRNN pair this
        is an instance attribute (``model.clipped``), since one registry name covers both.
    obs : {"identity", "affine"}
        Observation model (:mod:`dsrecon.models.observation`).
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        *,
        n_bases: int = 50,
        clipped: bool = False,
        obs: str = "identity",
        **unknown: Any,
    ) -> None:
        nb = check_int(n_bases, "n_bases (number of basis functions)", 1)
        super().__init__(obs_dim, latent_dim, obs=obs, l_init="glorot", unknown=unknown)
        self.n_bases = nb
        self.clipped = bool(clipped)
        M = self.latent_dim
        K = normalized_positive_definite(M)
        self.A = nn.Parameter(torch.diagonal(K).clone())  # (M,)
        self.W = nn.Parameter(offdiagonal(K))  # (M, M), diagonal unused
        self.h = nn.Parameter(torch.zeros(M))  # (M,)
        self.alpha = nn.Parameter(uniform_init(self.n_bases))  # (n_bases,)
        self.H = nn.Parameter(torch.randn(M, self.n_bases))  # (M, n_bases)

    @torch.no_grad()
    def init_thresholds_from_data(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> "DendPLRNN":
        """Redraw H ~ U(min x, max x) (reference ``uniform_threshold_init``); x any shape. Returns self."""
        if not isinstance(x, torch.Tensor) or x.numel() == 0 or not bool(torch.isfinite(x).all()):
            raise DataError("init_thresholds_from_data needs a non-empty finite tensor of observations")
        lo, hi = float(x.min()), float(x.max())
        u = torch.rand(self.H.shape, generator=generator, dtype=self.H.dtype, device="cpu")
        self.H.copy_((lo + (hi - lo) * u).to(self.H.device))
        return self

    # ------------------------------------------------------------------ map
    def _basis(self, z: torch.Tensor) -> torch.Tensor:
        """sum_b alpha_b relu(z - H_b) [- relu(z) sum_b alpha_b]: (..., M) -> (..., M)."""
        phi = torch.relu(z[..., None] - self.H) @ self.alpha  # (..., M, nb) @ (nb,) -> (..., M)
        if self.clipped:
            phi = phi - torch.relu(z) * self.alpha.sum()
        return phi

    def _slopes(self, z: torch.Tensor) -> torch.Tensor:
        """Derivative of the basis expansion, per unit: (..., M) -> (..., M)."""
        g = (z[..., None] > self.H).to(z.dtype) @ self.alpha
        if self.clipped:
            g = g - (z > 0).to(z.dtype) * self.alpha.sum()
        return g

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """z_{t+1} = A z + W phi(z) + h: (B, M) -> (B, M)."""
        self._check_z(z)
        return self.A * z + self._basis(z) @ offdiagonal(self.W).T + self.h

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """diag(A) + W diag(phi'(z)): (B, M) -> (B, M, M)."""
        self._check_z(z)
        g = self._slopes(z)
        return offdiagonal(self.W) * g[..., None, :] + torch.diag_embed(self.A.expand(z.shape))

    # --------------------------------------------------------------- regions
    @property
    def code_length(self) -> int:
        return self.latent_dim * (self.n_bases + (1 if self.clipped else 0))

    def region_code(self, z: torch.Tensor) -> torch.Tensor:
        """[z_m > H_{m,b}] basis-major (+ [z > 0] when clipped): (B, M) -> (B, R) bool."""
        self._check_z(z)
        above = (z[..., None, :] > self.H.T).flatten(-2)  # (..., nb, M) -> (..., nb*M)
        if self.clipped:
            above = torch.cat([above, z > 0], dim=-1)
        return above

    def affine_piece(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """code (R,) bool -> (W_code (M, M), h_code (M,)); batched codes allowed."""
        code = self._check_code(code)
        M, nb, dt = self.latent_dim, self.n_bases, self.A.dtype
        on = code[..., : M * nb].unflatten(-1, (nb, M)).to(dt)  # (..., nb, M)
        g = (self.alpha[:, None] * on).sum(dim=-2)  # slope per unit (..., M)
        c = -(self.alpha[:, None] * on * self.H.T).sum(dim=-2)  # offset per unit (..., M)
        if self.clipped:
            g = g - code[..., M * nb :].to(dt) * self.alpha.sum()
        Wo = offdiagonal(self.W)
        Wc = Wo * g[..., None, :] + torch.diag_embed(self.A.expand(g.shape))
        return Wc, self.h + c @ Wo.T

    def shallow_form(self) -> dict[str, torch.Tensor]:
        """{a, W1, W2, h1, h2, relu_mask} with L' = M * n_bases (see module docstring)."""
        M, nb = self.latent_dim, self.n_bases
        Wo = offdiagonal(self.W)
        W1 = (Wo[:, None, :] * self.alpha[None, :, None]).reshape(M, nb * M)  # [alpha_1 W, ..., alpha_nb W]
        eye = torch.eye(M, dtype=self.A.dtype, device=self.A.device)
        return {
            "a": self.A,
            "W1": W1,
            "W2": eye.repeat(nb, 1),
            "h1": self.h,
            "h2": -self.H.T.reshape(nb * M),
            "relu_mask": torch.ones(nb * M, dtype=torch.bool, device=self.A.device),
        }

    # --------------------------------------------------------- regularisers
    def _reg_terms(self) -> list[torch.Tensor]:
        return [1.0 - self.A, offdiagonal(self.W), self.h, self.alpha]

    def _mar_terms(self, n_reg: int) -> list[torch.Tensor]:
        return [1.0 - self.A[-n_reg:], offdiagonal(self.W)[-n_reg:], self.h[-n_reg:]]

    @property
    def hyper(self) -> dict[str, Any]:
        return {"n_bases": self.n_bases, "clipped": self.clipped, "obs": self.obs_kind}
