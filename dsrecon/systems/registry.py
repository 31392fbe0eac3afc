"""The benchmark suite by name: every dysts 0.96 flow (135, incl. 6 delay equations) and map (23).

Glossary: B batch of states, N state dimension.

:func:`get` returns a :class:`System` (case-insensitive name; unknown names suggest close
matches), :func:`list_systems` lists the names. Metadata (dt, period, reference Lyapunov
spectrum, citation, ...) are read once from dysts' JSON files; vector fields are dysts' own
code, evaluated batched on NumPy or torch by :class:`dsrecon.systems.vectorfield.VectorField`.

Deliberate deviations from dysts' stored defaults (recorded in ``metadata['dsrecon']``):

* Lorenz: beta = 8/3 exactly (dysts stores the rounded 2.667), so sigma=10, rho=28, beta=8/3.
* The map ``Duffing`` shares its name with the flow; it is listed as ``DuffingMap`` (``get``
  also accepts ``get("Duffing", kind="map")``).
* Evaluations are stateless: dysts' ``BlinkingVortexMap`` flips the sign of its parameter b at
  every call (a period-2 protocol kept in the instance); dsrecon's ``step`` always applies the
  map with the stored b.

Reference: Gilpin (2021) "Chaos as an interpretable benchmark for forecasting and data-driven
modelling", NeurIPS Datasets and Benchmarks (dysts).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import numpy as np

from dsrecon.errors import ConfigError, unknown_name
from dsrecon.systems.vectorfield import VectorField

__all__ = ["System", "get", "list_systems", "KINDS"]

KINDS = ("flow", "map", "delay")
PARAM_OVERRIDES: dict[str, dict[str, float]] = {"Lorenz": {"beta": 8.0 / 3.0}}
ALIASES = {"roessler": "Rossler", "lorenz63": "Lorenz", "lorenz-63": "Lorenz", "lorenz96": "Lorenz96"}


def _dysts_file(rel: str) -> str:
    from importlib import resources  # no dysts import: importing dysts.flows takes seconds

    return str(resources.files("dysts").joinpath(rel))


@functools.lru_cache(maxsize=2)
def _json(kind: str) -> dict[str, Any]:
    with open(_dysts_file("data/discrete_maps.json" if kind == "map" else "data/chaotic_attractors.json")) as fh:
        return json.load(fh)


@functools.lru_cache(maxsize=None)
def _catalogue() -> dict[str, tuple[str, str]]:
    """dsrecon name -> (kind, dysts class name); kind in {"flow", "delay", "map"}.

    Built from dysts' metadata files without importing dysts (equal to
    ``dysts.systems.get_attractor_list``; checked by the tests). The maps file also lists three
    maps without an implementation, so map names are intersected with the classes defined in
    ``dysts/maps.py``.
    """
    cat: dict[str, tuple[str, str]] = {}
    for name, meta in _json("flow").items():
        cat[name] = ("delay" if meta.get("delay") else "flow", name)
    with open(_dysts_file("maps.py")) as fh:
        classes = set(re.findall(r"^class (\w+)\(", fh.read(), flags=re.M))
    for name in _json("map"):
        if name in classes:
            cat[name + "Map" if name in cat else name] = ("map", name)
    return cat


def list_systems(kind: str | None = None) -> list[str]:
    """Sorted names; ``kind`` "flow" (all 135 continuous, delay equations included), "map",
    or "delay" (only the delay differential equations)."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    cat = _catalogue()
    if kind is None:
        return sorted(cat)
    if kind == "flow":
        return sorted(n for n, (k, _) in cat.items() if k in ("flow", "delay"))
    return sorted(n for n, (k, _) in cat.items() if k == kind)


def _resolve(name: str, kind: str | None) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"system name must be a non-empty string, got {name!r}")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    cat = _catalogue()
    key = name.strip().lower()
    key = ALIASES.get(key, key).lower()
    lower = {n.lower(): n for n in cat}
    if kind == "map" and key + "map" in lower and cat[lower[key + "map"]][0] == "map":
        return lower[key + "map"]
    hit = lower.get(key)
    if hit is None or (kind is not None and cat[hit][0] != kind and not (kind == "flow" and cat[hit][0] == "delay")):
        raise unknown_name("system", name, list_systems(kind if kind != "delay" else None))
    return hit


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class System:
    """One benchmark system (built by :func:`get`; see the module docstring).

    Attributes
    ----------
    name : str -- dsrecon name (the dysts class name; ``DuffingMap`` for the map)
    kind : {"flow", "map"} -- delay differential equations are flows with ``is_delay`` True
    dim : int -- N, dimension of the state (delay equations: of the delay-embedded output)
    params : dict -- parameters (floats, or lists for vector parameters)
    initial_condition : ndarray (N,) -- dysts' default initial condition
    dt, period : float or None -- dysts' integration step and dominant period (flows)
    lyapunov_spectrum : ndarray or None -- dysts' *estimated* reference spectrum (not always
        self-consistent; recompute before trusting it)
    maximum_lyapunov_estimated : float or None
    citation, description : str
    metadata : dict -- dysts' raw metadata plus ``metadata['dsrecon']`` (parameter overrides,
        evaluation modes of the vector field: "vectorised" or a per-row fallback)
    is_delay : bool; delay_tau : float or None
    """

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        kind, cls_name = _catalogue()[name]
        raw = copy.deepcopy(_json("map" if kind == "map" else "flow").get(cls_name, {}))
        base_params = dict(raw.get("parameters", {}))
        overrides = dict(PARAM_OVERRIDES.get(name, {}))
        if params:
            unknown = sorted(set(params) - set(base_params))
            if unknown:
                raise ConfigError(
                    f"{name} has no parameter(s) {unknown}; its parameters are {sorted(base_params)}"
                )
            overrides.update({k: _plain(v) for k, v in params.items()})
        base_params.update(overrides)
        raw["parameters"] = base_params
        self.name = name
        self.kind = "map" if kind == "map" else "flow"
        self.is_delay = kind == "delay"
        self.params = {k: _plain(v) for k, v in base_params.items()}
        self._dysts_name = cls_name
        self._raw = raw
        self._overrides = overrides
        ic = np.asarray(raw.get("initial_conditions", []), dtype=np.float64).reshape(-1)
        self.initial_condition = ic
        self.dim = int(raw.get("embedding_dimension", raw.get("dimension", ic.size)) or ic.size)
        self.dt = raw.get("dt")
        self.period = raw.get("period")
        spec = raw.get("lyapunov_spectrum_estimated")
        self.lyapunov_spectrum = None if spec is None else np.asarray(spec, dtype=np.float64)
        self.maximum_lyapunov_estimated = raw.get("maximum_lyapunov_estimated")
        self.citation = raw.get("citation") or ""
        self.description = raw.get("description") or ""
        self.delay_tau = float(self.params["tau"]) if self.is_delay else None
        self.nonautonomous = bool(raw.get("nonautonomous", False))
        self._inst = None
        self._field = None

    # ------------------------------------------------------------------ dysts objects
    @property
    def dysts(self) -> Any:
        """The underlying dysts instance (with dsrecon's parameters)."""
        if self._inst is None:
            import dysts.flows
            import dysts.maps

            module = dysts.maps if self.kind == "map" else dysts.flows
            meta = copy.deepcopy(self._raw)
            self._inst = getattr(module, self._dysts_name)(metadata_path=None, metadata=meta)
        return self._inst

    @property
    def field(self) -> VectorField:
        """The batched evaluator (see :mod:`dsrecon.systems.vectorfield`)."""
        if self._field is None:
            kind = "delay" if self.is_delay else self.kind
            n = 1 if self.is_delay else self.dim
            self._field = VectorField(self.dysts, kind, n, self.initial_condition[:n])
        return self._field

    @property
    def metadata(self) -> dict[str, Any]:
        meta = copy.deepcopy(self._raw)
        meta["dsrecon"] = {
            "kind": "delay" if self.is_delay else self.kind,
            "parameter_overrides": dict(self._overrides),
            "evaluation": self.field.probe_all(),
            "postprocessing": self.has_postprocessing,
        }
        return meta

    @property
    def has_postprocessing(self) -> bool:
        """Whether dysts maps raw coordinates to bounded ones by default (e.g. angle -> sin)."""
        return hasattr(type(self.dysts), "_postprocessing")

    def with_params(self, **params: Any) -> "System":
        """A copy with some parameters changed (unknown names raise ConfigError)."""
        merged = {k: v for k, v in self.params.items() if k in self._overrides}
        merged.update(params)
        return System(self.name, merged)

    # ------------------------------------------------------------------ dynamics
    def _need(self, kind: str, what: str) -> None:
        if self.is_delay:
            raise ConfigError(
                f"{self.name} is a delay differential equation (its state is a function segment); "
                f"{what} is not defined. Use system.delayed_rhs(x, x_delayed, t) or simulate()."
            )
        if self.kind != kind:
            hint = "step(x)" if self.kind == "map" else "rhs(x, t)"
            raise ConfigError(f"{self.name} is a {self.kind}; {what} is not defined for it, use {hint}")

    def rhs(self, x: Any, t: Any = 0.0) -> Any:
        """dx/dt for flows: x (B, N) ndarray or tensor -> (B, N), same type; t float or (B,)."""
        self._need("flow", "rhs")
        return self.field(_as_batch(x, self.dim, self.name), t)

    def step(self, x: Any) -> Any:
        """One iteration of a map: x (B, N) -> (B, N), same type."""
        self._need("map", "step")
        return self.field(_as_batch(x, self.dim, self.name), 0.0)

    def jacobian(self, x: Any, t: Any = 0.0) -> Any:
        """(B, N, N) Jacobian of rhs (flows) or step (maps); how: ``metadata['dsrecon']``."""
        if self.is_delay:
            self._need("flow", "jacobian")
        return self.field.jacobian(_as_batch(x, self.dim, self.name), t)

    def delayed_rhs(self, x: Any, x_delayed: Any, t: Any = 0.0) -> Any:
        """Delay equations: dx/dt = f(x(t), x(t - tau), t) with x, x_delayed (B,) -> (B,)."""
        if not self.is_delay:
            raise ConfigError(f"{self.name} is not a delay differential equation; use rhs(x, t)")
        return self.field.delayed(x, x_delayed, t)

    def postprocess(self, values: np.ndarray) -> np.ndarray:
        """Apply dysts' default coordinate transform to raw states (..., N) (copy if none)."""
        from dsrecon.systems.postprocess import apply_postprocessing

        return apply_postprocessing(self, values)

    def __repr__(self) -> str:
        return f"System({self.name!r}, kind={self.kind!r}, dim={self.dim})"


def _as_batch(x: Any, n: int, name: str) -> Any:
    import torch

    if not isinstance(x, torch.Tensor):
        x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[-1] != n:
        raise ConfigError(f"{name} expects states of shape (B, {n}), got {tuple(x.shape)}")
    return x


@functools.lru_cache(maxsize=512)
def _get_cached(name: str) -> System:
    return System(name)


def get(name: str, kind: str | None = None) -> System:
    """The system called ``name`` (case-insensitive); unknown names raise UnknownNameError."""
    return _get_cached(_resolve(name, kind))
