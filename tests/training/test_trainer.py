"""fit(): objective, schedule, determinism, resume, roll-back, best-model selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dsrecon.training.trainer as trainer_mod
from dsrecon.data import Trajectory
from dsrecon.errors import TrainingError
from dsrecon.models import build, load
from dsrecon.training import TrainConfig, batch_loss, fit, read_history
from dsrecon.training.inputs import is_better as _better

TINY = dict(epochs=2, batches_per_epoch=3, batch_size=4, seq_len=15, eval_every=1, eval_steps=400,
            checkpoint_every=1)


def cycle(T=600, noise=0.02, seed=0):
    """A noisy 3-d limit cycle (T, 3), float32."""
    t = np.arange(T) * 0.15
    x = np.stack([np.cos(t), np.sin(t), 0.5 * np.cos(2 * t)], axis=1)
    return (x + noise * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


def model(name="shplrnn", seed=0, **kw):
    hyper = {"shplrnn": {"hidden_dim": 8}, "clipped-shplrnn": {"hidden_dim": 8}, "alrnn": {"n_pwl": 2}}.get(name, {})
    hyper.update(kw)
    M = hyper.pop("latent_dim", 5 if name == "alrnn" else 3)
    return build(name, obs_dim=3, latent_dim=M, seed=seed, **hyper)


def weights(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same(a, b, atol=0.0):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


# ------------------------------------------------------------------------ objective
def test_loss_uses_unforced_predictions_noisy_inputs_and_clean_targets():
    """With full forcing and an identity map F, the loss is mean((x_in_t - x_{t+1})^2)."""
    m = model("alrnn", latent_dim=3, n_pwl=0)  # linear AL-RNN; make F the identity
    with torch.no_grad():
        m.A.fill_(1.0)
        m.W.zero_()
        m.h.zero_()
    x = torch.randn(4, 11, 3)
    x_in = x + 0.1 * torch.randn_like(x)
    loss = batch_loss(m, x, x_in, np.ones(10), mask=None, lambda_reg=0.0)
    assert loss.item() == pytest.approx(torch.mean((x_in[:, :10] - x[:, 1:]) ** 2).item(), rel=1e-6)
    reg = batch_loss(m, x, x_in, np.ones(10), mask=None, lambda_reg=0.5)
    assert reg.item() == pytest.approx(loss.item() + 0.5 * m.latent_regularization().item(), rel=1e-6)


def test_fit_returns_history_schedule_and_float32():
    cfg = TrainConfig(**{**TINY, "epochs": 3, "lr": 1e-3, "lr_end": 1e-6, "forcing": "gtf", "alpha": 0.2})
    m = model()
    res = fit(m, cycle(), cfg, seed=1)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert [r["lr"] for r in res.history] == pytest.approx([1e-3, 1e-4, 1e-5])  # gamma = (1e-6/1e-3)^(1/3)
    assert all(r["alpha"] == 0.2 and r["rollbacks"] == 0 for r in res.history)
    assert all(np.isfinite(r["loss"]) and r["dstsp"] is not None and r["dh"] is not None for r in res.history)
    assert set(res.history[0]) == {"epoch", "loss", "alpha", "lr", "dstsp", "dh", "seconds", "rollbacks"}
    assert res.model is m and next(m.parameters()).dtype == torch.float32
    assert res.run_dir is None and 1 <= res.best_epoch <= 3
    assert res.metrics["pe"] is not None and res.metrics["T"] == 400


def test_training_reduces_the_loss():
    cfg = TrainConfig(epochs=8, batches_per_epoch=10, batch_size=8, seq_len=20, lr=3e-2, lr_end=3e-3,
                      forcing="gtf", alpha=0.9, eval_every=8, eval_steps=400)
    res = fit(model(), cycle(), cfg, seed=0)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]


def test_adaptive_alpha_is_logged_and_adapts():
    cfg = TrainConfig(**{**TINY, "batches_per_epoch": 5, "forcing": "agtf"})
    res = fit(model("clipped-shplrnn"), cycle(), cfg, seed=0)
    alphas = [r["alpha"] for r in res.history]
    assert all(0 <= a <= 1 for a in alphas) and alphas[0] < 1.0  # updated at step 5 of epoch 1
    stf = fit(model("alrnn"), cycle(), TrainConfig(**{**TINY, "forcing": "stf", "tau": 4}), seed=0)
    assert all(r["alpha"] is None for r in stf.history)


@pytest.mark.parametrize("data", ["array2d", "array3d", "trajectory", "path"])
def test_data_forms(data, tmp_path):
    x = cycle()
    arg = {"array2d": x, "array3d": np.stack([x, cycle(seed=1)]), "trajectory": Trajectory(x, dt=0.15),
           "path": tmp_path / "x.npy"}[data]
    if data == "path":
        np.save(arg, x)
    res = fit(model(), arg, TrainConfig(**{**TINY, "epochs": 1}), seed=0)
    assert len(res.history) == 1


# ------------------------------------------------------------------------ determinism
def test_same_seed_same_weights_different_seed_differs():
    cfg = TrainConfig(**{**TINY, "input_noise": 0.05})
    runs = [weights(fit(model(seed=0), cycle(), cfg, seed=s).model) for s in (7, 7, 8)]
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])


@pytest.mark.parametrize("name,hyper", [
    ("plrnn", {}), ("dendplrnn", {"n_bases": 3}), ("shplrnn", {"hidden_dim": 6}),
    ("clipped-shplrnn", {"hidden_dim": 6, "obs": "affine"}), ("alrnn", {"n_pwl": 2, "latent_dim": 6}),
])
def test_one_step_same_loss_and_gradients_on_both_paths(name, hyper):
    """The training objective (rollout + observation + regulariser) and its gradients, float64."""
    pytest.importorskip("dsrecon.training.fused")
    from dsrecon.training.forcing import SparseTF, force_mask

    m = model(name, seed=4, **hyper).double()
    x = torch.as_tensor(cycle()[None, :41].repeat(3, 0), dtype=torch.float64)  # (B, T+1, N)
    x_in = x + 0.05 * torch.randn_like(x)
    mask = force_mask(m)
    for alpha in (np.full(40, 0.3), SparseTF(7).alpha_vector(40)):
        res = []
        for path_mask in (mask, None):
            loss = batch_loss(m, x, x_in, alpha, mask=path_mask, lambda_reg=1e-2)
            grads = torch.autograd.grad(loss, list(m.parameters()))
            res.append((loss.item(), grads))
        assert res[0][0] == pytest.approx(res[1][0], rel=1e-10)
        for g1, g2 in zip(res[0][1], res[1][1]):
            assert torch.allclose(g1, g2, atol=1e-6, rtol=0)


SEQUENCE_MODELS = [
    ("lssl", {"d_model": 4, "d_state": 4, "n_layers": 1}), ("mamba", {"d_model": 4, "d_state": 4, "n_layers": 1}),
    ("lstm", {"hidden_dim": 4}), ("node", {"hidden_dim": 8, "latent_dim": 3}),
]


@pytest.mark.parametrize("name,hyper", SEQUENCE_MODELS)
def test_forward_window_path_equals_generic_loop(name, hyper):
    """Sequence models train through their own forward_window; same loss and gradients, float64."""
    hyper = dict(hyper)
    m = build(name, obs_dim=3, latent_dim=hyper.pop("latent_dim", None), seed=1, dtype=torch.float64, **hyper)
    x = torch.as_tensor(cycle()[None, :13].repeat(2, 0), dtype=torch.float64)
    for alpha in (np.ones(12), np.full(12, 0.4)):  # parallel form / sequential loop inside the model
        res = []
        for window in (True, False):
            loss = batch_loss(m, x, x, alpha, mask=None, lambda_reg=0.0, window=window)
            res.append((loss.item(), torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])))
        assert res[0][0] == pytest.approx(res[1][0], rel=1e-8)
        for g1, g2 in zip(res[0][1], res[1][1]):
            assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-5)


def test_closed_form_models_are_fitted_once(tmp_path):
    esn = build("esn", obs_dim=3, latent_dim=None, reservoir_size=40, seed=0)
    res = fit(esn, cycle(), TrainConfig(**TINY), seed=0, out=tmp_path / "esn")
    assert [r["epoch"] for r in res.history] == [1] and res.best_epoch == 1
    assert res.metrics["dstsp"] is not None and res.metrics["pe"] is not None
    assert same(weights(load(tmp_path / "esn")), weights(esn))


def test_untrainable_settings_are_refused_before_work():
    from dsrecon.errors import ConfigError

    with pytest.raises(ConfigError, match="adaptive GTF"):
        fit(build("plrnn", obs_dim=3, latent_dim=130), cycle(), TrainConfig(**TINY, forcing="agtf"))
    frozen = model()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit(frozen, cycle(), TrainConfig(**TINY))


def test_generic_and_fused_training_steps_agree_in_float64():
    """One epoch (2 optimiser steps) of each path from the same seed: same losses and weights."""
    pytest.importorskip("dsrecon.training.fused")
    base = TrainConfig(**{**TINY, "epochs": 1, "batches_per_epoch": 2, "dtype": "float64", "forcing": "agtf",
                          "alpha_update_every": 1, "input_noise": 0.01})
    out = {}
    for fused in ("on", "off"):
        m = model("clipped-shplrnn", seed=2).double()
        res = fit(m, cycle(), base.replace(fused=fused), seed=3)
        out[fused] = (res.history[0]["loss"], res.history[0]["alpha"], weights(m))
    assert out["on"][0] == pytest.approx(out["off"][0], rel=1e-10)
    assert out["on"][1] == pytest.approx(out["off"][1], rel=1e-10)
    assert same(out["on"][2], out["off"][2], atol=1e-9)


# ------------------------------------------------------------------------ run directory / resume
def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 4, "forcing": "agtf", "batches_per_epoch": 4, "input_noise": 0.02})
    straight = fit(model(seed=1), cycle(), cfg, seed=5, out=tmp_path / "a")

    def kill(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model(seed=1), cycle(), cfg, seed=5, out=tmp_path / "b", callback=kill)
    assert [r["epoch"] for r in read_history(tmp_path / "b" / "history.csv")] == [1, 2]
    resumed = fit(model(seed=99), cycle(), None, out=tmp_path / "b", resume=True)  # settings from config.json
    last_a = load_file(str(tmp_path / "a" / "checkpoints" / "last.safetensors"))
    last_b = load_file(str(tmp_path / "b" / "checkpoints" / "last.safetensors"))
    assert same(last_a, last_b)
    assert same(weights(straight.model), weights(resumed.model))
    assert resumed.best_epoch == straight.best_epoch
    ha, hb = read_history(tmp_path / "a" / "history.csv"), read_history(tmp_path / "b" / "history.csv")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ha] == \
           [{k: v for k, v in r.items() if k not in drop} for r in hb]


def test_resume_loses_at_most_the_epochs_since_the_checkpoint(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 5, "checkpoint_every": 2})

    def kill(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model(), cycle(), cfg, seed=0, out=tmp_path / "r", callback=kill)
    seen = []
    res = fit(model(), cycle(), cfg, seed=0, out=tmp_path / "r", resume=True, callback=lambda r: seen.append(r["epoch"]))
    assert seen == [3, 4, 5]  # epoch 3 was after the checkpoint at 2: redone
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]
    straight = fit(model(), cycle(), cfg, seed=0)
    assert same(weights(straight.model), weights(res.model))


def test_best_model_is_saved_and_reloads(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 3})
    res = fit(model(), cycle(), cfg, seed=0, out=tmp_path / "run")
    best = [r for r in res.history if r["epoch"] == res.best_epoch][0]
    assert best["dstsp"] == min(r["dstsp"] for r in res.history)
    loaded = load(tmp_path / "run")
    assert same(weights(loaded), {k: v.cpu() for k, v in weights(res.model).items()})
    assert res.metrics["dstsp"] == pytest.approx(best["dstsp"])


def test_better_handles_ties_and_nonfinite_values():
    assert _better((1.0, 0.5), None)
    assert _better((0.5, 0.9), {"dstsp": 1.0, "dh": 0.1})
    assert not _better((1.5, 0.0), {"dstsp": 1.0, "dh": 0.1})
    assert _better((1.0, 0.05), {"dstsp": 1.0, "dh": 0.1})  # tie on D_stsp: lower D_H wins
    assert not _better((1.0, 0.1), {"dstsp": 1.0, "dh": 0.1})  # full tie: keep the earlier
    assert not _better((np.inf, 0.0), {"dstsp": 3.0, "dh": 0.5})
    assert not _better((np.nan, 0.0), {"dstsp": 3.0, "dh": 0.5})
    assert _better((3.0, 0.5), {"dstsp": None, "dh": 1.0})  # None = inf from JSON
    assert _better((np.inf, 1.0), {"dstsp": np.inf, "dh": 1.0})  # nothing finite yet: keep the latest


# ------------------------------------------------------------------------ roll-back
def _inject(monkeypatch, bad_calls, value=float("nan")):
    calls = {"n": 0}
    real = trainer_mod.batch_loss

    def fake(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * value if calls["n"] in bad_calls else loss

    monkeypatch.setattr(trainer_mod, "batch_loss", fake)
    return calls


def test_nan_loss_rolls_back_halves_lr_and_recovers(monkeypatch, tmp_path):
    _inject(monkeypatch, bad_calls={5})  # epoch 2, second batch (3 batches per epoch)
    cfg = TrainConfig(**{**TINY, "epochs": 3, "lr": 1e-3, "lr_end": 1e-6})
    res = fit(model(), cycle(), cfg, seed=0, out=tmp_path / "run")
    assert [r["rollbacks"] for r in res.history] == [0, 1, 1]
    assert [r["lr"] for r in res.history] == pytest.approx([1e-3, 0.5e-4, 0.5e-5])
    assert res.metrics["best_epoch"] >= 1
    events = res.history and __import__("json").loads((tmp_path / "run" / "metrics.json").read_text())
    assert events["training"]["rollbacks"] == 1
    assert "nan" in events["training"]["rollback_events"][0]["reason"]


def test_rollback_restores_the_adaptive_alpha(monkeypatch):
    """A failed first batch of epoch 2 already adapted alpha; the redone epoch must start from the
    restored alpha, so with one batch per epoch alpha matches the run without failure."""
    cfg = TrainConfig(**{**TINY, "batches_per_epoch": 1, "forcing": "agtf", "alpha_update_every": 1})
    clean = fit(model("clipped-shplrnn"), cycle(), cfg, seed=0)
    _inject(monkeypatch, bad_calls={2})
    failed = fit(model("clipped-shplrnn"), cycle(), cfg, seed=0)
    assert failed.history[-1]["rollbacks"] == 1
    assert failed.history[-1]["alpha"] == clean.history[-1]["alpha"]
    assert clean.history[-1]["alpha"] != clean.history[0]["alpha"]


def test_exploding_loss_is_detected(monkeypatch):
    _inject(monkeypatch, bad_calls={8}, value=1e9)  # the 6 earlier losses set the running median
    res = fit(model(), cycle(), TrainConfig(**{**TINY, "epochs": 3}), seed=0)
    assert res.history[-1]["rollbacks"] == 1


def test_repeated_failures_stop_with_a_clear_error(monkeypatch):
    _inject(monkeypatch, bad_calls=set(range(4, 100)))
    with pytest.raises(TrainingError, match=r"epoch 2.*2 consecutive roll-back.*smaller lr"):
        fit(model(), cycle(), TrainConfig(**{**TINY, "epochs": 3, "max_rollbacks": 2}), seed=0)


@pytest.mark.gpu
def test_training_on_cuda_matches_cpu_roughly():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = TrainConfig(**TINY)
    res = fit(model(), cycle(), cfg, seed=0, device="cuda")
    assert next(res.model.parameters()).device.type == "cuda"
    cpu = fit(model(), cycle(), cfg, seed=0)
    assert res.history[0]["loss"] == pytest.approx(cpu.history[0]["loss"], rel=1e-3)
