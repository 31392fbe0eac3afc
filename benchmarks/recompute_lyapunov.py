"""Re-estimate the Lyapunov spectrum of every dysts flow and table where dysts' metadata disagree.

Run:  python benchmarks/recompute_lyapunov.py                       (all non-delay flows; ~10-20 min on a loaded 2-core machine)
      python benchmarks/recompute_lyapunov.py --names Lorenz Rossler --steps 20000
      python benchmarks/recompute_lyapunov.py --json-out spectra.json --md-out disagreements.md

For each flow: :func:`dsrecon.analysis.recompute_reference_spectra` (variational equations, RK4 at
the step of :func:`dsrecon.analysis.lyapunov_ode.default_flow_dt`, ``--ics`` initial conditions
batched, ``--steps`` steps after a transient). A system is listed when our lambda_max differs by
more than 20% (and more than twice our convergence spread) from dysts' ``maximum_lyapunov_estimated``
or ``lyapunov_spectrum_estimated[0]``, or when the signs disagree (chaotic vs not). Flagged and
failed systems are re-run at a quarter of the step; estimates that change are marked
"step-size sensitive" (ours is then not reliable either). Systems that fail or exceed
``--budget`` seconds are listed too. Prints the markdown table and a summary line; modest accuracy by design (the point is
to find gross inconsistencies, not third digits: the convergence column is the spread of the
running estimate over the second half of the run).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import time


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - signal handler
    raise _Timeout()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", nargs="+", help="flows to check (default: all non-delay flows)")
    p.add_argument("--steps", type=int, default=5_000, help="steps per trajectory (default 5000)")
    p.add_argument("--transient", type=int, default=500, help="transient steps (default 500)")
    p.add_argument("--ics", type=int, default=4, help="initial conditions per system (default 4)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per system before it is skipped")
    p.add_argument("--rel-tol", type=float, default=0.2, help="relative disagreement threshold (default 0.2)")
    p.add_argument("--json-out", help="write all rows as JSON here")
    p.add_argument("--md-out", help="write the markdown table here")
    args = p.parse_args()

    import torch

    from dsrecon.analysis import markdown_table, recompute_reference_spectra
    from dsrecon.systems import get, list_systems

    torch.set_num_threads(1)
    names = args.names or [n for n in list_systems(kind="flow") if not get(n).is_delay]
    rows = []
    t_start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.budget)
        try:
            row = recompute_reference_spectra([name], n_steps=args.steps, transient=args.transient,
                                              n_initial_conditions=args.ics, rel_tol=args.rel_tol, seed=0)[0]
        except _Timeout:
            sysm = get(name)
            row = {"name": name, "dim": sysm.dim, "dysts_max": sysm.maximum_lyapunov_estimated,
                   "dysts_spectrum": None if sysm.lyapunov_spectrum is None else sysm.lyapunov_spectrum.tolist(),
                   "exponents": None, "error": f"skipped: over the {args.budget:g} s budget", "disagrees": None,
                   "reasons": [], "seconds": time.perf_counter() - t0}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rows.append(row)
        status = "FAIL" if row.get("error") else ("DISAGREE" if row["disagrees"] else "ok")
        lam = "-" if row.get("exponents") is None else f"{row['exponents'][0]:.4g}"
        print(f"[{i + 1}/{len(names)}] {name:<28} {status:<8} lambda_max {lam:>10}  dysts {row['dysts_max']}  "
              f"({row['seconds']:.1f} s)", flush=True)
    total = time.perf_counter() - t_start
    table = markdown_table(rows)
    n_dis = sum(bool(r.get("disagrees")) for r in rows)
    n_fail = sum(bool(r.get("error")) for r in rows)
    print()
    print(f"machine: {platform.machine()} {platform.system()}; {len(rows)} flows, {args.steps} steps x {args.ics} ICs "
          f"each, {total:.0f} s total")
    print(f"{n_dis} disagree with dysts' metadata (> {100 * args.rel_tol:.0f}% on lambda_max or sign), "
          f"{n_fail} failed or skipped, {len(rows) - n_dis - n_fail} agree")
    print()
    print(table)
    if args.md_out:
        with open(args.md_out, "w") as fh:
            fh.write(table + "\n")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
