"""CUDA-graph replay of the forced rollout (dsrecon.training.cuda_rollout, opt-in with
DSRECON_CUDA_GRAPHS=1) against the eager reference: values and every gradient, graph reuse, no
aliasing of results, the switches.

The equivalence tests need a GPU (marker ``gpu``; run them with ``pytest -m gpu``); the dispatch
rules and the capturable loop run everywhere."""

from __future__ import annotations

import pytest
import torch

from dsrecon.models import build
from dsrecon.training import cuda_rollout as CR
from dsrecon.training import fused as F
from dsrecon.training.forcing import fused_available
from dsrecon.training.fused_inputs import check_inputs

from test_fused import INPUTS, data, forcing, make_form, value_and_grads  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _to(form, device, dtype=torch.float64):
    return {k: (v.detach().to(device, dtype).requires_grad_(True) if k in INPUTS else
                v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in form.items()}


# ------------------------------------------------------------------ everywhere
def test_graphs_are_opt_in_and_for_cuda_only(monkeypatch):
    monkeypatch.delenv("DSRECON_CUDA_GRAPHS", raising=False)
    assert not CR.graphs_enabled(torch.device("cuda"))          # default: off (a device object needs no GPU)
    for on in ("1", "true", "ON"):
        monkeypatch.setenv("DSRECON_CUDA_GRAPHS", on)
        assert CR.graphs_enabled(torch.device("cuda"))
        assert not CR.graphs_enabled(torch.device("cpu"))
    for off in ("0", "false", "off", ""):
        monkeypatch.setenv("DSRECON_CUDA_GRAPHS", off)
        assert not CR.graphs_enabled(torch.device("cuda"))


def test_cpu_tensors_never_take_the_graph_path(monkeypatch):
    monkeypatch.setenv("DSRECON_CUDA_GRAPHS", "1")
    form = make_form("mixed", 2)
    fmask, alpha = forcing("stf")
    z0, zhat, _ = data(2, 3)
    t, mask, clipped, c = check_inputs(form, z0, zhat, fmask, alpha)
    assert CR.graphed_rollout(t, mask, clipped, z0, zhat, c) is None
    assert not CR._CACHE


def test_auto_mode_uses_the_form_rollout_on_cuda_only_with_graphs(monkeypatch):
    m = build("alrnn", obs_dim=3, latent_dim=6, n_pwl=2, seed=0)
    cuda = torch.device("cuda")
    monkeypatch.delenv("DSRECON_CUDA_GRAPHS", raising=False)
    assert fused_available(m, torch.device("cpu"), "auto") is not None
    assert fused_available(m, cuda, "auto") is None           # default: the generic protocol loop
    assert fused_available(m, cuda, "on") is not None
    monkeypatch.setenv("DSRECON_CUDA_GRAPHS", "1")
    assert fused_available(m, cuda, "auto") is not None       # graphs on: the form-based path


def test_loop_is_the_reference_recurrence():
    """The capturable loop body computes exactly what the reference does (CPU, float64)."""
    for kind, (fm, al) in (("mixed", forcing("stf")), ("clipped", forcing("gtf")), ("plain", forcing("full"))):
        form = make_form(kind, 2)
        z0, zhat, _ = data(2, 3)
        t, mask, clipped, c = check_inputs(form, z0, zhat, fm, al)
        run = CR._loop(mask, clipped, bool(mask.all()))
        z = run(*[t[k] for k in INPUTS], z0, zhat, c)
        assert torch.equal(z, F.reference_forced_rollout(form, z0, zhat, fm, al))


def test_capture_check_catches_wrong_values_and_wrong_gradients():
    """_verify (run once per captured signature) compares values and gradients with the eager loop."""
    form = make_form("mixed", 2)
    fm, al = forcing("stf")
    z0, zhat, _ = data(2, 3)
    t, mask, clipped, c = check_inputs(form, z0, zhat, fm, al)
    tensors = [t[k] for k in INPUTS] + [z0, zhat, c]
    run = CR._loop(mask, clipped, bool(mask.all()))
    assert CR._verify(run, run, tensors) is None
    scaled = lambda *a: run(*a) * (1.0 + 1e-6)                   # noqa: E731
    assert "output differs" in CR._verify(scaled, run, tensors)

    def doubled_grad(*a):                                         # right values, gradients x2
        z = run(*a)
        return z.detach() + 2.0 * (z - z.detach())

    assert "gradient" in CR._verify(doubled_grad, run, tensors)


# ------------------------------------------------------------------ on a GPU
@pytest.fixture
def graphs_on(monkeypatch):
    monkeypatch.setenv("DSRECON_CUDA_GRAPHS", "1")
    CR.clear_cache()
    yield
    CR.clear_cache()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind,scheme", [("mixed", "stf"), ("clipped", "gtf"), ("plain", "full")])
def test_graphed_rollout_matches_the_reference(kind, scheme, graphs_on):
    cpu = make_form(kind, 2)
    form = _to(cpu, "cuda")
    fmask, alpha = forcing(scheme)
    z0, zhat, G = data(2, 3)
    args = [z0.detach().cuda().requires_grad_(True), zhat.detach().cuda().requires_grad_(True)]
    zg, gg = value_and_grads(F.fused_forced_rollout, form, *args, fmask, alpha, G.cuda())
    assert len(CR._CACHE) == 1 and next(iter(CR._CACHE.values())) is not None  # captured, used
    zr, gr = value_and_grads(F.reference_forced_rollout, form, *args, fmask, alpha, G.cuda())
    torch.testing.assert_close(zg, zr, rtol=1e-12, atol=1e-12)
    for a, b in zip(gg, gr):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@needs_cuda
def test_graph_is_reused_with_new_values_and_results_are_not_aliased(graphs_on):
    fmask, _ = forcing("stf")
    alpha = torch.rand(2, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(5))  # (K, T)
    outs, refs = [], []
    for seed in (0, 1, 2):
        form = _to(make_form("mixed", 2, seed=seed), "cuda")
        z0, zhat, _ = data(2, 3, seed=seed + 10)
        z0, zhat = z0.detach().cuda().requires_grad_(True), zhat.detach().cuda()
        outs.append(F.fused_forced_rollout(form, z0, zhat, fmask, alpha))
        refs.append(F.reference_forced_rollout(form, z0, zhat, fmask, alpha).detach())
    assert len(CR._CACHE) == 1                                  # one signature, one capture
    for z, r in zip(outs, refs):                                # earlier results not overwritten
        torch.testing.assert_close(z.detach(), r, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@needs_cuda
def test_no_grad_and_switch_off_run_the_reference(graphs_on, monkeypatch):
    form = _to(make_form("mixed", 1), "cuda")
    fmask, alpha = forcing("stf")
    z0, zhat, _ = data(1, 2)
    z0, zhat = z0.detach().cuda(), zhat.detach().cuda()
    with torch.no_grad():
        F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    monkeypatch.setenv("DSRECON_CUDA_GRAPHS", "0")
    F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    assert not CR._CACHE


@pytest.mark.gpu
@needs_cuda
def test_float32_training_step_on_cuda_matches_cpu_kernels(graphs_on):
    """The trainer's path for an ensemble member: float32 on CUDA (graphs) vs the CPU kernels."""
    cpu = make_form("mixed", 3, dtype=torch.float32)
    fmask, alpha = forcing("stf")
    fmask = fmask.float()
    z0, zhat, G = data(3, 4, dtype=torch.float32)
    zc, gc = value_and_grads(F.fused_forced_rollout, cpu, z0, zhat, fmask, alpha, G)
    form = _to(cpu, "cuda", torch.float32)
    args = [z0.detach().cuda().requires_grad_(True), zhat.detach().cuda().requires_grad_(True)]
    zg, gg = value_and_grads(F.fused_forced_rollout, form, *args, fmask, alpha, G.cuda())
    torch.testing.assert_close(zg.cpu(), zc, rtol=1e-4, atol=1e-5)
    for a, b in zip(gg, gc):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4)
