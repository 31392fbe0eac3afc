"""The generic QR (Benettin) loop shared by every Lyapunov-spectrum path.

Glossary: B initial conditions, D frame columns (all exponents, or the leading k).

A tangent frame Q (B, D_state, D) is advanced by a path-specific ``advance`` and re-orthonormalised
by a reduced QR decomposition every ``reorth`` steps; the logs of |diag R| are summed per
convergence block (Benettin, Galgani, Giorgilli & Strelcyn 1980; Shimada & Nagashima 1979).
Used by :mod:`.lyapunov` (models, maps, flows) and :mod:`.lyapunov_ensemble`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from dsrecon.errors import IntegrationError


def _qr_logs(Q: Any) -> tuple[Any, np.ndarray]:
    """Reduced QR of a batch of frames (B, D, k) -> (Q, log |diag R| (B, k) as NumPy)."""
    if isinstance(Q, torch.Tensor):
        q, r = torch.linalg.qr(Q)
        d = torch.diagonal(r, dim1=-2, dim2=-1).abs().clamp_min(1e-300)
        return q, torch.log(d).cpu().numpy()
    q, r = np.linalg.qr(Q)
    d = np.maximum(np.abs(np.diagonal(r, axis1=-2, axis2=-1)), 1e-300)
    return q, np.log(d)


def _blocks(n_steps: int, reorth: int, n_blocks: int, warmup: int) -> tuple[int, int, np.ndarray, int]:
    """Block layout of ``warmup + n_steps`` steps: (block_len, number of blocks incl. warm-up
    blocks, steps per block, warm-up steps rounded up to whole blocks).

    block_len is a multiple of reorth; the warm-up occupies whole leading blocks, which
    :func:`_summarise` drops.
    """
    per = max(1, math.ceil(n_steps / reorth / max(1, n_blocks)))
    block_len = per * reorth
    n_warm_blocks = math.ceil(warmup / block_len) if warmup > 0 else 0
    n_warm = n_warm_blocks * block_len
    nb = n_warm_blocks + math.ceil(n_steps / block_len)
    total = n_warm + n_steps
    counts = np.array([min(block_len, total - i * block_len) for i in range(nb)], dtype=np.float64)
    counts[:n_warm_blocks] = 0.0  # marks warm-up blocks
    return block_len, nb, counts, n_warm


def _benettin(
    advance: Callable[[Any, Any, int], tuple[Any, Any]],
    x: Any,
    Q: Any,
    n_steps: int,
    reorth: int,
    block_len: int,
    n_blocks: int,
    what: str,
) -> np.ndarray:
    """Generic QR loop -> log sums per block (B, n_blocks, D)."""
    B, D = x.shape[0], Q.shape[-1]  # D: columns of the frame (all exponents, or the leading k)
    sums = np.zeros((B, n_blocks, D))
    t = 0
    while t < n_steps:
        n = min(reorth, n_steps - t)
        x, Q = advance(x, Q, n)
        Q, logs = _qr_logs(Q)
        blk = (t + n - 1) // block_len
        sums[:, blk] += logs
        t += n
        if t % block_len == 0 or t == n_steps:
            ok = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
            if not bool(ok) or not np.isfinite(sums[:, blk]).all():
                raise IntegrationError(
                    f"the trajectory of {what} became non-finite within step {t}; the spectrum is undefined "
                    "there -- choose initial conditions in the basin of a bounded attractor (x0=...)"
                )
    return sums
