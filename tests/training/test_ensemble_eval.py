"""Vectorised evaluation of ensembles: all K members generated in one forced-rollout pass
(EnsembleEngine.generate_members / evaluate) against each member's own generate / metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.models import build
from dsrecon.training import TrainConfig
from dsrecon.training.ensemble import EnsembleEngine
from dsrecon.training.inputs import evaluate_generated


def _members(name: str, K: int = 3, **hyper):
    models = [build(name, obs_dim=3, latent_dim=6, seed=s, **hyper) for s in range(K)]
    for m in models:  # leave the near-linear initialisation: ReLUs switch, bounded (|a| < 1)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n in ("A", "a"):
                    p.mul_(0.8)
                elif n not in ("obs.L",):
                    p.add_(0.2 * torch.randn_like(p))
    return models


CASES = [("alrnn", {"n_pwl": 2}), ("clipped-shplrnn", {"hidden_dim": 8}), ("plrnn", {"obs": "affine"})]


@pytest.mark.parametrize("name,hyper", CASES)
def test_generate_members_matches_each_members_generate(name, hyper):
    models = _members(name, **hyper)
    eng = EnsembleEngine(models, TrainConfig(), torch.device("cpu"), torch.float64)
    x0 = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    out = eng.generate_members(x0, 150)                       # (K, 150, N)
    assert out.shape == (3, 150, 3)
    for k, m in enumerate(models):
        ref = m.to(torch.float64).generate(x0[None], 150)[0]
        torch.testing.assert_close(out[k], ref, rtol=1e-9, atol=1e-9)
    # chunking is invisible: same arithmetic, step for step
    assert torch.equal(eng.generate_members(x0, 150, chunk=7), out)
    assert torch.equal(eng.generate_members(x0, 1), out[:, :1])


def test_evaluate_gives_each_members_metrics():
    models = _members("alrnn", n_pwl=2)
    eng = EnsembleEngine(models, TrainConfig(), torch.device("cpu"), torch.float64)
    t = np.arange(700)[:, None]
    val = np.sin(0.07 * t + np.arange(3)[None]) + 0.1 * np.cos(0.31 * t)  # (700, 3)
    got = eng.evaluate(val, 600, 20.0)
    assert len(got) == 3
    for k, m in enumerate(models):
        ref = evaluate_generated(m.to(torch.float64), val, 600, 20.0)
        assert got[k] == pytest.approx(ref, rel=1e-9, abs=1e-12)
