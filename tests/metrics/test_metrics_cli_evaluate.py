"""``dsrecon evaluate``: table, --json, metrics.json, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsrecon.cli.main import main
from dsrecon.models import save_model


@pytest.fixture
def run_and_test(tmp_path, rotation_model, circle_data):
    run = tmp_path / "run"
    save_model(rotation_model(theta=0.2), run)
    test = tmp_path / "test.npy"
    np.save(test, circle_data(400, 0.21))
    return run, test


def test_table_and_metrics_json(run_and_test, capsys):
    run, test = run_and_test
    assert main(["evaluate", str(run), "--test", str(test), "--initial-conditions", "2", "--pe-steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "D_stsp" in out and "D_H" in out and "PE(5)" in out and "initial conditions 2" in out
    saved = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert saved["protocol"]["pe_steps"] == 5 and len(saved["per_initial_condition"]) == 2


def test_json_output_and_options(run_and_test, capsys):
    run, test = run_and_test
    code = main(["evaluate", str(run), "--test", str(test), "--steps", "400", "--transient", "50",
                 "--metrics", "dh", "--json", "--no-write"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"]["n_compared"] == 350 and set(result["flags"]) == {"dh"}
    assert not (run / "metrics.json").exists()


def test_errors_are_one_line(run_and_test, tmp_path, capsys):
    run, test = run_and_test
    assert main(["evaluate", str(tmp_path / "nope"), "--test", str(test)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    assert main(["evaluate", str(run), "--test", str(tmp_path / "missing.npy")]) == 2
    assert main(["evaluate", str(run), "--test", str(test), "--transient", "600", "--steps", "500"]) == 2
    assert "transient" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--test", str(test), "--steps", "300", "--transient", "50"]) == 2
    assert "at least 320 compared steps" in capsys.readouterr().err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "example:" in capsys.readouterr().out
