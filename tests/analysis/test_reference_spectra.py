"""The dysts-metadata consistency check: flags, table, and a short real recompute."""

import json

import numpy as np

from dsrecon.analysis import markdown_table, recompute_reference_spectra
from dsrecon.analysis.reference_spectra import compare_row


def test_compare_row_flags():
    ours = np.array([0.9, 0.0, -14.5])
    assert not compare_row("a", ours, 0.01, 0.95, np.array([0.92, 0, -14]), 0.2)["disagrees"]
    r = compare_row("b", ours, 0.01, 1.5, None, 0.2)
    assert r["disagrees"] and "differs by 40%" in r["reasons"][0]
    r = compare_row("c", ours, 0.01, -0.5, None, 0.2)
    assert r["disagrees"] and "sign" in r["reasons"][0]
    # within our own (large) convergence spread: not significant
    assert not compare_row("d", ours, 0.4, 1.5, None, 0.2)["disagrees"]
    # both "zero" (a limit cycle): agreement
    assert not compare_row("e", np.array([1e-4, -1.0]), 1e-3, 2e-4, None, 0.2)["disagrees"]


def test_recompute_one_system_and_table():
    rows = recompute_reference_spectra(["Lorenz"], n_steps=600, transient=100, n_initial_conditions=2)
    assert len(rows) == 1 and rows[0]["error"] is None
    r = rows[0]
    assert r["name"] == "Lorenz" and len(r["exponents"]) == 3 and 0.3 < r["exponents"][0] < 1.6
    json.dumps(rows)  # plain JSON
    assert r["dt_check"] in (None, "ok") or "step" in r["dt_check"]
    ok = dict(r, disagrees=False, reasons=[], dt_check=None)
    fake = [dict(r, disagrees=True, reasons=["lambda_max differs by 50%"]),
            dict(r, name="Y", disagrees=False, reasons=[], dt_check="step-size sensitive (1 vs 2 at dt/4)"),
            {"name": "X", "dim": 3, "dysts_max": 1.0, "dysts_spectrum": None, "error": "boom", "disagrees": None}]
    table = markdown_table([ok] + fake)
    assert table.count("\n") == 4  # header, rule and the three rows to look at; the agreeing row is left out
    assert "| X | 3 | failed |" in table and "differs by 50%" in table and "[step-size sensitive" in table
    assert markdown_table([ok], only_disagreements=False).count("Lorenz") == 1
