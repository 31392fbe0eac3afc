"""The few array operations the integrators need, for NumPy arrays and torch tensors alike.

Glossary: B batch (trajectories), N state dimension, S Runge-Kutta stages.

The integrators in :mod:`dsrecon.systems.integrate` are written once against this interface;
:func:`backend_for` picks the implementation from the type of the initial states, so NumPy
input stays NumPy (fast for small batches on the CPU) and torch input stays on its device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["NumpyOps", "TorchOps", "backend_for"]


class NumpyOps:
    """NumPy float64 implementation."""

    is_torch = False

    def __init__(self) -> None:
        self.dtype = np.float64

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def full(self, shape, value) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    def empty(self, shape) -> np.ndarray:
        return np.empty(shape, dtype=np.float64)

    def index(self, n: int) -> np.ndarray:
        return np.arange(n)

    def int_full(self, n: int, value: int) -> np.ndarray:
        return np.full(n, value, dtype=np.int64)

    def combine(self, coef: np.ndarray, k: np.ndarray) -> np.ndarray:
        """sum_s coef[s] * k[s] for k (S, B, N) -> (B, N)."""
        s = coef.shape[0]
        b, n = k.shape[1], k.shape[2]
        return np.dot(coef, k[:s].reshape(s, b * n)).reshape(b, n)

    def combine_many(self, coef: np.ndarray, k: np.ndarray) -> np.ndarray:
        """coef (R, S) applied to k (S', B, N), S <= S' -> (R, B, N)."""
        s = coef.shape[1]
        return np.dot(coef, k[:s].reshape(s, -1)).reshape((coef.shape[0],) + k.shape[1:])

    def coef(self, c: np.ndarray) -> np.ndarray:
        return c

    def rms(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(x * x, axis=-1))

    def sumsq(self, x: np.ndarray) -> np.ndarray:
        return (x * x).sum(axis=-1)

    def where(self, c, a, b):
        return np.where(c, a, b)

    def row_finite(self, x: np.ndarray) -> np.ndarray:
        return np.isfinite(x).all(axis=-1)

    def row_absmax(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x).max(axis=-1)

    def numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, dtype=None) -> np.ndarray:
        return x

    def any(self, x) -> bool:
        return bool(x.any())

    def count(self, x) -> int:
        return int(np.count_nonzero(x))


class TorchOps:
    """torch implementation on the device and dtype of the initial states."""

    is_torch = True

    def __init__(self, like: torch.Tensor) -> None:
        self.device, self.dtype = like.device, like.dtype
        self._coef: dict[int, torch.Tensor] = {}

    def asarray(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def full(self, shape, value) -> torch.Tensor:
        return torch.full(shape, value, dtype=self.dtype, device=self.device)

    def empty(self, shape) -> torch.Tensor:
        return torch.empty(shape, dtype=self.dtype, device=self.device)

    def index(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def int_full(self, n: int, value: int) -> torch.Tensor:
        return torch.full((n,), value, dtype=torch.long, device=self.device)

    def coef(self, c: np.ndarray) -> torch.Tensor:
        key = id(c)
        t = self._coef.get(key)
        if t is None:
            t = self._coef[key] = torch.as_tensor(np.ascontiguousarray(c), dtype=self.dtype, device=self.device)
        return t

    def combine(self, coef: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = coef.shape[0]
        return torch.tensordot(coef, k[:s], dims=1)

    def combine_many(self, coef: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = coef.shape[1]
        return torch.tensordot(coef, k[:s], dims=1)

    def rms(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.mean(x * x, dim=-1))

    def sumsq(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(dim=-1)

    def where(self, c, a, b):
        if not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a, dtype=self.dtype, device=self.device)
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b, dtype=self.dtype, device=self.device)
        return torch.where(c, a, b)

    def row_finite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(x).all(dim=-1)

    def row_absmax(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs().amax(dim=-1)

    def numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy()

    def from_numpy(self, x: np.ndarray, dtype=None) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device, dtype=dtype)

    def any(self, x) -> bool:
        return bool(x.any())

    def count(self, x) -> int:
        return int(x.sum())


def backend_for(x: Any):
    """NumpyOps for arrays, TorchOps for tensors."""
    return TorchOps(x) if isinstance(x, torch.Tensor) else NumpyOps()
