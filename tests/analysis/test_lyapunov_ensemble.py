"""Lyapunov spectra of ensembles: one stacked pass (numba / torch vmap) equals the loop over members."""

import importlib

import numpy as np
import pytest
import torch

from analysis_models import AffineMap, HenonModel, random_plrnn, zoo_model
from dsrecon.analysis import lyapunov_spectrum
from dsrecon.errors import IntegrationError

LY = importlib.import_module("dsrecon.analysis.lyapunov")  # the package attribute is the function
PWL = importlib.import_module("dsrecon.analysis.lyapunov_pwl")


def counting(monkeypatch, module, name):
    calls = []
    fn = getattr(module, name)

    def wrapped(*a, **k):
        calls.append(1)
        return fn(*a, **k)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def assert_same(stacked, loop, atol=0.0):
    assert len(stacked) == len(loop)
    for a, b in zip(stacked, loop):
        assert a.method == b.method
        assert np.allclose(a.all, b.all, rtol=0, atol=atol) and np.allclose(a.convergence, b.convergence, atol=atol)
        assert a.kaplan_yorke == pytest.approx(b.kaplan_yorke, abs=max(atol, 1e-12))


def test_pwl_members_go_through_one_compiled_call_per_architecture(monkeypatch):
    members = [zoo_model("clipped-shplrnn", s, wscale=2.0, hidden_dim=10) for s in (1, 2, 3)]
    members += [zoo_model("plrnn", 1, wscale=2.0, latent_dim=4), zoo_model("alrnn", 1, wscale=2.0, latent_dim=4, n_pwl=2)]
    kw = dict(n_steps=200, transient=10, n_initial_conditions=3, seed=0, warmup=10)
    loop = [lyapunov_spectrum(m, **kw) for m in members]
    calls = counting(monkeypatch, PWL, "pwl_block_sums")
    stacked = lyapunov_spectrum(members, **kw)
    # clipped shPLRNN x3 | PLRNN (L = M = 4, not clipped) and AL-RNN (L = M = 4) share one call
    assert len(calls) == 2
    assert_same(stacked, loop)  # the same kernel: bit-identical
    assert all(r.method == "numba" for r in stacked)
    assert not np.allclose(stacked[0].exponents, stacked[1].exponents)


@pytest.mark.parametrize("jac", ["analytic", "autograd"])
def test_torch_members_are_stacked_with_vmap(monkeypatch, jac):
    members = [zoo_model("shplrnn", s, wscale=2.0, hidden_dim=6) for s in (1, 2)]
    kw = dict(n_steps=60, transient=5, n_initial_conditions=2, seed=0, warmup=0, method="torch", jacobian=jac)
    loop = [lyapunov_spectrum(m, **kw) for m in members]
    calls = counting(monkeypatch, LY, "_map_sums")
    stacked = lyapunov_spectrum(members, **kw)
    assert len(calls) == 1  # one Benettin loop for both members
    assert_same(stacked, loop, atol=1e-10)


def test_members_with_buffers_and_known_spectra():
    # Henon maps with different parameters: log|det J| = log b, the sum of the exponents
    members = [HenonModel(1.4, 0.3), HenonModel(1.2, 0.25)]
    kw = dict(x0=[0.1, 0.1], n_steps=600, transient=100, n_initial_conditions=4, seed=0, jacobian="autograd")
    stacked = lyapunov_spectrum(members, **kw)
    assert abs(stacked[0].per_step[0] - 0.419) < 0.02
    for r, b in zip(stacked, (0.3, 0.25)):
        assert abs(r.per_step.sum() - np.log(b)) < 1e-9
    assert_same(stacked, [lyapunov_spectrum(m, **kw) for m in members], atol=1e-10)


class ItemModel(AffineMap):
    """A map whose step uses .item() (data-dependent Python control flow): vmap cannot batch it."""

    def step(self, z):
        if float(z.abs().max().item()) > 1e12:
            raise RuntimeError("unbounded")
        return super().step(z)


def test_unvmappable_or_mixed_members_fall_back_to_the_loop(monkeypatch):
    lam = [np.diag([0.9, 0.5]), np.diag([0.8, 0.3])]
    members = [ItemModel(A) for A in lam]
    calls = counting(monkeypatch, LY, "_map_sums")
    res = lyapunov_spectrum(members, n_steps=100, transient=0, seed=0, warmup=20)
    assert len(calls) == 2  # the probe failed: one loop per member
    for r, A in zip(res, lam):
        assert np.allclose(r.exponents, np.log(np.diag(A)), atol=1e-9)
    calls.clear()
    mixed = [AffineMap(lam[0]), HenonModel()]  # different architectures
    res = lyapunov_spectrum(mixed, x0=None, n_steps=50, transient=0, seed=0, method="torch")
    assert len(calls) == 2 and len(res) == 2


@pytest.mark.parametrize("method", ["numba", "torch"])
def test_a_diverging_member_raises_integration_error(method):
    bad = random_plrnn(3, 0)
    with torch.no_grad():
        bad.a.fill_(3.0)  # |a| > 1: every orbit escapes
    good = random_plrnn(3, 0)
    with torch.no_grad():
        good.W.mul_(0.1)
    with pytest.raises(IntegrationError, match="non-finite"):
        lyapunov_spectrum([good, bad], n_steps=2000, transient=0, seed=0, method=method)


def test_members_differing_only_in_a_plain_attribute_are_not_stacked(monkeypatch):
    from dsrecon.models import build

    # same parameter shapes, different number of ReLU units: stacking would apply member 0's n_pwl
    members = [build("alrnn", obs_dim=3, latent_dim=6, n_pwl=2, seed=0), build("alrnn", obs_dim=3, latent_dim=6,
                                                                             n_pwl=4, seed=1)]
    kw = dict(n_steps=80, transient=0, seed=0, method="torch", warmup=0)
    loop = [lyapunov_spectrum(m, **kw) for m in members]
    calls = counting(monkeypatch, LY, "_map_sums")
    assert_same(lyapunov_spectrum(members, **kw), loop)
    assert len(calls) == 2


@pytest.mark.gpu
def test_stacked_torch_path_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    members = [zoo_model("clipped-shplrnn", s, wscale=2.0, hidden_dim=10) for s in (1, 2, 3)]
    kw = dict(n_steps=60, transient=5, n_initial_conditions=4, seed=0, warmup=0)
    gpu = lyapunov_spectrum(members, device="cuda", **kw)  # numba needs the CPU: the vmap path runs
    assert all(r.method == "torch" for r in gpu)
    assert_same(gpu, lyapunov_spectrum(members, method="torch", **kw), atol=1e-9)
