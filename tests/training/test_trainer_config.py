"""TrainConfig: reference defaults, validation, JSON / TOML round trips, presets."""

from __future__ import annotations

import json

import pytest

from dsrecon.errors import ConfigError, UnknownNameError
from dsrecon.training import TrainConfig


def test_reference_defaults():
    c = TrainConfig()
    assert (c.optimizer, c.lr, c.lr_end, c.batch_size, c.seq_len, c.batches_per_epoch) == ("radam", 1e-3, 1e-6, 16, 200, 50)
    assert (c.forcing, c.alpha, c.alpha_update_every, c.alpha_decay) == ("agtf", 1.0, 5, 0.999)
    assert (c.lambda_reg, c.input_noise, c.grad_clip, c.tau) == (1e-5, 0.0, 0.0, 16)
    assert (c.dtype, c.device, c.max_rollbacks, c.rollback_lr_factor, c.explosion_factor) == ("float32", "cpu", 5, 0.5, 1e6)
    assert TrainConfig(forcing="gtf").alpha == 0.1 and TrainConfig(forcing="stf").alpha is None


def test_alrnn_preset_and_lr_schedule():
    c = TrainConfig.preset("alrnn")
    assert (c.forcing, c.tau, c.lr, c.lr_end, c.epochs) == ("stf", 16, 1e-3, 1e-5, 2000)
    assert c.lr_at(0) == 1e-3 and c.lr_at(2000) == pytest.approx(1e-5)
    assert c.lr_at(1000) == pytest.approx(1e-4)
    with pytest.raises(UnknownNameError, match="alrnn"):
        TrainConfig.preset("alrn")


def test_json_and_toml_round_trip(tmp_path):
    c = TrainConfig(epochs=7, forcing="stf", tau=8, seed=3, input_noise=0.05)
    assert TrainConfig.from_dict(json.loads(c.to_json())) == c
    c.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == c
    (tmp_path / "top.toml").write_text('epochs = 7\nforcing = "stf"\ntau = 8\nseed = 3\ninput_noise = 0.05\n')
    assert TrainConfig.from_toml(tmp_path / "top.toml") == c
    (tmp_path / "tab.toml").write_text('[train]\nepochs = 7\nforcing = "stf"\ntau = 8\nseed = 3\ninput_noise = 0.05\n'
                                       '[model]\nname = "alrnn"\n')
    assert TrainConfig.from_toml(tmp_path / "tab.toml") == c


def test_config_file_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("epochs = \n")
    with pytest.raises(ConfigError, match="cannot parse TOML"):
        TrainConfig.from_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_toml(tmp_path / "missing.toml")
    (tmp_path / "typo.toml").write_text("epoch = 3\n")
    with pytest.raises(ConfigError, match="did you mean: epochs"):
        TrainConfig.from_toml(tmp_path / "typo.toml")


def test_replace_revalidates_and_reresolves_alpha():
    c = TrainConfig(forcing="agtf")
    assert c.replace(forcing="gtf").alpha == 0.1
    assert c.replace(forcing="gtf", alpha=0.4).alpha == 0.4
    with pytest.raises(ConfigError):
        c.replace(alpha=2.0)
    assert c.alpha == 1.0  # unchanged


def test_integral_floats_are_accepted_as_ints():
    c = TrainConfig.from_dict({"epochs": 3.0, "seq_len": 20})
    assert c.epochs == 3 and isinstance(c.epochs, int)
