"""LSSL: stacked linear state-space layers (HiPPO-LegS, bilinear) as an autonomous DSR model.

Glossary (teaching size)
------------------------
B   batch
T   time steps of a window
N   observed dim (``obs_dim``)
D   model width = SSM channels per layer (``d_model``; the LSSL paper's H)
S   SSM state size per channel (``d_state``; the LSSL paper's N)
L   number of stacked layers (``n_layers``)
M   latent dim = N + L * D * S (the flattened protocol state; see below)

Layer (Gu et al. 2021): per channel d, x' = A x + B u, y = C_d x + D_d u with A (S, S), B (S,)
HiPPO-LegS, a learnable step size dt_d = exp(log_dt_d) (initialised log-uniform in
[dt_min, dt_max]) and bilinear discretisation (:mod:`dsrecon.models.hippo`). ``learn_ab=False``
keeps A and B fixed at HiPPO-LegS ("LSSL-fixed" in the paper); True learns them too. Each layer
is pre-norm residual::

    v = LayerNorm(u);   y = SSM(v) + D * v;   u <- u + Linear(GELU(y))

Two equivalent evaluation modes (tested to agree):

* convolutional (training windows, :meth:`LSSLLayer.forward_seq`): kernel
  K = (C dB, C dA dB, ..., C dA^{T-1} dB) by repeated squaring and a causal FFT convolution,
  O(D S^2 T + B D T log T);
* recurrent (generation, the protocol's ``step``, :meth:`LSSLLayer.forward_step`):
  s_t = dA s_{t-1} + dB v_t, y_t = C s_t + D v_t.

Autonomous DSR model: an encoder Linear(N, D), L layers, LayerNorm, decoder Linear(D, N); the
output is the prediction of the next observation (``predict_increment=True``: x_{t+1} = x_t +
decoder(.), an Euler-like residual that starts near persistence) and it is fed back as the next
input. The protocol state folds every layer's SSM state into z::

    z_t = [x_t (N) ; s^1_{t-1} (D*S) ; ... ; s^L_{t-1} (D*S)]

where s^l_{t-1} has seen the inputs up to x_{t-1}; ``step`` consumes x_t, updates the states and
writes the prediction of x_{t+1}. Teacher forcing replaces (GTF-mixes) the x slot and leaves
the SSM states alone. ``latent_dim`` is this true size M; pass ``latent_dim=None`` to derive it
(any other value must equal M; a ConfigError says which value the hyper-parameters imply).

``forward_window`` with alpha = 1 runs the convolutional mode on x_0 .. x_{T-1} (zero initial
states, as ``init_state(x_0)`` gives) and returns the predictions of x_1 .. x_T.

References
----------
A. Gu, I. Johnson, K. Goel, K. Saab, T. Dao, A. Rudra, C. Re, "Combining recurrent,
convolutional, and continuous-time models with linear state-space layers", NeurIPS 2021.
A. Gu, K. Goel, C. Re, "Efficiently modeling long sequences with structured state spaces",
ICLR 2022 (HiPPO-LegS form used here).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dsrecon.errors import ConfigError
from dsrecon.models.hippo import bilinear, causal_fft_conv, krylov, legs
from dsrecon.models.registry import register
from dsrecon.models.sequence import SequenceModel, check_int, check_positive, resolve_latent_dim


class LSSLLayer(nn.Module):
    """D independent HiPPO-LegS SSM channels of size S + GELU + linear mixing (pre-norm residual)."""

    def __init__(self, d_model: int, d_state: int, dt_min: float, dt_max: float, learn_ab: bool) -> None:
        super().__init__()
        A, B = legs(d_state, dtype=torch.get_default_dtype())  # (S, S), (S,)
        if learn_ab:
            self.A, self.B = nn.Parameter(A), nn.Parameter(B)
        else:
            self.register_buffer("A", A)
            self.register_buffer("B", B)
        lo, hi = math.log(dt_min), math.log(dt_max)
        self.log_dt = nn.Parameter(torch.rand(d_model) * (hi - lo) + lo)  # (D,)
        self.C = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))  # (D, S)
        self.D = nn.Parameter(torch.randn(d_model))  # (D,)
        self.norm = nn.LayerNorm(d_model)
        self.mix = nn.Linear(d_model, d_model)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear discretisation: dA (D, S, S), dB (D, S)."""
        return bilinear(self.A, self.B, torch.exp(self.log_dt))

    def forward_seq(self, u: torch.Tensor, return_state: bool = False):
        """Convolutional mode from zero state: u (B, T, D) -> u' (B, T, D) [, s_T (B, D, S)]."""
        dA, dB = self.discretize()  # (D, S, S), (D, S)
        v = self.norm(u).transpose(1, 2)  # (B, D, T)
        X = krylov(dA, dB, u.shape[1])  # (D, S, T)  dA^k dB
        K = torch.einsum("ds,dst->dt", self.C, X)  # (D, T)
        y = causal_fft_conv(v, K) + self.D[:, None] * v  # (B, D, T)
        out = u + self.mix(F.gelu(y.transpose(1, 2)))  # (B, T, D)
        if not return_state:
            return out
        s_last = torch.einsum("dst,bdt->bds", X, v.flip(-1))  # (B, D, S)  sum_k dA^k dB v_{T-1-k}
        return out, s_last

    def forward_step(self, u: torch.Tensor, s: torch.Tensor, disc: tuple[torch.Tensor, torch.Tensor]):
        """Recurrent mode: u (B, D), s (B, D, S) -> u' (B, D), s' (B, D, S)."""
        dA, dB = disc
        v = self.norm(u)  # (B, D)
        s = torch.einsum("dij,bdj->bdi", dA, s) + dB * v[..., None]  # (B, D, S)
        y = torch.einsum("ds,bds->bd", self.C, s) + self.D * v  # (B, D)
        return u + self.mix(F.gelu(y)), s


@register("lssl")
class LSSL(SequenceModel):
    """Autonomous LSSL stack; see the module docstring.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int or None
        M = N + n_layers * d_model * d_state, or None to derive it.
    d_model, d_state, n_layers : int
        D, S, L (defaults 32, 16, 2).
    dt_min, dt_max : float
        Range of the log-uniform initial step sizes (default 1e-2, 0.5; the LSSL paper uses
        1e-3, 1e-1 for long-range tasks). The slowest memory time scale is about 1 / dt_min
        steps: for DSR it should fit inside the training windows (200 steps by default), else
        free runs visit memory states never seen in training (on the Lorenz-63 paper data,
        1e-2..0.5 gave clearly better attractors than 1e-3..1e-1 in short trials).
    learn_ab : bool
        Learn A and B too (default False: HiPPO-LegS fixed, learnable dt, C, D).
    predict_increment : bool
        Output x_t + decoder(.) (default True) instead of decoder(.).
    """

    latent_dim_from_hyper: ClassVar[bool] = True

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int | None = None,
        *,
        d_model: int = 32,
        d_state: int = 16,
        n_layers: int = 2,
        dt_min: float = 1e-2,
        dt_max: float = 0.5,
        learn_ab: bool = False,
        predict_increment: bool = True,
    ) -> None:
        check_int("lssl", 1, obs_dim=obs_dim, d_model=d_model, d_state=d_state, n_layers=n_layers)
        check_positive("lssl", dt_min=dt_min, dt_max=dt_max)
        if dt_min > dt_max:
            raise ConfigError(f"lssl: dt_min={dt_min} must not exceed dt_max={dt_max}")
        implied = obs_dim + n_layers * d_model * d_state
        M = resolve_latent_dim("lssl", latent_dim, implied, "N + n_layers * d_model * d_state")
        super().__init__(obs_dim, M)
        self.d_model, self.d_state, self.n_layers = d_model, d_state, n_layers
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.learn_ab, self.predict_increment = bool(learn_ab), bool(predict_increment)
        self.encoder = nn.Linear(obs_dim, d_model)
        self.layers = nn.ModuleList(LSSLLayer(d_model, d_state, dt_min, dt_max, learn_ab) for _ in range(n_layers))
        self.norm_f = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, obs_dim)
        with torch.no_grad():  # start close to persistence / a small map: stable free runs at init
            self.decoder.weight.mul_(0.1)
            self.decoder.bias.zero_()
        self._frozen: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def hyper(self) -> dict[str, Any]:
        return {
            "d_model": self.d_model,
            "d_state": self.d_state,
            "n_layers": self.n_layers,
            "dt_min": self.dt_min,
            "dt_max": self.dt_max,
            "learn_ab": self.learn_ab,
            "predict_increment": self.predict_increment,
        }

    # ---------------------------------------------------------------- helpers
    def _disc(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._frozen if self._frozen is not None else [layer.discretize() for layer in self.layers]

    def _readout(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.norm_f(u))  # (..., N)
        return x + out if self.predict_increment else out

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z[:, : self.obs_dim]  # (B, N)
        s = z[:, self.obs_dim :].reshape(z.shape[0], self.n_layers, self.d_model, self.d_state)  # (B, L, D, S)
        return x, s

    # --------------------------------------------------------------- protocol
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """[x_last; SSM states after the context]: x (B, N) or (B, C, N) -> (B, M)."""
        ctx = self.check_context(x)  # (B, C, N)
        Bsz = ctx.shape[0]
        if ctx.shape[1] == 1:
            states = ctx.new_zeros(Bsz, self.latent_dim - self.obs_dim)
        else:
            u = self.encoder(ctx[:, :-1])  # (B, C-1, D)
            ss = []
            for layer in self.layers:
                u, s = layer.forward_seq(u, return_state=True)
                ss.append(s)  # (B, D, S)
            states = torch.stack(ss, dim=1).reshape(Bsz, -1)  # (B, L*D*S)
        return torch.cat([ctx[:, -1], states], dim=-1)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        x, s = self._split(z)
        u = self.encoder(x)  # (B, D)
        new = []
        for k, (layer, disc) in enumerate(zip(self.layers, self._disc())):
            u, s_k = layer.forward_step(u, s[:, k], disc)
            new.append(s_k)  # (B, D, S)
        x_next = self._readout(x, u)  # (B, N)
        return torch.cat([x_next, torch.stack(new, dim=1).reshape(z.shape[0], -1)], dim=-1)

    def teacher_forced_window(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional mode: (B, T+1, N) -> predictions of x_1..x_T (B, T, N)."""
        inp = x[:, :-1]  # (B, T, N)
        u = self.encoder(inp)  # (B, T, D)
        for layer in self.layers:
            u = layer.forward_seq(u)
        return self._readout(inp, u)

    @torch.no_grad()
    def generate(self, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Free run (recurrent mode) with the discretisation computed once."""
        self._frozen = self._disc()
        try:
            return super().generate(x0, n_steps)
        finally:
            self._frozen = None
