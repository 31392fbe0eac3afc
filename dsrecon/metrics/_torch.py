"""Model placement helpers shared by PE(n) and the evaluation protocol (private)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch


def model_device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a model's parameters (CPU / default dtype if it has none)."""
    dev = getattr(model, "device", None)
    dtype = getattr(model, "dtype", None)
    if dev is None or dtype is None:
        params = list(model.parameters()) if hasattr(model, "parameters") else []
        dev = dev or (params[0].device if params else torch.device("cpu"))
        dtype = dtype or (params[0].dtype if params else torch.get_default_dtype())
    return torch.device(dev), dtype


def on_device(model: Any, device: str | torch.device | None) -> Any:
    """The model on ``device``: itself if already there (or device is None), else a moved copy.

    The caller's model is never moved (``nn.Module.to`` works in place).
    """
    if device is None:
        return model
    target = torch.device(device)
    current, _ = model_device_dtype(model)
    same = current.type == target.type and (target.index is None or current.index == target.index)
    return model if same else copy.deepcopy(model).to(target)


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run in eval mode (no dropout etc.) and restore the model's previous mode."""
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)
