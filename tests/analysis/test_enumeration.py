"""Exhaustive enumeration: a hand-built PLRNN with known fixed points, and the batched search
against a slow one-region-at-a-time reference written here."""

import itertools

import numpy as np
import pytest

from analysis_models import HandPLRNN, ProtocolOnlyPLRNN, hand_2d, oscillating_plrnn, random_plrnn
from dsrecon.analysis import enumerate_cycles, fixed_points, make_view
from dsrecon.errors import ConfigError


def reference_cycles(model: HandPLRNN, k: int) -> list[np.ndarray]:
    """Slow brute force: for every itinerary of k codes solve (I - P) z = c with np.linalg.solve,
    iterate the map with plain NumPy and keep self-consistent cycles of minimal period k."""
    a, W, h = (t.detach().numpy() for t in (model.a, model.W, model.h))
    M = a.size

    def F(z):
        return a * z + W @ np.maximum(z, 0) + h

    out: list[np.ndarray] = []
    codes = list(itertools.product([False, True], repeat=M))
    for seq in itertools.product(codes, repeat=k):
        P, c = np.eye(M), np.zeros(M)
        for code in seq:
            Wc = np.diag(a) + W * np.asarray(code, dtype=float)[None, :]
            P, c = Wc @ P, Wc @ c + h
        try:
            z = np.linalg.solve(np.eye(M) - P, c)
        except np.linalg.LinAlgError:
            continue
        pts = [z]
        for _ in range(k):
            pts.append(F(pts[-1]))
        if any(tuple(pts[j] > 0) != seq[j] for j in range(k)):
            continue
        if any(np.allclose(pts[p], pts[0], atol=1e-9) for p in range(1, k)):
            continue  # lower order
        if not any(np.min(np.abs(np.asarray(o) - z).max(axis=1)) < 1e-7 for o in out):
            out.append(np.asarray(pts[:k]))
    return out


def same_sets(found, ref) -> bool:
    if len(found) != len(ref):
        return False
    for pts in ref:
        if not any(c.order == len(pts) and np.min(np.abs(c.points - pts[0]).max(axis=1)) < 1e-7 for c in found):
            return False
    return True


def test_hand_built_fixed_points_and_eigenvalues():
    m = hand_2d()
    cyc = enumerate_cycles(make_view(m), 1)
    assert len(cyc) == 4
    expect = {(-1.0, -1.0): ("stable", 0), (1.0, -1.0): ("saddle", 1), (-1.0, 1.0): ("saddle", 1),
              (1.0, 1.0): ("unstable", 2)}
    for c in cyc:
        key = tuple(np.round(c.points[0], 12))
        assert key in expect
        assert (c.kind, c.saddle_index) == expect[key]
        slopes = sorted(0.5 if v < 0 else 1.5 for v in key)
        assert np.allclose(sorted(c.eigenvalues.real), slopes) and np.allclose(c.eigenvalues.imag, 0)
        assert np.array_equal(c.regions[0], np.asarray(key) > 0)
        assert c.residual < 1e-12
    assert enumerate_cycles(make_view(m), 2) == []  # monotone units: no 2-cycles


@pytest.mark.parametrize("M,seed", [(3, 0), (5, 1), (6, 2), (8, 3)])
def test_fixed_points_match_slow_reference(M, seed):
    m = random_plrnn(M, seed)
    ref = reference_cycles(m, 1)
    found = enumerate_cycles(make_view(m), 1)
    assert same_sets(found, ref)
    for c in found:
        with np.errstate(all="ignore"):
            z = c.points
            assert np.allclose(make_view(m).step(z), z, atol=1e-9)


TWO_CYCLE_CASES = [(2, 8), (3, 0), (4, 1), (5, 4), (6, 9)]


@pytest.mark.parametrize("M,seed", TWO_CYCLE_CASES)
def test_two_cycles_match_slow_reference(M, seed):
    m = oscillating_plrnn(M, seed)
    ref = reference_cycles(m, 2)
    found = enumerate_cycles(make_view(m), 2)
    assert same_sets(found, ref)


def test_some_reference_models_have_cycles():
    # guards the two tests above against vacuous agreement on empty sets
    assert sum(len(reference_cycles(random_plrnn(M, s), 1)) for M, s in [(5, 1), (6, 2), (8, 3)]) >= 3
    assert all(len(reference_cycles(oscillating_plrnn(M, s), 2)) >= 1 for M, s in TWO_CYCLE_CASES)


def test_protocol_view_gives_same_cycles():
    m = random_plrnn(5, 1)
    p = ProtocolOnlyPLRNN(m.a.detach(), m.W.detach(), m.h.detach())
    assert same_sets(enumerate_cycles(make_view(p), 1), [c.points for c in enumerate_cycles(make_view(m), 1)])


def test_enumeration_refuses_huge_searches():
    with pytest.raises(ConfigError, match="itineraries"):
        enumerate_cycles(make_view(random_plrnn(13, 0)), 2, max_candidates=2**20)
    with pytest.raises(ConfigError, match="order"):
        enumerate_cycles(make_view(random_plrnn(3, 0)), 0)
    with pytest.raises(ConfigError, match="2\\^24"):
        fixed_points(random_plrnn(13, 0), max_order=2, method="exhaustive")
