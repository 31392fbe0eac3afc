"""Benchmark: SCYFI vs exhaustive enumeration, and the Lyapunov-spectrum fast paths vs their references.

Run:  python benchmarks/bench_analysis.py                 (about 1-2 minutes on 2 CPU cores)
      python benchmarks/bench_analysis.py --sizes 8 10 12 14 16 18 --models 5 --torch-steps 10000
      python benchmarks/bench_analysis.py --budget-study --models 100 --sizes 10 12 14   (completeness)

What it measures, in one run on one machine (wall time; fixed points: BLAS limited to one thread
so both sides run on one core, best of ``--repeats`` runs per model; Lyapunov: torch on one
thread, the numba kernel parallel over trajectories on all cores):

1. **Fixed points of random PLRNNs** (registry ``plrnn``, M = 8 ... 16; A ~ U(0, 0.5),
   W ~ N(0, 16/M) off-diagonal, h ~ N(-1, 0.3^2): a regime with several fixed points per model).
   Reference: exhaustive enumeration of all 2^M regions (one batched LAPACK solve per 8192 regions,
   :func:`dsrecon.analysis.enumerate_cycles`) -- complete by construction. Contender: SCYFI with its
   default budget and implementation (:func:`dsrecon.analysis.scyfi`: the compiled kernel, region
   pool included in its time). Printed per M: fixed points found by each (summed over the models),
   models where SCYFI found the complete set, candidates SCYFI solved (median), median time of
   each and the ratio exhaustive / SCYFI; the NumPy implementation of SCYFI (``impl="numpy"``,
   the kernel's reference) for comparison.
2. ``--budget-study``: how SCYFI's stopping budget trades completeness. For each model one search
   with ``outer=3000`` records the largest number of fresh starts between two discoveries
   (``max_gap``); the kernel's search is deterministic and only the stopping test depends on
   ``outer``, so the search with budget X finds the complete set iff this one did and
   max_gap <= X. Printed: complete models out of ``--models`` for several budgets.
3. **Lyapunov spectrum of a clipped shPLRNN** (M = 3, L = 100, random parameters in a chaotic
   regime, lambda_1 ~ +0.25 per step) for 10^5 steps, 1 and 64 initial conditions at once: the
   compiled numba kernel (:mod:`dsrecon.analysis.lyapunov_pwl`, compile time excluded and
   printed separately) against the generic torch loop (``method="torch"``, the reference path;
   timed over ``--torch-steps`` steps and scaled to 10^5). Time per 10^5 steps and the ratio.
4. **An ensemble of K = 8 models of that family** (parameter seeds 3-10: chaotic and not), 1 and
   64 initial conditions: the stacked pass (one
   compiled call over K x B trajectories; torch path: ``stack_module_state`` + ``vmap``) against
   the loop over members (``[lyapunov_spectrum(m) for m in members]``), timed over
   ``--ensemble-steps`` steps (torch: ``--torch-steps`` / 10) and scaled to 10^5; the largest
   difference between the two, per exponent and initial condition, on a 20-step run (numba: the
   same kernel, bit-identical; torch: vmap's batched matmuls round differently from the
   per-member ones by ~1 ulp per step for B = 1, which these chaotic orbits (lambda_1 up to 0.76
   per step) amplify: over long runs only the statistics agree). The numba kernel is parallel over trajectories (all cores): with one
   initial condition the loop uses one core per member, the stacked pass all of them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch


def random_plrnn(M: int, seed: int):
    from dsrecon.models import build

    m = build("plrnn", obs_dim=1, latent_dim=M, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.A.copy_(torch.rand(M, generator=g) * 0.5)
        m.W.copy_(torch.randn(M, M, generator=g) * 4.0 / M**0.5)
        m.h.copy_(torch.randn(M, generator=g) * 0.3 - 1.0)
    return m


def same_set(a, b) -> bool:
    return len(a) == len(b) and all(any(np.abs(x.points[0] - y.points[0]).max() < 1e-7 for y in b) for x in a)


def best_of(fn, repeats: int):
    """(min wall time over repeats, last result)."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_fixed_points(sizes: list[int], n_models: int, repeats: int, numpy_max: int) -> None:
    from dsrecon.analysis import enumerate_cycles, make_view, scyfi

    scyfi(make_view(random_plrnn(4, 0)), 1, seed=0)  # numba cache load / compile, excluded
    print("1. fixed points of random PLRNNs: SCYFI (default budget, compiled) vs exhaustive enumeration")
    print(f"   {'M':>3} {'regions':>8} {'FPs exh':>8} {'FPs scyfi':>9} {'complete':>9} {'solves':>7} "
          f"{'t exh [ms]':>11} {'t scyfi [ms]':>13} {'exh/scyfi':>10} {'t numpy-scyfi [ms]':>19}")
    for M in sizes:
        n_ex = n_sc = complete = 0
        t_ex, t_sc, t_np, evals = [], [], [], []
        for s in range(n_models):
            view = make_view(random_plrnn(M, 1000 * M + s))
            t, ex = best_of(lambda: enumerate_cycles(view, 1), repeats if M <= 14 else 1)
            t_ex.append(t)
            st: dict = {}
            t, sc = best_of(lambda: scyfi(view, 1, seed=s, stats=st), repeats)
            t_sc.append(t)
            evals.append(st["n_evaluations"])
            if M <= numpy_max:
                t_np.append(best_of(lambda: scyfi(view, 1, seed=s, impl="numpy"), 1)[0])
            n_ex, n_sc = n_ex + len(ex), n_sc + len(sc)
            complete += same_set(sc, ex)
        me, ms = statistics.median(t_ex), statistics.median(t_sc)
        tnp = f"{1e3 * statistics.median(t_np):>19.1f}" if t_np else f"{'-':>19}"
        print(f"   {M:>3} {2**M:>8} {n_ex:>8} {n_sc:>9} {complete:>4}/{n_models:<4} {int(np.median(evals)):>7} "
              f"{1e3 * me:>11.1f} {1e3 * ms:>13.2f} {me / ms:>10.1f} {tnp}")


def budget_study(sizes: list[int], n_models: int, budgets: tuple[int, ...] = (300, 400, 600, 800, 1000, 2000)) -> None:
    from dsrecon.analysis import enumerate_cycles, make_view, scyfi

    print(f"2. SCYFI budget study: complete fixed-point sets out of {n_models} random PLRNNs per budget `outer`")
    print(f"   {'M':>3} {'complete@3000':>14} " + " ".join(f"{'outer=' + str(b):>11}" for b in budgets)
          + f" {'max_gap p50/p90/max':>20}")
    for M in sizes:
        gaps, ok = [], []
        for s in range(n_models):
            view = make_view(random_plrnn(M, 1000 * M + s))
            st: dict = {}
            sc = scyfi(view, 1, seed=s, outer=3000, stats=st)
            ok.append(same_set(sc, enumerate_cycles(view, 1)))
            gaps.append(st["max_gap"])
        g, c = np.array(gaps), np.array(ok)
        cells = " ".join(f"{int((c & (g <= b)).sum()):>11}" for b in budgets)
        q = np.percentile(g, [50, 90, 100]).astype(int)
        print(f"   {M:>3} {int(c.sum()):>14} {cells} {q[0]:>8}/{q[1]}/{q[2]}")


def chaotic_shplrnn(seed: int = 3):
    from dsrecon.models import build

    m = build("clipped-shplrnn", obs_dim=3, latent_dim=3, hidden_dim=100, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a chaotic regime: lambda_1 ~ +0.25 per step (seed 3)
        m.A.copy_(torch.rand(3, generator=g) * 0.6)
        m.W1.copy_(torch.randn(3, 100, generator=g) * 8.0 / 10.0)
        m.W2.copy_(torch.randn(100, 3, generator=g) * 2.0 / 3**0.5)
        m.h2.copy_(torch.randn(100, generator=g))
        m.h1.copy_(torch.randn(3, generator=g) * 0.1)
    return m


def bench_lyapunov(torch_steps: int) -> None:
    from dsrecon.analysis import lyapunov_spectrum

    m = chaotic_shplrnn()
    n = 100_000
    t0 = time.perf_counter()
    lyapunov_spectrum(m, n_steps=10, transient=0, method="numba")
    compile_s = time.perf_counter() - t0
    print(f"3. Lyapunov spectrum, clipped shPLRNN M=3 L=100, time per 10^5 steps "
          f"(numba compile/cache load {compile_s:.2f} s excluded)")
    print(f"   {'ICs':>4} {'numba [s]':>10} {'torch [s]':>10} {'torch/numba':>12}  lambda (numba)")
    for B in (1, 64):
        t0 = time.perf_counter()
        r = lyapunov_spectrum(m, n_steps=n, transient=1000, n_initial_conditions=B, method="numba", seed=0,
                              warmup=0)
        t_nb = (time.perf_counter() - t0) * n / (n + 1000)
        t0 = time.perf_counter()
        lyapunov_spectrum(m, n_steps=torch_steps, transient=0, n_initial_conditions=B, method="torch", seed=0,
                          warmup=0)
        t_th = (time.perf_counter() - t0) * n / torch_steps
        lam = ", ".join(f"{v:.3f}" for v in r.exponents)
        print(f"   {B:>4} {t_nb:>10.2f} {t_th:>10.2f} {t_th / t_nb:>12.1f}  [{lam}]")


def bench_ensemble(ensemble_steps: int, torch_steps: int, K: int = 8) -> None:
    from dsrecon.analysis import lyapunov_spectrum

    members = [chaotic_shplrnn(3 + k) for k in range(K)]
    lyapunov_spectrum(members[:2], n_steps=10, transient=0, method="torch", warmup=0)  # vmap warm-up
    print(f"4. Lyapunov spectra of an ensemble of K={K} clipped shPLRNNs (M=3, L=100), time per 10^5 steps: "
          "stacked pass vs loop over members")
    print(f"   {'path':>6} {'ICs':>4} {'steps':>6} {'stacked [s]':>12} {'loop [s]':>9} {'loop/stacked':>13} "
          f"{'max|diff| (20 steps)':>21}")
    for method, steps in (("numba", ensemble_steps), ("torch", max(10, torch_steps // 10))):
        for B in (1, 64):
            kw = dict(n_steps=steps, transient=0, n_initial_conditions=B, method=method, seed=0, warmup=0)
            t0 = time.perf_counter()
            stacked = lyapunov_spectrum(members, **kw)
            t_st = (time.perf_counter() - t0) * 100_000 / steps
            t0 = time.perf_counter()
            loop = [lyapunov_spectrum(mm, **kw) for mm in members]
            t_lp = (time.perf_counter() - t0) * 100_000 / steps
            # equality on a short run: over long chaotic runs rounding differences grow like exp(lambda_1 t)
            kw.update(n_steps=20)
            diff = max(float(np.abs(a.all - b.all).max())
                       for a, b in zip(lyapunov_spectrum(members, **kw), [lyapunov_spectrum(mm, **kw) for mm in members]))
            print(f"   {method:>6} {B:>4} {steps:>6} {t_st:>12.2f} {t_lp:>9.2f} {t_lp / t_st:>13.2f} {diff:>21.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 12, 14, 16], help="latent sizes M")
    p.add_argument("--models", type=int, default=5, help="random models per size (default 5)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model, the best counts (default 5)")
    p.add_argument("--numpy-max", type=int, default=12, help="largest M for the NumPy-SCYFI column (default 12)")
    p.add_argument("--torch-steps", type=int, default=10_000, help="steps timed for the torch reference")
    p.add_argument("--ensemble-steps", type=int, default=5_000, help="steps timed for the ensemble comparison")
    p.add_argument("--budget-study", action="store_true", help="only the SCYFI budget study (section 2)")
    p.add_argument("--skip-fixed-points", action="store_true")
    p.add_argument("--skip-lyapunov", action="store_true")
    args = p.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch {torch.__version__}, torch/BLAS threads 1")
    with threadpool_limits(1):
        if args.budget_study:
            budget_study(args.sizes, args.models)
            return
        if not args.skip_fixed_points:
            bench_fixed_points(args.sizes, args.models, args.repeats, args.numpy_max)
    if not args.skip_lyapunov:
        bench_lyapunov(args.torch_steps)
        bench_ensemble(args.ensemble_steps, args.torch_steps)


if __name__ == "__main__":
    main()
