"""Model configurations shared by the PLRNN-family tests (imported by the test modules)."""

from __future__ import annotations

import torch

from dsrecon.models import build

#: (registry name, hyper-parameters) covering every model and variant of the family
CASES = [
    ("plrnn", {}),
    ("plrnn", {"mean_centered": True}),
    ("dendplrnn", {"n_bases": 3}),
    ("dendplrnn", {"n_bases": 3, "clipped": True}),
    ("shplrnn", {"hidden_dim": 7}),
    ("clipped-shplrnn", {"hidden_dim": 7}),
    ("alrnn", {"n_pwl": 2}),
    ("alrnn", {"n_pwl": 0}),
    ("alrnn", {"n_pwl": 5}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items())}" for n, h in CASES]
N, M = 3, 5


def make(name: str, hyper: dict, *, obs: str = "identity", seed: int = 0, dtype=torch.float64, **kw):
    """A model with perturbed parameters (so that h, h2, ... are non-zero), in ``dtype``."""
    model = build(name, obs_dim=kw.pop("obs_dim", N), latent_dim=kw.pop("latent_dim", M), seed=seed,
                  obs=obs, dtype=dtype, **hyper, **kw)
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def states(model, n: int = 64, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    """Random latent states (n, M) in the model's dtype."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, model.latent_dim, generator=g, dtype=model.dtype)
