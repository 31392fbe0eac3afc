"""Reconstruction models behind one protocol (DESIGN.md section 2) and a name registry."""

from dsrecon.models.base import DynamicalModel, PiecewiseLinearModel
from dsrecon.models.io import load, member_dirs, save_model
from dsrecon.models.registry import available, build, from_config, model_class, register

__all__ = [
    "DynamicalModel",
    "PiecewiseLinearModel",
    "available",
    "build",
    "from_config",
    "load",
    "member_dirs",
    "model_class",
    "register",
    "save_model",
]
