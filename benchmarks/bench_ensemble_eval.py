"""Periodic evaluation of a K-member ensemble: one vectorised generation pass vs K model loops.

The trainer scores every member every ``eval_every`` epochs: generate ``eval_steps`` free-running
steps from the first validation point, then D_stsp and D_H against the validation series.
Reference (named, run side by side): each member's own ``DynamicalModel.generate`` (a Python
loop over the steps) + the metrics, i.e. :func:`dsrecon.training.inputs.evaluate_generated` per
member, as the trainer did before session 4. Ours: :meth:`EnsembleEngine.evaluate` (all K members
in one forced-rollout pass with alpha = 0 through the stacked form, fused kernels on CPU).

Usage: ``python benchmarks/bench_ensemble_eval.py [--K 8 32] [--steps 50000] [--threads 1]``.
Models: AL-RNN M=20, P=2 (N=3) at their initialisation, weights perturbed so that the ReLUs switch
(timing does not depend on the dynamics); float32 as in training.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from dsrecon.models import build
from dsrecon.training import TrainConfig
from dsrecon.training.ensemble import EnsembleEngine
from dsrecon.training.inputs import evaluate_generated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t = np.arange(args.steps)[:, None]
    val = np.sin(0.07 * t + np.arange(3)[None]) + 0.1 * np.cos(0.31 * t)  # a (steps, 3) series to score
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s); "
          f"AL-RNN M=20 P=2, {args.steps} steps per member")
    print(f"{'K':>4} {'per-member loops (ref)':>24} {'vectorised':>12} {'ratio':>8}")
    for K in args.K:
        models = [build("alrnn", obs_dim=3, latent_dim=20, n_pwl=2, seed=s) for s in range(K)]
        for m in models:
            with torch.no_grad():
                m.W.add_(0.05 * torch.randn_like(m.W))
        eng = EnsembleEngine(models, TrainConfig(), torch.device("cpu"), torch.float32)
        eng.evaluate(val, 1000, 20.0)  # warm-up (numba compilation)
        t0 = time.perf_counter()
        eng.evaluate(val, args.steps, 20.0)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(K):
            evaluate_generated(eng.member(k), val, args.steps, 20.0)
        ref = time.perf_counter() - t0
        print(f"{K:>4} {ref:>22.2f} s {ours:>10.2f} s {ref / ours:>7.1f}x", flush=True)


if __name__ == "__main__":
    main()
