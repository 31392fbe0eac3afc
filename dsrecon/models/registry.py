"""Model name registry: ``build(name, obs_dim=..., latent_dim=..., seed=...)``.

Model classes register themselves with the :func:`register` decorator in their own module; the
modules listed in ``MODEL_MODULES`` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

import torch

from dsrecon.errors import ConfigError, unknown_name
from dsrecon.models.base import DynamicalModel

#: modules (under dsrecon.models) that define registered models
MODEL_MODULES = ("plrnn", "dendplrnn", "shplrnn", "alrnn", "lssl", "node", "mamba", "esn", "rnn")

_REGISTRY: dict[str, type[DynamicalModel]] = {}
_loaded = False

T = TypeVar("T", bound=type[DynamicalModel])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a :class:`DynamicalModel` subclass buildable by ``name``."""

    def deco(cls: T) -> T:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ConfigError(f"model name {name!r} registered twice")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in MODEL_MODULES:
        full = f"dsrecon.models.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:  # a model family not present in this build
            if exc.name != full:
                raise
    _loaded = True


def available() -> list[str]:
    """Names of all registered models."""
    _load_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[DynamicalModel]:
    _load_all()
    key = str(name).lower()
    if key not in _REGISTRY:
        raise unknown_name("model", str(name), _REGISTRY)
    return _REGISTRY[key]


def build(
    name: str,
    *,
    obs_dim: int,
    latent_dim: int,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **hyper: Any,
) -> DynamicalModel:
    """Build a fresh model by registry name.

    Parameters
    ----------
    name : str
        One of :func:`available` (case-insensitive), e.g. ``"plrnn"``, ``"alrnn"``, ``"mamba"``.
    obs_dim, latent_dim : int
        N and M.
    seed : int, optional
        Seeds the parameter initialisation (a local generator state; the global RNG is restored).
    device, dtype : optional
        Where / in which precision to put the parameters (CPU, float32 by default).
    **hyper
        Model-specific hyper-parameters (see each model's docstring).
    """
    cls = model_class(name)
    try:
        if seed is None:
            model = cls(obs_dim=obs_dim, latent_dim=latent_dim, **hyper)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = cls(obs_dim=obs_dim, latent_dim=latent_dim, **hyper)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ConfigError(
            f"bad hyper-parameters for model {name!r}: {exc}; see help(dsrecon.models.model_class({name!r}))"
        ) from exc
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def from_config(config: dict[str, Any]) -> DynamicalModel:
    """Rebuild an (untrained) model from its ``config`` dict."""
    if "name" not in config:
        raise ConfigError("model config has no 'name'; it must come from model.config")
    return model_class(config["name"]).from_config(config)
