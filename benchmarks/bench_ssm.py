"""Speed of the SSM training paths against their sequential references, measured side by side.

1. Selective SSM (Mamba, Gu & Dao 2023), forward + backward, B=8, T=2048, D=16, float32.
   Reference: ``selective_scan_ref``, a Python loop over t (``unbind`` per step) differentiated
   by autograd. Fast paths, each timed in the same run and divided into the reference:

   * "blelloch": the previous pure-PyTorch path, blocks of 128 steps each scanned by the
     log-depth (Blelloch) kernel, ``selective_scan(method="blelloch")``;
   * "parallel": the pure-PyTorch chunked scan (all chunks of 16 steps advanced together,
     carries between chunks, analytic backward), ``selective_scan(method="parallel")`` - the
     device-agnostic path (GPU without mamba-ssm);
   * "closed": the closed-form chunked scan (time innermost, in-chunk sums as triangular
     GEMMs, exactness guard), ``selective_scan(method="closed")``;
   * "numba": the compiled CPU kernel with hand-written backward,
     ``selective_scan(method="numba")`` - what ``method="auto"`` takes for CPU float32/64
     (printed only where numba imports and the device is the CPU).

   Both for the scan operator alone ([1a]: ED=16 channels, state size S=16) and for a whole
   Mamba block of width d_model=16 ([1b]: inner width ED=32, S=16, conv width 4; the rest of
   the block is the same code for every path). Target: >= 20x.
2. LSSL (Gu et al. 2021), forward + backward of a teacher-forced window, T=4096: convolutional
   mode (Krylov kernel by repeated squaring + FFT convolution, ``forward_window``) vs recurrent
   mode (the protocol loop ``step(force(z, x_t, 1))``, ``protocol_window``). Target: >= 10x.

Timing: after one warm-up call of each (numba compiles or loads its cache there), the methods
of a comparison run in turn, ``--repeats`` rounds, and each keeps its best (minimum) time, so
that load changes on a shared machine hit all of them alike. Wall-clock time decides the
ratio; the process CPU time is printed beside it (with ``--threads 1`` it is the work done,
without the time spent waiting for a core on a loaded machine).

Usage::

    python benchmarks/bench_ssm.py --threads 1      # full sizes (CPU: about 1-2 minutes)
    python benchmarks/bench_ssm.py --quick          # T divided by 4
    python benchmarks/bench_ssm.py --sections 1a    # the scan operator only
    python benchmarks/bench_ssm.py --device cuda    # on a GPU (parallel vs reference)
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dsrecon.models import build
from dsrecon.models.mamba import MambaBlock
from dsrecon.models.scan import cpu_kernel_available, selective_scan, selective_scan_ref


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(fns: dict, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """{name: fn} -> {name: (best wall s, best CPU s)}; warm-up, then interleaved rounds."""
    for fn in fns.values():
        fn()
    _sync(device)
    best = {name: [float("inf"), float("inf")] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best[name][0], best[name][1] = min(best[name][0], w), min(best[name][1], c)
    return {name: (w, c) for name, (w, c) in best.items()}


def report(label: str, times: dict, ref: str, names: dict[str, str], target: float) -> None:
    """Print the reference and every fast path with its ratio (wall; CPU in brackets)."""
    rw, rc = times[ref]
    print(label)
    print(f"  {names[ref]:<44s} {rw * 1e3:9.1f} ms  (CPU {rc * 1e3:8.1f} ms)   reference")
    for key, (w, c) in times.items():
        if key == ref:
            continue
        mark = "meets" if rw / w >= target else "below"
        print(f"  {names[key]:<44s} {w * 1e3:9.1f} ms  (CPU {c * 1e3:8.1f} ms)   "
              f"ratio {rw / w:6.1f}x (CPU {rc / c:5.1f}x)  {mark} the {target:g}x target")


def _paths(device: torch.device) -> dict[str, str]:
    paths = {"sequential": "sequential loop (autograd)", "blelloch": "blelloch (blocked log-depth scan, old)",
             "parallel": "parallel (chunked scan, pure PyTorch)",
             "closed": "closed (closed-form chunks, pure PyTorch)"}
    if device.type == "cpu" and cpu_kernel_available():
        paths["numba"] = "numba (compiled CPU kernel)"
    return paths


def bench_scan_op(B: int, T: int, D: int, S: int, device: torch.device, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(B, T, D, generator=g)
    delta = torch.rand(B, T, D, generator=g) * 0.1 + 1e-3
    A = -torch.arange(1, S + 1, dtype=torch.float32).repeat(D, 1)
    Bm, C = torch.randn(B, T, S, generator=g), torch.randn(B, T, S, generator=g)
    Dskip = torch.ones(D)
    ins = [t.to(device).requires_grad_() for t in (u, delta, A, Bm, C, Dskip)]

    def run(method):
        def go():
            for t in ins:
                t.grad = None
            if method == "sequential":
                y, _ = selective_scan_ref(*ins)
            else:
                y, _ = selective_scan(*ins, method=method)
            y.pow(2).mean().backward()
        return go

    paths = _paths(device)
    times = compare({m: run(m) for m in paths}, device, repeats)
    report(f"[1a] selective scan op, fwd+bwd, B={B} T={T} D={D} S={S}", times, "sequential", paths, 20)


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

    paths = _paths(device)
    times = compare({m: run(m) for m in paths}, device, repeats)
    report(f"[1b] Mamba block, fwd+bwd, B={B} T={T} d_model={D} (ED={2 * D}) S={S}", times, "sequential", paths, 20)


def bench_lssl(B: int, T: int, device: torch.device, repeats: int) -> None:
    m = build("lssl", obs_dim=3, latent_dim=None, seed=0, d_model=16, d_state=16, n_layers=2, device=device)
    x = (torch.randn(B, T + 1, 3).cumsum(1) * 0.05).to(device)
    ones = torch.ones(T, device=device)

    def run(fn):
        def go():
            m.zero_grad()
            fn().pow(2).mean().backward()
        return go

    names = {"recurrent": "recurrent mode (protocol loop)", "conv": "convolutional mode (kernel + FFT)"}
    times = compare({"recurrent": run(lambda: m.protocol_window(x, ones)),
                     "conv": run(lambda: m.forward_window(x))}, device, max(1, repeats // 2))
    report(f"[2] LSSL window (2 layers, D=16, S=16), fwd+bwd, B={B} T={T}", times, "recurrent", names, 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="divide the sequence lengths by 4")
    ap.add_argument("--sections", nargs="+", default=["1a", "1b", "2"], choices=["1a", "1b", "2"],
                    help="which comparisons to run (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    div = 4 if args.quick else 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"bench_ssm: torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"best of {args.repeats} interleaved rounds{', QUICK sizes' if args.quick else ''}")
    if "1a" in args.sections:
        bench_scan_op(8, 2048 // div, 16, 16, device, args.repeats)
    if "1b" in args.sections:
        bench_mamba_block(8, 2048 // div, 16, 16, device, args.repeats)
    if "2" in args.sections:
        bench_lssl(8, 4096 // div, device, args.repeats)


if __name__ == "__main__":
    main()
