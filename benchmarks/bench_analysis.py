"""Benchmark: SCYFI vs exhaustive enumeration, and the Lyapunov-spectrum fast path vs torch.

Run:  python benchmarks/bench_analysis.py                 (about 2-4 minutes on 2 CPU cores)
      python benchmarks/bench_analysis.py --sizes 8 10 12 14 16 --models 5 --torch-steps 10000

What it measures, in one run on one machine:

1. **Fixed points of random PLRNNs** (registry ``plrnn``, M = 8 ... 16; A ~ U(0, 0.5),
   W ~ N(0, 16/M) off-diagonal, h ~ N(-1, 0.3^2): a regime with several fixed points per model).
   Reference: exhaustive enumeration of all 2^M regions (one batched LAPACK solve per 8192 regions,
   :func:`dsrecon.analysis.enumerate_cycles`) -- complete by construction. Contender: SCYFI with its
   default budget (:func:`dsrecon.analysis.scyfi`, region pool from trajectories included in its
   time). Printed per M: fixed points found by each (summed over the models), models where SCYFI
   found the complete set, median wall time of each and the ratio exhaustive / SCYFI.
2. **Lyapunov spectrum of a clipped shPLRNN** (M = 3, L = 100, random parameters in a chaotic
   regime, lambda_1 ~ +0.25 per step) for 10^5 steps, 1 and 64 initial conditions at once: the compiled numba kernel
   (:mod:`dsrecon.analysis.lyapunov_pwl`, compile time excluded and printed separately) against the
   generic torch loop (``method="torch"``, the reference path; timed over ``--torch-steps`` steps
   and scaled to 10^5). Time per 10^5 steps and the ratio.
"""

from __future__ import annotations

import argparse
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


def bench_fixed_points(sizes: list[int], n_models: int) -> None:
    from dsrecon.analysis import enumerate_cycles, make_view, scyfi

    print("1. fixed points of random PLRNNs: SCYFI (default budget) vs exhaustive enumeration")
    print(f"   {'M':>3} {'regions':>8} {'FPs exh':>8} {'FPs scyfi':>9} {'complete':>9} "
          f"{'t exh [ms]':>11} {'t scyfi [ms]':>13} {'exh/scyfi':>10}")
    for M in sizes:
        n_ex = n_sc = complete = 0
        t_ex, t_sc = [], []
        for s in range(n_models):
            view = make_view(random_plrnn(M, 1000 * M + s))
            t0 = time.perf_counter()
            ex = enumerate_cycles(view, 1)
            t_ex.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sc = scyfi(view, 1, seed=s)
            t_sc.append(time.perf_counter() - t0)
            n_ex, n_sc = n_ex + len(ex), n_sc + len(sc)
            complete += same_set(sc, ex)
        me, ms = statistics.median(t_ex), statistics.median(t_sc)
        print(f"   {M:>3} {2**M:>8} {n_ex:>8} {n_sc:>9} {complete:>4}/{n_models:<4} "
              f"{1e3 * me:>11.1f} {1e3 * ms:>13.1f} {me / ms:>10.2f}")


def bench_lyapunov(torch_steps: int) -> None:
    from dsrecon.analysis import lyapunov_spectrum
    from dsrecon.models import build

    m = build("clipped-shplrnn", obs_dim=3, latent_dim=3, hidden_dim=100, seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a chaotic regime: lambda_1 ~ +0.25 per step
        m.A.copy_(torch.rand(3, generator=g) * 0.6)
        m.W1.copy_(torch.randn(3, 100, generator=g) * 8.0 / 10.0)
        m.W2.copy_(torch.randn(100, 3, generator=g) * 2.0 / 3**0.5)
        m.h2.copy_(torch.randn(100, generator=g))
        m.h1.copy_(torch.randn(3, generator=g) * 0.1)
    n = 100_000
    t0 = time.perf_counter()
    lyapunov_spectrum(m, n_steps=10, transient=0, method="numba")
    compile_s = time.perf_counter() - t0
    print(f"2. Lyapunov spectrum, clipped shPLRNN M=3 L=100, time per 10^5 steps "
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 12, 14, 16], help="latent sizes M")
    p.add_argument("--models", type=int, default=5, help="random models per size (default 5)")
    p.add_argument("--torch-steps", type=int, default=10_000, help="steps timed for the torch reference")
    p.add_argument("--skip-fixed-points", action="store_true")
    p.add_argument("--skip-lyapunov", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, torch {torch.__version__}, "
          f"torch threads 1")
    if not args.skip_fixed_points:
        bench_fixed_points(args.sizes, args.models)
    if not args.skip_lyapunov:
        bench_lyapunov(args.torch_steps)


if __name__ == "__main__":
    main()
