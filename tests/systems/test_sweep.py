"""Every system integrates for a short horizon with finite values, or reports why it failed."""

from __future__ import annotations

import numpy as np
import pytest

import dsrecon.systems as S

FLOWS = S.list_systems("flow")
MAPS = S.list_systems("map")
SAMPLED = sorted(set(FLOWS[::10]) | set(S.list_systems("delay")) | {"Lorenz", "Rossler", "BeerRNN"})


def _check(name: str, n: int = 100) -> None:
    tr = S.simulate(name, n, cache=False, max_time=120)
    s = S.get(name)
    assert tr.shape == (1, n, s.dim), name
    if tr.failed.any():  # allowed, but only with a stated reason
        assert tr.meta["failures"][0], name
    else:
        assert np.isfinite(tr.values).all(), name


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_flows_integrate(name):
    _check(name)


@pytest.mark.parametrize("name", ["Henon", "Logistic", "Ikeda", "DuffingMap", "Baker"])
def test_sampled_maps_iterate(name):
    _check(name)


@pytest.mark.slow
def test_full_sweep_all_flows_and_maps():
    """All 158 systems, 100 samples each (about a minute on one core)."""
    clean = 0
    for name in FLOWS + MAPS:
        _check(name)
        clean += 1
    assert clean == len(FLOWS) + len(MAPS)
