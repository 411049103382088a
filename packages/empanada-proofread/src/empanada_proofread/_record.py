"""Sparse edit records and the all-or-nothing commit of an edit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _arrays, _index

__all__ = ["EditRecord", "Edit"]


@dataclass(frozen=True, eq=False)
class EditRecord:
    """The voxels an edit changed: C-order flat indices with their old and new values.

    Memory is proportional to the number of changed voxels, never to the
    volume. ``undo(labels)`` / ``redo(labels)`` write the old / new values back
    (bitwise) and keep the shared label index up to date.

    Attributes
    ----------
    shape : tuple of int
        Shape of the edited array.
    flat : (n,) ndarray of int64
        Sorted flat indices of the changed voxels.
    old, new : (n,) ndarray
        Values before and after the edit (the array's dtype).
    """

    shape: tuple
    flat: np.ndarray
    old: np.ndarray
    new: np.ndarray

    @classmethod
    def empty(cls, shape, dtype):
        return cls(tuple(shape), np.zeros(0, np.int64), np.zeros(0, dtype), np.zeros(0, dtype))

    @classmethod
    def concatenate(cls, shape, dtype, parts):
        """Join ``(flat, old, new)`` parts touching disjoint voxels; drops unchanged voxels."""
        parts = [p for p in parts if p[0].size]
        if not parts:
            return cls.empty(shape, dtype)
        if len(parts) == 1:
            flat, old, new = (np.asarray(parts[0][0], np.int64), parts[0][1].astype(dtype),
                              parts[0][2].astype(dtype))
        else:
            flat = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
            old = np.concatenate([p[1] for p in parts]).astype(dtype, copy=False)
            new = np.concatenate([p[2] for p in parts]).astype(dtype, copy=False)
        step = np.diff(flat)
        if (step <= 0).any():  # parts from several boxes: sort once
            order = np.argsort(flat, kind="stable")
            flat, old, new = flat[order], old[order], new[order]
            if (np.diff(flat) == 0).any():
                raise RuntimeError("internal error: an edit changed a voxel twice")
        changed = old != new
        if changed.all():
            return cls(tuple(shape), flat, old, new)
        return cls(tuple(shape), flat[changed], old[changed], new[changed])

    def __len__(self):
        return int(self.flat.size)

    @property
    def nbytes(self):
        """Memory held by the record."""
        return int(self.flat.nbytes + self.old.nbytes + self.new.nbytes)

    def coordinates(self):
        """(n, ndim) ndarray of the changed voxels' coordinates."""
        return np.stack(np.unravel_index(self.flat, self.shape), axis=1)

    def undo(self, labels, *, index=None):
        """Write the old values back into ``labels``."""
        _write(labels, self.flat, self.new, self.old, index)

    def redo(self, labels, *, index=None):
        """Write the new values again into ``labels``."""
        _write(labels, self.flat, self.old, self.new, index)

    def save(self, path):
        """Save as an ``.npz`` file (written to a temporary name, then renamed)."""
        from empanada_core.io import atomic_output

        with atomic_output(path) as f:
            np.savez(f, shape=np.array(self.shape, np.int64), flat=self.flat, old=self.old,
                     new=self.new)

    @classmethod
    def load(cls, path):
        with np.load(path) as data:
            return cls(tuple(int(s) for s in data["shape"]), data["flat"], data["old"],
                       data["new"])


@dataclass(frozen=True)
class Edit:
    """What one operation changed.

    Attributes
    ----------
    operation : str
        ``"merge"``, ``"delete"``, ``"split"``, ``"morph:<op>"``, ``"remove_small"``
        or ``"remove_boundary"``.
    ids : tuple of int
        The ids that were changed (merged, deleted, split, morphed or removed).
    new_ids : tuple of int
        Ids the edit wrote: the merge target, the pieces of a split.
    record : EditRecord
        The sparse diff, for undo.
    message : str
        One line for the user.
    skipped : tuple of int
        Ids the operation left alone (e.g. a split with a single marker).
    """

    operation: str
    ids: tuple
    new_ids: tuple
    record: EditRecord = field(repr=False)
    message: str = ""
    skipped: tuple = ()

    @property
    def voxels_changed(self):
        return len(self.record)


def _write(labels, flat, expect_before, values, index):
    """Write ``values`` at ``flat``; on failure restore ``expect_before`` and re-raise."""
    labels = _arrays.check_labels(labels)
    if flat.size == 0:
        return
    try:
        _arrays.write_values(labels, flat, values)
    except BaseException:
        # all-or-nothing: put every touched voxel back (harmless where nothing was written)
        _arrays.write_values(labels, flat, expect_before)
        raise
    if index is None:
        entry = _index._CACHE.get(id(labels))
        if entry is not None and entry[0]() is labels:
            index = entry[1]
    if index is not None:
        index.record_change(flat, expect_before, values, _changed=True)


def commit(labels, index, record, journal=None):
    """Write ``record`` into ``labels`` all-or-nothing and update ``index``.

    ``journal(record)`` (the editor's on-disk history) runs before any write, so
    an interrupted edit can be rolled back after a restart.
    """
    if len(record) == 0:
        return
    if journal is not None:
        journal(record)
    _write(labels, record.flat, record.old, record.new, index)
