"""Teacher-forcing strategies and the forced rollout they drive.

Glossary: K ensemble members, B batch, T prediction steps per window (seq_len), N observed dim,
M latent dim.

A window holds x_0 .. x_T. With z_0 = init_state(x_0), every strategy runs

    z_in_t    = z_t + alpha_t * (zhat_t - z_t)      (on the forced units; zhat_t = data_state(x_t))
    z_{t+1}   = F(z_in_t),                            t = 0 .. T-1

and the loss is the MSE of the *unforced* predictions observe(z_{t+1}) against x_{t+1}.
A strategy only decides the forcing vector alpha (T,):

* ``gtf``   generalised teacher forcing, constant alpha (Hess et al., ICML 2023; Doya 1992).
* ``agtf``  adaptive GTF (Hess et al. 2023, "product upper bound" rule of the reference code):
            every ``update_every`` optimiser steps, kappa = max over the batch's sequences of the
            geometric mean over t of ||J(zhat_t)||_2 (spectral norm of the model Jacobian at the
            data-inferred states zhat_1..zhat_T), ahat = max(0, 1 - 1/kappa); if ahat > a then
            a = ahat else a = decay * a + (1 - decay) * ahat; start at a = 1.
* ``stf``   sparse teacher forcing (Mikhaeil et al., NeurIPS 2022; Brenner et al. 2024): alpha = 1
            at window steps 0, tau, 2 tau, ... (time steps 1, tau + 1, ... of the papers), 0 else;
            alpha = 1 cuts the gradient through the forced units exactly.
* ``free``  free running, alpha = 0.

Two interchangeable rollouts produce the predictions: :func:`generic_rollout` (any
:class:`~dsrecon.models.base.DynamicalModel`, a Python loop over ``force``/``step``; also the
reference) and :func:`fused_rollout` (piecewise-linear models through their shallow canonical
form and :func:`dsrecon.training.fused.forced_rollout`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from dsrecon.errors import ConfigError
from dsrecon.models.base import DynamicalModel, PiecewiseLinearModel


# ============================================================================ strategies
class Forcing:
    """Base class: the forcing vector of every member (K, T) and (for agtf) its adaptation."""

    name = ""
    adaptive = False

    def __init__(self, n_members: int = 1) -> None:
        self.n_members = int(n_members)

    def alpha_matrix(self, T: int) -> np.ndarray:
        """Forcing strengths alpha (K, T) for a window of T prediction steps."""
        raise NotImplementedError

    def alpha_vector(self, T: int) -> np.ndarray:
        """alpha (T,) of member 0 (single-model training)."""
        return self.alpha_matrix(T)[0]

    @property
    def current_alpha(self) -> list[float] | None:
        """The scalar alpha of each member for logging (None where it is not a constant)."""
        return None

    def wants_update(self, step: int) -> bool:
        """Whether the optimiser step with 0-based global index ``step`` adapts alpha first."""
        return False

    def update(self, kappa: np.ndarray) -> None:  # pragma: no cover - only agtf adapts
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ConstantGTF(Forcing):
    """Generalised teacher forcing with a constant alpha in [0, 1]."""

    name = "gtf"

    def __init__(self, alpha: float, n_members: int = 1) -> None:
        super().__init__(n_members)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def alpha_matrix(self, T: int) -> np.ndarray:
        return np.full((self.n_members, int(T)), self.alpha)

    @property
    def current_alpha(self) -> list[float]:
        return [self.alpha] * self.n_members


class FreeRunning(ConstantGTF):
    """No forcing (alpha = 0): the model runs freely from z_0 = init_state(x_0)."""

    name = "free"

    def __init__(self, n_members: int = 1) -> None:
        super().__init__(0.0, n_members)


class AdaptiveGTF(Forcing):
    """Adaptive GTF (Hess et al. 2023): alpha follows the Jacobian norms along the data.

    One alpha per ensemble member, each adapted from its own model's Jacobians.
    """

    name = "agtf"
    adaptive = True

    def __init__(self, alpha0: float = 1.0, update_every: int = 5, decay: float = 0.999,
                 n_members: int = 1) -> None:
        super().__init__(n_members)
        if not 0.0 <= float(alpha0) <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha0}")
        self.alpha = np.full(self.n_members, float(alpha0))
        self.update_every = int(update_every)
        self.decay = float(decay)

    def alpha_matrix(self, T: int) -> np.ndarray:
        return np.repeat(self.alpha[:, None], int(T), axis=1)

    @property
    def current_alpha(self) -> list[float]:
        return [float(a) for a in self.alpha]

    def wants_update(self, step: int) -> bool:
        return (int(step) + 1) % self.update_every == 0

    def update(self, kappa: np.ndarray) -> None:
        """Apply the annealing rule to each member given its kappa (K,)."""
        kappa = np.broadcast_to(np.asarray(kappa, dtype=float), self.alpha.shape)
        for k, kap in enumerate(kappa):
            if math.isnan(kap):
                continue  # a broken model: leave alpha alone (the roll-back guard acts)
            ahat = max(0.0, 1.0 - 1.0 / kap) if kap > 0 else 0.0
            a = float(self.alpha[k])
            self.alpha[k] = ahat if ahat > a else self.decay * a + (1.0 - self.decay) * ahat

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": [float(a) for a in self.alpha]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        a = np.asarray(state["alpha"], dtype=float)
        if a.shape != self.alpha.shape:
            raise ConfigError(f"adaptive alpha state has {a.size} members, expected {self.alpha.size}")
        self.alpha = a.copy()


class SparseTF(Forcing):
    """Sparse teacher forcing: full forcing (alpha = 1) every ``tau`` steps, free in between."""

    name = "stf"

    def __init__(self, tau: int, n_members: int = 1) -> None:
        super().__init__(n_members)
        if isinstance(tau, bool) or int(tau) != tau or int(tau) < 1:
            raise ConfigError(f"tau must be an integer >= 1, got {tau}")
        self.tau = int(tau)

    def alpha_matrix(self, T: int) -> np.ndarray:
        a = (np.arange(int(T)) % self.tau == 0).astype(float)
        return np.repeat(a[None], self.n_members, axis=0)


def make_forcing(config, n_members: int = 1) -> Forcing:
    """The strategy named by ``config.forcing`` (a validated :class:`TrainConfig`)."""
    if config.forcing == "gtf":
        return ConstantGTF(config.alpha, n_members)
    if config.forcing == "agtf":
        return AdaptiveGTF(config.alpha, config.alpha_update_every, config.alpha_decay, n_members)
    if config.forcing == "stf":
        return SparseTF(config.tau, n_members)
    return FreeRunning(n_members)


#: states per chunk when computing Jacobian norms (bounds memory at chunk * M * M)
KAPPA_CHUNK = 512


@torch.no_grad()
def spectral_norms(jacobian: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """||J(z_i)||_2 for states z (..., S, M) -> (..., S) float64, in chunks of states.

    The largest singular value is taken as sqrt(lambda_max(J^T J)) with a symmetric eigensolver in
    float64 (about 2x faster than the SVD behind ``matrix_norm(ord=2)`` for small M; the relative
    error of sigma_max stays at float64 rounding level, see the test against ``matrix_norm``).
    """
    parts = []
    for c in z.split(KAPPA_CHUNK, dim=-2):
        J = jacobian(c).double()  # (..., s, M, M)
        gram = J.transpose(-1, -2) @ J
        parts.append(torch.linalg.eigvalsh(gram)[..., -1].clamp_min(0.0).sqrt())
    return torch.cat(parts, dim=-1)


@torch.no_grad()
def jacobian_kappa(jacobian: Callable[[torch.Tensor], torch.Tensor], zhat: torch.Tensor) -> float:
    """kappa = max_b exp(mean_t log ||J(zhat_bt)||_2) for zhat (B, T, M) (adaptive GTF)."""
    B, T, M = zhat.shape
    norms = spectral_norms(jacobian, zhat.reshape(B * T, M)).reshape(B, T)
    geo = torch.exp(torch.log(norms).mean(dim=1))  # (B,) geometric means (0 if a norm is 0)
    return float(geo.max())


# ============================================================================ rollouts
def generic_rollout(model: DynamicalModel, x: torch.Tensor, alpha) -> torch.Tensor:
    """Forced rollout through the model protocol (the reference path; any model).

    Parameters
    ----------
    model : DynamicalModel
    x : (B, T + 1, N) window used for forcing and the initial state (x_T is not used).
    alpha : (T,) forcing strengths (array-like of floats).

    Returns
    -------
    Unforced predictions z_1 .. z_T, shape (B, T, M).
    """
    alpha = [float(a) for a in np.asarray(alpha, dtype=float).reshape(-1)]
    z = model.init_state(x[:, 0])  # (B, M)
    out = []
    for t, a in enumerate(alpha):
        if a != 0.0:
            z = model.force(z, x[:, t], a)
        z = model.step(z)  # (B, M)
        out.append(z)
    return torch.stack(out, dim=1)  # (B, T, M)


def force_mask(model: DynamicalModel) -> torch.Tensor | None:
    """The forced units (M,) bool if the model's forcing is ``z + alpha * mask * (zhat - z)``.

    That holds for the default :meth:`DynamicalModel.force` when every output unit of
    ``data_state(x, z)`` either ignores z (forced) or passes z through (free): identity
    observation with partial forcing gives ``mask = [1]*N + [0]*(M - N)``, an affine one all ones.
    Returns None for models whose forcing has another form (they use the generic rollout).
    """
    explicit = getattr(model, "force_mask", None)
    if isinstance(explicit, torch.Tensor):
        return explicit.to(torch.bool)
    if type(model).force is not DynamicalModel.force:
        return None
    gen = torch.Generator().manual_seed(1234)
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    dev = model.device
    x = torch.randn(3, model.obs_dim, generator=gen, dtype=dtype).to(dev)
    z1 = torch.randn(3, model.latent_dim, generator=gen, dtype=dtype).to(dev) + 5.0
    z2 = torch.randn(3, model.latent_dim, generator=gen, dtype=dtype).to(dev) - 5.0
    with torch.no_grad():
        d1, d2 = model.data_state(x, z1), model.data_state(x, z2)
    forced = (d1 == d2).all(dim=0)
    free = (d1 == z1).all(dim=0) & (d2 == z2).all(dim=0)
    if not bool((forced ^ free).all()):
        return None
    return forced


def fused_available(model: DynamicalModel, device: torch.device, mode: str) -> torch.Tensor | None:
    """The force mask if the fused path applies (``mode`` "auto" | "on" | "off"), else None."""
    if mode == "off" or not isinstance(model, PiecewiseLinearModel):
        return None
    if mode == "auto" and device.type != "cpu":
        from dsrecon.training.cuda_rollout import graphs_enabled

        if not graphs_enabled(device):  # opt-in CUDA graphs replay the form-based rollout
            return None
    try:
        from dsrecon.training import fused  # noqa: F401
    except ImportError:
        return None
    try:
        with torch.no_grad():
            model.shallow_form()
    except NotImplementedError:
        return None
    return force_mask(model)


def data_states(model: DynamicalModel, x: torch.Tensor) -> torch.Tensor:
    """Data-inferred states zhat = data_state(x, 0): x (B, T, N) -> (B, T, M).

    The free units (partial forcing) are zero, as in the reference ``apply_inverse`` of the
    identity observation model; they are masked out in the forced rollout.
    """
    B, T, N = x.shape
    flat = x.reshape(B * T, N)
    z = flat.new_zeros(B * T, model.latent_dim)
    return model.data_state(flat, z).reshape(B, T, model.latent_dim)


def fused_rollout(model: PiecewiseLinearModel, x: torch.Tensor, alpha, mask: torch.Tensor,
                  impl: str = "auto") -> torch.Tensor:
    """Forced rollout of a piecewise-linear model with the fused kernel (K = 1).

    Same arguments, result and gradients as :func:`generic_rollout` (equivalence-tested).
    """
    from dsrecon.training.fused import forced_rollout, stack_forms

    T = x.shape[1] - 1
    form = stack_forms([model.shallow_form()], clipped=bool(model.clipped))
    z0 = model.init_state(x[:, 0])[None]  # (1, B, M)
    zhat = data_states(model, x[:, :T])[None]  # (1, B, T, M)
    a = torch.as_tensor(np.asarray(alpha, dtype=float).reshape(-1), dtype=x.dtype, device=x.device)
    return forced_rollout(form, z0, zhat, mask.to(x.device), a, impl=impl)[0]  # (B, T, M)


def prediction_loss(model: DynamicalModel, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE of observe(z) against the targets: z (B, T, M), target (B, T, N) -> scalar."""
    B, T, M = z.shape
    xhat = model.observe(z.reshape(B * T, M)).reshape(B, T, -1)
    return torch.mean((xhat - target) ** 2)
