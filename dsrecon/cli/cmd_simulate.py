"""``dsrecon simulate``: generate a data set from a benchmark system and save it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsrecon.cli.common import add_command
from dsrecon.errors import ConfigError, RunDirError

_SUFFIXES = (".npy", ".npz", ".csv")


def register(sub) -> argparse.ArgumentParser:
    p = add_command(
        sub, "simulate",
        help="simulate a benchmark system and write the trajectory to .npy/.npz/.csv",
        example="dsrecon simulate lorenz --steps 100000 --dt 0.01 --noise 0.05 --seed 1 --out lorenz.npy",
        description=(
            "Integrate a benchmark system (dsrecon's batched DOP853 for flows) and write the samples. "
            ".npy holds the values ((T, N) for one trajectory, else (B, T, N)); .csv one trajectory "
            "as a (T, N) table with a header; .npz the full trajectory with dt, standardisation "
            "statistics, failure flags and every generating setting (readable with "
            "dsrecon.data.load_trajectory). Results are cached (DSRECON_CACHE, default ~/.cache/dsrecon)."
        ),
    )
    p.add_argument("name", metavar="NAME", help="system name (see `dsrecon systems list`)")
    p.add_argument("--steps", type=int, required=True, metavar="N", help="samples per trajectory")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dt", type=float, metavar="DT", help="sampling interval")
    g.add_argument("--pts-per-period", type=float, metavar="P", help="samples per dominant period (default 100)")
    p.add_argument("--trajectories", type=int, default=1, metavar="B", help="number of trajectories (default 1)")
    p.add_argument("--ic", default=None, choices=("default", "random", "attractor"),
                   help="initial conditions (default: 'default' for one trajectory, 'attractor' for several)")
    p.add_argument("--noise", type=float, default=0.0, metavar="S", help="observation noise in units of each dimension's sd")
    p.add_argument("--dynamical-noise", type=float, default=0.0, metavar="S", help="process noise in attractor sd units")
    p.add_argument("--transient", type=int, default=None, metavar="K", help="samples to discard first")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="random seed")
    p.add_argument("--method", default="dop853", choices=("dop853", "rk45", "rk4"), help="integrator (default dop853)")
    p.add_argument("--standardize", action="store_true", help="z-score each dimension")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the dataset cache")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (.npy, .npz or .csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"--out must end in {', '.join(_SUFFIXES)}, got {out.name!r}")
    if out.exists() and not args.overwrite:  # refuse before any work
        raise RunDirError(f"{out} already exists; pass --overwrite to replace it")
    if out.suffix.lower() == ".csv" and args.trajectories != 1:
        raise ConfigError("a .csv file holds one trajectory; use --trajectories 1, or .npy/.npz")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: {out.parent} is a file, not a directory")
    from dsrecon.data import save_array, save_trajectory
    from dsrecon.systems import get, simulate

    system = get(args.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    ic = args.ic or ("default" if args.trajectories == 1 else "attractor")
    if ic == "attractor" and (system.kind == "map" or system.is_delay):
        ic = "random"
    traj = simulate(
        system, args.steps, dt=args.dt, pts_per_period=args.pts_per_period, n_trajectories=args.trajectories,
        noise=args.noise, dynamical_noise=args.dynamical_noise, seed=args.seed, transient=args.transient, ic=ic,
        method=args.method, standardize=args.standardize, cache=not args.no_cache,
    )
    suffix = out.suffix.lower()
    if suffix == ".npz":
        save_trajectory(out, traj, overwrite=args.overwrite)
    elif suffix == ".csv":
        names = [f"x{i}" for i in range(traj.dim)]
        save_array(out, traj.values[0], header=names, overwrite=args.overwrite)
    else:
        save_array(out, traj.values[0] if traj.n_trajectories == 1 else traj.values, overwrite=args.overwrite)
    n_failed = int(traj.failed.sum()) if traj.failed is not None else 0
    msg = f"wrote {out} ({traj.n_trajectories} x {traj.n_steps} x {traj.dim}, dt={traj.dt:.6g})"
    if n_failed:
        msg += f"; {n_failed} trajectories failed (NaN): {traj.meta['failures'][int(traj.failed.argmax())]}"
    sys.stderr.write(msg + "\n")
    return 0
