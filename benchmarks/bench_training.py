"""Training throughput of the PLRNN family: fused kernels vs a plain eager PyTorch loop.

Issue 4 ("Speed"): on CPU, small recurrent models are bound by per-step overhead. This script
measures, side by side in one run, sequence-steps trained per second
(= batch * seq_len * batches / time) for a full optimiser step (forward, MSE loss, backward,
RAdam step) of

* ``eager``   - the reference: a plain eager PyTorch loop written here (model step in torch ops,
  Python loop over time, autograd), one model;
* ``fused``   - :func:`dsrecon.training.fused.fused_forced_rollout` (numba forward + hand-written
  BPTT), one model (K = 1);
* ``fused K`` - the same for a K-member ensemble trained in one vectorised pass; its aggregate
  throughput counts K * batch * seq_len steps per optimiser step and is compared with K
  sequential eager models (eager per-model time x K, extrapolated from the measured eager run);
* ``eager K`` - for context: the eager loop vectorised over the K members (stacked parameters).

Configurations (DESIGN.md section 3 / issue 4):
* AL-RNN M=20, P=2, N=3, batch 16, seq_len 200, sparse teacher forcing tau=16;
* clipped shPLRNN M=3, L=100, N=3, batch 16, seq_len 200, GTF alpha=0.1;
* clipped shPLRNN M=3, L=100, adaptive GTF (the paper configuration, Hess et al. 2023): every 5
  optimiser steps each model/member gets kappa from its own Jacobians at the batch's data states
  and updates its own alpha (:class:`dsrecon.training.forcing.AdaptiveGTF`; this cost is timed on
  every path). The members' alphas differ after the first update, so the ensemble passes alpha
  (K, T) to the fused rollout: ``fused K`` is one kernel call for all members, ``fused K split``
  the former fallback (one kernel call per member), for context.

Data: a standardised Lorenz-63 trajectory (RK4, dt=0.01) with windows at random start points.

Usage: ``python benchmarks/bench_training.py [--batches 20] [--eager-batches 5] [--rounds 3]
[--threads 1] [--fused-threads 1] [--K 16] [--configs alrnn,clipped,clipped-agtf]``. ``--threads`` sets torch.set_num_threads for every
path; ``--fused-threads`` the fused kernels' own block threads. Paths are timed in interleaved
rounds and the best round of each is reported (the machine is shared; best-of is the least
noisy), as wall time and as process CPU time (single-threaded paths: the load-robust figure).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dsrecon.training.forcing import AdaptiveGTF, spectral_norms
from dsrecon.training.fused import (fused_forced_rollout, gtf_alpha, set_num_threads,
                                    shallow_jacobian, stf_alpha)


# --------------------------------------------------------------------------------- data
def lorenz_data(n: int = 20000, dt: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Standardised Lorenz-63 trajectory (n, 3), float32 (RK4)."""
    def f(s):
        x, y, z = s
        return np.array([10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z])
    rng = np.random.default_rng(seed)
    s = np.array([1.0, 1.0, 25.0]) + rng.normal(size=3)
    out = np.empty((n + 1000, 3))
    for i in range(n + 1000):
        k1 = f(s); k2 = f(s + 0.5 * dt * k1); k3 = f(s + 0.5 * dt * k2); k4 = f(s + dt * k3)
        s = s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[i] = s
    x = out[1000:]
    return torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)


def batches(data: torch.Tensor, n: int, batch: int, T: int, seed: int):
    """n batches of windows x (batch, T + 1, N) at random start points."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(T + 1)
    for _ in range(n):
        start = torch.randint(0, data.shape[0] - T - 1, (batch,), generator=g)
        yield data[start[:, None] + idx]


# ----------------------------------------------------------------- plain eager reference
class EagerALRNN(torch.nn.Module):
    """AL-RNN z' = A z + W phi(z) + h (phi: relu on the last P units), identity observation of
    the first N units, z0 = [x0; Lx x0]; STF replaces the first N units every tau steps.
    Parameters stacked over K members (K = 1: one model)."""

    def __init__(self, K, M, P, N, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.M, self.P, self.N = M, P, N
        self.A = torch.nn.Parameter(0.9 + 0.05 * torch.rand(K, 1, M, generator=g))
        self.W = torch.nn.Parameter(0.01 * torch.randn(K, M, M, generator=g))
        self.h = torch.nn.Parameter(torch.zeros(K, 1, M))
        self.Lx = torch.nn.Parameter(0.01 * torch.randn(K, M - N, N, generator=g))

    def init_state(self, x0):                                   # (K, B, N) -> (K, B, M)
        return torch.cat([x0, x0 @ self.Lx.transpose(1, 2)], dim=-1)

    def eager_loss(self, x, tau):                               # x (K, B, T+1, N)
        N, M, P = self.N, self.M, self.P
        z = self.init_state(x[:, :, 0])
        preds = []
        for t in range(x.shape[2] - 1):
            if t % tau == 0:
                z = torch.cat([x[:, :, t], z[..., N:]], dim=-1)
            phi = torch.cat([z[..., : M - P], torch.relu(z[..., M - P:])], dim=-1)
            z = self.A * z + phi @ self.W.transpose(1, 2) + self.h
            preds.append(z[..., :N])
        return ((torch.stack(preds, dim=2) - x[:, :, 1:]) ** 2).mean(dim=(1, 2, 3)).sum()

    def fused_loss(self, x, tau):
        K, B, T1, N = x.shape
        M, P = self.M, self.P
        form = {"a": self.A[:, 0], "W1": self.W,
                "W2": torch.eye(M).expand(K, M, M).contiguous(),
                "h1": self.h[:, 0], "h2": torch.zeros(K, M),
                "relu_mask": torch.arange(M) >= M - P, "clipped": False}
        zhat = torch.cat([x[:, :, :-1], x.new_zeros(K, B, T1 - 1, M - N)], dim=-1)
        fmask = (torch.arange(M) < N).float()
        z = fused_forced_rollout(form, self.init_state(x[:, :, 0]), zhat, fmask,
                                 stf_alpha(T1 - 1, tau, dtype=torch.float32))
        return ((z[..., :N] - x[:, :, 1:]) ** 2).mean(dim=(1, 2, 3)).sum()


class EagerClippedSh(torch.nn.Module):
    """Clipped shPLRNN z' = A z + W1 (relu(W2 z + h2) - relu(W2 z)) + h1, M = N, identity
    observation, GTF z <- (1 - alpha) z + alpha x."""

    def __init__(self, K, M, L, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(0.9 + 0.05 * torch.rand(K, 1, M, generator=g))
        self.W1 = torch.nn.Parameter((2 * torch.rand(K, M, L, generator=g) - 1) / L ** 0.5)
        self.W2 = torch.nn.Parameter((2 * torch.rand(K, L, M, generator=g) - 1) / M ** 0.5)
        self.h1 = torch.nn.Parameter(torch.zeros(K, 1, M))
        self.h2 = torch.nn.Parameter((2 * torch.rand(K, 1, L, generator=g) - 1) / L ** 0.5)

    def eager_loss(self, x, alpha):                             # x (K, B, T+1, M)
        z = x[:, :, 0]
        preds = []
        for t in range(x.shape[2] - 1):
            z = (1 - alpha) * z + alpha * x[:, :, t]
            u = z @ self.W2.transpose(1, 2)
            r = torch.relu(u + self.h2) - torch.relu(u)
            z = self.A * z + r @ self.W1.transpose(1, 2) + self.h1
            preds.append(z)
        return ((torch.stack(preds, dim=2) - x[:, :, 1:]) ** 2).mean(dim=(1, 2, 3)).sum()

    def fused_loss(self, x, alpha):
        K, B, T1, M = x.shape
        form = {"a": self.A[:, 0], "W1": self.W1, "W2": self.W2, "h1": self.h1[:, 0],
                "h2": self.h2[:, 0], "relu_mask": torch.ones(self.W2.shape[1], dtype=torch.bool),
                "clipped": True}
        z = fused_forced_rollout(form, x[:, :, 0], x[:, :, :-1], torch.ones(M),
                                 gtf_alpha(T1 - 1, alpha, dtype=torch.float32))
        return ((z - x[:, :, 1:]) ** 2).mean(dim=(1, 2, 3)).sum()

    # per-member alphas (adaptive GTF): alpha is a (K,) tensor, member k forced with alpha[k]
    def form(self):
        return {"a": self.A[:, 0], "W1": self.W1, "W2": self.W2, "h1": self.h1[:, 0],
                "h2": self.h2[:, 0], "relu_mask": torch.ones(self.W2.shape[1], dtype=torch.bool),
                "clipped": True}

    def eager_loss_members(self, x, alpha):                     # the eager loop, alpha (K, 1, 1)
        return self.eager_loss(x, alpha.to(x.dtype)[:, None, None])

    def fused_loss_members(self, x, alpha):                     # one kernel call, alpha (K, T)
        K, B, T1, M = x.shape
        z = fused_forced_rollout(self.form(), x[:, :, 0], x[:, :, :-1], torch.ones(M),
                                 alpha.to(x.dtype)[:, None].expand(K, T1 - 1))
        return ((z - x[:, :, 1:]) ** 2).mean(dim=(1, 2, 3)).sum()

    def fused_loss_split(self, x, alpha):                       # one kernel call per member
        K, B, T1, M = x.shape
        form, parts = self.form(), []
        for k in range(K):
            fk = {n: (v[k:k + 1] if n in ("a", "W1", "W2", "h1", "h2") else v)
                  for n, v in form.items()}
            parts.append(fused_forced_rollout(fk, x[k:k + 1, :, 0], x[k:k + 1, :, :-1],
                                              torch.ones(M), gtf_alpha(T1 - 1, float(alpha[k]),
                                                                       dtype=x.dtype)))
        z = torch.cat(parts)
        return ((z - x[:, :, 1:]) ** 2).mean(dim=(1, 2, 3)).sum()

    @torch.no_grad()
    def kappa(self, x):
        """Adaptive-GTF kappa (K,) of every member at the data states x_1..x_T (K, B, T+1, M):
        max over sequences of the geometric mean over t of ||J(x_t)||_2."""
        K, B, T1, M = x.shape
        form = {n: (v.detach() if isinstance(v, torch.Tensor) else v) for n, v in self.form().items()}
        z = x[:, :, 1:].reshape(K, B * (T1 - 1), M)
        norms = spectral_norms(lambda c: shallow_jacobian(form, c), z).reshape(K, B, T1 - 1)
        return torch.exp(torch.log(norms).mean(dim=2)).max(dim=1).values.numpy()


# ------------------------------------------------------------------------------- timing
class Runner:
    """A model, its RAdam optimiser and its batch stream; ``time(n)`` runs n optimiser steps
    (forward, MSE loss, backward, RAdam step) and returns the seconds they took."""

    def __init__(self, model, loss_name, arg, data, K, batch, T, seed=1):
        self.model, self.arg, self.K, self.batch, self.T = model, arg, K, batch, T
        self.loss_fn = getattr(model, loss_name)
        self.opt = torch.optim.RAdam(model.parameters(), lr=1e-3)
        self.stream = batches(data, 10 ** 9, batch * K, T, seed)

    def time(self, n: int) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of n optimiser steps."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            x = next(self.stream).view(self.K, self.batch, self.T + 1, -1)
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(x, self.arg)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0, time.process_time() - c0


class AdaptiveRunner(Runner):
    """A Runner under adaptive GTF: every ``every`` optimiser steps (before the step, as the
    trainer does) each member's alpha is updated from its own kappa by
    :class:`dsrecon.training.forcing.AdaptiveGTF`; the loss gets the members' alphas (K,).
    The members start from distinct alphas ``alpha0`` (K,), as mid-training (the rule starts
    at 1 and parts them from the first update on)."""

    def __init__(self, model, loss_name, every, alpha0, data, K, batch, T, seed=1):
        super().__init__(model, loss_name, None, data, K, batch, T, seed)
        self.rule, self.step = AdaptiveGTF(1.0, every, 0.999, n_members=K), 0
        self.rule.load_state_dict({"alpha": list(alpha0)})

    def time(self, n: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            x = next(self.stream).view(self.K, self.batch, self.T + 1, -1)
            if self.rule.wants_update(self.step):
                self.rule.update(self.model.kappa(x))
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(x, torch.as_tensor(self.rule.alpha, dtype=torch.float32))
            loss.backward()
            self.opt.step()
            self.step += 1
        return time.perf_counter() - t0, time.process_time() - c0


def measure(args, runners, paths, B: int, T: int):
    """Warm up, then time interleaved rounds; best (wall, CPU) per path -> steps/s and s/batch."""
    for r in runners:
        r.time(args.warmup)
    best = [float("inf")] * len(paths)                     # wall seconds per batch
    cpu = [float("inf")] * len(paths)                      # CPU seconds per batch
    for _ in range(args.rounds):
        for i, (r, (_, _, _, n)) in enumerate(zip(runners, paths)):
            w, c = r.time(n)
            best[i], cpu[i] = min(best[i], w / n), min(cpu[i], c / n)
    sps = [k * B * T / b for (_, k, _, _), b in zip(paths, best)]
    cps = [k * B * T / c for (_, k, _, _), c in zip(paths, cpu)]
    return sps, best, cps, cpu


def adaptive_rows(args, data, B: int, T: int, K: int) -> None:
    """The adaptive-GTF clipped shPLRNN configuration (members with their own alphas)."""
    name = "clipped shPLRNN M=3 L=100, adaptive GTF"
    make = lambda k: EagerClippedSh(k, 3, 100, seed=0)  # noqa: E731
    # same K-member model, same batch, members with different alphas: the eager loop (alpha
    # (K, 1, 1)), one fused call (alpha (K, T)) and K fused calls give the same loss and gradients
    model, x = make(K), next(batches(data, 1, B * K, T, seed=7)).view(K, B, T + 1, -1)
    alpha = torch.linspace(0.05, 0.95, K)
    losses, grads = [], []
    for fn in (model.eager_loss_members, model.fused_loss_members, model.fused_loss_split):
        loss = fn(x, alpha)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
        losses.append(float(loss.detach()))
    gerr = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
               for g in grads[1:] for a, b in zip(g, grads[0]))
    print(f"{name:38s} check (K={K}, alphas {float(alpha[0]):.2f}..{float(alpha[-1]):.2f}): loss "
          f"eager {losses[0]:.6f} fused {losses[1]:.6f} split {losses[2]:.6f}, max relative "
          f"gradient difference {gerr:.1e}")
    paths = [("eager (reference)", 1, "eager_loss_members", args.eager_batches),
             ("fused", 1, "fused_loss_members", args.batches),
             (f"eager K={K} vectorised", K, "eager_loss_members", args.eager_batches),
             (f"fused K={K} alpha (K,T)", K, "fused_loss_members", args.batches),
             (f"fused K={K} split", K, "fused_loss_split", args.batches)]
    runners = [AdaptiveRunner(make(k), loss, 5, np.linspace(0.1, 0.9, k) if k > 1 else [0.5],
                              data, k, B, T) for _, k, loss, _ in paths]
    sps, best, cps, cpu = measure(args, runners, paths, B, T)
    for (path, _, _, _), s, b, cs, c in zip(paths, sps, best, cps, cpu):
        print(f"{name:38s} {path:22s} {s:10.0f} {1e3 * b:9.2f} {s / sps[0]:8.1f}x"
              f" {1e3 * c:9.2f} {cs / cps[0]:8.1f}x")
    spread = [float(a) for a in runners[3].rule.alpha]
    print(f"{'':38s} adaptive alpha every 5 steps (kappa per member), members start at "
          f"0.1..0.9; after the run {min(spread):.4f}..{max(spread):.4f} "
          f"({len(set(spread))} distinct of {K})")
    print(f"{'':38s} single model: fused / eager = {sps[1] / sps[0]:.1f}x wall, "
          f"{cps[1] / cps[0]:.1f}x CPU (target >= 10x)")
    print(f"{'':38s} K={K}: fused K / ({K} x eager, extrapolated from the eager run) = "
          f"{sps[3] / sps[0]:.1f}x wall, {cps[3] / cps[0]:.1f}x CPU (target >= 30x)")
    print(f"{'':38s} K={K}: one call with alpha (K,T) / one call per member = "
          f"{sps[3] / sps[4]:.1f}x wall, {cps[3] / cps[4]:.1f}x CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20, help="timed batches per round, fused")
    ap.add_argument("--eager-batches", type=int, default=5, help="timed batches per round, eager")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best is reported")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads, all paths")
    ap.add_argument("--fused-threads", type=int, default=1,
                    help="dsrecon.training.fused.set_num_threads (blocks of the fused kernels)")
    ap.add_argument("--K", type=int, default=16, help="ensemble size")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=200)
    ap.add_argument("--configs", default="alrnn,clipped,clipped-agtf",
                    help="comma-separated subset of: alrnn, clipped, clipped-agtf")
    args = ap.parse_args()
    chosen = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(chosen) - {"alrnn", "clipped", "clipped-agtf"}
    if unknown:
        ap.error(f"unknown --configs {sorted(unknown)}; choose from alrnn, clipped, clipped-agtf")

    torch.set_num_threads(args.threads)
    set_num_threads(args.fused_threads)
    data = lorenz_data()
    B, T, K = args.batch, args.seq_len, args.K
    configs = [
        ("AL-RNN M=20 P=2 N=3, STF tau=16", lambda k: EagerALRNN(k, 20, 2, 3, seed=0), 16),
        ("clipped shPLRNN M=3 L=100, GTF a=0.1", lambda k: EagerClippedSh(k, 3, 100, seed=0), 0.1),
    ]
    configs = [c for c, key in zip(configs, ("alrnn", "clipped")) if key in chosen]
    print(f"batch {B}, seq_len {T}, torch.set_num_threads({args.threads}), fused kernel threads "
          f"{args.fused_threads}; per round: eager "
          f"{args.eager_batches} batches, fused {args.batches} batches (after {args.warmup} "
          f"warm-up); best of {args.rounds} interleaved rounds")
    print(f"{'configuration':38s} {'path':22s} {'steps/s':>10s} {'ms/batch':>9s} {'vs eager':>9s}"
          f" {'cpu ms/b':>9s} {'cpu vs':>9s}")
    for name, make, arg in configs:
        # same model, same batch: the two paths must compute the same loss and gradients
        model, x = make(1), next(batches(data, 1, B, T, seed=7)).view(1, B, T + 1, -1)
        le, lf = model.eager_loss(x, arg), model.fused_loss(x, arg)
        ge = torch.autograd.grad(le, list(model.parameters()))
        gf = torch.autograd.grad(lf, list(model.parameters()))
        gerr = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                   for a, b in zip(gf, ge))
        le, lf = float(le.detach()), float(lf.detach())
        print(f"{name:38s} check: loss eager {le:.6f} fused {lf:.6f}, "
              f"max relative gradient difference {gerr:.1e}")
        paths = [("eager (reference)", 1, "eager_loss", args.eager_batches),
                 ("fused", 1, "fused_loss", args.batches),
                 (f"eager K={K} vectorised", K, "eager_loss", args.eager_batches),
                 (f"fused K={K}", K, "fused_loss", args.batches)]
        runners = [Runner(make(k), loss, arg, data, k, B, T) for _, k, loss, _ in paths]
        for r in runners:
            r.time(args.warmup)
        best = [float("inf")] * len(paths)                     # wall seconds per batch
        cpu = [float("inf")] * len(paths)                      # CPU seconds per batch
        for _ in range(args.rounds):
            for i, (r, (_, _, _, n)) in enumerate(zip(runners, paths)):
                w, c = r.time(n)
                best[i], cpu[i] = min(best[i], w / n), min(cpu[i], c / n)
        sps = [k * B * T / b for (_, k, _, _), b in zip(paths, best)]
        cps = [k * B * T / c for (_, k, _, _), c in zip(paths, cpu)]
        for (path, _, _, _), s, b, cs, c in zip(paths, sps, best, cps, cpu):
            print(f"{name:38s} {path:22s} {s:10.0f} {1e3 * b:9.2f} {s / sps[0]:8.1f}x"
                  f" {1e3 * c:9.2f} {cs / cps[0]:8.1f}x")
        print(f"{'':38s} single model: fused / eager = {sps[1] / sps[0]:.1f}x wall, "
              f"{cps[1] / cps[0]:.1f}x CPU (target >= 10x)")
        print(f"{'':38s} K={K}: fused K / ({K} x eager, extrapolated from the eager run) = "
              f"{sps[3] / sps[0]:.1f}x wall, {cps[3] / cps[0]:.1f}x CPU (target >= 30x)")
    if "clipped-agtf" in chosen:
        adaptive_rows(args, data, B, T, K)


if __name__ == "__main__":
    main()
