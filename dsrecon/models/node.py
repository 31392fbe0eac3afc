"""Neural ordinary differential equation: ``step`` is the flow map over one sampling interval.

Glossary (teaching size)
------------------------
B   batch
T   time steps of a window
N   observed dim (``obs_dim``)
M   latent dim (``latent_dim``) >= N: the ODE's state; the first N coordinates are observed,
    the other M - N are augmented coordinates (Dupont et al. 2019), zero at ``init_state``
H   width of the vector-field MLP (``hidden_dim``; L in the toolkit-wide glossary)

Model (Chen et al. 2018): dz/dt = f_theta(z), f_theta an MLP M -> H -> ... -> H -> M
(``n_hidden_layers`` hidden layers; 0 gives the linear field f(z) = W z + b). The latent map of
the protocol is the time-``dt`` flow map, z_{t+1} = Phi_dt(z_t), computed by ``torchdiffeq``
(``solver`` by name, ``rtol``/``atol``, ``max_num_steps``; ``adjoint=True`` backpropagates with
the adjoint method, O(1) memory in the number of solver steps). ``step_size`` sets the step of
the fixed-grid solvers (ceil(dt / step_size) equal steps per sampling interval, so that the grid
hits every output time; default one step per interval) and is the first trial step of the
adaptive ones (default dt; the controller's later step sizes are detached by torchdiffeq, so
different samples of a batch do not exchange gradients through the step-size choice). The last
layer starts scaled by ``init_scale`` so that the initial flow is close to the identity.

Protocol: observe(z) = z[:, :N]; teacher forcing (GTF, or sparse forcing = alpha in {0, 1}
every tau steps, i.e. multiple shooting) replaces the observed coordinates and keeps the
augmented ones. The Jacobian of the flow map is computed by autograd through the solver (M
reverse passes; vmap cannot trace adaptive solvers).

``forward_window``: alpha = 1 and M = N -> all T one-interval flows from the data points in one
batched solve; alpha = 0 -> one solve over the grid 0, dt, ..., T dt (a free run; equal to T
successive ``step`` calls exactly for fixed-grid solvers, within the tolerances for adaptive
ones); otherwise the exact protocol loop. ``generate`` integrates the whole trajectory in one
call over the output grid (same remark).

Failures (step-size underflow, too many steps, non-finite state) raise
:class:`dsrecon.errors.IntegrationError` naming the step and time, so a trainer can roll back.

References
----------
R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
equations", NeurIPS 2018 (and the torchdiffeq library).
E. Dupont, A. Doucet, Y. W. Teh, "Augmented neural ODEs", NeurIPS 2019.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from dsrecon.errors import ConfigError, IntegrationError, unknown_name
from dsrecon.models.registry import register
from dsrecon.models.sequence import SequenceModel, check_int, check_positive

FIXED_SOLVERS = ("euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "gelu": nn.GELU, "silu": nn.SiLU}


class VectorField(nn.Module):
    """Autonomous MLP vector field f(t, z) = MLP(z): (B, M) -> (B, M); remembers the last t."""

    def __init__(self, dim: int, hidden_dim: int, n_hidden_layers: int, activation: str, init_scale: float) -> None:
        super().__init__()
        widths = [dim] + [hidden_dim] * n_hidden_layers + [dim]
        layers: list[nn.Module] = []
        for k in range(len(widths) - 1):
            layers.append(nn.Linear(widths[k], widths[k + 1]))
            if k < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            self.net[-1].weight.mul_(init_scale)
            self.net[-1].bias.mul_(init_scale)
        self.last_t: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.last_t = t  # kept as a tensor: no device sync per evaluation
        return self.net(z)  # (B, M)


@register("node")
class NeuralODE(SequenceModel):
    """Neural ODE with flow-map ``step``; see the module docstring.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int or None
        M >= N (None: M = N, no augmentation).
    hidden_dim, n_hidden_layers : int
        MLP width and depth (64, 2).
    activation : str
        One of tanh, relu, elu, softplus, gelu, silu (default tanh).
    dt : float
        Sampling interval: ``step`` integrates over [0, dt] (default 1.0, i.e. time in samples;
        pass the data's dt to measure time in the system's units).
    solver : str
        torchdiffeq method: dopri5 (default), dopri8, bosh3, fehlberg2, adaptive_heun, euler,
        midpoint, rk4, heun2, heun3, explicit_adams, implicit_adams.
    rtol, atol : float
        Tolerances of adaptive solvers (1e-5, 1e-6).
    step_size : float or None
        Fixed-grid step / adaptive first step (default dt).
    max_num_steps : int
        Adaptive steps allowed per solve before an IntegrationError (10000).
    adjoint : bool
        Use ``odeint_adjoint`` (default False).
    init_scale : float
        Scale of the last layer's initial weights (0.1).
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int | None = None,
        *,
        hidden_dim: int = 64,
        n_hidden_layers: int = 2,
        activation: str = "tanh",
        dt: float = 1.0,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-6,
        step_size: float | None = None,
        max_num_steps: int = 10000,
        adjoint: bool = False,
        init_scale: float = 0.1,
    ) -> None:
        check_int("node", 1, obs_dim=obs_dim, hidden_dim=hidden_dim, max_num_steps=max_num_steps)
        check_int("node", 0, n_hidden_layers=n_hidden_layers)
        latent_dim = obs_dim if latent_dim is None else latent_dim
        check_int("node", obs_dim, latent_dim=latent_dim)
        check_positive("node", dt=dt, rtol=rtol, atol=atol, init_scale=init_scale)
        if step_size is not None:
            check_positive("node", step_size=step_size)
        if solver not in FIXED_SOLVERS + ADAPTIVE_SOLVERS:
            raise unknown_name("ODE solver", str(solver), FIXED_SOLVERS + ADAPTIVE_SOLVERS)
        if activation not in ACTIVATIONS:
            raise unknown_name("activation", str(activation), ACTIVATIONS)
        super().__init__(obs_dim, latent_dim)
        self.hidden_dim, self.n_hidden_layers, self.activation = hidden_dim, n_hidden_layers, activation
        self.dt, self.solver, self.rtol, self.atol = float(dt), solver, float(rtol), float(atol)
        self.step_size = None if step_size is None else float(step_size)
        self.max_num_steps, self.adjoint, self.init_scale = int(max_num_steps), bool(adjoint), float(init_scale)
        self.field = VectorField(latent_dim, hidden_dim, n_hidden_layers, activation, init_scale)

    @property
    def hyper(self) -> dict[str, Any]:
        return {
            "hidden_dim": self.hidden_dim,
            "n_hidden_layers": self.n_hidden_layers,
            "activation": self.activation,
            "dt": self.dt,
            "solver": self.solver,
            "rtol": self.rtol,
            "atol": self.atol,
            "step_size": self.step_size,
            "max_num_steps": self.max_num_steps,
            "adjoint": self.adjoint,
            "init_scale": self.init_scale,
        }

    # ------------------------------------------------------------------ solving
    def _options(self) -> dict[str, Any]:
        h = self.dt if self.step_size is None else self.step_size
        if self.solver in FIXED_SOLVERS:  # ceil(dt / h) equal steps: the grid hits every k * dt
            return {"step_size": self.dt / math.ceil(self.dt / h - 1e-9)}
        return {"first_step": h, "max_num_steps": self.max_num_steps}

    def solve(self, z0: torch.Tensor, n_intervals: int = 1) -> torch.Tensor:
        """States on the grid 0, dt, ..., n dt: z0 (B, M) -> (n+1, B, M); IntegrationError on failure."""
        t = torch.arange(n_intervals + 1, dtype=z0.dtype, device=z0.device) * self.dt  # (n+1,)
        kwargs: dict[str, Any] = {"rtol": self.rtol, "atol": self.atol, "method": self.solver, "options": self._options()}
        if self.adjoint:
            kwargs["adjoint_params"] = tuple(self.field.parameters())
        self.field.last_t = None
        try:
            out = (odeint_adjoint if self.adjoint else odeint)(self.field, z0, t, **kwargs)
        except (AssertionError, OverflowError) as exc:  # torchdiffeq signals failures by assert
            raise self._failure(str(exc).split("\n")[0][:200]) from exc
        if not bool(torch.isfinite(out[-1]).all()):
            bad = (~torch.isfinite(out.flatten(1))).any(1).nonzero()
            k = int(bad[0]) if bad.numel() else n_intervals
            raise self._failure("non-finite state", when=k * self.dt)
        return out

    def _failure(self, why: str, when: float | None = None) -> IntegrationError:
        if when is None and self.field.last_t is not None:
            when = float(self.field.last_t)
        at = "" if when is None else f" at t = {when:.6g} (sampling step {int(when // self.dt)} of this solve)"
        return IntegrationError(
            f"neural ODE: solver {self.solver!r} failed{at} ({why}); the vector field has probably "
            "diverged (roll back / lower the learning rate), or use tighter dt/step_size or another solver"
        )

    @staticmethod
    def _at_step(exc: IntegrationError, k: int, dt: float) -> IntegrationError:
        return IntegrationError(f"at step {k} (time {k * dt:.6g} + local t): {exc}")

    # ----------------------------------------------------------------- protocol
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> [x; zeros] (augmented coordinates start at 0); a context (B, C, N) warms them
        up by the teacher-forced protocol over x_0 .. x_{C-2}, then z = [x_{C-1}; augmented]."""
        ctx = self.check_context(x)  # (B, C, N)
        z = super().init_state(ctx[:, 0])  # (B, M)
        if self.latent_dim == self.obs_dim:
            return super().init_state(ctx[:, -1])
        for t in range(ctx.shape[1] - 1):
            try:
                z = self.step(self.data_state(ctx[:, t], z))
            except IntegrationError as exc:
                raise self._at_step(exc, t, self.dt) from exc
        return self.data_state(ctx[:, -1], z)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """Flow map over one sampling interval: (B, M) -> (B, M)."""
        return self.solve(z, 1)[-1]

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """d Phi_dt / dz by autograd through the solver: (B, M) -> (B, M, M)."""
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)  # (B, M)
            out = self.step(zz)  # (B, M)
            rows = [torch.autograd.grad(out[:, i].sum(), zz, retain_graph=i < self.latent_dim - 1)[0] for i in range(self.latent_dim)]
        return torch.stack(rows, dim=1).to(z.dtype)  # (B, M, M): [b, i, j] = d out_i / d z_j

    def teacher_forced_window(self, x: torch.Tensor) -> torch.Tensor:
        if self.latent_dim != self.obs_dim:  # augmented coordinates carry memory: sequential
            return super().teacher_forced_window(x)
        Bsz, T1, N = x.shape
        flat = x[:, :-1].reshape(-1, N)  # (B*T, N): every data point is an initial condition
        return self.step(flat).reshape(Bsz, T1 - 1, N)

    def protocol_window(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if bool((alpha == 0).all()):  # free run: one solve over the grid
            return self.solve(self.init_state(x[:, 0]), x.shape[1] - 1)[1:, :, : self.obs_dim].transpose(0, 1)
        z = self.init_state(x[:, 0])
        preds = []
        for t in range(x.shape[1] - 1):
            try:
                z = self.step(self.force(z, x[:, t], alpha[t]))
            except IntegrationError as exc:
                raise self._at_step(exc, t, self.dt) from exc
            preds.append(self.observe(z))
        return torch.stack(preds, dim=1)

    @torch.no_grad()
    def generate(self, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Free run on the grid 0, dt, ..., (n-1) dt in one solve: -> (B, n_steps, N)."""
        if n_steps < 1:
            raise ConfigError(f"n_steps must be >= 1, got {n_steps}")
        zs = self.solve(self.init_state(x0), n_steps - 1)  # (n, B, M)
        return zs[:, :, : self.obs_dim].transpose(0, 1).contiguous()
