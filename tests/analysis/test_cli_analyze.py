"""``dsrecon analyze``: run directories, ensembles, benchmark systems, overwrite rules, errors."""

import json

import numpy as np
import pytest

from analysis_models import zoo_model
from dsrecon.cli.main import main
from dsrecon.models import save_model

FAST = ["--steps", "300", "--transient", "20", "--initial-conditions", "2"]


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    save_model(zoo_model("clipped-shplrnn", 0, hidden_dim=5), d)
    (d / "config.json").write_text(json.dumps({"data": {"dt": 0.01, "first_point": [0.1, -0.2]}}))
    return d


def test_run_dir_writes_analysis_json_and_overwrites_it(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--max-order", "2", *FAST]) == 0
    out = capsys.readouterr().out
    assert "Lyapunov spectrum (per time unit, dt=0.01" in out and "Kaplan-Yorke" in out
    res = json.loads((run_dir / "analysis.json").read_text())
    assert res["model"]["name"] == "clipped-shplrnn"
    assert len(res["lyapunov"]["exponents"]) == 3 and res["lyapunov"]["dt"] == 0.01
    assert len(res["fixed_points"]) >= 2  # zoo_model seed 0 has several fixed points
    assert all(c["order"] in (1, 2) and c["kind"] in ("stable", "unstable", "saddle") for c in res["fixed_points"])
    assert main(["analyze", str(run_dir), *FAST]) == 0
    assert "replaced the previous analysis" in capsys.readouterr().out


def test_json_flag_prints_the_json(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--json", "--dt", "0.5", *FAST]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["lyapunov"]["dt"] == 0.5
    assert np.allclose(np.asarray(res["lyapunov"]["per_step"]) / 0.5, res["lyapunov"]["exponents"])


def test_ensemble_run_dir_analyses_every_member(tmp_path, capsys):
    d = tmp_path / "ens"
    for k in range(2):
        save_model(zoo_model("clipped-shplrnn", k, hidden_dim=5), d / f"member_{k:02d}")
    assert main(["analyze", str(d), *FAST]) == 0
    res = json.loads((d / "analysis.json").read_text())
    assert [m["member"] for m in res["members"]] == [0, 1]
    assert main(["analyze", str(d), "--member", "1", *FAST]) == 0
    res = json.loads((d / "analysis.json").read_text())
    assert res["member"] == 1 and "members" not in res
    assert "member 1" in capsys.readouterr().out


def test_system_to_file_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "henon.json"
    assert main(["analyze", "--system", "Henon", "--out", str(out), "--max-order", "2", *FAST]) == 0
    res = json.loads(out.read_text())
    assert res["target"]["system"] == "Henon" and res["lyapunov"]["units"] == "per step"
    assert sorted(c["order"] for c in res["fixed_points"]) == [1, 1, 2]
    assert main(["analyze", "--system", "Henon", "--out", str(out), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["analyze", "--system", "Henon", "--out", str(out), "--overwrite", *FAST]) == 0


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["analyze"], "exactly one"),
        (["analyze", "RUN", "--system", "Lorenz"], "exactly one"),
        (["analyze", "--system", "Lorenz", "--max-order", "-1"], "--max-order"),
        (["analyze", "--system", "Lorenz", "--exponents", "0"], "--exponents"),
        (["analyze", "--system", "Lorenz", "--steps", "0"], "--steps"),
        (["analyze", "--system", "Lorenz", "--dt", "-1"], "--dt"),
        (["analyze", "--system", "Lornz"], "did you mean"),
        (["analyze", "--system", "Lorenz", "--max-order", "2"], "periodic orbits"),
        (["analyze", "/nonexistent/run"], "not a directory"),
        (["analyze", "--system", "Henon", "--device", "tpu"], "device"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_out_is_only_for_systems(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--out", "x.json"]) == 2
    assert "--out is for --system" in capsys.readouterr().err


def test_empty_run_dir_explains(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "model.json" in capsys.readouterr().err


def test_high_dimensional_smooth_model_defaults(tmp_path, monkeypatch, capsys):
    """Above the size limits: the leading exponents only (by JVPs) and no Newton search unless asked."""
    import dsrecon.cli.cmd_analyze as cmd
    from dsrecon.models import build

    monkeypatch.setattr(cmd, "FULL_SPECTRUM_LIMIT", 4)
    monkeypatch.setattr(cmd, "NEWTON_DIM_LIMIT", 4)
    monkeypatch.setattr(cmd, "PARTIAL_DEFAULT", 3)
    run = tmp_path / "lstm"
    save_model(build("lstm", obs_dim=3, latent_dim=11, seed=0), run)   # M = 3 + 2 * 4 = 11
    assert main(["analyze", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "leading 3 of 11" in out and "not searched by default for 11 latent dims" in out
    doc = json.loads((run / "analysis.json").read_text())
    assert len(doc["lyapunov"]["exponents"]) == 3 and doc["lyapunov"]["method"] == "torch-jvp"
    assert doc["fixed_points"] is None and doc["settings"]["n_exponents"] == 3
    assert main(["analyze", str(run), *FAST, "--exponents", "11", "--max-order", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["lyapunov"]["exponents"]) == 11 and isinstance(doc["fixed_points"], list)
