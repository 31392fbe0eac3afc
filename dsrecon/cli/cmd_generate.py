"""``dsrecon generate``: a free-running trajectory of a trained model, saved as an array file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsrecon.cli.common import add_command
from dsrecon.errors import ConfigError, DataError


def register(sub) -> argparse.ArgumentParser:
    p = add_command(
        sub, "generate",
        help="generate a free-running trajectory from a trained run",
        example="dsrecon generate runs/l63 --steps 100000 --out runs/l63/generated.npy",
        description=(
            "Run the trained model of RUN_DIR freely for N steps and write the (N, obs_dim) trajectory "
            "(in the coordinates the model was trained in) to a .npy/.npz/.csv file. The initial "
            "condition is the first row of --from FILE, else the first training point recorded in "
            "RUN_DIR/config.json, else zeros. Row 0 of the output is the model's reconstruction of it."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `dsrecon fit`")
    p.add_argument("--steps", type=int, required=True, metavar="N", help="number of time steps to generate")
    p.add_argument("--from", dest="from_file", metavar="FILE", help="initial condition: the first row of this series")
    p.add_argument("--out", metavar="FILE", help="output file (.npy, .npz or .csv; default RUN_DIR/generated.npy)")
    p.add_argument("--member", type=int, metavar="K", help="ensemble member to use (ensemble runs)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dsrecon.data import load_array, save_array
    from dsrecon.models import load
    from dsrecon.training.inputs import resolve_device
    from dsrecon.training.rundir import read_json

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "generated.npy"
    if out.exists() and not args.overwrite:  # refuse before any work
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    device = resolve_device(args.device)
    model = load(run_dir, device=device, member=args.member)
    N = model.obs_dim
    if args.from_file:
        x0 = _first_row(args.from_file, load_array)
        source = f"the first row of {args.from_file}"
    else:
        cfg = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
        first = ((cfg.get("data") or {}).get("first_point")) if isinstance(cfg, dict) else None
        if first is not None:
            x0, source = np.asarray(first, dtype=float), "the first training point (config.json)"
        else:
            x0, source = np.zeros(N), "zeros (no training point recorded)"
    if x0.shape != (N,) or not np.all(np.isfinite(x0)):
        if x0.size == N:
            raise DataError(f"the initial condition {x0.tolist()} is not finite")
        raise DataError(f"the initial condition has {x0.size} values but the model observes N={N} dimensions")
    x = torch.as_tensor(x0[None], dtype=model.dtype, device=device)
    traj = model.generate(x, args.steps)[0].to("cpu").numpy()  # (N_steps, N)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = save_array(out, traj, overwrite=args.overwrite)
    bad = int((~np.isfinite(traj)).any(axis=1).sum())
    print(f"generated {args.steps} steps x {N} dims from {source} -> {path}")
    if bad:
        sys.stderr.write(f"warning: {bad} generated steps are not finite (the model diverges)\n")
    return 0


def _first_row(path: str, load_array):
    """First observation of a file: a (N,) or (1, N) .npy, or any series load_array reads."""
    import numpy as np

    p = Path(path)
    if p.suffix.lower() == ".npy" and p.is_file():
        try:
            a = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{p}: unreadable .npy file ({exc})") from None
        if a.ndim == 1:
            return np.asarray(a, dtype=float)
        if a.ndim in (2, 3) and a.size:
            return np.asarray(a.reshape(-1, a.shape[-1])[0], dtype=float)
        raise DataError(f"{p} has shape {a.shape}; expected (N,), (T, N) or (B, T, N)")
    a = load_array(p, min_steps=1)
    return np.asarray(a.reshape(-1, a.shape[-1])[0], dtype=float)
