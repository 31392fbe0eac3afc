"""Forecast metrics in the dysts convention: sMAPE, valid prediction time, and the max-LE error.

Glossary: T forecast steps, N observed dimensions.

* **sMAPE** on the 0-200 scale (Gilpin, NeurIPS 2021 Datasets & Benchmarks; Gilpin, Phys. Rev.
  Research 2023):  ``sMAPE = 200 / (T N) * sum_{t, i} |x_ti - y_ti| / (|x_ti| + |y_ti|)``.
  dysts' ``dysts.metrics.smape`` with ``scaled=False``; its default ``scaled=True`` halves it.
  A term with ``x = y = 0`` is 0 (dysts adds eps = 1e-10 to the denominator, which gives the same
  0); a non-finite prediction contributes the maximal term 1 (the limit ``|y| -> inf``) and sets
  the flag ``"diverged"``.
* **Running sMAPE** (dysts' ``horizoned_smape``): ``s_k`` = sMAPE of the first k + 1 steps, i.e.
  the cumulative mean of the per-step terms. **VPT** (dysts' ``vpt_smape``): the first index k
  with ``s_k > threshold`` (30 by default), i.e. the number of steps before the running sMAPE
  exceeds the threshold (T if it never does: flag ``"censored"``), reported in Lyapunov times
  ``k * dt * lambda_max``.
* **Max-LE error**: relative error ``|lambda_est - lambda_ref| / |lambda_ref|`` of the largest
  Lyapunov exponent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dsrecon.errors import ConfigError, DataError
from dsrecon.metrics._checks import generated_series, true_series
from dsrecon.metrics.result import MetricResult


def smape_terms(x_true: np.ndarray, x_pred: np.ndarray) -> np.ndarray:
    """Per-step sMAPE on the 0-200 scale, averaged over dimensions: (T, N), (T, N) -> (T,)."""
    num = np.abs(x_true - x_pred)
    den = np.abs(x_true) + np.abs(x_pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        term = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    term = np.where(np.isfinite(x_pred), term, 1.0)
    return 200.0 * np.mean(term, axis=1)


def _pair(x_true: Any, x_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    xt = true_series(x_true, "x_true")
    xp = generated_series(x_pred, xt.shape[1], "x_pred")
    if len(xp) != len(xt):
        raise DataError(
            f"x_true has {len(xt)} steps and x_pred {len(xp)}; a forecast is compared step by step, "
            "so pass aligned series of equal length"
        )
    return xt, xp


def smape(x_true: Any, x_pred: Any) -> MetricResult:
    """Symmetric mean absolute percentage error on the 0-200 scale (dysts, ``scaled=False``).

    Parameters
    ----------
    x_true, x_pred : arrays (T, N)
        Aligned true and predicted series (x_true finite).

    Returns
    -------
    MetricResult ``name="smape"``, ``n_steps=T``, details ``per_step`` (T,) and ``running`` (T,)
    (the running sMAPE, see the module docstring).
    """
    xt, xp = _pair(x_true, x_pred)
    per_step = smape_terms(xt, xp)
    running = np.cumsum(per_step) / np.arange(1, len(per_step) + 1)
    flag = None if np.all(np.isfinite(xp)) else "diverged"
    details = {"per_step": per_step.tolist(), "running": running.tolist()}
    return MetricResult(float(np.mean(per_step)), len(xt), "smape", flag, details)


def valid_prediction_time(
    x_true: Any, x_pred: Any, *, dt: float, lyapunov_exponent: float, threshold: float = 30
) -> MetricResult:
    """Valid prediction time in Lyapunov times (dysts' ``vpt_smape`` convention).

    Parameters
    ----------
    x_true, x_pred : arrays (T, N)
        Aligned true series and forecast; ``x_pred[0]`` is the first forecast step.
    dt : float
        Sampling interval (time units per step).
    lyapunov_exponent : float
        The system's largest Lyapunov exponent (> 0), in inverse time units.
    threshold : float
        Running-sMAPE threshold (0-200 scale).

    Returns
    -------
    MetricResult ``name="vpt"`` with ``value = k * dt * lyapunov_exponent`` (k = valid steps),
    ``n_steps=T``, details ``steps`` (k), ``time`` (k dt), ``threshold``. Flag ``"censored"`` when
    the threshold is never exceeded (k = T, a lower bound), ``"diverged"`` for a non-finite forecast.
    """
    for name, v in (("dt", dt), ("lyapunov_exponent", lyapunov_exponent), ("threshold", threshold)):
        if not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)) or float(v) <= 0:
            raise ConfigError(f"{name} must be a positive finite number, got {v!r}")
    xt, xp = _pair(x_true, x_pred)
    per_step = smape_terms(xt, xp)
    running = np.cumsum(per_step) / np.arange(1, len(per_step) + 1)
    exceed = np.flatnonzero(running > threshold)
    steps = int(exceed[0]) if exceed.size else len(running)
    if not np.all(np.isfinite(xp)):
        flag = "diverged"
    else:
        flag = None if exceed.size else "censored"
    details = {
        "steps": steps,
        "time": steps * float(dt),
        "threshold": float(threshold),
        "dt": float(dt),
        "lyapunov_exponent": float(lyapunov_exponent),
    }
    return MetricResult(steps * float(dt) * float(lyapunov_exponent), len(xt), "vpt", flag, details)


def _max_exponent(v: Any, what: str) -> float:
    if hasattr(v, "exponents"):  # a Lyapunov spectrum result object
        v = v.exponents
    if hasattr(v, "detach"):  # torch tensor
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise DataError(f"{what} is empty; pass the largest Lyapunov exponent or a spectrum")
    return float(np.max(a)) if np.all(np.isfinite(a)) else math.nan


def lyapunov_exponent_error(estimated: Any, reference: Any) -> MetricResult:
    """Relative error of the largest Lyapunov exponent: ``|l_est - l_ref| / |l_ref|``.

    Parameters
    ----------
    estimated, reference : float, array of exponents, or an object with ``.exponents``
        The maximum of each is used. The reference must be finite and non-zero.

    Returns
    -------
    MetricResult ``name="le_error"``, ``n_steps=0``, details ``estimated``, ``reference`` and
    ``signed`` ((l_est - l_ref) / |l_ref|). A non-finite estimate gives ``inf``, flag ``"diverged"``.
    """
    ref = _max_exponent(reference, "reference")
    if not math.isfinite(ref) or ref == 0.0:
        raise DataError(
            f"reference maximal Lyapunov exponent is {ref!r}; a relative error needs a finite non-zero "
            "reference (for a non-chaotic reference compare absolute values instead)"
        )
    est = _max_exponent(estimated, "estimated")
    if not math.isfinite(est):
        return MetricResult(math.inf, 0, "le_error", "diverged", {"estimated": None, "reference": ref})
    signed = (est - ref) / abs(ref)
    return MetricResult(abs(signed), 0, "le_error", None, {"estimated": est, "reference": ref, "signed": signed})
