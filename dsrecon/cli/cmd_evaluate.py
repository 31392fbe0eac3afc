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
            "under the key 'evaluation'. The test series must be in the coordinates the model was "
            "trained in (e.g. standardised the same way)."
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
    p.add_argument("--no-write", action="store_true", help="do not write metrics.json")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of a table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dsrecon.metrics import evaluate_run

    result = evaluate_run(
        args.run_dir,
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
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_table(result))
        if not args.no_write:
            print(f"\nwritten to {args.run_dir.rstrip('/')}/metrics.json (key 'evaluation')")
    return 0


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
