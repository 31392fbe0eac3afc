"""`dsrecon fit` and `dsrecon generate` through dsrecon.cli.main.main([...]) with tiny settings."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from dsrecon.cli.main import main
from dsrecon.models import load
from dsrecon.training import read_history

TINY = ["--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4", "--seq-len", "20",
        "--eval-every", "1", "--eval-steps", "400", "--checkpoint-every", "1", "--no-progress"]


@pytest.fixture
def data(tmp_path):
    t = np.arange(600) * 0.15
    x = np.stack([np.cos(t), np.sin(t), 0.5 * np.cos(2 * t)], axis=1).astype(np.float32)
    p = tmp_path / "train.npy"
    np.save(p, x)
    return p


def files(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def fit_args(data, out, *extra):
    return ["fit", "--data", str(data), "--model", "clipped-shplrnn", "--latent-dim", "3", "--hidden-dim", "6",
            "--out", str(out), "--seed", "1", *TINY, *extra]


def test_fit_then_generate(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(data, run, "--forcing", "gtf", "--alpha", "0.3")) == 0
    out = capsys.readouterr().out
    assert "best epoch" in out and "D_stsp=" in out and str(run) in out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["forcing"] == "gtf" and cfg["train"]["alpha"] == 0.3 and cfg["seed"] == 1
    assert cfg["models"][0]["hidden_dim"] == 6 and len(read_history(run / "history.csv")) == 2
    model = load(run)
    assert main(["generate", str(run), "--steps", "50"]) == 0
    gen = np.load(run / "generated.npy")
    assert gen.shape == (50, 3) and np.allclose(gen[0], np.load(data)[0])  # from the first training point
    # refuse to overwrite, then allow it; --from and --out
    assert main(["generate", str(run), "--steps", "50"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    np.save(tmp_path / "ic.npy", np.array([[0.5, -0.5, 0.1], [9.0, 9.0, 9.0]], dtype=np.float32))
    assert main(["generate", str(run), "--steps", "7", "--from", str(tmp_path / "ic.npy"), "--out",
                 str(tmp_path / "g.npy")]) == 0
    g = np.load(tmp_path / "g.npy")
    import torch
    expected = model.generate(torch.tensor([[0.5, -0.5, 0.1]]), 7)[0].numpy()
    assert g.shape == (7, 3) and np.allclose(g, expected, atol=1e-6)
    assert main(["generate", str(run), "--steps", "5", "--overwrite"]) == 0
    assert np.load(run / "generated.npy").shape == (5, 3)


def test_resume_with_only_the_run_directory(data, tmp_path):
    run = tmp_path / "run"
    assert main(fit_args(data, run)) == 0
    before = (run / "checkpoints" / "last.safetensors").read_bytes()
    assert main(["fit", "--out", str(run), "--resume", "--no-progress"]) == 0  # nothing left to train
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == before


def test_config_file_and_flags_precedence(data, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(f'[train]\nepochs = 1\nbatches_per_epoch = 2\nbatch_size = 4\nseq_len = 20\nforcing = "stf"\n'
                    f'tau = 5\neval_steps = 400\n[model]\nname = "alrnn"\nlatent_dim = 5\nn_pwl = 2\n'
                    f'[data]\npath = "{data}"\n')
    run = tmp_path / "run"
    assert main(["fit", "--config", str(toml), "--out", str(run), "--tau", "3", "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["train"]["forcing"], cfg["train"]["tau"], cfg["train"]["epochs"]) == ("stf", 3, 1)
    assert cfg["models"][0]["name"] == "alrnn" and cfg["models"][0]["n_pwl"] == 2


def test_ensemble_and_member_generation(data, tmp_path):
    run = tmp_path / "ens"
    assert main(fit_args(data, run, "--ensemble", "2")) == 0
    assert (run / "member_00" / "model.safetensors").exists() and (run / "member_01" / "model.safetensors").exists()
    assert main(["generate", str(run), "--steps", "10", "--member", "1", "--out", str(tmp_path / "m1.npy")]) == 0
    assert np.load(tmp_path / "m1.npy").shape == (10, 3)
    assert main(["generate", str(run), "--steps", "10", "--out", str(tmp_path / "m.npy")]) == 2  # which member?


def test_models_with_derived_latent_dim(data, tmp_path):
    run = tmp_path / "lstm"
    assert main(["fit", "--data", str(data), "--model", "lstm", "--hidden-dim", "4", "--out", str(run),
                 "--forcing", "gtf", *TINY]) == 0
    assert load(run).latent_dim == 3 + 2 * 4  # [x; h; c]


def test_system_name_as_data(tmp_path, tmp_cache):
    run = tmp_path / "run"
    assert main(["fit", "--data", "Lorenz", "--steps-data", "1500", "--model", "shplrnn", "--hidden-dim", "4",
                 "--out", str(run), "--seed", "2", *TINY]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["shape"] == [1, 1500, 3]
    assert cfg["data"]["meta"]["cli_source"] == {"system": "Lorenz", "steps": 1500, "seed": 2}
    values = np.asarray(cfg["data"]["first_point"])
    assert np.all(np.abs(values) < 5)  # standardised


@pytest.mark.parametrize("extra,match", [
    (["--latent-dim", "2"], "latent_dim"),  # identity observation needs M >= N
    (["--model", "shplrn"], "unknown model 'shplrn'"),
    (["--alpha", "1.5"], "alpha must be in"),
    (["--alpha", "-0.5"], "alpha must be in"),
    (["--tau", "0"], "tau"),
    (["--epochs", "0"], "epochs"),
    (["--lr", "0"], "lr must be > 0"),
    (["--device", "cuda:7"], "device"),
    (["--seq-len", "700"], "fewer than one training window"),
    (["--data", "no_such_system_or_file"], "neither an existing file nor a known system"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_run_alone(data, tmp_path, capsys, extra, match):
    run = tmp_path / "run"
    assert main(fit_args(data, run)) == 0
    before = files(run)
    capsys.readouterr()
    assert main(fit_args(data, run, "--overwrite", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err
    assert files(run) == before


def test_existing_run_needs_overwrite(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(data, run)) == 0
    before = files(run)
    assert main(fit_args(data, run)) == 2
    assert "--overwrite" in capsys.readouterr().err and files(run) == before
    assert main(fit_args(data, run, "--overwrite", "--seed", "5")) == 0
    assert json.loads((run / "config.json").read_text())["seed"] == 5


def test_nonfinite_data_file(tmp_path, capsys):
    x = np.ones((300, 3), dtype=np.float32)
    x[10, 0] = np.nan
    np.save(tmp_path / "bad.npy", x)
    assert main(fit_args(tmp_path / "bad.npy", tmp_path / "run")) == 2
    assert "non-finite" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("ensemble", [[], ["--ensemble", "2"]])
def test_fit_with_the_default_progress_bar(data, tmp_path, capsys, ensemble):
    """The CLI's default (a tqdm bar with loss / alpha / D_stsp postfix) for one model and an ensemble."""
    run = tmp_path / "run"
    args = [a for a in fit_args(data, run, "--forcing", "agtf", *ensemble) if a != "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2/2" in err and "loss=" in err and "alpha=" in err and "dstsp=" in err


def test_evaluate_an_ensemble_run_member_by_member(data, tmp_path, capsys):
    """`dsrecon evaluate` on an ensemble: every member (own metrics.json) + median +- MAD; --member K."""
    run = tmp_path / "ens"
    assert main(fit_args(data, run, "--ensemble", "2")) == 0
    capsys.readouterr()
    test_args = ["--test", str(data), "--steps", "500", "--transient", "100", "--pe-steps", "5"]
    assert main(["evaluate", str(run), *test_args]) == 0
    out = capsys.readouterr().out
    assert "== member_00" in out and "== member_01" in out and "median +- MAD over 2 members" in out
    for k in range(2):
        assert "evaluation" in json.loads((run / f"member_{k:02d}" / "metrics.json").read_text())
    assert main(["evaluate", str(run), *test_args, "--json", "--no-write"]) == 0
    doc = json.loads(capsys.readouterr().out)                      # one JSON document
    assert set(doc["members"]) == {"member_00", "member_01"} and doc["aggregate"]["dstsp"]["n"] == 2
    assert main(["evaluate", str(run), *test_args, "--member", "1", "--no-write"]) == 0
    assert "== member" not in capsys.readouterr().out
    assert main(["evaluate", str(run), *test_args, "--member", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no ensemble member 5" in err and "member_00" in err


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch, capsys):
    """`dsrecon systems list | head -1`: the reader leaves early; no traceback, exit 0."""
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["systems", "list"]) == 0
