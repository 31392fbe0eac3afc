"""``dsrecon analyze``: Lyapunov spectrum, Kaplan-Yorke dimension, fixed points and cycles.

Of a trained run (``RUN_DIR/analysis.json``, a derived file that is overwritten) or of a
benchmark system (``--system NAME``, printed, or written to ``--out FILE``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dsrecon.cli.common import add_command, write_json
from dsrecon.errors import ConfigError, DsreconError, RunDirError

ANALYSIS_FILE = "analysis.json"
FULL_SPECTRUM_LIMIT = 64   # state dims up to which the whole spectrum is computed by default
PARTIAL_DEFAULT = 10       # leading exponents computed by default above that
NEWTON_DIM_LIMIT = 256     # smooth models above this dimension skip the fixed-point search by default


def register(sub) -> argparse.ArgumentParser:
    p = add_command(
        sub, "analyze",
        help="Lyapunov spectrum, fixed points and cycles of a trained run or a benchmark system",
        example="dsrecon analyze runs/l63 --max-order 2 --steps 100000 --dt 0.01\n"
                "  dsrecon analyze --system Lorenz --out lorenz_analysis.json",
        description=(
            "Analyse the latent map of the model in RUN_DIR (or a benchmark system with --system): the "
            "Lyapunov spectrum by the QR method (float64, batched over initial conditions), its Kaplan-Yorke "
            "dimension, and fixed points / k-cycles up to --max-order with their stability (SCYFI or "
            "exhaustive enumeration for piecewise-linear models, Newton for smooth models and systems). "
            f"Writes RUN_DIR/{ANALYSIS_FILE} (replacing an older one) and prints a summary. Model "
            "trajectories start from the first training point recorded in config.json when available, "
            "else from N(0, 1) latent states."
        ),
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run directory written by `dsrecon fit`")
    p.add_argument("--system", metavar="NAME", help="analyse a benchmark system instead (e.g. Lorenz)")
    p.add_argument("--out", metavar="FILE", help="with --system: write the JSON here (refuses to overwrite)")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace an existing file")
    p.add_argument("--max-order", type=int, default=None, metavar="K",
                   help="largest cycle order; 0 skips the search (default 1; 0 for models of more than "
                        f"{NEWTON_DIM_LIMIT} latent dims without piecewise-linear structure, where Newton "
                        "with dense Jacobians is slow)")
    p.add_argument("--exponents", type=int, default=None, metavar="K",
                   help=f"only the K leading Lyapunov exponents (default: all up to {FULL_SPECTRUM_LIMIT} "
                        f"dims, else {PARTIAL_DEFAULT})")
    p.add_argument("--steps", type=int, default=20_000, metavar="N", help="Lyapunov steps (default 20000)")
    p.add_argument("--transient", type=int, default=1_000, metavar="N", help="discarded steps (default 1000)")
    p.add_argument("--initial-conditions", type=int, default=4, metavar="B", help="trajectories averaged (default 4)")
    p.add_argument("--dt", type=float, metavar="DT",
                   help="time per step (models; default: the training data's dt if recorded) or the "
                        "integration step (flows; default: chosen from the system)")
    p.add_argument("--method", default="auto", choices=("auto", "scyfi", "exhaustive", "newton"),
                   help="fixed-point method (default auto)")
    p.add_argument("--member", type=int, metavar="K", help="ensemble runs: analyse only member K")
    p.add_argument("--seed", type=int, default=0, help="seed of initial conditions and searches (default 0)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the summary")
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    if (args.run_dir is None) == (args.system is None):
        raise ConfigError("give either RUN_DIR or --system NAME (exactly one)")
    if args.out and args.system is None:
        raise ConfigError(f"--out is for --system; a run's analysis always goes to RUN_DIR/{ANALYSIS_FILE}")
    for name, v, lo in (("--max-order", args.max_order, 0), ("--steps", args.steps, 1),
                        ("--transient", args.transient, 0), ("--initial-conditions", args.initial_conditions, 1),
                        ("--exponents", args.exponents, 1)):
        if v is not None and v < lo:
            raise ConfigError(f"{name} must be >= {lo}, got {v}")
    if args.dt is not None and not args.dt > 0:
        raise ConfigError(f"--dt must be positive, got {args.dt}")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise ConfigError(f"{args.out} already exists; pass --overwrite to replace it")


def analyze_target(target: Any, args: argparse.Namespace, *, x0: Any = None, dt: float | None = None) -> dict:
    """Spectrum + cycles of one model or system as a plain-JSON dict."""
    from dsrecon.analysis import fixed_points, lyapunov_spectrum
    from dsrecon.models.base import PiecewiseLinearModel

    dim = int(getattr(target, "latent_dim", None) or getattr(target, "dim", 0) or 0)
    k = args.exponents if args.exponents is not None else (None if dim <= FULL_SPECTRUM_LIMIT else PARTIAL_DEFAULT)
    k = None if k is not None and dim and k >= dim else k
    max_order, note = args.max_order, None
    if max_order is None:
        max_order = 1
        if dim > NEWTON_DIM_LIMIT and not isinstance(target, PiecewiseLinearModel):
            max_order, note = 0, (f"not searched by default for {dim} latent dims without piecewise-linear "
                                  "structure (Newton with dense Jacobians); pass --max-order 1 to search")
    out: dict[str, Any] = {}
    try:
        res = lyapunov_spectrum(target, x0=x0, n_steps=args.steps, transient=args.transient,
                                n_initial_conditions=args.initial_conditions, dt=dt, seed=args.seed,
                                device=args.device, n_exponents=k)
        out["lyapunov"] = {**res.to_dict(), "state_dim": dim or len(res.exponents)}
    except DsreconError as exc:
        if isinstance(exc, ConfigError):
            raise
        out["lyapunov"] = {"error": str(exc)}
    if max_order >= 1:
        cycles = fixed_points(target, max_order=max_order, method=args.method, seed=args.seed,
                              device=args.device, x0=x0)
        out["fixed_points"] = [c.to_dict() for c in cycles]
    else:
        out["fixed_points"] = None
    out["settings"] = {"max_order": max_order, "method": args.method, "seed": args.seed, "n_exponents": k,
                       **({"fixed_points_note": note} if note else {})}
    return out


def _model_inputs(run_dir: Path, model: Any, args: argparse.Namespace) -> tuple[Any, float | None]:
    """Latent initial state from the first training point, and the data's dt (config.json)."""
    import torch

    cfg: dict = {}
    if (run_dir / "config.json").exists():
        try:
            cfg = json.loads((run_dir / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{run_dir / 'config.json'} is not valid JSON ({exc})") from None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    data = data if isinstance(data, dict) else {}
    dt = args.dt if args.dt is not None else data.get("dt")
    first = data.get("first_point")
    x0 = None
    if first is not None and len(first) == model.obs_dim:
        p = next(iter(model.parameters()))
        with torch.no_grad():
            x0 = model.init_state(torch.as_tensor([first], dtype=p.dtype, device=p.device)).double().cpu().numpy()
    return x0, (float(dt) if dt is not None else None)


def run(args: argparse.Namespace) -> int:
    _check(args)
    from dsrecon import __version__
    from dsrecon.training.inputs import resolve_device

    args.device = str(resolve_device(args.device))  # a missing CUDA device fails here, before any work

    if args.system is not None:
        from dsrecon.systems import get

        system = get(args.system)
        if system.kind == "flow" and (args.max_order or 1) > 1:  # refuse before any work
            raise ConfigError(
                f"{system.name} is a flow: periodic orbits of flows are not searched, only equilibria; "
                "use --max-order 1"
            )
        result = {"target": {"system": system.name, "kind": system.kind, "dim": system.dim,
                             "params": system.params}, **analyze_target(system, args, dt=args.dt),
                  "dsrecon_version": __version__}
        path = write_json(args.out, result) if args.out else None
        _report(result, args, path, overwritten=False)
        return 0
    from dsrecon.models import load, member_dirs

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass a run directory written by `dsrecon fit`")
    members = member_dirs(run_dir)
    if args.member is not None or not (run_dir / "model.json").exists() and members:
        ks = [args.member] if args.member is not None else [int(p.name.split("_")[1]) for p in members]
    else:
        ks = [None]
    entries = []
    for k in ks:
        model = load(run_dir, member=k, device=args.device)
        x0, dt = _model_inputs(run_dir, model, args)
        entry = {"model": model.config, **({"member": k} if k is not None else {}),
                 **analyze_target(model, args, x0=x0, dt=dt)}
        entries.append(entry)
    result: dict[str, Any] = {"target": {"run_dir": str(run_dir)}, "dsrecon_version": __version__}
    if len(entries) == 1:
        result.update(entries[0])
    else:
        result["members"] = entries
    path = run_dir / ANALYSIS_FILE
    existed = path.exists()
    write_json(path, result)
    _report(result, args, path, overwritten=existed)
    return 0


def _fmt_vec(v: list[float], n: int = 6) -> str:
    s = ", ".join(f"{x:.4g}" for x in v[:n])
    return f"[{s}{', ...' if len(v) > n else ''}]"


def _report(result: dict, args: argparse.Namespace, path: Path | None, *, overwritten: bool) -> None:
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    tgt = result["target"]
    name = tgt.get("system") or tgt.get("run_dir")
    where = f" -> {path}" + (" (replaced the previous analysis)" if overwritten else "") if path else ""
    print(f"analysis of {name}{where}")
    for entry in result.get("members", [result]):
        if "member" in entry:
            print(f"member {entry['member']}:")
        ly = entry["lyapunov"]
        if "error" in ly:
            print(f"  Lyapunov spectrum: failed ({ly['error']})")
        else:
            n, dim = len(ly["exponents"]), ly.get("state_dim", len(ly["exponents"]))
            lead = f"leading {n} of {dim}; " if n < dim else ""
            print(f"  Lyapunov spectrum ({lead}{ly['units']}{', dt=%g' % ly['dt'] if ly['dt'] else ''}; "
                  f"{ly['n_steps']} steps x {ly['n_initial_conditions']} ICs): {_fmt_vec(ly['exponents'])}"
                  f"  (convergence +-{max(ly['convergence']):.2g})")
            bound = " (from the leading exponents: a lower bound)" if n < dim and ly["kaplan_yorke"] >= n else ""
            print(f"  Kaplan-Yorke dimension: {ly['kaplan_yorke']:.3f}{bound}")
        cyc = entry["fixed_points"]
        if cyc is None:
            print(f"  fixed points / cycles: {entry['settings'].get('fixed_points_note', 'not searched (--max-order 0)')}")
            continue
        print(f"  fixed points / cycles up to order {entry['settings']['max_order']}: {len(cyc)}")
        for c in cyc[:20]:
            kind = c["kind"] + (f" (index {c['saddle_index']})" if c["kind"] == "saddle" else "")
            ev = (f"max Re(ev) {max(e[0] for e in c['eigenvalues']):.4g}" if c["time"] == "continuous"
                  else f"max |ev| {max(c['eigenvalue_moduli']):.4g}")
            print(f"    order {c['order']}  {kind:<18} point {_fmt_vec(c['points'][0], 4)}  {ev}")
        if len(cyc) > 20:
            print(f"    ... {len(cyc) - 20} more in the JSON")
