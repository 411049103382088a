"""A label index: voxel count and bounding box of every id, kept up to date by every edit.

Built once with one sweep over the array (block by block, aligned to zarr
chunks), then updated from the sparse diff of each edit, so that locating,
editing, counting and filtering an object never scans the whole volume again.
"""

from __future__ import annotations

import numbers
import weakref

import numpy as np
from scipy import ndimage as ndi

from . import _arrays

__all__ = ["LabelIndex", "label_index", "forget_index"]


def _group(values):
    """Sorted unique values, inverse and counts (one comparison when all are equal)."""
    if values.size == 0:
        return values[:0].copy(), np.zeros(0, np.intp), np.zeros(0, np.int64)
    lo, hi = values.min(), values.max()
    if lo == hi:
        return values[:1].copy(), np.zeros(values.size, np.intp), np.array([values.size])
    if int(hi) < max(1 << 20, 2 * values.size):  # small ids: linear bincount, no sort
        counts = np.bincount(values.astype(np.intp, copy=False))
        uniq = np.flatnonzero(counts)
        lut = np.zeros(counts.size, np.intp)
        lut[uniq] = np.arange(uniq.size)
        return uniq.astype(values.dtype), lut[values], counts[uniq]
    uniq, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
    return uniq, inv.reshape(-1), counts


class StaleIndexError(RuntimeError):
    """The array changed behind the index's back (internal: triggers a rebuild)."""


def _compress(block):
    """Ids of a block and the block relabelled 1..K (0 stays background)."""
    flat = block.reshape(-1)
    top = int(flat.max()) if flat.size else 0
    if top <= max(2 * flat.size, 1 << 16):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(top + 1, dtype=np.int32 if ids.size < 2**31 else np.intp)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids.astype(np.uint64), lut[block], counts[ids].astype(np.int64)
    uniq, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inv = inv.reshape(block.shape)
    if uniq[0] != 0:
        inv = inv + 1
    else:
        uniq, counts = uniq[1:], counts[1:]
    return uniq.astype(np.uint64), inv, counts.astype(np.int64)


def _block_stats(block, origin):
    ids, compressed, sizes = _compress(block)
    if ids.size == 0:
        return None
    objects = ndi.find_objects(compressed)
    bounds = np.array([[(s.start, s.stop) for s in obj] for obj in objects], np.int64)
    lo = bounds[:, :, 0] + origin
    hi = bounds[:, :, 1] + origin
    return ids, sizes, lo, hi


class LabelIndex:
    """Voxel count and half-open bounding box of every nonzero id of a label array.

    Build it with :meth:`build` (or get the shared one with
    :func:`label_index`). Every operation of this package keeps it up to date;
    after editing the array by other means (painting), pass the change to
    :meth:`record_change`, or rebuild.

    Attributes
    ----------
    shape : tuple of int
        Shape of the indexed array.
    dtype : numpy.dtype
        Its dtype.
    """

    def __init__(self, shape, dtype, ids, sizes, bbox_min, bbox_max):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._ids = np.asarray(ids, np.uint64)
        self._sizes = np.asarray(sizes, np.int64)
        self._lo = np.asarray(bbox_min, np.int64).reshape(-1, len(self.shape))
        self._hi = np.asarray(bbox_max, np.int64).reshape(-1, len(self.shape))
        # True where voxels were removed since the box was last exact (the box may be loose)
        self._loose = np.zeros(self._ids.size, bool)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def build(cls, labels, *, progress=None):
        """Index ``labels`` in one sweep, block by block.

        Parameters
        ----------
        labels : numpy or zarr array of int
            Label array (0 is background).
        progress : callable, optional
            Called as ``progress(done, total)`` after each block; raise from it to
            cancel.

        Returns
        -------
        index : LabelIndex
        """
        labels = _arrays.check_labels(labels, writable=False)
        shape = tuple(labels.shape)
        blocks = list(_arrays.iter_blocks(shape, _arrays.write_chunks(labels)))
        parts = []
        for n, (lo, hi) in enumerate(blocks, 1):
            stats = _block_stats(_arrays.read(labels, (lo, hi)), lo)
            if stats is not None:
                parts.append(stats)
            if progress is not None:
                progress(n, len(blocks))
        ndim = len(shape)
        if not parts:
            empty = np.zeros((0, ndim), np.int64)
            return cls(shape, labels.dtype, np.zeros(0, np.uint64), np.zeros(0, np.int64),
                       empty, empty)
        ids = np.concatenate([p[0] for p in parts])
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        sizes = np.add.reduceat(np.concatenate([p[1] for p in parts])[order], starts)
        lo = np.minimum.reduceat(np.concatenate([p[2] for p in parts])[order], starts, axis=0)
        hi = np.maximum.reduceat(np.concatenate([p[3] for p in parts])[order], starts, axis=0)
        return cls(shape, labels.dtype, ids[starts], sizes, lo, hi)

    def refresh(self, labels, *, progress=None):
        """Rebuild this index in place from ``labels`` (after edits made by other means)."""
        fresh = LabelIndex.build(labels, progress=progress)
        self.__dict__.update(fresh.__dict__)
        return self

    def copy(self):
        new = LabelIndex(self.shape, self.dtype, self._ids.copy(), self._sizes.copy(),
                         self._lo.copy(), self._hi.copy())
        new._loose = self._loose.copy()
        return new

    # -- queries -----------------------------------------------------------------------

    def __len__(self):
        return int(self._ids.size)

    def __contains__(self, label_id):
        return self._row(label_id) is not None

    @property
    def ids(self):
        """(K,) ndarray of uint64: the sorted nonzero ids present."""
        return self._ids.copy()

    @property
    def sizes(self):
        """(K,) ndarray of int64: voxel count of each id of :attr:`ids`."""
        return self._sizes.copy()

    @property
    def bbox_min(self):
        """(K, ndim) ndarray of int64: first index of each id along each axis (may be loose)."""
        return self._lo.copy()

    @property
    def bbox_max(self):
        """(K, ndim) ndarray of int64: one past the last index (may be loose)."""
        return self._hi.copy()

    @property
    def max_id(self):
        """The largest id present (0 when there is none)."""
        return int(self._ids[-1]) if self._ids.size else 0

    def _row(self, label_id):
        if isinstance(label_id, bool) or not isinstance(label_id, numbers.Integral):
            raise TypeError(f"label ids must be integers; got {label_id!r}")
        label_id = int(label_id)
        if label_id <= 0 or label_id > np.iinfo(np.uint64).max:
            return None
        pos = int(np.searchsorted(self._ids, np.uint64(label_id)))
        if pos < self._ids.size and int(self._ids[pos]) == label_id:
            return pos
        return None

    def rows(self, label_ids):
        """Rows of ``label_ids`` (sorted uint64 array); -1 where an id is absent."""
        label_ids = np.asarray(label_ids, np.uint64)
        pos = np.searchsorted(self._ids, label_ids)
        pos_c = np.minimum(pos, max(self._ids.size - 1, 0))
        ok = (pos < self._ids.size) & (self._ids[pos_c] == label_ids) if self._ids.size else (
            np.zeros(label_ids.shape, bool))
        return np.where(ok, pos_c, -1)

    def size(self, label_id):
        """Voxel count of ``label_id`` (0 when absent)."""
        row = self._row(label_id)
        return 0 if row is None else int(self._sizes[row])

    def bbox(self, label_id):
        """Half-open box ``(lo, hi)`` of ``label_id`` (int64 arrays), or None when absent."""
        row = self._row(label_id)
        if row is None:
            return None
        return self._lo[row].copy(), self._hi[row].copy()

    def is_exact(self, label_id):
        """Whether the box of ``label_id`` is known to be tight."""
        row = self._row(label_id)
        return row is not None and not self._loose[row]

    # -- updates -----------------------------------------------------------------------

    def tighten(self, labels, label_id):
        """Make the box of ``label_id`` exact by reading it (only inside its current box)."""
        row = self._row(label_id)
        if row is None or not self._loose[row]:
            return
        lo, hi = self._lo[row], self._hi[row]
        mask = _arrays.read(labels, (lo, hi)) == label_id
        count = int(np.count_nonzero(mask))
        if count != self._sizes[row]:
            raise StaleIndexError(f"label {label_id}: index says {self._sizes[row]} voxels, "
                                  f"its box holds {count}")
        for ax in range(mask.ndim):
            other = tuple(a for a in range(mask.ndim) if a != ax)
            hit = np.flatnonzero(mask.any(axis=other))
            self._lo[row, ax] = lo[ax] + hit[0]
            self._hi[row, ax] = lo[ax] + hit[-1] + 1
        self._loose[row] = False

    def record_change(self, flat, old, new, _changed=False):
        """Update the index from a sparse change: voxels ``flat`` (C-order indices) went
        from ``old`` to ``new`` values.

        Use it after painting into the array by other means (napari's paint event
        gives the indices and old values).
        """
        flat = np.asarray(flat, np.int64).reshape(-1)
        old = np.asarray(old).reshape(-1)
        new = np.asarray(new).reshape(-1)
        if not flat.size == old.size == new.size:
            raise ValueError("`flat`, `old` and `new` must have the same length; got "
                             f"{flat.size}, {old.size} and {new.size}")
        if not _changed:  # records from this package hold changed voxels only
            changed = old != new
            flat, old, new = flat[changed], old[changed], new[changed]
        if flat.size == 0:
            return
        # voxels leaving an id: smaller count, box possibly loose
        gone = old != 0
        if gone.any():
            rid, _, rcount = _group(old[gone])
            rows = self.rows(rid)
            if (rows < 0).any():
                raise StaleIndexError(f"ids {rid[rows < 0][:5].tolist()} are not indexed")
            self._sizes[rows] -= rcount
            self._loose[rows] = True
        # voxels joining an id: larger count and box
        came = new != 0
        if came.any():
            aid, ainv, acount = _group(new[came])
            if aid.size == 1:
                coords = np.unravel_index(flat[came], self.shape)
                amin = np.array([[c.min() for c in coords]])
                amax = np.array([[c.max() + 1 for c in coords]])
            else:  # per-id min / max of sorted groups (reduceat, no ufunc.at)
                coords = np.stack(np.unravel_index(flat[came], self.shape), axis=1)
                order = np.argsort(ainv, kind="stable")
                starts = np.r_[0, np.cumsum(acount)[:-1]]
                amin = np.minimum.reduceat(coords[order], starts, axis=0)
                amax = np.maximum.reduceat(coords[order], starts, axis=0) + 1
            amin, amax = amin.astype(np.int64), amax.astype(np.int64)
            rows = self.rows(aid)
            known = rows >= 0
            r = rows[known]
            self._sizes[r] += acount[known]
            self._lo[r] = np.minimum(self._lo[r], amin[known])
            self._hi[r] = np.maximum(self._hi[r], amax[known])
            if (~known).any():
                self._insert(aid[~known], acount[~known], amin[~known], amax[~known])
        if (self._sizes < 0).any():
            raise StaleIndexError("negative voxel count after an update")
        keep = self._sizes > 0
        if not keep.all():
            self._ids, self._sizes = self._ids[keep], self._sizes[keep]
            self._lo, self._hi, self._loose = self._lo[keep], self._hi[keep], self._loose[keep]

    def _insert(self, ids, sizes, lo, hi):
        ids = np.concatenate([self._ids, ids])
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._sizes = np.concatenate([self._sizes, sizes])[order]
        self._lo = np.concatenate([self._lo, lo])[order]
        self._hi = np.concatenate([self._hi, hi])[order]
        self._loose = np.concatenate([self._loose, np.zeros(sizes.size, bool)])[order]

    def __repr__(self):
        return f"LabelIndex(shape={self.shape}, dtype={self.dtype}, labels={len(self)})"


# -- one shared index per array object ----------------------------------------------------

_CACHE: dict[int, tuple[weakref.ref, LabelIndex]] = {}


def _forget(key):
    _CACHE.pop(key, None)


def label_index(labels, *, rebuild=False, progress=None):
    """The shared :class:`LabelIndex` of ``labels``, built on first use.

    Every function of this package that takes ``labels`` uses (and updates)
    this index, so only the first call sweeps the array. It is keyed by the
    array object: pass the same numpy or zarr array each time.

    Parameters
    ----------
    labels : numpy or zarr array of int
    rebuild : bool, optional
        Sweep the array again (after editing it by other means).
    progress : callable, optional
        ``progress(done, total)`` during a sweep; raise from it to cancel.

    Returns
    -------
    index : LabelIndex
    """
    key = id(labels)
    entry = _CACHE.get(key)
    if (not rebuild and entry is not None and entry[0]() is labels
            and entry[1].shape == tuple(labels.shape)
            and entry[1].dtype == np.dtype(labels.dtype)):
        return entry[1]
    index = LabelIndex.build(labels, progress=progress)
    _register(labels, index)
    return index


def _register(labels, index):
    key = id(labels)
    _CACHE[key] = (weakref.ref(labels, lambda _ref, key=key: _forget(key)), index)


def forget_index(labels):
    """Drop the shared index of ``labels`` (the next call rebuilds it)."""
    _CACHE.pop(id(labels), None)
