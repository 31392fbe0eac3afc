"""SCYFI finds every fixed point and 2-cycle that exhaustive enumeration finds."""

import numpy as np
import pytest

from analysis_models import hand_2d, oscillating_plrnn, random_plrnn, zoo_model
from dsrecon.analysis import CycleSet, RegionPool, enumerate_cycles, fixed_points, make_view, scyfi
from dsrecon.analysis.scyfi import default_iterations, unique_rows
from dsrecon.errors import ConfigError
from dsrecon.models import build

GENEROUS = dict(outer=4000, n_chains=64)


def assert_same(a, b):
    assert len(a) == len(b)
    for c in b:
        assert any(d.order == c.order and np.min(np.abs(d.points - c.points[0]).max(axis=1)) < 1e-7 for d in a)


@pytest.mark.parametrize("M,seed", [(4, 0), (6, 1), (8, 2), (8, 5), (10, 3), (10, 4)])
def test_scyfi_finds_all_fixed_points(M, seed):
    v = make_view(random_plrnn(M, seed))
    ref = enumerate_cycles(v, 1)
    assert len(ref) >= 1
    assert_same(scyfi(v, 1, seed=seed, **GENEROUS), ref)


def test_reference_models_have_several_fixed_points():
    # guards the test above against vacuous agreement
    counts = [len(enumerate_cycles(make_view(random_plrnn(M, s)), 1)) for M, s in [(8, 2), (10, 3), (10, 4)]]
    assert sum(counts) >= 6 and max(counts) >= 3


@pytest.mark.parametrize("M,seed", [(2, 8), (3, 0), (4, 1), (5, 4), (6, 9)])
def test_scyfi_finds_all_two_cycles(M, seed):
    v = make_view(oscillating_plrnn(M, seed))
    found = CycleSet()
    ref_found = CycleSet()
    enumerate_cycles(v, 1, found=ref_found)
    ref = enumerate_cycles(v, 2, found=ref_found)
    assert len(ref) >= 1
    scyfi(v, 1, found=found, seed=0, **GENEROUS)
    got = scyfi(v, 2, found=found, seed=0, **GENEROUS)
    assert_same(got, ref)
    assert_same(found.items(1), ref_found.items(1))
    for c in got:  # canonical 2-cycles: F(z0) = z1, F(z1) = z0
        assert np.allclose(v.step(c.points), c.points[::-1], atol=1e-9)


@pytest.mark.parametrize(
    "name,seed,hyper",
    [("shplrnn", 2, {"hidden_dim": 8}), ("clipped-shplrnn", 0, {"hidden_dim": 5}), ("alrnn", 2, {"n_pwl": 3}),
     ("dendplrnn", 0, {"n_bases": 2})],
)
def test_scyfi_matches_enumeration_on_model_zoo(name, seed, hyper):
    v = make_view(zoo_model(name, seed, **hyper))
    ref = enumerate_cycles(v, 1)
    assert len(ref) >= 2
    assert_same(scyfi(v, 1, seed=0, **GENEROUS), ref)


def test_hand_built_model_via_public_api():
    for method in ("scyfi", "exhaustive", "auto"):
        cyc = fixed_points(hand_2d(), max_order=2, method=method, seed=0)
        assert [c.kind for c in cyc] == ["stable", "saddle", "saddle", "unstable"]
        assert all(c.order == 1 for c in cyc)


def test_seeded_runs_are_reproducible():
    v = make_view(random_plrnn(9, 7))
    a = scyfi(v, 1, seed=3, outer=50, n_chains=8)
    b = scyfi(v, 1, seed=3, outer=50, n_chains=8)
    assert [c.points.tolist() for c in a] == [c.points.tolist() for c in b]


def test_auto_uses_exhaustive_when_cheap_and_scyfi_otherwise(monkeypatch):
    import sys

    fp = sys.modules["dsrecon.analysis.fixed_points"]  # the package attribute is the function
    calls = []
    monkeypatch.setattr(fp, "enumerate_cycles", lambda *a, **k: calls.append("exhaustive"))
    monkeypatch.setattr(fp, "scyfi", lambda *a, **k: calls.append("scyfi"))
    fixed_points(random_plrnn(6, 0), max_order=3, seed=0, exhaustive_limit=2**12)
    assert calls == ["exhaustive", "exhaustive", "scyfi"]  # 2^6, 2^12 <= limit < 2^18


def test_alrnn_uses_its_2_to_the_p_structure():
    m = build("alrnn", obs_dim=3, latent_dim=20, n_pwl=2, seed=0)
    v = make_view(m)
    assert v.n_bits == 2
    cyc = fixed_points(m, max_order=3, seed=0)  # (2^2)^3 = 64 itineraries: all exhaustive
    assert all(c.regions.shape == (c.order, 2) for c in cyc)


def test_region_pool_and_unique_rows():
    bits = np.array([[1, 0], [1, 0], [0, 1]], dtype=bool)
    assert unique_rows(bits).tolist() == [[True, False], [False, True]]
    v = make_view(random_plrnn(6, 1))
    pool = RegionPool.from_model(v, np.random.default_rng(0), n_trajectories=4, n_steps=20, n_random=50)
    seqs = pool.draw(30, 3, v.n_bits, np.random.default_rng(1))
    assert seqs.shape == (30, 3, 6) and seqs.dtype == bool
    assert default_iterations(1)[1] == 20 and default_iterations(10)[1] == 1080


def test_scyfi_bad_arguments():
    v = make_view(random_plrnn(3, 0))
    with pytest.raises(ConfigError, match="order"):
        scyfi(v, 0)
    with pytest.raises(ConfigError, match="outer"):
        scyfi(v, 1, outer=0)
    from analysis_models import AffineMap

    with pytest.raises(ConfigError, match="piecewise-linear"):
        fixed_points(AffineMap(np.eye(2) * 0.5), method="scyfi")
