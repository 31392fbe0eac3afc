"""Vectorised ensembles: member k trains exactly like a single run with seed s_k."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dsrecon.errors import ConfigError
from dsrecon.models import build, load
from dsrecon.models.base import DynamicalModel
from dsrecon.training import TrainConfig, fit, fit_ensemble, read_history
from dsrecon.training.ensemble import EnsembleEngine

pytest.importorskip("dsrecon.training.fused")

TINY = dict(epochs=2, batches_per_epoch=3, batch_size=4, seq_len=15, eval_every=1, eval_steps=400,
            checkpoint_every=1)


def cycle(T=600, seed=0):
    t = np.arange(T) * 0.15
    x = np.stack([np.cos(t), np.sin(t), 0.5 * np.cos(2 * t)], axis=1)
    return (x + 0.02 * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


def close(a: nn.Module, b: nn.Module, atol=1e-5) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol) for k in sa)


@pytest.mark.parametrize("name,hyper,forcing", [
    ("clipped-shplrnn", {"hidden_dim": 6}, "agtf"),  # per-member adaptive alphas
    ("alrnn", {"n_pwl": 2}, "stf"),
    ("shplrnn", {"hidden_dim": 6, "obs": "affine"}, "gtf"),
])
def test_members_equal_single_runs(name, hyper, forcing):
    M = 5 if name == "alrnn" else 3
    cfg = TrainConfig(**TINY, forcing=forcing, tau=4, input_noise=0.01, alpha_update_every=2)
    ens = fit_ensemble(name, cycle(), cfg, seeds=[3, 11], latent_dim=M, model_hyper=hyper)
    assert ens.seeds == [3, 11] and len(ens.models) == 2
    for k, s in enumerate([3, 11]):
        single = fit(build(name, obs_dim=3, latent_dim=M, seed=s, **hyper), cycle(), cfg, seed=s)
        assert close(ens.models[k], single.model)
        mine = ens.member(k)
        assert [r["loss"] for r in mine.history] == pytest.approx([r["loss"] for r in single.history], rel=1e-4)
        alphas_mine = [r["alpha"] for r in mine.history]
        alphas_single = [r["alpha"] for r in single.history]
        if forcing == "stf":  # no alpha is logged for sparse forcing
            assert alphas_mine == alphas_single == [None] * len(alphas_single)
        else:
            assert alphas_mine == pytest.approx(alphas_single, rel=1e-4)
        assert mine.best_epoch == single.best_epoch
    assert not close(ens.models[0], ens.models[1])


def test_members_are_saved_and_load_on_their_own(tmp_path):
    cfg = TrainConfig(**TINY)
    ens = fit_ensemble("shplrnn", cycle(), cfg, n_members=3, latent_dim=3, model_hyper={"hidden_dim": 4},
                       out=tmp_path / "ens")
    assert ens.seeds == [ens.seeds[0] + k for k in range(3)]  # config.seed (drawn) + k
    for k in range(3):
        d = tmp_path / "ens" / f"member_{k:02d}"
        assert (d / "model.json").exists() and (d / "model.safetensors").exists()
        assert close(load(tmp_path / "ens", member=k), ens.models[k], atol=0)
        m = json.loads((d / "metrics.json").read_text())["training"]
        assert m["member"] == k and m["best_epoch"] == ens.best_epochs[k]
    rows = read_history(tmp_path / "ens" / "history.csv")
    assert [(r["epoch"], r["member"]) for r in rows] == [(e, k) for e in (1, 2) for k in range(3)]
    top = json.loads((tmp_path / "ens" / "metrics.json").read_text())["training"]
    assert len(top["members"]) == 3
    cfgj = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert cfgj["ensemble"] == {"n_members": 3, "seeds": ens.seeds}


def test_ensemble_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 3, "forcing": "agtf", "alpha_update_every": 2})
    a = fit_ensemble("clipped-shplrnn", cycle(), cfg, seeds=[1, 2], latent_dim=3, model_hyper={"hidden_dim": 4},
                     out=tmp_path / "a")

    def kill(rows):
        if rows[0]["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_ensemble("clipped-shplrnn", cycle(), cfg, seeds=[1, 2], latent_dim=3, model_hyper={"hidden_dim": 4},
                     out=tmp_path / "b", callback=kill)
    b = fit_ensemble("clipped-shplrnn", cycle(), None, latent_dim=3, model_hyper={"hidden_dim": 4},
                     out=tmp_path / "b", resume=True)
    assert b.seeds == [1, 2]
    for k in range(2):
        assert close(a.models[k], b.models[k], atol=0)


def test_per_member_gradient_clipping_matches_torch():
    models = [build("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=4, seed=s) for s in range(3)]
    eng = EnsembleEngine(models, TrainConfig(), torch.device("cpu"), torch.float32)
    for k, p in enumerate(eng.params.values()):
        p.grad = torch.randn_like(p) * (10.0 ** torch.arange(3).reshape((3,) + (1,) * (p.dim() - 1)))
    expected = []
    for k in range(3):
        gs = [p.grad[k].clone() for p in eng.params.values()]
        ps = [nn.Parameter(torch.zeros_like(g)) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(ps, 1.0)  # what a single run does
        expected.append([p.grad for p in ps])
    eng.clip_gradients(1.0)
    for k in range(3):
        for p, e in zip(eng.params.values(), expected[k]):
            assert torch.allclose(p.grad[k], e, rtol=1e-5)


class Plain(DynamicalModel):
    name = "test-plain"

    def __init__(self):
        super().__init__(3, 3)
        self.W = nn.Parameter(torch.eye(3))

    def step(self, z):
        return z @ self.W.T


def test_ensemble_input_errors():
    with pytest.raises(ConfigError, match="piecewise-linear"):
        fit_ensemble([Plain(), Plain()], cycle(), TrainConfig(**TINY), seeds=[0, 1])
    with pytest.raises(ConfigError, match="seed"):
        fit_ensemble("shplrnn", cycle(), TrainConfig(**TINY), n_members=3, seeds=[0, 1], latent_dim=3)
    with pytest.raises(ConfigError, match="distinct"):
        fit_ensemble("shplrnn", cycle(), TrainConfig(**TINY), seeds=[0, 0], latent_dim=3)
    a = build("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=4)
    b = build("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=5)
    with pytest.raises(ConfigError, match="architecture"):
        fit_ensemble([a, b], cycle(), TrainConfig(**TINY), seeds=[0, 1])


# ------------------------------------------------- per-member adaptive GTF (issue 4, DESIGN 3)
def _diverging_members():
    """Two clipped shPLRNNs whose adaptive-GTF alphas part at once: member 0 expands (A = 1.6,
    kappa > 1 so ahat > 0), member 1 contracts (A = 0.4, W1 = 0: kappa < 1 so ahat = 0)."""
    models = []
    for s, a in ((3, 1.6), (11, 0.4)):
        m = build("clipped-shplrnn", obs_dim=3, latent_dim=3, hidden_dim=6, seed=s)
        with torch.no_grad():
            m.A.fill_(a)
            if a < 1:
                m.W1.zero_()
        models.append(m)
    return models


def test_agtf_alpha_is_per_member_in_fit_ensemble():
    """Each member's alpha follows the rule with its own kappa and drives its own rollout.

    decay 0.5 and an update before every optimiser step (3 per epoch): member 1 (ahat = 0) must
    log alpha = 0.5^3, 0.5^6 (the rule's known answer), member 0 stays far above, and each
    member equals its own single run. Sharing alphas between members, in the rule or in the
    rollout, fails this test.
    """
    cfg = TrainConfig(**TINY, forcing="agtf", alpha_update_every=1, alpha_decay=0.5)
    ens = fit_ensemble(_diverging_members(), cycle(), cfg, seeds=[3, 11])
    alphas = [[r["alpha"] for r in ens.member(k).history] for k in range(2)]
    assert alphas[1] == pytest.approx([0.5 ** 3, 0.5 ** 6], rel=1e-12)
    assert min(alphas[0]) > 0.3
    for k, (s, model) in enumerate(zip([3, 11], _diverging_members())):
        single = fit(model, cycle(), cfg, seed=s)
        assert [r["alpha"] for r in single.history] == pytest.approx(alphas[k], rel=1e-6)
        assert close(ens.models[k], single.model)
        assert [r["loss"] for r in ens.member(k).history] == pytest.approx(
            [r["loss"] for r in single.history], rel=1e-4)


@pytest.mark.parametrize("fused", ["auto", "off"])
def test_engine_loss_one_rollout_call_for_member_alphas(fused, monkeypatch):
    """EnsembleEngine.loss with members' alphas (K, T) that differ: a single forced-rollout call
    (the fused kernel, or the reference with fused="off") whose per-member losses and gradients
    equal each member's generic single-model objective (model protocol loop) with its alpha."""
    import dsrecon.training.fused as fused_mod
    from dsrecon.training.trainer import batch_loss

    K, B, T = 3, 4, 12
    models = [build("clipped-shplrnn", obs_dim=3, latent_dim=3, hidden_dim=6, seed=s) for s in range(K)]
    eng = EnsembleEngine(models, TrainConfig(fused=fused), torch.device("cpu"), torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(K, B, T + 1, 3, generator=g, dtype=torch.float64)
    x_in = x + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    alpha = np.stack([np.full(T, 0.9), np.full(T, 0.2), np.linspace(0.0, 1.0, T)])  # (K, T)
    calls = []
    real = fused_mod.forced_rollout

    def counting(form, z0, zhat, mask, a, **kw):
        calls.append(tuple(torch.as_tensor(a).shape))
        return real(form, z0, zhat, mask, a, **kw)

    monkeypatch.setattr(fused_mod, "forced_rollout", counting)
    loss, per = eng.loss(x, x_in, alpha)
    loss.backward()
    assert calls == [(K, T)]
    for k in range(K):
        m = models[k].double()
        ref = batch_loss(m, x[k], x_in[k], alpha[k], mask=None, lambda_reg=eng.cfg.lambda_reg)  # generic loop
        ref.backward()
        assert per[k] == pytest.approx(ref.item(), rel=1e-12)
        for n, p in m.named_parameters():
            torch.testing.assert_close(eng.params[n].grad[k], p.grad, rtol=1e-9, atol=1e-12)
