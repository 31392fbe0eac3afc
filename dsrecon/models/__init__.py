"""Reconstruction models behind one protocol (DESIGN.md section 2) and a name registry."""

from dsrecon.models.base import DynamicalModel, PiecewiseLinearModel
from dsrecon.models.io import load, save_model
from dsrecon.models.registry import available, build, from_config, model_class, register

__all__ = [
    "DynamicalModel",
    "PiecewiseLinearModel",
    "available",
    "build",
    "from_config",
    "load",
    "model_class",
    "register",
    "save_model",
]
