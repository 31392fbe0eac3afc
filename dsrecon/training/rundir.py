"""Run directories (DESIGN.md section 6): config, history, checkpoints, safe (re)loading.

Layout of ``RUN_DIR`` written by :func:`dsrecon.training.fit`::

    config.json                    every resolved setting, model config, data path + SHA-256,
                                   seed, device, package versions
    model.json, model.safetensors  the best model so far (by D_stsp); loads with dsrecon.models.load
    history.csv                    one row per epoch: epoch, loss, alpha, lr, dstsp, dh, seconds,
                                   rollbacks (+ member for ensembles)
    metrics.json                   {"training": final D_stsp / D_H / PE(20) of the best model, ...}
    checkpoints/last.safetensors        model (or stacked ensemble) state at the last checkpoint
    checkpoints/last_optim.safetensors  optimiser state tensors
    checkpoints/best.safetensors        best weights known at the last checkpoint
    checkpoints/last_state.json         trainer state + optimiser scalars (the JSON sidecar)
    member_XX/                     ensembles: each member's model.json + model.safetensors

Nothing is ever pickled: tensors go through ``safetensors``, everything else is JSON, so loading
a checkpoint cannot execute code (:mod:`dsrecon.training.checkpoint`). Every file is written
atomically (temporary file + rename). :class:`RunLog` is the trainer's single interface to all of
this; without a directory it does nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from dsrecon.errors import ConfigError, RunDirError

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
CKPT_DIR = "checkpoints"
HISTORY_FIELDS = ("epoch", "loss", "alpha", "lr", "dstsp", "dh", "seconds", "rollbacks")
_STATE_FILE = "last_state.json"


# ----------------------------------------------------------------------- small helpers
def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic, strict JSON (NaN/inf become null)."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))


def json_safe(obj: Any) -> Any:
    """Plain-JSON copy: numpy scalars/arrays -> Python, non-finite floats -> None, other objects -> str."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)  # anything else (provenance objects): its text form, never a failure


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{p} is missing; the run directory is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{p} is unreadable or not valid JSON ({exc}); the run directory is corrupt") from None


def array_sha256(values: np.ndarray) -> str:
    """Content hash of an array: SHA-256 of dtype, shape and the C-order bytes."""
    a = np.ascontiguousarray(values)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages a run depends on."""
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("dsrecon", "torch", "numpy", "scipy", "safetensors", "numba"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["torch"] = torch.__version__
    return out


# --------------------------------------------------------------------- the directory
def check_run_dir(path: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Validate what would happen to ``path`` without touching it (call before any work).

    * ``resume``: the directory must hold a run with a checkpoint.
    * neither: the directory must not exist or be empty (RunDirError otherwise).
    * ``overwrite``: an existing directory is replaced, but only if it is empty or a dsrecon run
      directory (has config.json) -- never an arbitrary folder.
    """
    p = Path(path).expanduser()
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues a run, overwrite replaces it")
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{p} exists and is not a directory; choose another output path")
    nonempty = p.is_dir() and any(p.iterdir())
    if resume:
        if not (p / CONFIG_FILE).exists() or not (p / CKPT_DIR / _STATE_FILE).exists():
            raise RunDirError(
                f"nothing to resume in {p}: it has no {CONFIG_FILE} and {CKPT_DIR}/{_STATE_FILE} "
                "(was it killed before the first checkpoint?); start it again with overwrite=True (--overwrite)"
            )
        return p
    if nonempty and not overwrite:
        raise RunDirError(
            f"run directory {p} exists and is not empty; pass overwrite=True (--overwrite) to replace "
            "it, resume=True (--resume) to continue it, or choose another output path"
        )
    if nonempty and not (p / CONFIG_FILE).exists():
        raise RunDirError(
            f"{p} is not empty and is not a dsrecon run directory (no {CONFIG_FILE}); refusing to "
            "delete it even with overwrite; choose another output path"
        )
    return p


def init_run_dir(path: str | Path, *, overwrite: bool) -> Path:
    """Create the (empty) run directory, replacing a previous run when ``overwrite``."""
    p = Path(path).expanduser()
    if p.is_dir() and any(p.iterdir()):
        if not overwrite:  # pragma: no cover - check_run_dir ran first
            raise RunDirError(f"run directory {p} is not empty")
        shutil.rmtree(p)
    p.mkdir(parents=True, exist_ok=True)
    (p / CKPT_DIR).mkdir(exist_ok=True)
    return p


def member_dir(run_dir: str | Path, k: int) -> Path:
    """Directory of ensemble member ``k``: RUN_DIR/member_XX."""
    return Path(run_dir) / f"member_{int(k):02d}"


# ---------------------------------------------------------------------------- history
def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return str(v)


class History:
    """history.csv: appended one row per epoch (flushed), truncated on resume."""

    def __init__(self, path: str | Path, fields: Iterable[str] = HISTORY_FIELDS) -> None:
        self.path = Path(path)
        self.fields = tuple(fields)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            if new:
                fh.write(",".join(self.fields) + "\n")
            for row in rows:
                fh.write(",".join(_fmt(row.get(f)) for f in self.fields) + "\n")
            fh.flush()

    def truncate(self, last_epoch: int) -> list[dict[str, Any]]:
        """Keep rows with epoch <= ``last_epoch`` (the checkpoint); return them."""
        rows = [r for r in self.read() if r["epoch"] <= last_epoch]
        lines = [",".join(self.fields)] + [",".join(_fmt(r.get(f)) for f in self.fields) for r in rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        return rows

    def read(self) -> list[dict[str, Any]]:
        return read_history(self.path)


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """history.csv as a list of dicts (ints for epoch/rollbacks/member, floats or None else)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    with open(p, newline="") as fh:
        for row in csv.DictReader(fh):
            rec: dict[str, Any] = {}
            for k, v in row.items():
                if v in ("", None):
                    rec[k] = None
                elif k in ("epoch", "rollbacks", "member"):
                    rec[k] = int(v)
                else:
                    rec[k] = float(v)
            out.append(rec)
    return out


# ---------------------------------------------------------------------------- the run log
#: training settings that may differ when a run is resumed (same mathematics)
RESUME_MAY_DIFFER = ("device", "fused")


class RunLog:
    """Everything a training run writes to its directory; a no-op without a directory.

    Life cycle: :meth:`open` (checks only, before any work) -> :meth:`begin` (after all input
    validation: creates / verifies the directory and config.json) -> :meth:`load_checkpoint`
    (resume) -> :meth:`start` -> per epoch :meth:`append_history`, :meth:`save_best`,
    :meth:`save_checkpoint` -> :meth:`write_metrics`.
    """

    def __init__(self, path: Path | None, *, resume: bool, overwrite: bool, stored: dict[str, Any] | None) -> None:
        self.path = path
        self.resume = resume
        self.overwrite = overwrite
        self.stored = stored
        self.n_members = 1
        self.ensemble = False
        self._history: History | None = None

    @classmethod
    def open(cls, out: str | Path | None, *, resume: bool = False, overwrite: bool = False) -> "RunLog":
        """Check ``out`` for the requested mode without touching it."""
        if out is None:
            if resume:
                raise ConfigError("resume=True needs the run directory to continue: pass out=RUN_DIR")
            return cls(None, resume=False, overwrite=False, stored=None)
        p = check_run_dir(out, resume=resume, overwrite=overwrite)
        stored = None
        if resume:
            stored = read_json(p / CONFIG_FILE)
            if not isinstance(stored, dict) or not {"train", "models", "data"} <= set(stored):
                raise RunDirError(f"{p / CONFIG_FILE} is not a dsrecon training config; cannot resume")
        return cls(p, resume=resume, overwrite=overwrite, stored=stored)

    def stored_train_config(self) -> dict[str, Any] | None:
        return None if self.stored is None else dict(self.stored["train"])

    def member_path(self, k: int) -> Path:
        assert self.path is not None
        return member_dir(self.path, k) if self.ensemble else self.path

    # ------------------------------------------------------------------ begin / resume
    def begin(self, cfg, model_configs: list[dict[str, Any]], train, val, *, seeds: list[int],
              ensemble: bool) -> None:
        """Create the directory and config.json, or verify them when resuming."""
        from datetime import datetime, timezone

        self.n_members, self.ensemble = len(model_configs), bool(ensemble)
        if self.path is None:
            return
        payload = {
            "format": "dsrecon-run/1",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "train": cfg.to_dict(),
            "models": model_configs,
            "ensemble": {"n_members": len(model_configs), "seeds": seeds} if ensemble else None,
            "seed": cfg.seed,
            "device": cfg.device,
            "data": train.info,
            "val_data": None if val is None else val.info,
            "versions": package_versions(),
        }
        fields = (["epoch", "member"] + list(HISTORY_FIELDS[1:])) if ensemble else list(HISTORY_FIELDS)
        self._history = History(self.path / HISTORY_FILE, fields)
        if self.resume:
            self._verify(json_safe(payload))
            return
        init_run_dir(self.path, overwrite=self.overwrite)
        write_json(self.path / CONFIG_FILE, payload)

    def _verify(self, payload: dict[str, Any]) -> None:
        old = self.stored or {}
        diffs = [f"train.{k}" for k, v in payload["train"].items()
                 if k not in RESUME_MAY_DIFFER and old["train"].get(k) != v]
        if old.get("models") != payload["models"]:
            diffs.append("model architecture")
        if (old.get("ensemble") or None) != (payload["ensemble"] or None):
            diffs.append("ensemble")
        if (old.get("data") or {}).get("sha256") != payload["data"]["sha256"]:
            diffs.append("training data (content hash)")
        if ((old.get("val_data") or {}).get("sha256")) != ((payload["val_data"] or {}).get("sha256")):
            diffs.append("validation data (content hash)")
        if diffs:
            raise RunDirError(
                f"cannot resume {self.path}: it was trained with different {', '.join(diffs)}; resume with "
                "the original settings (or no config to reuse them), or start a new run with overwrite"
            )

    def load_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint, with best model files on disk reset to the checkpoint's best."""
        from dsrecon.training.checkpoint import load_checkpoint, unpack_members

        ck = load_checkpoint(self.path)
        ck["best_states"] = unpack_members(ck["best"], self.n_members)
        for k, st in enumerate(ck["best_states"]):
            d = self.member_path(k)
            if st is None:  # a best model saved after the checkpoint is no longer valid
                for name in ("model.safetensors", "model.json"):
                    (d / name).unlink(missing_ok=True)
            elif (d / "model.json").exists():
                _write_tensors(d / "model.safetensors", st)
        return ck

    def start(self, epoch0: int) -> list[dict[str, Any]]:
        """History so far: [] for a new run; rows up to the checkpoint when resuming."""
        if self._history is None:
            return []
        if self.resume:
            return self._history.truncate(epoch0)
        return []

    # ------------------------------------------------------------------ per epoch
    def append_history(self, rows: list[dict[str, Any]]) -> None:
        if self._history is not None:
            self._history.append(rows)

    def save_best(self, k: int, model) -> None:
        if self.path is not None:
            from dsrecon.models.io import save_model

            save_model(model, self.member_path(k))

    def save_checkpoint(self, *, model_state, optimizer_state, best_states, trainer) -> None:
        if self.path is None:
            return
        from dsrecon.training.checkpoint import pack_members, save_checkpoint

        save_checkpoint(self.path, model_state=model_state, optimizer_state=optimizer_state,
                        best_state=pack_members(best_states), trainer_state=json_safe(trainer))

    def write_metrics(self, per_member: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        """metrics.json {"training": ...} (and member_XX/metrics.json for ensembles)."""
        if self.path is None:
            return
        from dsrecon.metrics import merge_metrics_json

        if not self.ensemble:
            merge_metrics_json(self.path, {"training": {**per_member[0], **extra}})
            return
        for k, m in enumerate(per_member):
            self.member_path(k).mkdir(exist_ok=True)
            merge_metrics_json(self.member_path(k), {"training": {**m, "member": k}})
        merge_metrics_json(self.path, {"training": {"members": per_member, **extra}})


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
