"""dsrecon: dynamical-systems reconstruction toolkit.

Layers (imports point only down this list, DESIGN.md section 1):
``data`` -> ``systems`` -> ``models`` -> ``metrics`` -> ``training`` -> ``analysis`` -> ``report``
-> ``bench`` -> ``cli``. Sub-packages are imported lazily: ``import dsrecon`` is cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("data", "systems", "models", "metrics", "training", "analysis", "report", "bench", "errors")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"dsrecon.{name}")
    raise AttributeError(f"module 'dsrecon' has no attribute {name!r}")


__all__ = ["__version__", *_SUBPACKAGES]
