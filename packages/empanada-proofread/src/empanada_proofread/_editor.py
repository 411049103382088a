"""LabelEditor: the operations on one array, with a sparse undo/redo history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from empanada_core.io import atomic_write_text

from . import _arrays, _filters, _ops
from ._index import label_index
from ._record import Edit, EditRecord

__all__ = ["LabelEditor"]


class _MemoryHistory:
    """Undo and redo stacks of sparse records, in memory."""

    def __init__(self):
        self.undo_stack, self.redo_stack = [], []

    def begin_edit(self, record):
        pass

    def end_edit(self, edit, ok):
        if ok:
            self.undo_stack.append(edit)
            self.redo_stack.clear()

    def begin_move(self, kind):
        stack = self.undo_stack if kind == "undo" else self.redo_stack
        return stack[-1]

    def end_move(self, kind):
        src, dst = ((self.undo_stack, self.redo_stack) if kind == "undo"
                    else (self.redo_stack, self.undo_stack))
        dst.append(src.pop())

    def counts(self):
        return len(self.undo_stack), len(self.redo_stack)

    def edits(self):
        return list(self.undo_stack)


class _DiskHistory:
    """Undo history kept in a folder (e.g. next to a zarr store), surviving restarts.

    ``state.json`` holds the position and, while an edit, undo or redo is being
    written, a ``pending`` entry; each edit's record is ``edit_<n>.npz``. The
    record is on disk before the array is written, so an interrupted write is
    rolled back (or completed) when the folder is opened again.
    """

    def __init__(self, folder, labels):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        state_path = self.folder / "state.json"
        if state_path.exists():
            self.state = json.loads(state_path.read_text())
            if (tuple(self.state["shape"]) != tuple(labels.shape)
                    or self.state["dtype"] != str(np.dtype(labels.dtype))):
                raise ValueError(
                    f"the history in {self.folder} belongs to labels of shape "
                    f"{tuple(self.state['shape'])} and dtype {self.state['dtype']}, not "
                    f"{tuple(labels.shape)} {np.dtype(labels.dtype)}")
            self._recover()
        else:
            self.state = {"shape": list(labels.shape), "dtype": str(np.dtype(labels.dtype)),
                          "position": 0, "entries": [], "pending": None}
            self._save()

    def _path(self, n):
        return self.folder / f"edit_{n:06d}.npz"

    def _save(self):
        atomic_write_text(self.folder / "state.json", json.dumps(self.state, indent=1))

    def _recover(self):
        pending = self.state.get("pending")
        if not pending:
            return
        n, kind = pending["n"], pending["kind"]
        record = EditRecord.load(self._path(n))
        if kind == "edit":  # interrupted edit: roll it back, forget it
            _arrays.write_values(self.labels, record.flat, record.old)
            self._path(n).unlink(missing_ok=True)
            self.state["entries"] = self.state["entries"][: n - 1]
            self.state["position"] = n - 1
        elif kind == "undo":  # finish the undo
            _arrays.write_values(self.labels, record.flat, record.old)
            self.state["position"] = n - 1
        else:  # finish the redo
            _arrays.write_values(self.labels, record.flat, record.new)
            self.state["position"] = n
        self.state["pending"] = None
        self._save()

    def begin_edit(self, record):
        n = self.state["position"] + 1
        for k in range(n, len(self.state["entries"]) + 1):
            self._path(k).unlink(missing_ok=True)
        self.state["entries"] = self.state["entries"][: n - 1]
        record.save(self._path(n))
        self.state["pending"] = {"kind": "edit", "n": n}
        self._save()

    def end_edit(self, edit, ok):
        pending = self.state.get("pending")
        if pending is None:  # the edit changed nothing: no record was written
            return
        n = pending["n"]
        if ok:
            self.state["entries"].append({"operation": edit.operation, "message": edit.message,
                                          "ids": list(edit.ids)[:1000]})
            self.state["position"] = n
        else:
            self._path(n).unlink(missing_ok=True)
        self.state["pending"] = None
        self._save()

    def begin_move(self, kind):
        n = self.state["position"] if kind == "undo" else self.state["position"] + 1
        self.state["pending"] = {"kind": kind, "n": n}
        self._save()
        return EditRecord.load(self._path(n))

    def end_move(self, kind):
        self.state["position"] += -1 if kind == "undo" else 1
        self.state["pending"] = None
        self._save()

    def counts(self):
        pos = self.state["position"]
        return pos, len(self.state["entries"]) - pos

    def edits(self):
        return [dict(e) for e in self.state["entries"][: self.state["position"]]]


class LabelEditor:
    """Proofread one label array: every operation, with undo and redo.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
        Edited in place. A zarr array is only read and written over the boxes
        of the objects an edit touches.
    history : str or path, optional
        Folder for an on-disk history (e.g. ``"labels.zarr.history"``); an
        editor opened again on the same folder can undo the earlier session's
        edits, and an edit interrupted by a crash is rolled back. Default: in
        memory.
    label_divisor : int, optional
        Panoptic divisor, used by :meth:`split` for new ids, by
        :meth:`next_available` and by :meth:`count`.
    progress : callable, optional
        ``progress(done, total)`` while the label index is built.

    Notes
    -----
    The history stores sparse diffs (changed voxel indices, old and new
    values): its memory is proportional to the voxels changed, never to the
    volume, and :meth:`undo` / :meth:`redo` restore the array bitwise.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((1, 4, 6), np.uint32)
    >>> labels[0, :, :2], labels[0, :, 4:] = 1, 2
    >>> editor = LabelEditor(labels)
    >>> editor.merge([[0, 0, 0], [0, 0, 5]]).new_ids
    (1,)
    >>> int(labels.max())
    1
    >>> editor.undo()
    >>> int(labels.max())
    2
    """

    def __init__(self, labels, *, history=None, label_divisor=None, progress=None):
        self.labels = _arrays.check_labels(labels)
        self.label_divisor = label_divisor
        self._history = (_DiskHistory(history, self.labels) if history is not None
                         else _MemoryHistory())
        self.index = label_index(self.labels, rebuild=history is not None, progress=progress)
        #: The EditRecord the last :meth:`undo` or :meth:`redo` replayed (a viewer redraws
        #: only its voxels), or None before the first one.
        self.last_record = None

    # -- edits -------------------------------------------------------------------------

    def _edit(self, fn, *args, **kwargs):
        state = {"ok": False}
        try:
            edit = fn(self.labels, *args, index=self.index, _journal=self._history.begin_edit,
                      **kwargs)
            state["ok"] = True
        finally:
            if not state["ok"]:
                self._history.end_edit(None, False)
        if len(edit.record):
            self._history.end_edit(edit, True)
        return edit

    def merge(self, points=None, **kwargs):
        """:func:`merge_labels` on this array (recorded for undo)."""
        return self._edit(_ops.merge_labels, points, **kwargs)

    def delete(self, points, **kwargs):
        """:func:`delete_labels` on this array."""
        return self._edit(_ops.delete_labels, points, **kwargs)

    def split(self, points, **kwargs):
        """:func:`split_label` on this array (new ids in the editor's ``label_divisor`` class)."""
        kwargs.setdefault("label_divisor", self.label_divisor)
        return self._edit(_ops.split_label, points, **kwargs)

    def morph(self, ids=None, **kwargs):
        """:func:`morph_labels` on this array."""
        return self._edit(_ops.morph_labels, ids, **kwargs)

    def remove_small(self, min_size, **kwargs):
        """:func:`remove_small_labels`, in place."""
        return self._edit(_filters.remove_small_labels, min_size, **kwargs)

    def remove_boundary(self, **kwargs):
        """:func:`remove_boundary_labels`, in place."""
        return self._edit(_filters.remove_boundary_labels, **kwargs)

    def record_paint(self, coords, old_values, new_values=None):
        """Record an edit made by other means (napari painting) for undo.

        Parameters
        ----------
        coords : (n, ndim) array of int, or tuple of ndim index arrays
            The voxels that were painted.
        old_values : (n,) array
            Their values before painting (napari's paint event gives both).
        new_values : scalar or (n,) array, optional
            Their values after painting; default: read from the array. Give them
            when the record is made before the paint is written (napari emits
            its paint event before writing to a zarr-backed layer).
        """
        if isinstance(coords, tuple):
            coords = np.stack([np.asarray(c).reshape(-1) for c in coords], axis=1)
        coords = np.asarray(coords, np.int64).reshape(-1, self.labels.ndim)
        shape = tuple(self.labels.shape)
        flat = np.ravel_multi_index(tuple(coords.T), shape).astype(np.int64)
        old = np.asarray(old_values).reshape(-1)
        if old.size != flat.size:
            raise ValueError(f"`old_values` has {old.size} values for {flat.size} voxels")
        if new_values is not None:
            new_values = np.broadcast_to(np.asarray(new_values), old.shape)
            # a voxel painted twice in one stroke: its first old value, its last new one
            _, last = np.unique(flat[::-1], return_index=True)
            new_last = new_values[::-1][last]
        flat, first = np.unique(flat, return_index=True)
        old = old[first]
        if new_values is None:
            new = _arrays.read_points(self.labels,
                                      np.stack(np.unravel_index(flat, shape), axis=1))
        else:
            new = new_last
        part = (flat, old.astype(np.uint64), new.astype(np.uint64))
        record = EditRecord.concatenate(shape, self.labels.dtype, [part])
        edit = Edit("paint", tuple(int(i) for i in np.unique(record.new) if i), (), record,
                    f"painted {len(record)} voxels")
        if len(record):
            self._history.begin_edit(record)
            self.index.record_change(record.flat, record.old, record.new)
            self._history.end_edit(edit, True)
        return edit

    # -- history -----------------------------------------------------------------------

    @property
    def can_undo(self):
        return self._history.counts()[0] > 0

    @property
    def can_redo(self):
        return self._history.counts()[1] > 0

    @property
    def history(self):
        """The edits that :meth:`undo` would revert, oldest first."""
        return self._history.edits()

    def undo(self):
        """Revert the last edit (bitwise); raises ``ValueError`` when there is none."""
        self._move("undo")

    def redo(self):
        """Apply the last undone edit again; raises ``ValueError`` when there is none."""
        self._move("redo")

    def _move(self, kind):
        if not (self.can_undo if kind == "undo" else self.can_redo):
            raise ValueError(f"nothing to {kind}")
        entry = self._history.begin_move(kind)
        record = entry.record if isinstance(entry, Edit) else entry
        if kind == "undo":
            record.undo(self.labels, index=self.index)
        else:
            record.redo(self.labels, index=self.index)
        self._history.end_move(kind)
        self.last_record = record

    # -- queries -----------------------------------------------------------------------

    def locate(self, label_id, *, axis=0):
        """:func:`locate_label`."""
        return _ops.locate_label(self.labels, label_id, axis=axis, index=self.index)

    def next_available(self, class_id=1):
        """:func:`next_available_label` with the editor's ``label_divisor``."""
        return _ops.next_available_label(self.labels, class_id, self.label_divisor,
                                         index=self.index)

    def count(self, **kwargs):
        """:func:`count_labels` with the editor's ``label_divisor``."""
        kwargs.setdefault("label_divisor", self.label_divisor)
        return _filters.count_labels(self.labels, index=self.index, **kwargs)

    def __repr__(self):
        undo, redo = self._history.counts()
        return (f"LabelEditor(shape={tuple(self.labels.shape)}, dtype={self.labels.dtype}, "
                f"labels={len(self.index)}, undo={undo}, redo={redo})")
