"""Reading and writing time-series arrays (.npy, .npz, .csv) with validation.

Glossary: B trajectories, T time steps, N observed dimensions.

Files hold arrays of shape (T, N) (one series; time runs along rows) or (B, T, N) (several
series of equal length, e.g. different initial conditions). Every problem is reported as a
:class:`~dsrecon.errors.DataError` that names the file and says what to do, *before* any work
starts: missing file, unsupported extension, unreadable or corrupt content, non-numeric dtype,
wrong rank, non-finite values, too few time steps. Nothing is ever unpickled
(``allow_pickle=False`` throughout), so loading a file cannot execute code.

Writing is atomic (a temporary file in the target directory, then a rename) and never replaces
an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError, RunDirError

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt")
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_DELIMITERS = (",", ";", "\t", None)  # None = any run of whitespace
_TRAJ_KEYS = {"values", "dt", "mean", "std", "failed", "meta"}
_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


# --------------------------------------------------------------------------- array helpers
def _to_numpy(x: Any, what: str) -> np.ndarray:
    """numpy view of an ndarray, torch tensor (any device) or Trajectory; rejects non-numbers."""
    if isinstance(x, Trajectory):
        a = x.values
    elif isinstance(x, torch.Tensor):
        a = x.detach().to("cpu").numpy()
    else:
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise DataError(f"{what} is not a rectangular numeric array ({exc})") from None
    if a.dtype.kind not in "biuf":
        kind = {"O": "object", "U": "string", "S": "bytes", "c": "complex", "V": "structured"}
        raise DataError(f"{what} has non-numeric dtype {a.dtype} ({kind.get(a.dtype.kind, a.dtype.kind)}); "
                        "convert it to a real floating-point array first, e.g. np.asarray(x, dtype=float)")
    return a


def check_finite(x: Any, what: str = "data") -> Any:
    """Raise a DataError if ``x`` (array, tensor or Trajectory) holds NaN or inf; return ``x``.

    The message gives the number of non-finite entries and the index of the first one.
    """
    a = _to_numpy(x, what)
    bad = ~np.isfinite(a)
    if bad.any():
        n_bad = int(bad.sum())
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.ravel())), a.shape))
        hint = ""
        if isinstance(x, Trajectory) and x.failed is not None and np.any(x.failed):
            hint = f" ({int(np.sum(x.failed))} trajectories are flagged failed: drop them with select())"
        raise DataError(f"{what} contains {n_bad} non-finite value(s) (NaN or inf) out of {a.size}; "
                        f"the first at index {first}{hint}; remove or interpolate them before use")
    return x


def _float_dtype(a: np.ndarray, dtype) -> np.ndarray:
    if dtype is not None:
        return a.astype(dtype, copy=False)
    if a.dtype.kind == "f" and a.dtype.itemsize >= 4:
        return a
    return a.astype(np.float32 if a.dtype == np.float16 else np.float64)


def as_batch(x: Any, what: str = "data", *, dtype=np.float64) -> np.ndarray:
    """Series as a (B, T, N) numpy array; (T, N) input gives B = 1. See :func:`as_series`."""
    a = _to_numpy(x, what)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 1:
        raise DataError(f"{what} is 1-d with shape {a.shape}; expected (T, N) or (B, T, N): "
                        "pass (or re-save) x.reshape(-1, 1) for a scalar time series")
    if a.ndim != 3:
        raise DataError(f"{what} has shape {a.shape}; expected (T, N) or (B, T, N)")
    return _float_dtype(a, dtype)


def as_series(x: Any, what: str = "data", *, dtype=np.float64) -> np.ndarray:
    """One time series as a (T, N) numpy array.

    Accepts an ndarray / torch tensor (any device, gradients detached) of shape (T, N) or
    (1, T, N), or a Trajectory with B = 1. ``dtype=None`` keeps float32/float64 as they are.
    Non-finite values are *not* checked here (see :func:`check_finite`).
    """
    a = as_batch(x, what, dtype=dtype)
    if a.shape[0] != 1:
        pick = "traj.series(i)" if isinstance(x, Trajectory) else "x[i]"
        raise DataError(
            f"{what} holds B={a.shape[0]} series (shape {a.shape}) but one (T, N) series is "
            f"needed; pass one of them, e.g. {pick}"
        )
    return a[0]


def validate_array(a: Any, what: str = "data", *, min_steps: int = 2) -> np.ndarray:
    """Validate a (T, N) or (B, T, N) numeric array; return it as a float array.

    Checks dtype, rank, at least one dimension, ``T >= min_steps``, time along rows
    (N <= T for 2-d input) and finiteness. Integer/bool data become float64, float16 float32.
    """
    if int(min_steps) < 1:
        raise ConfigError(f"min_steps must be >= 1, got {min_steps}")
    a = _to_numpy(a, what)
    as_batch(a, what, dtype=None)  # rank check: (T, N) or (B, T, N); 1-d gets a reshape hint
    if a.shape[-1] == 0 or (a.ndim == 3 and a.shape[0] == 0):
        raise DataError(f"{what} is empty (shape {a.shape}); it needs at least one series and one column")
    n_steps = a.shape[-2]
    if n_steps < min_steps:
        raise DataError(f"{what} is too short: {n_steps} time step(s) (shape {a.shape}) but at least "
                        f"{min_steps} are needed; supply a longer series")
    if a.ndim == 2 and a.shape[1] > a.shape[0]:
        raise DataError(f"{what} has shape {a.shape}: more columns (N={a.shape[1]}) than time steps "
                        f"(T={a.shape[0]}); time must run along rows, so if it is transposed re-save x.T")
    check_finite(a, what)
    return _float_dtype(a, None)


# --------------------------------------------------------------------------- reading
def _check_path(path: str | Path, suffixes=ARRAY_SUFFIXES) -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        ext = p.suffix or "(no extension)"
        raise DataError(f"{p}: unsupported file type {ext!r}; use one of {', '.join(suffixes)}")
    if not p.exists():
        raise DataError(f"{p}: file not found (working directory {os.getcwd()}); check the path")
    if not p.is_file():
        raise DataError(f"{p} is not a regular file")
    return p


def _guard(p: Path, fn: Callable[[], Any]) -> Any:
    """Run a numpy reader, turning its low-level exceptions into a DataError naming the file."""
    try:
        return fn()
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{p} holds an object (pickled) array, which dsrecon never loads because unpickling "
                "can execute code; re-save it as a numeric array, e.g. np.save(path, x.astype(float))"
            ) from None
        raise DataError(f"{p}: unreadable or corrupt file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: unreadable or corrupt file ({type(exc).__name__}: {exc})") from None


def _read_npz(p: Path, key: str | None) -> tuple[np.ndarray, str]:
    with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as npz:  # our handle: closed on errors
        keys = list(npz.files)
        if not keys:
            raise DataError(f"{p}: the .npz archive holds no arrays")
        if key is None:
            if len(keys) == 1:
                key = keys[0]
            elif "values" in keys and set(keys) <= _TRAJ_KEYS:
                key = "values"  # written by save_trajectory
            else:
                raise DataError(f"{p} holds {len(keys)} arrays ({', '.join(keys)}); choose one with key=...")
        if key not in keys:
            raise DataError(f"{p} has no array {key!r}; it holds: {', '.join(keys)}")
        return npz[key], key


def _fields_are_numbers(line: str, delim: str | None) -> int:
    """Number of fields if all of them parse as floats, else 0."""
    try:
        return len([float(f) for f in line.split(delim)])
    except ValueError:
        return 0


def _read_text(p: Path) -> np.ndarray:
    sample: list[tuple[int, str]] = []  # (raw line index, stripped line)
    with open(p, encoding="utf-8-sig") as fh:
        for i, raw in enumerate(fh):
            line = raw.strip()
            if line and not line.startswith("#"):
                sample.append((i, line))
                if len(sample) >= 64:
                    break
    if not sample:
        raise DataError(f"{p}: the file is empty (no data rows)")
    if len(sample) == 1 and not any(_fields_are_numbers(sample[0][1], c) for c in _DELIMITERS):
        raise DataError(f"{p}: the file has a header row but no data rows")
    body = [s for _, s in sample[1:]] or [sample[0][1]]
    delim, n_cols = None, 0
    for cand in _DELIMITERS:
        counts = {_fields_are_numbers(s, cand) for s in body}
        if len(counts) == 1 and 0 not in counts and (counts.pop() > 1 or cand is None):
            delim, n_cols = cand, _fields_are_numbers(body[0], cand)
            break
    if n_cols == 0:
        raise DataError(f"{p}: could not parse the rows as numbers separated by ',', ';', tab or spaces "
                        f"(first data line: {body[0][:80]!r}); check the delimiter, the decimal point "
                        "(use '.') and that every row has the same number of fields")
    header = _fields_are_numbers(sample[0][1], delim) != n_cols
    skip = sample[0][0] + 1 if header else 0
    return np.loadtxt(p, delimiter=delim, skiprows=skip, comments="#", ndmin=2,
                      dtype=np.float64, encoding="utf-8-sig")


def load_array(
    path: str | Path, *, min_steps: int = 2, name: str | None = None, key: str | None = None
) -> np.ndarray:
    """Load and validate a (T, N) or (B, T, N) array from .npy, .npz or .csv.

    Parameters
    ----------
    path : str or Path
        ``.npy``; ``.npz`` (a single array, or the one chosen by ``key``); ``.csv`` / ``.tsv`` /
        ``.txt`` text tables (one row per time step; a header row is detected and skipped;
        the delimiter is detected among ``,`` ``;`` tab and whitespace; ``#`` starts a comment).
    min_steps : int
        Minimum number of time steps T.
    name, key : str, optional
        The array to read from an ``.npz`` archive (``name`` is an alias of ``key``).

    Returns
    -------
    ndarray (T, N) or (B, T, N), float32 or float64 (integer data become float64).
    """
    if name is not None and key is not None and name != key:
        raise ConfigError(f"name={name!r} and key={key!r} disagree; pass only key=")
    key = key if key is not None else name
    p = _check_path(path)
    suffix, what = p.suffix.lower(), str(p)
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if suffix == ".npy":
        if head[:6] != _NPY_MAGIC:
            raise DataError(f"{p} is not a NumPy .npy file (no NumPy header); it may be corrupt or another format")
        a = _guard(p, lambda: np.load(p, allow_pickle=False))
    elif suffix == ".npz":
        if head[:4] != _ZIP_MAGIC:
            raise DataError(f"{p} is not a NumPy .npz archive (not a zip file); it may be corrupt or another format")
        a, key = _guard(p, lambda: _read_npz(p, key))
        what = f"{p} (array {key!r})"
    else:
        if key is not None:
            raise ConfigError(f"key={key!r} only applies to .npz archives, not {p.name}")
        if b"\x00" in head:
            raise DataError(f"{p} is a binary file, not a text table; check the file and its extension")
        a = _guard(p, lambda: _read_text(p))
    return validate_array(a, what, min_steps=min_steps)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (recorded in run configs as the data's content hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_trajectory(
    path: str | Path, *, dt: float | None = None, key: str | None = None, min_steps: int = 2
) -> Trajectory:
    """Load a file as a :class:`Trajectory` (values (B, T, N); a (T, N) file gives B = 1).

    An ``.npz`` written by :func:`save_trajectory` restores dt, mean/std, failed flags and meta
    (``dt=`` overrides the stored one). ``meta`` records the source path, the npz key and the
    file's SHA-256.
    """
    p = _check_path(path)
    values = load_array(p, min_steps=min_steps, key=key)
    traj_kwargs: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if p.suffix.lower() == ".npz" and key in (None, "values"):
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if "values" in npz.files and set(npz.files) <= _TRAJ_KEYS:
                traj_kwargs, meta = _guard(p, lambda: _trajectory_extras(p, npz))
    if dt is not None:
        traj_kwargs["dt"] = float(dt)
    meta.update({"source": str(p.resolve()), "key": key, "sha256": file_sha256(p)})
    return Trajectory(values, meta=meta, **traj_kwargs)


def _trajectory_extras(p: Path, npz) -> tuple[dict[str, Any], dict[str, Any]]:
    out: dict[str, Any] = {}
    if "dt" in npz.files and np.isfinite(npz["dt"]):
        out["dt"] = float(npz["dt"])
    for k in ("mean", "std", "failed"):
        if k in npz.files:
            out[k] = npz[k]
    meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
    if not isinstance(meta, dict):
        raise DataError(f"{p}: member 'meta' is not a JSON object")
    return out, meta


# --------------------------------------------------------------------------- writing
def _atomic_write(path: str | Path, write: Callable[[Any], None], overwrite: bool,
                  suffixes=ARRAY_SUFFIXES) -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use one of {', '.join(suffixes)}")
    if not p.parent.is_dir():
        raise DataError(f"{p}: directory {p.parent} does not exist; create it first")
    taken = f"{p} already exists; pass overwrite=True to replace it"
    if p.exists() and not overwrite:
        raise RunDirError(taken)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            try:  # link() refuses to clobber: no race between the check above and the commit
                os.link(tmp, p)
            except FileExistsError:
                raise RunDirError(taken) from None
            except OSError:  # file system without hard links
                if p.exists():
                    raise RunDirError(taken) from None
                os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def save_array(
    path: str | Path, array: Any, *, overwrite: bool = False, key: str = "values",
    header: list[str] | None = None,
) -> Path:
    """Write an array (ndarray, tensor or Trajectory values) to .npy, .npz or .csv atomically.

    ``.npz`` stores it under ``key``; text tables need a (T, N) array and get a header row when
    ``header`` (N column names) is given. Floats are written with enough digits to round-trip.
    An existing file is only replaced with ``overwrite=True`` (else :class:`RunDirError`).
    """
    a = _to_numpy(array, "array to save")
    suffix = Path(path).suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        if a.ndim != 2:
            raise DataError(f"{path}: a text table holds a (T, N) array, got shape {a.shape}; use .npy/.npz")
        if header is not None and len(header) != a.shape[1]:
            raise ConfigError(f"header has {len(header)} names but the array has {a.shape[1]} columns")
        delim = "\t" if suffix == ".tsv" else ","
        fmt = "%d" if a.dtype.kind in "biu" else "%.9g" if a.dtype.itemsize <= 4 else "%.17g"

        def write(fh):
            if header is not None:
                fh.write((delim.join(header) + "\n").encode())
            np.savetxt(fh, a, fmt=fmt, delimiter=delim)
    elif suffix == ".npz":
        def write(fh):
            np.savez(fh, **{key: a})
    else:
        def write(fh):
            np.save(fh, a, allow_pickle=False)
    return _atomic_write(path, write, overwrite)


def save_trajectory(path: str | Path, traj: Trajectory, *, overwrite: bool = False) -> Path:
    """Write a Trajectory (values, dt, mean/std, failed flags, meta as JSON) to an ``.npz``.

    :func:`load_trajectory` restores it exactly. ``meta`` must be JSON-serialisable.
    """
    if not isinstance(traj, Trajectory):
        raise ConfigError(f"save_trajectory needs a Trajectory, got {type(traj).__name__}")
    try:
        meta = json.dumps(traj.meta)
    except (TypeError, ValueError) as exc:
        raise DataError(f"trajectory meta is not JSON-serialisable ({exc}); keep it plain JSON") from None
    members: dict[str, np.ndarray] = {"values": traj.values, "meta": np.array(meta)}
    members["dt"] = np.array(np.nan if traj.dt is None else float(traj.dt))
    for k in ("mean", "std", "failed"):
        if getattr(traj, k) is not None:
            members[k] = np.asarray(getattr(traj, k))
    return _atomic_write(path, lambda fh: np.savez(fh, **members), overwrite, suffixes=(".npz",))
