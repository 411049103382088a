"""Helpers to compare label images produced by different implementations (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["contingency", "same_partition"]


def contingency(a, b):
    """Sparse contingency table of two label arrays of one shape.

    Returns:
        (a_ids, b_ids, pair_a, pair_b, counts): the sorted unique labels of ``a``
        and ``b`` and, for every label pair that co-occurs, the index of its
        ``a`` label in ``a_ids``, of its ``b`` label in ``b_ids`` and the number
        of voxels where it occurs (pairs sorted by (a, b)).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a_ids, ia = _factorize(a.ravel())
    b_ids, ib = _factorize(b.ravel())
    nb = np.int64(len(b_ids))
    key = ia.astype(np.int64) * nb + ib
    if len(a_ids) * len(b_ids) <= max(4 * key.size, 1 << 20):
        counts = np.bincount(key, minlength=len(a_ids) * len(b_ids))
        pairs = np.flatnonzero(counts)
        counts = counts[pairs]
    else:
        pairs, counts = np.unique(key, return_counts=True)
    pair_a, pair_b = np.divmod(pairs, nb)
    return a_ids, b_ids, pair_a, pair_b, counts


def _factorize(x):
    """(sorted unique values, index of each element in them) -- O(n) for small ints."""
    if x.size and np.issubdtype(x.dtype, np.integer):
        if x.dtype == np.uint64:
            ids, inv = np.unique(x, return_inverse=True)
            return ids, inv.reshape(-1)
        lo, hi = int(x.min()), int(x.max())
        if hi - lo <= max(4 * x.size, 1 << 20):
            present = np.bincount(x - lo if lo else x, minlength=hi - lo + 1) > 0
            ids = np.flatnonzero(present)
            lut = np.cumsum(present) - 1
            return (ids + lo).astype(x.dtype), lut[x - lo if lo else x]
    ids, inv = np.unique(x, return_inverse=True)
    return ids, inv.reshape(-1)


def same_partition(a, b, *, background=0):
    """Compare two label images as partitions, ignoring the label values.

    Args:
        a, b: label arrays of one shape (any integer dtype, any dimension).
        background: label that must correspond in both (``None`` treats the
            background like any other label).

    Returns:
        (equal, disagree_frac):
        ``equal`` -- True iff there is a bijection between the labels of ``a``
        and of ``b`` mapping one onto the other voxel-wise (and, unless
        ``background is None``, mapping ``background`` to ``background``: a
        voxel is background in ``a`` iff it is in ``b``).
        ``disagree_frac`` -- fraction of voxels not covered by mutually best
        matching label pairs (pair (i, j) counts when j is the label of ``b``
        overlapping i most and i the label of ``a`` overlapping j most; ties go
        to the smaller label); 0.0 iff ``equal`` when background is ignored.
    """
    a_ids, b_ids, pa, pb, counts = contingency(a, b)
    n = int(counts.sum())
    if n == 0:
        return True, 0.0
    equal = len(pa) == len(a_ids) == len(b_ids)
    if equal and background is not None:
        a_bg = np.nonzero(a_ids == background)[0]
        b_bg = np.nonzero(b_ids == background)[0]
        if a_bg.size != b_bg.size:
            equal = False
        elif a_bg.size:
            hit = (pa == a_bg[0]) & (pb == b_bg[0])
            equal = bool(hit.any())
    # best partner per a label: sort by (a, -count, b); first of each a group
    oa = np.lexsort((pb, -counts, pa))
    first_a = np.ones(len(oa), bool)
    first_a[1:] = pa[oa][1:] != pa[oa][:-1]
    best_b_of_a = np.empty(len(a_ids), np.int64)
    best_b_of_a[pa[oa][first_a]] = pb[oa][first_a]
    ob = np.lexsort((pa, -counts, pb))
    first_b = np.ones(len(ob), bool)
    first_b[1:] = pb[ob][1:] != pb[ob][:-1]
    best_a_of_b = np.empty(len(b_ids), np.int64)
    best_a_of_b[pb[ob][first_b]] = pa[ob][first_b]
    mutual = (best_b_of_a[pa] == pb) & (best_a_of_b[pb] == pa)
    if background is not None:
        # the background may only be matched with the background
        a_is_bg = a_ids[pa] == background
        b_is_bg = b_ids[pb] == background
        mutual &= a_is_bg == b_is_bg
    agree = int(counts[mutual].sum())
    return bool(equal), 1.0 - agree / n
