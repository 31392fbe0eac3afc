"""The compiled SCYFI search (scyfi_kernel) against its NumPy reference and exhaustive enumeration."""

import numpy as np
import pytest

from analysis_models import HandPLRNN, ProtocolOnlyPLRNN, hand_2d, oscillating_plrnn, random_plrnn, zoo_model
from dsrecon.analysis import CycleSet, RegionPool, enumerate_cycles, make_view, scyfi
from dsrecon.analysis import scyfi_kernel
from dsrecon.errors import ConfigError

GENEROUS = dict(outer=4000, n_chains=64)


def same_cycles(a, b, atol=1e-7):
    """Same orders and points (any rotation) for two lists of cycles."""
    if len(a) != len(b):
        return False
    return all(any(d.order == c.order and np.min(np.abs(d.points - c.points[0]).max(axis=1)) < atol for d in a)
               for c in b)


def both(view, order, found_kw=None, **kw):
    """(numba cycles, numpy cycles) of one order, each with its own CycleSet holding lower orders."""
    out = []
    for impl in ("numba", "numpy"):
        found = CycleSet()
        for k in range(1, order):
            scyfi(view, k, found=found, seed=0, impl=impl, **kw)
        out.append(scyfi(view, order, found=found, seed=0, impl=impl, **kw))
    return out


def test_hand_built_model_numba_equals_numpy_equals_known_answer():
    v = make_view(hand_2d())
    fast, ref = both(v, 1, **GENEROUS)
    assert same_cycles(fast, ref, atol=1e-12)
    assert sorted(np.round(c.points[0], 12).tolist() for c in fast) == [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0],
                                                                      [1.0, 1.0]]
    assert [c.kind for c in fast] == ["stable", "saddle", "saddle", "unstable"]


@pytest.mark.parametrize("M,seed", [(6, 1), (8, 2), (8, 5), (10, 3)])
def test_fixed_points_numba_equals_exhaustive_and_numpy(M, seed):
    v = make_view(random_plrnn(M, seed))
    ref = enumerate_cycles(v, 1)
    assert len(ref) >= 1
    st = {}
    fast = scyfi(v, 1, seed=seed, stats=st, **GENEROUS)
    assert st["impl"] == "numba"
    assert same_cycles(fast, ref)
    assert same_cycles(scyfi(v, 1, seed=seed, impl="numpy", **GENEROUS), ref)
    for c in fast:  # the batched classification agrees with enumeration's, field by field
        e = next(d for d in ref if np.abs(d.points - c.points).max() < 1e-7)
        assert (c.kind, c.stable, c.saddle_index) == (e.kind, e.stable, e.saddle_index)
        assert np.allclose(c.eigenvalues, e.eigenvalues, atol=1e-9)
        assert np.array_equal(c.regions, e.regions) and c.residual < 1e-9


@pytest.mark.parametrize("M,seed", [(3, 0), (4, 1), (5, 4)])
def test_two_cycles_numba_equals_exhaustive(M, seed):
    v = make_view(oscillating_plrnn(M, seed))
    ref_found = CycleSet()
    enumerate_cycles(v, 1, found=ref_found)
    ref = enumerate_cycles(v, 2, found=ref_found)
    assert len(ref) >= 1
    found = CycleSet()
    scyfi(v, 1, found=found, seed=0, impl="numba", **GENEROUS)
    fast = scyfi(v, 2, found=found, seed=0, impl="numba", **GENEROUS)
    assert same_cycles(fast, ref) and same_cycles(found.items(1), ref_found.items(1))
    for c in fast:  # canonical 2-cycles: F(z0) = z1, F(z1) = z0
        assert np.allclose(v.step(c.points), c.points[::-1], atol=1e-9)


def test_three_cycles_use_the_composed_map():
    v = make_view(oscillating_plrnn(3, 0))
    ref_found = CycleSet()
    for k in (1, 2):
        enumerate_cycles(v, k, found=ref_found)
    ref = enumerate_cycles(v, 3, found=ref_found)
    fast, slow = both(v, 3, **GENEROUS)
    assert same_cycles(fast, ref) and same_cycles(slow, ref)


@pytest.mark.parametrize(
    "name,seed,hyper",
    [("shplrnn", 2, {"hidden_dim": 8}), ("clipped-shplrnn", 0, {"hidden_dim": 5}), ("alrnn", 2, {"n_pwl": 3}),
     ("dendplrnn", 0, {"n_bases": 2}),
     # L < M: every fixed-point solve goes through the Woodbury r x r system (clipped: slopes -1/0/1)
     ("clipped-shplrnn", 2, {"hidden_dim": 4, "latent_dim": 6}), ("shplrnn", 2, {"hidden_dim": 4, "latent_dim": 6})],
)
def test_every_shallow_form_model(name, seed, hyper):
    v = make_view(zoo_model(name, seed, **hyper))
    ref = enumerate_cycles(v, 1)
    assert len(ref) >= 2
    fast, slow = both(v, 1, **GENEROUS)
    assert same_cycles(fast, ref) and same_cycles(slow, ref)
    if hyper.get("latent_dim", 3) > hyper.get("hidden_dim", 99):
        st = {}
        scyfi(v, 1, seed=0, stats=st, **GENEROUS)
        assert st["n_direct_solves"] == 0 and st["n_evaluations"] > 0  # the Woodbury path did all the work


def test_woodbury_fallback_when_some_a_is_one():
    # a_0 = 1: B = I - diag(a) is singular, the kernel must use the direct M x M solve
    m = random_plrnn(6, 1)
    with __import__("torch").no_grad():
        m.a[0] = 1.0
    v = make_view(m)
    assert scyfi_kernel.kernel_form(v).G.size == 0
    st = {}
    assert same_cycles(scyfi(v, 1, seed=0, stats=st, **GENEROUS), enumerate_cycles(v, 1))
    assert st["n_direct_solves"] == st["n_evaluations"]


def test_hashed_memo_equals_direct_table(monkeypatch):
    v = make_view(random_plrnn(9, 7))
    a_st, b_st = {}, {}
    a = scyfi(v, 1, seed=4, outer=300, stats=a_st)
    monkeypatch.setattr(scyfi_kernel, "DIRECT_BITS", 0)  # force the open-addressing table
    b = scyfi(v, 1, seed=4, outer=300, stats=b_st)
    assert [c.points.tolist() for c in a] == [c.points.tolist() for c in b]
    assert a_st == b_st


def test_seeded_search_is_reproducible_and_budget_is_a_prefix():
    v = make_view(random_plrnn(10, 3))
    st1, st2, st3 = {}, {}, {}
    a = scyfi(v, 1, seed=11, outer=2000, stats=st1)
    b = scyfi(v, 1, seed=11, outer=2000, stats=st2)
    assert [c.points.tolist() for c in a] == [c.points.tolist() for c in b] and st1 == st2
    assert st1["stop"] in scyfi_kernel.STOP_REASONS and st1["n_evaluations"] >= st1["n_fresh_starts"] > 0
    # the run with outer = max_gap follows the same path and stops after the last discovery
    c = scyfi(v, 1, seed=11, outer=max(1, st1["max_gap"]), stats=st3)
    assert same_cycles(c, a) and st3["n_evaluations"] <= st1["n_evaluations"]


@pytest.mark.parametrize("factory", [lambda: random_plrnn(8, 1), lambda: zoo_model("clipped-shplrnn", 0, hidden_dim=5),
                                     lambda: zoo_model("alrnn", 2, n_pwl=3)])
def test_compiled_region_pool_equals_numpy_pool(factory):
    v = make_view(factory())
    a = RegionPool.from_model(v, np.random.default_rng(0), impl="numpy")
    b = RegionPool.from_model(v, np.random.default_rng(0), impl="numba")
    assert np.array_equal(a.valid_len, b.valid_len) and np.array_equal(a.pool, b.pool)
    for i, n in enumerate(a.valid_len):
        assert np.array_equal(a.traj_bits[i, :n], b.traj_bits[i, :n])


def test_impl_selection_and_bad_input():
    protocol = make_view(ProtocolOnlyPLRNN([0.5, 0.5], np.eye(2), [-0.5, -0.5]))
    st = {}
    assert len(scyfi(protocol, 1, seed=0, stats=st)) == 4 and st["impl"] == "numpy"  # auto: no shallow form
    with pytest.raises(ConfigError, match="shallow form"):
        scyfi(protocol, 1, impl="numba")
    v = make_view(HandPLRNN([0.5], [[1.0]], [-0.5]))
    with pytest.raises(ConfigError, match="impl"):
        scyfi(v, 1, impl="cuda")
    with pytest.raises(ConfigError, match="impl"):
        RegionPool.from_model(v, np.random.default_rng(0), impl="fast")
