"""The result type of every metric, and the conventions for failed (diverged) trajectories.

Every metric in :mod:`dsrecon.metrics` returns a :class:`MetricResult`: the value, the number of
time steps T it was computed from (D_stsp depends strongly on T, so T is always reported), the
metric's name, a flag and plain-JSON details.

Flags
-----
``None``
    Nothing unusual; ``value`` is the metric as defined.
``"diverged"``
    The generated / predicted data are non-finite, or leave the box
    ``|x| <= DIVERGENCE_FACTOR * max|x_true|`` (``max|x_true|`` is the largest absolute value of
    the reference data, 1 if that is 0). ``value`` is the metric's *worst* value (below).
``"empty_histogram"``
    Binned D_stsp: no generated point falls inside the histogram range of the true data.
    ``value = inf`` (the reference Julia code returns NaN here).
``"no_overlap"``
    GMM D_stsp: every Monte-Carlo sample has zero density (float32 underflow, as in the reference)
    under one of the two mixtures, so there is no sample to average over. ``value = inf``.
``"constant_dimension"``
    D_H: a generated dimension is constant (it has no power spectrum); that dimension's distance is
    1, the maximum. (A constant dimension of the *true* data is bad input: DataError.)
``"censored"``
    VPT: the running sMAPE never exceeded the threshold within the forecast; ``value`` is the
    whole forecast length in Lyapunov times, a lower bound.

Worst values (used with ``"diverged"``)
---------------------------------------
D_stsp: ``+inf``; D_H: ``1.0`` (its maximum); PE(n): ``+inf``; max-LE error: ``+inf``.
sMAPE and VPT stay computable: a non-finite prediction counts as the maximal sMAPE term
(``|x - y| / (|x| + |y|) -> 1``), which is the limit for ``|y| -> inf``.

The value is never NaN: metrics return a finite number or ``+inf`` with a flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: a generated trajectory has diverged if some |x_gen| exceeds this factor times max |x_true|
DIVERGENCE_FACTOR = 1e3

#: the documented flags (see the module docstring)
FLAGS = ("diverged", "empty_histogram", "no_overlap", "constant_dimension", "censored")


@dataclass(frozen=True)
class MetricResult:
    """One metric value with its provenance.

    Attributes
    ----------
    value : float
        The metric. Finite, or ``+inf`` for an unbounded metric on a failed trajectory (see the
        module docstring); never NaN.
    n_steps : int
        T, the number of time steps the metric was computed from (0 where not applicable).
    name : str
        Short metric name: ``"dstsp"``, ``"dh"``, ``"pe"``, ``"smape"``, ``"vpt"``, ``"le_error"``.
    flag : str or None
        None when fine; otherwise one of :data:`FLAGS`.
    details : dict
        Plain-JSON extras (method, parameters, per-dimension values, counts, ...).

    ``float(result)`` gives ``value``; ``result.to_dict()`` a strict-JSON dict.
    """

    value: float
    n_steps: int
    name: str
    flag: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "n_steps", int(self.n_steps))
        if math.isnan(self.value):
            raise ValueError(f"metric {self.name!r} produced NaN; this is a bug in dsrecon.metrics")
        if self.flag is not None and self.flag not in FLAGS:
            raise ValueError(f"unknown metric flag {self.flag!r}; known: {FLAGS}")

    def __float__(self) -> float:
        return self.value

    @property
    def ok(self) -> bool:
        """True when the result carries no flag."""
        return self.flag is None

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict: ``{"name", "value", "n_steps", "flag", "details"}``.

        A non-finite ``value`` (always ``+inf``, see the module docstring) is written as ``None``
        (JSON ``null``) because JSON has no infinity; ``flag`` says why. Non-finite floats inside
        ``details`` are treated the same way.
        """
        return {
            "name": self.name,
            "value": json_safe(self.value),
            "n_steps": self.n_steps,
            "flag": self.flag,
            "details": json_safe(self.details),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricResult":
        """Inverse of :meth:`to_dict` (``value = None`` becomes ``+inf``)."""
        value = d.get("value")
        return cls(
            value=math.inf if value is None else float(value),
            n_steps=int(d.get("n_steps", 0)),
            name=str(d.get("name", "")),
            flag=d.get("flag"),
            details=dict(d.get("details") or {}),
        )


def json_safe(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to Python types and non-finite floats to None."""
    if isinstance(obj, MetricResult):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
