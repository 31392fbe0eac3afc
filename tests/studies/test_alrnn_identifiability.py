"""The teacher-student study's pieces (analysis/alrnn_identifiability.py): its loss is the trainer's
objective, and the standardised view of a teacher is the same dynamical system."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from dsrecon.models import build
from dsrecon.training import SparseTF, batch_loss

SCRIPT = Path(__file__).resolve().parents[2] / "analysis" / "alrnn_identifiability.py"
spec = importlib.util.spec_from_file_location("alrnn_identifiability", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def _model():
    m = build("alrnn", obs_dim=3, latent_dim=8, n_pwl=2, seed=3).to(torch.float64)
    with torch.no_grad():
        m.W.mul_(20.0)  # leave the near-linear initialisation so that the ReLUs matter
        m.h.normal_(0.0, 0.3)
    return m.eval()


def test_stf_loss_is_the_trainers_objective():
    m = _model()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 41, 3, generator=g, dtype=torch.float64)
    x_in = x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    alpha = SparseTF(8).alpha_matrix(40)[0]
    ref = batch_loss(m, x, x_in, alpha, mask=None, lambda_reg=0.0)
    assert abs(study.stf_loss(m, x, x_in, tau=8) - float(ref.detach())) < 1e-12
    assert abs(study.stf_loss(m, x, x_in, tau=4) - float(ref.detach())) > 1e-6  # the interval matters


def test_standardised_teacher_is_the_same_system_in_new_units():
    m = _model()
    mu = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    sd = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)
    view = study.Standardised(m, mu, sd)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 33, 3, generator=g, dtype=torch.float64)  # data in the teacher's units
    x_in = x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    xs, xs_in = (x - mu) / sd, (x_in - mu) / sd
    # the standardised view's predictions are the teacher's, mapped to the new units
    alpha = SparseTF(8).alpha_matrix(32)[0]
    from dsrecon.training import generic_rollout
    with torch.no_grad():
        z_native = generic_rollout(m, x_in, alpha)
        z_view = generic_rollout(view, xs_in, alpha)
        pred_native = (m.observe(z_native.reshape(-1, 8)) - mu) / sd
        pred_view = view.observe(z_view.reshape(-1, 8))
    np.testing.assert_allclose(pred_view.numpy(), pred_native.numpy(), rtol=0, atol=1e-12)
    # and its loss is the native loss with per-dimension weights 1 / sd^2
    weighted = float((((m.observe(z_native.reshape(4, 32, 8)) - x[:, 1:]) / sd) ** 2).mean())
    assert abs(study.stf_loss(view, xs, xs_in, tau=8) - weighted) < 1e-12


class _Sines:
    """Stand-in teacher: generate() returns 2 + 3 sin(0.1 t + phase_i) in each observed dimension."""

    def generate(self, x0, n_steps):
        t = np.arange(n_steps)[:, None]
        return torch.as_tensor(2.0 + 3.0 * np.sin(0.1 * t + np.arange(3)[None]))[None]


def test_teacher_series_drops_the_transient_and_standardises():
    series, mu, sd = study.teacher_series(_Sines(), np.zeros(3), n_steps=63_832, transient=1000)
    assert series.shape == (62_832, 3)
    np.testing.assert_allclose(mu, 2.0, atol=1e-3)
    np.testing.assert_allclose(sd, 3.0 / np.sqrt(2.0), atol=1e-3)
    np.testing.assert_allclose(series.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(series.std(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(series[0] * sd + mu, 2.0 + 3.0 * np.sin(0.1 * 1000 + np.arange(3)), atol=1e-9)


def test_refit_initial_map_fits_only_L_and_lowers_the_loss():
    m = build("alrnn", obs_dim=3, latent_dim=6, n_pwl=2, seed=4).to(torch.float64)
    with torch.no_grad():
        m.A.mul_(0.9)
        m.W.normal_(0.0, 0.3)         # free units driven by the observed ones: L matters
    view = study.Standardised(m, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    series = _Sines().generate(None, 3000)[0].numpy()
    series = (series - series.mean(0)) / series.std(0)
    x = torch.as_tensor(np.stack([series[i:i + 201] for i in range(0, 2700, 90)]))
    before = study.stf_loss(view, x, x, tau=16)
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if not n.endswith("L")}
    L0 = m.obs.L.detach().clone()
    n = study.refit_initial_map(view, series, tau=16, input_noise=0.0, steps=40, batch=16, seed=0)
    assert n == L0.numel()
    assert not torch.equal(m.obs.L, L0)
    for name, p in m.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert study.stf_loss(view, x, x, tau=16) < before
