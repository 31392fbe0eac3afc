"""Leading Lyapunov exponents of a high-dimensional model: JVP tangents vs the full Jacobian.

Reference (named, run side by side): the QR loop with the full tangent frame and the model's
autograd Jacobian (``DynamicalModel.jacobian``: M reverse-mode passes per step) -- what
``lyapunov_spectrum`` did for models without an analytic Jacobian before session 4. Ours:
``lyapunov_spectrum(..., n_exponents=k)`` (k forward-mode JVPs per step, :mod:`dsrecon.analysis.
lyapunov_tangent`). Both time the per-step cost of the tangent loop (float64, B initial
conditions); the full reference runs fewer steps, the ratio is per step.

Usage: ``python benchmarks/bench_lyapunov_partial.py [--model mamba|lssl] [--k 10] [--B 4]``.
Models: Mamba d_model 16, d_state 8, 2 layers (M = 707 with N = 3) / LSSL d_model 32, d_state 16,
2 layers (M = 1027), at their initialisation (the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import time

import torch

from dsrecon.analysis import lyapunov_spectrum
from dsrecon.models import build

MODELS = {"mamba": dict(d_model=16, d_state=8, n_layers=2), "lssl": dict(d_model=32, d_state=16, n_layers=2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="mamba")
    ap.add_argument("--k", type=int, default=10, help="leading exponents (default 10)")
    ap.add_argument("--B", type=int, default=4, help="initial conditions (default 4)")
    ap.add_argument("--full-steps", type=int, default=10, help="steps timed for the full reference")
    ap.add_argument("--steps", type=int, default=200, help="steps timed for the JVP path")
    args = ap.parse_args()
    m = build(args.model, obs_dim=3, latent_dim=None, seed=0, **MODELS[args.model])
    M = m.latent_dim
    kw = dict(transient=0, warmup=0, n_initial_conditions=args.B, seed=0, n_blocks=1)
    lyapunov_spectrum(m, n_steps=2, n_exponents=args.k, **kw)  # warm-up
    t0 = time.perf_counter()
    lyapunov_spectrum(m, n_steps=args.full_steps, **kw)
    full = (time.perf_counter() - t0) / args.full_steps
    t0 = time.perf_counter()
    res = lyapunov_spectrum(m, n_steps=args.steps, n_exponents=args.k, **kw)
    part = (time.perf_counter() - t0) / args.steps
    print(f"{args.model}: M = {M}, B = {args.B}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  full frame, autograd Jacobian (reference): {1e3 * full:9.1f} ms/step")
    print(f"  leading {args.k}, JVP tangents ({res.method}):  {1e3 * part:9.1f} ms/step   ratio {full / part:.1f}x")
    print(f"  20 000 steps: {20000 * full / 60:.1f} min vs {20000 * part / 60:.1f} min")


if __name__ == "__main__":
    main()
