"""Atomic writes and the shared argument checks (empanada_core.io / .validation)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from empanada_core.io import (
    atomic_output,
    atomic_path,
    atomic_write_text,
    process_alive,
    remove_stale_temporaries,
)
from empanada_core.validation import check_choice, check_float, check_int, check_int_list


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old")
    def write_then_fail():
        with atomic_output(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_atomic_path_serves_writers_that_want_a_file_name(tmp_path):
    target = tmp_path / "block.npy"
    with atomic_path(target) as tmp:
        assert not tmp.exists()
        assert tmp.parent == tmp_path
        with open(tmp, "wb") as f:
            np.save(f, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2]
    def write_then_fail():
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"junk")
            raise ValueError

    with pytest.raises(ValueError):
        write_then_fail()
    assert np.load(target).tolist() == [0, 1, 2]
    assert len(list(tmp_path.iterdir())) == 1


def test_temporaries_of_a_killed_writer_are_removed_and_a_live_writers_kept(tmp_path):
    target = tmp_path / "model.pth"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    assert not process_alive(dead_pid)
    stale = tmp_path / f".model.pth.{dead_pid}-abcdef.tmp"
    live = tmp_path / f".model.pth.{os.getpid()}-123456.tmp"
    other = tmp_path / ".other.pth.1-aaaaaa.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(target) == [stale]
    assert live.exists()
    assert other.exists()


@given(st.binary(max_size=2000))
def test_what_is_written_is_read_back(tmp_path_factory, data):
    target = tmp_path_factory.mktemp("w") / "f.bin"
    with atomic_output(target) as f:
        f.write(data)
    assert target.read_bytes() == data


@pytest.mark.parametrize(("value", "error"), [(True, TypeError), (2.0, TypeError), ("3", TypeError),
                                          (0, ValueError), (11, ValueError)])
def test_check_int_refuses_and_names_the_argument(value, error):
    with pytest.raises(error, match="`--iterations`"):
        check_int(value, "--iterations", 1, 10)


def test_checks_return_plain_python_values():
    assert type(check_int(np.int64(4), "n")) is int
    assert check_int(-3, "offset", None) == -3
    assert check_int_list((np.int32(1), 2), "labels") == [1, 2]
    assert check_float(np.float32(0.25), "thr", 0, 1) == 0.25
    assert check_choice("xy", "plane", ("xy", "xz", "yz")) == "xy"


def test_check_int_list_and_float_errors():
    with pytest.raises(TypeError, match="`labels`"):
        check_int_list("12", "labels")
    with pytest.raises(ValueError, match="must not be empty"):
        check_int_list([], "labels", allow_empty=False)
    with pytest.raises(ValueError, match=r"`labels\[1\]` must be >= 1"):
        check_int_list([1, 0], "labels", 1)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_float(0.0, "ratio", 0, 1, low_open=True)
    with pytest.raises(ValueError, match="finite"):
        check_float(float("nan"), "ratio")
    with pytest.raises(ValueError, match="'xy', 'xz'"):
        check_choice("zz", "plane", ("xy", "xz"))
