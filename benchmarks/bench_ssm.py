"""Speed of the SSM training paths against their sequential references, measured side by side.

1. Selective SSM (Mamba, Gu & Dao 2023), forward + backward, B=8, T=2048, D=16:
   the blocked log-depth parallel scan (``selective_scan(method="parallel")``) vs the sequential
   loop (``selective_scan_ref``, a Python loop over t differentiated by autograd), both for the
   scan operator alone (D=16 channels, state size S=16) and for a whole Mamba block of width
   d_model=16 (inner width ED=32, S=16, conv width 4). Target: >= 20x.
2. LSSL (Gu et al. 2021), forward + backward of a teacher-forced window, T=4096: convolutional
   mode (Krylov kernel by repeated squaring + FFT convolution, ``forward_window``) vs recurrent
   mode (the protocol loop ``step(force(z, x_t, 1))``, ``protocol_window``). Target: >= 10x.

Times are the best of ``--repeats`` runs after one warm-up; the ratio is reference / fast.

Usage::

    python benchmarks/bench_ssm.py                 # full sizes (CPU: about 1-2 minutes)
    python benchmarks/bench_ssm.py --quick         # T divided by 4
    python benchmarks/bench_ssm.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dsrecon.models import build
from dsrecon.models.mamba import MambaBlock
from dsrecon.models.scan import selective_scan, selective_scan_ref


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def report(label: str, fast: float, ref: float, fast_name: str, ref_name: str, target: float) -> None:
    ratio = ref / fast
    mark = "meets" if ratio >= target else "below"
    print(f"{label}\n  {fast_name:<34s} {fast * 1e3:10.1f} ms\n  {ref_name:<34s} {ref * 1e3:10.1f} ms\n"
          f"  ratio {ratio:6.1f}x  ({mark} the {target:g}x target)")


def bench_scan_op(B: int, T: int, D: int, S: int, device: torch.device, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(B, T, D, generator=g)
    delta = torch.rand(B, T, D, generator=g) * 0.1 + 1e-3
    A = -torch.arange(1, S + 1, dtype=torch.float32).repeat(D, 1)
    Bm, C = torch.randn(B, T, S, generator=g), torch.randn(B, T, S, generator=g)
    Dskip = torch.ones(D)
    ins = [t.to(device).requires_grad_() for t in (u, delta, A, Bm, C, Dskip)]

    def run(fn):
        def go():
            for t in ins:
                t.grad = None
            y, _ = fn(*ins)
            y.pow(2).mean().backward()
        return go

    fast = best_time(run(lambda *a: selective_scan(*a, method="parallel")), device, repeats)
    ref = best_time(run(selective_scan_ref), device, repeats)
    report(f"[1a] selective scan op, fwd+bwd, B={B} T={T} D={D} S={S}", fast, ref,
           "parallel (blocked log-depth scan)", "sequential loop (autograd)", 20)


def bench_mamba_block(B: int, T: int, D: int, S: int, device: torch.device, repeats: int) -> None:
    torch.manual_seed(0)
    blk = MambaBlock(D, S, 2, 4, max(1, -(-D // 16)), 1e-3, 1e-1).to(device)
    u = torch.randn(B, T, D, device=device)

    def run(method):
        def go():
            blk.zero_grad()
            out, _, _ = blk.forward_seq(u, method=method)
            out.pow(2).mean().backward()
        return go

    fast = best_time(run("parallel"), device, repeats)
    ref = best_time(run("sequential"), device, repeats)
    report(f"[1b] Mamba block, fwd+bwd, B={B} T={T} d_model={D} (ED={2 * D}) S={S}", fast, ref,
           "parallel scan", "sequential loop", 20)


def bench_lssl(B: int, T: int, device: torch.device, repeats: int) -> None:
    m = build("lssl", obs_dim=3, latent_dim=None, seed=0, d_model=16, d_state=16, n_layers=2, device=device)
    x = (torch.randn(B, T + 1, 3).cumsum(1) * 0.05).to(device)
    ones = torch.ones(T, device=device)

    def run(fn):
        def go():
            m.zero_grad()
            fn().pow(2).mean().backward()
        return go

    fast = best_time(run(lambda: m.forward_window(x)), device, repeats)
    ref = best_time(run(lambda: m.protocol_window(x, ones)), device, max(1, repeats // 2))
    report(f"[2] LSSL window (2 layers, D=16, S=16), fwd+bwd, B={B} T={T}", fast, ref,
           "convolutional mode (kernel + FFT)", "recurrent mode (protocol loop)", 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="divide the sequence lengths by 4")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    div = 4 if args.quick else 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"bench_ssm: torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"best of {args.repeats}{', QUICK sizes' if args.quick else ''}")
    bench_scan_op(8, 2048 // div, 16, 16, device, args.repeats)
    bench_mamba_block(8, 2048 // div, 16, 16, device, args.repeats)
    bench_lssl(8, 4096 // div, device, args.repeats)


if __name__ == "__main__":
    main()
