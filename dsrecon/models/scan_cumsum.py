"""Closed-form chunked selective scan, time innermost: the pure-PyTorch training path of Mamba's S6 scan.

Private kernel behind :func:`dsrecon.models.scan.selective_scan` (``method="parallel"``).
Equivalence with the sequential reference :func:`dsrecon.models.scan.selective_scan_ref`
(values and every gradient, float64 1e-10, odd lengths, strong decay, growth, NaN) is tested
in ``tests/models/test_scan_cumsum.py``.

Glossary (as in :mod:`dsrecon.models.scan`)
-------------------------------------------
B   batch                     T   time steps (padded with no-op steps to a multiple of c)
ED  inner width (channels)    S   SSM state size per channel
c   chunk length              K   chunks (T / c)     n   chunks in one block of n * c steps

Recurrence (Gu & Dao 2023, Algorithm 2; zero-order hold for A, dB = Delta B)::

    h_t = exp(Delta_t A) * h_{t-1} + b_t,   b_t = (Delta_t u_t) B_t     (B, ED, S)
    y_t = <C_t, h_t>_S                                                   (B, ED)   (D u outside)

Closed form per chunk (the exponential-sum form of Heinsen 2023 without logarithms). Inside a
chunk of c steps starting in state s, let cd_j = Delta_0 + ... + Delta_j (a cumulative sum of
the *small* (B, ED, T) tensor: A is constant in time, so the log-decay from the chunk start is
P_j = A cd_j without a cumulative sum over the state), centred by r = A m with m the mid-range
of {0, cd_0, ..., cd_{c-1}}: E_j = exp(A (cd_j - m)), e^r = exp(A m). Then::

    h_j   = E_j (s e^r + Q_j),          Q_j = sum_{i<=j} b_i / E_i           (forward)
    lam_j = (Z_j + E_{c-1} rho) / E_j,  Z_j = sum_{i>=j} E_i gy_i C_i        (adjoint, dL/dh_j)
    dL/d(Delta_j A) = lam_j dA_j h_{j-1} = (Z_j + E_{c-1} rho)(s e^r + Q_{j-1})

with rho the adjoint entering from the next chunk (Martin & Cundy 2018). The sums over i are
products with a c x c triangular matrix of ones (one small GEMM; half the cost of torch.cumsum
here), the chunk carries (s of chunk k + 1 = E_{c-1} (s e^r + Q_{c-1}); rho of chunk k - 1 =
e^r (Z_0 + E_{c-1} rho)) are short scans over the chunks on (B, ED, S) tensors. Work tensors
are laid out (B, ED, S, n, c), time innermost, built per block of n chunks straight from the
(B, ED, T) and (B, S, T) inputs (about 2**18 elements per buffer on the CPU: 128 steps at
B=8, ED=S=16; smaller blocks fit the cache better but pay more per-op overhead; the whole
window elsewhere). The sums over S are reductions over a middle dimension,
those against A and Delta (dL/dDelta, dL/dA) batched matrix-vector products.

Exactness guard. The exponents |A (cd_j - m)| and |A m| are at most half the chunk's log-decay
range R = |A| (max cd - min cd), so nothing overflows while R <= RANGE_BOUND (40 in float32,
600 in float64); the rounding error is then about eps R / 2 relative, against c eps for the
recurrence. Channels e with R above the bound in any chunk or sequence (strong decay such as
Delta A = -20 per step in float32, -800 in float64, strong growth), or with a non-finite
input (u, Delta; or any non-finite B, C, h0: all channels), are computed by the exact
recurrence of :mod:`dsrecon.models.scan_chunked` instead, and the two parts are joined (autograd
composes their backwards). So a NaN stays where the recurrence puts it, and every result
matches the reference.

Measurements (B=8, T=2048, ED=S=16, float32, forward + backward, one thread of the shared 2-core
Xeon, CPU time). Not faster than the recurrence-based chunked scan
(:mod:`dsrecon.models.scan_chunked`, method "parallel"): forward 33 ms against 20 ms, forward +
backward 120-128 ms against 92-95 ms, 1.3-1.5x slower in every run (``benchmarks/bench_ssm.py``
[1a] prints both; 2.4-2.6x since the block-layout rewrite of the chunked scan in session 3).
Why: per element the closed form still needs about 28 passes over (B, ED, S, T)-sized tensors (9
forward, 19 backward), as many as the recurrence, so removing the c-step loop saves only its
Python overhead, and the per-block strided carries cost it back. Op costs measured on this CPU
(ns per element, 2**18 elements, float32): elementwise product 0.3-0.5, exp 0.35-0.4,
torch.cumsum along the last (contiguous) dim 0.95 (3.7 along an outer dim), the same sum as a
GEMM with a 16 x 16 triangular matrix 0.47, torch.logcumsumexp (Heinsen's log-space form) 52 -
so the log-space form is out of the question and the GEMM replaces cumsum. Inside the block loop
the same ops run at about 1 ns per element (the block's 8-9 work buffers exceed the 2 MB L2).
Kept as method "closed": exact by its guard, and without an in-chunk step loop (c sequential
steps per block in "parallel"), which may matter on a GPU, where it is untimed.

References
----------
A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
arXiv:2312.00752 (2023).
F. A. Heinsen, "Efficient parallelization of a ubiquitous sequential computation",
arXiv:2311.06281 (2023) (closed form of a linear recurrence by cumulative sums; its
log-space version, torch.logcumsumexp, costs 50 ns per element here and is not used).
T. Dao and A. Gu, "Transformers are SSMs", ICML 2024 (chunked scans: local sums, carries, fix-up).
E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence length",
ICLR 2018 (the adjoint of a linear recurrence is a reverse linear recurrence).
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

from dsrecon.models import scan_chunked
from dsrecon.models.scan_chunked import _carry, _release, _scratch

BLOCK_ELEMENTS = 1 << 18  # CPU: about this many (B, ED, S, n, c) elements per block buffer
DEVICE_BLOCK_ELEMENTS = 1 << 25  # elsewhere: the whole window unless a buffer would exceed this
CHUNK = 16  # chunk length c
RANGE_BOUND = {torch.float32: 40.0, torch.float64: 600.0}  # largest in-chunk log-decay range


def default_block(Bsz: int, T: int, ED: int, S: int, chunk: int, device: torch.device) -> int:
    """Block length, a multiple of ``chunk``, about BLOCK_ELEMENTS (CPU) or DEVICE_BLOCK_ELEMENTS elements."""
    Tp = -(-T // chunk) * chunk
    limit = BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    steps = limit // max(1, Bsz * S * ED)
    return max(chunk, min(Tp, steps // chunk * chunk))


@functools.lru_cache(maxsize=16)
def _tri(c: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(M2 (c + 1, 2c), L (c, c)): [W | x] @ M2 = [x + cumsum(W), x + exclusive cumsum(W)];
    W @ L = reverse cumsum(W) along the last dim."""
    i = torch.arange(c, device=device)
    up = (i[:, None] <= i[None, :]).to(dtype)  # [i, j] = 1 for i <= j
    m2 = torch.cat([torch.cat([up, (i[:, None] < i[None, :]).to(dtype)], 1), torch.ones(1, 2 * c, dtype=dtype, device=device)], 0)
    return m2, up.T.contiguous()


def _mm(x: torch.Tensor, mat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = x @ mat over the last dim (one GEMM on the flattened rows when both are contiguous)."""
    if x.is_contiguous() and out.is_contiguous():
        torch.mm(x.view(-1, x.shape[-1]), mat, out=out.view(-1, mat.shape[1]))
    else:
        out.copy_(x @ mat)
    return out


def _prep(delta, u, c, K):
    """Chunked small tensors: Delta, Delta u (B, ED, K, c) and the centred cumulative Delta."""
    Bsz, T, ED = u.shape
    Tp = K * c
    dT = delta.new_zeros(Bsz, ED, Tp)
    dT[:, :, :T] = delta.transpose(1, 2)
    duT = delta.new_zeros(Bsz, ED, Tp)
    duT[:, :, :T] = (delta * u).transpose(1, 2)
    dT, duT = dT.view(Bsz, ED, K, c), duT.view(Bsz, ED, K, c)
    cd = dT.cumsum(-1)  # (B, ED, K, c)
    lo, hi = cd.amin(-1).clamp(max=0), cd.amax(-1).clamp(min=0)  # range including the start 0
    mid = (lo + hi) / 2  # (B, ED, K)
    return dT, duT, cd - mid[..., None], mid, hi - lo


def _chunk_factors(A, dcd, mid):
    """Per-chunk factors, chunk-major (K, B, ED, S): e^r = exp(A m), the chunk decay exp(A cd_{c-1})
    and E_{c-1} = exp(A (cd_{c-1} - m)); from dcd (B, ED, K, c) and mid (B, ED, K)."""
    At = A[:, :, None]  # (ED, S, 1)
    m = mid.permute(2, 0, 1)[..., None]  # (K, B, ED, 1)
    last = dcd[..., -1].permute(2, 0, 1)[..., None]
    return torch.exp(At.squeeze(-1) * m), torch.exp(At.squeeze(-1) * (last + m)), torch.exp(At.squeeze(-1) * last)


def _chunk_small(x, c, K):
    """x (B, T, F) -> (B, F, K, c) contiguous, zero-padded in time."""
    Bsz, T, Fd = x.shape
    out = x.new_zeros(Bsz, Fd, K * c)
    out[:, :, :T] = x.transpose(1, 2)
    return out.view(Bsz, Fd, K, c)


class CumsumSelectiveScan(torch.autograd.Function):
    """y (B, T, ED), h_T (B, ED, S) by the closed form above (no range check: the caller's).

    ``apply(u, delta, A, Bm, C, h0, block, chunk)``: one floating dtype, u/delta (B, T, ED),
    A (ED, S), Bm/C (B, T, S), h0 (B, ED, S); ``block`` a multiple of ``chunk``.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, C, h0, block, chunk):  # noqa: D401 - autograd signature
        Bsz, T, ED = u.shape
        S, c = A.shape[1], chunk
        K, nb = -(-T // c), block // c
        dT, duT, dcd, mid, _ = _prep(delta, u, c, K)
        BT, CT = _chunk_small(Bm, c, K), _chunk_small(C, c, K)  # (B, S, K, c)
        A5 = A[None, :, :, None, None]  # (1, ED, S, 1, 1)
        er, ec, el = _chunk_factors(A, dcd, mid)  # e^r, exp(P_{c-1}), E_{c-1}: (K, B, ED, S)
        starts = u.new_empty(K, Bsz, ED, S)  # s e^r of every chunk
        yT = u.new_empty(Bsz, ED, K, c)
        up = _tri(c, u.dtype, u.device)[0][:c, :c]  # cumsum along the last dim = @ up
        m = min(nb, K)
        shp = (Bsz, ED, S, m, c)
        (Eb, Wb, Qb, bb), flat = _scratch(u, shp, shp, shp, (m, Bsz, ED, S))
        h = h0
        for k0 in range(0, K, nb):
            k1 = min(K, k0 + nb)
            n = k1 - k0
            E, W, Q, beta = Eb[:, :, :, :n], Wb[:, :, :, :n], Qb[:, :, :, :n], bb[:n]
            torch.mul(A5, dcd[:, :, None, k0:k1], out=E).exp_()  # E_j
            torch.div(BT[:, None, :, k0:k1], E, out=W).mul_(duT[:, :, None, k0:k1])  # b_j / E_j
            Ql = _mm(W, up, Q)  # Q_j, from a zero start
            beta.copy_(Ql[..., -1].permute(3, 0, 1, 2)).mul_(el[k0:k1])  # E_{c-1} Q_{c-1}
            st = starts[k0:k1]  # (n, B, ED, S)
            h = _carry(ec[k0:k1], beta, h, st, dim=0)  # st = s
            st.mul_(er[k0:k1])  # s e^r
            Ql.add_(st.permute(1, 2, 3, 0).contiguous()[..., None]).mul_(E).mul_(CT[:, None, :, k0:k1])  # C_j h_j
            yT[:, :, k0:k1] = Ql.sum(2)  # y_j: (B, ED, n, c)
        _release(flat)
        ctx.shape = (T, block, c)
        ctx.save_for_backward(u, delta, A, Bm, C, starts)
        y = yT.view(Bsz, ED, K * c)[:, :, :T].transpose(1, 2).contiguous()
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, A, Bm, C, starts = ctx.saved_tensors
        T, block, c = ctx.shape
        Bsz, _, ED = u.shape
        S, K, nb = A.shape[1], starts.shape[0], block // c
        dT, duT, dcd, mid, _ = _prep(delta, u, c, K)
        BT, CT = _chunk_small(Bm, c, K), _chunk_small(C, c, K)  # (B, S, K, c)
        gyT = _chunk_small(gy if gy is not None else u.new_zeros(u.shape), c, K)  # (B, ED, K, c)
        A5 = A[None, :, :, None, None]
        er, ec, el = _chunk_factors(A, dcd, mid)  # (K, B, ED, S)
        m2, low = _tri(c, u.dtype, u.device)
        rho = torch.zeros_like(starts[0]) if gh_last is None else gh_last.contiguous()  # (B, ED, S)
        g_bu = u.new_empty(Bsz, ED, K, c)  # <lam, B>_S = dL/d(Delta u)
        g_la = u.new_empty(Bsz, ED, K, c)  # sum_s A dL/d(Delta A)
        g_BT, g_CT = u.new_empty(Bsz, S, K, c), u.new_empty(Bsz, S, K, c)
        g_A = torch.zeros(ED, S, 1, dtype=u.dtype, device=u.device)
        A_row = A[:, None, :]  # (ED, 1, S)
        m = min(nb, K)
        shp = (Bsz, ED, S, m, c)
        (Eb, Wb, Xb, Vb, Gb, Zb, bb, rb), flat = _scratch(
            u, shp, shp, (*shp[:4], c + 1), (*shp[:4], 2 * c), shp, shp, (m, Bsz, ED, S), (m, Bsz, ED, S))
        for k0 in reversed(range(0, K, nb)):
            k1 = min(K, k0 + nb)
            n = k1 - k0
            E, W, X, V, G, Z = (x[:, :, :, :n] for x in (Eb, Wb, Xb, Vb, Gb, Zb))
            beta, R = bb[:n], rb[:n]
            du5 = duT[:, :, None, k0:k1]
            torch.mul(A5, dcd[:, :, None, k0:k1], out=E).exp_()
            torch.div(BT[:, None, :, k0:k1], E, out=W)  # B_j / E_j
            torch.mul(W, du5, out=X[..., :c])  # b_j / E_j
            X[..., c] = starts[k0:k1].permute(1, 2, 3, 0).contiguous()  # s e^r
            _mm(X, m2, V)  # [s e^r + Q_j | s e^r + Q_{j-1}]
            torch.mul(E, gyT[:, :, None, k0:k1], out=G)  # E gy
            torch.sum(torch.mul(G, V[..., :c], out=Z), 1, out=g_CT[:, :, k0:k1])  # sum_e gy h
            G.mul_(CT[:, None, :, k0:k1])  # E gy C
            _mm(G, low, Z)  # Z_j, reverse sums within the chunk
            beta.copy_(Z[..., 0].permute(3, 0, 1, 2)).mul_(er[k0:k1])
            rho = _carry(ec[k0:k1], beta, rho, R, reverse=True, dim=0)
            Z.add_((el[k0:k1] * R).permute(1, 2, 3, 0).contiguous()[..., None])  # Z_j + E_{c-1} rho = lam_j E_j
            torch.mul(Z, V[..., c:], out=G)  # dL/d(Delta_j A)
            g_la[:, :, k0:k1] = torch.matmul(A_row, G.view(Bsz, ED, S, n * c)).view(Bsz, ED, n, c)
            g_A += torch.matmul(G.view(Bsz, ED, S, n * c), dT[:, :, k0:k1].reshape(Bsz, ED, n * c, 1)).sum(0)
            torch.sum(W.mul_(Z), 2, out=g_bu[:, :, k0:k1])  # <lam, B>_S
            Z.div_(E)  # lam_j
            torch.sum(Z.mul_(du5), 1, out=g_BT[:, :, k0:k1])  # sum_e lam Delta u
        _release(flat)
        g_bu = g_bu.view(Bsz, ED, -1)[:, :, :T].transpose(1, 2)  # (B, T, ED)
        g_u = g_bu * delta
        g_d = g_la.view(Bsz, ED, -1)[:, :, :T].transpose(1, 2) + g_bu * u
        g_B = g_BT.view(Bsz, S, -1)[:, :, :T].transpose(1, 2)
        g_C = g_CT.view(Bsz, S, -1)[:, :, :T].transpose(1, 2)
        return g_u, g_d, g_A[..., 0], g_B, g_C, rho, None, None


def fast_channels(u, delta, A, Bm, C, h0, chunk: int) -> torch.Tensor:
    """(ED,) bool: the channels the closed form computes exactly (the guard of the module docstring).

    A channel qualifies when its in-chunk log-decay range |A| (max cd - min cd) is at most
    RANGE_BOUND[dtype] in every chunk of every sequence and its u, Delta, A rows are finite;
    a non-finite B, C or h0 disqualifies every channel. NaN ranges fail the comparison.
    """
    with torch.no_grad():
        T = u.shape[1]
        K = -(-T // chunk)
        rng = _prep(delta, u, chunk, K)[4]  # (B, ED, K)
        bound = RANGE_BOUND.get(u.dtype, RANGE_BOUND[torch.float32])
        ok = rng.amax((0, 2)) * A.abs().amax(1) <= bound  # (ED,)
        ok &= torch.isfinite(u).all(1).all(0) & torch.isfinite(delta).all(1).all(0) & torch.isfinite(A).all(1)
        if not (torch.isfinite(Bm).all() and torch.isfinite(C).all() and torch.isfinite(h0).all()):
            ok &= False
    return ok


def closed_form_selective_scan(u, delta, A, Bm, C, h0=None, chunk_size=None):
    """Method "closed" of :func:`dsrecon.models.scan.selective_scan` (without D; inputs checked there).

    u, delta (B, T, ED); A (ED, S); Bm, C (B, T, S); h0 (B, ED, S) or None -> y (B, T, ED),
    h_T (B, ED, S), in the promoted dtype (half/bfloat16 computed in float32). ``chunk_size``:
    the chunk length c (default CHUNK, at most T). Channels that fail :func:`fast_channels` go
    through :func:`dsrecon.models.scan_chunked.chunked_selective_scan` (exact recurrence).
    """
    dt = functools.reduce(torch.promote_types, [t.dtype for t in (u, delta, A, Bm, C) + (() if h0 is None else (h0,))])
    work = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt if dt.is_floating_point else torch.get_default_dtype()
    Bsz, T, ED = u.shape
    S = A.shape[1]
    c = max(1, min(CHUNK if chunk_size is None else int(chunk_size), T))
    u, delta, A, Bm, C = (t.to(work) for t in (u, delta, A, Bm, C))
    h0 = u.new_zeros(Bsz, ED, S) if h0 is None else h0.to(work)
    ok = fast_channels(u, delta, A, Bm, C, h0, c)
    if not bool(ok.any()):
        return tuple(t.to(dt) for t in scan_chunked.chunked_selective_scan(u, delta, A, Bm, C, h0))
    block = default_block(Bsz, T, ED, S, c, u.device)
    if bool(ok.all()):
        y, h = CumsumSelectiveScan.apply(u, delta, A, Bm, C, h0, block, c)
        return y.to(dt), h.to(dt)
    fast, slow = ok.nonzero()[:, 0], (~ok).nonzero()[:, 0]
    y1, h1 = CumsumSelectiveScan.apply(u[..., fast], delta[..., fast], A[fast], Bm, C, h0[:, fast], block, c)
    y2, h2 = scan_chunked.chunked_selective_scan(u[..., slow], delta[..., slow], A[slow], Bm, C, h0[:, slow])
    inv = torch.argsort(torch.cat([fast, slow]))  # back to the channel order
    return torch.cat([y1, y2], 2)[..., inv].to(dt), torch.cat([h1, h2], 1)[:, inv].to(dt)
