"""HiPPO-LegS, discretisation, convolution kernels and the LSSL model (conv mode == recurrent mode)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dsrecon.errors import ConfigError
from dsrecon.models import build
from dsrecon.models.hippo import (
    bilinear,
    causal_fft_conv,
    krylov_kernel,
    krylov_kernel_ref,
    legs,
    legs_nplr_p,
    zoh,
)
from dsrecon.models.lssl import LSSLLayer

F64 = torch.float64


def test_legs_hand_computed_s3():
    A, B = legs(3)
    s3, s5, s15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
    torch.testing.assert_close(A, torch.tensor([[-1.0, 0, 0], [-s3, -2, 0], [-s5, -s15, -3]], dtype=F64))
    torch.testing.assert_close(B, torch.tensor([1.0, s3, s5], dtype=F64))


@pytest.mark.parametrize("S", [1, 4, 9])
def test_legs_closed_form_and_structure(S):
    A, B = legs(S)
    for n in range(S):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1))
        for k in range(S):
            want = -math.sqrt((2 * n + 1) * (2 * k + 1)) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k].item() == pytest.approx(want, abs=1e-12)
    # normal plus low rank (S4 Thm. 1): A + P P^T = -I/2 + skew-symmetric
    P = legs_nplr_p(S)
    Nrm = A + P[:, None] * P[None, :]
    torch.testing.assert_close(Nrm + Nrm.T, -torch.eye(S, dtype=F64), atol=1e-12, rtol=0)
    # a constant input is represented by the 0-th Legendre coefficient only: A e_0 = -B
    torch.testing.assert_close(A[:, 0], -B)


def test_bilinear_approximates_the_matrix_exponential_to_third_order():
    A, B = legs(6)
    errs = []
    for dt in (1e-2, 5e-3):
        dA, dB = bilinear(A, B, torch.tensor([dt], dtype=F64))
        E = torch.tensor(scipy.linalg.expm(A.numpy() * dt))
        dB_exact = torch.linalg.solve(A, (E - torch.eye(6, dtype=F64)) @ B)
        errs.append(((dA[0] - E).abs().max().item(), (dB[0] - dB_exact).abs().max().item()))
        assert errs[-1][0] < 2 * dt**3 * 6**3 and errs[-1][1] < 2 * dt**3 * 6**3
    # local error O(dt^3): halving dt divides it by ~8
    assert 6 < errs[0][0] / errs[1][0] < 10 and 6 < errs[0][1] / errs[1][1] < 10


def test_zoh_against_scipy():
    A, B = legs(4)
    dt = torch.tensor([0.3, 0.05], dtype=F64)
    dA, dB = zoh(A, B, dt)
    for k, h in enumerate(dt.tolist()):
        E = scipy.linalg.expm(A.numpy() * h)
        np.testing.assert_allclose(dA[k].numpy(), E, atol=1e-12)
        np.testing.assert_allclose(dB[k].numpy(), np.linalg.solve(A.numpy(), (E - np.eye(4)) @ B.numpy()), atol=1e-12)


def test_bilinear_is_stable_for_legs():
    A, B = legs(32)
    dA, _ = bilinear(A, B, torch.tensor([1e-3, 0.1, 10.0], dtype=F64))
    assert torch.linalg.eigvals(dA).abs().max() < 1


@pytest.mark.parametrize("T", [1, 2, 5, 16, 37])
def test_krylov_kernel_equals_explicit_powers(T):
    A, B = legs(5)
    dA, dB = bilinear(A, B, torch.tensor([0.01, 0.2, 1.0], dtype=F64))
    C = torch.randn(3, 5, dtype=F64)
    torch.testing.assert_close(krylov_kernel(dA, dB, C, T), krylov_kernel_ref(dA, dB, C, T), rtol=1e-11, atol=1e-12)


def test_krylov_kernel_float32_long_sequence_stays_accurate():
    A, B = legs(32)
    dA, dB = bilinear(A, B, torch.tensor([1e-3, 1e-2, 1e-1], dtype=F64))
    C = torch.randn(3, 32, dtype=F64)
    ref = krylov_kernel_ref(dA, dB, C, 4096)
    got = krylov_kernel(dA.float(), dB.float(), C.float(), 4096).double()
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()


def test_causal_fft_conv_equals_direct_convolution():
    u, K = torch.randn(2, 3, 11, dtype=F64), torch.randn(3, 11, dtype=F64)
    direct = torch.zeros_like(u)
    for t in range(11):
        for j in range(t + 1):
            direct[..., t] += K[:, j] * u[..., t - j]
    torch.testing.assert_close(causal_fft_conv(u, K), direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("learn_ab", [False, True])
def test_layer_convolutional_mode_equals_recurrent_mode(learn_ab):
    layer = LSSLLayer(4, 6, 1e-3, 1e-1, learn_ab).double()
    u = torch.randn(2, 50, 4, dtype=F64)
    out_conv, s_last = layer.forward_seq(u, return_state=True)
    s, disc, outs = torch.zeros(2, 4, 6, dtype=F64), layer.discretize(), []
    for t in range(50):
        o, s = layer.forward_step(u[:, t], s, disc)
        outs.append(o)
    torch.testing.assert_close(out_conv, torch.stack(outs, 1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_last, s, rtol=1e-10, atol=1e-10)


def test_model_conv_window_equals_recurrent_window_float32():
    m = build("lssl", obs_dim=2, latent_dim=None, seed=1, d_model=8, d_state=16, n_layers=2)
    x = torch.randn(3, 301, 2).cumsum(1) * 0.1
    conv = m.forward_window(x)
    rec = m.protocol_window(x, torch.ones(300))
    torch.testing.assert_close(conv, rec, rtol=1e-4, atol=1e-4)


def test_generate_uses_the_feedback_loop():
    m = build("lssl", obs_dim=2, latent_dim=None, seed=0, d_model=4, d_state=3, n_layers=1, dtype=F64)
    x0 = torch.randn(2, 2, dtype=F64)
    out = m.generate(x0, 5)
    z = m.init_state(x0)
    for t in range(1, 5):
        z = m.step(z)
        torch.testing.assert_close(out[:, t], z[:, :2])
    assert m._frozen is None  # the cached discretisation is dropped after generate


def test_latent_dim_and_hyper_errors():
    m = build("lssl", obs_dim=3, latent_dim=None, d_model=4, d_state=5, n_layers=2)
    assert m.latent_dim == 3 + 2 * 4 * 5
    with pytest.raises(ConfigError, match="43"):
        build("lssl", obs_dim=3, latent_dim=10, d_model=4, d_state=5, n_layers=2)
    for bad in (dict(d_model=0), dict(d_state=2.5), dict(n_layers=-1), dict(dt_min=0.0), dict(dt_min=0.5, dt_max=0.1)):
        with pytest.raises(ConfigError):
            build("lssl", obs_dim=3, latent_dim=None, **bad)
    with pytest.raises(ConfigError):
        legs(0)
