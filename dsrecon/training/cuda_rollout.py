"""CUDA-graph replay of the forced rollout: the GPU training path of the piecewise-linear family.

Glossary: K ensemble members, B batch, T time, M latent dim, L hidden dim.

On a GPU the recurrence of :func:`dsrecon.training.fused.reference_forced_rollout` is launch-bound:
each of the T steps runs about ten tiny kernels forward and twenty backward, each costing more
CPU time to launch than GPU time to run. This module records the whole rollout once per input
signature -- forward and backward -- as two CUDA graphs with
:func:`torch.cuda.make_graphed_callables` and replays them, so one training batch costs two graph
launches instead of thousands of kernel launches. The arithmetic is the reference's, step for step
(same kernels, same order), so results agree with the eager reference to rounding (tested on a GPU
in ``tests/training/test_cuda_rollout.py``).

Signature = device, dtype, (K, B, T, M, L), relu mask, clipped flag and which inputs require
gradients; each new signature is captured once (a few warm-up runs plus the capture) and kept
(at most :data:`MAX_GRAPHS`, least recently used dropped). Graphs are used only while autograd is
recording and at least one input requires a gradient (training); otherwise, and whenever a capture
fails (the failure is warned about once per signature), the eager reference runs. Each capture is
checked once before it is used: the graphs' output and input gradients (for a random upstream
gradient) must match an eager run of the same recurrence on the same inputs (rtol 1e-3 in
float32, 1e-8 in float64), else the signature falls back to the eager reference with a warning.

Status: **opt-in** -- set the environment variable ``DSRECON_CUDA_GRAPHS=1``. The path was written
in a session whose GPU loan ended before it could be run on hardware: its dispatch rules and the
capturable loop (identical to the reference, checked bit for bit on CPU) are tested everywhere,
its GPU equivalence tests (``-m gpu``) are written but have not run yet. Until they have, the
default CUDA path stays the eager reference.

Reference: NVIDIA CUDA Graphs; PyTorch "CUDA Graphs" notes (partial-network capture).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Callable

import torch

__all__ = ["graphs_enabled", "graphed_rollout", "clear_cache", "MAX_GRAPHS"]

#: most input signatures kept captured at once (each holds its own static buffers)
MAX_GRAPHS = 8

_CACHE: OrderedDict[tuple, Callable | None] = OrderedDict()   # signature -> graphed fn (None: failed)
_ARGS = ("a", "W1", "W2", "h1", "h2")


def graphs_enabled(device: torch.device) -> bool:
    """Whether rollouts on ``device`` use CUDA graphs: a CUDA device and ``DSRECON_CUDA_GRAPHS``
    set to 1 / true / on (opt-in, see the module docstring)."""
    flag = os.environ.get("DSRECON_CUDA_GRAPHS", "0").strip().lower()
    return device.type == "cuda" and flag in ("1", "true", "on")


def clear_cache() -> None:
    """Drop every captured graph (frees their static buffers)."""
    _CACHE.clear()


def _loop(mask: torch.Tensor, clipped: bool, all_relu: bool) -> Callable[..., torch.Tensor]:
    """The reference recurrence as a function of tensors only (no host syncs, capturable).

    (a (K, M), W1 (K, M, L), W2 (K, L, M), h1 (K, M), h2 (K, L), z0 (K, B, M), zhat (K, B, T, M),
    c (K, T, M)) -> z (K, B, T, M); the same kernels in the same order as
    :func:`dsrecon.training.fused.reference_forced_rollout`.
    """

    def run(a, W1, W2, h1, h2, z0, zhat, c):
        W2t, W1t = W2.transpose(1, 2), W1.transpose(1, 2)
        a_, h1_, h2_ = a[:, None, :], h1[:, None, :], h2[:, None, :]
        z, out = z0, []
        for s in range(zhat.shape[2]):
            z = z + c[:, None, s] * (zhat[:, :, s] - z)                          # forced input
            u = torch.matmul(z, W2t)                                            # (K, B, L)
            if clipped:
                r = torch.relu(u + h2_) - torch.relu(u)
            else:
                v = u + h2_
                r = torch.relu(v) if all_relu else torch.where(mask, torch.relu(v), v)
            z = a_ * z + torch.matmul(r, W1t) + h1_                              # (K, B, M)
            out.append(z)
        return torch.stack(out, dim=2)

    return run


def _signature(t: dict, mask: torch.Tensor, clipped: bool, z0: torch.Tensor, zhat: torch.Tensor,
               c: torch.Tensor) -> tuple:
    tensors = [t[k] for k in _ARGS] + [z0, zhat, c]
    return (str(z0.device), z0.dtype, tuple(zhat.shape), t["W1"].shape[2], bool(clipped),
            tuple(bool(v) for v in mask.tolist()), tuple(x.requires_grad for x in tensors))


def graphed_rollout(t: dict, mask: torch.Tensor, clipped: bool, z0: torch.Tensor, zhat: torch.Tensor,
                    c: torch.Tensor) -> torch.Tensor | None:
    """The forced rollout by CUDA-graph replay, or None where the caller should run the reference.

    Arguments as returned by :func:`dsrecon.training.fused_inputs.check_inputs` (validated form
    tensors ``t``, relu ``mask`` (L,), ``clipped``, weights ``c`` (K, T, M)) plus z0 (K, B, M) and
    zhat (K, B, T, M). Returns a fresh tensor z (K, B, T, M) (not the graph's static buffer).
    """
    if not graphs_enabled(z0.device) or not torch.is_grad_enabled():
        return None
    tensors = [t[k] for k in _ARGS] + [z0, zhat, c]
    if not any(x.requires_grad for x in tensors):
        return None
    key = _signature(t, mask, clipped, z0, zhat, c)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        fn = _CACHE[key]
    else:
        fn = _capture(key, mask, clipped, tensors)
        _CACHE[key] = fn
        while len(_CACHE) > MAX_GRAPHS:
            _CACHE.popitem(last=False)
    if fn is None:
        return None
    return fn(*tensors).clone()


def _capture(key: tuple, mask: torch.Tensor, clipped: bool, tensors: list[torch.Tensor]) -> Callable | None:
    """Capture forward and backward of the rollout for this signature (None if capture fails)."""
    samples = tuple(x.detach().clone().requires_grad_(x.requires_grad) for x in tensors)
    run = _loop(mask.detach().clone(), clipped, bool(mask.all()))
    try:
        graphed = torch.cuda.make_graphed_callables(run, samples, allow_unused_input=True)
        problem = _verify(graphed, run, tensors)
    except Exception as err:  # pragma: no cover - only reachable on a GPU
        problem = f"capture failed ({type(err).__name__}: {err})"
    if problem is None:
        return graphed
    warnings.warn(f"CUDA-graph rollout for shapes {key[2]}: {problem}; using the eager reference for them",
                  RuntimeWarning, stacklevel=3)
    return None


def _verify(graphed: Callable, run: Callable, tensors: list[torch.Tensor]) -> str | None:
    """Compare one graphed call (values and input gradients) with the eager ``run``; None if equal
    to rounding, else what differs. Works on fresh leaf copies (the caller's graph is untouched)."""
    rtol, atol = (1e-8, 1e-10) if tensors[0].dtype == torch.float64 else (1e-3, 1e-5)
    results = []
    for fn in (graphed, run):
        leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in tensors]
        z = fn(*leaves).clone()
        g = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=torch.Generator(z.device).manual_seed(0))
        wrt = [x for x in leaves if x.requires_grad]
        grads = torch.autograd.grad(z, wrt, g, allow_unused=True)
        results.append((z.detach(), [None if d is None else d.detach() for d in grads]))
    (zg, gg), (zr, gr) = results
    if not torch.allclose(zg, zr, rtol=rtol, atol=atol):
        return f"output differs from the eager rollout (max |diff| {float((zg - zr).abs().max()):.3g})"
    for i, (a, b) in enumerate(zip(gg, gr)):
        a = torch.zeros_like(b) if a is None and b is not None else a
        b = torch.zeros_like(a) if b is None and a is not None else b
        if a is not None and not torch.allclose(a, b, rtol=rtol, atol=atol * max(1.0, float(b.abs().max()))):
            return f"gradient of input {i} differs from the eager rollout"
    return None
