"""Lyapunov spectra of a list of K models in one pass (QR / Benettin method, float64).

Glossary: B initial conditions, K ensemble members, D = M latent dim, n_blocks convergence blocks.

:func:`dsrecon.analysis.lyapunov.lyapunov_spectrum` given a list of models returns a list of K
results, each what the member gives on its own (same initial states, same block layout; Benettin,
Galgani, Giorgilli & Strelcyn 1980, Meccanica 15:9), computed here in one pass where the members
allow it:

* piecewise-linear members (numba path) are stacked into one compiled call over K x B
  trajectories (:func:`.lyapunov_pwl.pwl_ensemble_sums`; bit-identical to the single-model call,
  which is the same kernel with K = 1);
* members of one architecture on the torch path are stacked with
  ``torch.func.stack_module_state`` and stepped together through ``vmap`` (one batched QR per
  step for all K x B frames; equal up to the rounding of vmap's batched matmuls, ~1 ulp per step).

:func:`_ensemble` returns None -- and the caller loops over members -- for lists mixing
architectures, and for models whose ``step`` / ``jacobian`` cannot be vmapped (data-dependent
Python control flow, ``.item()``, in-place writes into inputs): a one-step probe decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dsrecon.analysis import lyapunov as core
from dsrecon.analysis._targets import initial_states
from dsrecon.analysis.lyapunov import LyapunovResult, _blocks, _summarise
from dsrecon.analysis.pwl_view import float64_copy
from dsrecon.models.base import DynamicalModel


class _Call(torch.nn.Module):
    """``forward(name, z)`` runs ``model.<name>(z)`` ("autograd_jacobian": the base class's
    autograd Jacobian), the target of ``functional_call`` for stacked members."""

    def __init__(self, model: DynamicalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, name: str, z: torch.Tensor) -> torch.Tensor:
        if name == "autograd_jacobian":
            return DynamicalModel.jacobian(self.model, z)
        return getattr(self.model, name)(z)


def _ensemble(members: list[DynamicalModel], *, x0: Any, n_steps: int, transient: int, reorth_every: int,
              n_initial_conditions: int, dt: float | None, device: Any, seed: int | None, jacobian: str,
              method: str, n_blocks: int, warmup: int) -> list[LyapunovResult] | None:
    """K members in one pass (module docstring), or None when they must go one by one. Every
    member gets the initial states it would get alone (its own generator seeded by ``seed``)."""
    from dsrecon.analysis.lyapunov_pwl import pwl_ensemble_sums

    xs = [initial_states("model", m, x0, n_initial_conditions, np.random.default_rng(seed)) for m in members]
    block_len, nb, counts, n_warm = _blocks(n_steps, reorth_every, n_blocks, warmup)
    total = n_warm + n_steps
    info = dict(transient=transient, reorth_every=reorth_every, warmup=n_warm)
    on_cpu = device is None or torch.device(device).type == "cpu"
    sums, path = None, "numba"
    if method in ("auto", "numba") and jacobian == "analytic" and on_cpu:
        sums = pwl_ensemble_sums(members, xs, transient=transient, n_steps=total, reorth_every=reorth_every,
                                 block_len=block_len, n_blocks=nb)
    if sums is None and method != "numba":
        sums, path = _stacked_torch_sums(members, xs, transient, total, reorth_every, block_len, nb, device,
                                         jacobian), "torch"
    if sums is None:
        return None
    return [_summarise(s, counts, dt, method=path, **info) for s in sums]


def _stacked_torch_sums(members: list[DynamicalModel], xs: list[np.ndarray], transient: int, total: int,
                        reorth: int, block_len: int, nb: int, device: Any, jacobian: str) -> list[np.ndarray] | None:
    """The torch Benettin loop for K members of one architecture at once: parameters stacked
    (``stack_module_state``), ``step`` / ``jacobian`` vmapped over members, states (K B, D).
    None when the members differ in architecture (class, tensor shapes or any plain attribute,
    which the stacked call would take from the first member) or their methods cannot be vmapped."""
    from torch.func import functional_call, stack_module_state, vmap

    def architecture(m: torch.nn.Module) -> tuple:  # class, tensor shapes and every plain attribute
        plain = {(n, k): v for n, mod in m.named_modules() for k, v in vars(mod).items()
                 if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple, type(None)))}
        return type(m), {n: tuple(t.shape) for n, t in m.state_dict().items()}, plain

    first = members[0]
    if any(architecture(m) != architecture(first) for m in members[1:]) or len({x.shape for x in xs}) != 1:
        return None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    copies = [float64_copy(m, dev) for m in members]
    params, buffers = stack_module_state(copies)
    caller = _Call(copies[0])
    K, (B, D) = len(members), xs[0].shape
    name = "jacobian" if jacobian == "analytic" else "autograd_jacobian"

    def call(method: str, z: torch.Tensor) -> torch.Tensor:  # (K B, D) -> (K B, ...)
        def one(p: dict, b: dict, zz: torch.Tensor) -> torch.Tensor:
            return functional_call(caller, {**{f"model.{n}": t for n, t in p.items()},
                                            **{f"model.{n}": t for n, t in b.items()}}, (method, zz))

        out = vmap(one, in_dims=(0, 0, 0))(params, buffers, z.reshape(K, B, D))
        return out.reshape((K * B,) + tuple(out.shape[2:]))

    z = torch.as_tensor(np.concatenate(xs, axis=0), dtype=torch.float64, device=dev)
    try:  # the probe: some models cannot be vmapped
        with torch.no_grad():
            call("step", z)
            call(name, z)
    except Exception:  # noqa: BLE001 -- any vmap failure means "analyse member by member"
        return None
    # one QR loop for all K members; core._map_sums is looked up at call time, so that a wrapper
    # installed on lyapunov._map_sums (the tests count its calls) sees this loop too
    sums = core._map_sums(lambda v: call("step", v), lambda v: call(name, v), z, transient, total, reorth, block_len, nb,
                     f"an ensemble member ({type(first).__name__})")
    return list(sums.reshape(K, B, nb, D))
