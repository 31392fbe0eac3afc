"""Protocol checks shared by the sequence models (lssl, mamba, node, esn, lstm/gru).

Every model: shapes of init_state / step / observe / force / jacobian / generate, forcing
semantics, forward_window == the trainer's protocol loop for any alpha schedule, determinism
with a seed, float64, config / save-load round trips, bad input.
"""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError, DataError
from dsrecon.models import build, from_config, load, save_model

N = 3
CASES = {
    "lssl": dict(d_model=4, d_state=3, n_layers=2),
    "lssl-learn-ab": dict(d_model=4, d_state=3, n_layers=1, learn_ab=True),
    "mamba": dict(d_model=4, d_state=3, d_conv=3, n_layers=2),
    "node": dict(latent_dim=5, hidden_dim=8, solver="rk4"),
    "node-plain": dict(hidden_dim=8, solver="dopri5", rtol=1e-6, atol=1e-8, dt=0.1),
    "esn": dict(latent_dim=N + 12, washout=5),
    "lstm": dict(hidden_dim=4, cell="lstm", n_layers=2),
    "gru": dict(hidden_dim=4, cell="gru"),
}


def make(case: str, seed: int = 0, dtype=torch.float64):
    hyper = dict(CASES[case])
    latent = hyper.pop("latent_dim", None)
    name = {"lssl-learn-ab": "lssl", "node-plain": "node", "gru": "lstm"}.get(case, case)
    model = build(name, obs_dim=N, latent_dim=latent, seed=seed, dtype=dtype, **hyper)
    if name == "esn":
        gen = torch.Generator().manual_seed(123)
        model.fit_readout(torch.randn(2, 40, N, generator=gen, dtype=dtype).cumsum(1) * 0.1)
    return model


def window(B=2, T=7, dtype=torch.float64):
    return torch.randn(B, T + 1, N, dtype=dtype).cumsum(1) * 0.2


@pytest.fixture(params=list(CASES))
def case(request):
    return request.param


def test_shapes(case):
    m = make(case)
    M = m.latent_dim
    x = window()
    z = m.init_state(x[:, 0])
    assert z.shape == (2, M) and torch.equal(m.observe(z), x[:, 0])
    zc = m.init_state(x[:, :4])
    assert zc.shape == (2, M) and torch.equal(m.observe(zc), x[:, 3])
    z1 = m.step(z)
    assert z1.shape == (2, M) and m.observe(z1).shape == (2, N)
    assert m.force(z1, x[:, 1], 0.5).shape == (2, M)
    assert m.jacobian(z1).shape == (2, M, M)
    g = m.generate(x[:, 0], 6)
    assert g.shape == (2, 6, N) and torch.equal(g[:, 0], x[:, 0])
    assert m.generate(x[:, :3], 4).shape == (2, 4, N)
    assert m.forward_window(x).shape == (2, 7, N)


def test_force_replaces_only_the_observation_slot(case):
    m = make(case)
    z = m.step(m.init_state(window()[:, 0]))
    x = torch.randn(2, N, dtype=torch.float64)
    assert torch.equal(m.force(z, x, 0.0), z)
    full = m.force(z, x, 1.0)
    torch.testing.assert_close(full[:, :N], x)
    assert torch.equal(full[:, N:], z[:, N:])
    half = m.force(z, x, 0.25)
    assert torch.allclose(half[:, :N], 0.75 * z[:, :N] + 0.25 * x)


def test_context_init_equals_the_teacher_forced_protocol(case):
    m = make(case)
    x = window(T=6)
    z = m.init_state(x[:, 0])
    for t in range(5):
        z = m.step(m.force(z, x[:, t], 1.0))
    z = m.force(z, x[:, 5], 1.0)
    torch.testing.assert_close(m.init_state(x[:, :6]), z, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("schedule", ["ones", "gtf", "sparse", "free"])
def test_forward_window_equals_protocol_loop(case, schedule):
    m = make(case)
    x = window(T=9)
    alpha = {
        "ones": torch.ones(9),
        "gtf": torch.full((9,), 0.3),
        "sparse": torch.tensor([1.0, 0, 0, 1, 0, 0, 1, 0, 0]),
        "free": torch.zeros(9),
    }[schedule].double()
    z = m.init_state(x[:, 0])
    ref = []
    for t in range(9):  # the trainer's generic loop, written out
        z = m.step(m.force(z, x[:, t], alpha[t]))
        ref.append(m.observe(z))
    got = m.forward_window(x, alpha if schedule != "ones" else 1.0)
    tol = 1e-5 if case == "node-plain" and schedule == "free" else 1e-9  # one adaptive solve vs T solves
    torch.testing.assert_close(got, torch.stack(ref, 1), rtol=tol, atol=tol)


def test_gradients_reach_every_trainable_parameter(case):
    m = make(case, dtype=torch.float32)
    if not m.trainable_by_gradient:
        assert not list(m.parameters())
        return
    loss = (m.forward_window(window(dtype=torch.float32)) ** 2).mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("init_map.weight") or name.endswith("init_map.bias"):
            continue
        assert p.grad.abs().sum() > 0, name


def test_determinism_and_seed(case):
    a, b, c = make(case, seed=3), make(case, seed=3), make(case, seed=4)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if k == "W_out":  # a fitted ESN readout: BLAS summation order may differ in the last bits
            torch.testing.assert_close(va, vb, rtol=1e-6, atol=1e-9)
        else:
            assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()) if va.is_floating_point())


def test_float32_and_float64(case):
    for dtype in (torch.float32, torch.float64):
        m = make(case, dtype=dtype)
        out = m.generate(window(dtype=dtype)[:, 0], 5)
        assert out.dtype == dtype and torch.isfinite(out).all()


def test_config_and_save_load_round_trip(case, tmp_path):
    m = make(case)
    assert from_config(m.config).config == m.config
    save_model(m, tmp_path / "m")
    m2 = load(tmp_path / "m").double()
    x = window()
    torch.testing.assert_close(m2.forward_window(x), m.forward_window(x))
    torch.testing.assert_close(m2.generate(x[:, 0], 5), m.generate(x[:, 0], 5))


def test_jacobian_matches_finite_differences(case):
    m = make(case)
    z = m.step(m.init_state(window()[:, 0]))[:1]  # (1, M)
    J = m.jacobian(z)[0]
    eps = 1e-6
    cols = []
    for j in range(m.latent_dim):
        e = torch.zeros_like(z)
        e[0, j] = eps
        cols.append((m.step(z + e) - m.step(z - e))[0] / (2 * eps))
    torch.testing.assert_close(J, torch.stack(cols, 1), rtol=1e-4, atol=1e-6)


def test_bad_inputs(case):
    m = make(case)
    with pytest.raises(DataError):
        m.forward_window(torch.randn(2, 5, N + 1, dtype=torch.float64))
    with pytest.raises(DataError):
        m.forward_window(torch.randn(2, 1, N, dtype=torch.float64))
    with pytest.raises(DataError):
        m.init_state(torch.randn(2, 4, 2, N, dtype=torch.float64))
    with pytest.raises(ConfigError):
        m.forward_window(window(T=4), torch.ones(3))
    with pytest.raises(ConfigError):
        m.forward_window(window(T=4), 1.5)
    with pytest.raises(ConfigError):
        m.generate(window()[:, 0], 0)


@pytest.mark.parametrize("name", ["lssl", "mamba"])
def test_latent_dim_is_the_true_state_size(name):
    m = build(name, obs_dim=N, latent_dim=None, d_model=4, d_state=3, n_layers=1)
    assert build(name, obs_dim=N, latent_dim=m.latent_dim, d_model=4, d_state=3, n_layers=1).latent_dim == m.latent_dim
    with pytest.raises(ConfigError, match=str(m.latent_dim)):
        build(name, obs_dim=N, latent_dim=m.latent_dim + 1, d_model=4, d_state=3, n_layers=1)
