"""Helpers for tests of empanada packages: partition equality and real-data lookup.

Imported explicitly (``from empanada_core.testing import ...``); pytest is
imported only by :func:`data_path` when it skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["assert_same_partition", "partition_disagreement", "data_path", "find_data_dir"]

DATA_ENV = "EMPANADA_DATA_DIR"


def partition_disagreement(a, b):
    """Fraction of foreground voxels on which two label images disagree as partitions.

    Each id of ``a`` is paired with the id of ``b`` it overlaps most; voxels
    outside those best pairs (and foreground mismatches) count as disagreeing.
    0.0 means equal up to a renaming of ids.

    Examples
    --------
    >>> partition_disagreement(np.array([0, 1, 1, 2]), np.array([0, 5, 5, 7]))
    0.0
    """
    a = np.asarray(a).astype(np.int64).ravel()
    b = np.asarray(b).astype(np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    fg = (a > 0) | (b > 0)
    total = int(fg.sum())
    if total == 0:
        return 0.0
    pairs, counts = np.unique(np.stack([a[fg], b[fg]]), axis=1, return_counts=True)
    valid = (pairs[0] > 0) & (pairs[1] > 0)
    pairs, counts = pairs[:, valid], counts[valid]
    if counts.size == 0:  # foreground on both sides that never overlaps
        return 1.0
    # best partner of each id of a, and of each id of b; agreeing pairs are mutual bests
    order = np.lexsort((-counts, pairs[0]))
    best_a = np.zeros(len(counts), bool)
    best_a[order[np.r_[True, pairs[0][order][1:] != pairs[0][order][:-1]]]] = True
    order = np.lexsort((-counts, pairs[1]))
    best_b = np.zeros(len(counts), bool)
    best_b[order[np.r_[True, pairs[1][order][1:] != pairs[1][order][:-1]]]] = True
    agree = int(counts[best_a & best_b].sum())
    return 1.0 - agree / total


def assert_same_partition(a, b):
    """Assert that two label images are equal up to a bijective renaming of ids."""
    a = np.asarray(a).astype(np.int64).ravel()
    b = np.asarray(b).astype(np.int64).ravel()
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} and {b.shape}")
    if not ((a > 0) == (b > 0)).all():
        raise AssertionError(f"foregrounds differ at {int(((a > 0) != (b > 0)).sum())} voxels")
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    if len(np.unique(pairs[0])) != pairs.shape[1] or len(np.unique(pairs[1])) != pairs.shape[1]:
        raise AssertionError(
            f"partitions differ: {len(np.unique(pairs[0]))} and {len(np.unique(pairs[1]))} "
            f"objects share {pairs.shape[1]} overlapping pairs"
        )


def find_data_dir():
    """The shared real-data folder (``$EMPANADA_DATA_DIR`` or ``../shared/data``), or None."""
    root = os.environ.get(DATA_ENV)
    candidates = [Path(root)] if root else []
    candidates += [p / "shared" / "data" for p in Path.cwd().resolve().parents]
    candidates += [p / "shared" / "data" for p in Path(__file__).resolve().parents]
    for base in candidates:
        if base.is_dir():
            return base
    return None


def _in_ci():
    """True under CI (``CI`` set to anything but empty, 0, false or no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def data_path(name, *files):
    """Folder of one real EM dataset; skip the calling test only when the data is absent.

    The one rule of every real-data test: a test skips (saying where it looked)
    only when the data folder is truly absent, and never under CI (``CI=true``),
    where ``../shared/data`` is provided: there a missing folder fails the test,
    so a broken path cannot turn the golden tests into silent skips. A dataset
    folder that exists but lacks one of ``files`` always fails.

    Parameters
    ----------
    name : str
        Dataset folder, e.g. ``"lucchi_epfl_hippocampus"``.
    *files : str
        Files the test needs inside it, e.g. ``"images.tif"``.

    Returns
    -------
    pathlib.Path
        The dataset folder.
    """
    import pytest

    base = find_data_dir()
    if base is None or not (base / name).is_dir():
        looked = os.environ.get(DATA_ENV) or "../shared/data above the working directory"
        reason = (f"real EM data '{name}' not found (looked in {looked}): set {DATA_ENV} or "
                  f"place it in ../shared/data")
        if _in_ci():
            pytest.fail(f"{reason}; CI=true, where the data must be present", pytrace=False)
        print(f"skipping: {reason}")
        pytest.skip(reason)
    folder = base / name
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        pytest.fail(f"{folder} exists but lacks {', '.join(missing)}", pytrace=False)
    return folder
