"""Test-only models with exactly known behaviour for the metrics tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dsrecon.models.base import DynamicalModel
from dsrecon.models.registry import _REGISTRY, register


class RotationModel(DynamicalModel):
    """z_{t+1} = r R(theta) z_t in the plane (M = N = 2, identity observation), float64.

    With r = 1 the n-step map is the rotation by n theta, so PE(n) on data that rotate by
    theta' per step on the unit circle is exactly ``2 sin^2(n (theta - theta') / 2)``.
    ``calls`` counts step() calls; ``x0_seen`` records generate()'s initial conditions.
    """

    def __init__(self, obs_dim: int = 2, latent_dim: int = 2, theta: float = 0.1, radius: float = 1.0):
        super().__init__(obs_dim, latent_dim)
        self.theta = nn.Parameter(torch.tensor(float(theta), dtype=torch.float64))
        self.radius = float(radius)
        self.calls = 0
        self.x0_seen = None

    @property
    def hyper(self):
        return {"theta": float(self.theta.detach()), "radius": self.radius}

    def step(self, z):
        self.calls += 1
        c, s = torch.cos(self.theta), torch.sin(self.theta)
        rot = torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
        return self.radius * z @ rot.T

    def generate(self, x0, n_steps):
        self.x0_seen = x0.detach().clone()
        return super().generate(x0, n_steps)


if "_test_rotation" not in _REGISTRY:
    register("_test_rotation")(RotationModel)


def circle(n_steps: int, theta: float, phase: float = 0.0) -> np.ndarray:
    """Points on the unit circle rotating by theta per step: (T, 2)."""
    ang = phase + theta * np.arange(n_steps)
    return np.stack([np.cos(ang), np.sin(ang)], axis=1)


@pytest.fixture
def rotation_model():
    return RotationModel


@pytest.fixture
def circle_data():
    return circle


@pytest.fixture
def lorenz_pair(paper_data):
    """(clean test, noisy train) paper Lorenz-63 series, 100000 x 3 each."""
    return np.load(paper_data / "lorenz63_test.npy"), np.load(paper_data / "lorenz63_on0.05_train.npy")


