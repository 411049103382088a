"""Proofreading widgets: merge, delete, split, morph, filter, count, jump, next label.

Each widget only gathers its inputs from the layers and calls the
empanada-proofread operation through the layer's :class:`EditSession`
(undo with Ctrl+Z / Ctrl+Shift+Z on the labels layer, or the Undo / Redo
buttons). Points are consumed (cleared) after an edit, as in the original.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
    TextEdit,
    create_widget,
)
from napari.utils.notifications import show_error

from ._common import path_of, viewer_camera
from ._proofread import (
    current_plane,
    layer_lines,
    layer_points,
    session_for,
    slice_axis,
)
from ._runner import friendly_error

__all__ = ["MergeLabelsWidget", "DeleteLabelsWidget", "SplitLabelsWidget", "MorphLabelsWidget",
           "FilterLabelsWidget", "CountLabelsWidget", "JumpToLabelWidget",
           "NextLabelWidget"]

_SCOPES = ["Current image", "2D patches", "3D volume or z-stack"]
_MODES = {"Current image": "image", "2D patches": "slices", "3D volume or z-stack": "volume"}


def _status_label():
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="")
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


class _ProofreadWidget(Container):
    """A labels layer, the widget's own inputs, a run button, Undo / Redo and a status line."""

    title = ""
    button_text = "Run"
    uses_points = True

    def __init__(self, viewer, inputs):
        self.viewer = viewer
        self.labels_layer = create_widget(annotation=napari.layers.Labels, label="labels layer")
        widgets = [self.labels_layer]
        if self.uses_points:
            self.points_layer = create_widget(annotation=napari.layers.Points | None,
                                              label="points layer")
            widgets.append(self.points_layer)
        widgets += inputs
        self.run_button = PushButton(text=self.button_text)
        self.undo_button = PushButton(text="Undo (Ctrl+Z)")
        self.redo_button = PushButton(text="Redo (Ctrl+Shift+Z)")
        history = Container(widgets=[self.undo_button, self.redo_button], layout="horizontal",
                            labels=False)
        self.status = _status_label()
        super().__init__(widgets=[*widgets, self.run_button, history, self.status])
        self.native.setMinimumWidth(380)
        self.run_button.changed.connect(self.run)
        self.undo_button.changed.connect(lambda *_: self._history("undo"))
        self.redo_button.changed.connect(lambda *_: self._history("redo"))

    # the concrete widgets implement _apply(layer) -> message
    def _apply(self, layer):  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, *_):
        """Apply the operation; returns its message, or None after an error (shown)."""
        layer = self.labels_layer.value
        try:
            if layer is None:
                raise ValueError("choose a labels layer")
            message = self._apply(layer)
        except Exception as exc:  # noqa: BLE001 - every problem becomes a notification
            self.status.value = f"{self.title}: {friendly_error(exc)}"
            show_error(f"{self.title}: {friendly_error(exc)}")
            return None
        if message:
            # the status line, not a notification: a toast costs a repaint of the window
            # (tens of ms under software OpenGL) on every edit
            self.status.value = message
        return message

    def _history(self, kind):
        layer = self.labels_layer.value
        if layer is None:
            return False
        done = getattr(session_for(layer), kind)()
        self.status.value = f"{kind} done" if done else f"nothing to {kind}"
        return done

    # helpers ----------------------------------------------------------------------

    def _session(self, layer, **kwargs):
        return session_for(layer, **kwargs)

    def _points(self, layer, *, required=True):
        """Voxel indices of the points (and the points layer), or a new points layer to
        click on when none is chosen."""
        points_layer = self.points_layer.value
        if points_layer is None or len(points_layer.data) == 0:
            if not required:
                return None, points_layer
            if points_layer is None:
                points_layer = self.viewer.add_points(
                    np.zeros((0, layer.ndim)), name=f"{layer.name} points", ndim=layer.ndim,
                    size=max(4, int(min(layer.data.shape[-2:]) // 60)), face_color="red")
                points_layer.mode = "add"
                self.points_layer.reset_choices()
                self.points_layer.value = points_layer
            raise ValueError(f"click on the labels to pick them (points layer "
                             f"{points_layer.name!r}, add mode), then press "
                             f"{self.button_text!r} again")
        return layer_points(points_layer, layer), points_layer

    def _scope(self, layer):
        """``in_3d`` and ``axis`` for a 3D labels layer from the Apply in 3D box."""
        in_3d = bool(getattr(self, "apply_3d", None) and self.apply_3d.value)
        return {"in_3d": in_3d, "axis": slice_axis(self.viewer, layer)} \
            if layer.ndim == 3 else {}

    @staticmethod
    def _consume(points_layer):
        """Clear the points used, once Qt has drawn the edited labels.

        Setting a points layer's data costs napari 20-60 ms of dims and slicing events;
        run right away it would delay the redraw of the labels by as much. The points are
        cleared only if nobody changed them in between.
        """
        if points_layer is None:
            return
        used = np.array(points_layer.data, copy=True)

        def clear():
            try:
                current = np.asarray(points_layer.data)
            except RuntimeError:  # the layer was deleted
                return
            if current.shape == used.shape and np.array_equal(current, used):
                points_layer.data = np.zeros((0, points_layer.ndim))

        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, clear)


def _apply_3d():
    return CheckBox(value=False, label="Apply in 3D",
                    tooltip="3D labels: change whole objects (checked) or only the slice of "
                            "each point along the viewing axis (for stacks of 2D results)")


class MergeLabelsWidget(_ProofreadWidget):
    """Merge the labels under the points (and along line / path shapes) into one."""

    title = "Merge labels"
    button_text = "Merge labels"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.shapes_layer = create_widget(annotation=napari.layers.Shapes | None,
                                          label="shapes layer (lines, optional)")
        self.apply_3d = _apply_3d()
        super().__init__(napari_viewer, [self.shapes_layer, self.apply_3d])

    def _apply(self, layer):
        shapes = self.shapes_layer.value
        lines = layer_lines(shapes, layer) if shapes is not None else []
        points, points_layer = self._points(layer, required=not lines)
        edit = self._session(layer).apply(
            "merge", points, lines=lines or None, target=int(layer.selected_label),
            **self._scope(layer))
        self._consume(points_layer)
        if lines:
            shapes.data = []
        layer.selected_label = int(edit.new_ids[0])
        return edit.message


class DeleteLabelsWidget(_ProofreadWidget):
    """Delete the labels under the points."""

    title = "Delete labels"
    button_text = "Delete labels"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.apply_3d = _apply_3d()
        super().__init__(napari_viewer, [self.apply_3d])

    def _apply(self, layer):
        points, points_layer = self._points(layer)
        edit = self._session(layer).apply("delete", points, **self._scope(layer))
        self._consume(points_layer)
        return edit.message


class SplitLabelsWidget(_ProofreadWidget):
    """Split labels by a distance watershed (markers: distance peaks or the points)."""

    title = "Split labels"
    button_text = "Split labels"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.min_distance = SpinBox(value=10, min=1, max=100, label="Minimum Distance",
                                    tooltip="minimum distance in pixels between two "
                                            "watershed markers; larger: fewer pieces")
        self.points_as_markers = CheckBox(value=False, label="Use points as markers",
                                          tooltip="one piece per point; Minimum Distance "
                                                  "is ignored")
        self.apply_3d = _apply_3d()
        self.new_label = CheckBox(value=False, label="Specify new label IDs")
        self.start_label = SpinBox(value=1, min=1, max=2**31 - 1, label="first new label ID",
                                   tooltip="the new pieces get this id and the next ones; "
                                           "refused if any is in use")
        self.label_divisor = SpinBox(value=0, min=0, max=2**31 - 1, step=1000,
                                     label="Label divisor (0: none)",
                                     tooltip="new ids stay in the split label's class")
        super().__init__(napari_viewer, [self.min_distance, self.points_as_markers,
                                         self.apply_3d, self.new_label, self.start_label,
                                         self.label_divisor])

    def _apply(self, layer):
        points, points_layer = self._points(layer)
        divisor = int(self.label_divisor.value) or None
        edit = self._session(layer).apply(
            "split", points, min_distance=int(self.min_distance.value),
            points_as_markers=bool(self.points_as_markers.value),
            new_ids=int(self.start_label.value) if self.new_label.value else None,
            label_divisor=divisor, **self._scope(layer))
        self._consume(points_layer)
        return edit.message


class MorphLabelsWidget(_ProofreadWidget):
    """Dilate, erode, open, close or fill holes of the labels under the points (or all)."""

    title = "Morph labels"
    button_text = "Morph labels"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.operation = ComboBox(choices=["dilate", "erode", "close", "open", "fill_holes"],
                                  value="dilate", label="Operation")
        self.radius = SpinBox(value=1, min=1, max=7, label="Radius")
        self.hole_size = SpinBox(value=64, min=1, max=10**9, label="Hole size (fill holes)",
                                 tooltip="enclosed background regions up to this many "
                                         "pixels/voxels are filled")
        self.apply_3d = _apply_3d()
        super().__init__(napari_viewer, [self.operation, self.radius, self.hole_size,
                                         self.apply_3d])

    def _apply(self, layer):
        points, points_layer = self._points(layer, required=False)
        ids = None
        if points is not None:
            from empanada_proofread._points import check_points, ids_at

            ids = np.unique(ids_at(layer.data, check_points(points, layer.data.shape)))
            ids = ids[ids > 0]
            if ids.size == 0:
                raise ValueError("the points are all on background; put them on labels "
                                 "(or clear the points layer to morph every label)")
        edit = self._session(layer).apply(
            "morph", ids, operation=self.operation.value, radius=int(self.radius.value),
            hole_size=int(self.hole_size.value), **self._scope(layer))
        self._consume(points_layer)
        n = len(edit.ids)
        return f"{self.operation.value}: {n} label(s) changed, {edit.voxels_changed} voxels"


class FilterLabelsWidget(_ProofreadWidget):
    """Remove small labels or labels touching the border, in place or into a new layer."""

    title = "Filter labels"
    button_text = "Filter labels"
    uses_points = False

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.remove = RadioButtons(choices=["Small labels", "Boundary labels"],
                                   value="Small labels", label="Remove")
        self.min_size = SpinBox(value=100, min=1, max=10**9, label="Minimum pixel/voxel area",
                                tooltip="labels with fewer pixels/voxels are removed")
        self.apply_to = RadioButtons(choices=_SCOPES, value="3D volume or z-stack",
                                     label="Apply to")
        self.new_layer = CheckBox(value=True, label="Result in a new layer",
                                  tooltip="unchecked: edit the layer in place (undoable)")
        super().__init__(napari_viewer, [self.remove, self.min_size, self.apply_to,
                                         self.new_layer])

    def _apply(self, layer):
        import empanada_proofread as ep

        mode = _MODES[self.apply_to.value]
        plane = None
        if mode == "image" and layer.ndim >= 3:
            axis = slice_axis(self.viewer, layer)
            plane = current_plane(self.viewer, layer, axis) if layer.ndim == 3 else tuple(
                current_plane(self.viewer, layer, a) for a in (0, 1))
        kwargs = {"mode": mode, "plane": plane}
        if layer.ndim == 3:
            kwargs["axis"] = slice_axis(self.viewer, layer)
        small = self.remove.value == "Small labels"
        what = "small" if small else "boundary"
        if self.new_layer.value:
            out = np.array(layer.data)  # napari shows the result as a new in-memory layer
            fn = ep.remove_small_labels if small else ep.remove_boundary_labels
            args = (int(self.min_size.value),) if small else ()
            edit = fn(out, *args, out=out, **kwargs)
            if not edit.ids:
                return f"no {what} labels to remove; no layer added"
            self.viewer.add_labels(out, name=f"{layer.name} {what} removed",
                                   scale=layer.scale, translate=layer.translate,
                                   metadata=dict(layer.metadata))
        else:
            op = "remove_small" if small else "remove_boundary"
            args = (int(self.min_size.value),) if small else ()
            edit = self._session(layer).apply(op, *args, **kwargs)
            if not edit.ids:
                return f"no {what} labels to remove"
        ids = ", ".join(str(i) for i in edit.ids[:12]) + (" ..." if len(edit.ids) > 12 else "")
        return f"removed {len(edit.ids)} {what} label(s): {ids}"


class CountLabelsWidget(_ProofreadWidget):
    """Labels per class with voxel counts and boxes: a table, and a CSV file on request."""

    title = "Count labels"
    button_text = "Count labels"
    uses_points = False

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.apply_to = RadioButtons(choices=_SCOPES, value="3D volume or z-stack",
                                     label="Count in")
        self.class_names = TextEdit(value="1,mito", label="Classes (id,name per line)")
        self.class_names.native.setMaximumHeight(60)
        self.label_divisor = SpinBox(value=0, min=0, max=2**31 - 1, step=1000,
                                     label="Label divisor (0: all class 1)")
        self.csv_path = FileEdit(mode="w", filter="*.csv", label="CSV file (optional)",
                                 nullable=True)
        from qtpy.QtWidgets import QTableWidget

        self.table = QTableWidget(0, 0)
        self.table.setMinimumHeight(220)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        super().__init__(napari_viewer, [self.apply_to, self.class_names, self.label_divisor,
                                         self.csv_path])
        self.native.layout().addWidget(self.table)
        self.undo_button.visible = self.redo_button.visible = False
        self.last_table = None

    def _apply(self, layer):
        mode = _MODES[self.apply_to.value]
        kwargs = {"mode": mode}
        if layer.ndim == 3:
            kwargs["axis"] = slice_axis(self.viewer, layer)
        if mode == "image" and layer.ndim >= 3:
            kwargs["plane"] = current_plane(self.viewer, layer, kwargs.get("axis", 0)) \
                if layer.ndim == 3 else tuple(current_plane(self.viewer, layer, a)
                                              for a in (0, 1))
        divisor = int(self.label_divisor.value) or None
        names = str(self.class_names.value).strip() or None
        path = path_of(self.csv_path)
        session = self._session(layer, label_divisor=divisor)
        table = session.editor.count(class_names=names, path=path, **kwargs)
        self.last_table = table
        self._show(table)
        where = f"; written to {path}" if path is not None else ""
        return f"{table}{where}"

    def _show(self, table):
        from qtpy.QtWidgets import QTableWidgetItem

        keys = [k for k in table.columns if k != "instance_id"]
        rows = len(table)
        shown = min(rows, 5000)  # the CSV has them all
        self.table.setRowCount(shown)
        self.table.setColumnCount(len(keys))
        self.table.setHorizontalHeaderLabels(keys)
        cols = [table.columns[k][:shown].tolist() for k in keys]
        for c, values in enumerate(cols):
            for r, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(str(value)))
        self.table.resizeColumnsToContents()


class JumpToLabelWidget(_ProofreadWidget):
    """Move the viewer to the first slice where a label appears and select it."""

    title = "Jump to label"
    button_text = "Jump to label"
    uses_points = False

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.label_id = SpinBox(value=1, min=1, max=2**31 - 1, label="Label ID")
        super().__init__(napari_viewer, [self.label_id])
        self.undo_button.visible = self.redo_button.visible = False

    def _apply(self, layer):
        axis = slice_axis(self.viewer, layer) if layer.ndim >= 3 else 0
        loc = self._session(layer).editor.locate(int(self.label_id.value), axis=axis)
        world = np.asarray(layer.data_to_world(np.asarray(loc.point, float)), float)
        offset = self.viewer.dims.ndim - layer.ndim
        for i in range(layer.ndim):  # the sliced axes move to the label's first slice
            if offset + i in self.viewer.dims.not_displayed:
                self.viewer.dims.set_point(offset + i, world[i])
        # the camera centres on the label in the displayed plane
        viewer_camera(self.viewer).center = tuple(world[d - offset] for d in self.viewer.dims.displayed
                                          if d >= offset)
        layer.selected_label = int(loc.label_id)
        layer.visible = True
        plane = f" (slice {loc.first_slice} along axis {axis})" if layer.ndim >= 3 else ""
        return f"label {loc.label_id}: {loc.voxels} voxels, first seen at {loc.point}{plane}"


class NextLabelWidget(_ProofreadWidget):
    """Select the smallest label id not used anywhere in the layer (for painting a new object)."""

    title = "Find next available label"
    button_text = "Find next available label"
    uses_points = False

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.class_id = SpinBox(value=1, min=0, max=2**31 - 1, label="Class ID")
        self.label_divisor = SpinBox(value=0, min=0, max=2**31 - 1, step=1000,
                                     label="Label divisor (0: none)",
                                     tooltip="ids of class c are c x divisor + 1 .. "
                                             "(c + 1) x divisor - 1")
        super().__init__(napari_viewer, [self.class_id, self.label_divisor])
        self.undo_button.visible = self.redo_button.visible = False

    def _apply(self, layer):
        divisor = int(self.label_divisor.value) or None
        session = self._session(layer, label_divisor=divisor)
        session.editor.label_divisor = divisor
        label_id = session.editor.next_available(int(self.class_id.value))
        layer.selected_label = int(label_id)
        layer.mode = "paint"
        return f"label {label_id} is free: selected for painting"
