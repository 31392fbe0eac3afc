"""File IO and validation helpers of dsrecon.data.io: every format and every bad-input path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from dsrecon.data import (
    Trajectory,
    as_batch,
    as_series,
    check_finite,
    file_sha256,
    load_array,
    load_trajectory,
    save_array,
    save_trajectory,
    validate_array,
)
from dsrecon.errors import ConfigError, DataError, DsreconError, RunDirError


@pytest.fixture
def x():
    return np.random.default_rng(1).standard_normal((50, 3))


# ----------------------------------------------------------------------------- reading
def test_npy_round_trip_keeps_values_and_dtype(tmp_path, x):
    for dtype in (np.float64, np.float32):
        p = tmp_path / f"a_{np.dtype(dtype).name}.npy"
        np.save(p, x.astype(dtype))
        a = load_array(p)
        assert a.dtype == dtype and a.shape == (50, 3)
        np.testing.assert_array_equal(a, x.astype(dtype))


def test_npy_batched_and_integer_data(tmp_path):
    b = np.arange(2 * 10 * 3).reshape(2, 10, 3)
    np.save(tmp_path / "b.npy", b)
    a = load_array(tmp_path / "b.npy")
    assert a.shape == (2, 10, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)


def test_npz_single_array_and_key(tmp_path, x):
    np.savez(tmp_path / "one.npz", data=x)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz"), x)
    np.savez(tmp_path / "two.npz", train=x, test=2 * x)
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz", key="test"), 2 * x)
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz", name="train"), x)


def test_npz_multi_array_without_key_lists_keys(tmp_path, x):
    np.savez(tmp_path / "two.npz", train=x, test=x)
    with pytest.raises(DataError, match=r"two\.npz.*2 arrays.*train.*test.*key="):
        load_array(tmp_path / "two.npz")
    with pytest.raises(DataError, match=r"two\.npz has no array 'val'; it holds: train, test"):
        load_array(tmp_path / "two.npz", key="val")


def test_name_and_key_must_agree(tmp_path, x):
    np.savez(tmp_path / "two.npz", train=x, test=x)
    with pytest.raises(ConfigError, match="disagree"):
        load_array(tmp_path / "two.npz", key="train", name="test")


@pytest.mark.parametrize(
    "text, delim",
    [
        ("{a}", ","),
        ("x,y,z\n{a}", ","),
        ("# comment\n\nx;y;z\n{a}", ";"),
        ("x\ty\tz\n{a}", "\t"),
        ("{a}", " "),
        ("t  u  v\n{a}", "   "),
    ],
)
def test_csv_header_and_delimiter_detection(tmp_path, x, text, delim):
    rows = "\n".join(delim.join(repr(float(v)) for v in row) for row in x)
    p = tmp_path / "a.csv"
    p.write_text(text.format(a=rows) + "\n")
    a = load_array(p)
    assert a.shape == (50, 3)
    np.testing.assert_array_equal(a, x)


def test_csv_single_column_is_2d(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("value\n" + "\n".join(str(i) for i in range(10)))
    a = load_array(p)
    assert a.shape == (10, 1)
    np.testing.assert_array_equal(a[:, 0], np.arange(10))


def test_csv_with_bom_and_crlf(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffa,b\r\n1,2\r\n3,4\r\n5,6\r\n".encode("utf-8"))
    np.testing.assert_array_equal(load_array(p), [[1, 2], [3, 4], [5, 6]])


# ------------------------------------------------------------------------ bad files
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npy: file not found"):
        load_array(tmp_path / "nope.npy")


def test_unsupported_extension(tmp_path):
    (tmp_path / "a.mat").write_bytes(b"xx")
    with pytest.raises(DataError, match=r"a\.mat: unsupported file type '\.mat'.*\.npy"):
        load_array(tmp_path / "a.mat")


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(DataError, match="not a regular file"):
        load_array(tmp_path / "d.npy")


def test_corrupt_npy_and_npz(tmp_path, x):
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(DataError, match=r"text\.npy is not a NumPy \.npy file"):
        load_array(tmp_path / "text.npy")
    np.save(tmp_path / "trunc.npy", x)
    raw = (tmp_path / "trunc.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"trunc\.npy: unreadable or corrupt"):
        load_array(tmp_path / "trunc.npy")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz is not a NumPy \.npz archive"):
        load_array(tmp_path / "bad.npz")
    np.savez(tmp_path / "trunc.npz", x=x)
    raw = (tmp_path / "trunc.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"trunc\.npz: unreadable or corrupt"):
        load_array(tmp_path / "trunc.npz")


def test_binary_csv_and_unparsable_csv(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(DataError, match=r"bin\.csv is a binary file"):
        load_array(tmp_path / "bin.csv")
    (tmp_path / "euro.csv").write_text("1,5;2,5\n3,5;4,5\n")
    with pytest.raises(DataError, match=r"euro\.csv: could not parse.*decimal point"):
        load_array(tmp_path / "euro.csv")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n6,7,8\n")
    with pytest.raises(DataError, match=r"ragged\.csv"):
        load_array(tmp_path / "ragged.csv")


def test_empty_and_header_only_csv(tmp_path):
    (tmp_path / "empty.csv").write_text("\n# only a comment\n")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load_array(tmp_path / "empty.csv")
    (tmp_path / "head.csv").write_text("x,y,z\n")
    with pytest.raises(DataError, match=r"head\.csv: the file has a header row but no data"):
        load_array(tmp_path / "head.csv")


def test_object_array_is_never_unpickled(tmp_path):
    obj = np.empty(3, dtype=object)
    obj[:] = [1, "a", None]
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy holds an object \(pickled\) array"):
        load_array(tmp_path / "obj.npy")
    np.savez(tmp_path / "obj.npz", a=obj)
    with pytest.raises(DataError, match=r"obj\.npz holds an object"):
        load_array(tmp_path / "obj.npz")


def test_non_numeric_dtype(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"], ["e", "f"]]))
    with pytest.raises(DataError, match=r"s\.npy has non-numeric dtype.*string"):
        load_array(tmp_path / "s.npy")
    np.save(tmp_path / "c.npy", np.ones((5, 2), dtype=complex))
    with pytest.raises(DataError, match=r"c\.npy has non-numeric dtype.*complex"):
        load_array(tmp_path / "c.npy")


def test_nan_file_reports_count_and_first_index(tmp_path, x):
    y = x.copy()
    y[7, 2] = np.nan
    y[9, 0] = np.inf
    np.save(tmp_path / "nan.npy", y)
    with pytest.raises(DataError, match=r"nan\.npy contains 2 non-finite value\(s\).*first at index \(7, 2\)"):
        load_array(tmp_path / "nan.npy")
    (tmp_path / "nan.csv").write_text("a,b\n1,2\nnan,3\n4,5\n")
    with pytest.raises(DataError, match=r"nan\.csv contains 1 non-finite.*\(1, 0\)"):
        load_array(tmp_path / "nan.csv")


def test_one_d_file_suggests_reshape(tmp_path):
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    with pytest.raises(DataError, match=r"flat\.npy is 1-d.*reshape\(-1, 1\)"):
        load_array(tmp_path / "flat.npy")


def test_wrong_rank(tmp_path):
    np.save(tmp_path / "r4.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match=r"r4\.npy has shape \(2, 3, 4, 5\).*\(B, T, N\)"):
        load_array(tmp_path / "r4.npy")
    np.save(tmp_path / "r0.npy", np.float64(3.0))
    with pytest.raises(DataError, match=r"r0\.npy"):
        load_array(tmp_path / "r0.npy")


def test_too_short_file(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((1, 3)))
    with pytest.raises(DataError, match=r"short\.npy is too short: 1 time step.*at least 2"):
        load_array(tmp_path / "short.npy")
    np.save(tmp_path / "ok.npy", np.zeros((20, 3)))
    with pytest.raises(DataError, match=r"ok\.npy is too short: 20 .*at least 100"):
        load_array(tmp_path / "ok.npy", min_steps=100)


def test_transposed_and_empty_arrays(tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 1000)))
    with pytest.raises(DataError, match=r"wide\.npy.*more columns.*x\.T"):
        load_array(tmp_path / "wide.npy")
    np.save(tmp_path / "nocol.npy", np.zeros((10, 0)))
    with pytest.raises(DataError, match=r"nocol\.npy is empty"):
        load_array(tmp_path / "nocol.npy")


def test_key_on_csv_is_a_config_error(tmp_path):
    (tmp_path / "a.csv").write_text("1,2\n3,4\n5,6\n")
    with pytest.raises(ConfigError, match="only applies to .npz"):
        load_array(tmp_path / "a.csv", key="x")


# ------------------------------------------------------------------------ trajectories
def test_load_trajectory_meta_and_dt(tmp_path, x):
    p = tmp_path / "a.npy"
    np.save(p, x)
    t = load_trajectory(p, dt=0.01)
    assert isinstance(t, Trajectory) and t.shape == (1, 50, 3) and t.dt == 0.01
    assert t.meta["source"] == str(p.resolve()) and t.meta["sha256"] == file_sha256(p)
    import hashlib

    assert t.meta["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_save_and_load_trajectory_round_trip(tmp_path):
    vals = np.random.default_rng(0).standard_normal((3, 20, 2))
    vals[1] = np.nan
    t = Trajectory(vals, dt=0.05, meta={"system": "Lorenz", "seed": 3}, failed=np.array([False, True, False]))
    t = t.select([0, 2]).standardize()
    p = save_trajectory(tmp_path / "t.npz", t)
    u = load_trajectory(p)
    np.testing.assert_array_equal(u.values, t.values)
    np.testing.assert_array_equal(u.mean, t.mean)
    np.testing.assert_array_equal(u.std, t.std)
    np.testing.assert_array_equal(u.failed, [False, False])
    assert u.dt == 0.05 and u.meta["system"] == "Lorenz" and u.meta["seed"] == 3
    assert load_trajectory(p, dt=0.1).dt == 0.1
    with pytest.raises(RunDirError, match="overwrite=True"):
        save_trajectory(p, t)
    with pytest.raises(DataError, match="JSON"):
        save_trajectory(tmp_path / "bad.npz", Trajectory(vals[:1], meta={"f": object()}))
    with pytest.raises(DataError, match="unsupported"):
        save_trajectory(tmp_path / "t.npy", t)


# ------------------------------------------------------------------------ writing
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".tsv", ".txt"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_save_array_round_trip_exact(tmp_path, x, suffix, dtype):
    a = x.astype(dtype) * 1e3
    p = save_array(tmp_path / f"out{suffix}", a)
    b = load_array(p)
    np.testing.assert_array_equal(b.astype(dtype), a)


def test_save_csv_with_header_and_batched_npz(tmp_path, x):
    p = save_array(tmp_path / "h.csv", x, header=["x", "y", "z"])
    assert p.read_text().splitlines()[0] == "x,y,z"
    np.testing.assert_array_equal(load_array(p), x)
    b = np.stack([x, -x])
    np.testing.assert_array_equal(load_array(save_array(tmp_path / "b.npz", b)), b)
    np.testing.assert_array_equal(load_array(save_array(tmp_path / "t.npy", torch.tensor(b))), b)
    with pytest.raises(DataError, match=r"text table holds a \(T, N\) array"):
        save_array(tmp_path / "b.csv", b)
    with pytest.raises(ConfigError, match="header has 2 names"):
        save_array(tmp_path / "h2.csv", x, header=["a", "b"])


def test_save_refuses_overwrite(tmp_path, x):
    p = save_array(tmp_path / "a.npy", x)
    with pytest.raises(RunDirError, match=r"a\.npy already exists; pass overwrite=True"):
        save_array(p, 2 * x)
    np.testing.assert_array_equal(np.load(p), x)  # untouched
    save_array(p, 2 * x, overwrite=True)
    np.testing.assert_array_equal(np.load(p), 2 * x)
    assert sorted(os.listdir(tmp_path)) == ["a.npy"]  # no temporary files left behind
    assert isinstance(RunDirError("x"), DsreconError)


def test_save_bad_destination(tmp_path, x):
    with pytest.raises(DataError, match="does not exist"):
        save_array(tmp_path / "missing" / "a.npy", x)
    with pytest.raises(DataError, match="unsupported file type"):
        save_array(tmp_path / "a.h5", x)
    with pytest.raises(DataError, match="non-numeric"):
        save_array(tmp_path / "a.npy", np.array(["a", "b"]))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, x):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_array(tmp_path / "a.npy", x)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ helpers
def test_check_finite_accepts_all_kinds(x):
    assert check_finite(x, "x") is x
    t = torch.tensor(x)
    assert check_finite(t, "t") is t
    y = x.copy()
    y[3, 1] = np.nan
    for obj in (y, torch.tensor(y), Trajectory(y)):
        with pytest.raises(DataError, match=r"x_true contains 1 non-finite.*index"):
            check_finite(obj, "x_true")
    bad = Trajectory(np.stack([x, y]), failed=np.array([False, True]))
    with pytest.raises(DataError, match="flagged failed"):
        check_finite(bad, "data")


def test_as_series_and_as_batch(x):
    np.testing.assert_array_equal(as_series(x), x)
    np.testing.assert_array_equal(as_series(x[None]), x)
    s = as_series(torch.tensor(x, dtype=torch.float32, requires_grad=True))
    assert s.dtype == np.float64 and s.shape == (50, 3)
    assert as_series(x.astype(np.float32), dtype=None).dtype == np.float32
    np.testing.assert_array_equal(as_series(Trajectory(x)), x)
    assert as_batch(x).shape == (1, 50, 3)
    assert as_batch(Trajectory(np.stack([x, x]))).shape == (2, 50, 3)
    with pytest.raises(DataError, match=r"pred holds B=2 series.*traj\.series\(i\)"):
        as_series(Trajectory(np.stack([x, x])), "pred")
    with pytest.raises(DataError, match=r"B=2.*x\[i\]"):
        as_series(np.stack([x, x]))
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        as_series(np.arange(5.0))
    with pytest.raises(DataError, match=r"expected \(T, N\)"):
        as_batch(np.zeros((1, 2, 3, 4)))
    with pytest.raises(DataError, match="non-numeric"):
        as_series([["a", "b"]])
    with pytest.raises(DataError, match="rectangular"):
        as_series([[1.0, 2.0], [3.0]])


def test_validate_array_in_memory(x):
    assert validate_array(x.astype(np.int64)).dtype == np.float64
    assert validate_array(x.astype(np.float16)).dtype == np.float32
    with pytest.raises(ConfigError, match="min_steps"):
        validate_array(x, min_steps=0)
    with pytest.raises(DataError, match="my data is too short"):
        validate_array(x[:1], "my data")


def test_paper_data_files_load(paper_data):
    t = load_trajectory(paper_data / "lorenz63_test.npy", dt=0.01)
    assert t.shape == (1, 100000, 3) and t.values.dtype == np.float32
    ecg = load_array(paper_data / "ECG_pecuzal_5d_train.npy")
    assert ecg.shape == (100000, 5) and ecg.dtype == np.float64
