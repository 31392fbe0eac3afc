"""The chunked pure-PyTorch selective scan (method "parallel") against the sequential reference."""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError
from dsrecon.models import scan_chunked
from dsrecon.models.scan import resolve_method, selective_scan, selective_scan_ref
from dsrecon.models.scan_chunked import ChunkedSelectiveScan, chunked_selective_scan, default_block, default_chunk

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
@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize("chunks_per_block", [1, 3, 1000])
def test_blocks_and_chunks_equal_reference(T, chunk, chunks_per_block):
    """Several blocks (the last one partial) and padded chunks give the reference in float64."""
    ins = _inputs(2, T, 3, 4, seed=T + chunk)
    c = min(chunk, T)
    out = ChunkedSelectiveScan.apply(*ins, c * chunks_per_block, c)
    _check_equal(ins, out, selective_scan_ref(*ins[:5], None, ins[5]))


@pytest.mark.parametrize("T", [1, 7, 100])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("with_D", [False, True])
def test_selective_scan_parallel_default_sizes(T, with_h0, with_D):
    u, delta, A, Bm, C, h0 = _inputs(3, T, 5, 4, seed=T)
    D = torch.randn(5, dtype=F64, requires_grad=True) if with_D else None
    h0 = h0 if with_h0 else None
    ins = [t for t in (u, delta, A, Bm, C, D, h0) if t is not None]
    out = selective_scan(u, delta, A, Bm, C, D, h0, method="parallel")
    ref = selective_scan_ref(u, delta, A, Bm, C, D, h0)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    gy, gh = torch.randn_like(out[0]), torch.randn_like(out[1])
    g1 = torch.autograd.grad((out[0] * gy).sum() + (out[1] * gh).sum(), ins)
    g2 = torch.autograd.grad((ref[0] * gy).sum() + (ref[1] * gh).sum(), ins)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("log_decay", [-20.0, -800.0])
def test_strong_decay_is_exact(dtype, log_decay):
    """Delta A = -20 per step (and -800: dA underflows to exactly 0) in float32 and float64."""
    B, T, ED, S = 2, 60, 3, 4
    ins = _inputs(B, T, ED, S, dtype=dtype, seed=3)
    with torch.no_grad():
        ins[1].fill_(5.0)  # delta
        ins[2].copy_(torch.full((ED, S), log_decay / 5.0, dtype=dtype))  # A
    out = ChunkedSelectiveScan.apply(*ins, 16, 8)
    ref = selective_scan_ref(*ins[:5], None, ins[5])
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()
    _check_equal(ins, out, ref, tol=1e-10 if dtype == F64 else 1e-5)


def test_growth_and_mixed_decay_are_exact():
    """A > 0 in some channels (growth) next to strongly decaying ones: no range condition."""
    ins = _inputs(2, 40, 4, 3, seed=5)
    with torch.no_grad():
        ins[2][0] = 0.3  # growing channel
        ins[2][1] = -30.0  # dA ~ exp(-0.3 .. -15)
    out = ChunkedSelectiveScan.apply(*ins, 12, 4)
    _check_equal(ins, out, selective_scan_ref(*ins[:5], None, ins[5]))


def test_single_sequence_channel_and_state():
    ins = _inputs(1, 23, 1, 1, seed=7)
    out = ChunkedSelectiveScan.apply(*ins, 10, 5)
    _check_equal(ins, out, selective_scan_ref(*ins[:5], None, ins[5]))


def test_log_depth_carries(monkeypatch):
    """More chunks per block than CARRY_LOOP_MAX: Hillis-Steele carries, forward and adjoint."""
    monkeypatch.setattr(scan_chunked, "CARRY_LOOP_MAX", 4)
    ins = _inputs(2, 101, 3, 2, seed=11)
    out = ChunkedSelectiveScan.apply(*ins, 102, 2)  # 51 chunks in one block
    _check_equal(ins, out, selective_scan_ref(*ins[:5], None, ins[5]))


def test_float32_close_to_float64_reference():
    ins = _inputs(4, 300, 8, 16, seed=13, delta_scale=0.1, a_scale=16.0)
    ref = selective_scan_ref(*(t.detach() for t in ins[:5]), None, ins[5].detach())
    y32, h32 = selective_scan(*(t.detach().float() for t in ins[:5]), h0=ins[5].detach().float(), method="parallel")
    assert y32.dtype == torch.float32 and h32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h32.double(), ref[1], rtol=1e-4, atol=1e-4)


def test_gradcheck():
    ins = _inputs(2, 7, 2, 3, seed=17)
    assert torch.autograd.gradcheck(lambda *a: chunked_selective_scan(*a, chunk_size=2), tuple(ins))


def test_half_precision_and_mixed_dtypes():
    u, delta, A, Bm, C, h0 = (t.detach() for t in _inputs(2, 50, 3, 4, seed=19))
    ref_y, ref_h = selective_scan_ref(u, delta, A, Bm, C, None, h0)
    for dt, tol in ((torch.bfloat16, 0.1), (torch.float16, 0.02)):
        y, h = selective_scan(*(t.to(dt) for t in (u, delta, A, Bm, C)), h0=h0.to(dt), method="parallel")
        assert y.dtype == dt and h.dtype == dt  # computed in float32, returned in the input dtype
        torch.testing.assert_close(y.double(), ref_y, rtol=tol, atol=tol)
    uf = u.float().requires_grad_()
    y, h = selective_scan(uf, delta, A, Bm, C, h0=h0, method="parallel")  # promoted to float64
    assert y.dtype == F64
    torch.testing.assert_close(y, selective_scan_ref(uf.double(), delta, A, Bm, C, None, h0)[0], rtol=1e-6, atol=1e-6)
    y.sum().backward()
    assert uf.grad.dtype == torch.float32


def test_noncontiguous_inputs():
    ins = _inputs(3, 30, 4, 5, seed=23)
    views = [t.detach().transpose(0, -1).contiguous().transpose(0, -1).requires_grad_() for t in ins]
    assert not views[0].is_contiguous()
    out = ChunkedSelectiveScan.apply(*views, 8, 4)
    _check_equal(views, out, selective_scan_ref(*views[:5], None, views[5]))


def test_nan_stays_in_its_channel():
    u, delta, A, Bm, C, _ = (t.detach() for t in _inputs(2, 40, 4, 3, seed=29))
    u[1, 20, 2] = float("nan")
    y, h = selective_scan(u, delta, A, Bm, C, method="parallel", chunk_size=8)
    y_ref, h_ref = selective_scan_ref(u, delta, A, Bm, C)
    assert torch.equal(y.isnan(), y_ref.isnan()) and torch.equal(h.isnan(), h_ref.isnan())
    assert y[1, 20:, 2].isnan().all() and not y[0].isnan().any() and not y[1, :, :2].isnan().any()


def test_default_sizes():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert default_chunk(2048, cpu) == scan_chunked.CPU_CHUNK and default_chunk(5, cpu) == 5
    assert default_chunk(2048, gpu) == scan_chunked.DEVICE_CHUNK
    blk = default_block(8, 2048, 16, 16, 16, cpu)
    assert blk % 16 == 0 and blk * 8 * 16 * 16 <= scan_chunked.BLOCK_ELEMENTS
    assert default_block(8, 2048, 16, 16, 32, gpu) == 2048  # the whole window on the GPU
    assert default_block(1, 10, 1, 1, 4, cpu) == 12  # never more than the padded length
    assert default_block(64, 10**6, 64, 16, 32, gpu) % 32 == 0  # capped, a multiple of c


@pytest.mark.parametrize("T,block,chunk,expected", [
    (2048, 256, 16, (8, 16, 2048)),  # exact: 8 blocks of 16 chunks
    (2000, 256, 16, (8, 16, 2048)),  # 125 chunks -> 8 blocks of 16, 3 chunks of padding
    (17 * 16, 256, 16, (2, 9, 288)),  # 17 chunks: 2 balanced blocks of 9, not 16 + 16
    (5, 12, 4, (1, 2, 8)),
    (1, 1, 1, (1, 1, 1)),
])
def test_block_layout_pads_fewer_chunks_than_blocks(T, block, chunk, expected):
    NB, n, Tp = scan_chunked.block_layout(T, block, chunk)
    assert (NB, n, Tp) == expected
    assert n <= max(1, block // chunk) and Tp >= T and (Tp - T) // chunk < NB


def test_layout_copies_round_trip():
    x = torch.randn(3, 40, 5)
    xb = scan_chunked._to_blocks(x, 2, 4, 5)  # (NB, c, F, n, B)
    assert xb.shape == (2, 5, 5, 4, 3) and xb.is_contiguous()
    assert xb[1, 2, 3, 0, 2] == x[2, (1 * 4 + 0) * 5 + 2, 3]
    assert torch.equal(scan_chunked._from_blocks(xb, 37), x[:, :37])


def test_workspace_reuse_gives_identical_results():
    scan_chunked.clear_workspace()
    big = [t.detach() for t in _inputs(4, 200, 8, 4, seed=31)]
    small = [t.detach() for t in _inputs(2, 50, 3, 2, seed=37)]
    first = selective_scan(*small[:5], h0=small[5], method="parallel")
    selective_scan(*big[:5], h0=big[5], method="parallel")  # leaves a larger scratch in the pool
    again = selective_scan(*small[:5], h0=small[5], method="parallel")
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert scan_chunked._POOL
    scan_chunked.clear_workspace()
    assert not scan_chunked._POOL


def test_auto_takes_parallel_off_the_cpu_and_bad_chunk():
    ins = [torch.empty(s, device="meta") for s in ((1, 4, 2), (1, 4, 2), (2, 3), (1, 4, 3), (1, 4, 3))]
    assert resolve_method("auto", *ins) == "parallel"  # e.g. CUDA without mamba-ssm
    u, delta, A, Bm, C, _ = (t.detach() for t in _inputs(1, 4, 2, 3))
    with pytest.raises(ConfigError, match="chunk_size"):
        selective_scan(u, delta, A, Bm, C, method="parallel", chunk_size=0)
