"""Mamba-style selective SSM: window (parallel) mode == step (recurrent) mode, init, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from dsrecon.errors import ConfigError
from dsrecon.models import build
from dsrecon.models.mamba import MambaBlock, RMSNorm

F64 = torch.float64


def test_rmsnorm_known_answer():
    norm = RMSNorm(2).double()
    x = torch.tensor([[3.0, 4.0]], dtype=F64)
    torch.testing.assert_close(norm(x), x / math.sqrt(12.5 + 1e-5))


@pytest.mark.parametrize("d_conv", [1, 2, 4])
def test_block_parallel_equals_recurrent_from_a_nonzero_state(d_conv):
    blk = MambaBlock(4, 3, 2, d_conv, 1, 1e-3, 1e-1).double()
    u = torch.randn(2, 23, 4, dtype=F64)
    buf0, h0 = torch.randn(2, 8, d_conv - 1, dtype=F64), torch.randn(2, 8, 3, dtype=F64)
    out, buf, h = blk.forward_seq(u, buf0, h0, method="parallel")
    b, hh, outs = buf0, h0, []
    for t in range(23):
        o, b, hh = blk.forward_step(u[:, t], b, hh)
        outs.append(o)
    torch.testing.assert_close(out, torch.stack(outs, 1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(buf, b)
    torch.testing.assert_close(h, hh, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_model_window_mode_equals_step_mode(n_layers):
    m = build("mamba", obs_dim=3, latent_dim=None, seed=2, d_model=6, d_state=4, d_conv=3, n_layers=n_layers, dtype=F64)
    x = torch.randn(2, 41, 3, dtype=F64).cumsum(1) * 0.2
    par = m.forward_window(x)
    z, preds = m.init_state(x[:, 0]), []
    for t in range(40):
        z = m.step(m.force(z, x[:, t], 1.0))
        preds.append(m.observe(z))
    torch.testing.assert_close(par, torch.stack(preds, 1), rtol=1e-10, atol=1e-10)


def test_parallel_and_sequential_scan_give_the_same_gradients():
    m = build("mamba", obs_dim=2, latent_dim=None, seed=0, d_model=4, d_state=3, n_layers=2, dtype=F64)
    x = torch.randn(2, 30, 2, dtype=F64)
    grads = []
    for scan in ("parallel", "sequential"):
        m.scan = scan
        m.zero_grad()
        m.forward_window(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_paper_initialisation():
    m = build("mamba", obs_dim=2, latent_dim=None, seed=0, d_model=32, d_state=5, dt_min=1e-3, dt_max=1e-1)
    blk = m.blocks[0]
    assert blk.R == 2  # ceil(32 / 16)
    torch.testing.assert_close(-torch.exp(blk.A_log), -torch.arange(1.0, 6.0).repeat(64, 1))  # S4D-real
    dt = torch.nn.functional.softplus(blk.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    assert torch.equal(blk.D, torch.ones(64))


def test_latent_layout():
    m = build("mamba", obs_dim=3, latent_dim=None, d_model=4, d_state=5, expand=2, d_conv=4, n_layers=2)
    assert m.latent_dim == 3 + 2 * 8 * (3 + 5)
    z = torch.randn(2, m.latent_dim)
    x, states = m._unpack(z)
    assert x.shape == (2, 3) and [tuple(s.shape) for st in states for s in st] == [(2, 8, 3), (2, 8, 5)] * 2
    torch.testing.assert_close(m._pack(x, states), z)


def test_bad_hypers():
    for bad in (dict(d_model=0), dict(expand=1.5), dict(d_conv=0), dict(dt_rank=0), dict(dt_min=-1.0), dict(dt_min=0.2, dt_max=0.1), dict(scan="fast")):
        with pytest.raises(ConfigError):
            build("mamba", obs_dim=3, latent_dim=None, **bad)
    with pytest.raises(ConfigError, match="derived"):
        build("mamba", obs_dim=3, latent_dim=3)
