"""Benchmark: dsrecon's batched integrator against dysts' own ``make_trajectory``.

Run:  python benchmarks/bench_integrator.py            (about 1-3 minutes, dominated by dysts)
      python benchmarks/bench_integrator.py --device cuda   (batched part on a GPU as well)

What it measures, in one run on one machine:

1. The same Lorenz trajectory, 2000 points at 100 points per period from dysts' default initial
   condition: dysts 0.96 ``Lorenz().make_trajectory(2000)`` with all its defaults (Radau,
   rtol = atol = 1e-12, resample to 100 points per period: sample times
   ``linspace(0, period * 2000 / 100, 2000)``, no transient, no standardisation, dysts' stored
   parameters incl. beta = 2.667) versus ``dsrecon.systems.simulate`` on exactly that grid with the
   same parameters (DOP853 with dense output, rtol = atol = 1e-11). Printed: the first index
   where the two differ by more than 1e-3 (max over coordinates), wall times, and the ratio.
   Chaos amplifies any difference by ~e^(0.9 t), so agreement ends near index 1060 however
   tight our tolerance is: that is the accuracy of dysts' Radau solution.
2. Ours for 1000 initial conditions at once (2000 points each; states sampled on the attractor).
3. A sweep over all 135 flows (``--sweep-steps`` points each at 100 points per period, default
   settings): how many integrate cleanly, the total time, the slowest systems.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np


def first_difference(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> int:
    """First index where max_i |a_ti - b_ti| > tol (len(a) if never)."""
    d = np.abs(a - b).max(axis=-1)
    bad = np.nonzero(~(d <= tol))[0]
    return int(bad[0]) if bad.size else len(a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="points of the Lorenz trajectory (default 2000)")
    p.add_argument("--batch", type=int, default=1000, help="initial conditions for the batched run")
    p.add_argument("--sweep-steps", type=int, default=1000, help="points per flow in the sweep")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--device", default=None, help="also time the batched run with torch on this device")
    args = p.parse_args()
    warnings.simplefilter("ignore")

    import dysts.flows
    import torch

    import dsrecon.systems as S

    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"torch {torch.__version__}, 1 thread")
    rtol = atol = 1e-11
    n, ppp = args.n, 100

    # ---------------------------------------------------------------- 1. dysts vs ours
    ref_model = dysts.flows.Lorenz()
    params = dict(ref_model.params)  # dysts' stored values (beta = 2.667)
    system = S.get("Lorenz")
    grid = S.dysts_time_grid(system, n, ppp)
    dt = grid[1] - grid[0]
    t0 = time.perf_counter()
    ours_cold = S.simulate("Lorenz", n, dt=dt, params=params, rtol=rtol, atol=atol, cache=False)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = S.simulate("Lorenz", n, dt=dt, params=params, rtol=rtol, atol=atol, cache=False)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = ref_model.make_trajectory(n)
    t_dysts = time.perf_counter() - t0
    assert np.array_equal(ours.values, ours_cold.values)
    idx = first_difference(ours.values[0], theirs)
    print(f"\n[1] Lorenz, {n} points at {ppp} points/period (dt = {dt:.6g}), params {params}")
    print(f"    dysts make_trajectory (Radau, rtol=atol=1e-12): {t_dysts:8.3f} s")
    print(f"    dsrecon simulate (DOP853, rtol=atol={rtol:g}):  {t_ours:8.3f} s warm, {t_cold:.3f} s first call")
    print(f"    first index with |difference| > 1e-3: {idx} (target >= 1000); "
          f"max difference over the first 1000 points: {np.abs(ours.values[0, :1000] - theirs[:1000]).max():.2e}")
    print(f"    speed-up: {t_dysts / t_ours:.1f}x (warm), {t_dysts / t_cold:.1f}x (first call); target >= 100x")

    # ---------------------------------------------------------------- 2. batched
    pool = S.simulate("Lorenz", 1, n_trajectories=args.batch, ic="attractor", seed=0, params=params, cache=False)
    x0 = np.asarray(pool.meta["initial_conditions"])
    t0 = time.perf_counter()
    batch = S.simulate("Lorenz", n, dt=dt, ic=x0, params=params, rtol=rtol, atol=atol, cache=False)
    t_batch = time.perf_counter() - t0
    print(f"\n[2] {args.batch} Lorenz initial conditions x {n} points at once (NumPy, same tolerances): "
          f"{t_batch:.2f} s = {1e3 * t_batch / args.batch:.2f} ms per trajectory "
          f"({t_ours / (t_batch / args.batch):.0f}x less per trajectory than one at a time; "
          f"{t_dysts * args.batch / t_batch:.0f}x dysts' time for one trajectory each); "
          f"failed: {int(batch.failed.sum())}")
    devices = ["cpu"] + ([args.device] if args.device and args.device != "cpu" else [])
    for dev in devices:
        S.simulate("Lorenz", 10, dt=dt, ic=x0[:8], params=params, cache=False, device=dev)  # warm-up
        t0 = time.perf_counter()
        tb = S.simulate("Lorenz", n, dt=dt, ic=x0, params=params, rtol=rtol, atol=atol, cache=False, device=dev)
        el = time.perf_counter() - t0
        diff = np.nanmax(np.abs(tb.values[:, :500] - batch.values[:, :500]))
        print(f"    torch on {dev}: {el:.2f} s (max |torch - numpy| over the first 500 points: {diff:.1e})")

    # ---------------------------------------------------------------- 3. sweep
    if args.skip_sweep:
        return
    names = S.list_systems("flow")
    times, bad = {}, {}
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            tr = S.simulate(name, args.sweep_steps, cache=False, max_time=300)
            if tr.failed.any() or not np.isfinite(tr.values).all():
                bad[name] = tr.meta["failures"][0] or "non-finite values"
        except Exception as exc:  # noqa: BLE001 - report, keep sweeping
            bad[name] = f"{type(exc).__name__}: {exc}"
        times[name] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    slow = sorted(times.items(), key=lambda kv: -kv[1])[:5]
    print(f"\n[3] sweep over all {len(names)} flows, {args.sweep_steps} points each at 100 points/period:")
    print(f"    integrated cleanly: {len(names) - len(bad)} / {len(names)}, total {total:.1f} s "
          f"(median {np.median(list(times.values())):.2f} s per system, first calls incl. probing)")
    print("    slowest: " + ", ".join(f"{k} {v:.1f} s" for k, v in slow))
    for k, v in bad.items():
        print(f"    FAILED {k}: {v}")


if __name__ == "__main__":
    main()
