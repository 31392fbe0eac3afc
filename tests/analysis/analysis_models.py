"""Hand-built models for the analysis tests (independent of the model zoo's implementations).

Imported by the test modules as ``from analysis_models import ...`` (pytest puts this folder on
sys.path).

Glossary: B batch, M latent dim.
"""

from __future__ import annotations

import numpy as np
import torch

from dsrecon.models.base import DynamicalModel, PiecewiseLinearModel


class HandPLRNN(PiecewiseLinearModel):
    """z' = a*z + W relu(z) + h with a full W (diagonal allowed); region code z > 0."""

    def __init__(self, a, W, h) -> None:
        a = torch.as_tensor(a, dtype=torch.float64)
        super().__init__(obs_dim=1, latent_dim=a.numel())
        self.a = torch.nn.Parameter(a.clone())
        self.W = torch.nn.Parameter(torch.as_tensor(W, dtype=torch.float64).clone())
        self.h = torch.nn.Parameter(torch.as_tensor(h, dtype=torch.float64).clone())

    def step(self, z):
        return self.a * z + torch.relu(z) @ self.W.T + self.h

    def jacobian(self, z):
        d = (z > 0).to(z.dtype)
        return torch.diag_embed(self.a.expand(z.shape)) + self.W * d[..., None, :]

    def region_code(self, z):
        return z > 0

    def affine_piece(self, code):
        d = code.to(self.a.dtype)
        return torch.diag(self.a) + self.W * d[None, :], self.h.clone()

    def shallow_form(self):
        M = self.latent_dim
        return {"a": self.a, "W1": self.W, "W2": torch.eye(M, dtype=self.a.dtype), "h1": self.h,
                "h2": torch.zeros(M, dtype=self.a.dtype), "relu_mask": torch.ones(M, dtype=torch.bool)}


class ProtocolOnlyPLRNN(HandPLRNN):
    """The same map without ``shallow_form`` (exercises the generic protocol view)."""

    def shallow_form(self):
        raise NotImplementedError


class AffineMap(DynamicalModel):
    """z' = A z + b (smooth model with an analytic Jacobian)."""

    def __init__(self, A, b=None) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        super().__init__(obs_dim=A.shape[0], latent_dim=A.shape[0])
        self.A = torch.nn.Parameter(A.clone())
        self.b = torch.nn.Parameter(torch.zeros(A.shape[0], dtype=torch.float64) if b is None
                                    else torch.as_tensor(b, dtype=torch.float64).clone())

    def step(self, z):
        return z @ self.A.T + self.b

    def jacobian(self, z):
        return self.A.expand(z.shape[0], -1, -1).clone()


class HenonModel(DynamicalModel):
    """The Henon map as a model: (x, y) -> (1 - a x^2 + y, b x); autograd Jacobian (base class)."""

    def __init__(self, a: float = 1.4, b: float = 0.3) -> None:
        super().__init__(obs_dim=2, latent_dim=2)
        self.register_buffer("p", torch.tensor([a, b], dtype=torch.float64))

    def step(self, z):
        x, y = z[..., 0], z[..., 1]
        return torch.stack([1 - self.p[0] * x * x + y, self.p[1] * x], dim=-1)


class LogisticModel(DynamicalModel):
    """z' = r z (1 - z) (1-d smooth model, autograd Jacobian)."""

    def __init__(self, r: float) -> None:
        super().__init__(obs_dim=1, latent_dim=1)
        self.register_buffer("r", torch.tensor(r, dtype=torch.float64))

    def step(self, z):
        return self.r * z * (1 - z)


def random_plrnn(M: int, seed: int, *, scale: float = 4.0) -> HandPLRNN:
    """A random PLRNN with several fixed points: a ~ U(0, 0.5), W ~ N(0, scale^2/M) off-diagonal,
    h ~ N(-1, 0.3^2)."""
    g = np.random.default_rng(seed)
    W = g.standard_normal((M, M)) * scale / np.sqrt(M)
    np.fill_diagonal(W, 0.0)
    return HandPLRNN(g.random(M) * 0.5, W, g.normal(-1.0, 0.3, M))


def hand_2d() -> HandPLRNN:
    """Two decoupled units z_i' = 0.5 z_i + relu(z_i) - 0.5: fixed points (+-1, +-1) with slopes
    0.5 (z < 0) and 1.5 (z > 0)."""
    return HandPLRNN([0.5, 0.5], np.eye(2), [-0.5, -0.5])


def oscillating_plrnn(M: int, seed: int) -> HandPLRNN:
    """A random PLRNN with negative self-coupling a ~ -U(0, 0.9) (W ~ N(0, 4/M) off-diagonal,
    h ~ N(0, 1)), which often has 2-cycles."""
    g = np.random.default_rng(seed)
    W = g.standard_normal((M, M)) * 2.0 / np.sqrt(M)
    np.fill_diagonal(W, 0.0)
    return HandPLRNN(-g.random(M) * 0.9, W, g.normal(0.0, 1.0, M))


def zoo_model(name: str, seed: int, *, wscale: float = 4.0, latent_dim: int = 3, **hyper):
    """A registry model with re-drawn parameters: A ~ U(0, 0.6), matrices ~ N(0, wscale^2 / fan_in),
    vectors ~ N(0, 1) (the trained-looking regime with several fixed points)."""
    from dsrecon.models import build

    m = build(name, obs_dim=2, latent_dim=latent_dim, seed=0, **hyper)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n == "A":
                p.copy_(torch.rand(p.shape, generator=g) * 0.6)
            elif n.startswith("obs"):
                continue
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * wscale / p.shape[1] ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g))
    return m
