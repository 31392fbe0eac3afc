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
Time is cut into chunks of c steps and all chunks of a block are scanned *at once*: the block's
work tensors are laid out chunk-position-major, (c, B, n, S, ED), so that step j of all n
chunks (and all sequences) is one contiguous (B, n, S, ED) slice and one elementwise op
advances every chunk by one step. Forward, per block:

1. dA = exp(Delta A) and b = (Delta u) B for the whole block (broadcast products);
2. local scans from a zero start, c - 1 steps, H_j = dA_j H_{j-1} + b_j, and in the same loop
   the decay from the chunk start G_j = dA_j G_{j-1};
3. chunk carries on (B, n, S, ED) tensors: the state entering chunk k,
   s_k = G_{c-1}^{(k-1)} s_{k-1} + H_{c-1}^{(k-1)} (a loop over the n chunks, or log2 n
   Hillis-Steele passes when n > CARRY_LOOP_MAX);
4. fix-up h_j = H_j + G_j s_k, and y = sum_S C h by one fused weighted row sum.

Depth per block: c + min(n, 2 log2 n) elementwise steps. Blocks run one after another: on the
CPU a block holds about 2**18 elements per work buffer (B=8, ED=S=16: 128 steps, c=16, n=8);
elsewhere (CUDA) the whole window is one block (up to 2**25 elements per buffer), so T/c chunks
run in parallel. Backward (the adjoint lam_t = dL/dh_t obeys the reverse recurrence
lam_t = gy_t C_t + dA_{t+1} lam_{t+1}, Martin & Cundy 2018) walks the blocks in reverse,
recomputes dA, b and the states from the saved chunk-start states s_k (a (B, T/c, S, ED)
tensor, 1/c of the state history; mamba-ssm's CUDA kernel also recomputes from chunk starts),
runs the same three stages on the adjoint (local reverse scans together with the decays to the
chunk end, reverse carries, fix-up) and then::

    dL/dC_t = sum_e gy_t h_t            dL/dB_t = sum_e lam_t Delta_t u_t
    G_t     = lam_t dA_t h_{t-1}        (= dL/d(Delta_t A))
    dL/dA  += sum_{b,t} G_t Delta_t     dL/dDelta_t = sum_s G_t A + u_t <lam_t, B_t>_S
    dL/du_t = Delta_t <lam_t, B_t>_S    dL/dh0 = dA_0 lam_0

Exactness: all arithmetic is the recurrence's own multiply-adds (products of dA, never ratios
of exponentials as in a closed form exp(S_t - S_r) = exp(S_t) / exp(S_r)), so there is no range
condition: dA underflowing to 0 (Delta A = -20 per step and beyond) or growth (A > 0) come out
as in the sequential loop, and a NaN stays in its own channel. Padding steps have Delta = u = 0,
hence dA = 1 and b = 0: they leave the state, the adjoint and dL/dA unchanged.

Measurements (``benchmarks/bench_ssm.py`` [1a]: B=8, T=2048, ED=S=16, float32, forward +
backward of the op, one thread of a shared 2-core Xeon with load 3-5 from other jobs). One run:
sequential loop 1482 ms, method "blelloch" 161 ms (9.2x), this scan 115 ms (12.8x), the numba
kernel 46 ms (32x). Relative to numba in the same run (the stable figure under varying load)
this scan takes 2.5-2.7x, "blelloch" 3.5-3.9x; the issue's 20x would need about 1.6x, which
this eager-mode design does not reach on this CPU (see the last sentence). What went into it: work
buffers carved from one scratch tensor kept between calls (a fresh multi-megabyte allocation is
returned to the OS on free and its page faults cost 0.5 ms per MB here, as much as the
arithmetic); per-step views made once per call (~3 us each; 2400 of them cost 8 ms); sums over
S by ``embedding_bag`` with per-row weights (one read, no (c, B, n, S, ED) temporary); chunks
of 16 steps in blocks of 128 (blocks of 32-64 steps stay in cache but pay more Python overhead,
the whole window as one block is memory bound). Tried and not kept: a closed form per chunk,
h_t = exp(S_t - m) cumsum_r(exp(m - S_r) b_r) with S = cumsum(Delta A) and the cumulative sum
as a triangular matmul (one pass more than the recurrence per direction, and a range check with
a fall-back for strong decay: not faster; the time-innermost version of it, with the in-chunk
sums as triangular GEMMs and no state-sized cumulative sum of Delta A, is method "closed",
:mod:`dsrecon.models.scan_cumsum`, 1.3-1.5x slower than this scan here); torch.cumsum along time (3 ns per element, 8x a
multiply); storing h and dA for the backward instead of recomputing them (the saving is eaten by
streaming 2 x 16 MB through memory); torch.compile (55 s to compile one block, 2x on it). The
remaining cost is ~27 elementwise passes over (B, T, S, ED), at the memory speed of a shared
cache, and ~12 ms of per-op Python overhead, against two fused loops in the compiled kernel.

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
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

BLOCK_ELEMENTS = 1 << 18  # CPU: about this many (c, B, n, S, ED) elements per block buffer
DEVICE_BLOCK_ELEMENTS = 1 << 25  # elsewhere (CUDA): the whole window unless a buffer would exceed this
CPU_CHUNK = 16  # chunk length c on the CPU
DEVICE_CHUNK = 32  # chunk length c elsewhere (GPU: one block, T/c chunks in parallel)
CARRY_LOOP_MAX = 64  # chunk carries: a Python loop up to this many chunks, log-depth beyond


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
    (elsewhere: normally the whole window) elements per (c, B, n, S, ED) work buffer."""
    Tp = -(-T // chunk) * chunk
    limit = BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    steps = limit // max(1, Bsz * S * ED)
    return max(chunk, min(Tp, steps // chunk * chunk))


def _carry(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor, out: torch.Tensor, reverse: bool = False,
           lists: tuple | None = None) -> torch.Tensor:
    """Chunk carries: the scan s_{k+1} = a_k s_k + b_k over the n chunks of a block, s_0 = h.

    a, b (B, n, S, ED): each chunk's total decay and its end state from a zero start; h
    (B, S, ED). Writes the state entering each chunk into ``out`` (B, n, S, ED) and returns the
    state leaving the last one. ``reverse``: chunks in the order n-1, ..., 0 (the adjoint).
    Up to CARRY_LOOP_MAX chunks a loop of n small ops (``lists``: a, b, out already unbound
    along dim 1, to save the views), beyond that log2(n) Hillis-Steele passes.
    """
    n = a.shape[1]
    if n <= CARRY_LOOP_MAX:
        As, Bs, Os = lists if lists is not None else (a.unbind(1), b.unbind(1), out.unbind(1))
        order = list(range(n - 1, -1, -1)) if reverse else list(range(n))
        Os[order[0]].copy_(h)
        for k, nxt in zip(order, order[1:]):
            torch.addcmul(Bs[k], As[k], Os[k], out=Os[nxt])
        return torch.addcmul(Bs[order[-1]], As[order[-1]], Os[order[-1]])
    if reverse:
        a, b = a.flip(1), b.flip(1)
    b = torch.cat([torch.addcmul(b[:, :1], a[:, :1], h[:, None]), b[:, 1:]], 1)  # fold s_0 in
    s = 1
    while s < n:  # Hillis-Steele: after the pass with offset s, b_k combines chunks k-2s+1 .. k
        b = torch.cat([b[:, :s], torch.addcmul(b[:, s:], a[:, s:], b[:, :-s])], 1)
        a = torch.cat([a[:, :s], a[:, s:] * a[:, :-s]], 1)
        s *= 2
    st = torch.cat([h[:, None], b[:, :-1]], 1)
    out.copy_(st.flip(1) if reverse else st)
    return b[:, -1]


def _chunked(x: torch.Tensor, c: int) -> torch.Tensor:
    """x (B, Tp, F) as a chunk-position-major view (c, B, Tp/c, F): [j, b, k] = x[b, k c + j]."""
    return x.unflatten(1, (-1, c)).permute(2, 0, 1, 3)


def _sum_s(w: torch.Tensor, X: torch.Tensor, bags: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """sum_s w[..., s] X[..., s, :]: w (c, B, n, S), X (c, B, n, S, ED) -> (c, B, n, ED).

    One fused weighted row sum (``embedding_bag`` over the rows of X viewed as (c B n S, ED),
    bags of S consecutive rows): reads X once and writes only the result, where a broadcast
    product and a sum write and re-read a (c, B, n, S, ED) temporary (in isolation 2.5x faster
    on the CPU). Each bag touches only its own rows: a non-finite value stays in its (t, e).
    """
    idx, offs = bags  # arange(c B m S), arange(0, c B m S, S) for the largest block
    ED = X.shape[-1]
    rows = w.shape[0] * w.shape[1] * w.shape[2]
    out = F.embedding_bag(idx[: rows * w.shape[3]], X.reshape(-1, ED), offs[:rows], mode="sum",
                          per_sample_weights=w.reshape(-1))
    return out.view(*w.shape[:3], ED)


def _bags(rows: int, S: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and offset vectors of :func:`_sum_s` for up to ``rows`` bags of S rows."""
    idx = torch.arange(rows * S, device=like.device)
    return idx, idx[::S].contiguous()


def _pad(x: torch.Tensor, Tp: int) -> torch.Tensor:
    """x (B, T, F) with zeros appended to Tp steps."""
    if x.shape[1] == Tp:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], Tp - x.shape[1], x.shape[2])], 1)


class ChunkedSelectiveScan(torch.autograd.Function):
    """y (B, T, ED), h_T (B, ED, S) = S6 scan by chunks, with the analytic backward above.

    ``apply(u, delta, A, Bm, C, h0, block, chunk)``: tensors of one floating dtype on one device,
    u/delta (B, T, ED) with T >= 1, A (ED, S), Bm/C (B, T, S), h0 (B, ED, S); ``chunk`` >= 1 and
    ``block`` a multiple of it. Validation is the caller's
    (:func:`dsrecon.models.scan.selective_scan`). First order only (``once_differentiable``).
    The (c, B, n, S, ED) work buffers are allocated once per call and reused by every block.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, C, h0, block, chunk):  # noqa: D401 - autograd signature
        Bsz, T, ED = u.shape
        S, c = A.shape[1], chunk
        Tp = -(-T // c) * c
        K, nb = Tp // c, block // c  # chunks in all, chunks per block
        u, delta, Bm, C = (_pad(x, Tp) for x in (u, delta, Bm, C))  # (B, Tp, .)
        At = A.T.contiguous()  # (S, ED)
        y = u.new_empty(Bsz, Tp, ED)
        vd, vu, vB, vC, vy = (_chunked(x, c) for x in (delta, u, Bm, C, y))  # (c, B, K, .)
        vd5, vB5 = vd[..., None, :], vB[..., None]  # broadcastable views
        h = h0.transpose(1, 2)  # (B, S, ED)
        starts = u.new_empty(Bsz, K, S, ED)  # state before each chunk
        m = min(nb, K)
        (gbuf, hbuf, sbuf, cbuf), flat = _scratch(u, (c, Bsz, m, S, ED), (c, Bsz, m, S, ED), (c, Bsz, m, ED), (Bsz, m, S, ED))
        bags = _bags(c * Bsz * m, S, u)

        def views(n):  # the buffers cut to n chunks, and their per-step / per-chunk views
            G, H, st = gbuf[:, :, :n], hbuf[:, :, :n], cbuf[:, :n]
            return G, H, sbuf[:, :, :n], st, G.unbind(0), H.unbind(0), (G[-1].unbind(1), H[-1].unbind(1), st.unbind(1))

        full = views(m)  # views are made once: every block but the last reuses the same memory
        for k0 in range(0, K, nb):
            k1 = min(K, k0 + nb)
            n = k1 - k0
            G, H, du, st, Gs, Hs, lists = full if n == m else views(n)
            torch.mul(vd[:, :, k0:k1], vu[:, :, k0:k1], out=du)  # Delta u: (c, B, n, ED)
            torch.mul(vd5[:, :, k0:k1], At, out=G).exp_()  # dA, then the decay from the chunk start
            torch.mul(du[..., None, :], vB5[:, :, k0:k1], out=H)  # b, then the states from a zero start
            for j in range(1, c):
                Hs[j].addcmul_(Gs[j], Hs[j - 1])
                Gs[j].mul_(Gs[j - 1])
            h = _carry(G[-1], H[-1], h, st, lists=lists)  # st (B, n, S, ED): chunk starts
            starts[:, k0:k1] = st
            H.addcmul_(G, st)  # h_t = local state + decay * chunk start
            vy[:, :, k0:k1] = _sum_s(vC[:, :, k0:k1], H, bags)  # (c, B, n, ED)
        _release(flat)
        ctx.shape = (T, block, c)
        ctx.save_for_backward(u, delta, At, Bm, C, starts)
        return y[:, :T], h.transpose(1, 2).contiguous()  # (B, T, ED), (B, ED, S)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, At, Bm, C, starts = ctx.saved_tensors  # (B, Tp, .), (S, ED), starts (B, K, S, ED)
        T, block, c = ctx.shape
        Bsz, Tp, ED = u.shape
        S, K, nb = At.shape[0], Tp // c, block // c
        gy = u.new_zeros(Bsz, Tp, ED) if gy is None else _pad(gy, Tp)  # (B, Tp, ED)
        lam_in = u.new_zeros(Bsz, S, ED) if gh_last is None else gh_last.transpose(1, 2).contiguous()
        g_u, g_d = torch.empty_like(u), torch.empty_like(delta)  # (B, Tp, ED)
        g_B, g_C = torch.empty_like(Bm), torch.empty_like(C)  # (B, Tp, S)
        g_At = torch.zeros_like(At)  # (S, ED)
        ones = u.new_ones(ED)
        vd, vu, vB, vC, vg, vgu, vgd, vgB, vgC = (_chunked(x, c) for x in (delta, u, Bm, C, gy, g_u, g_d, g_B, g_C))
        vd5, vB5, vC5, vg5 = vd[..., None, :], vB[..., None], vC[..., None], vg[..., None, :]
        m = min(nb, K)
        buf5, buf4 = (c, Bsz, m, S, ED), (Bsz, m, S, ED)
        (abuf, hbuf, lpbuf, wbuf, sbuf, tbuf, cbuf, albuf, bebuf), flat = _scratch(
            u, buf5, (c + 1, Bsz, m, S, ED), (2, *buf5), buf5, (c, Bsz, m, ED), (c, Bsz, m, ED), buf4, buf4, buf4
        )
        bags = _bags(c * Bsz * m, S, u)

        def views(n):  # the buffers cut to n chunks, and their per-step / per-chunk views
            dA, H, LP, Lam = abuf[:, :, :n], hbuf[:, :, :n], lpbuf[:, :, :, :n], cbuf[:, :n]
            alpha, beta = albuf[:, :n], bebuf[:, :n]
            return (dA, H, LP, wbuf[:, :, :n], sbuf[:, :, :n], tbuf[:, :, :n], Lam, alpha, beta,
                    dA.unbind(0), H.unbind(0), LP.unbind(1), (alpha.unbind(1), beta.unbind(1), Lam.unbind(1)))

        full = views(m)
        for k0 in reversed(range(0, K, nb)):
            k1 = min(K, k0 + nb)
            n = k1 - k0
            dA, H, LP, W, du, sm, Lam, alpha, beta, As, Hs, Xs, lists = full if n == m else views(n)
            d, uj = vd[:, :, k0:k1], vu[:, :, k0:k1]  # (c, B, n, ED)
            torch.mul(d, uj, out=du)  # Delta u
            torch.mul(vd5[:, :, k0:k1], At, out=dA).exp_()  # (c, B, n, S, ED)
            H[0] = starts[:, k0:k1]  # H[j + 1] = h_j, H[0] = chunk start
            torch.mul(du[..., None, :], vB5[:, :, k0:k1], out=H[1:])
            for j in range(c):
                Hs[j + 1].addcmul_(As[j], Hs[j])
            torch.mul(H[1:], vg5[:, :, k0:k1], out=W)
            vgC[:, :, k0:k1] = (W.reshape(-1, ED) @ ones).view(c, Bsz, n, S)  # sum over ED
            # lam[j] = LP[0, j]: local adjoint (gy C, zero after the chunk end); Gp[j] = LP[1, j]:
            # decay from step j+1 to the chunk end; one reverse recurrence for both:
            # X_j = dA_{j+1} X_{j+1} + (gy_j C_j, 0), X_{c-1} = (gy C, 1)
            torch.mul(vg5[:, :, k0:k1], vC5[:, :, k0:k1], out=LP[0])
            LP[1, :-1].zero_()
            LP[1, -1].fill_(1)
            for j in range(c - 2, -1, -1):
                Xs[j].addcmul_(As[j + 1], Xs[j + 1])
            lam, Gp = LP[0], LP[1]  # (c, B, n, S, ED)
            torch.mul(As[0], Gp[0], out=alpha)  # (B, n, S, ED): chunk decay
            torch.mul(As[0], lam[0], out=beta)  # local adjoint carried out of the chunk start
            lam_in = _carry(alpha, beta, lam_in, Lam, reverse=True, lists=lists)  # Lam: dL/dh at chunk ends
            lam.addcmul_(Gp, Lam)  # lam_t = dL/dh_t
            Gd = dA.mul_(lam).mul_(H[:-1])  # dL/d(Delta_t A) = lam_t dA_t h_{t-1}
            g_At += torch.mul(Gd, vd5[:, :, k0:k1], out=W).sum((0, 1, 2))
            torch.sum(Gd.mul_(At), -2, out=sm)  # sum_s G A: (c, B, n, ED)
            lamB = _sum_s(vB[:, :, k0:k1], lam, bags)  # (c, B, n, ED) = dL/d(Delta u)
            vgd[:, :, k0:k1] = sm.addcmul_(lamB, uj)
            vgu[:, :, k0:k1] = lamB.mul_(d)
            torch.mul(lam, du[..., None, :], out=W)
            vgB[:, :, k0:k1] = (W.reshape(-1, ED) @ ones).view(c, Bsz, n, S)  # sum over ED
        _release(flat)
        return g_u[:, :T], g_d[:, :T], g_At.T, g_B[:, :T], g_C[:, :T], lam_in.transpose(1, 2), None, None


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
