"""PE(n): the n-step-ahead prediction error of a model over a test series.

Glossary: T time steps, N observed dim, M latent dim, B start points in one chunk.

Definition (Koppe et al. 2019; Brenner et al. 2022; Hess et al., ICML 2023; reference Julia code
DurstewitzLab/GTF-shPLRNN, ``src/measures/prediction_error.jl``): from *every* test point
``x_t`` with ``t + n < T`` (``T - n`` start points), infer ``z = init_state(x_t)``, take n free
steps ``z <- step(z)``, and compare ``observe(z)`` with ``x_{t+n}``; PE(n) is the mean squared
error over all start points and dimensions. All start points are pushed through the model as
one batch (in chunks of ``batch_size``), exactly like the reference's time-as-batch trick.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dsrecon.errors import DataError
from dsrecon.metrics._checks import positive_int, true_series
from dsrecon.metrics._torch import eval_mode, model_device_dtype, on_device
from dsrecon.metrics.result import MetricResult

#: default number of start points per chunk
DEFAULT_BATCH = 16384


@torch.no_grad()
def prediction_error(
    model: Any,
    x: Any,
    n: int = 20,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> MetricResult:
    """PE(n) of ``model`` on the series ``x``.

    Parameters
    ----------
    model : dsrecon.models.DynamicalModel
        Anything with ``init_state`` (B, N) -> (B, M), ``step`` (B, M) -> (B, M), ``observe``
        (B, M) -> (B, N) and ``obs_dim``. It is run in eval mode (its mode is restored after).
    x : array (T, N)
        Test series in the model's observation coordinates; must be finite.
    n : int
        Prediction horizon in steps (>= 1).
    batch_size : int, optional
        Start points per chunk (default 16384); bounds memory, not the result.
    device : str or torch.device, optional
        Where to compute; defaults to the model's device. A model on another device is copied
        there (the caller's model is not moved).

    Returns
    -------
    MetricResult with ``name="pe"``, ``n_steps=T``, details ``n``, ``n_starts`` (T - n) and
    ``per_dim`` (MSE per observed dimension). A non-finite prediction gives ``inf`` with flag
    ``"diverged"``.
    """
    n = positive_int(n, "n")
    bs = DEFAULT_BATCH if batch_size is None else positive_int(batch_size, "batch_size")
    xs = true_series(x, "x")
    t_len, n_dim = xs.shape
    obs_dim = getattr(model, "obs_dim", None)
    if obs_dim is not None and int(obs_dim) != n_dim:
        raise DataError(f"x has {n_dim} dimensions but the model observes {obs_dim}; pass the matching test series")
    if t_len <= n:
        raise DataError(f"PE({n}) needs a series longer than {n} steps, got T = {t_len}; use a smaller n")
    model = on_device(model, device)
    dev, dtype = model_device_dtype(model)
    with eval_mode(model):
        sq = _squared_error_sums(model, xs, n, bs, dev, dtype)
    n_starts = t_len - n
    per_dim = sq / n_starts
    details = {"n": n, "n_starts": n_starts}
    if not np.all(np.isfinite(per_dim)):
        details["per_dim"] = [None] * n_dim
        return MetricResult(math.inf, t_len, "pe", "diverged", details)
    details["per_dim"] = per_dim.tolist()
    return MetricResult(float(np.mean(per_dim)), t_len, "pe", None, details)


def _squared_error_sums(model, xs: np.ndarray, n: int, bs: int, dev, dtype) -> np.ndarray:
    """Sum over start points of the squared n-step error, per dimension (N,), float64."""
    t_len, n_dim = xs.shape
    x_dev = torch.as_tensor(xs, dtype=dtype, device=dev)  # (T, N)
    total = torch.zeros(n_dim, dtype=torch.float64, device=dev)
    for t0 in range(0, t_len - n, bs):
        t1 = min(t0 + bs, t_len - n)
        z = model.init_state(x_dev[t0:t1])  # (B, M)
        for _ in range(n):
            z = model.step(z)  # (B, M)
        err = model.observe(z).to(torch.float64) - x_dev[t0 + n : t1 + n].to(torch.float64)  # (B, N)
        total += torch.sum(err * err, dim=0)
    return total.cpu().numpy()
