"""Scans over time: the linear recurrence h_t = a_t * h_{t-1} + b_t, in parallel and in sequence.

Glossary (teaching size)
------------------------
B   batch (independent sequences)
T   time steps (sequence length)
ED  inner width of a Mamba block (expand E times the model width D); the scan's channels
S   SSM state size per channel (called N in the Mamba paper; S here so that N stays the
    observed dimension of the toolkit)
... any trailing channel dimensions of a generic scan

Two problems are solved here, each with a fast path and a slow reference (tests check that
they agree in value *and* gradient, in float64, for lengths that are not powers of two):

1. The generic first-order linear recurrence (an *associative* scan with the operator
   (a1, b1) o (a2, b2) = (a2 a1, a2 b1 + b2), Blelloch 1990)::

       h_t = a_t * h_{t-1} + b_t,    h_{-1} = h0 (default 0),    a, b: (B, T, ...)

   * :func:`sequential_scan` - the reference: a Python loop over t, differentiated by autograd.
   * :func:`parallel_scan` - work-efficient Blelloch scan, in place, log-depth: an up-sweep
     (2 log2 T levels of strided elementwise ops, each level halving the active elements) and a
     down-sweep. Its backward pass is *not* autograd through the sweeps but the adjoint
     recurrence, itself a reverse linear scan (lambda_t = g_t + a_{t+1} lambda_{t+1};
     dL/db_t = lambda_t; dL/da_t = lambda_t h_{t-1}), run by the same log-depth kernel.
     Memory: a (B, T, ...) copy of a and the output h are saved; nothing per level.

2. The *selective scan* of Mamba (Gu & Dao 2023, Algorithm 2, "S6"), with zero-order-hold
   discretisation of a diagonal A and the paper's simplified input matrix dB = Delta B::

       h_t = exp(Delta_t A) * h_{t-1} + (Delta_t u_t) B_t      h_t: (B, ED, S)
       y_t = <C_t, h_t>_S + D u_t                              y_t: (B, ED)

   * :func:`selective_scan_ref` - the reference: explicit loop over t (autograd).
   * :func:`selective_scan` with ``method=``:

     - "parallel": the pure-PyTorch chunked scan (:mod:`dsrecon.models.scan_chunked`): all
       chunks of c steps advanced together (chunk and batch innermost), carries between chunks;
       analytic backward from chunk-start checkpoints. Device-agnostic; CUDA without mamba-ssm.
     - "closed": closed-form chunks, time innermost, guarded (:mod:`dsrecon.models.scan_cumsum`);
       2.4-2.6x slower than "parallel" on the CPU, untimed on a GPU.
     - "blelloch": the previous pure-PyTorch path, kept for comparison: blocks of
       ``chunk_size`` steps, each scanned by the log-depth kernel above (:class:`_SelectiveScan`).
     - "numba": the recurrence compiled for the CPU (:mod:`dsrecon.models.scan_cpu`).
     - "cuda": ``mamba_ssm``'s fused kernel (tensors on CUDA, no initial state); a thin layout
       adapter (B, T, ED) <-> (B, ED, T) that cannot be exercised on a CPU-only machine.
     - "sequential": :func:`selective_scan_ref`.

   ``method="auto"``: CUDA with mamba-ssm and no h0 -> "cuda"; CPU float32/float64 of one dtype
   with numba -> "numba"; anything else (CUDA without mamba-ssm, MPS, CPU half/bfloat16, mixed
   dtypes) -> "parallel". "parallel" computes half/bfloat16 in float32 (as mamba-ssm keeps its
   states in float32) and mixed dtypes in their promoted dtype.

Speed (``benchmarks/bench_ssm.py``, B=8, T=2048, ED=S=16, float32, forward + backward, one
thread): see the module docstring of :mod:`dsrecon.models.scan_chunked` for the figures and
for the alternatives measured.

References
----------
G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190 (1990).
A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
arXiv:2312.00752 (2023).
E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence length",
ICLR 2018 (the adjoint of a linear recurrence is a reverse linear recurrence).
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

from dsrecon.errors import ConfigError
from dsrecon.models import scan_chunked, scan_cumsum

try:  # the fused CUDA kernel of Gu & Dao; optional, never required
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except Exception:  # noqa: BLE001 - any import failure (missing package, CUDA/ABI mismatch) = absent
    _cuda_selective_scan = None

SCAN_METHODS = ("auto", "parallel", "closed", "blelloch", "sequential", "numba", "cuda")


# ----------------------------------------------------------------------------- log-depth kernel
def _blelloch_(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In-place inclusive scan of h_t = a_t h_{t-1} + b_t along dim 1; returns b (now h).

    ``a`` is destroyed (it ends up holding partial products). With ``reverse=True`` the
    recurrence runs backwards in time: h_t = a_t h_{t+1} + b_t. Depth 2 log2(T); work O(T).
    After the up-sweep, index p holds the combination of the block of length lowbit(p+1) ending
    at p; the down-sweep completes the blocks from the largest to the smallest.
    """
    T = a.shape[1]

    def pair(start: int, stride: int, offset: int) -> tuple[slice, slice] | None:
        # targets p = start, start+stride, ... < T with sources p - offset (reverse: mirrored)
        n = 0 if start >= T else (T - 1 - start) // stride + 1
        if n == 0:
            return None
        lo = T - 1 - (start + (n - 1) * stride) if reverse else start
        src = lo + offset if reverse else lo - offset
        return slice(lo, lo + (n - 1) * stride + 1, stride), slice(src, src + (n - 1) * stride + 1, stride)

    s = 1
    while s < T:  # up-sweep: combine blocks of length s into blocks of length 2s
        sl = pair(2 * s - 1, 2 * s, s)
        if sl is not None:
            dst, src = sl
            b[:, dst].addcmul_(a[:, dst], b[:, src])  # (B, n, ...)
            a[:, dst].mul_(a[:, src])
        s *= 2
    while s >= 1:  # down-sweep: finish the block ending at 3s-1, 5s-1, ... from its left prefix
        sl = pair(3 * s - 1, 2 * s, s)
        if sl is not None:
            dst, src = sl
            b[:, dst].addcmul_(a[:, dst], b[:, src])
        s //= 2
    return b


class _LinearScan(torch.autograd.Function):
    """h = scan(a, b) with the adjoint (reverse) scan as backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B, T, ...) each
        h = _blelloch_(a.clone(), b.clone())  # (B, T, ...)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        a, h = ctx.saved_tensors
        a_next = torch.empty_like(a)  # a_{t+1}, the coefficient of the adjoint recurrence
        a_next[:, :-1] = a[:, 1:]
        a_next[:, -1] = 0
        lam = _blelloch_(a_next, g.contiguous().clone(), reverse=True)  # (B, T, ...) = dL/db
        grad_a = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.zeros_like(a)
            grad_a[:, 1:] = lam[:, 1:] * h[:, :-1]
        return grad_a, lam


def _check_ab(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> None:
    if a.shape != b.shape or a.dim() < 2:
        raise ConfigError(f"scan needs a and b of the same shape (B, T, ...), got {tuple(a.shape)} and {tuple(b.shape)}")
    if h0 is not None and (h0.shape[0] != a.shape[0] or h0.shape[1:] != a.shape[2:]):
        raise ConfigError(f"h0 must have shape {(a.shape[0], *a.shape[2:])} (B, ...), got {tuple(h0.shape)}")


def sequential_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: h_t = a_t h_{t-1} + b_t by a Python loop. a, b (B, T, ...) -> h (B, T, ...)."""
    _check_ab(a, b, h0)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0  # (B, ...)
    hs = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):  # unbind: one backward node, not T copies
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, dim=1)


def parallel_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Log-depth Blelloch scan of h_t = a_t h_{t-1} + b_t. a, b (B, T, ...) -> h (B, T, ...).

    Differentiable in a, b and h0 (the initial state is folded into b_0 = b_0 + a_0 h0).
    """
    _check_ab(a, b, h0)
    if h0 is not None:
        b = torch.cat([(b[:, 0] + a[:, 0] * h0)[:, None], b[:, 1:]], dim=1)
    return _LinearScan.apply(a.contiguous(), b.contiguous())


# ------------------------------------------------------------------------ selective scan (S6)
def selective_scan_ref(u, delta, A, Bm, C, D=None, h0=None):
    """Reference selective scan (loop over t). Returns (y (B, T, ED), h_T (B, ED, S)).

    u, delta (B, T, ED); A (ED, S); Bm, C (B, T, S); D (ED,) or None; h0 (B, ED, S) or None.
    """
    Bsz, T, ED = u.shape
    h = u.new_zeros(Bsz, ED, A.shape[1]) if h0 is None else h0  # (B, ED, S)
    ys = []
    for u_t, d_t, b_t, c_t in zip(u.unbind(1), delta.unbind(1), Bm.unbind(1), C.unbind(1)):
        dA = torch.exp(d_t[:, :, None] * A)  # (B, ED, S)
        h = dA * h + (d_t * u_t)[:, :, None] * b_t[:, None, :]  # (B, ED, S)
        ys.append(torch.einsum("bes,bs->be", h, c_t))  # (B, ED)
    y = torch.stack(ys, dim=1)  # (B, T, ED)
    if D is not None:
        y = y + D * u
    return y, h


class _SelectiveScan(torch.autograd.Function):
    """Method "blelloch": blocked log-depth selective scan with analytic backward.

    Time is cut into blocks of ``chunk`` steps, each scanned by :func:`_blelloch_` and its end
    state carried to the next; the backward recomputes each block from its saved start state
    and runs the reverse (adjoint) scan block by block.

    Internally the state is laid out (B, l, S, ED): ED, the widest dimension, is innermost, so
    every broadcast product and reduction runs over contiguous vectors of length ED.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, C, h0, chunk):  # noqa: D401 - autograd signature
        Bsz, T, ED = u.shape
        At = A.T.contiguous()  # (S, ED)
        du = delta * u  # (B, T, ED)
        h = h0.transpose(1, 2).contiguous()  # (B, S, ED)
        y = u.new_empty(Bsz, T, ED)
        starts = []
        for c0 in range(0, T, chunk):
            c1 = min(T, c0 + chunk)
            starts.append(h)
            dA = (delta[:, c0:c1, None, :] * At).exp_()  # (B, l, S, ED)
            hb = du[:, c0:c1, None, :] * Bm[:, c0:c1, :, None]  # (B, l, S, ED)
            hb[:, 0].addcmul_(dA[:, 0], h)
            _blelloch_(dA, hb)  # hb = h_t for t in [c0, c1)
            y[:, c0:c1] = (hb * C[:, c0:c1, :, None]).sum(2)  # (B, l, ED)
            h = hb[:, -1].clone()  # (B, S, ED)
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, At, Bm, C, torch.stack(starts, 0))
        return y, h.transpose(1, 2)  # (B, T, ED), (B, ED, S)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, At, Bm, C, starts = ctx.saved_tensors  # starts (n_chunks, B, S, ED)
        chunk = ctx.chunk
        T = u.shape[1]
        du = delta * u  # (B, T, ED)
        g_u, g_delta = torch.zeros_like(u), torch.zeros_like(delta)  # (B, T, ED)
        g_B, g_C = torch.zeros_like(Bm), torch.zeros_like(C)  # (B, T, S)
        g_At = torch.zeros_like(At)  # (S, ED)
        carry = torch.zeros_like(starts[0]) if gh_last is None else gh_last.transpose(1, 2).contiguous()  # (B, S, ED)
        chunk_starts = list(range(0, T, chunk))
        for k in range(len(chunk_starts) - 1, -1, -1):
            c0 = chunk_starts[k]
            c1 = min(T, c0 + chunk)
            h_start = starts[k]  # (B, S, ED)
            dA = (delta[:, c0:c1, None, :] * At).exp_()  # (B, l, S, ED)
            hs = du[:, c0:c1, None, :] * Bm[:, c0:c1, :, None]  # (B, l, S, ED)
            hs[:, 0].addcmul_(dA[:, 0], h_start)
            _blelloch_(dA.clone(), hs)  # hs = h_t
            gy_c = gy[:, c0:c1, None, :]  # (B, l, 1, ED)
            g_C[:, c0:c1] = (gy_c * hs).sum(-1)  # (B, l, S)
            lam = gy_c * C[:, c0:c1, :, None]  # (B, l, S, ED) direct dL/dh_t
            lam[:, -1] += carry
            a_next = torch.empty_like(dA)  # (B, l, S, ED)
            a_next[:, :-1] = dA[:, 1:]
            a_next[:, -1] = 0
            _blelloch_(a_next, lam, reverse=True)  # lam = total dL/dh_t
            carry = dA[:, 0] * lam[:, 0]  # dL/dh_{c0-1}: (B, S, ED)
            gdA = torch.empty_like(lam)  # dL/d(dA_t) = lam_t * h_{t-1}: (B, l, S, ED)
            torch.mul(lam[:, 1:], hs[:, :-1], out=gdA[:, 1:])
            torch.mul(lam[:, 0], h_start, out=gdA[:, 0])
            gdA.mul_(dA)  # dL/d(Delta_t A) elementwise, since d exp(x)/dx = exp(x)
            g_At += (gdA * delta[:, c0:c1, None, :]).sum((0, 1))  # (S, ED)
            lamB = (lam * Bm[:, c0:c1, :, None]).sum(2)  # (B, l, ED) = dL/d(Delta u)
            g_delta[:, c0:c1] = (gdA * At).sum(2) + lamB * u[:, c0:c1]
            g_u[:, c0:c1] = lamB * delta[:, c0:c1]
            g_B[:, c0:c1] = (lam * du[:, c0:c1, None, :]).sum(-1)  # (B, l, S)
        return g_u, g_delta, g_At.T, g_B, g_C, carry.transpose(1, 2), None


def _check_selective(u, delta, A, Bm, C, D, h0) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ConfigError(f"u and delta must both be (B, T, ED), got {tuple(u.shape)} and {tuple(delta.shape)}")
    Bsz, T, ED = u.shape
    if T < 1:
        raise ConfigError(f"the selective scan needs at least one time step, got u of shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != ED:
        raise ConfigError(f"A must be (ED, S) = ({ED}, S), got {tuple(A.shape)}")
    S = A.shape[1]
    for name, m in (("B", Bm), ("C", C)):
        if tuple(m.shape) != (Bsz, T, S):
            raise ConfigError(f"{name} must be (B, T, S) = {(Bsz, T, S)}, got {tuple(m.shape)}")
    if D is not None and tuple(D.shape) != (ED,):
        raise ConfigError(f"D must be (ED,) = ({ED},), got {tuple(D.shape)}")
    if h0 is not None and tuple(h0.shape) != (Bsz, ED, S):
        raise ConfigError(f"h0 must be (B, ED, S) = {(Bsz, ED, S)}, got {tuple(h0.shape)}")


def cuda_kernel_available() -> bool:
    """Whether the mamba-ssm CUDA selective-scan kernel imported."""
    return _cuda_selective_scan is not None


@functools.cache
def _cpu_kernel():
    """:mod:`dsrecon.models.scan_cpu`, imported on first use (numba takes ~1 s), or None."""
    try:
        from dsrecon.models import scan_cpu
    except Exception:  # noqa: BLE001 - a broken numba install must not break the model
        return None
    return scan_cpu


def cpu_kernel_available() -> bool:
    """Whether the compiled (numba) CPU selective-scan kernel can be used."""
    return _cpu_kernel() is not None


def resolve_method(method: str, *tensors: torch.Tensor, h0: torch.Tensor | None = None) -> str:
    """The concrete path ("cuda", "numba", "parallel", "closed", "blelloch" or "sequential") ``method`` takes here.

    ``tensors``: the inputs u, delta, A, Bm, C (and D if given); see the module docstring.
    Raises ConfigError when an explicit method cannot run on these inputs.
    """
    if method not in SCAN_METHODS:
        raise ConfigError(f"unknown scan method {method!r}; use one of {', '.join(SCAN_METHODS)}")
    if method in ("parallel", "closed", "blelloch", "sequential"):
        return method
    use_cuda = _cuda_selective_scan is not None and tensors[0].is_cuda and h0 is None
    kern = _cpu_kernel() if method in ("numba", "auto") else None
    use_numba = kern is not None and kern.supported(*tensors, *(() if h0 is None else (h0,)))
    if method == "cuda" and not use_cuda:
        raise ConfigError(
            "scan method 'cuda' needs the mamba-ssm package, CUDA tensors and no initial state; "
            "use method='auto' to fall back to the pure-PyTorch parallel scan"
        )
    if method == "numba" and not use_numba:
        got = "numba failed to import" if kern is None else ", ".join(sorted({f"{t.dtype} {t.device}" for t in tensors}))
        raise ConfigError(f"scan method 'numba' needs CPU float32/float64 tensors of one dtype (got: {got}); "
                          "use method='auto' or 'parallel'")
    if method == "auto":
        return "cuda" if use_cuda else "numba" if use_numba else "parallel"
    return method


def selective_scan(u, delta, A, Bm, C, D=None, h0=None, *, method: str = "auto", chunk_size: int | None = None):
    """Selective scan y_t = <C_t, h_t> + D u_t, h_t = exp(Delta_t A) h_{t-1} + Delta_t u_t B_t.

    Parameters
    ----------
    u, delta : (B, T, ED)
        Input and (positive) step sizes; T >= 1.
    A : (ED, S)
        Diagonal continuous-time state matrix (negative entries for stability).
    Bm, C : (B, T, S)
        Input-dependent input / output vectors.
    D : (ED,), optional
        Skip connection.
    h0 : (B, ED, S), optional
        Initial SSM state (zeros by default).
    method : {"auto", "parallel", "closed", "blelloch", "sequential", "numba", "cuda"}
        See the module docstring ("auto": cuda if possible, else numba on CPU float32/64, else
        parallel; :func:`resolve_method` says which).
    chunk_size : int, optional
        "parallel": the chunk length c (default 16 on CPU, 32 elsewhere; at most T; the block
        length follows, :func:`dsrecon.models.scan_chunked.default_block`). "blelloch": the
        block length (default T on CUDA, 128 on CPU). "closed": the chunk length (default
        16). "numba": the slab length (default about
        2**18 / (B * ED * S) steps, :func:`dsrecon.models.scan_cpu.default_slab`).

    Returns
    -------
    y : (B, T, ED) and h_T : (B, ED, S), the state after the last step.
    """
    _check_selective(u, delta, A, Bm, C, D, h0)
    if chunk_size is not None and int(chunk_size) < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    ins = (u, delta, A, Bm, C) + (() if D is None else (D,))
    path = resolve_method(method, *ins, h0=h0)
    if path == "sequential":
        return selective_scan_ref(u, delta, A, Bm, C, D, h0)
    if path == "cuda":
        y, h_last = _cuda_selective_scan(
            u.transpose(1, 2).contiguous(),  # (B, ED, T)
            delta.transpose(1, 2).contiguous(),  # (B, ED, T)
            A.contiguous(),
            Bm.transpose(1, 2).contiguous(),  # (B, S, T)
            C.transpose(1, 2).contiguous(),  # (B, S, T)
            D,
            return_last_state=True,
        )
        return y.transpose(1, 2), h_last  # (B, T, ED), (B, ED, S)
    Bsz, T, ED = u.shape
    S = A.shape[1]
    if path in ("parallel", "closed"):
        fn = scan_chunked.chunked_selective_scan if path == "parallel" else scan_cumsum.closed_form_selective_scan
        y, h_last = fn(u, delta, A, Bm, C, h0, chunk_size)
        return (y if D is None else y + D * u), h_last
    if h0 is None:
        h0 = u.new_zeros(Bsz, ED, S)
    if path == "numba":
        kern = _cpu_kernel()
        slab = kern.default_slab(Bsz, T, ED, S) if chunk_size is None else int(chunk_size)
        y, h_last = kern.NumbaSelectiveScan.apply(u, delta, A, Bm, C, h0, slab)
    else:
        if chunk_size is None:
            chunk_size = T if u.is_cuda else 128
        y, h_last = _SelectiveScan.apply(
            u.contiguous(), delta.contiguous(), A.contiguous(), Bm.contiguous(), C.contiguous(), h0, int(chunk_size)
        )
    if D is not None:
        y = y + D * u
    return y, h_last
