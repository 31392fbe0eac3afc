"""Run directory files: config.json, history.csv, checkpoints that can never execute code."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from dsrecon.errors import RunDirError
from dsrecon.models import build
from dsrecon.training import TrainConfig, fit
from dsrecon.training.checkpoint import (
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    pack_members,
    save_checkpoint,
    unpack_members,
)
from dsrecon.training.rundir import History, array_sha256, check_run_dir, read_history

TINY = dict(epochs=2, batches_per_epoch=2, batch_size=4, seq_len=15, eval_every=1, eval_steps=400, checkpoint_every=1)


def cycle(T=600):
    t = np.arange(T) * 0.15
    return np.stack([np.cos(t), np.sin(t), 0.5 * np.cos(2 * t)], axis=1).astype(np.float32)


def _optimiser(steps=3):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.RAdam([w, b], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        ((w.sum(0) * b) ** 2).sum().backward()
        opt.step()
    return w, b, opt


def test_optimizer_state_round_trip_continues_identically():
    w, b, opt = _optimiser()
    tensors, sidecar = optimizer_to_tensors(opt.state_dict())
    json.dumps(sidecar)  # plain JSON
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    w2, b2 = torch.nn.Parameter(w.detach().clone()), torch.nn.Parameter(b.detach().clone())
    opt2 = torch.optim.RAdam([w2, b2], lr=1e-2)
    opt2.load_state_dict(optimizer_from_tensors(tensors, json.loads(json.dumps(sidecar))))
    for o, (ww, bb) in ((opt, (w, b)), (opt2, (w2, b2))):
        o.zero_grad()
        ((ww.sum(0) * bb) ** 2).sum().backward()
        o.step()
    assert torch.equal(w, w2) and torch.equal(b, b2)


def test_checkpoint_round_trip_and_torn_checkpoint(tmp_path):
    w, b, opt = _optimiser()
    model = {"w": w.detach(), "b": b.detach()}
    best = pack_members([{"w": w.detach() * 2}, None])
    save_checkpoint(tmp_path, model_state=model, optimizer_state=opt.state_dict(), best_state=best,
                    trainer_state={"epoch": 3, "alpha": [0.5]})
    ck = load_checkpoint(tmp_path)
    assert ck["trainer"] == {"epoch": 3, "alpha": [0.5]}
    assert torch.equal(ck["model"]["w"], w.detach())
    members = unpack_members(ck["best"], 2)
    assert torch.equal(members[0]["w"], 2 * w.detach()) and members[1] is None
    # a checkpoint file from another checkpoint (killed between two renames) is detected
    state = json.loads((tmp_path / "checkpoints" / "last_state.json").read_text())
    state["token"] = "0" * 32
    (tmp_path / "checkpoints" / "last_state.json").write_text(json.dumps(state))
    with pytest.raises(RunDirError, match="different checkpoints"):
        load_checkpoint(tmp_path)


def test_checkpoint_loading_never_unpickles(tmp_path):
    w, b, opt = _optimiser()
    save_checkpoint(tmp_path, model_state={"w": w.detach()}, optimizer_state=opt.state_dict(), best_state={},
                    trainer_state={"epoch": 1})
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "checkpoints" / "last.safetensors").write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(RunDirError, match="corrupt"):
        load_checkpoint(tmp_path)
    assert not marker.exists()
    (tmp_path / "checkpoints" / "last.safetensors").unlink()
    with pytest.raises(RunDirError, match="missing"):
        load_checkpoint(tmp_path)


def test_history_append_truncate_read(tmp_path):
    h = History(tmp_path / "history.csv")
    h.append([{"epoch": 1, "loss": 0.5, "alpha": None, "lr": 1e-3, "dstsp": float("inf"), "rollbacks": 0}])
    h.append([{"epoch": 2, "loss": 0.1 + 0.2, "alpha": 0.3, "lr": 1e-4, "rollbacks": 1}])
    rows = read_history(tmp_path / "history.csv")
    assert rows[0]["alpha"] is None and rows[0]["dstsp"] == float("inf") and rows[1]["loss"] == 0.1 + 0.2
    assert h.truncate(1) == rows[:1] and read_history(tmp_path / "history.csv") == rows[:1]


def test_array_hash_is_content_based():
    x = np.arange(12.0).reshape(4, 3)
    assert array_sha256(x) == array_sha256(x.copy()) == array_sha256(np.asfortranarray(x))
    assert array_sha256(x) != array_sha256(x.astype(np.float32))
    assert array_sha256(x) != array_sha256(x.reshape(3, 4))
    y = x.copy()
    y[0, 0] = 1e-300
    assert array_sha256(x) != array_sha256(y)


def test_check_run_dir(tmp_path):
    assert check_run_dir(tmp_path / "new", resume=False, overwrite=False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", resume=False, overwrite=False)  # an empty directory is fine
    assert not (tmp_path / "new").exists()


def test_run_directory_contents(tmp_path):
    np.save(tmp_path / "train.npy", cycle())
    res = fit(build("shplrnn", obs_dim=3, latent_dim=3, hidden_dim=4, seed=0), tmp_path / "train.npy",
              TrainConfig(**TINY), seed=4, out=tmp_path / "run")
    d = tmp_path / "run"
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert names == {"config.json", "model.json", "model.safetensors", "history.csv", "metrics.json",
                     "checkpoints/last.safetensors", "checkpoints/last_optim.safetensors",
                     "checkpoints/best.safetensors", "checkpoints/last_state.json"}
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["train"] == TrainConfig(**TINY, seed=4).to_dict()
    assert cfg["seed"] == 4 and cfg["models"] == [res.model.config]
    assert cfg["data"]["path"] == str((tmp_path / "train.npy").resolve())
    assert cfg["data"]["sha256"] == array_sha256(cycle()[None]) and len(cfg["data"]["file_sha256"]) == 64
    assert cfg["data"]["first_point"] == pytest.approx(cycle()[0].tolist())
    assert {"python", "torch", "numpy", "dsrecon"} <= set(cfg["versions"])
    metrics = json.loads((d / "metrics.json").read_text())["training"]
    assert metrics["best_epoch"] == res.best_epoch and metrics["T"] == 400 and "pe" in metrics
    assert [r["epoch"] for r in read_history(d / "history.csv")] == [1, 2]
