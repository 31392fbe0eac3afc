"""Saving and loading models without executing code (DESIGN.md section 6).

A saved model is two files in a directory: ``model.json`` (the model's ``config``) and
``model.safetensors`` (its parameters and buffers). Loading never unpickles anything and always
lands on CPU unless ``device=`` says otherwise, whatever device trained the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dsrecon.errors import RunDirError
from dsrecon.models.base import DynamicalModel
from dsrecon.models.registry import from_config

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"


def save_model(model: DynamicalModel, directory: str | Path) -> Path:
    """Write ``model.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = d / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(d / WEIGHTS_FILE)
    (d / CONFIG_FILE).write_text(json.dumps(model.config, indent=2, sort_keys=True))
    return d


def member_dirs(run_dir: str | Path) -> list[Path]:
    """The member directories ``member_XX`` of an ensemble run directory, sorted (empty otherwise)."""
    return sorted(p for p in Path(run_dir).glob("member_*") if p.is_dir())


def load(run_dir: str | Path, *, device: str | torch.device = "cpu", member: int | None = None) -> DynamicalModel:
    """Load a model saved by :func:`save_model` (or a run directory written by training).

    Parameters
    ----------
    run_dir : path
        Directory holding ``model.json`` + ``model.safetensors``. For an ensemble run, the member
        sub-directories ``member_XX`` hold the models; pass ``member=k`` or the member directory.
    device : str or torch.device
        Target device (CPU by default).
    """
    d = Path(run_dir)
    if member is not None:
        d = d / f"member_{int(member):02d}"
    if not d.is_dir():
        raise RunDirError(f"{d} is not a directory; pass a run directory written by `dsrecon fit`")
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.exists() or not w_path.exists():
        members = member_dirs(d)
        hint = (
            f"; it is an ensemble run: load one member with member=k or the directory {members[0]}"
            if members
            else "; was the training finished or killed before the first checkpoint?"
        )
        raise RunDirError(f"{d} has no {CONFIG_FILE} / {WEIGHTS_FILE}{hint}")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{cfg_path} is not valid JSON ({exc}); the run directory is corrupt") from exc
    model = from_config(config)
    state = load_file(str(w_path), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunDirError(
            f"{w_path} does not match the architecture in {cfg_path} "
            f"(missing {list(missing)}, unexpected {list(unexpected)})"
        )
    return model.to(device)
