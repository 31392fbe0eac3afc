"""Cycle result type, stability classification, de-duplication, canonical rotation."""

import json

import numpy as np
import pytest

from dsrecon.analysis.cycles import (
    Cycle,
    CycleSet,
    canonical_rotation,
    classify,
    minimal_period,
    sort_cycles,
    sort_eigenvalues,
)


@pytest.mark.parametrize(
    "ev, expected",
    [
        ([0.5, -0.9], (True, "stable", 0)),
        ([1.5, -2.0], (False, "unstable", 2)),
        ([1.5, 0.2, 0.1], (False, "saddle", 1)),
        ([0.3 + 1.2j, 0.3 - 1.2j, 0.5], (False, "saddle", 2)),
        ([1.0, 0.5], (False, "saddle", 0)),  # non-hyperbolic: neither stable nor unstable
    ],
)
def test_classify_maps(ev, expected):
    assert classify(np.array(ev)) == expected


@pytest.mark.parametrize(
    "ev, expected",
    [
        ([-1.0, -2.0 + 3j, -2.0 - 3j], (True, "stable", 0)),
        ([0.1, 2.0], (False, "unstable", 2)),
        ([11.8, -2.67, -22.8], (False, "saddle", 1)),
    ],
)
def test_classify_flows(ev, expected):
    assert classify(np.array(ev), continuous=True) == expected


def test_sort_eigenvalues_by_modulus_and_real_part():
    ev = np.array([0.1, -3.0, 1.0j * 2])
    assert np.allclose(sort_eigenvalues(ev), [-3.0, 2j, 0.1])
    assert np.allclose(sort_eigenvalues(ev, continuous=True), [0.1, 2j, -3.0])


def test_minimal_period_detects_repeats():
    a, b = np.array([1.0, 2.0]), np.array([-1.0, 0.5])
    assert minimal_period(np.stack([a, b, a, b])) == 2
    assert minimal_period(np.stack([a, a, a])) == 1
    assert minimal_period(np.stack([a, b, b * 2])) == 3
    assert minimal_period(np.stack([a, b + 1e-12, a + 1e-12, b])) == 2


def test_canonical_rotation_is_rotation_invariant():
    pts = np.array([[0.3, 1.0], [-2.0, 0.0], [1.0, 5.0]])
    ref = canonical_rotation(pts)
    assert np.allclose(ref[0], [-2.0, 0.0])
    for s in range(3):
        assert np.allclose(canonical_rotation(np.roll(pts, s, axis=0)), ref)


def test_cycleset_deduplicates_rotations_and_noise():
    cs = CycleSet(tol=1e-6)
    pts = np.array([[0.3, 1.0], [-2.0, 0.0]])
    assert cs.add(pts)
    assert not cs.add(np.roll(pts, 1, axis=0) + 1e-9)
    assert cs.add(pts + 0.1)
    assert len(cs) == 2 and cs.orders() == [2]
    assert cs.add(np.array([[0.3, 1.0]]))  # a different order is a different list
    assert len(cs.items(1)) == 1


def test_cycle_to_dict_is_json_and_sorting():
    c1 = Cycle(order=1, points=np.zeros((1, 2)), eigenvalues=np.array([0.5 + 0.1j, 0.5 - 0.1j]), stable=True,
               kind="stable", saddle_index=0, regions=np.array([[True, False]]))
    c2 = Cycle(order=1, points=np.ones((1, 2)), eigenvalues=np.array([2.0, 0.5]), stable=False, kind="saddle",
               saddle_index=1)
    c3 = Cycle(order=2, points=np.ones((2, 2)), eigenvalues=np.array([0.1, 0.2]), stable=True, kind="stable",
               saddle_index=0)
    d = json.loads(json.dumps(c1.to_dict()))
    assert d["eigenvalues"] == [[0.5, 0.1], [0.5, -0.1]] and d["regions"] == [[1, 0]]
    assert sort_cycles([c3, c2, c1]) == [c1, c2, c3]
