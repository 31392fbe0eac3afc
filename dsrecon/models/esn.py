"""Echo state network (reservoir computer) with a ridge-regression readout.

Glossary (teaching size)
------------------------
B   batch (independent trajectories)
T   time steps
N   observed dim (``obs_dim``)
R   reservoir size (``reservoir_size``; default latent_dim - N)
F   readout features = 1 (bias) + N (input, if ``readout_input``) + R
M   latent dim = N + R

Model (Jaeger 2001 leaky-integrator ESN; Pathak et al. 2018 for chaotic systems)::

    r_{t+1} = (1 - a) r_t + a tanh(W r_t + W_in u_t + b)       W (R, R) sparse, fixed
    u_{t+1} = W_out phi(u_t, r_{t+1})                          phi = [1; u_t; r~_{t+1}]  (F,)

with r~ = r, or with the even-indexed units squared (``square_even``, Pathak et al. 2018; it
breaks the r -> -r symmetry of tanh reservoirs). W has ``density`` nonzero entries uniform in
[-1, 1], rescaled to ``spectral_radius``; W_in is uniform in [-input_scaling, input_scaling];
b uniform in [-bias_scaling, bias_scaling]; a = ``leak_rate``. Only W_out is learned, in
closed form (ridge regression, Tikhonov ``ridge``, the bias feature unpenalised) on
reservoir states driven by the data after a ``washout``. In the toolkit's protocol::

    z_t = [u_t (N) ; r_t (R)],  observe(z) = u_t,  step(z) = [u_{t+1} ; r_{t+1}]

so open-loop driving is full teacher forcing of the slot and generation is the closed loop.

Training: the ESN is *not* trained by gradient descent (``trainable_by_gradient = False``; it
has no nn.Parameters). A trainer must call :meth:`EchoStateNetwork.fit_closed_form` (data ->
fitted model, using the ``washout`` and ``ridge`` hyper-parameters) or
:meth:`EchoStateNetwork.fit_readout` (explicit arguments) instead.

References
----------
H. Jaeger, "The 'echo state' approach to analysing and training recurrent neural networks",
GMD Report 148 (2001).
J. Pathak, B. Hunt, M. Girvan, Z. Lu, E. Ott, "Model-free prediction of large spatiotemporally
chaotic systems from data: a reservoir computing approach", Phys. Rev. Lett. 120, 024102 (2018).
M. Lukosevicius, "A practical guide to applying echo state networks", Neural Networks:
Tricks of the Trade (2012).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from dsrecon.data.trajectory import Trajectory
from dsrecon.errors import ConfigError, DataError
from dsrecon.models.registry import register
from dsrecon.models.sequence import SequenceModel, check_int, check_positive


@register("esn")
class EchoStateNetwork(SequenceModel):
    """Echo state network; see the module docstring.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int or None
        M = N + R; give latent_dim or reservoir_size (or both, consistent).
    reservoir_size : int or None
        R.
    spectral_radius, leak_rate, input_scaling, bias_scaling, density : float
        Reservoir hyper-parameters (0.9, 1.0, 0.3, 0.0, 0.02).
    square_even, readout_input : bool
        Readout features (True, True).
    ridge : float
        Tikhonov regularisation of the readout (1e-2; suits z-scored, noisy data).
    washout : int
        Initial driven steps discarded by :meth:`fit_closed_form` (100).
    """

    trainable_by_gradient: ClassVar[bool] = False

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int | None = None,
        *,
        reservoir_size: int | None = None,
        spectral_radius: float = 0.9,
        leak_rate: float = 1.0,
        input_scaling: float = 0.3,
        bias_scaling: float = 0.0,
        density: float = 0.02,
        square_even: bool = True,
        readout_input: bool = True,
        ridge: float = 1e-2,
        washout: int = 100,
    ) -> None:
        check_int("esn", 1, obs_dim=obs_dim)
        if reservoir_size is None:
            if latent_dim is None:
                raise ConfigError("esn: give latent_dim (= N + reservoir size) or reservoir_size")
            reservoir_size = latent_dim - obs_dim
        check_int("esn", 1, reservoir_size=reservoir_size)
        if latent_dim is not None and latent_dim != obs_dim + reservoir_size:
            raise ConfigError(
                f"esn: latent_dim={latent_dim} but obs_dim + reservoir_size = {obs_dim + reservoir_size}; "
                "pass one of them (latent_dim=None derives it)"
            )
        check_positive("esn", spectral_radius=spectral_radius, leak_rate=leak_rate, input_scaling=input_scaling, density=density)
        check_int("esn", 0, washout=washout)
        if leak_rate > 1 or density > 1 or bias_scaling < 0 or not ridge >= 0:
            raise ConfigError(
                f"esn: need 0 < leak_rate <= 1, 0 < density <= 1, bias_scaling >= 0, ridge >= 0; got "
                f"{leak_rate}, {density}, {bias_scaling}, {ridge}"
            )
        super().__init__(obs_dim, obs_dim + reservoir_size)
        R = self.reservoir_size = int(reservoir_size)
        self.spectral_radius, self.leak_rate = float(spectral_radius), float(leak_rate)
        self.input_scaling, self.bias_scaling, self.density = float(input_scaling), float(bias_scaling), float(density)
        self.square_even, self.readout_input = bool(square_even), bool(readout_input)
        self.ridge, self.washout = float(ridge), int(washout)
        dtype = torch.get_default_dtype()
        W = (torch.rand(R, R, dtype=torch.float64) * 2 - 1) * (torch.rand(R, R, dtype=torch.float64) < density)  # (R, R)
        rho = torch.linalg.eigvals(W).abs().max()
        if rho > 0:
            W = W * (spectral_radius / rho)
        self.register_buffer("W", W.to(dtype))  # (R, R)
        self.register_buffer("W_in", ((torch.rand(R, obs_dim) * 2 - 1) * input_scaling).to(dtype))  # (R, N)
        self.register_buffer("bias", ((torch.rand(R) * 2 - 1) * bias_scaling).to(dtype))  # (R,)
        self.register_buffer("W_out", torch.zeros(obs_dim, self.n_features, dtype=dtype))  # (N, F)
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("_even", torch.arange(R) % 2 == 0, persistent=False)  # (R,) squared units
        self.train_mse_: float | None = None

    @property
    def n_features(self) -> int:
        return 1 + (self.obs_dim if self.readout_input else 0) + self.reservoir_size

    @property
    def hyper(self) -> dict[str, Any]:
        return {
            "reservoir_size": self.reservoir_size,
            "spectral_radius": self.spectral_radius,
            "leak_rate": self.leak_rate,
            "input_scaling": self.input_scaling,
            "bias_scaling": self.bias_scaling,
            "density": self.density,
            "square_even": self.square_even,
            "readout_input": self.readout_input,
            "ridge": self.ridge,
            "washout": self.washout,
        }

    @property
    def dtype(self) -> torch.dtype:  # no parameters: the buffers carry the dtype
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        return self.W.device

    # ------------------------------------------------------------ reservoir
    def reservoir_update(self, r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """r_{t+1} from r_t (B, R) and u_t (B, N)."""
        pre = r @ self.W.T + u @ self.W_in.T + self.bias  # (B, R)
        return (1 - self.leak_rate) * r + self.leak_rate * torch.tanh(pre)

    def features(self, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """phi(u_t, r_{t+1}) = [1; u_t; r~_{t+1}]: (B, N), (B, R) -> (B, F)."""
        if self.square_even:
            r = torch.where(self._even, r * r, r)
        parts = [r.new_ones(r.shape[0], 1)] + ([u] if self.readout_input else []) + [r]
        return torch.cat(parts, dim=-1)

    # ------------------------------------------------------------- protocol
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """[u_last; reservoir driven by the context (zeros for a single point)]: -> (B, M)."""
        ctx = self.check_context(x)  # (B, C, N)
        r = ctx.new_zeros(ctx.shape[0], self.reservoir_size)  # (B, R)
        for t in range(ctx.shape[1] - 1):
            r = self.reservoir_update(r, ctx[:, t])
        return torch.cat([ctx[:, -1], r], dim=-1)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        u, r = z[:, : self.obs_dim], z[:, self.obs_dim :]  # (B, N), (B, R)
        r = self.reservoir_update(r, u)
        return torch.cat([self.features(u, r) @ self.W_out.T, r], dim=-1)  # (B, M)

    @torch.no_grad()
    def generate(self, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
        if not bool(self.fitted):
            raise ConfigError("esn: the readout is not fitted; call fit_closed_form(data) (or fit_readout) first")
        return super().generate(x0, n_steps)

    # ------------------------------------------------------------------ fit
    @torch.no_grad()
    def fit_readout(self, x: Any, washout: int | None = None, ridge: float | None = None) -> "EchoStateNetwork":
        """Fit W_out by ridge regression on the data-driven reservoir; returns self.

        x : (T, N) or (B, T, N) tensor or array. The reservoir starts at zero, is driven by
        x_0 .. x_{T-2}, and the pairs (phi(x_t, r_{t+1}), x_{t+1}) with t >= washout enter
        W_out = argmin ||Y - Phi W^T||^2 + ridge ||W'||^2 (W' = W without the bias column),
        solved in float64 by a streamed QR factorisation of [Phi | Y] (TSQR; no normal equations,
        so the conditioning is not squared) with the ridge rows appended.
        Sets ``fitted`` and ``train_mse_`` (one-step mean squared error on those pairs).
        """
        washout = self.washout if washout is None else washout
        ridge = self.ridge if ridge is None else ridge
        check_int("esn", 0, washout=washout)
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
            raise ConfigError(f"esn: ridge must be >= 0, got {ridge!r}")
        xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if xt.dim() == 2:
            xt = xt[None]
        if xt.dim() != 3 or xt.shape[-1] != self.obs_dim:
            raise DataError(f"esn: fit data must be (T, N) or (B, T, N) with N = {self.obs_dim}, got {tuple(xt.shape)}")
        if xt.shape[1] < washout + 2:
            raise DataError(f"esn: {xt.shape[1]} time steps leave nothing after washout={washout}; need >= washout + 2")
        if not bool(torch.isfinite(xt).all()):
            raise DataError("esn: fit data contain NaN/inf; clean or drop those trajectories")
        xt = xt.to(device=self.device, dtype=self.dtype)
        Fdim, N = self.n_features, self.obs_dim
        R: torch.Tensor | None = None  # running triangular factor of [Phi | Y]: (<= F+N, F+N)
        Bsz, T = xt.shape[0], xt.shape[1]
        r = xt.new_zeros(Bsz, self.reservoir_size)  # (B, R)
        states: list[torch.Tensor] = []  # r_{t+1} for the pending t's
        t_first = washout  # first t of the pending block

        def flush(t_end: int) -> None:  # TSQR: R <- qr([R; Phi_block | Y_block]).R, memory-bounded
            nonlocal R, t_first
            if states:
                rs = torch.stack(states, 1).reshape(-1, self.reservoir_size)  # (B*k, R)
                u = xt[:, t_first:t_end].reshape(-1, N)  # (B*k, N) inputs x_t
                y = xt[:, t_first + 1 : t_end + 1].reshape(-1, N)  # (B*k, N) targets x_{t+1}
                block = torch.cat([self.features(u, rs), y], dim=-1).double()  # (B*k, F+N)
                R = torch.linalg.qr(block if R is None else torch.cat([R, block]), mode="r").R
                states.clear()
                t_first = t_end

        for t in range(T - 1):
            r = self.reservoir_update(r, xt[:, t])
            if t >= washout:
                states.append(r)
                if len(states) * Bsz >= 4096:
                    flush(t + 1)
        flush(T - 1)
        n = Bsz * (T - 1 - washout)
        assert R is not None
        reg = torch.full((Fdim,), float(ridge) ** 0.5, dtype=torch.float64, device=self.device)
        reg[0] = 0.0  # the bias feature is not penalised
        aug = torch.cat([R, torch.cat([torch.diag(reg), R.new_zeros(Fdim, N)], dim=1)])  # ridge rows
        R2 = torch.linalg.qr(aug, mode="r").R  # (F+N, F+N)
        Wt = torch.linalg.lstsq(R2[:Fdim, :Fdim], R2[:Fdim, Fdim:]).solution  # (F, N)
        self.W_out.copy_(Wt.T.to(self.dtype))
        self.fitted.fill_(True)
        sse = float((R[:, Fdim:] - R[:, :Fdim] @ Wt).pow(2).sum())  # ||Y - Phi W||^2
        self.train_mse_ = sse / (n * N)
        return self

    def fit_closed_form(self, data: Any) -> "EchoStateNetwork":
        """The trainer's entry point: fit the readout on a Trajectory / array / tensor; returns self.

        Trajectories flagged ``failed`` are dropped. Uses the ``washout`` and ``ridge`` hypers.
        """
        if isinstance(data, Trajectory):
            vals = np.asarray(data.values)
            if data.failed is not None:
                vals = vals[~np.asarray(data.failed, dtype=bool)]
            if vals.shape[0] == 0:
                raise DataError("esn: every trajectory is flagged failed; nothing to fit")
            data = vals
        return self.fit_readout(data)
