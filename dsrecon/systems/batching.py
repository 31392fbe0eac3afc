"""Shape handling and Jacobian helpers for batched vector-field evaluation.

Glossary: B batch of states, N state dimension.

dysts functions return a tuple of components (arrays of shape (B,) or scalars for constant
components), an (N, B) array, or for Jacobians nested rows; :func:`assemble` and
:func:`assemble_jacobian` turn these into (B, N) / (B, N, N) batches of the input's type.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

__all__ = ["agree", "Mismatch", "assemble", "assemble_jacobian", "central_difference_jacobian", "autograd_jacobian", "column"]


class Mismatch(Exception):
    """An evaluator returned something that is not a (B, N) batch."""


def column(v: Any, b: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if v.ndim == 0 or v.shape == (1,):
            return v.reshape(()).expand(b)
        if v.shape == (b,):
            return v
        raise Mismatch(f"component of shape {tuple(v.shape)} for a batch of {b}")
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 0:
        return torch.full((b,), float(arr), dtype=like.dtype, device=like.device)
    if arr.shape == (b,):
        return torch.as_tensor(arr, dtype=like.dtype, device=like.device)
    raise Mismatch(f"component of shape {arr.shape} for a batch of {b}")


def assemble(out: Any, b: int, n: int, like: Any) -> Any:
    """Turn what a dysts function returned into a (B, N) batch of ``like``'s type."""
    is_t = isinstance(like, torch.Tensor)
    if isinstance(out, (tuple, list)):
        if len(out) != n:
            raise Mismatch(f"{len(out)} components, expected {n}")
        if is_t:
            return torch.stack([column(v, b, like) for v in out], dim=1)
        res = np.empty((b, n))
        for i, v in enumerate(out):
            v = np.asarray(v, dtype=np.float64)
            if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, b)):
                raise Mismatch(f"component of shape {v.shape} for a batch of {b}")
            res[:, i] = v
        return res
    arr = out if is_t else np.asarray(out, dtype=np.float64)
    shape = tuple(arr.shape)
    if shape == (n, b):
        return arr.T
    if n == 1 and shape == (b,):
        return arr[:, None]
    if b == 1 and shape in ((n,), (n, 1)):
        return arr.reshape(1, n)
    if b == 1 and n == 1 and shape == ():
        return arr.reshape(1, 1)
    raise Mismatch(f"output of shape {shape}, expected ({n}, {b})")


def assemble_jacobian(out: Any, b: int, n: int, like: Any) -> Any:
    """Turn a dysts ``_jac`` result (nested rows or an (N, N[, B]) array) into (B, N, N)."""
    is_t = isinstance(like, torch.Tensor)
    if isinstance(out, (tuple, list)) and len(out) == n and all(isinstance(r, (tuple, list)) for r in out):
        rows = [assemble(list(r), b, n, like) for r in out]  # each (B, N)
        return torch.stack(rows, dim=1) if is_t else np.stack(rows, axis=1)
    arr = out if is_t else np.asarray(out, dtype=np.float64)
    if tuple(arr.shape) == (n, n, b):
        return arr.permute(2, 0, 1) if is_t else np.moveaxis(arr, -1, 0)
    if b == 1 and tuple(arr.shape) == (n, n):
        return arr[None]
    raise Mismatch(f"Jacobian of shape {tuple(arr.shape)}, expected ({n}, {n}, {b})")


def central_difference_jacobian(f: Callable, x: np.ndarray, t: Any = 0.0) -> np.ndarray:
    """(B, N, N) Jacobian of a batched f(x, t) by central differences (one batched call)."""
    b, n = x.shape
    h = np.finfo(np.float64).eps ** (1.0 / 3.0) * np.maximum(1.0, np.abs(x))  # (B, N)
    eye = np.eye(n)
    xp = (x[:, None, :] + h[:, :, None] * eye).reshape(b * n, n)  # rows: (b, j) -> x + h_j e_j
    xm = (x[:, None, :] - h[:, :, None] * eye).reshape(b * n, n)
    tt = np.repeat(np.broadcast_to(np.asarray(t, dtype=np.float64), (b,)), n)
    fx = f(np.concatenate([xp, xm]), np.concatenate([tt, tt]))  # (2 B N, N)
    d = (fx[: b * n] - fx[b * n:]).reshape(b, n, n) / (2.0 * h[:, :, None])  # [b, j, i]
    return np.swapaxes(d, 1, 2)



def autograd_jacobian(f: Callable, x: torch.Tensor, t: Any) -> torch.Tensor:
    """(B, N, N) Jacobian of a batched torch f by N reverse passes (rows are independent)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = f(xg, t)  # (B, N)
        if not y.requires_grad:  # f does not depend on x
            return torch.zeros(x.shape + x.shape[-1:], dtype=x.dtype, device=x.device)
        rows = []
        for i in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[:, i].sum(), xg, retain_graph=i + 1 < y.shape[1], allow_unused=True)
            rows.append(torch.zeros_like(xg) if g is None else g)
    return torch.stack(rows, dim=1).detach()


def agree(a: np.ndarray, ref: np.ndarray, rtol: float) -> bool:
    """a == ref to ``rtol`` wherever ref is finite (relative, plus rtol * 1e-3 * max|ref|)."""
    ok = np.isfinite(ref)
    if not ok.any() or a.shape != ref.shape or not np.all(np.isfinite(a[ok])):
        return False
    scale = np.max(np.abs(ref[ok])) + 1e-300
    return bool(np.all(np.abs(a[ok] - ref[ok]) <= rtol * np.abs(ref[ok]) + rtol * 1e-3 * scale))
