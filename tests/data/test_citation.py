"""CITATION.cff at the repository root is valid CFF 1.2.0 with the required keys."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cff():
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_top_level_keys(cff):
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "dsrecon" and cff["type"] == "software"
    assert cff["license"] == "MIT" and str(cff["version"]) == "0.1.0"
    assert str(cff["date-released"]) == "2026-11-21"
    assert cff["message"].strip()
    assert cff["authors"] == [{"name": "dsrecon developers"}]


def test_references_cover_the_implemented_methods(cff):
    refs = cff["references"]
    titles = " | ".join(r["title"] for r in refs).lower()
    for needle in ("chaos as an interpretable benchmark", "generalized teacher forcing", "almost-linear rnns",
                   "bifurcations and loss jumps", "tractable dendritic rnns", "linear state space layers",
                   "mamba", "neural ordinary differential equations", "generative recurrent neural networks",
                   "difficulty of learning chaotic dynamics"):
        assert needle in titles, needle
    for r in refs:
        assert r["type"] in ("article", "conference-paper")
        assert r["authors"] and all("family-names" in a for a in r["authors"])
        assert isinstance(r["year"], int) and 2015 <= r["year"] <= 2026
        assert ("journal" in r) or ("conference" in r and r["conference"]["name"])
        assert "doi" in r or "url" in r or "repository-code" in r
