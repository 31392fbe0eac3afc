"""Checkpoint files that load without executing code (DESIGN.md section 6).

A checkpoint is four files in ``RUN_DIR/checkpoints``::

    last.safetensors        model state (an ensemble's stacked parameters)
    last_optim.safetensors  optimiser state tensors (moments, step counts), keys state.<param>.<name>
    best.safetensors        the best weights known at checkpoint time, keys <member>.<name>
    last_state.json         the JSON sidecar: trainer state (epoch, step, forcing, roll-back guard,
                            best records) and the optimiser's param_groups / scalar state

Tensors only ever go through ``safetensors`` (never pickle, never ``torch.load``). Each file is
written atomically (temporary file + rename); all four carry one random token (safetensors
metadata and JSON), so a checkpoint torn by a kill between two renames is detected on loading.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dsrecon.errors import RunDirError
from dsrecon.training.rundir import CKPT_DIR, json_safe, read_json, write_json

STATE_FILE = "last_state.json"
TENSOR_FILES = ("last.safetensors", "last_optim.safetensors", "best.safetensors")


def optimizer_to_tensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and a JSON sidecar."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in state["state"].items():
        for key, val in st.items():
            name = f"state.{pid}.{key}"
            if isinstance(val, torch.Tensor):
                tensors[name] = val.detach().to("cpu").contiguous().clone()
            else:
                scalars[name] = val
    return tensors, {"param_groups": json_safe(state["param_groups"]), "scalars": json_safe(scalars)}


def optimizer_from_tensors(tensors: Mapping[str, torch.Tensor], sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_tensors`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    items = list(tensors.items()) + list(sidecar.get("scalars", {}).items())
    for name, val in items:
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = val
    groups = []
    for g in sidecar["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def pack_members(states: list[Mapping[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
    """Per-member state dicts -> one flat dict with keys ``<k>.<name>`` (None members omitted)."""
    return {f"{k}.{name}": t for k, st in enumerate(states) if st is not None for name, t in st.items()}


def unpack_members(flat: Mapping[str, torch.Tensor], K: int) -> list[dict[str, torch.Tensor] | None]:
    """Inverse of :func:`pack_members`."""
    out: list[dict[str, torch.Tensor] | None] = [None] * K
    for key, t in flat.items():
        k, name = key.split(".", 1)
        if int(k) >= K:
            raise RunDirError(f"checkpoint holds member {k} but the run has {K} members; the run directory is corrupt")
        if out[int(k)] is None:
            out[int(k)] = {}
        out[int(k)][name] = t  # type: ignore[index]
    return out


def save_checkpoint(
    run_dir: str | Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    best_state: Mapping[str, torch.Tensor],
    trainer_state: Mapping[str, Any],
) -> None:
    """Write the four checkpoint files, tied together by one token."""
    d = Path(run_dir) / CKPT_DIR
    d.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    opt_tensors, opt_sidecar = optimizer_to_tensors(optimizer_state)
    meta = {"token": token, "epoch": str(trainer_state.get("epoch"))}
    for name, tensors in zip(TENSOR_FILES, (model_state, opt_tensors, best_state)):
        cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        tmp = d / f".{name}.{token}.tmp"
        try:
            save_file(cpu, str(tmp), metadata=meta)
            os.replace(tmp, d / name)
        finally:
            tmp.unlink(missing_ok=True)
    write_json(d / STATE_FILE, {"token": token, "trainer": trainer_state, "optimizer": opt_sidecar})


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """Read a checkpoint (CPU tensors, nothing unpickled); RunDirError if missing, corrupt or torn.

    Returns ``{"model": tensors, "optimizer": state_dict, "best": tensors, "trainer": dict}``.
    """
    d = Path(run_dir) / CKPT_DIR
    state = read_json(d / STATE_FILE)
    if not isinstance(state, dict) or not {"token", "trainer", "optimizer"} <= set(state):
        raise RunDirError(f"{d / STATE_FILE} is not a dsrecon checkpoint state; the run directory is corrupt")
    loaded = []
    for name in TENSOR_FILES:
        p = d / name
        if not p.exists():
            raise RunDirError(f"checkpoint file {p} is missing; cannot resume (start again with overwrite)")
        try:
            with safe_open(str(p), framework="pt") as fh:
                token = (fh.metadata() or {}).get("token")
            tensors = load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise RunDirError(f"checkpoint file {p} is corrupt ({exc}); cannot resume") from None
        if token != state["token"]:
            raise RunDirError(
                f"the checkpoint files in {d} belong to different checkpoints (the run was killed while "
                "writing one); cannot resume safely -- start again with overwrite"
            )
        loaded.append(tensors)
    model, opt_tensors, best = loaded
    return {
        "model": model,
        "optimizer": optimizer_from_tensors(opt_tensors, state["optimizer"]),
        "best": best,
        "trainer": state["trainer"],
    }
