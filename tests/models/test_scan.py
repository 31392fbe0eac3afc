"""Parallel (log-depth) scans against their sequential references: values and gradients."""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError
from dsrecon.models.scan import (
    cpu_kernel_available,
    cuda_kernel_available,
    parallel_scan,
    resolve_method,
    selective_scan,
    selective_scan_ref,
    sequential_scan,
)

F64 = torch.float64
LENGTHS = [1, 2, 3, 5, 7, 8, 13, 64, 100, 257]


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g, allow_unused=False)


def test_geometric_series_known_answer():
    T, c = 20, 0.7
    a = torch.full((1, T, 1), c, dtype=F64)
    h = parallel_scan(a, torch.ones(1, T, 1, dtype=F64))[0, :, 0]
    t = torch.arange(T, dtype=F64)
    torch.testing.assert_close(h, (1 - c ** (t + 1)) / (1 - c))


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_parallel_scan_equals_sequential(T, with_h0):
    a = (torch.rand(2, T, 3, 2, dtype=F64) * 1.2 - 0.1).requires_grad_()  # includes |a| > 1 and a < 0
    b = torch.randn(2, T, 3, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, 2, dtype=F64, requires_grad=True) if with_h0 else None
    inputs = (a, b) + ((h0,) if with_h0 else ())
    hp, hs = parallel_scan(a, b, h0), sequential_scan(a, b, h0)
    torch.testing.assert_close(hp, hs, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(hp)
    for gp, gs in zip(_grads(hp, inputs, g), _grads(hs, inputs, g)):
        torch.testing.assert_close(gp, gs, rtol=1e-11, atol=1e-11)


def test_parallel_scan_gradcheck():
    a = (torch.rand(1, 6, 2, dtype=F64) * 0.9).requires_grad_()
    b = torch.randn(1, 6, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(parallel_scan, (a, b))


def _selective_inputs(B, T, ED, S, dtype=F64):
    u = torch.randn(B, T, ED, dtype=dtype)
    delta = torch.rand(B, T, ED, dtype=dtype) * 0.5 + 0.01
    A = -torch.rand(ED, S, dtype=dtype) * 3 - 0.1
    Bm, C = torch.randn(B, T, S, dtype=dtype), torch.randn(B, T, S, dtype=dtype)
    D, h0 = torch.randn(ED, dtype=dtype), torch.randn(B, ED, S, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, Bm, C, D, h0)]


@pytest.mark.parametrize("T", [1, 5, 17, 64])
@pytest.mark.parametrize("chunk", [1, 3, 7, None])
@pytest.mark.parametrize("method", ["parallel", "blelloch"])
def test_selective_scan_parallel_equals_reference(T, chunk, method):
    ins = _selective_inputs(2, T, 3, 4)
    y1, h1 = selective_scan(*ins, method=method, chunk_size=chunk)
    y2, h2 = selective_scan_ref(*ins)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h1, h2, rtol=1e-12, atol=1e-12)
    gy, gh = torch.randn_like(y1), torch.randn_like(h1)
    g1 = torch.autograd.grad((y1 * gy).sum() + (h1 * gh).sum(), ins)
    g2 = torch.autograd.grad((y2 * gy).sum() + (h2 * gh).sum(), ins)
    for name, a, b in zip("u delta A B C D h0".split(), g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"grad {n}: {m}")


def test_selective_scan_without_optional_inputs_and_float32():
    u, delta, A, Bm, C, _, _ = _selective_inputs(2, 40, 3, 4)
    y64, _ = selective_scan_ref(u, delta, A, Bm, C)
    for method in ("parallel", "blelloch"):
        y32, _ = selective_scan(*(t.float() for t in (u, delta, A, Bm, C)), method=method, chunk_size=16)
        assert y32.dtype == torch.float32
        torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    y_seq, _ = selective_scan(u, delta, A, Bm, C, method="sequential")
    torch.testing.assert_close(y_seq, y64)


@pytest.mark.parametrize("method", ["parallel", "blelloch", "numba", "sequential"])
def test_selective_scan_recurrence_known_answer(method):
    """One channel, one state, constant inputs: h_t = e^{dA} h + dt u b, y = c h + D u."""
    if method == "numba" and not cpu_kernel_available():
        pytest.skip("numba unavailable")
    T, dt, a, u, b, c, d = 6, 0.5, -1.0, 2.0, 3.0, 0.5, 0.25
    args = [torch.full(s, v, dtype=F64) for s, v in [((1, T, 1), u), ((1, T, 1), dt), ((1, 1), a), ((1, T, 1), b), ((1, T, 1), c)]]
    y, h = selective_scan(*args, D=torch.tensor([d], dtype=F64), method=method)
    q = torch.exp(torch.tensor(dt * a, dtype=F64))
    t = torch.arange(1, T + 1, dtype=F64)
    h_exact = dt * u * b * (1 - q**t) / (1 - q)
    torch.testing.assert_close(y[0, :, 0], c * h_exact + d * u)
    torch.testing.assert_close(h[0, 0, 0], h_exact[-1])


def test_bad_inputs():
    a = torch.rand(2, 5, 3)
    with pytest.raises(ConfigError):
        parallel_scan(a, torch.rand(2, 5, 4))
    with pytest.raises(ConfigError):
        parallel_scan(a, a, torch.rand(3, 3))
    u, delta, A, Bm, C, D, h0 = (t.detach() for t in _selective_inputs(2, 5, 3, 4))
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A.T, Bm, C)
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm[:, :4], C)
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm, C, D[:2])
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm, C, h0=h0[:, :2])
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm, C, method="magic")
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm, C, method="parallel", chunk_size=0)
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm, C, method="blelloch", chunk_size=0)
    with pytest.raises(ConfigError):
        selective_scan(u, delta, A, Bm, C, method="numba", chunk_size=0)
    with pytest.raises(ConfigError, match="at least one time step"):
        selective_scan(u[:, :0], delta[:, :0], A, Bm[:, :0], C[:, :0])


# ------------------------------------------------------------ compiled CPU kernel (numba)
needs_numba = pytest.mark.skipif(not cpu_kernel_available(), reason="numba unavailable")


def _grad_pair(ins, out1, out2):
    """Gradients of <gy, y> + <gh, h_T> for two implementations, with the same random gy, gh."""
    (y1, h1), (y2, h2) = out1, out2
    gy, gh = torch.randn_like(y1), torch.randn_like(h1)
    g1 = torch.autograd.grad((y1 * gy).sum() + (h1 * gh).sum(), ins)
    g2 = torch.autograd.grad((y2 * gy).sum() + (h2 * gh).sum(), ins)
    return g1, g2


@needs_numba
@pytest.mark.parametrize("T", [1, 6, 17, 100])
@pytest.mark.parametrize("slab", [1, 7, None])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("with_D", [False, True])
def test_numba_kernel_equals_reference(T, slab, with_h0, with_D):
    u, delta, A, Bm, C, D, h0 = _selective_inputs(3, T, 5, 4)
    D = D if with_D else None
    h0 = h0 if with_h0 else None
    ins = [t for t in (u, delta, A, Bm, C, D, h0) if t is not None]
    out1 = selective_scan(u, delta, A, Bm, C, D, h0, method="numba", chunk_size=slab)
    out2 = selective_scan_ref(u, delta, A, Bm, C, D, h0)
    for a, b in zip(out1, out2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    names = [n for n, t in zip("u delta A B C D h0".split(), (u, delta, A, Bm, C, D, h0)) if t is not None]
    for name, a, b in zip(names, *_grad_pair(ins, out1, out2)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"grad {n}: {m}")


@needs_numba
def test_numba_kernel_gradcheck_and_noncontiguous_inputs():
    u, delta, A, Bm, C, D, h0 = _selective_inputs(2, 9, 3, 2)
    fn = lambda *a: selective_scan(*a, method="numba", chunk_size=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (u, delta, A, Bm, C, D, h0))
    # non-contiguous views (copied to contiguous inside) give the reference answer
    uT = u.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()  # (B, T, ED) view
    A2 = A.detach().T.contiguous().T.requires_grad_()  # (ED, S) view
    out1 = selective_scan(uT, delta, A2, Bm, C, method="numba")
    out2 = selective_scan_ref(uT, delta, A2, Bm, C)
    torch.testing.assert_close(out1[0], out2[0], rtol=1e-10, atol=1e-10)
    for a, b in zip(*_grad_pair([uT, A2], out1, out2)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_numba
def test_numba_kernel_float32_and_nonfinite_propagation():
    u, delta, A, Bm, C, D, _ = (t.detach() for t in _selective_inputs(2, 50, 4, 3))
    y64, h64 = selective_scan_ref(u, delta, A, Bm, C, D)
    y32, h32 = selective_scan(*(t.float() for t in (u, delta, A, Bm, C, D)), method="numba", chunk_size=8)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h32.double(), h64, rtol=1e-4, atol=1e-4)
    u_bad = u.clone()
    u_bad[1, 20, 2] = float("nan")
    y, h = selective_scan(u_bad, delta, A, Bm, C, method="numba")
    y_ref, h_ref = selective_scan_ref(u_bad, delta, A, Bm, C)
    assert torch.equal(y.isnan(), y_ref.isnan()) and torch.equal(h.isnan(), h_ref.isnan())
    assert y[1, 20:, 2].isnan().all() and not y[0].isnan().any()


def test_auto_method_resolution():
    u, delta, A, Bm, C, D, h0 = (t.detach() for t in _selective_inputs(1, 4, 2, 3))
    ins = (u, delta, A, Bm, C)
    cpu = "numba" if cpu_kernel_available() else "parallel"
    assert resolve_method("auto", *ins) == cpu
    assert resolve_method("auto", *(t.float() for t in ins)) == cpu
    assert resolve_method("auto", *ins, h0=h0) == cpu
    assert resolve_method("auto", *(t.bfloat16() for t in ins)) == "parallel"
    assert resolve_method("auto", u.float(), *ins[1:]) == "parallel"  # mixed dtypes
    assert resolve_method("parallel", *ins) == "parallel"
    assert resolve_method("blelloch", *ins) == "blelloch"
    with pytest.raises(ConfigError, match="numba"):
        resolve_method("numba", *(t.bfloat16() for t in ins))
    with pytest.raises(ConfigError, match="one dtype"):
        selective_scan(u, delta, A, Bm, C, D.float(), method="numba")
    with pytest.raises(ConfigError, match="unknown scan method"):
        resolve_method("fast", *ins)


def test_auto_method_gives_the_reference_answer():
    ins = _selective_inputs(2, 33, 3, 2)
    y1, h1 = selective_scan(*ins, method="auto")
    y2, h2 = selective_scan_ref(*ins)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h1, h2, rtol=1e-10, atol=1e-10)
    y3, _ = selective_scan(*(t.detach().bfloat16() for t in ins), method="auto")  # parallel path
    assert y3.dtype == torch.bfloat16
    torch.testing.assert_close(y3.double(), y2.detach(), rtol=0.05, atol=0.1)  # bfloat16: 8-bit mantissa


@pytest.mark.skipif(cuda_kernel_available() and torch.cuda.is_available(), reason="CUDA kernel present")
def test_cuda_method_without_kernel_is_a_clear_error():
    u, delta, A, Bm, C, _, _ = (t.detach() for t in _selective_inputs(1, 4, 2, 2))
    with pytest.raises(ConfigError, match="mamba-ssm"):
        selective_scan(u, delta, A, Bm, C, method="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not (cuda_kernel_available() and torch.cuda.is_available()), reason="needs mamba-ssm and CUDA")
def test_cuda_kernel_matches_parallel_scan():  # pragma: no cover - not runnable on CPU-only CI
    ins = [t.detach().float().cuda() for t in _selective_inputs(2, 300, 8, 4)[:6]]
    y1, h1 = selective_scan(*ins, method="cuda")
    y2, h2 = selective_scan(*ins, method="parallel")
    torch.testing.assert_close(y1, y2, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(h1, h2, rtol=1e-3, atol=1e-3)
