"""Per-member forcing strengths alpha (K, T) in the fused forced rollout (issue 4, ensembles
with adaptive GTF): fused kernels vs the autograd reference, one call vs K single-member calls,
(T,) vs repeated (K, T), known answers and bad input.

The members' schedules below always differ (asserted), so a kernel that used one member's
alpha for all, or ignored the member index, fails these tests.
"""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError
from dsrecon.training import fused as F

M, L, T, N = 5, 7, 23, 3          # M != L; N forced units (partial forcing)
INPUTS = ("a", "W1", "W2", "h1", "h2")
KINDS = ["plain", "mixed", "clipped"]


def make_form(kind: str, K: int, *, dtype=torch.float64, seed: int = 0, m: int = M, l: int = L):
    """A random, mildly contracting canonical form whose tensors are leaves requiring grad."""
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


def member_alpha(scheme: str, K: int, steps: int = T, *, seed: int = 5) -> torch.Tensor:
    """(K, T) forcing schedules that differ between members."""
    if scheme == "agtf":        # constant per member, as adaptive GTF produces (0 and 1 included)
        alpha = torch.linspace(0.0, 1.0, K, dtype=torch.float64)[:, None].expand(K, steps)
    elif scheme == "mixed":     # member k: STF tau = k + 2 / GTF 0.3 / free, cycling
        rows = []
        for k in range(K):
            rows.append([F.stf_alpha(steps, k + 2), F.gtf_alpha(steps, 0.3),
                         F.gtf_alpha(steps, 0.0)][k % 3])
        alpha = torch.stack(rows)
    elif scheme == "random":    # any values in [0, 1], exact 0 and 1 included
        g = torch.Generator().manual_seed(seed)
        alpha = torch.rand(K, steps, generator=g, dtype=torch.float64)
        alpha[:, ::4] = 1.0
        alpha[:, 1::5] = 0.0
    else:
        raise ValueError(scheme)
    alpha = alpha.contiguous()
    assert K == 1 or not bool((alpha == alpha[:1]).all())
    return alpha


def data(K: int, B: int, *, dtype=torch.float64, seed: int = 1, steps: int = T):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(K, B, M, generator=g, dtype=dtype).requires_grad_(True)
    zhat = torch.randn(K, B, steps, M, generator=g, dtype=dtype).requires_grad_(True)
    G = torch.randn(K, B, steps, M, generator=g, dtype=dtype)      # upstream gradient
    return z0, zhat, G


PARTIAL = (torch.arange(M) < N).double()


def value_and_grads(fn, form, z0, zhat, fmask, alpha, G):
    z = fn(form, z0, zhat, fmask, alpha)
    leaves = [form[k] for k in INPUTS] + [z0, zhat]
    return z, torch.autograd.grad((z * G).sum(), leaves)


def is_fused(z: torch.Tensor) -> bool:
    return z.grad_fn is not None and "_FusedRollout" in type(z.grad_fn).__name__


def assert_same(zf, gf, zr, gr, atol=1e-10):
    torch.testing.assert_close(zf, zr, rtol=0, atol=atol)
    for name, a, b in zip(INPUTS + ("z0", "zhat"), gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=atol, msg=f"gradient of {name}")


# ------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("scheme", ["agtf", "mixed", "random"])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_matches_reference_with_member_alphas(kind, scheme, B):
    K = 3
    form = make_form(kind, K)
    alpha = member_alpha(scheme, K)
    z0, zhat, G = data(K, B)
    zf, gf = value_and_grads(F.fused_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    zr, gr = value_and_grads(F.reference_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    assert is_fused(zf) and not is_fused(zr) and zf.shape == (K, B, T, M)
    assert_same(zf, gf, zr, gr)


@pytest.mark.parametrize("kind", KINDS)
def test_long_window_member_alphas(kind):
    """T = 70 spans several 32-step chunks of the kernels (staging, weight-gradient products)."""
    steps = 70
    form = make_form(kind, 2)
    alpha = member_alpha("random", 2, steps)
    z0, zhat, G = data(2, 3, steps=steps)
    zf, gf = value_and_grads(F.fused_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    zr, gr = value_and_grads(F.reference_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    assert is_fused(zf) and steps > 2 * F._K._TC
    assert_same(zf, gf, zr, gr)


@pytest.mark.parametrize("kind", KINDS)
def test_split_batches_use_their_members_alpha(kind, monkeypatch):
    """4 threads, K = 2, B = 16: each member's batch is split into 2 blocks (block j belongs to
    member j // 2); every block must force with its own member's schedule."""
    monkeypatch.setattr(F, "_MIN_PAR_WORK", 0)
    F.set_num_threads(4)
    try:
        form = make_form(kind, 2)
        alpha = member_alpha("mixed", 2)
        z0, zhat, G = data(2, 16)
        assert F._blocks(2, 16)[0] == 2
        zf, gf = value_and_grads(F.fused_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    finally:
        F.set_num_threads(1)
    zr, gr = value_and_grads(F.reference_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    assert_same(zf, gf, zr, gr)


@pytest.mark.parametrize("fn", [F.fused_forced_rollout, F.reference_forced_rollout])
@pytest.mark.parametrize("kind", KINDS)
def test_one_call_equals_single_member_calls(kind, fn):
    """alpha (K, T) in one call == K calls with member k's form, data and alpha[k] (T,)."""
    K, B = 3, 4
    form = make_form(kind, K)
    alpha = member_alpha("random", K)
    z0, zhat, G = data(K, B)
    z_one, g_one = value_and_grads(fn, form, z0, zhat, PARTIAL, alpha, G)
    parts = []
    for k in range(K):
        fk = {n: (v[k:k + 1] if n in INPUTS else v) for n, v in form.items()}
        parts.append(fn(fk, z0[k:k + 1], zhat[k:k + 1], PARTIAL, alpha[k]))
    z_sep = torch.cat(parts)
    leaves = [form[k] for k in INPUTS] + [z0, zhat]
    g_sep = torch.autograd.grad((z_sep * G).sum(), leaves)
    assert_same(z_one, g_one, z_sep, g_sep, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_alpha_equals_repeated_rows(kind):
    """(T,) and the same schedule repeated as (K, T) give bit-identical results."""
    K, B = 3, 2
    form = make_form(kind, K)
    alpha = F.stf_alpha(T, 4) * 0.7
    z0, zhat, G = data(K, B)
    z1, g1 = value_and_grads(F.fused_forced_rollout, form, z0, zhat, PARTIAL, alpha, G)
    z2, g2 = value_and_grads(F.fused_forced_rollout, form, z0, zhat, PARTIAL,
                             alpha.expand(K, T), G)
    assert torch.equal(z1, z2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("kind", KINDS)
def test_float32_member_alphas_agree_with_float64_reference(kind):
    form64 = make_form(kind, 3)
    form32 = {k: (v.detach().float().requires_grad_(True) if k in INPUTS else v)
              for k, v in form64.items()}
    alpha = member_alpha("agtf", 3)
    z0, zhat, G = data(3, 4)
    z0_32 = z0.detach().float().requires_grad_(True)
    zhat_32 = zhat.detach().float().requires_grad_(True)
    z32, g32 = value_and_grads(F.fused_forced_rollout, form32, z0_32, zhat_32, PARTIAL.float(),
                               alpha.float(), G.float())
    z64, g64 = value_and_grads(F.reference_forced_rollout, form64, z0, zhat, PARTIAL, alpha, G)
    assert z32.dtype == torch.float32 and is_fused(z32)
    torch.testing.assert_close(z32.double(), z64, rtol=1e-4, atol=1e-5)
    for a, b in zip(g32, g64):       # sums of many terms: error relative to the largest entry
        assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_member_alphas(kind):
    form = make_form(kind, 2, m=3, l=4, seed=3)
    g = torch.Generator().manual_seed(4)
    z0 = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    zhat = torch.randn(2, 2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fmask = torch.tensor([1.0, 1.0, 0.0])
    alpha = torch.tensor([[1.0, 0.3, 0.0, 0.5, 1.0, 0.0],
                          [0.2, 0.9, 1.0, 0.0, 0.4, 0.6]], dtype=torch.float64)

    def fn(a, W1, W2, h1, h2, z0, zhat):
        f = {"a": a, "W1": W1, "W2": W2, "h1": h1, "h2": h2,
             "relu_mask": form["relu_mask"], "clipped": form["clipped"]}
        return F.fused_forced_rollout(f, z0, zhat, fmask, alpha)

    inputs = tuple(form[k] for k in INPUTS) + (z0, zhat)
    assert is_fused(fn(*inputs))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------ known answers
def test_known_answer_free_and_fully_forced_members_in_one_call():
    """W1 = 0 (z' = a * z + h1), all units forced. Member 0 runs free (alpha 0):
    z_T = a^T z0 + h1 (1 - a^T) / (1 - a) and dz_T/dz0 = a^T, dz/dzhat = 0. Member 1 is fully
    forced (alpha 1): z_t = a * zhat_t + h1 and dz/dz0 = 0. Member 2 (alpha 0.25):
    z_1 = a (0.75 z0 + 0.25 zhat_0) + h1."""
    form = make_form("plain", 3)
    with torch.no_grad():
        form["W1"].zero_()
    alpha = torch.stack([F.gtf_alpha(T, 0.0), F.gtf_alpha(T, 1.0), F.gtf_alpha(T, 0.25)])
    z0, zhat, _ = data(3, 2)
    z = F.fused_forced_rollout(form, z0, zhat, torch.ones(M), alpha)
    assert is_fused(z)
    a, h1 = form["a"].detach()[:, None], form["h1"].detach()[:, None]          # (K, 1, M)
    zd, zhd = z0.detach(), zhat.detach()
    free = a[0] ** T * zd[0] + h1[0] * (1 - a[0] ** T) / (1 - a[0])
    torch.testing.assert_close(z[0, :, -1], free, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z[1], a[1, :, None] * zhd[1] + h1[1, :, None], rtol=0, atol=1e-14)
    torch.testing.assert_close(z[2, :, 0], a[2] * (0.75 * zd[2] + 0.25 * zhd[2, :, 0]) + h1[2],
                               rtol=0, atol=1e-14)
    gz0, gzhat = torch.autograd.grad(z[:, :, -1].sum(), [z0, zhat])
    torch.testing.assert_close(gz0[0], (a[0] ** T).expand(2, M), rtol=1e-12, atol=1e-14)
    assert torch.count_nonzero(gzhat[0]) == 0 and torch.count_nonzero(gz0[1]) == 0
    assert torch.count_nonzero(gz0[2]) > 0 and torch.count_nonzero(gzhat[2]) > 0


# --------------------------------------------------------------------------- bad input
K_BAD, B_BAD = 2, 3


@pytest.mark.parametrize("fn", [F.fused_forced_rollout, F.reference_forced_rollout])
@pytest.mark.parametrize("alpha,match", [
    (torch.zeros(K_BAD + 1, T), r"\(T,\) = \(23,\).*\(K, T\) = \(2, 23\).*got \(3, 23\)"),
    (torch.zeros(K_BAD, T - 1), r"\(K, T\) = \(2, 23\).*got \(2, 22\)"),
    (torch.zeros(1, T), r"\(K, T\) = \(2, 23\).*got \(1, 23\)"),
    (torch.zeros(T, K_BAD), r"\(K, T\).*got \(23, 2\)"),
    (torch.zeros(K_BAD, T, 1), r"\(K, T\).*got \(2, 23, 1\)"),
    (torch.tensor(0.5), r"\(T,\).*got \(\)"),
    (torch.stack([torch.full((T,), 0.5), torch.full((T,), 1.5)]), r"\[0, 1\].*member k=1 of K=2"),
    (torch.stack([torch.full((T,), -0.1), torch.zeros(T)]), r"\[0, 1\].*member k=0"),
    (torch.stack([torch.zeros(T), torch.full((T,), float("nan"))]), r"\[0, 1\].*member k=1"),
], ids=["K+1 rows", "T-1 cols", "1 row", "transposed", "3-d", "scalar", "above one",
        "negative", "nan"])
def test_bad_member_alpha_raises_config_error(fn, alpha, match):
    form = {k: (v.detach() if k in INPUTS else v) for k, v in make_form("plain", K_BAD).items()}
    z0, zhat, _ = data(K_BAD, B_BAD)
    with pytest.raises(ConfigError, match=match):
        fn(form, z0, zhat, PARTIAL, alpha)


def test_member_alpha_accepts_numpy_and_single_member_rows():
    """alpha as a float64 numpy (K, T) array (what the trainer passes), and (1, T) for K = 1."""
    form = make_form("clipped", 2)
    alpha = member_alpha("agtf", 2)
    z0, zhat, _ = data(2, 2)
    z_np = F.fused_forced_rollout(form, z0, zhat, PARTIAL.numpy(), alpha.numpy())
    torch.testing.assert_close(z_np, F.fused_forced_rollout(form, z0, zhat, PARTIAL, alpha),
                               rtol=0, atol=0)
    f1 = {n: (v[:1] if n in INPUTS else v) for n, v in form.items()}
    z_row = F.fused_forced_rollout(f1, z0[:1], zhat[:1], PARTIAL, alpha[1:])
    z_vec = F.fused_forced_rollout(f1, z0[:1], zhat[:1], PARTIAL, alpha[1])
    assert torch.equal(z_row, z_vec)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_member_alphas_match_cpu_kernels():
    """CUDA tensors take the reference path with alpha (K, T) on the device; same answers."""
    cpu = make_form("clipped", 2)
    form = {k: (v.detach().cuda().requires_grad_(True) if k in INPUTS else
                v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in cpu.items()}
    alpha = member_alpha("mixed", 2)
    z0, zhat, G = data(2, 3)
    zc = F.fused_forced_rollout(form, z0.detach().cuda(), zhat.detach().cuda(), PARTIAL,
                                alpha.cuda())
    assert zc.is_cuda and not is_fused(zc)
    torch.testing.assert_close(zc.cpu(), F.fused_forced_rollout(cpu, z0, zhat, PARTIAL, alpha),
                               rtol=1e-9, atol=1e-10)
