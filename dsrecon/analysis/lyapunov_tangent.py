"""Tangent propagation for partial Lyapunov spectra of high-dimensional models.

Glossary: B initial conditions, M latent dim, k leading exponents (k <= M).

The k leading Lyapunov exponents need only a k-column tangent frame Q (B, M, k): the QR loop of
:func:`dsrecon.analysis.lyapunov.lyapunov_spectrum` with ``Q <- J(z) Q`` and a reduced QR gives
exactly the first k exponents of the full computation (the leading k columns of the full frame
evolve on their own; Benettin et al. 1980; Shimada & Nagashima 1979). For models without an
analytic Jacobian (LSSL, Mamba, neural ODE, LSTM: M in the hundreds or thousands), forming J by
reverse-mode autograd costs M backward passes per step; here ``J(z) Q`` is computed by
forward-mode differentiation instead -- k Jacobian-vector products per step, batched into one
``torch.func.jvp`` call over B * k copies of the state -- so the cost scales with k, not M.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import jvp

__all__ = ["jvp_tangent", "matrix_tangent"]


def jvp_tangent(step: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(z (B, M), Q (B, M, k)) -> J(z) Q (B, M, k)`` by forward-mode AD of ``step`` (B, M) -> (B, M).

    One ``jvp`` call on the B * k stacked states (each state repeated k times, paired with one
    column of its frame). ``step`` must be batched over its first dimension.
    """

    def tangent(z: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        B, M, k = Q.shape
        zs = z.repeat_interleave(k, dim=0)                          # (B*k, M): z_b repeated k times
        vs = Q.transpose(1, 2).reshape(B * k, M)                    # (B*k, M): column j of Q_b
        _, jv = jvp(step, (zs,), (vs,))                             # (B*k, M)
        return jv.reshape(B, k, M).transpose(1, 2)                  # (B, M, k)

    return tangent


def matrix_tangent(jacobian: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(z, Q) -> J(z) @ Q`` from a Jacobian function (B, M) -> (B, M, M) (analytic Jacobians)."""
    return lambda z, Q: jacobian(z) @ Q
