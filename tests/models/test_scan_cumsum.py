"""The closed-form chunked selective scan (method "closed") against the sequential reference."""

from __future__ import annotations

import pytest
import torch

from dsrecon.models import scan_cumsum
from dsrecon.models.scan import resolve_method, selective_scan, selective_scan_ref
from dsrecon.models.scan_cumsum import CumsumSelectiveScan, closed_form_selective_scan, fast_channels

F64 = torch.float64
NAMES = "u delta A B C h0".split()


def _inputs(B, T, ED, S, dtype=F64, seed=0, delta_scale=0.5, a_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, T, ED, generator=g, dtype=dtype)
    delta = torch.rand(B, T, ED, generator=g, dtype=dtype) * delta_scale + 0.01
    A = -torch.rand(ED, S, generator=g, dtype=dtype) * a_scale - 0.1
    Bm, C = torch.randn(B, T, S, generator=g, dtype=dtype), torch.randn(B, T, S, generator=g, dtype=dtype)
    h0 = torch.randn(B, ED, S, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, Bm, C, h0)]


def _check_equal(ins, out, ref, tol=1e-10):
    """Values and all gradients of <gy, y> + <gh, h_T> agree (random cotangents)."""
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    gy, gh = torch.randn_like(out[0]), torch.randn_like(out[1])
    used = [t for t in ins if t.requires_grad]
    g1 = torch.autograd.grad((out[0] * gy).sum() + (out[1] * gh).sum(), used)
    g2 = torch.autograd.grad((ref[0] * gy).sum() + (ref[1] * gh).sum(), used)
    for name, a, b in zip(NAMES, g1, g2):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("T", [1, 5, 17, 64, 257])
@pytest.mark.parametrize("chunk", [1, 3, 16])
@pytest.mark.parametrize("chunks_per_block", [1, 3, 1000])
def test_kernel_blocks_and_chunks_equal_reference(T, chunk, chunks_per_block):
    """The closed form alone: several blocks (the last partial), padded chunks, float64."""
    ins = _inputs(2, T, 3, 4, seed=T + chunk)
    c = min(chunk, T)
    out = CumsumSelectiveScan.apply(*ins, c * chunks_per_block, c)
    _check_equal(ins, out, selective_scan_ref(*ins[:5], None, ins[5]))


@pytest.mark.parametrize("T", [1, 7, 100])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("with_D", [False, True])
def test_selective_scan_closed(T, with_h0, with_D):
    u, delta, A, Bm, C, h0 = _inputs(3, T, 5, 4, seed=T)
    D = torch.randn(5, dtype=F64, requires_grad=True) if with_D else None
    h0 = h0 if with_h0 else None
    ins = [t for t in (u, delta, A, Bm, C, D, h0) if t is not None]
    out = selective_scan(u, delta, A, Bm, C, D, h0, method="closed")
    ref = selective_scan_ref(u, delta, A, Bm, C, D, h0)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    gy, gh = torch.randn_like(out[0]), torch.randn_like(out[1])
    g1 = torch.autograd.grad((out[0] * gy).sum() + (out[1] * gh).sum(), ins)
    g2 = torch.autograd.grad((ref[0] * gy).sum() + (ref[1] * gh).sum(), ins)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert resolve_method("closed", u, delta, A, Bm, C) == "closed"


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("log_decay", [-20.0, -800.0])
def test_strong_decay_is_exact(dtype, log_decay):
    """Delta A = -20 per step (float64: closed form, range 320 < 600; float32: fall-back) and -800."""
    B, T, ED, S = 2, 60, 3, 4
    ins = _inputs(B, T, ED, S, dtype=dtype, seed=3)
    with torch.no_grad():
        ins[1].fill_(5.0)
        ins[2].copy_(torch.full((ED, S), log_decay / 5.0, dtype=dtype))
    ok = fast_channels(*(t.detach() for t in ins), 16)
    assert bool(ok.all()) == (dtype == F64 and log_decay == -20.0)
    out = closed_form_selective_scan(*ins)
    ref = selective_scan_ref(*ins[:5], None, ins[5])
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()
    _check_equal(ins, out, ref, tol=1e-10 if dtype == F64 else 1e-5)


def test_growth_and_mixed_channels_split_exactly():
    """Growing, strongly decaying and ordinary channels side by side: the guard splits them and
    the joined result (values, gradients) is the reference's."""
    ins = _inputs(2, 40, 4, 3, seed=5)
    with torch.no_grad():
        ins[2][0] = 0.3  # growth, range 0.3 * 8 < 600: closed form
        ins[2][1] = -500.0  # range far above the bound: fall-back
    ok = fast_channels(*(t.detach() for t in ins), 16)
    assert ok.tolist() == [True, False, True, True]
    out = closed_form_selective_scan(*ins, chunk_size=16)
    _check_equal(ins, out, selective_scan_ref(*ins[:5], None, ins[5]))


def test_float32_close_to_float64_reference():
    ins = _inputs(4, 300, 8, 16, seed=13, delta_scale=0.1, a_scale=16.0)
    assert bool(fast_channels(*(t.detach().float() for t in ins), 16).all())  # the closed form is exercised
    ref = selective_scan_ref(*(t.detach() for t in ins[:5]), None, ins[5].detach())
    y32, h32 = selective_scan(*(t.detach().float() for t in ins[:5]), h0=ins[5].detach().float(), method="closed")
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h32.double(), ref[1], rtol=1e-4, atol=1e-4)


def test_gradcheck():
    ins = _inputs(2, 7, 2, 3, seed=17)
    assert torch.autograd.gradcheck(lambda *a: closed_form_selective_scan(*a, chunk_size=3), tuple(ins))


def test_half_precision_and_noncontiguous():
    u, delta, A, Bm, C, h0 = (t.detach() for t in _inputs(2, 50, 3, 4, seed=19))
    ref_y, _ = selective_scan_ref(u, delta, A, Bm, C, None, h0)
    y, h = selective_scan(*(t.to(torch.bfloat16) for t in (u, delta, A, Bm, C)), h0=h0.bfloat16(), method="closed")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), ref_y, rtol=0.1, atol=0.1)
    ins = _inputs(3, 30, 4, 5, seed=23)
    views = [t.detach().transpose(0, -1).contiguous().transpose(0, -1).requires_grad_() for t in ins]
    assert not views[0].is_contiguous()
    _check_equal(views, closed_form_selective_scan(*views, chunk_size=4), selective_scan_ref(*views[:5], None, views[5]))


def test_nan_stays_in_its_channel():
    u, delta, A, Bm, C, _ = (t.detach() for t in _inputs(2, 40, 4, 3, seed=29))
    u[1, 20, 2] = float("nan")
    assert fast_channels(u, delta, A, Bm, C, torch.zeros(2, 4, 3, dtype=F64), 8).tolist() == [True, True, False, True]
    y, h = selective_scan(u, delta, A, Bm, C, method="closed", chunk_size=8)
    y_ref, h_ref = selective_scan_ref(u, delta, A, Bm, C)
    assert torch.equal(y.isnan(), y_ref.isnan()) and torch.equal(h.isnan(), h_ref.isnan())
    assert y[1, 20:, 2].isnan().all() and not y[1, :20, 2].isnan().any() and not y[0].isnan().any()


def test_default_block():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    blk = scan_cumsum.default_block(8, 2048, 16, 16, 16, cpu)
    assert blk % 16 == 0 and blk * 8 * 16 * 16 <= scan_cumsum.BLOCK_ELEMENTS
    assert scan_cumsum.default_block(8, 2048, 16, 16, 16, gpu) == 2048
    assert scan_cumsum.default_block(1, 10, 1, 1, 4, cpu) == 12
