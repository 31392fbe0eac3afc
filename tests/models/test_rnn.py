"""LSTM / GRU baseline: cell-by-cell step == fused nn.LSTM/GRU window, layout, bad input."""

from __future__ import annotations

import pytest
import torch

from dsrecon.errors import ConfigError
from dsrecon.models import build

F64 = torch.float64


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_step_equals_fused_window(cell, n_layers):
    m = build("lstm", obs_dim=3, latent_dim=None, seed=0, cell=cell, hidden_dim=5, n_layers=n_layers, dtype=F64)
    x = torch.randn(2, 16, 3, dtype=F64)
    fused = m.forward_window(x)  # nn.LSTM / nn.GRU over x_0..x_14
    z, preds = m.init_state(x[:, 0]), []
    for t in range(15):
        z = m.step(m.force(z, x[:, t], 1.0))
        preds.append(m.observe(z))
    torch.testing.assert_close(fused, torch.stack(preds, 1), rtol=1e-12, atol=1e-12)


def test_layout_and_readout():
    m = build("lstm", obs_dim=2, latent_dim=2 + 2 * 2 * 4, seed=0, cell="lstm", n_layers=2, predict_increment=False, dtype=F64)
    assert m.hidden_dim == 4 and m.latent_dim == 18
    z = torch.randn(3, 18, dtype=F64)
    z1 = m.step(z)
    h_top = z1[:, 2 + 4 : 2 + 8]  # [x (2); h^1 (4); h^2 (4); c^1; c^2]
    torch.testing.assert_close(m.observe(z1), m.readout(h_top))
    # the initial memory is the learned linear map of the first observation
    x0 = torch.randn(3, 2, dtype=F64)
    torch.testing.assert_close(m.init_state(x0)[:, 2:], m.init_map(x0))
    g = build("lstm", obs_dim=2, latent_dim=None, cell="gru", hidden_dim=7)
    assert g.latent_dim == 9


def test_bad_hypers():
    with pytest.raises(ConfigError):
        build("lstm", obs_dim=2, latent_dim=None, cell="rnn", hidden_dim=4)
    with pytest.raises(ConfigError):
        build("lstm", obs_dim=2, latent_dim=None)  # neither hidden_dim nor latent_dim
    with pytest.raises(ConfigError, match=r"N \+ 2"):
        build("lstm", obs_dim=2, latent_dim=7, cell="lstm")  # 5 is not 2 * hidden_dim
    with pytest.raises(ConfigError):
        build("lstm", obs_dim=2, latent_dim=12, hidden_dim=4)  # 2 + 8 != 12
    with pytest.raises(ConfigError):
        build("lstm", obs_dim=2, latent_dim=None, hidden_dim=4, n_layers=0)
