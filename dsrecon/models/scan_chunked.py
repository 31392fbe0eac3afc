"""Chunked selective scan in pure PyTorch: the device-agnostic training path of Mamba's S6 scan.

Private kernel behind :func:`dsrecon.models.scan.selective_scan` (``method="parallel"``; what
``method="auto"`` takes on CUDA without mamba-ssm and on CPU without numba). Equivalence with
the sequential reference :func:`dsrecon.models.scan.selective_scan_ref` (values and every
gradient, float64, lengths that are not multiples of the chunk, strong decay) is tested in
``tests/models/test_scan_chunked.py``.

Glossary (as in :mod:`dsrecon.models.scan`)
-------------------------------------------
B   batch                     T   time steps (padded with no-op steps to a multiple of c)
ED  inner width (channels)    S   SSM state size per channel
c   chunk length              n   chunks in one block (a block is n * c consecutive steps)

Recurrence (Gu & Dao 2023, Algorithm 2; zero-order hold for A, dB = Delta B)::

    dA_t = exp(Delta_t A)                                   (B, S, ED)
    h_t  = dA_t * h_{t-1} + (Delta_t u_t) B_t               (B, S, ED)
    y_t  = <C_t, h_t>_S                                     (B, ED)   (D u is added outside)

Algorithm (the chunked scan of Mamba-2's SSD, Dao & Gu 2024, with Mamba-1's diagonal A)
------------------------------------------------------------------------------------------
Time is cut into chunks of c steps, n consecutive chunks form a block, and all chunks of a
block are scanned *at once*. Layout: the inputs are copied once per call into a block-major
layout, (NB, c, F, n, B) for a (B, T, F) input, and the block's work tensors are
(c, S, ED, n, B): step j of all n chunks and all sequences is one contiguous (S, ED, n, B)
slab, so one elementwise op advances every chunk by one step, and the chunk and batch indices
are the innermost, contiguous dimensions. Broadcasts against the parameters A (S, ED) are then
scalar-times-vector loops over n*B contiguous elements (with ED or S innermost, as in an
earlier version, every broadcast product ran in loops of 16 elements and cost 3-4x a plain
elementwise op). Forward, per block:

1. dA = exp2(Delta (log2 e) A) (exp2 is ~3x cheaper than exp in PyTorch's CPU kernels) and
   b = (Delta u) B for the whole block (broadcast products);
2. each chunk's end state from a zero start, accumulated in one (S, ED, n, B) buffer,
   acc = dA_j acc + b_j, c - 1 steps; the chunk's total decay prod_j dA_j =
   exp2((log2 e) A sum_j Delta_j) from the (c, ED, n, B) sum of Delta;
3. chunk carries: the state entering chunk k, s_k = decay_{k-1} s_{k-1} + acc_{k-1} (a loop
   over the n chunks, or log2 n Hillis-Steele passes when n > CARRY_LOOP_MAX);
4. the true states in place over b, h_j = dA_j h_{j-1} + b_j from h_{-1} = s_k, and
   y = sum_S C h.

Depth per block: 2c + min(n, 2 log2 n) elementwise steps. Blocks run one after another: on the
CPU a block holds about 2**19 elements per work buffer (B=8, ED=S=16: 256 steps, c=16, n=16);
elsewhere (CUDA) the whole window is one block (up to 2**25 elements per buffer), so T/c chunks
run in parallel. T is padded with no-op steps to NB * n * c (fewer than NB chunks of padding:
:func:`block_layout` balances the blocks). Backward (the adjoint lam_t = dL/dh_t obeys the
reverse recurrence lam_t = gy_t C_t + dA_{t+1} lam_{t+1}, Martin & Cundy 2018) walks the
blocks in reverse, recomputes dA, b and the states from the saved chunk-start states s_k (an
(NB, S, ED, n, B) tensor, 1/c of the state history; mamba-ssm's CUDA kernel also recomputes
from chunk starts), runs the same stages on the adjoint (each chunk's local adjoint at its
start in one buffer, reverse carries, then the true adjoint in place over gy C) and then::

    dL/dC_t = sum_e gy_t h_t            dL/dB_t = sum_e lam_t Delta_t u_t
    G_t     = lam_t dA_t h_{t-1}        (= dL/d(Delta_t A))
    dL/dA  += sum_{b,t} G_t Delta_t     dL/dDelta_t = sum_s G_t A + u_t <lam_t, B_t>_S
    dL/du_t = Delta_t <lam_t, B_t>_S    dL/dh0 = dA_0 lam_0

Exactness: the recurrences are the sequential loop's own multiply-adds; the only other form is
a chunk's total decay exp2((log2 e) A sum Delta), a product of exponentials (never a ratio as in
a closed form exp(S_t - S_r) = exp(S_t) / exp(S_r)), so there is no range condition: dA
underflowing to 0 (Delta A = -20 per step and beyond) or growth (A > 0) come out as in the
sequential loop, and a NaN stays in its own channel. Padding steps have Delta = u = 0, hence
dA = 1 and b = 0: they leave the state, the adjoint and dL/dA unchanged.

Measurements (``benchmarks/bench_ssm.py`` [1a]: B=8, T=2048, ED=S=16, float32, forward +
backward of the op, 2-core AMD EPYC, every run in ``benchmarks/RESULTS.md``): PyTorch's default
two threads, sequential loop 442-521 ms, this scan 18.5-20.8 ms (23.4-25.8x), numba kernel
14.2-16.3 ms; one thread, 23.0-26.5 ms against 404-532 ms (17.0-21.5x), numba 17.7-19.0 ms. Of
~24 ms on one thread, about 3 ms are the nine layout copies (B, T, F) <-> (NB, c, F, n, B),
about 2.4 ms the exponentials, and the rest ~35 elementwise passes over (B, T, S, ED) plus ~900
small per-step ops. Tried and not kept (earlier versions, see the git history): the (c, B, n, S,
ED) layout with ED innermost (31-35 ms: 16-element broadcast loops); a closed form per chunk
with cumulative sums (method "closed", :mod:`dsrecon.models.scan_cumsum`); storing h and dA for
the backward instead of recomputing them (streaming 2 x 16 MB costs what it saves);
torch.compile of a straightforward chunked forward (56 s to compile; once compiled 40 ms against
29 ms for this kernel's forward at the time, both under load; the per-step loop alone,
compiled, 182 us against 156 us eager per block).

References
----------
A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
arXiv:2312.00752 (2023).
T. Dao and A. Gu, "Transformers are SSMs: Generalized models and efficient algorithms through
structured state space duality", ICML 2024 (chunked scan: local scans, carries, fix-up).
W. D. Hillis and G. L. Steele, "Data parallel algorithms", CACM 29(12) (1986).
E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence length",
ICLR 2018 (the adjoint of a linear recurrence is a reverse linear recurrence).
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

BLOCK_ELEMENTS = 1 << 19  # CPU: about this many (c, S, ED, n, B) elements per block buffer
DEVICE_BLOCK_ELEMENTS = 1 << 25  # elsewhere (CUDA): the whole window unless a buffer would exceed this
CPU_CHUNK = 16  # chunk length c on the CPU
DEVICE_CHUNK = 32  # chunk length c elsewhere (GPU: one block, T/c chunks in parallel)
CARRY_LOOP_MAX = 64  # chunk carries: a Python loop up to this many chunks, log-depth beyond
LOG2E = 1.4426950408889634  # log2(e)


_POOL: dict[tuple, torch.Tensor] = {}  # CPU scratch kept between calls, by (dtype, device)


def _scratch(like: torch.Tensor, *shapes: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Work buffers of the given shapes carved from one flat scratch tensor; returns (views, flat).

    On the CPU the flat tensor comes from a one-entry pool and goes back with :func:`_release`:
    fresh multi-megabyte allocations are returned to the OS on free, and touching them again
    costs page faults comparable to the arithmetic done on them. Elsewhere (CUDA has its own
    caching allocator) it is a plain allocation.
    """
    sizes = [int(torch.Size(sh).numel()) for sh in shapes]
    flat = _POOL.pop((like.dtype, like.device), None) if like.device.type == "cpu" else None
    if flat is None or flat.numel() < sum(sizes):
        flat = like.new_empty(sum(sizes))
    views, off = [], 0
    for sh, n in zip(shapes, sizes):
        views.append(flat[off : off + n].view(sh))
        off += n
    return views, flat


def _release(flat: torch.Tensor) -> None:
    """Give a scratch tensor of :func:`_scratch` back to the pool (CPU only; the larger is kept)."""
    if flat.device.type == "cpu":
        key = (flat.dtype, flat.device)
        old = _POOL.get(key)
        if old is None or old.numel() < flat.numel():
            _POOL[key] = flat


def clear_workspace() -> None:
    """Free the CPU scratch memory kept between calls."""
    _POOL.clear()


def default_chunk(T: int, device: torch.device) -> int:
    """Chunk length c: CPU_CHUNK on the CPU, DEVICE_CHUNK elsewhere, at most T."""
    return max(1, min(T, CPU_CHUNK if device.type == "cpu" else DEVICE_CHUNK))


def default_block(Bsz: int, T: int, ED: int, S: int, chunk: int, device: torch.device) -> int:
    """Block length, a multiple of ``chunk``: about BLOCK_ELEMENTS (CPU) or DEVICE_BLOCK_ELEMENTS
    (elsewhere: normally the whole window) elements per (c, S, ED, n, B) work buffer."""
    Tp = -(-T // chunk) * chunk
    limit = BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    steps = limit // max(1, Bsz * S * ED)
    return max(chunk, min(Tp, steps // chunk * chunk))


def _carry(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor, out: torch.Tensor, reverse: bool = False,
           dim: int = -2) -> torch.Tensor:
    """Chunk carries: the scan s_{k+1} = a_k s_k + b_k over the n chunks of a block, s_0 = h.

    a, b: each chunk's total decay and its end state from a zero start, with the n chunks along
    ``dim`` ((S, ED, n, B) here); h: the state entering the first chunk (a, b without ``dim``).
    Writes the state entering each chunk into ``out`` (the shape of a) and returns the state
    leaving the last one. ``reverse``: chunks in the order n-1, ..., 0 (the adjoint).
    Up to CARRY_LOOP_MAX chunks a loop of n small ops, beyond that log2(n) Hillis-Steele passes.
    """
    n = a.shape[dim]
    if n <= CARRY_LOOP_MAX:
        As, Bs, Os = a.unbind(dim), b.unbind(dim), out.unbind(dim)
        order = list(range(n - 1, -1, -1)) if reverse else list(range(n))
        Os[order[0]].copy_(h)
        for k, nxt in zip(order, order[1:]):
            torch.addcmul(Bs[k], As[k], Os[k], out=Os[nxt])
        return torch.addcmul(Bs[order[-1]], As[order[-1]], Os[order[-1]])
    a, b = a.movedim(dim, 0), b.movedim(dim, 0)  # (n, ...)
    if reverse:
        a, b = a.flip(0), b.flip(0)
    b = torch.cat([torch.addcmul(b[:1], a[:1], h[None]), b[1:]], 0)  # fold s_0 in
    s = 1
    while s < n:  # Hillis-Steele: after the pass with offset s, b_k combines chunks k-2s+1 .. k
        b = torch.cat([b[:s], torch.addcmul(b[s:], a[s:], b[:-s])], 0)
        a = torch.cat([a[:s], a[s:] * a[:-s]], 0)
        s *= 2
    st = torch.cat([h[None], b[:-1]], 0)
    out.copy_((st.flip(0) if reverse else st).movedim(0, dim))
    return b[-1]


def _pad(x: torch.Tensor, Tp: int) -> torch.Tensor:
    """x (B, T, F) with zeros appended to Tp steps."""
    if x.shape[1] == Tp:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], Tp - x.shape[1], x.shape[2])], 1)


def _to_blocks(x: torch.Tensor, n_blocks: int, n: int, c: int) -> torch.Tensor:
    """x (B, Tp, F) -> (NB, c, F, n, B), contiguous: [i, j, f, k, b] = x[b, (i n + k) c + j, f]."""
    return _block_view(x.contiguous(), n_blocks, n, c).contiguous()


def _from_blocks(xb: torch.Tensor, T: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks`, cut to T steps: (NB, c, F, n, B) -> (B, T, F)."""
    NB, c, F_, n, Bsz = xb.shape
    return xb.permute(4, 0, 3, 1, 2).reshape(Bsz, NB * n * c, F_)[:, :T]


def _block_view(x: torch.Tensor, n_blocks: int, n: int, c: int) -> torch.Tensor:
    """The (NB, c, F, n, B) view of a contiguous (B, Tp, F) tensor (no copy; strided). For inputs
    that enter only the small (c, F, n, B) products (u); big broadcast products and outputs
    written through such a view run 2x slower than a copy into the block layout."""
    return x.view(x.shape[0], n_blocks, n, c, x.shape[2]).permute(1, 3, 4, 2, 0)


def block_layout(T: int, block: int, chunk: int) -> tuple[int, int, int]:
    """(NB blocks, n chunks per block, padded length Tp) for T steps: n <= block / chunk, blocks
    balanced so that fewer than NB chunks of no-op padding are added."""
    K = -(-T // chunk)
    NB = -(-K // max(1, block // chunk))
    n = -(-K // NB)
    return NB, n, NB * n * chunk


class ChunkedSelectiveScan(torch.autograd.Function):
    """y (B, T, ED), h_T (B, ED, S) = S6 scan by chunks, with the analytic backward above.

    ``apply(u, delta, A, Bm, C, h0, block, chunk)``: tensors of one floating dtype on one device,
    u/delta (B, T, ED) with T >= 1, A (ED, S), Bm/C (B, T, S), h0 (B, ED, S); ``chunk`` >= 1 and
    ``block`` a multiple of it. Validation is the caller's
    (:func:`dsrecon.models.scan.selective_scan`). First order only (``once_differentiable``).
    The (c, S, ED, n, B) work buffers are allocated once per call and reused by every block.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, C, h0, block, chunk):  # noqa: D401 - autograd signature
        Bsz, T, ED = u.shape
        S, c = A.shape[1], chunk
        NB, n, Tp = block_layout(T, block, c)
        db, Bb, Cb = (_to_blocks(_pad(x, Tp), NB, n, c) for x in (delta, Bm, C))  # (NB, c, F, n, B)
        up = _pad(u, Tp).contiguous()
        ub = _block_view(up, NB, n, c)  # u only enters small (c, ED, n, B) products: no copy
        At = A.T.contiguous()  # (S, ED)
        A2 = (At * LOG2E)[:, :, None, None]  # (S, ED, 1, 1): dA = exp2(Delta A log2 e), 3x cheaper than exp
        yb = u.new_empty(NB, c, ED, n, Bsz)
        starts = u.new_empty(NB, S, ED, n, Bsz)  # state before each chunk
        h = h0.permute(2, 1, 0)  # (S, ED, B)
        (dA, H, du, alpha, acc, dsum), flat = _scratch(
            u, (c, S, ED, n, Bsz), (c, S, ED, n, Bsz), (c, ED, n, Bsz), (S, ED, n, Bsz), (S, ED, n, Bsz), (ED, n, Bsz))
        As, Hs = dA.unbind(0), H.unbind(0)
        for i in range(NB):
            d = db[i]  # (c, ED, n, B)
            torch.mul(d, ub[i], out=du)  # Delta u
            torch.mul(d[:, None], A2, out=dA).exp2_()  # dA: (c, S, ED, n, B)
            torch.mul(du[:, None], Bb[i][:, :, None], out=H)  # b = (Delta u) B
            acc.copy_(Hs[0])  # each chunk's end state from a zero start, in a small buffer
            for j in range(1, c):
                torch.addcmul(Hs[j], As[j], acc, out=acc)
            torch.sum(d, 0, out=dsum)  # chunk decay prod_j dA_j = exp2(log2(e) A sum_j Delta_j)
            torch.mul(dsum, A2, out=alpha).exp2_()
            h = _carry(alpha, acc, h, starts[i])  # starts[i] (S, ED, n, B)
            Hs[0].addcmul_(As[0], starts[i])  # the true states, from the chunk starts
            for j in range(1, c):
                Hs[j].addcmul_(As[j], Hs[j - 1])
            torch.sum(H.mul_(Cb[i][:, :, None]), 1, out=yb[i])  # y = sum_s C h: (c, ED, n, B)
        _release(flat)
        ctx.shape = (T, c)
        ctx.save_for_backward(up, db, At, Bb, Cb, starts)
        return _from_blocks(yb, T), h.permute(2, 1, 0).contiguous()  # (B, T, ED), (B, ED, S)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        up, db, At, Bb, Cb, starts = ctx.saved_tensors  # (B, Tp, ED), (NB, c, F, n, B), (S, ED), (NB, S, ED, n, B)
        T, c = ctx.shape
        NB, _, ED, n, Bsz = db.shape
        S, Tp = At.shape[0], NB * n * c
        ub = _block_view(up, NB, n, c)
        A2, Ar = (At * LOG2E)[:, :, None, None], At[:, :, None, None]
        gyb = db.new_zeros(db.shape) if gy is None else _to_blocks(_pad(gy, Tp), NB, n, c)
        lam_in = db.new_zeros(S, ED, Bsz) if gh_last is None else gh_last.permute(2, 1, 0).contiguous()
        g_ub, g_db, g_Bb, g_Cb = (torch.empty_like(x) for x in (db, db, Bb, Cb))
        g_At = torch.zeros_like(At)  # (S, ED)
        big, small, row = (c, S, ED, n, Bsz), (S, ED, n, Bsz), (c, ED, n, Bsz)
        (dA, H, lam, W, du, sm, lamB, Lam, alpha, beta, acc, dsum), flat = _scratch(
            db, big, (c + 1, S, ED, n, Bsz), big, big, row, row, row, small, small, small, small, (ED, n, Bsz))
        As, Hs, Ls = dA.unbind(0), H.unbind(0), lam.unbind(0)
        for i in reversed(range(NB)):
            d, uj, g, Bi, Ci = db[i], ub[i], gyb[i], Bb[i], Cb[i]  # (c, F, n, B)
            torch.mul(d, uj, out=du)  # Delta u
            torch.mul(d[:, None], A2, out=dA).exp2_()  # (c, S, ED, n, B)
            H[0] = starts[i]  # H[j + 1] = h_j, H[0] = chunk start
            torch.mul(du[:, None], Bi[:, :, None], out=H[1:])
            for j in range(c):
                Hs[j + 1].addcmul_(As[j], Hs[j])
            torch.sum(torch.mul(H[1:], g[:, None], out=W), 2, out=g_Cb[i])  # dL/dC = sum_e gy h
            # adjoint lam_j = gy_j C_j + dA_{j+1} lam_{j+1}: first each chunk's local adjoint at its
            # start (zero after the chunk end) in a small buffer, then the carries between chunks,
            # then the true adjoint in place over gy C, from the adjoint entering each chunk end
            torch.mul(g[:, None], Ci[:, :, None], out=lam)  # gy_j C_j: (c, S, ED, n, B)
            acc.copy_(Ls[c - 1])
            for j in range(c - 2, -1, -1):
                torch.addcmul(Ls[j], As[j + 1], acc, out=acc)
            torch.mul(As[0], acc, out=beta)  # local adjoint carried out of the chunk start
            torch.sum(d, 0, out=dsum)
            torch.mul(dsum, A2, out=alpha).exp2_()  # chunk decay
            lam_in = _carry(alpha, beta, lam_in, Lam, reverse=True)  # Lam: (S, ED, n, B)
            Ls[c - 1].add_(Lam)
            for j in range(c - 2, -1, -1):
                Ls[j].addcmul_(As[j + 1], Ls[j + 1])  # lam_t = dL/dh_t
            Gd = dA.mul_(lam).mul_(H[:-1])  # dL/d(Delta_t A) = lam_t dA_t h_{t-1}
            g_At += torch.mul(Gd, d[:, None], out=W).sum((0, 3, 4))
            torch.sum(Gd.mul_(Ar), 1, out=sm)  # sum_s G A: (c, ED, n, B)
            torch.sum(torch.mul(lam, Bi[:, :, None], out=W), 1, out=lamB)  # dL/d(Delta u) = sum_s B lam
            torch.addcmul(sm, lamB, uj, out=g_db[i])
            torch.mul(lamB, d, out=g_ub[i])
            torch.sum(torch.mul(lam, du[:, None], out=W), 2, out=g_Bb[i])  # dL/dB = sum_e lam Delta u
        _release(flat)
        return (_from_blocks(g_ub, T), _from_blocks(g_db, T), g_At.T, _from_blocks(g_Bb, T), _from_blocks(g_Cb, T),
                lam_in.permute(2, 1, 0), None, None)


def chunked_selective_scan(u, delta, A, Bm, C, h0=None, chunk_size=None):
    """Method "parallel" of :func:`dsrecon.models.scan.selective_scan` (without D; inputs checked there).

    u, delta (B, T, ED); A (ED, S); Bm, C (B, T, S); h0 (B, ED, S) or None. Runs in the promoted
    dtype of the inputs (float32 for half/bfloat16, as mamba-ssm keeps its states in float32) and
    returns y (B, T, ED), h_T (B, ED, S) in the promoted dtype. ``chunk_size``: the chunk length
    c (default :func:`default_chunk`; at most T); the block length is :func:`default_block`.
    """
    dt = functools.reduce(torch.promote_types, [t.dtype for t in (u, delta, A, Bm, C) + (() if h0 is None else (h0,))])
    work = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt if dt.is_floating_point else torch.get_default_dtype()
    Bsz, T, ED = u.shape
    S = A.shape[1]
    c = default_chunk(T, u.device) if chunk_size is None else min(int(chunk_size), T)
    block = default_block(Bsz, T, ED, S, c, u.device)
    h0 = u.new_zeros(Bsz, ED, S, dtype=work) if h0 is None else h0.to(work)
    y, h_last = ChunkedSelectiveScan.apply(*(t.to(work) for t in (u, delta, A, Bm, C)), h0, block, c)
    return y.to(dt), h_last.to(dt)
