"""Training windows: random-start batches and deterministic evaluation windows.

Glossary: B trajectories, T time steps, N observed dimensions, S = seq_len, W = S + 1.

A window of ``seq_len`` S holds S + 1 consecutive samples x_0 .. x_S, i.e. S one-step prediction
targets x_1 .. x_S from the initial observation x_0. The reference PLRNN training code (Hess et
al., ICML 2023; Brenner et al., NeurIPS 2024) draws batches of 16 such sequences at random start
points of the training series, 50 batches per epoch; :class:`WindowSampler` reproduces this for
one or many trajectories, deterministically given a seed.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from dsrecon.data.io import _to_numpy, check_finite
from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _batch_values(data: Any, what: str) -> tuple[Any, bool]:
    """(B, T, N) values (numpy, or a torch tensor if given one) with failed rows removed."""
    if isinstance(data, Trajectory):
        vals = data.values
        if data.failed is not None:
            vals = vals[~np.asarray(data.failed, dtype=bool)]
            if vals.shape[0] == 0:
                raise DataError(f"{what}: every trajectory is flagged failed; nothing to sample from")
        return vals, False
    if isinstance(data, torch.Tensor):
        if data.dtype.is_complex or data.dtype == torch.bool:
            raise DataError(f"{what} has non-numeric dtype {data.dtype}")
        t = data if data.ndim == 3 else data.unsqueeze(0) if data.ndim == 2 else None
        if t is None:
            raise DataError(f"{what} has shape {tuple(data.shape)}; expected (T, N) or (B, T, N)")
        return t, True
    a = _to_numpy(data, what)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        hint = ": use x.reshape(-1, 1) for a scalar series" if a.ndim == 1 else ""
        raise DataError(f"{what} has shape {a.shape}; expected (T, N) or (B, T, N){hint}")
    return a, False


class WindowSampler:
    """Draw batches of random-start windows of length ``seq_len + 1``.

    Every valid (trajectory b, start s) pair, s = 0 .. T - seq_len - 1, is equally likely, and
    pairs are drawn independently (with replacement) for each batch element. Start indices are
    generated on the CPU by a seeded :class:`torch.Generator`, so the sequence of batches is
    identical on every device.

    Parameters
    ----------
    data : Trajectory (B, T, N), ndarray or tensor (T, N) / (B, T, N)
        Training data (trajectories flagged ``failed`` are skipped). Must be finite.
    seq_len : int
        S, the number of prediction targets per window.
    batch_size : int
        Windows per batch.
    generator : torch.Generator, optional
        A CPU generator to draw from (shared state). Mutually exclusive with ``seed``.
    seed : int, optional
        Seed of a private generator. With neither, a seed is drawn from torch's global RNG at
        construction, so ``torch.manual_seed`` makes the sampler reproducible.
    device, dtype :
        Where and in which dtype the data are held and the batches returned (float32 default).

    Examples
    --------
    >>> sampler = WindowSampler(traj, seq_len=200, batch_size=16, seed=0)
    >>> x = sampler.sample()          # (16, 201, N)
    >>> for x in sampler.epoch(50):   # 50 batches per epoch
    ...     pass
    """

    def __init__(
        self,
        data: Any,
        seq_len: int,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.seq_len = _positive_int(seq_len, "seq_len")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if generator is not None and seed is not None:
            raise ConfigError("pass either generator= or seed=, not both")
        if generator is not None and generator.device.type != "cpu":
            raise ConfigError("generator must be a CPU torch.Generator (indices are drawn on the CPU)")
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point torch dtype, got {dtype}")
        values, _ = _batch_values(data, "training data")
        n_traj, n_steps, _ = values.shape
        window = self.seq_len + 1
        if n_steps < window:
            raise DataError(
                f"training data have T={n_steps} time steps, shorter than one window of "
                f"seq_len + 1 = {window} steps; use a shorter seq_len or longer data"
            )
        check_finite(values, "training data")
        self.device = torch.device(device) if device is not None else (
            values.device if isinstance(values, torch.Tensor) else torch.device("cpu"))
        tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values))
        self.data = tensor.to(device=self.device, dtype=dtype)  # (B, T, N)
        self.n_trajectories, self.n_steps, self.dim = n_traj, n_steps, int(values.shape[2])
        self.n_starts = n_steps - window + 1  # valid starts per trajectory
        if generator is None:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.generator = generator
        self._offsets = torch.arange(window, device=self.device)  # (W,)

    @property
    def n_windows(self) -> int:
        """Number of distinct valid windows, B * (T - seq_len)."""
        return self.n_trajectories * self.n_starts

    def sample_index(self, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw (trajectory, start) indices, each a CPU int64 tensor of shape (batch,)."""
        n = self.batch_size if batch_size is None else _positive_int(batch_size, "batch_size")
        flat = torch.randint(0, self.n_windows, (n,), generator=self.generator)
        return flat // self.n_starts, flat % self.n_starts

    def take(self, traj_idx: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """The windows at given (trajectory, start) indices: (batch, seq_len + 1, N)."""
        b = traj_idx.to(self.device)[:, None]  # (batch, 1)
        t = start.to(self.device)[:, None] + self._offsets  # (batch, W)
        return self.data[b, t]  # (batch, W, N)

    def sample(self, batch_size: int | None = None, *, return_index: bool = False):
        """One batch (batch, seq_len + 1, N); with ``return_index`` also (traj_idx, start)."""
        traj_idx, start = self.sample_index(batch_size)
        x = self.take(traj_idx, start)
        return (x, (traj_idx, start)) if return_index else x

    def epoch(self, n_batches: int) -> Iterator[torch.Tensor]:
        """Iterate over ``n_batches`` freshly drawn batches."""
        for _ in range(_positive_int(n_batches, "n_batches")):
            yield self.sample()

    def __repr__(self) -> str:
        return (f"WindowSampler(B={self.n_trajectories}, T={self.n_steps}, N={self.dim}, "
                f"seq_len={self.seq_len}, batch_size={self.batch_size}, device={self.device})")


def all_windows(x: Any, seq_len: int, stride: int | None = None):
    """Every window of length ``seq_len + 1`` at starts 0, stride, 2 stride, ... (deterministic).

    Parameters
    ----------
    x : Trajectory (B, T, N), ndarray or tensor (T, N) / (B, T, N)
    seq_len : int
        S; windows hold S + 1 samples.
    stride : int, optional
        Distance between window starts; default ``seq_len``, so consecutive windows share one
        sample (x_0..x_S, x_S..x_2S, ...) and together cover the series once. A tail shorter
        than a window is dropped.

    Returns
    -------
    (B * n, seq_len + 1, N) with n = (T - seq_len - 1) // stride + 1, ordered trajectory by
    trajectory, then by start; a fresh numpy array for numpy / Trajectory input, a fresh torch
    tensor on the input's device for tensor input. Trajectories flagged failed are skipped.
    """
    seq_len = _positive_int(seq_len, "seq_len")
    stride = seq_len if stride is None else _positive_int(stride, "stride")
    values, is_torch = _batch_values(x, "data")
    n_steps, window = values.shape[1], seq_len + 1
    if n_steps < window:
        raise DataError(
            f"data have T={n_steps} time steps, shorter than one window of seq_len + 1 = {window}"
        )
    n_traj, dim = values.shape[0], values.shape[2]
    if is_torch:
        w = values.unfold(1, window, stride).permute(0, 1, 3, 2)  # (B, n, W, N), a view
        out = w.reshape(-1, window, dim)
        shared = out.untyped_storage().data_ptr() == values.untyped_storage().data_ptr()
        return out.clone() if shared else out  # always a fresh tensor
    w = np.lib.stride_tricks.sliding_window_view(values, window, axis=1)[:, ::stride]  # (B, n, N, W)
    return np.array(np.swapaxes(w, 2, 3)).reshape(n_traj * w.shape[1], window, dim)  # a copy
