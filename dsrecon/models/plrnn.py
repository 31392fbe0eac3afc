"""The piecewise-linear RNN (PLRNN) and its mean-centred variant; registry name ``"plrnn"``.

Glossary: B batch, N observed dim, M latent dim, R = M region-code length.

    z_{t+1} = A z_t + W relu(z_t) + h                  (Durstewitz 2017; Koppe et al. 2019)
    z_{t+1} = A z_t + W relu(z_t - mean(z_t)) + h      (mean-centred, Brenner et al. 2022, ICML)

A = diag(a) (stored as the vector ``A`` (M,)), W (M, M) off-diagonal (the parameter ``W`` is
stored full; its diagonal is masked out in every computation, so it never receives a gradient --
the reference code instead zeroes the diagonal of W's gradient), h (M,).

Initialisation (DESIGN.md section 3 = GTF-shPLRNN ``initialize_A_W_h``): K = R^T R / M + I scaled
to spectral radius 1, A = diag(K), W = off-diagonal part of K, h = 0. (The older PyTorch dendPLRNN
code draws h ~ U(+-1/sqrt(M)); we follow the Julia reference.)

Latent regulariser (reference ``regularize(::AbstractVanillaPLRNN)``):
``||1 - A||^2 + ||W||^2 + ||h||^2``.

Region code: ``z > 0`` (``z - mean(z) > 0`` when mean-centred), R = M.
Shallow form: a = A, W1 = W (off-diagonal), W2 = I (I - 11^T/M when mean-centred), h1 = h,
h2 = 0, every hidden unit ReLU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsrecon.models.pwl_common import PWLRNN, normalized_positive_definite, offdiagonal
from dsrecon.models.registry import register


@register("plrnn")
class PLRNN(PWLRNN):
    """Vanilla (optionally mean-centred) PLRNN.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int
        M (>= N for the identity observation model).
    mean_centered : bool
        Apply the ReLU to ``z - mean(z)`` (mcPLRNN, Brenner et al. 2022).
    obs : {"identity", "affine"}
        Observation model (:mod:`dsrecon.models.observation`); identity by default, with a trained
        (M - N, N) matrix L for the initial state ``[x_1; L x_1]`` (GTF-shPLRNN ``Identity``).

    Examples
    --------
    >>> from dsrecon.models import build
    >>> m = build("plrnn", obs_dim=3, latent_dim=10, mean_centered=True, seed=0)
    >>> m.step(m.init_state(torch.zeros(4, 3))).shape
    torch.Size([4, 10])
    """

    def __init__(
        self, obs_dim: int, latent_dim: int, *, mean_centered: bool = False, obs: str = "identity", **unknown: Any
    ) -> None:
        super().__init__(obs_dim, latent_dim, obs=obs, l_init="glorot", unknown=unknown)
        self.mean_centered = bool(mean_centered)
        M = self.latent_dim
        K = normalized_positive_definite(M)
        self.A = nn.Parameter(torch.diagonal(K).clone())  # (M,)
        self.W = nn.Parameter(offdiagonal(K))  # (M, M), diagonal unused
        self.h = nn.Parameter(torch.zeros(M))  # (M,)

    # ------------------------------------------------------------------ map
    def _u(self, z: torch.Tensor) -> torch.Tensor:
        """Argument of the ReLU: z or z - mean(z); (..., M) -> (..., M)."""
        return z - z.mean(dim=-1, keepdim=True) if self.mean_centered else z

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """z_{t+1} = A z + W relu(u(z)) + h: (B, M) -> (B, M)."""
        self._check_z(z)
        return self.A * z + torch.relu(self._u(z)) @ offdiagonal(self.W).T + self.h

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """diag(A) + W diag(u > 0) [(I - 11^T/M)]: (B, M) -> (B, M, M)."""
        self._check_z(z)
        d = (self._u(z) > 0).to(z.dtype)  # (..., M)
        J = offdiagonal(self.W) * d[..., None, :]  # W diag(d): (..., M, M)
        if self.mean_centered:
            J = J - J.sum(dim=-1, keepdim=True) / self.latent_dim  # right-multiply by I - 11^T/M
        return J + torch.diag_embed(self.A.expand(z.shape))

    # --------------------------------------------------------------- regions
    @property
    def code_length(self) -> int:
        return self.latent_dim

    def region_code(self, z: torch.Tensor) -> torch.Tensor:
        """ReLU pattern ``u(z) > 0``: (B, M) -> (B, M) bool."""
        self._check_z(z)
        return self._u(z) > 0

    def affine_piece(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """code (M,) bool -> (W_code = diag(A) + W diag(code) [P], h_code = h); batched codes allowed."""
        code = self._check_code(code)
        d = code.to(self.A.dtype)
        Wc = offdiagonal(self.W) * d[..., None, :]
        if self.mean_centered:
            Wc = Wc - Wc.sum(dim=-1, keepdim=True) / self.latent_dim
        Wc = Wc + torch.diag_embed(self.A.expand(d.shape))
        return Wc, self.h.expand(d.shape)

    def shallow_form(self) -> dict[str, torch.Tensor]:
        """{a, W1, W2, h1, h2, relu_mask} with L' = M (see module docstring)."""
        M = self.latent_dim
        eye = torch.eye(M, dtype=self.A.dtype, device=self.A.device)
        W2 = eye - 1.0 / M if self.mean_centered else eye
        return {
            "a": self.A,
            "W1": offdiagonal(self.W),
            "W2": W2,
            "h1": self.h,
            "h2": self.A.new_zeros(M),
            "relu_mask": torch.ones(M, dtype=torch.bool, device=self.A.device),
        }

    # --------------------------------------------------------- regularisers
    def _reg_terms(self) -> list[torch.Tensor]:
        return [1.0 - self.A, offdiagonal(self.W), self.h]

    def _mar_terms(self, n_reg: int) -> list[torch.Tensor]:
        return [1.0 - self.A[-n_reg:], offdiagonal(self.W)[-n_reg:], self.h[-n_reg:]]

    @property
    def hyper(self) -> dict[str, Any]:
        return {"mean_centered": self.mean_centered, "obs": self.obs_kind}
