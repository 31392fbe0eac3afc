"""On-disk cache of generated data sets, keyed by a hash of the full generating configuration.

Glossary: B trajectories, T samples, N dimensions.

Location: the ``cache_dir`` argument, else the environment variable ``DSRECON_CACHE``, else
``~/.cache/dsrecon``. One ``.npz`` file per configuration at ``<dir>/<system>/<key>.npz``,
where key = sha256 of the canonical JSON of the configuration plus the dsrecon and dysts
versions (so an upgrade never serves stale data). Files are written atomically (temporary file
in the same directory, then ``os.replace``), hold only numeric arrays and one JSON string, and
are read with ``allow_pickle=False`` -- nothing in the cache can execute code. A corrupt or
unreadable entry is treated as a miss and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon import __version__
from dsrecon.data.trajectory import Trajectory

__all__ = ["cache_dir", "config_key", "load", "store"]


def _dysts_version() -> str:
    try:
        from importlib.metadata import version

        return version("dysts")
    except Exception:  # pragma: no cover - dysts is a hard dependency
        return "unknown"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The cache directory (not created here)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("DSRECON_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dsrecon"


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_canonical(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float):
        return float.hex(obj)  # exact: 0.1 and 0.1000000000000001 are different configs
    return obj


def config_key(config: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical configuration + package versions."""
    payload = {"config": _canonical(config), "dsrecon": __version__, "dysts": _dysts_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _path(directory: Path, system: str, key: str) -> Path:
    return directory / system / f"{key}.npz"


def load(directory: Path, system: str, key: str) -> Trajectory | None:
    """The cached Trajectory, or None on a miss (or an unreadable entry)."""
    p = _path(directory, system, key)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta_json"]))
            values = np.array(z["values"])
            failed = np.array(z["failed"]) if "failed" in z.files else None
            mean = np.array(z["mean"]) if "mean" in z.files else None
            std = np.array(z["std"]) if "std" in z.files else None
            dt = float(z["dt"]) if "dt" in z.files else None
    except Exception:
        return None
    meta["cache"] = {"hit": True, "key": key, "path": str(p)}
    return Trajectory(values=values, dt=dt, mean=mean, std=std, meta=meta, failed=failed)


def store(directory: Path, system: str, key: str, traj: Trajectory) -> Path:
    """Write ``traj`` atomically; returns the file path."""
    p = _path(directory, system, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "values": np.asarray(traj.values),
        "meta_json": np.array(json.dumps(traj.meta, default=_json_default)),
    }
    if traj.failed is not None:
        arrays["failed"] = np.asarray(traj.failed, dtype=bool)
    if traj.mean is not None:
        arrays["mean"] = np.asarray(traj.mean, dtype=np.float64)
        arrays["std"] = np.asarray(traj.std, dtype=np.float64)
    if traj.dt is not None:
        arrays["dt"] = np.array(float(traj.dt))
    fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".npz.tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def _json_default(o: Any):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
