"""`dsrecon systems list|show` and `dsrecon simulate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsrecon.cli.main import main


def test_systems_list(capsys):
    assert main(["systems", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert "Lorenz" in names and "Henon" in names and len(names) == 158
    assert main(["systems", "list", "--kind", "map", "--json"]) == 0
    maps = json.loads(capsys.readouterr().out)
    assert "Henon" in maps and "Lorenz" not in maps and len(maps) == 23


def test_systems_show(capsys):
    assert main(["systems", "show", "lorenz", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "Lorenz" and info["dim"] == 3 and info["params"]["beta"] == pytest.approx(8 / 3)
    for key in ("dt", "period", "lyapunov_spectrum", "citation", "evaluation"):
        assert key in info
    assert main(["systems", "show", "Rossler"]) == 0
    assert "period" in capsys.readouterr().out


def test_unknown_system_is_one_line_exit_2(capsys):
    assert main(["systems", "show", "lornz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean: Lorenz" in err
    assert main(["simulate", "lornz", "--steps", "10", "--out", "x.npy"]) == 2


def test_simulate_writes_files(tmp_path, tmp_cache, capsys):
    out = tmp_path / "l.npy"
    assert main(["simulate", "lorenz", "--steps", "50", "--dt", "0.01", "--out", str(out)]) == 0
    a = np.load(out)
    assert a.shape == (50, 3)
    csv = tmp_path / "l.csv"
    assert main(["simulate", "lorenz", "--steps", "50", "--dt", "0.01", "--out", str(csv)]) == 0
    np.testing.assert_allclose(np.loadtxt(csv, delimiter=",", skiprows=1), a, rtol=1e-15)
    npz = tmp_path / "r.npz"
    assert main(["simulate", "rossler", "--steps", "40", "--trajectories", "3", "--seed", "1",
                 "--noise", "0.1", "--standardize", "--out", str(npz)]) == 0
    from dsrecon.data import load_trajectory

    tr = load_trajectory(npz)
    assert tr.shape == (3, 40, 3) and tr.is_standardized and tr.meta["seed"] == 1


def test_simulate_refuses_to_overwrite(tmp_path, tmp_cache, capsys):
    out = tmp_path / "x.npy"
    out.write_bytes(b"keep me")
    assert main(["simulate", "lorenz", "--steps", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert main(["simulate", "lorenz", "--steps", "10", "--out", str(out), "--overwrite"]) == 0
    assert np.load(out).shape == (10, 3)


@pytest.mark.parametrize("argv,match", [
    (["--steps", "0"], "n_steps"), (["--steps", "10", "--dt", "-1"], "dt"),
    (["--steps", "10", "--noise", "-0.5"], "noise"), (["--steps", "10", "--trajectories", "2", "--csv"], "csv"),
])
def test_simulate_bad_inputs(argv, match, tmp_path, tmp_cache, capsys):
    out = tmp_path / ("x.csv" if "--csv" in argv else "x.npy")
    argv = [a for a in argv if a != "--csv"]
    assert main(["simulate", "lorenz", *argv, "--out", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_simulate_dt_and_pts_are_exclusive(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "lorenz", "--steps", "5", "--dt", "0.1", "--pts-per-period", "10", "--out", str(tmp_path / "x.npy")])
    assert exc.value.code == 2


def test_help_ends_with_example(capsys):
    for cmd in (["systems", "--help"], ["simulate", "--help"], ["systems", "show", "--help"]):
        with pytest.raises(SystemExit):
            main(cmd)
        assert capsys.readouterr().out.rstrip().splitlines()[-2].strip() == "example:"
