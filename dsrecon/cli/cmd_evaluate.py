"""``dsrecon evaluate``: the paper evaluation protocol on a trained run; writes metrics.json."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from dsrecon.cli.common import add_command

_NAMES = {"dstsp": "D_stsp", "dh": "D_H", "pe": "PE"}


def register(sub) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "evaluate",
        help="evaluate a trained run on a test series (D_stsp, D_H, PE) and write metrics.json",
        example="dsrecon evaluate runs/lorenz_alrnn --test data/lorenz63_test.npy --initial-conditions 5",
        description=(
            "Evaluate a trained model with the paper protocol: generate 1.25 T steps from the first "
            "test point, drop the first 0.25 T, compare with the whole test series (D_stsp, D_H), and "
            "compute PE(n) over the test series. The result is merged into RUN_DIR/metrics.json "
            "under the key 'evaluation' (ensemble runs: into each RUN_DIR/member_XX/metrics.json, "
            "followed by the median +- MAD over the members, as the papers report). The test series "
            "must be in the coordinates the model was trained in (e.g. standardised the same way)."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `dsrecon fit`")
    p.add_argument("--test", required=True, metavar="FILE", help="test series (.npy, .npz or .csv), shape (T, N)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="steps to generate (default 1.25 T)")
    p.add_argument("--transient", type=int, default=None, metavar="N", help="generated steps to drop (default 0.25 T)")
    p.add_argument(
        "--initial-conditions", type=int, default=1, metavar="K",
        help="number of initial conditions spread over the test series; the median is reported (default 1)",
    )
    p.add_argument("--pe-steps", type=int, default=20, metavar="n", help="horizon n of PE(n) (default 20)")
    p.add_argument(
        "--metrics", default="dstsp,dh,pe", metavar="LIST",
        help="comma-separated subset of dstsp,dh,pe (default all)",
    )
    p.add_argument("--method", choices=("auto", "binned", "gmm"), default="auto", help="D_stsp estimator (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the GMM D_stsp samples (default 0)")
    p.add_argument("--device", default=None, help="torch device for the model (default cpu)")
    p.add_argument("--member", type=int, metavar="K",
                   help="ensemble runs: evaluate only member K (default: every member, then median +- MAD)")
    p.add_argument("--no-write", action="store_true", help="do not write metrics.json")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dsrecon.errors import ConfigError
    from dsrecon.models import member_dirs

    run_dir = Path(args.run_dir)
    members = member_dirs(run_dir)
    if args.member is not None:
        target = run_dir / f"member_{args.member:02d}"
        if not (target / "model.json").exists():
            raise ConfigError(f"{run_dir} has no ensemble member {args.member} ({target} holds no model.json); "
                              f"members here: {[p.name for p in members] or 'none'}")
        _evaluate_one(args, target)
        return 0
    if (run_dir / "model.json").exists() or not members:
        _evaluate_one(args, run_dir)
        return 0
    return _evaluate_members(args, members)


def _evaluate_members(args: argparse.Namespace, members: list) -> int:
    """Every member of an ensemble run, then the median +- MAD over them."""
    from dsrecon.metrics import aggregate_runs

    results = {}
    for d in members:
        if not args.json:
            print(f"== {d.name}")
        results[d.name] = _evaluate_one(args, d, show=not args.json)
        if not args.json:
            print()
    stats = aggregate_runs(results.values())
    metrics = [m for m in ("dstsp", "dh", "pe") if m in stats]
    if args.json:
        print(json.dumps({"members": results, "aggregate": {m: stats[m] for m in metrics}}, indent=2, allow_nan=False))
        return 0
    print(f"median +- MAD over {len(members)} members:")
    for m in metrics:
        st = stats[m]
        bad = f"  ({st['n_nonfinite']} non-finite left out)" if st["n_nonfinite"] else ""
        if st["median"] is None:
            print(f"  {_NAMES[m]:<8}{'no finite value':>12}{bad}")
        else:
            print(f"  {_NAMES[m]:<8}{_fmt(st['median']):>12} +- {_fmt(st['mad'])}{bad}")
    return 0


def _evaluate_one(args: argparse.Namespace, run_dir, *, show: bool = True) -> dict[str, Any]:
    """Evaluate one model directory; print the table (or JSON) when ``show``; return the result."""
    from dsrecon.metrics import evaluate_run

    result = evaluate_run(
        run_dir,
        args.test,
        write=not args.no_write,
        n_generate=args.steps,
        transient=args.transient,
        n_initial_conditions=args.initial_conditions,
        pe_steps=args.pe_steps,
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        seed=args.seed,
        dstsp_method=args.method,
        device=args.device,
    )
    if not show:
        return result
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_table(result))
        if not args.no_write:
            print(f"\nwritten to {str(run_dir).rstrip('/')}/metrics.json (key 'evaluation')")
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of an :func:`dsrecon.metrics.evaluate_model` result."""
    proto = result["protocol"]
    k = len(proto["initial_conditions"])
    lines = [
        f"test T = {proto['n_test']}, generated {proto['n_generate']} steps, transient {proto['transient']}, "
        f"compared {proto['n_compared']}, initial conditions {k}",
        "",
    ]
    rows = []
    for m in proto["metrics"]:
        label = _NAMES[m] + (f"({proto['pe_steps']})" if m == "pe" else "")
        per = ""
        if m != "pe" and k > 1:
            per = ", ".join(_fmt(ic[m]["value"]) for ic in result["per_initial_condition"])
            per = "median of " + per if len(per) < 60 else f"median of {k}"
        flags = ", ".join(sorted(set(result["flags"].get(m, [])))) or "-"
        rows.append((label, _fmt(result[m]), per, flags))
    width = max([len("per initial condition")] + [len(r[2]) for r in rows]) + 2
    lines.append(f"{'metric':<10}{'value':>14}  {'per initial condition':<{width}}flags")
    lines += [f"{label:<10}{value:>14}  {per:<{width}}{flags}" for label, value, per, flags in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "inf"
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
