"""Training throughput of AL-RNN ensembles through the public trainer, per device.

What a user gets from ``dsrecon.training.fit_ensemble(..., device=...)``: seconds per epoch and
aggregate sequence-steps trained per second (K * batches_per_epoch * batch * seq_len per epoch)
for the issue-4 AL-RNN configuration (M = 20, P = 2, N = 3, STF tau = 16, batch 16 x 200 steps,
50 batches per epoch), for ensembles of K members trained in one vectorised pass.

Reference (named, measured in the same run on the same machine): ``cpu`` -- the CPU path of the
trainer (fused numba forward + hand-written BPTT), K = 16. Each other row prints its aggregate
throughput as a ratio against it. On a CUDA device the trainer runs the plain autograd rollout
over stacked parameters (the fused kernels are CPU-only), so what grows with K there is the
work per kernel launch, not the number of launches. ``--graphs`` adds, for every CUDA row, a row
with the opt-in CUDA-graph replay of the rollout (``DSRECON_CUDA_GRAPHS=1``,
:mod:`dsrecon.training.cuda_rollout`) side by side with the default eager rollout.

Usage::

    python benchmarks/bench_training_device.py                       # cpu only
    python benchmarks/bench_training_device.py --devices cpu cuda --K 16 128 1024
    python benchmarks/bench_training_device.py --devices cuda --K 16 128 --graphs

Timing: ``--epochs`` epochs per row with periodic evaluation switched off; the first epoch
(numba compilation, CUDA context, allocator warm-up) and the last (the trainer's final evaluation
of every member) are not timed; the mean of the epochs between is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import lorenz_data  # noqa: E402

from dsrecon.training import TrainConfig, fit_ensemble  # noqa: E402


def time_row(data: np.ndarray, device: str, K: int, epochs: int, batches: int) -> tuple[float, float]:
    """Seconds per epoch (mean over epochs 2..E) and aggregate sequence-steps per second."""
    cfg = TrainConfig(epochs=epochs, batches_per_epoch=batches, batch_size=16, seq_len=200,
                      forcing="stf", tau=16, lr=1e-3, lr_end=1e-5, lambda_reg=0.0, input_noise=0.05,
                      eval_every=10 ** 9, eval_steps=1000, checkpoint_every=10 ** 9, seed=0)
    stamps: list[float] = []

    def tick(_rows) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    fit_ensemble("alrnn", data, cfg, n_members=K, latent_dim=20, model_hyper={"n_pwl": 2},
                 device=device, callback=tick)
    if len(stamps) < 3:
        raise RuntimeError(f"expected {epochs} epoch callbacks, got {len(stamps)}")
    # epochs 2 .. E-1: the first is warm-up, the last also runs the final evaluation
    per_epoch = (stamps[-2] - stamps[0]) / (len(stamps) - 2)
    steps = K * batches * 16 * 200
    return per_epoch, steps / per_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", nargs="+", default=["cpu"], help="devices to time (default: cpu)")
    ap.add_argument("--K", type=int, nargs="+", default=[16], help="ensemble sizes (default: 16)")
    ap.add_argument("--epochs", type=int, default=5,
                    help="epochs per row; the first (warm-up) and the last (final evaluation) are not timed")
    ap.add_argument("--batches", type=int, default=50, help="batches per epoch (default 50)")
    ap.add_argument("--graphs", action="store_true",
                    help="CUDA rows also with the opt-in CUDA-graph rollout (DSRECON_CUDA_GRAPHS=1)")
    args = ap.parse_args()
    if args.epochs < 3:
        ap.error("--epochs must be >= 3 (the first epoch is warm-up, the last runs the final evaluation)")

    data = lorenz_data(20000).numpy()
    cpu_name = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, CPU {cpu_name}, {torch.get_num_threads()} threads")
    if any(d.startswith("cuda") for d in args.devices):
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    print("AL-RNN M=20 P=2 N=3, STF tau=16, batch 16 x 200, "
          f"{args.batches} batches/epoch, {args.epochs - 2} timed epochs\n")

    ref_s, ref_rate = time_row(data, "cpu", 16, args.epochs, args.batches)
    print(f"{'device':>12} {'K':>6} {'s/epoch':>10} {'steps/s':>12} {'vs cpu K=16':>12}")
    print(f"{'cpu':>12} {16:>6} {ref_s:>10.3f} {ref_rate:>12.3e} {'1.00x (ref)':>12}", flush=True)
    for device in args.devices:
        modes = ["eager", "graphs"] if device.startswith("cuda") and args.graphs else [None]
        for K in args.K:
            if device == "cpu" and K == 16:
                continue
            for mode in modes:
                if mode is not None:
                    os.environ["DSRECON_CUDA_GRAPHS"] = "1" if mode == "graphs" else "0"
                s, rate = time_row(data, device, K, args.epochs, args.batches)
                label = device if mode is None else f"{device}:{mode}"
                print(f"{label:>12} {K:>6} {s:>10.3f} {rate:>12.3e} {rate / ref_rate:>11.2f}x", flush=True)
    os.environ.pop("DSRECON_CUDA_GRAPHS", None)


if __name__ == "__main__":
    main()
