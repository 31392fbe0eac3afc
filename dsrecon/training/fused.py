"""Fused forced rollouts of the piecewise-linear RNN family for teacher-forcing training.

Glossary: K ensemble members, B batch, T time, M latent dim, L hidden dim.

Every PLRNN-family model (PLRNN, dendPLRNN, shPLRNN, clipped shPLRNN, AL-RNN) can be written in
the *shallow canonical form* of :class:`dsrecon.models.base.PiecewiseLinearModel`. Here a
``form`` is a mapping with K ensemble members stacked on a leading dim::

    a (K, M), W1 (K, M, L), W2 (K, L, M), h1 (K, M), h2 (K, L), relu_mask (L,) bool,
    clipped (optional bool, default False)
    F(z) = a * z + W1 act(W2 z + h2) + h1          act: relu on relu_mask units, identity else
    clipped: F(z) = a * z + W1 (relu(W2 z + h2) - relu(W2 z)) + h1

(:func:`stack_forms` builds it from the per-model ``shallow_form()`` dicts.) The *forced
rollout* covers generalised teacher forcing (GTF, Hess et al., ICML 2023: constant alpha, or
one adaptive alpha per ensemble member), sparse teacher forcing (STF, Mikhaeil et al., NeurIPS
2022: alpha = 1 every tau steps, see :func:`stf_alpha`) and free running (alpha = 0). alpha is
(T,) (one schedule for all members) or (K, T) (member k follows alpha[k])::

    z_prev = z0
    for t in 0..T-1:
        z_in[k] = z_prev[k] + alpha[k, t] * force_mask * (zhat[k, :, t] - z_prev[k])
        z[:, :, t] = F(z_in);  z_prev = z[:, :, t]

It returns the *unforced* predictions z (K, B, T, M) (aligned with x_1..x_T); gradients reach
the form tensors, z0 and zhat (BPTT through the whole window; where alpha * mask = 1 the path to
z_prev is cut by the formula itself).

Implementations: :func:`reference_forced_rollout` (plain torch ops, Python loop, autograd; any
device) and :func:`fused_forced_rollout` (one numba kernel for the whole forward pass and a
hand-written BPTT kernel for the backward, CPU float32/float64; on CUDA, opt-in, the reference
recurrence captured once and replayed as CUDA graphs, :mod:`dsrecon.training.cuda_rollout`). See
:func:`forced_rollout`.
Forms and schedules are built and validated in :mod:`dsrecon.training.fused_inputs`, the kernels
live in :mod:`dsrecon.training.fused_kernels`.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import torch

from dsrecon.errors import ConfigError
from dsrecon.training.fused_inputs import check_form as _check_form
from dsrecon.training.fused_inputs import check_inputs as _check_inputs
from dsrecon.training.fused_inputs import gtf_alpha, stack_forms, stf_alpha

try:  # numba is a declared dependency, but keep the library usable without it
    from dsrecon.training import fused_kernels as _K
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _K = None

__all__ = [
    "forced_rollout", "fused_forced_rollout", "reference_forced_rollout", "fused_available",
    "shallow_step", "shallow_jacobian", "stack_forms", "stf_alpha", "gtf_alpha", "set_num_threads",
]

# ------------------------------------------------------------------------------- helpers
def fused_available() -> bool:
    """Whether the numba kernels can be used (numba importable)."""
    return _K is not None


def _activation(form_t: dict, mask: torch.Tensor, clipped: bool, u: torch.Tensor) -> torch.Tensor:
    """act(u + h2) (or the clipped form) for u = W2 z of shape (K, B, L)."""
    h2 = form_t["h2"][:, None, :]
    if clipped:
        return torch.relu(u + h2) - torch.relu(u)
    v = u + h2
    if bool(mask.all()):
        return torch.relu(v)
    return torch.where(mask, torch.relu(v), v)


def _step(form_t: dict, mask: torch.Tensor, clipped: bool, z: torch.Tensor) -> torch.Tensor:
    u = torch.matmul(z, form_t["W2"].transpose(1, 2))                       # (K, B, L)
    r = _activation(form_t, mask, clipped, u)                               # (K, B, L)
    return (form_t["a"][:, None, :] * z + torch.matmul(r, form_t["W1"].transpose(1, 2))
            + form_t["h1"][:, None, :])                                     # (K, B, M)


def shallow_step(form: Mapping[str, Any], z: torch.Tensor) -> torch.Tensor:
    """One step of the canonical map F for an ensemble: z (K, B, M) -> (K, B, M)."""
    t, mask, clipped, K, M, _ = _check_form(form)
    if z.dim() != 3 or z.shape[0] != K or z.shape[2] != M:
        raise ConfigError(f"z must be (K, B, M) = ({K}, B, {M}), got {tuple(z.shape)}")
    return _step(t, mask, clipped, z)


def shallow_jacobian(form: Mapping[str, Any], z: torch.Tensor) -> torch.Tensor:
    """dF/dz at each state: z (K, B, M) -> J (K, B, M, M).

    J = diag(a) + W1 diag(d) W2 with d = act'(W2 z + h2) (1 on identity units, 1[v > 0] on relu
    units); clipped: d = 1[W2 z + h2 > 0] - 1[W2 z > 0]. Used by adaptive GTF (Hess et al., 2023).
    """
    t, mask, clipped, K, M, _ = _check_form(form)
    if z.dim() != 3 or z.shape[0] != K or z.shape[2] != M:
        raise ConfigError(f"z must be (K, B, M) = ({K}, B, {M}), got {tuple(z.shape)}")
    u = torch.matmul(z, t["W2"].transpose(1, 2))                            # (K, B, L)
    v = u + t["h2"][:, None, :]
    if clipped:
        d = (v > 0).to(z.dtype) - (u > 0).to(z.dtype)
    else:
        d = torch.where(mask, (v > 0).to(z.dtype), torch.ones_like(v))
    # J = sum_l d_l W1[:, l] W2[l, :]: one batched product of d with the L outer products
    outer = (t["W1"].transpose(1, 2)[..., :, None] * t["W2"][..., None, :]).reshape(K, -1, M * M)  # (K, L, M*M)
    J = torch.bmm(d, outer).reshape(K, -1, M, M)                           # (K, B, M, M)
    return J + torch.diag_embed(t["a"])[:, None]


# ----------------------------------------------------------------------------- reference
def reference_forced_rollout(form: Mapping[str, Any], z0: torch.Tensor, zhat: torch.Tensor,
                             force_mask: Any, alpha: Any) -> torch.Tensor:
    """Forced rollout with plain torch ops and a Python loop over t (autograd does BPTT).

    z0 (K, B, M), zhat (K, B, T, M), force_mask (M,), alpha (T,) or (K, T) -> z (K, B, T, M).
    Any device and dtype; the slow reference of :func:`fused_forced_rollout` and its GPU path.
    """
    t, mask, clipped, c = _check_inputs(form, z0, zhat, force_mask, alpha)
    z, out = z0, []
    for s in range(zhat.shape[2]):
        z = _step(t, mask, clipped, z + c[:, None, s] * (zhat[:, :, s] - z))   # c (K, 1, M)
        out.append(z)
    return torch.stack(out, dim=2)


# --------------------------------------------------------------------------------- fused
_MIN_BLOCK = 8         # split a member's batch over threads only into blocks of >= 8 sequences
_MIN_PAR_WORK = 2e6    # run blocks on several threads only above this many MACs per call
_POOL: list = [None, 0]   # [ThreadPoolExecutor, its size]
_POOL_LOCK = threading.Lock()
_GEMM: dict = {}         # torch dtype -> address of BLAS ?gemm


def _gemm_address(dtype: torch.dtype) -> int:
    return _GEMM.get(dtype) or _GEMM.setdefault(dtype, _K.gemm_address(str(dtype)[6:]))


_THREADS = [1]          # threads for the kernels; see set_num_threads


def set_num_threads(n: int) -> None:
    """Run the fused kernels' blocks (ensemble members, or parts of the batch) on ``n`` threads.

    Default 1 (serial). The kernels release the GIL, so blocks run truly in parallel. Results
    agree to rounding across ``n`` (the batch may be split into more blocks, whose partial
    gradient sums are added afterwards) and are bitwise reproducible for a fixed ``n``. On the
    shared 2-core development machine 2 threads gave no gain (no idle core), hence opt-in.
    """
    if int(n) < 1:
        raise ConfigError(f"number of threads must be >= 1, got {n}")
    _THREADS[0] = int(n)


def _blocks(K: int, B: int) -> tuple[int, int]:
    """(blocks per member, sequences per block): split a member's batch only when there are
    fewer members than threads."""
    per_k = max(1, min(math.ceil(B / _MIN_BLOCK), math.ceil(_THREADS[0] / K)))
    nb = math.ceil(B / per_k)
    return math.ceil(B / nb), nb


def _run(kernel, n_blocks: int, work: float, *args) -> None:
    """Run ``kernel(addr, j0, j1, *args)`` over blocks 0..n_blocks-1, split into contiguous
    ranges over a small thread pool when worthwhile (the kernels release the GIL)."""
    n = min(_THREADS[0], n_blocks)
    if n <= 1 or work < _MIN_PAR_WORK:
        kernel(args[0], 0, n_blocks, *args[1:])
        return
    with _POOL_LOCK:
        if _POOL[0] is None or _POOL[1] != n:
            if _POOL[0] is not None:
                _POOL[0].shutdown(wait=False)
            _POOL[0] = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="dsrecon-fused")
            _POOL[1] = n
        pool = _POOL[0]
    edges = [round(i * n_blocks / n) for i in range(n + 1)]
    futures = [pool.submit(kernel, args[0], edges[i], edges[i + 1], *args[1:])
               for i in range(1, n)]
    kernel(args[0], edges[0], edges[1], *args[1:])
    for f in futures:
        f.result()


def _np(x: torch.Tensor):
    return x.detach().contiguous().numpy()      # C-contiguous: one numba specialisation per dtype


class _FusedRollout(torch.autograd.Function):
    """Forward: one numba kernel over the whole window; backward: hand-written BPTT kernel
    (recomputes the forced inputs and pre-activations from z0, zhat and the output).

    c (K, T, M) is the forcing weight alpha[k, t] * force_mask of each member, step and unit.
    """

    @staticmethod
    def forward(ctx, a, W1, W2, h1, h2, z0, zhat, c, mask, clipped, w2_id):
        K, B, T, M = zhat.shape
        L = W2.shape[1]
        nblk, nb = _blocks(K, B)
        z0, zhat = z0.detach().contiguous(), zhat.detach().contiguous()
        out = torch.empty((K, B, T, M), dtype=zhat.dtype)
        _run(_K.forward, K * nblk, 2.0 * K * B * T * M * L,
             _gemm_address(zhat.dtype), nblk, nb, _np(a), _np(W1.transpose(1, 2)),
             _np(W2.transpose(1, 2)), _np(h1), _np(h2), _np(mask), clipped, w2_id, _np(c),
             z0.numpy(), zhat.numpy(), out.numpy())
        ctx.save_for_backward(a, W1, W2, h2, c, mask, z0, zhat, out)
        ctx.clipped, ctx.w2_id, ctx.blocks = clipped, w2_id, (nblk, nb)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        a, W1, W2, h2, c, mask, z0, zhat, out = ctx.saved_tensors
        K, B, T, M = zhat.shape
        L = W2.shape[1]
        nblk, nb = ctx.blocks
        KB = K * nblk
        dt = zhat.dtype
        gout = gout.to(dt).contiguous()
        dzhat = torch.empty((K, B, T, M), dtype=dt)
        dz0 = torch.empty((K, B, M), dtype=dt)
        sums = torch.empty(KB * (2 * M * L + 2 * M + L), dtype=dt)   # per-block sums
        dW1, dW2, da, dh1, dh2 = (x.view(KB, *shape) for x, shape in zip(
            sums.split([KB * M * L, KB * L * M, KB * M, KB * M, KB * L]),
            [(M, L), (L, M), (M,), (M,), (L,)]))
        need = ctx.needs_input_grad
        _run(_K.backward, KB, 5.0 * K * B * T * M * L,
             _gemm_address(dt), nblk, nb, _np(a), _np(W1), _np(W2), _np(W2.transpose(1, 2)),
             _np(h2), _np(mask), ctx.clipped, ctx.w2_id, bool(need[2]), _np(c), z0.numpy(),
             zhat.numpy(), out.numpy(), gout.numpy(), dzhat.numpy(), dz0.numpy(), dW1.numpy(),
             dW2.numpy(), da.numpy(), dh1.numpy(), dh2.numpy())
        if nblk > 1:
            dW1, dW2, da, dh1, dh2 = (x.view(K, nblk, *x.shape[1:]).sum(dim=1)
                                      for x in (dW1, dW2, da, dh1, dh2))
        grads = (da, dW1, dW2, dh1, dh2, dz0, dzhat)
        return tuple(g if n else None for g, n in zip(grads, need)) + (None,) * 4


def _fused_ok(t: dict) -> bool:
    a = t["a"]
    return _K is not None and a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64)


def fused_forced_rollout(form: Mapping[str, Any], z0: torch.Tensor, zhat: torch.Tensor,
                         force_mask: Any, alpha: Any) -> torch.Tensor:
    """Forced rollout with compiled forward and hand-written BPTT (same contract as
    :func:`reference_forced_rollout`): z0 (K, B, M), zhat (K, B, T, M), force_mask (M,),
    alpha (T,) or (K, T) -> z (K, B, T, M). One kernel call serves all K members whatever their
    schedules (e.g. the per-member alphas of adaptive GTF in an ensemble).

    CPU float32/float64 tensors run the numba kernels; CUDA tensors run the reference recurrence,
    replayed as CUDA graphs while training when ``DSRECON_CUDA_GRAPHS=1``
    (:mod:`dsrecon.training.cuda_rollout`, opt-in); other dtypes or a missing numba fall back to
    :func:`reference_forced_rollout` too (same results, autograd backward).
    Threads: :func:`set_num_threads` (default serial). Not twice differentiable. Keeps no buffers
    beyond the output for the backward pass (it recomputes forced inputs and pre-activations).
    """
    t, mask, clipped, c = _check_inputs(form, z0, zhat, force_mask, alpha)
    if not _fused_ok(t):
        if t["a"].is_cuda:  # the reference recurrence replayed as CUDA graphs (training only)
            from dsrecon.training.cuda_rollout import graphed_rollout

            z = graphed_rollout(t, mask, clipped, z0, zhat, c)
            if z is not None:
                return z
        return reference_forced_rollout(form, z0, zhat, force_mask, alpha)
    W2 = t["W2"]
    w2_id = (W2.shape[1] == W2.shape[2] and not W2.requires_grad
             and torch.equal(W2, torch.eye(W2.shape[1], dtype=W2.dtype).expand_as(W2)))
    return _FusedRollout.apply(t["a"], t["W1"], W2, t["h1"], t["h2"], z0, zhat, c,
                               mask, clipped, w2_id)


def forced_rollout(form: Mapping[str, Any], z0: torch.Tensor, zhat: torch.Tensor,
                   force_mask: Any, alpha: Any, *, impl: str = "auto") -> torch.Tensor:
    """Forced rollout z0 (K, B, M), zhat (K, B, T, M) -> unforced predictions z (K, B, T, M).

    impl: ``"auto"`` (fused kernels where possible, else the reference), ``"fused"`` (the fused
    kernels; ConfigError if they cannot run on these tensors, e.g. CUDA or no numba) or
    ``"reference"`` (plain torch + autograd). See the module doc for the recurrence.
    """
    if impl == "reference":
        return reference_forced_rollout(form, z0, zhat, force_mask, alpha)
    if impl == "auto":
        return fused_forced_rollout(form, z0, zhat, force_mask, alpha)
    if impl == "fused":
        t, *_ = _check_form(form)
        if not _fused_ok(t):
            raise ConfigError("impl='fused' needs numba and CPU float32/float64 tensors; "
                              "use impl='auto' to fall back to the reference")
        return fused_forced_rollout(form, z0, zhat, force_mask, alpha)
    raise ConfigError(f"impl must be 'auto', 'fused' or 'reference', got {impl!r}")
