"""``dsrecon systems list|show``: browse the benchmark suite (every dysts flow and map)."""

from __future__ import annotations

import argparse
import json
import sys

from dsrecon.cli.common import add_command


def register(sub) -> argparse.ArgumentParser:
    p = add_command(
        sub, "systems",
        help="list the benchmark systems or show one (dimension, parameters, dt, period, spectrum)",
        example="dsrecon systems show lorenz --json",
        description=(
            "The benchmark suite: every continuous dysts flow (135, including 6 delay equations) "
            "and every discrete map (23). `list` prints the names (optionally of one kind); `show "
            "NAME` prints a system's dimension, parameters, sampling step dt, dominant period, "
            "reference Lyapunov spectrum (dysts' estimate), citation and how its vector field is "
            "evaluated. Names are case-insensitive."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    pl = add_command(actions, "list", help="list system names", example="dsrecon systems list --kind map")
    pl.add_argument("--kind", choices=("flow", "map", "delay"), help="only flows (incl. delay equations), maps, or delay equations")
    pl.add_argument("--json", action="store_true", help="print a JSON list")
    pl.set_defaults(func=run_list)
    ps = add_command(actions, "show", help="show one system", example="dsrecon systems show Rossler")
    ps.add_argument("name", metavar="NAME", help="system name (case-insensitive), e.g. Lorenz")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def run_list(args: argparse.Namespace) -> int:
    from dsrecon.systems import list_systems

    names = list_systems(args.kind)
    if args.json:
        sys.stdout.write(json.dumps(names) + "\n")
    else:
        sys.stdout.write("\n".join(names) + "\n")
    return 0


def describe(name: str) -> dict:
    """Plain-JSON summary of a system (what `systems show` prints)."""
    from dsrecon.systems import get

    s = get(name)
    meta = s.metadata
    return {
        "name": s.name,
        "kind": s.kind,
        "delay_equation": s.is_delay,
        "dim": s.dim,
        "params": s.params,
        "parameter_overrides": meta["dsrecon"]["parameter_overrides"],
        "initial_condition": s.initial_condition.tolist(),
        "dt": s.dt,
        "period": s.period,
        "lyapunov_spectrum": None if s.lyapunov_spectrum is None else s.lyapunov_spectrum.tolist(),
        "maximum_lyapunov_estimated": s.maximum_lyapunov_estimated,
        "citation": s.citation,
        "description": s.description,
        "evaluation": meta["dsrecon"]["evaluation"],
    }


def run_show(args: argparse.Namespace) -> int:
    info = describe(args.name)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, list) and v and all(isinstance(x, float) for x in v):
            v = "[" + ", ".join(f"{x:.6g}" for x in v) + "]"
        sys.stdout.write(f"{k:<{width}}  {v}\n")
    return 0
