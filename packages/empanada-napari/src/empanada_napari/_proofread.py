"""Proofreading a napari labels layer with empanada-proofread: one editor per layer.

An :class:`EditSession` owns an :class:`empanada_proofread.LabelEditor` over the
layer's own array (numpy or zarr; edited in place), records napari's brush and
fill strokes into the same history, binds Ctrl+Z / Ctrl+Shift+Z on the layer to
that history, and redraws only the changed region after each edit. The editing
algorithms all live in empanada-proofread; here are only the links to napari.
"""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["EditSession", "session_for", "layer_points", "layer_lines", "slice_axis",
           "current_plane", "refresh_changed"]

_SESSIONS: dict[int, EditSession] = {}


def session_for(layer, *, label_divisor=None):
    """The edit session of a labels layer (made on first use, rebuilt if its data was replaced).

    Building a session sweeps the array once (the label index); every later
    edit works inside the boxes of the objects it touches.
    """
    session = _SESSIONS.get(id(layer))
    if session is not None and session.layer is layer and session.editor.labels is layer.data:
        if label_divisor is not None:
            session.editor.label_divisor = label_divisor
        return session
    if session is not None:
        session.close()
    session = EditSession(layer, label_divisor=label_divisor)
    _SESSIONS[id(layer)] = session
    weakref.finalize(layer, _SESSIONS.pop, id(layer), None)
    return session


class EditSession:
    """Edits, undo and redo of one labels layer.

    Parameters
    ----------
    layer : napari.layers.Labels
        Its ``data`` (numpy or zarr array, 2D-4D) is edited in place.
    label_divisor : int, optional
        Panoptic divisor for new split ids and next-available ids.
    """

    def __init__(self, layer, *, label_divisor=None):
        import empanada_proofread as ep

        self._layer = weakref.ref(layer)
        self.editor = ep.LabelEditor(layer.data, label_divisor=label_divisor)
        layer.events.paint.connect(self._on_paint)
        layer.bind_key("Control-Z", self._undo_key, overwrite=True)
        layer.bind_key("Control-Shift-Z", self._redo_key, overwrite=True)
        self.last = None

    @property
    def layer(self):
        return self._layer()

    def close(self):
        layer = self.layer
        if layer is not None:
            layer.events.paint.disconnect(self._on_paint)

    # -- edits ---------------------------------------------------------------------

    def apply(self, method, /, *args, **kwargs):
        """Run ``LabelEditor.<method>(*args, **kwargs)`` and redraw what changed.

        Returns the :class:`empanada_proofread.Edit`; errors (bad points,
        nothing to merge) leave the array and the history unchanged.
        """
        edit = getattr(self.editor, method)(*args, **kwargs)
        refresh_changed(self.layer, edit.record.flat, edit.record.new, edit.record.shape)
        self.last = edit
        return edit

    def undo(self):
        """Undo the last edit or brush stroke; returns False when there is none."""
        return self._move("undo")

    def redo(self):
        """Redo the last undone edit; returns False when there is none."""
        return self._move("redo")

    def _move(self, kind):
        if not (self.editor.can_undo if kind == "undo" else self.editor.can_redo):
            return False
        getattr(self.editor, kind)()
        record = self.editor.last_record
        values = record.old if kind == "undo" else record.new
        refresh_changed(self.layer, record.flat, values, record.shape)
        return True

    def _undo_key(self, layer=None):
        self.undo()

    def _redo_key(self, layer=None):
        self.redo()

    def _on_paint(self, event):
        """napari painted or filled: record the stroke in the editor's history.

        napari emits the event before it writes to a non-numpy (zarr) array, so
        the new values come from the event, not from the array.
        """
        coords, old, new = [], [], []
        for atom in event.value:
            if hasattr(atom, "slice_key"):  # napari >= 0.6: a box and a mask
                starts = np.array([s.start or 0 for s in atom.slice_key], np.int64)
                if atom.mask is None:
                    shape = tuple(s.stop - s.start for s in atom.slice_key)
                    local = np.indices(shape).reshape(len(shape), -1).T
                else:
                    local = np.argwhere(atom.mask)
                values = np.asarray(atom.old_values).reshape(-1)
                coords.append(local + starts)
                old.append(values)
                new.append(np.full(values.shape, atom.new_value, values.dtype))
            else:  # (indices, old values, new value(s)) of data_setitem
                indices, values, after = atom
                values = np.asarray(values).reshape(-1)
                coords.append(np.stack([np.asarray(i).reshape(-1) for i in indices], axis=1))
                old.append(values)
                new.append(np.broadcast_to(np.asarray(after), values.shape).reshape(-1))
        if coords:
            self.editor.record_paint(np.concatenate(coords), np.concatenate(old),
                                     np.concatenate(new))


# -- coordinates between layers ----------------------------------------------------------


def _to_labels(world, labels_layer):
    """World coordinates (n, d) -> integer voxel indices of the labels layer."""
    ndim = labels_layer.ndim
    world = np.asarray(world, float)
    if world.shape[1] < ndim:
        raise ValueError(f"the points have {world.shape[1]} coordinates; labels layer "
                         f"{labels_layer.name!r} is {ndim}D")
    world = world[:, -ndim:]
    data = np.array([labels_layer.world_to_data(w) for w in world]).reshape(-1, ndim)
    return np.round(data).astype(np.int64)


def layer_points(points_layer, labels_layer):
    """The points of a points layer as voxel indices of ``labels_layer`` ((n, ndim) int).

    Any scale and translate of either layer are applied (the original required
    a scale of 1).
    """
    data = np.asarray(points_layer.data, float)
    if data.size == 0:
        return np.zeros((0, labels_layer.ndim), np.int64)
    world = np.array([points_layer.data_to_world(p) for p in data])
    return _to_labels(world, labels_layer)


def layer_lines(shapes_layer, labels_layer):
    """Line and path shapes as vertex arrays in voxel indices of ``labels_layer``."""
    lines = []
    for verts, kind in zip(shapes_layer.data, shapes_layer.shape_type):
        if kind not in ("line", "path"):
            continue
        world = np.array([shapes_layer.data_to_world(v) for v in np.asarray(verts, float)])
        lines.append(_to_labels(world, labels_layer))
    return lines


def slice_axis(viewer, labels_layer):
    """The labels axis the viewer slices along (the first axis of ``dims.order``)."""
    offset = viewer.dims.ndim - labels_layer.ndim
    axis = viewer.dims.order[0] - offset
    return int(axis) if 0 <= axis < labels_layer.ndim else 0


def current_plane(viewer, labels_layer, axis):
    """Index of the slice shown along ``axis`` of the labels layer."""
    point = labels_layer.world_to_data(viewer.dims.point[-labels_layer.ndim:])
    return int(np.clip(np.round(point[axis]), 0, labels_layer.data.shape[axis] - 1))


# -- redrawing --------------------------------------------------------------------------


def refresh_changed(layer, flat, values, shape):
    """Redraw the voxels ``flat`` (C-order indices of an array of ``shape``) that now hold
    ``values``: only the changed region of the displayed slice is re-coloured.

    napari's public ``refresh()`` re-slices and re-colours the whole view; the partial
    path below is what ``Labels.data_setitem`` does. It uses napari internals, so any
    failure falls back to a full refresh.
    """
    if layer is None or len(flat) == 0:
        return
    try:
        _partial_refresh(layer, flat, values, shape)
    except Exception:  # noqa: BLE001 - a napari without these internals: redraw everything
        layer.refresh()


def _partial_refresh(layer, flat, values, shape):
    from napari.utils._indexing import elements_in_slice, index_in_slice

    slice_input = layer._slice.slice_input
    if slice_input.ndisplay != 2 or layer.multiscale:
        layer.refresh()
        return
    coords = np.unravel_index(np.asarray(flat), shape)
    position = layer._get_pt_not_disp()
    inside = elements_in_slice(coords, position) if position else np.ones(len(flat), bool)
    if not inside.any():
        return  # nothing on screen changed
    visible = tuple(c[inside] for c in coords)
    shown = index_in_slice(visible, position, slice_input.order)
    vals = np.asarray(values)[inside]
    if not isinstance(layer.data, np.ndarray):  # numpy slices are views of the data
        layer._slice.image.raw[shown] = vals
    if layer.contour == 0:
        layer._slice.image.view[shown] = layer.colormap._data_to_texture(vals)
    layer._accumulate_updated_slice(tuple(slice(int(c.min()), int(c.max()) + 1)
                                          for c in visible))
    layer._partial_labels_refresh()
