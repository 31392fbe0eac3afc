"""What the analysis functions accept: a model, a benchmark system, or a system's name.

Glossary: B initial conditions, M latent dim (models), N state dim (systems).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dsrecon.errors import ConfigError, DataError
from dsrecon.models.base import DynamicalModel


def resolve(target: Any) -> tuple[str, Any]:
    """-> (kind, object) with kind in {"model", "flow", "map"}.

    Strings are looked up with :func:`dsrecon.systems.get`. Any object with ``kind`` "flow" (and
    ``rhs``/``jacobian``) or "map" (and ``step``/``jacobian``) counts as a system.
    """
    if isinstance(target, str):
        from dsrecon.systems import get

        target = get(target)
    if isinstance(target, DynamicalModel):
        return "model", target
    kind = getattr(target, "kind", None)
    if getattr(target, "is_delay", False):
        raise ConfigError(
            f"{getattr(target, 'name', target)} is a delay differential equation (infinite-dimensional "
            "state); Lyapunov spectra and fixed points are only implemented for ODE flows and maps"
        )
    if kind == "flow" and callable(getattr(target, "rhs", None)) and callable(getattr(target, "jacobian", None)):
        return "flow", target
    if kind == "map" and callable(getattr(target, "step", None)) and callable(getattr(target, "jacobian", None)):
        return "map", target
    raise ConfigError(
        f"cannot analyse a {type(target).__name__}: pass a dsrecon model (DynamicalModel), a system "
        "from dsrecon.systems.get(name), or a system name such as 'Lorenz'"
    )


def state_dim(kind: str, obj: Any) -> int:
    return int(obj.latent_dim) if kind == "model" else int(obj.dim)


def initial_states(
    kind: str, obj: Any, x0: Any, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Initial states (B, D) float64.

    Models: ``x0`` are *latent* states (M,) or (B, M); default N(0, 1). Systems: (N,) or (B, N);
    default the system's initial condition, the others perturbed by 1% of its scale.
    """
    D = state_dim(kind, obj)
    if int(n) < 1:
        raise ConfigError(f"n_initial_conditions must be >= 1, got {n}")
    if x0 is not None:
        arr = x0.detach().cpu().numpy() if isinstance(x0, torch.Tensor) else np.asarray(x0, dtype=np.float64)
        arr = np.asarray(arr, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != D:
            what = f"latent states (B, M={D}); map observations with model.init_state(x) first" if kind == "model" \
                else f"states (B, N={D})"
            raise DataError(f"x0 must be {what}, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError("x0 contains non-finite values")
        if n > 1 and arr.shape[0] == 1:
            arr = np.repeat(arr, n, axis=0) + 1e-6 * rng.standard_normal((n, D))
        elif n > 1 and arr.shape[0] != n:
            raise ConfigError(f"x0 has {arr.shape[0]} rows but n_initial_conditions={n}; pass one or the other")
        return arr.copy()
    if kind == "model":
        return rng.standard_normal((n, D))
    ic = np.asarray(getattr(obj, "initial_condition", np.zeros(D)), dtype=np.float64).reshape(-1)[:D]
    if ic.size != D:
        ic = np.zeros(D)
    out = np.repeat(ic[None], n, axis=0)
    if n > 1:
        out[1:] += 0.01 * (1.0 + np.abs(ic)) * rng.standard_normal((n - 1, D))
    return out
