"""LSTM / GRU baselines behind the one protocol.

Glossary (teaching size)
------------------------
B   batch
T   time steps of a window
C   context length (warm-up observations for ``init_state``)
N   observed dim (``obs_dim``)
H   hidden units per layer (``hidden_dim``; L in the toolkit-wide glossary)
Ly  stacked layers (``n_layers``)
M   latent dim = N + Ly * H * (2 for LSTM, 1 for GRU)

Model: a (stacked) LSTM (Hochreiter & Schmidhuber 1997) or GRU (Cho et al. 2014) fed with the
current observation, with a linear readout of the top hidden state as the prediction of the next
observation (``predict_increment=True``: x_{t+1} = x_t + readout(h_top)). The protocol state::

    LSTM: z_t = [x_t (N) ; h^1..h^Ly (Ly*H) ; c^1..c^Ly (Ly*H)]      GRU: z_t = [x_t ; h^1..h^Ly]

observe(z) = z[:, :N] (the slot holds the readout's prediction after every ``step``, so observe
*is* the linear readout of the hidden state for every state the model produces). The slot is
what teacher forcing (GTF) mixes with the data; h and c are left alone. (Keeping the slot in z,
rather than z = [h; c] alone, is what lets the protocol's ``force`` feed the data as the next
input, exactly as the network is trained on windows.)

``init_state(x (B, N))`` = [x ; init_map(x)]: the initial memory is a learned linear map of the
first observation. With a context (B, C, N) the network is run (teacher-forced) over
x_0 .. x_{C-2} starting from init_map(x_0), and z = [x_{C-1} ; memory]: the same state the
protocol loop reaches. ``forward_window`` with alpha = 1 runs the fused ``nn.LSTM``/``nn.GRU``
(cuDNN on GPU) over x_0..x_{T-1}; ``step`` evaluates the same weights cell by cell (PyTorch's
gate order i, f, g, o for LSTM and r, z, n for GRU), so both modes agree (tested).

References
----------
S. Hochreiter and J. Schmidhuber, "Long short-term memory", Neural Computation 9 (1997).
K. Cho et al., "Learning phrase representations using RNN encoder-decoder for statistical
machine translation", EMNLP 2014 (GRU).
P. R. Vlachas et al., "Data-driven forecasting of high-dimensional chaotic systems with long
short-term memory networks", Proc. R. Soc. A 474 (2018) (LSTMs for chaotic dynamics).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsrecon.errors import ConfigError
from dsrecon.models.registry import register
from dsrecon.models.sequence import SequenceModel, check_int

CELLS = ("lstm", "gru")


@register("lstm")
class RecurrentBaseline(SequenceModel):
    """LSTM (``cell="lstm"``) or GRU (``cell="gru"``) baseline; see the module docstring.

    Parameters
    ----------
    obs_dim : int
        N.
    latent_dim : int or None
        M = N + n_layers * hidden_dim * (2 | 1); give latent_dim or hidden_dim (or both, consistent).
    cell : {"lstm", "gru"}
    hidden_dim : int or None
        H.
    n_layers : int
        Stacked layers (1).
    predict_increment : bool
        Output x_t + readout(h) (default True) instead of readout(h).
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int | None = None,
        *,
        cell: str = "lstm",
        hidden_dim: int | None = None,
        n_layers: int = 1,
        predict_increment: bool = True,
    ) -> None:
        if cell not in CELLS:
            raise ConfigError(f"lstm: cell must be one of {', '.join(CELLS)}, got {cell!r}")
        check_int("lstm", 1, obs_dim=obs_dim, n_layers=n_layers)
        per_h = n_layers * (2 if cell == "lstm" else 1)  # state entries per hidden unit
        if hidden_dim is None:
            if latent_dim is None or (latent_dim - obs_dim) % per_h or latent_dim - obs_dim < per_h:
                raise ConfigError(
                    f"lstm: give hidden_dim, or latent_dim = N + {per_h} * hidden_dim "
                    f"(N = {obs_dim}, cell={cell}, n_layers={n_layers}); got latent_dim={latent_dim}"
                )
            hidden_dim = (latent_dim - obs_dim) // per_h
        check_int("lstm", 1, hidden_dim=hidden_dim)
        implied = obs_dim + per_h * hidden_dim
        if latent_dim is not None and latent_dim != implied:
            raise ConfigError(
                f"lstm: latent_dim={latent_dim} but N + {per_h} * hidden_dim = {implied}; "
                "pass one of them (latent_dim=None derives it)"
            )
        super().__init__(obs_dim, implied)
        self.cell, self.hidden_dim, self.n_layers = cell, int(hidden_dim), int(n_layers)
        self.predict_increment = bool(predict_increment)
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(obs_dim, hidden_dim, num_layers=n_layers, batch_first=True)
        self.readout = nn.Linear(hidden_dim, obs_dim)
        self.init_map = nn.Linear(obs_dim, implied - obs_dim)
        with torch.no_grad():  # start close to persistence: stable free runs at init
            self.readout.weight.mul_(0.1)
            self.readout.bias.zero_()

    @property
    def hyper(self) -> dict[str, Any]:
        return {"cell": self.cell, "hidden_dim": self.hidden_dim, "n_layers": self.n_layers, "predict_increment": self.predict_increment}

    # ---------------------------------------------------------------- layout
    def _to_torch_state(self, mem: torch.Tensor):
        """mem (B, M-N) -> nn.LSTM/GRU state: (h, c) each (Ly, B, H), or h (Ly, B, H)."""
        Bsz, Ly, H = mem.shape[0], self.n_layers, self.hidden_dim
        h = mem[:, : Ly * H].reshape(Bsz, Ly, H).transpose(0, 1).contiguous()
        if self.cell == "gru":
            return h
        return h, mem[:, Ly * H :].reshape(Bsz, Ly, H).transpose(0, 1).contiguous()

    def _from_torch_state(self, state) -> torch.Tensor:
        parts = state if isinstance(state, tuple) else (state,)
        return torch.cat([p.transpose(0, 1).reshape(p.shape[1], -1) for p in parts], dim=-1)  # (B, M-N)

    def _readout(self, x: torch.Tensor, h_top: torch.Tensor) -> torch.Tensor:
        out = self.readout(h_top)  # (..., N)
        return x + out if self.predict_increment else out

    # -------------------------------------------------------------- protocol
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.check_context(x)  # (B, C, N)
        mem = self.init_map(ctx[:, 0])  # (B, M-N)
        if ctx.shape[1] > 1:
            _, state = self.rnn(ctx[:, :-1], self._to_torch_state(mem))
            mem = self._from_torch_state(state)
        return torch.cat([ctx[:, -1], mem], dim=-1)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """One cell update per layer with the nn.LSTM/GRU weights: (B, M) -> (B, M)."""
        N, Ly, H = self.obs_dim, self.n_layers, self.hidden_dim
        x = z[:, :N]  # (B, N)
        hs = z[:, N : N + Ly * H].reshape(-1, Ly, H)  # (B, Ly, H)
        cs = z[:, N + Ly * H :].reshape(-1, Ly, H) if self.cell == "lstm" else None  # (B, Ly, H)
        inp, new_h, new_c = x, [], []
        for k in range(Ly):
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self.rnn, f"bias_ih_l{k}"), getattr(self.rnn, f"bias_hh_l{k}")
            gi = inp @ w_ih.T + b_ih  # (B, 4H) or (B, 3H)
            gh = hs[:, k] @ w_hh.T + b_hh
            if self.cell == "lstm":
                i, f, g, o = (gi + gh).chunk(4, dim=-1)  # (B, H) each
                c = torch.sigmoid(f) * cs[:, k] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            else:
                ir, iz, in_ = gi.chunk(3, dim=-1)
                hr, hz, hn = gh.chunk(3, dim=-1)
                r, u = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - u) * torch.tanh(in_ + r * hn) + u * hs[:, k]
            new_h.append(h)
            inp = h
        parts = [self._readout(x, inp)] + new_h + new_c
        return torch.cat(parts, dim=-1)  # (B, M)

    def teacher_forced_window(self, x: torch.Tensor) -> torch.Tensor:
        """Fused nn.LSTM/GRU over x_0..x_{T-1}: (B, T+1, N) -> predictions of x_1..x_T (B, T, N)."""
        inp = x[:, :-1]  # (B, T, N)
        out, _ = self.rnn(inp, self._to_torch_state(self.init_map(x[:, 0])))  # (B, T, H)
        return self._readout(inp, out)
