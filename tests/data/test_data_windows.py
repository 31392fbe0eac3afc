"""WindowSampler and all_windows: shapes, determinism, contiguity and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon.data import Trajectory, WindowSampler, all_windows
from dsrecon.errors import ConfigError, DataError


@pytest.fixture
def data():
    return np.random.default_rng(0).standard_normal((3, 40, 2))


def test_sample_shape_dtype_device(data):
    s = WindowSampler(Trajectory(data), seq_len=10, batch_size=7, seed=0)
    x = s.sample()
    assert x.shape == (7, 11, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert s.n_windows == 3 * 30 and s.n_starts == 30
    assert s.sample(batch_size=3).shape == (3, 11, 2)
    assert WindowSampler(data[0], 5, 2, seed=0, dtype=torch.float64).sample().dtype == torch.float64


def test_every_window_is_a_real_contiguous_slice(data):
    s = WindowSampler(data, seq_len=10, batch_size=64, seed=1, dtype=torch.float64)
    for _ in range(5):
        x, (b, t0) = s.sample(return_index=True)
        for k in range(64):
            ref = data[int(b[k]), int(t0[k]) : int(t0[k]) + 11]
            np.testing.assert_array_equal(x[k].numpy(), ref)
        assert int(t0.max()) <= 40 - 11 and int(t0.min()) >= 0


def test_windows_are_real_slices_without_index():
    # values encode (trajectory, time), so a window identifies itself
    B, T = 3, 25
    vals = np.stack(np.meshgrid(np.arange(B), np.arange(T), indexing="ij"), axis=-1).astype(float)
    s = WindowSampler(vals, seq_len=4, batch_size=200, seed=3, dtype=torch.float64)
    x = s.sample().numpy()
    assert np.all(x[:, :, 0] == x[:, :1, 0])  # one trajectory per window
    assert np.all(np.diff(x[:, :, 1], axis=1) == 1)  # consecutive times
    assert x[:, -1, 1].max() <= T - 1


def test_determinism_and_independence_of_seeds(data):
    a = [x.clone() for x in WindowSampler(data, 8, 4, seed=42).epoch(5)]
    b = [x.clone() for x in WindowSampler(data, 8, 4, seed=42).epoch(5)]
    c = [x.clone() for x in WindowSampler(data, 8, 4, seed=43).epoch(5)]
    assert len(a) == 5
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(WindowSampler(data, 8, 4, generator=g1).sample(),
                       WindowSampler(data, 8, 4, generator=g2).sample())
    torch.manual_seed(11)
    u = WindowSampler(data, 8, 4).sample()
    torch.manual_seed(11)
    assert torch.equal(u, WindowSampler(data, 8, 4).sample())


def test_uniform_over_all_trajectory_start_pairs():
    vals = np.zeros((2, 6, 1))
    s = WindowSampler(vals, seq_len=3, batch_size=60000, seed=0)  # 2 x 3 valid pairs
    b, t0 = s.sample_index()
    counts = np.bincount((b * 3 + t0).numpy(), minlength=6)
    assert counts.size == 6 and counts.min() > 0
    # each of the 6 pairs has probability 1/6: 10000 +- 5 sd (sd ~ 91)
    assert np.all(np.abs(counts - 10000) < 500)


def test_failed_trajectories_are_skipped(data):
    vals = data.copy()
    vals[1] = np.nan
    t = Trajectory(vals, failed=np.array([False, True, False]))
    s = WindowSampler(t, 5, 50, seed=0)
    assert s.n_trajectories == 2 and torch.isfinite(s.sample()).all()
    with pytest.raises(DataError, match="every trajectory is flagged failed"):
        WindowSampler(Trajectory(vals, failed=np.ones(3, bool)), 5, 2)


def test_torch_input_and_device(data):
    t = torch.tensor(data[0])
    s = WindowSampler(t, 5, 3, seed=0, device="cpu")
    assert s.sample().shape == (3, 6, 2)


def test_sampler_bad_input(data):
    with pytest.raises(DataError, match=r"T=40 time steps, shorter than one window of seq_len \+ 1 = 41"):
        WindowSampler(data, seq_len=40, batch_size=2)
    WindowSampler(data, seq_len=39, batch_size=2)  # exactly one window fits
    bad = data.copy()
    bad[0, 3, 1] = np.inf
    with pytest.raises(DataError, match=r"training data contains 1 non-finite.*\(0, 3, 1\)"):
        WindowSampler(bad, 5, 2)
    for kw in ({"seq_len": 0, "batch_size": 2}, {"seq_len": 5, "batch_size": 0},
               {"seq_len": 2.5, "batch_size": 2}, {"seq_len": True, "batch_size": 2}):
        with pytest.raises(ConfigError, match="positive integer"):
            WindowSampler(data, **kw)
    with pytest.raises(ConfigError, match="not both"):
        WindowSampler(data, 5, 2, seed=1, generator=torch.Generator())
    with pytest.raises(ConfigError, match="floating-point"):
        WindowSampler(data, 5, 2, dtype=torch.int64)
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        WindowSampler(np.arange(50.0), 5, 2)
    with pytest.raises(ConfigError, match="n_batches"):
        list(WindowSampler(data, 5, 2).epoch(0))


def _all_windows_loop(x, seq_len, stride):
    out = []
    for b in range(x.shape[0]):
        t0 = 0
        while t0 + seq_len + 1 <= x.shape[1]:
            out.append(x[b, t0 : t0 + seq_len + 1])
            t0 += stride
    return np.stack(out)


@pytest.mark.parametrize("seq_len, stride", [(5, None), (5, 1), (3, 7), (39, None), (10, 100)])
def test_all_windows_matches_loop(data, seq_len, stride):
    ref = _all_windows_loop(data, seq_len, stride or seq_len)
    got = all_windows(Trajectory(data), seq_len, stride)
    np.testing.assert_array_equal(got, ref)
    got_t = all_windows(torch.tensor(data), seq_len, stride)
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_array_equal(got_t.numpy(), ref)
    np.testing.assert_array_equal(all_windows(data[0], seq_len, stride), _all_windows_loop(data[:1], seq_len, stride or seq_len))
    got[0, 0, 0] = 1e9  # a copy: the input is untouched
    assert data[0, 0, 0] != 1e9
    src = torch.tensor(data)
    out = all_windows(src, seq_len, stride)
    out[0, 0, 0] = 1e9
    assert src[0, 0, 0] != 1e9


def test_all_windows_default_stride_chains_windows(data):
    w = all_windows(data[0], 10)
    assert w.shape == (3, 11, 2)
    np.testing.assert_array_equal(w[0, -1], w[1, 0])


def test_all_windows_bad_input(data):
    with pytest.raises(DataError, match=r"T=40 .* seq_len \+ 1 = 41"):
        all_windows(data, 40)
    with pytest.raises(ConfigError, match="stride"):
        all_windows(data, 5, 0)
