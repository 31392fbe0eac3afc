"""Bad input: a clear error before any training, and nothing in an existing run directory touched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from dsrecon.errors import ConfigError, DataError, RunDirError, UnknownNameError
from dsrecon.models import build
from dsrecon.training import TrainConfig, fit

TINY = dict(epochs=1, batches_per_epoch=2, batch_size=4, seq_len=15, eval_every=1, eval_steps=400)


def cycle(T=600):
    t = np.arange(T) * 0.15
    return np.stack([np.cos(t), np.sin(t), 0.5 * np.cos(2 * t)], axis=1).astype(np.float32)


def model(**kw):
    return build("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=4, seed=0, **kw)


def snapshot(d):
    """{relative path: sha256} of every file under d."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def old_run(tmp_path):
    d = tmp_path / "run"
    fit(model(), cycle(), TrainConfig(**TINY), seed=0, out=d)
    return d


def test_nonfinite_data(old_run):
    before = snapshot(old_run)
    for bad in (np.nan, np.inf):
        x = cycle()
        x[100, 1] = bad
        with pytest.raises(DataError, match="non-finite"):
            fit(model(), x, TrainConfig(**TINY), out=old_run, overwrite=True)
    assert snapshot(old_run) == before


def test_data_shorter_than_one_window(old_run):
    before = snapshot(old_run)
    with pytest.raises(DataError, match=r"T=15 time steps, fewer than one training window \(seq_len \+ 1 = 16\)"):
        fit(model(), cycle(15), TrainConfig(**TINY), out=old_run, overwrite=True)
    assert snapshot(old_run) == before


def test_exactly_one_window_is_enough():
    res = fit(model(), cycle(16), TrainConfig(**TINY), val_data=cycle(), seed=0)
    assert len(res.history) == 1


def test_wrong_observed_dimension_and_bad_validation(old_run):
    before = snapshot(old_run)
    with pytest.raises(ConfigError, match="obs_dim=3"):
        fit(model(), cycle()[:, :2], TrainConfig(**TINY), out=old_run, overwrite=True)
    with pytest.raises(ConfigError, match="obs_dim=3"):
        fit(model(), cycle(), TrainConfig(**TINY), val_data=cycle()[:, :2], out=old_run, overwrite=True)
    const = cycle()
    const[:, 2] = 1.0
    with pytest.raises(DataError, match="validation series"):
        fit(model(), cycle(), TrainConfig(**TINY), val_data=const, out=old_run, overwrite=True)
    assert snapshot(old_run) == before


def test_model_errors_from_the_registry():
    with pytest.raises(ConfigError, match="latent_dim"):
        build("shplrnn", obs_dim=3, latent_dim=2)  # identity observation needs M >= N
    with pytest.raises(UnknownNameError, match="shplrnn"):
        build("shplrn", obs_dim=3, latent_dim=3)
    with pytest.raises(ConfigError, match="DynamicalModel"):
        fit(torch.nn.Linear(3, 3), cycle(), TrainConfig(**TINY))


@pytest.mark.parametrize("bad,match", [
    ({"alpha": -0.1}, "alpha must be in"), ({"alpha": 1.5}, "alpha must be in"), ({"tau": 0}, "tau"),
    ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr must be > 0"), ({"lr": -1e-3}, "lr must be > 0"),
    ({"forcing": "teacher"}, "unknown forcing strategy 'teacher'"), ({"batch_size": 2.5}, "integer"),
    ({"epochs": True}, "integer"), ({"optimizer": "sgd"}, "optimizer"), ({"lr_end": float("nan")}, "finite"),
    ({"bogus_key": 1}, "unknown training setting 'bogus_key'"), ({"dtype": "float16"}, "dtype"),
])
def test_bad_settings(bad, match, old_run):
    before = snapshot(old_run)
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        fit(model(), cycle(), {**TINY, **bad}, out=old_run, overwrite=True)
    assert snapshot(old_run) == before


def test_unavailable_device(old_run):
    before = snapshot(old_run)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            fit(model(), cycle(), TrainConfig(**TINY), device="cuda", out=old_run, overwrite=True)
    with pytest.raises(ConfigError, match="device"):
        fit(model(), cycle(), TrainConfig(**TINY), device="tpu:0", out=old_run, overwrite=True)
    assert snapshot(old_run) == before


def test_run_directory_rules(old_run, tmp_path):
    before = snapshot(old_run)
    with pytest.raises(RunDirError, match="overwrite"):
        fit(model(), cycle(), TrainConfig(**TINY), out=old_run)
    assert snapshot(old_run) == before
    with pytest.raises(ConfigError, match="exclude"):
        fit(model(), cycle(), TrainConfig(**TINY), out=old_run, resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="out=RUN_DIR"):
        fit(model(), cycle(), TrainConfig(**TINY), resume=True)
    with pytest.raises(RunDirError, match="nothing to resume"):
        fit(model(), cycle(), TrainConfig(**TINY), out=tmp_path / "fresh", resume=True)
    with pytest.raises(RunDirError, match="different train.epochs"):
        fit(model(), cycle(), TrainConfig(**{**TINY, "epochs": 3}), out=old_run, resume=True)
    with pytest.raises(RunDirError, match="training data"):
        fit(model(), cycle() * 2, None, out=old_run, resume=True)
    with pytest.raises(RunDirError, match="model architecture"):
        fit(build("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5), cycle(), None, out=old_run, resume=True)
    assert snapshot(old_run) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="not a dsrecon run directory"):
        fit(model(), cycle(), TrainConfig(**TINY), out=other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        fit(model(), cycle(), TrainConfig(**TINY), out=tmp_path / "afile")


def test_overwrite_replaces_the_run(old_run):
    (old_run / "stale.txt").write_text("old")
    fit(model(), cycle(), TrainConfig(**TINY), seed=1, out=old_run, overwrite=True)
    assert not (old_run / "stale.txt").exists() and (old_run / "model.safetensors").exists()
