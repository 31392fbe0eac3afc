"""Mamba-style selective state-space model as an autonomous DSR model.

Glossary (teaching size, as in mamba-minimal)
---------------------------------------------
B   batch
T   time steps of a window
N   observed dim (``obs_dim``)
D   model width (``d_model``)
E   expansion factor (``expand``); ED = E * D is the inner width of a block
S   SSM state size per inner channel (``d_state``; the Mamba paper's N)
K   depthwise causal convolution width (``d_conv``)
R   rank of the Delta projection (``dt_rank``, default ceil(D / 16))
L   number of residual blocks (``n_layers``)
M   latent dim = N + L * ED * (K - 1 + S) (the flattened protocol state; see below)

Block (Gu & Dao 2023, Fig. 3 / mamba-minimal), pre-norm residual ``u <- u + Block(RMSNorm(u))``::

    [x, res] = in_proj(u)                       (B, T, 2 ED)
    x = SiLU(causal depthwise conv1d_K(x))      (B, T, ED)
    [delta_r, Bt, Ct] = x_proj(x)               (B, T, R), (B, T, S), (B, T, S)  input-dependent
    Delta = softplus(dt_proj(delta_r))          (B, T, ED)                       input-dependent
    y = SelectiveScan(x, Delta, A, Bt, Ct, D)   (B, T, ED)    A = -exp(A_log) (ED, S)
    out = out_proj(y * SiLU(res))               (B, T, D)

Discretisation: zero-order hold for A, dA_t = exp(Delta_t A), and the paper's simplification
dB_t = Delta_t B_t (Euler for B; Gu & Dao, section 2 / 3.5), so
h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t x_t and y_t = <C_t, h_t> + D x_t.
Initialisation as in the paper: S4D-real A_log[e, s] = log(s + 1); dt_proj bias so that
softplus(bias) is log-uniform in [dt_min, dt_max]; D = 1.

Training windows use the parallel form (:func:`dsrecon.models.scan.selective_scan`, ``scan``
hyper-parameter; "auto": the mamba-ssm CUDA kernel when installed and on CUDA, the compiled
numba kernel for float32/float64 CPU tensors, the pure-PyTorch chunked scan otherwise).
Generation and the protocol's ``step`` use the recurrent form with the convolution buffer and
SSM state. The protocol state folds all of it into z::

    z_t = [x_t (N) ; for each layer l: conv buffer (ED * (K-1)) ; SSM state h (ED * S)]

(the buffer holds the last K-1 conv inputs and h the SSM state after the inputs up to x_{t-1}).
``step`` consumes x_t and writes the prediction of x_{t+1} (``predict_increment=True``:
x_t + decoder(.)). Teacher forcing GTF-mixes the x slot and leaves buffers and states alone.
``latent_dim`` is this true size M; pass ``latent_dim=None`` to derive it.

References
----------
A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
arXiv:2312.00752 (2023).
J. Ma, mamba-minimal (github.com/johnma2006/mamba-minimal): the shape-annotated teaching version.
A. Gu, A. Gupta, K. Goel, C. Re, "On the parameterization and initialization of diagonal state
space models", NeurIPS 2022 (S4D-real initialisation).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dsrecon.errors import ConfigError
from dsrecon.models.registry import register
from dsrecon.models.scan import SCAN_METHODS, selective_scan
from dsrecon.models.sequence import SequenceModel, check_int, check_positive, resolve_latent_dim


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim (Zhang & Sennrich 2019)."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))  # (D,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaBlock(nn.Module):
    """One selective-SSM block (without the residual and norm); see the module docstring."""

    def __init__(self, d_model: int, d_state: int, expand: int, d_conv: int, dt_rank: int, dt_min: float, dt_max: float) -> None:
        super().__init__()
        ED = expand * d_model
        self.ED, self.S, self.K, self.R = ED, d_state, d_conv, dt_rank
        self.in_proj = nn.Linear(d_model, 2 * ED, bias=False)
        self.conv = nn.Conv1d(ED, ED, d_conv, groups=ED, bias=True)  # weight (ED, 1, K)
        self.x_proj = nn.Linear(ED, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, ED, bias=True)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
            dt = torch.exp(torch.rand(ED) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=1e-4)  # (ED,)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^{-1}(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.get_default_dtype())).repeat(ED, 1))  # (ED, S)
        self.D = nn.Parameter(torch.ones(ED))  # (ED,)
        self.out_proj = nn.Linear(ED, d_model, bias=False)

    def _ssm_params(self, xc: torch.Tensor):
        dbc = self.x_proj(xc)  # (..., R + 2S)
        dlt, Bt, Ct = dbc.split([self.R, self.S, self.S], dim=-1)  # (..., R), (..., S), (..., S)
        delta = F.softplus(self.dt_proj(dlt))  # (..., ED)
        return delta, Bt, Ct

    def forward_seq(self, u, conv_state=None, h0=None, method: str = "auto"):
        """Parallel form: u (B, T, D) -> out (B, T, D), conv buffer (B, ED, K-1), h_T (B, ED, S)."""
        Bsz, T, _ = u.shape
        x, res = self.in_proj(u).chunk(2, dim=-1)  # (B, T, ED) each
        if conv_state is None:
            conv_state = u.new_zeros(Bsz, self.ED, self.K - 1)  # (B, ED, K-1)
        xpad = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)  # (B, ED, K-1+T)
        xc = F.conv1d(xpad, self.conv.weight, self.conv.bias, groups=self.ED)  # (B, ED, T)
        xc = F.silu(xc.transpose(1, 2))  # (B, T, ED)
        delta, Bt, Ct = self._ssm_params(xc)  # (B, T, ED), (B, T, S), (B, T, S)
        A = -torch.exp(self.A_log)  # (ED, S)
        y, h_last = selective_scan(xc, delta, A, Bt, Ct, self.D, h0, method=method)  # (B, T, ED)
        out = self.out_proj(y * F.silu(res))  # (B, T, D)
        return out, xpad[..., T:], h_last

    def forward_step(self, u, conv_state, h):
        """Recurrent form: u (B, D), buffer (B, ED, K-1), h (B, ED, S) -> out (B, D), buffer', h'."""
        x, res = self.in_proj(u).chunk(2, dim=-1)  # (B, ED) each
        xpad = torch.cat([conv_state, x[..., None]], dim=-1)  # (B, ED, K)
        xc = F.silu((xpad * self.conv.weight[:, 0, :]).sum(-1) + self.conv.bias)  # (B, ED)
        delta, Bt, Ct = self._ssm_params(xc)  # (B, ED), (B, S), (B, S)
        A = -torch.exp(self.A_log)  # (ED, S)
        h = torch.exp(delta[..., None] * A) * h + (delta * xc)[..., None] * Bt[:, None, :]  # (B, ED, S)
        y = (h * Ct[:, None, :]).sum(-1) + self.D * xc  # (B, ED)
        return self.out_proj(y * F.silu(res)), xpad[..., 1:], h


@register("mamba")
class Mamba(SequenceModel):
    """Autonomous Mamba stack; see the module docstring.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int or None
        M = N + n_layers * expand * d_model * (d_conv - 1 + d_state), or None to derive it.
    d_model, d_state, expand, d_conv, n_layers : int
        D, S, E, K, L (defaults 16, 16, 2, 4, 2).
    dt_rank : int or "auto"
        R (default ceil(D / 16)).
    dt_min, dt_max : float
        Range of the log-uniform initial step sizes (default 1e-2, 0.5; the Mamba paper uses
        1e-3, 1e-1 for long-range tasks). The slowest memory time scale is about 1 / dt_min
        steps: for DSR it should fit inside the training windows (200 steps by default), else
        free runs visit memory states never seen in training (on the Lorenz-63 paper data,
        1e-2..0.5 gave clearly better attractors than 1e-3..1e-1 in short trials).
    predict_increment : bool
        Output x_t + decoder(.) (default True) instead of decoder(.).
    scan : {"auto", "parallel", "blelloch", "sequential", "numba", "cuda"}
        Selective-scan implementation for windows (see :func:`dsrecon.models.scan.selective_scan`).
    """

    latent_dim_from_hyper: ClassVar[bool] = True

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int | None = None,
        *,
        d_model: int = 16,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        n_layers: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-2,
        dt_max: float = 0.5,
        predict_increment: bool = True,
        scan: str = "auto",
    ) -> None:
        check_int("mamba", 1, obs_dim=obs_dim, d_model=d_model, d_state=d_state, expand=expand, d_conv=d_conv, n_layers=n_layers)
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        check_int("mamba", 1, dt_rank=dt_rank)
        check_positive("mamba", dt_min=dt_min, dt_max=dt_max)
        if dt_min > dt_max:
            raise ConfigError(f"mamba: dt_min={dt_min} must not exceed dt_max={dt_max}")
        if scan not in SCAN_METHODS:
            raise ConfigError(f"mamba: unknown scan {scan!r}; use one of {', '.join(SCAN_METHODS)}")
        ED = expand * d_model
        implied = obs_dim + n_layers * ED * (d_conv - 1 + d_state)
        M = resolve_latent_dim("mamba", latent_dim, implied, "N + n_layers * expand * d_model * (d_conv - 1 + d_state)")
        super().__init__(obs_dim, M)
        self.d_model, self.d_state, self.expand, self.d_conv = d_model, d_state, expand, d_conv
        self.n_layers, self.dt_rank, self.ED = n_layers, int(dt_rank), ED
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.predict_increment, self.scan = bool(predict_increment), scan
        self.encoder = nn.Linear(obs_dim, d_model)
        self.norms = nn.ModuleList(RMSNorm(d_model) for _ in range(n_layers))
        self.blocks = nn.ModuleList(
            MambaBlock(d_model, d_state, expand, d_conv, self.dt_rank, dt_min, dt_max) for _ in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model)
        self.decoder = nn.Linear(d_model, obs_dim)
        with torch.no_grad():  # start close to persistence: stable free runs at init
            self.decoder.weight.mul_(0.1)
            self.decoder.bias.zero_()

    @property
    def hyper(self) -> dict[str, Any]:
        return {
            "d_model": self.d_model,
            "d_state": self.d_state,
            "expand": self.expand,
            "d_conv": self.d_conv,
            "n_layers": self.n_layers,
            "dt_rank": self.dt_rank,
            "dt_min": self.dt_min,
            "dt_max": self.dt_max,
            "predict_increment": self.predict_increment,
            "scan": self.scan,
        }

    # ---------------------------------------------------------------- layout
    @property
    def _layer_size(self) -> int:
        return self.ED * (self.d_conv - 1 + self.d_state)

    def _unpack(self, z: torch.Tensor):
        """z (B, M) -> x (B, N), [(buffer (B, ED, K-1), h (B, ED, S)) per layer]."""
        Bsz, N, ED, K1 = z.shape[0], self.obs_dim, self.ED, self.d_conv - 1
        mem = z[:, N:].reshape(Bsz, self.n_layers, self._layer_size)  # (B, L, ED*(K-1+S))
        states = [
            (mem[:, l, : ED * K1].reshape(Bsz, ED, K1), mem[:, l, ED * K1 :].reshape(Bsz, ED, self.d_state))
            for l in range(self.n_layers)
        ]
        return z[:, :N], states

    @staticmethod
    def _pack(x: torch.Tensor, states) -> torch.Tensor:
        parts = [x] + [t.reshape(x.shape[0], -1) for st in states for t in st]
        return torch.cat(parts, dim=-1)  # (B, M)

    def _readout(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.norm_f(u))  # (..., N)
        return x + out if self.predict_increment else out

    def _run_seq(self, inp: torch.Tensor):
        """Parallel form from zero states: inp (B, T, N) -> u (B, T, D), final states per layer."""
        u = self.encoder(inp)  # (B, T, D)
        states = []
        for norm, block in zip(self.norms, self.blocks):
            out, buf, h = block.forward_seq(norm(u), method=self.scan)
            u = u + out  # (B, T, D)
            states.append((buf, h))
        return u, states

    # --------------------------------------------------------------- protocol
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """[x_last; conv buffers and SSM states after the context]: (B, N) or (B, C, N) -> (B, M)."""
        ctx = self.check_context(x)  # (B, C, N)
        if ctx.shape[1] == 1:
            return torch.cat([ctx[:, 0], ctx.new_zeros(ctx.shape[0], self.latent_dim - self.obs_dim)], dim=-1)
        _, states = self._run_seq(ctx[:, :-1])
        return self._pack(ctx[:, -1], states)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        x, states = self._unpack(z)
        u = self.encoder(x)  # (B, D)
        new = []
        for norm, block, (buf, h) in zip(self.norms, self.blocks, states):
            out, buf, h = block.forward_step(norm(u), buf, h)
            u = u + out  # (B, D)
            new.append((buf, h))
        return self._pack(self._readout(x, u), new)

    def teacher_forced_window(self, x: torch.Tensor) -> torch.Tensor:
        """Parallel scan over x_0..x_{T-1}: (B, T+1, N) -> predictions of x_1..x_T (B, T, N)."""
        inp = x[:, :-1]  # (B, T, N)
        u, _ = self._run_seq(inp)
        return self._readout(inp, u)
