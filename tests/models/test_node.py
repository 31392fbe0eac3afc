"""Neural ODE: flow map of a known linear field, its Jacobian, solver failures, windows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

from dsrecon.errors import ConfigError, DsreconError, IntegrationError
from dsrecon.models import build

F64 = torch.float64
A = np.array([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.0], [0.0, 0.0, -0.5]])


def linear_node(solver="dopri5", dt=0.3, **kw):
    m = build("node", obs_dim=3, latent_dim=None, seed=0, n_hidden_layers=0, dt=dt, solver=solver, dtype=F64, **kw)
    with torch.no_grad():
        m.field.net[0].weight.copy_(torch.tensor(A))
        m.field.net[0].bias.zero_()
    return m


@pytest.mark.parametrize("solver,kw,tol", [("dopri5", dict(rtol=1e-10, atol=1e-12), 1e-8), ("rk4", dict(step_size=0.01), 1e-8)])
def test_flow_map_of_a_linear_field(solver, kw, tol):
    m = linear_node(solver, **kw)
    z = torch.randn(4, 3, dtype=F64)
    E = scipy.linalg.expm(A * 0.3)
    got = m.step(z).detach().numpy()
    np.testing.assert_allclose(got, z.numpy() @ E.T, atol=tol)
    ivp = scipy.integrate.solve_ivp(lambda t, y: A @ y, (0, 0.3), z[0].numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[0], ivp.y[:, -1], atol=tol)
    np.testing.assert_allclose(m.jacobian(z).numpy(), np.broadcast_to(E, (4, 3, 3)), atol=tol)


def test_generate_on_the_output_grid():
    m = linear_node(rtol=1e-10, atol=1e-12)
    z = torch.randn(2, 3, dtype=F64)
    out = m.generate(z, 6).numpy()
    for k in range(6):
        np.testing.assert_allclose(out[:, k], z.numpy() @ scipy.linalg.expm(A * 0.3 * k).T, atol=1e-8)


def test_adjoint_gradients_match_direct_backprop():
    grads = []
    for adjoint in (False, True):
        m = build("node", obs_dim=2, latent_dim=3, seed=0, hidden_dim=6, dt=0.2, adjoint=adjoint, rtol=1e-9, atol=1e-10, dtype=F64)
        x = torch.randn(2, 5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
        m.forward_window(x, 0.5).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def blow_up(solver, **kw):
    m = build("node", obs_dim=2, latent_dim=None, n_hidden_layers=0, dt=0.5, solver=solver, max_num_steps=60, dtype=F64, **kw)
    with torch.no_grad():
        m.field.net[0].weight.copy_(torch.eye(2) * 2000.0)
    return m


def test_adaptive_solver_failure_is_an_integration_error_with_time():
    m = blow_up("dopri5")
    with pytest.raises(IntegrationError, match=r"dopri5.*at t = 0\.\d+"):
        m.step(torch.ones(1, 2, dtype=F64))
    x = torch.ones(1, 4, 2, dtype=F64)
    with pytest.raises(IntegrationError, match=r"at step 0 .*max_num_steps"):
        m.forward_window(x, 0.5)


def test_fixed_step_blow_up_reports_the_sampling_step():
    m = blow_up("euler")  # |1 + 1000| ** k overflows float64 after ~103 steps
    with pytest.raises(IntegrationError, match=r"euler.*sampling step 10\d.*non-finite state"):
        m.generate(torch.ones(1, 2, dtype=F64), 200)


def test_forward_window_fast_paths():
    m = build("node", obs_dim=2, latent_dim=None, seed=1, hidden_dim=8, solver="rk4", dt=0.1, step_size=0.03, dtype=F64)
    x = torch.randn(3, 8, 2, dtype=F64)
    ones = m.forward_window(x)  # batched one-interval flows
    torch.testing.assert_close(ones, torch.stack([m.step(x[:, t]) for t in range(7)], 1))
    free = m.forward_window(x, 0.0)  # one solve over the grid == iterated flow map for fixed-grid solvers
    z, ref = x[:, 0], []
    for _ in range(7):
        z = m.step(z)
        ref.append(z)
    torch.testing.assert_close(free, torch.stack(ref, 1), rtol=1e-12, atol=1e-12)


def test_bad_hypers():
    with pytest.raises(DsreconError, match="dopri5"):
        build("node", obs_dim=2, latent_dim=None, solver="dopri")
    with pytest.raises(DsreconError):
        build("node", obs_dim=2, latent_dim=None, activation="sigmoidish")
    for bad in (dict(latent_dim=1), dict(dt=0.0), dict(rtol=-1.0), dict(step_size=0.0), dict(hidden_dim=0), dict(n_hidden_layers=-1), dict(max_num_steps=0)):
        kw = {"latent_dim": None, **bad}
        with pytest.raises(ConfigError):
            build("node", obs_dim=2, **kw)
