"""The almost-linear RNN (AL-RNN); registry name ``"alrnn"``.

Glossary: B batch, N observed dim, M latent dim, P piecewise-linear units (``n_pwl``), R = P.

    z_{t+1} = A z_t + W Phi*(z_t) + h,    Phi*(z) = [z_1, ..., z_{M-P}, relu(z_{M-P+1}), ..., relu(z_M)]

(Brenner et al. 2024, NeurIPS "Almost-linear RNNs yield highly interpretable symbolic codes in
dynamical systems reconstruction"). Only the last P units pass through a ReLU, so the latent space
has at most 2^P linear regions and the region code of a state is the sign pattern of those P units.
A = diag(a) (vector ``A`` (M,)), W (M, M) full (the diagonal is used, unlike the PLRNN), h (M,).
With the identity observation model the first N units are read out and the initial state is
``[x_1; L x_1]`` with a trained L (M - N, N) (ALRNN-DSR ``Identity``; L ~ U(+-1/sqrt(N))).

Initialisation (DESIGN.md section 3 = ALRNN-DSR ``initialize_A_W_h`` and the Python tutorial):
A = diag(K), K = R^T R / M + I scaled to spectral radius 1; W ~ N(0, 0.01^2); h = 0.

Latent regulariser (ALRNN-DSR ``regularize(::AbstractALRNN)``, whose default penalty is L1):
``|1 - A|_1 + |W|_1 + |h|_1``.

Shallow form: a = A, W1 = W, W2 = I, h1 = h, h2 = 0, relu_mask = the last P units (identity
activation on the first M - P).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from dsrecon.models.pwl_common import PWLRNN, check_int, gaussian_init, normalized_positive_definite
from dsrecon.models.registry import register


@register("alrnn")
class ALRNN(PWLRNN):
    """Almost-linear RNN with P of M units piecewise linear.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int
        M (>= N for the identity observation model; the paper uses M = 20 for Lorenz-63).
    n_pwl : int
        P, the number of ReLU units, 0 <= P <= M (the last P latent units; P = 0 is a linear
        model). The paper uses P = 2 for Lorenz-63.
    obs : {"identity", "affine"}
        Observation model (:mod:`dsrecon.models.observation`).

    Examples
    --------
    >>> from dsrecon.models import build
    >>> m = build("alrnn", obs_dim=3, latent_dim=20, n_pwl=2, seed=1)
    >>> m.region_code(m.init_state(torch.randn(5, 3))).shape
    torch.Size([5, 2])
    """

    penalty: ClassVar[str] = "l1"

    def __init__(
        self, obs_dim: int, latent_dim: int, *, n_pwl: int = 2, obs: str = "identity", **unknown: Any
    ) -> None:
        M = check_int(latent_dim, "latent_dim M", 1)
        P = check_int(n_pwl, f"n_pwl P (number of ReLU units, at most latent_dim M={M})", 0, M)
        super().__init__(obs_dim, latent_dim, obs=obs, l_init="uniform", unknown=unknown)
        self.n_pwl = P
        M = self.latent_dim
        self.A = nn.Parameter(torch.diagonal(normalized_positive_definite(M)).clone())  # (M,)
        self.W = nn.Parameter(gaussian_init(M, M, std=0.01))  # (M, M), full
        self.h = nn.Parameter(torch.zeros(M))  # (M,)

    @property
    def n_linear(self) -> int:
        """M - P, the number of linear units (the first ones)."""
        return self.latent_dim - self.n_pwl

    # ------------------------------------------------------------------ map
    def _phi(self, z: torch.Tensor) -> torch.Tensor:
        """Phi*(z): identity on the first M - P units, ReLU on the last P: (..., M) -> (..., M)."""
        k = self.n_linear
        return torch.cat([z[..., :k], torch.relu(z[..., k:])], dim=-1)

    def _slopes(self, d: torch.Tensor) -> torch.Tensor:
        """Pattern of the last P units (..., P) -> derivative of Phi* (..., M)."""
        ones = torch.ones(*d.shape[:-1], self.n_linear, dtype=d.dtype, device=d.device)
        return torch.cat([ones, d], dim=-1)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """z_{t+1} = A z + W Phi*(z) + h: (B, M) -> (B, M)."""
        self._check_z(z)
        return self.A * z + self._phi(z) @ self.W.T + self.h

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """diag(A) + W diag(1, ..., 1, [z_last_P > 0]): (B, M) -> (B, M, M)."""
        self._check_z(z)
        g = self._slopes((z[..., self.n_linear :] > 0).to(z.dtype))
        return self.W * g[..., None, :] + torch.diag_embed(self.A.expand(z.shape))

    # --------------------------------------------------------------- regions
    @property
    def code_length(self) -> int:
        return self.n_pwl

    def region_code(self, z: torch.Tensor) -> torch.Tensor:
        """Sign pattern of the last P units: (B, M) -> (B, P) bool."""
        self._check_z(z)
        return z[..., self.n_linear :] > 0

    def affine_piece(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """code (P,) bool -> (diag(A) + W diag(1, ..., 1, code), h); batched codes allowed."""
        code = self._check_code(code)
        g = self._slopes(code.to(self.A.dtype))
        Wc = self.W * g[..., None, :] + torch.diag_embed(self.A.expand(g.shape))
        return Wc, self.h.expand(g.shape)

    def shallow_form(self) -> dict[str, torch.Tensor]:
        """{a, W1, W2, h1, h2, relu_mask} with L' = M; relu_mask True on the last P units."""
        M = self.latent_dim
        dev = self.A.device
        return {
            "a": self.A,
            "W1": self.W,
            "W2": torch.eye(M, dtype=self.A.dtype, device=dev),
            "h1": self.h,
            "h2": self.A.new_zeros(M),
            "relu_mask": torch.arange(M, device=dev) >= self.n_linear,
        }

    # --------------------------------------------------------- regularisers
    def _reg_terms(self) -> list[torch.Tensor]:
        return [1.0 - self.A, self.W, self.h]

    def _mar_terms(self, n_reg: int) -> list[torch.Tensor]:
        return [1.0 - self.A[-n_reg:], self.W[-n_reg:], self.h[-n_reg:]]

    @property
    def hyper(self) -> dict[str, Any]:
        return {"n_pwl": self.n_pwl, "obs": self.obs_kind}
