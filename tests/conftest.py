"""Shared pytest fixtures: deterministic seeds, single-threaded torch, paths to shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER_DATA = ROOT.parent / "shared" / "data" / "dsr-paper"

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def paper_data() -> Path:
    """Directory of the DSR paper data sets (skips the test when ../shared is absent)."""
    if not PAPER_DATA.is_dir():
        pytest.skip(f"shared paper data not found at {PAPER_DATA}")
    return PAPER_DATA


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """A private dataset cache directory (DSRECON_CACHE)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("DSRECON_CACHE", str(d))
    return d
