"""Fused forced rollout (numba forward + hand-written BPTT) against plain torch autograd.

Every fast path has its slow reference here: forward values and the gradients with respect to
every input (a, W1, W2, h1, h2, z0, zhat) must agree for the plain, mixed (AL-RNN-like) and
clipped forms, for GTF, STF, free running and full forcing, ensembles and batches.
"""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError
from dsrecon.training import fused as F

M, L, T, N = 5, 7, 23, 3          # M != L; T not a multiple of tau = 5; N forced units
INPUTS = ("a", "W1", "W2", "h1", "h2")


def make_form(kind: str, K: int, *, dtype=torch.float64, seed: int = 0, m: int = M, l: int = L):
    """A random, mildly contracting canonical form with leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    form = {
        "a": 0.3 + 0.6 * torch.rand(K, m, generator=g, dtype=dtype),
        "W1": 0.6 * torch.randn(K, m, l, generator=g, dtype=dtype) / l ** 0.5,
        "W2": torch.randn(K, l, m, generator=g, dtype=dtype) / m ** 0.5,
        "h1": 0.1 * torch.randn(K, m, generator=g, dtype=dtype),
        "h2": 0.5 * torch.randn(K, l, generator=g, dtype=dtype),
    }
    for v in form.values():
        v.requires_grad_(True)
    mask = torch.ones(l, dtype=torch.bool)
    if kind == "mixed":          # AL-RNN-like: the first units are linear
        mask[: l - 2] = False
    form["relu_mask"] = mask
    form["clipped"] = kind == "clipped"
    return form


def forcing(name: str, steps: int = T):
    """(force_mask (M,), alpha (T,)) of a forcing scheme."""
    partial = (torch.arange(M) < N).double()
    if name == "gtf":
        return partial, F.gtf_alpha(steps, 0.3)
    if name == "stf":
        return partial, F.stf_alpha(steps, 5)
    if name == "free":
        return partial, F.gtf_alpha(steps, 0.0)
    if name == "full":
        return torch.ones(M), F.gtf_alpha(steps, 1.0)
    raise ValueError(name)


def data(K: int, B: int, *, dtype=torch.float64, seed: int = 1, steps: int = T):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(K, B, M, generator=g, dtype=dtype).requires_grad_(True)
    zhat = torch.randn(K, B, steps, M, generator=g, dtype=dtype).requires_grad_(True)
    G = torch.randn(K, B, steps, M, generator=g, dtype=dtype)      # upstream gradient
    return z0, zhat, G


def value_and_grads(fn, form, z0, zhat, fmask, alpha, G):
    z = fn(form, z0, zhat, fmask, alpha)
    leaves = [form[k] for k in INPUTS] + [z0, zhat]
    return z, torch.autograd.grad((z * G).sum(), leaves)


def is_fused(z: torch.Tensor) -> bool:
    return z.grad_fn is not None and "_FusedRollout" in type(z.grad_fn).__name__


@pytest.fixture
def two_threads(monkeypatch):
    """The fused kernels on 2 threads, parallel split even for tiny work."""
    monkeypatch.setattr(F, "_MIN_PAR_WORK", 0)
    F.set_num_threads(2)
    yield
    F.set_num_threads(1)


# ------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("scheme", ["gtf", "stf", "free", "full"])
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_fused_matches_autograd_reference(kind, K, scheme, B):
    form = make_form(kind, K)
    fmask, alpha = forcing(scheme)
    z0, zhat, G = data(K, B)
    zf, gf = value_and_grads(F.fused_forced_rollout, form, z0, zhat, fmask, alpha, G)
    zr, gr = value_and_grads(F.reference_forced_rollout, form, z0, zhat, fmask, alpha, G)
    assert is_fused(zf) and not is_fused(zr)
    assert zf.shape == (K, B, T, M)
    torch.testing.assert_close(zf, zr, rtol=0, atol=1e-10)
    for name, a, b in zip(INPUTS + ("z0", "zhat"), gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("scheme", ["gtf", "stf"])
@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_long_window_spans_several_chunks(kind, scheme):
    """T = 70: the kernels stage data and accumulate weight gradients in chunks of 32 steps."""
    steps = 70
    form = make_form(kind, 2)
    fmask, alpha = forcing(scheme, steps)
    z0, zhat, G = data(2, 3, steps=steps)
    zf, gf = value_and_grads(F.fused_forced_rollout, form, z0, zhat, fmask, alpha, G)
    zr, gr = value_and_grads(F.reference_forced_rollout, form, z0, zhat, fmask, alpha, G)
    assert is_fused(zf) and steps > 2 * F._K._TC
    torch.testing.assert_close(zf, zr, rtol=0, atol=1e-10)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_thread_split_matches_reference(kind, two_threads):
    """Blocks split over 2 threads (K=1: the batch is split; K=3: members) -> same answers."""
    fmask, alpha = forcing("stf")
    for K, B in [(1, 16), (3, 4)]:
        form = make_form(kind, K)
        z0, zhat, G = data(K, B)
        assert F._blocks(K, B)[0] == (2 if K == 1 else 1)
        zf, gf = value_and_grads(F.fused_forced_rollout, form, z0, zhat, fmask, alpha, G)
        zr, gr = value_and_grads(F.reference_forced_rollout, form, z0, zhat, fmask, alpha, G)
        torch.testing.assert_close(zf, zr, rtol=0, atol=1e-10)
        for a, b in zip(gf, gr):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_identity_W2_fast_path(kind):
    """AL-RNN canonical form (W2 = I fixed, L = M): the kernels skip the W2 products."""
    form = make_form(kind, 3, l=M)
    form["W2"] = torch.eye(M, dtype=torch.float64).expand(3, M, M).clone()
    fmask, alpha = forcing("stf")
    z0, zhat, G = data(3, 4)
    leaves = [form[k] for k in ("a", "W1", "h1", "h2")] + [z0, zhat]
    zf = F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    zr = F.reference_forced_rollout(form, z0, zhat, fmask, alpha)
    assert is_fused(zf) and zf.grad_fn.w2_id
    torch.testing.assert_close(zf, zr, rtol=0, atol=1e-10)
    for a, b in zip(torch.autograd.grad((zf * G).sum(), leaves),
                    torch.autograd.grad((zr * G).sum(), leaves)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_float32_agrees_with_float64_reference(kind):
    form64 = make_form(kind, 3)
    form32 = {k: (v.detach().float().requires_grad_(True) if k in INPUTS else v)
              for k, v in form64.items()}
    fmask, alpha = forcing("gtf")
    z0, zhat, G = data(3, 4)
    z0_32 = z0.detach().float().requires_grad_(True)
    zhat_32 = zhat.detach().float().requires_grad_(True)
    z32, g32 = value_and_grads(F.fused_forced_rollout, form32, z0_32, zhat_32, fmask.float(),
                               alpha.float(), G.float())
    z64, g64 = value_and_grads(F.reference_forced_rollout, form64, z0, zhat, fmask, alpha, G)
    assert z32.dtype == torch.float32 and is_fused(z32)
    torch.testing.assert_close(z32.double(), z64, rtol=1e-4, atol=1e-5)
    for a, b in zip(g32, g64):       # sums of many terms: error relative to the largest entry
        assert a.dtype == torch.float32
        assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6


@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_gradcheck_fused_function(kind):
    form = make_form(kind, 2, m=3, l=4, seed=3)
    g = torch.Generator().manual_seed(4)
    z0 = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    zhat = torch.randn(2, 2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fmask = torch.tensor([1.0, 1.0, 0.0])
    alpha = torch.tensor([1.0, 0.3, 0.0, 0.5, 1.0, 0.0], dtype=torch.float64)

    def fn(a, W1, W2, h1, h2, z0, zhat):
        f = {"a": a, "W1": W1, "W2": W2, "h1": h1, "h2": h2,
             "relu_mask": form["relu_mask"], "clipped": form["clipped"]}
        return F.fused_forced_rollout(f, z0, zhat, fmask, alpha)

    inputs = tuple(form[k] for k in INPUTS) + (z0, zhat)
    assert is_fused(fn(*inputs))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------ known answers
def test_linear_free_run_known_answer():
    """W1 = 0: z_t = a z_{t-1} + h1, so z_T = a^T z0 + h1 (1 - a^T) / (1 - a), dz_T/dz0 = a^T."""
    form = make_form("plain", 2)
    with torch.no_grad():
        form["W1"].zero_()
    fmask, alpha = forcing("free")
    z0, zhat, _ = data(2, 3)
    z = F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    a, h1 = form["a"].detach()[:, None], form["h1"].detach()[:, None]
    expect = a ** T * z0.detach() + h1 * (1 - a ** T) / (1 - a)
    torch.testing.assert_close(z[:, :, -1], expect, rtol=1e-12, atol=1e-12)
    (gz0,) = torch.autograd.grad(z[:, :, -1].sum(), z0)
    torch.testing.assert_close(gz0, (a ** T).expand_as(gz0), rtol=1e-12, atol=1e-14)


def test_full_forcing_cuts_gradient_to_z0():
    """alpha = 1 on all units: z_t = F(zhat_t) exactly (up to rounding) and dz/dz0 = 0."""
    form = make_form("clipped", 2)
    fmask, alpha = forcing("full")
    z0, zhat, _ = data(2, 3)
    z = F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    step = torch.stack([F.shallow_step(form, zhat[:, :, t]) for t in range(T)], dim=2)
    torch.testing.assert_close(z, step, rtol=0, atol=1e-12)
    (gz0,) = torch.autograd.grad(z.sum(), z0)
    assert torch.count_nonzero(gz0) == 0


def test_nan_propagates_like_reference():
    """fastmath=False: a NaN state stays NaN (the trainer's roll-back logic relies on it)."""
    form = make_form("plain", 1)
    fmask, alpha = forcing("free")
    z0, zhat, _ = data(1, 2)
    z0 = z0.detach().clone()
    z0[0, 1, 0] = float("nan")
    zf = F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    zr = F.reference_forced_rollout(form, z0, zhat, fmask, alpha)
    assert torch.equal(torch.isnan(zf), torch.isnan(zr)) and torch.isnan(zf[0, 1]).any()
    assert not torch.isnan(zf[0, 0]).any()


def test_no_grad_and_input_subsets():
    form = make_form("mixed", 3)
    fmask, alpha = forcing("stf")
    z0, zhat, _ = data(3, 4)
    zr = F.reference_forced_rollout(form, z0, zhat, fmask, alpha)
    with torch.no_grad():
        zf = F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    assert zf.grad_fn is None
    torch.testing.assert_close(zf, zr.detach(), rtol=0, atol=1e-10)
    # only the data needs gradient (parameters frozen): still the fused path, same gradient
    frozen = {k: (v.detach() if k in INPUTS else v) for k, v in form.items()}
    zf = F.fused_forced_rollout(frozen, z0, zhat, fmask, alpha)
    assert is_fused(zf)
    (g1,) = torch.autograd.grad(zf.sum(), zhat)
    zr = F.reference_forced_rollout(frozen, z0, zhat, fmask, alpha)
    (g2,) = torch.autograd.grad(zr.sum(), zhat)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------- step, Jacobian, helpers
@pytest.mark.parametrize("kind", ["plain", "mixed", "clipped"])
def test_shallow_step_and_jacobian(kind):
    form = make_form(kind, 2)
    z = torch.randn(2, 4, M, dtype=torch.float64)
    fmask, _ = forcing("free")
    first = F.reference_forced_rollout(form, z, z[:, :, None], fmask, torch.zeros(1))[:, :, 0]
    torch.testing.assert_close(F.shallow_step(form, z), first, rtol=0, atol=1e-14)
    J = F.shallow_jacobian(form, z)
    assert J.shape == (2, 4, M, M)
    for k in range(2):
        single = {key: (v[k:k + 1] if key in INPUTS else v) for key, v in form.items()}
        for b in range(4):
            Jk = torch.autograd.functional.jacobian(
                lambda x: F.shallow_step(single, x[None, None])[0, 0], z[k, b])
            torch.testing.assert_close(J[k, b], Jk, rtol=1e-12, atol=1e-12)


def test_alpha_helpers():
    assert F.stf_alpha(12, 5).tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert F.gtf_alpha(3, 0.25).tolist() == [0.25, 0.25, 0.25]
    assert F.stf_alpha(3, 1, dtype=torch.float32).dtype == torch.float32
    for bad in (lambda: F.stf_alpha(10, 0), lambda: F.stf_alpha(0, 3), lambda: F.gtf_alpha(5, 1.5),
                lambda: F.gtf_alpha(5, -0.1), lambda: F.gtf_alpha(0, 0.5)):
        with pytest.raises(ConfigError):
            bad()


def test_stack_forms_and_dispatch():
    singles = [{k: (v[0] if k in INPUTS else v) for k, v in make_form("mixed", 1, seed=s).items()}
               for s in range(3)]
    form = F.stack_forms(singles, clipped=False)
    assert form["W1"].shape == (3, M, L) and form["clipped"] is False
    fmask, alpha = forcing("gtf")
    z0, zhat, _ = data(3, 2)
    zf = F.forced_rollout(form, z0, zhat, fmask, alpha, impl="fused")
    za = F.forced_rollout(form, z0, zhat, fmask, alpha)
    zr = F.forced_rollout(form, z0, zhat, fmask, alpha, impl="reference")
    assert is_fused(zf) and is_fused(za) and not is_fused(zr)
    torch.testing.assert_close(zf, zr, rtol=0, atol=1e-10)
    other = dict(singles[1], relu_mask=torch.ones(L, dtype=torch.bool))
    with pytest.raises(ConfigError, match="relu_mask"):
        F.stack_forms([singles[0], other])
    with pytest.raises(ConfigError):
        F.stack_forms([])
    with pytest.raises(ConfigError, match="impl"):
        F.forced_rollout(form, z0, zhat, fmask, alpha, impl="fast")
    with pytest.raises(ConfigError, match="threads"):
        F.set_num_threads(0)


def test_fallback_without_numba(monkeypatch):
    monkeypatch.setattr(F, "_K", None)
    assert not F.fused_available()
    form = make_form("plain", 1)
    fmask, alpha = forcing("gtf")
    z0, zhat, _ = data(1, 2)
    z = F.fused_forced_rollout(form, z0, zhat, fmask, alpha)
    assert not is_fused(z)
    torch.testing.assert_close(z, F.reference_forced_rollout(form, z0, zhat, fmask, alpha))
    with pytest.raises(ConfigError, match="numba"):
        F.forced_rollout(form, z0, zhat, fmask, alpha, impl="fused")


# --------------------------------------------------------------------------- bad input
def _bad_cases():
    """(description, form edits, call edits, message fragment)."""
    K, B = 2, 3
    mixed = torch.ones(L, dtype=torch.bool)
    mixed[0] = False
    return [
        ("W1 shape", {"W1": torch.zeros(K, M, L + 1)}, {}, "W2"),
        ("h2 shape", {"h2": torch.zeros(K, L + 1)}, {}, "h2"),
        ("a unstacked", {"a": torch.zeros(M)}, {}, "stack_forms"),
        ("W2 members", {"W2": torch.zeros(K + 1, L, M)}, {}, "W2"),
        ("dtype mix", {"h1": torch.zeros(K, M, dtype=torch.float32)}, {}, "dtype"),
        ("mask dtype", {"relu_mask": torch.ones(L)}, {}, "bool"),
        ("mask length", {"relu_mask": torch.ones(L + 1, dtype=torch.bool)}, {}, "relu_mask"),
        ("clipped mixed", {"relu_mask": mixed, "clipped": True}, {}, "clipped"),
        ("clipped type", {"clipped": 1}, {}, "clipped"),
        ("missing key", {"h1": None}, {}, "missing"),
        ("z0 batch", {}, {"z0": torch.zeros(K, B + 1, M)}, "z0"),
        ("z0 dtype", {}, {"z0": torch.zeros(K, B, M, dtype=torch.float32)}, "z0"),
        ("zhat latent", {}, {"zhat": torch.zeros(K, B, T, M + 1)}, "zhat"),
        ("zhat members", {}, {"zhat": torch.zeros(K + 1, B, T, M)}, "zhat"),
        ("zhat rank", {}, {"zhat": torch.zeros(B, T, M)}, "zhat"),
        ("alpha length", {}, {"alpha": torch.zeros(T - 1)}, "alpha"),
        ("alpha negative", {}, {"alpha": torch.full((T,), -0.1)}, r"\[0, 1\]"),
        ("alpha above one", {}, {"alpha": torch.full((T,), 1.5)}, r"\[0, 1\]"),
        ("alpha nan", {}, {"alpha": torch.full((T,), float("nan"))}, r"\[0, 1\]"),
        ("mask length", {}, {"force_mask": torch.ones(M + 1)}, "force_mask"),
        ("mask range", {}, {"force_mask": torch.full((M,), 2.0)}, r"\[0, 1\]"),
    ]


@pytest.mark.parametrize("fn", [F.fused_forced_rollout, F.reference_forced_rollout])
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_config_error(fn, case):
    _, form_edits, call_edits, match = case
    form = {k: (v.detach() if k in INPUTS else v) for k, v in make_form("plain", 2).items()}
    for k, v in form_edits.items():
        if v is None:
            del form[k]
        else:
            form[k] = v
    z0, zhat, _ = data(2, 3)
    fmask, alpha = forcing("gtf")
    call = {"z0": z0, "zhat": zhat, "force_mask": fmask, "alpha": alpha, **call_edits}
    with pytest.raises(ConfigError, match=match):
        fn(form, call["z0"], call["zhat"], call["force_mask"], call["alpha"])


def test_bad_form_type_and_step_shapes():
    with pytest.raises(ConfigError, match="mapping"):
        F.fused_forced_rollout([1, 2], None, None, None, None)
    form = make_form("plain", 2)
    with pytest.raises(ConfigError, match="z must be"):
        F.shallow_step(form, torch.zeros(3, 4, M, dtype=torch.float64))
    with pytest.raises(ConfigError, match="z must be"):
        F.shallow_jacobian(form, torch.zeros(2, 4, M + 1, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_falls_back_to_reference():
    cpu = make_form("clipped", 2)
    form = {k: (v.detach().cuda().requires_grad_(True) if k in INPUTS else
                v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in cpu.items()}
    fmask, alpha = forcing("stf")
    z0, zhat, _ = data(2, 3)
    zc = F.fused_forced_rollout(form, z0.detach().cuda(), zhat.detach().cuda(), fmask, alpha)
    assert zc.is_cuda and not is_fused(zc)
    torch.testing.assert_close(zc.cpu(), F.fused_forced_rollout(cpu, z0, zhat, fmask, alpha),
                               rtol=1e-9, atol=1e-10)
    with pytest.raises(ConfigError, match="CPU"):
        F.forced_rollout(form, z0.detach().cuda(), zhat.detach().cuda(), fmask, alpha,
                         impl="fused")
