"""Proofreading widgets in a real viewer on real Lucchi labels: every edit, undo and redo."""

import numpy as np
import pytest
from napari_helpers import dock
from qtpy.QtCore import QEvent, Qt
from qtpy.QtGui import QKeyEvent
from qtpy.QtWidgets import QApplication


def press(viewer, key, shift=False):
    """A real key press on the canvas, as a user types it."""
    mods = Qt.KeyboardModifier.ControlModifier
    if shift:
        mods |= Qt.KeyboardModifier.ShiftModifier
    canvas = viewer.window._qt_viewer.canvas.native
    for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
        QApplication.sendEvent(canvas, QKeyEvent(kind, key, mods, "z"))


def centre_voxel(labels, label_id, z=None):
    """A voxel of ``label_id`` near the middle of its part in slice ``z`` (or anywhere)."""
    pts = np.argwhere(labels == label_id)
    if z is not None:
        pts = pts[pts[:, 0] == z]
    middle = pts.mean(axis=0)
    return pts[np.argmin(((pts - middle) ** 2).sum(axis=1))]


@pytest.fixture
def scene(make_napari_viewer, lucchi_labels_3d):
    """A viewer with the real labels (5 nm voxels, translated) and a points layer on them."""
    viewer = make_napari_viewer()
    labels = lucchi_labels_3d.astype(np.uint32)
    layer = viewer.add_labels(labels, name="mito", scale=(5, 5, 5), translate=(80, 0, 40))
    points = viewer.add_points(np.zeros((0, 3)), name="clicks", ndim=3)
    viewer.layers.selection.active = layer

    def click(*voxels):  # points placed where the user clicked (world coordinates)
        points.data = np.array([layer.data_to_world(v) for v in voxels])

    return viewer, layer, points, click


def ids_of(labels):
    ids = np.unique(labels)
    return ids[ids > 0]


def test_merge_in_3d_then_ctrl_z_and_ctrl_shift_z(scene, qtbot):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    a, b = ids_of(original)[:2]
    widget = dock(viewer, "Merge Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    widget.apply_3d.value = True
    click(centre_voxel(original, a), centre_voxel(original, b))
    assert widget.run().startswith(f"merged labels {a}, {b} into")
    assert not (layer.data == b).any()
    assert (layer.data == a).sum() == (
        (original == a) | (original == b)).sum()
    qtbot.waitUntil(lambda: len(points.data) == 0)  # the points were used up
    assert layer.selected_label == a
    press(viewer, Qt.Key.Key_Z)
    np.testing.assert_array_equal(layer.data, original)
    press(viewer, Qt.Key.Key_Z, shift=True)
    assert not (layer.data == b).any()
    assert widget._history("undo")
    np.testing.assert_array_equal(layer.data, original)


def test_merge_along_a_line_shape(scene):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    a, b = ids_of(original)[:2]
    z = int(np.intersect1d(np.flatnonzero((original == a).any((1, 2))),
                           np.flatnonzero((original == b).any((1, 2))))[0])
    line = np.array([layer.data_to_world(centre_voxel(original, i, z)) for i in (a, b)])
    shapes = viewer.add_shapes([line], shape_type="line", name="line")
    widget = dock(viewer, "Merge Labels")
    widget.labels_layer.value, widget.shapes_layer.value = layer, shapes
    widget.points_layer.value = None
    assert widget.run() is not None
    assert not (layer.data[z] == b).any()  # merged in the slice of the line only
    assert (layer.data[original == b] != b).sum() == (original[z] == b).sum()


def test_delete_in_the_current_slice_along_the_viewing_axis(scene):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    label = ids_of(original)[0]
    voxel = centre_voxel(original, label)
    viewer.dims.order = (2, 0, 1)  # slicing along x (yz planes)
    widget = dock(viewer, "Delete Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    click(voxel)
    assert widget.run() is not None
    changed = np.argwhere(layer.data != original)
    assert (changed[:, 2] == voxel[2]).all()  # only the yz plane of the point
    assert not (layer.data[:, :, voxel[2]] == label).any()
    assert (layer.data == label).any()


def test_split_a_merged_pair_from_two_points(scene):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    a, b = ids_of(original)[:2]
    pa, pb = centre_voxel(original, a), centre_voxel(original, b)
    merge = dock(viewer, "Merge Labels")
    merge.labels_layer.value, merge.points_layer.value = layer, points
    merge.apply_3d.value = True
    click(pa, pb)
    merge.run()
    split = dock(viewer, "Split Labels")
    split.labels_layer.value, split.points_layer.value = layer, points
    split.apply_3d.value = True
    split.points_as_markers.value = True
    click(pa, pb)
    message = split.run()
    assert message is not None
    assert "split" in message
    new = set(ids_of(layer.data)) - set(ids_of(original))
    assert len(new) == 1
    assert min(new) > original.max()
    piece = layer.data == new.pop()
    truth = original == b
    assert (piece & truth).sum() / (piece | truth).sum() > 0.9
    split._history("undo")
    assert set(ids_of(layer.data)) == set(ids_of(original)) - {b}


def test_morph_dilates_only_into_background_and_undoes(scene):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    label = ids_of(original)[0]
    widget = dock(viewer, "Morph Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    widget.apply_3d.value = True
    widget.radius.value = 2
    click(centre_voxel(original, label))
    assert "1 label(s) changed" in widget.run()
    grown = (layer.data == label) & (original != label)
    assert grown.any()
    assert (original[grown] == 0).all()
    assert ((layer.data != original) == grown).all()
    widget._history("undo")
    np.testing.assert_array_equal(layer.data, original)


def test_filter_small_into_a_new_layer_and_boundary_in_place(scene):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    ids, sizes = np.unique(original[original > 0], return_counts=True)
    threshold = int(np.sort(sizes)[1])  # removes exactly the smallest label
    widget = dock(viewer, "Filter Labels")
    widget.labels_layer.value = layer
    widget.min_size.value = threshold
    assert "removed 1 small label(s)" in widget.run()
    out = viewer.layers["mito small removed"]
    assert set(ids_of(out.data)) == set(ids[sizes >= threshold])
    np.testing.assert_array_equal(layer.data, original)  # the source is untouched
    np.testing.assert_array_equal(out.scale, layer.scale)
    widget.remove.value = "Boundary labels"
    widget.new_layer.value = False
    widget.run()
    kept = ids_of(layer.data)
    for label_id in kept:  # what is left touches no face of the volume
        z, y, x = np.nonzero(layer.data == label_id)
        assert z.min() > 0
        assert y.min() > 0
        assert x.min() > 0
        assert z.max() < 31
        assert y.max() < 255
        assert x.max() < 255
    widget._history("undo")
    np.testing.assert_array_equal(layer.data, original)


def test_count_shows_a_table_and_writes_csv(scene, tmp_path):
    viewer, layer, points, click = scene
    widget = dock(viewer, "Count Labels")
    widget.labels_layer.value = layer
    widget.csv_path.value = tmp_path / "counts.csv"
    message = widget.run()
    n = len(ids_of(layer.data))
    assert message.startswith(f"mito: {n} label(s)")
    assert widget.table.rowCount() == n
    header = [widget.table.horizontalHeaderItem(c).text()
              for c in range(widget.table.columnCount())]
    assert header[:4] == ["class_id", "class_name", "label_id", "voxels"]
    voxels = {int(widget.table.item(r, 2).text()): int(widget.table.item(r, 3).text())
              for r in range(n)}
    assert voxels == {int(i): int((layer.data == i).sum()) for i in ids_of(layer.data)}
    lines = (tmp_path / "counts.csv").read_text().splitlines()
    assert len(lines) == n + 1
    widget.apply_to.value = "Current image"
    viewer.dims.set_current_step(0, 10)
    widget.run()
    assert widget.table.rowCount() == len(ids_of(layer.data[10]))


def test_jump_to_label_moves_to_its_first_slice(scene):
    viewer, layer, points, click = scene
    label = ids_of(layer.data)[-1]
    first = int(np.flatnonzero((layer.data == label).any((1, 2)))[0])
    widget = dock(viewer, "Jump to label")
    widget.labels_layer.value = layer
    widget.label_id.value = int(label)
    assert widget.run() is not None
    z_world = viewer.dims.point[0]
    assert round((z_world - layer.translate[0]) / layer.scale[0]) == first
    assert layer.selected_label == label
    widget.label_id.value = 9999
    assert widget.run() is None
    assert "does not exist" in widget.status.value


def test_next_available_label_selects_an_unused_id(scene):
    viewer, layer, points, click = scene
    used = set(ids_of(layer.data).tolist())
    widget = dock(viewer, "Find next available label")
    widget.labels_layer.value = layer
    widget.run()
    assert layer.selected_label == min(set(range(1, 100)) - used)
    widget.class_id.value, widget.label_divisor.value = 2, 1000
    widget.run()
    assert layer.selected_label == 2001


def test_brush_strokes_and_edits_share_one_undo_history(scene):
    viewer, layer, points, click = scene
    original = layer.data.copy()
    label = ids_of(original)[0]
    widget = dock(viewer, "Delete Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    widget.apply_3d.value = True
    click(centre_voxel(original, label))
    widget.run()  # opens the session; then the user paints
    layer.selected_label = 77
    layer.brush_size = 5
    layer.paint([5, 20, 20], 77, refresh=True)  # data coordinates
    painted = layer.data.copy()
    assert (painted == 77).any()
    press(viewer, Qt.Key.Key_Z)  # undoes the stroke
    assert not (layer.data == 77).any()
    assert not (layer.data == label).any()
    press(viewer, Qt.Key.Key_Z)  # then the delete
    np.testing.assert_array_equal(layer.data, original)
    press(viewer, Qt.Key.Key_Z, shift=True)
    press(viewer, Qt.Key.Key_Z, shift=True)
    np.testing.assert_array_equal(layer.data, painted)


def test_zarr_backed_labels_are_edited_in_the_store(make_napari_viewer, lucchi_labels_3d,
                                                    tmp_path):
    zarr = pytest.importorskip("zarr")
    store = zarr.create_array(tmp_path / "mito.zarr", shape=lucchi_labels_3d.shape,
                              chunks=(8, 64, 64), dtype=np.uint32)
    store[...] = lucchi_labels_3d
    viewer = make_napari_viewer()
    layer = viewer.add_labels(store, name="mito zarr")
    points = viewer.add_points(np.zeros((0, 3)), ndim=3)
    label = ids_of(lucchi_labels_3d)[0]
    widget = dock(viewer, "Delete Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    widget.apply_3d.value = True
    points.data = np.array([centre_voxel(lucchi_labels_3d, label)], float)
    assert widget.run() is not None
    reopened = zarr.open_array(tmp_path / "mito.zarr")[...]
    assert not (reopened == label).any()
    np.testing.assert_array_equal(reopened[lucchi_labels_3d != label],
                                  lucchi_labels_3d[lucchi_labels_3d != label])
    widget._history("undo")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "mito.zarr")[...],
                                  lucchi_labels_3d)


def test_flipbooks_are_edited_per_patch_and_slice(make_napari_viewer, lucchi_labels_3d):
    books = np.stack([lucchi_labels_3d[0:5, :128, :128], lucchi_labels_3d[10:15, :128, :128]])
    books = books.astype(np.uint32)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(books.copy(), name="flipbooks")
    points = viewer.add_points(np.zeros((0, 4)), ndim=4)
    label = ids_of(books[1, 2])[0]
    voxel = np.argwhere(books[1, 2] == label)[0]
    widget = dock(viewer, "Delete Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    points.data = np.array([[1, 2, *voxel]], float)
    assert widget.run() is not None
    assert not (layer.data[1, 2] == label).any()
    changed = np.argwhere(layer.data != books)
    assert (changed[:, 0] == 1).all()
    assert (changed[:, 1] == 2).all()


def test_without_points_a_points_layer_is_made_to_click_on(make_napari_viewer,
                                                            lucchi_labels_3d, notes):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(lucchi_labels_3d.astype(np.uint32), name="mito")
    widget = dock(viewer, "Merge Labels")
    widget.labels_layer.value = layer
    widget.points_layer.value = None
    assert widget.run() is None
    assert "click on the labels" in notes()[-1]
    made = viewer.layers["mito points"]
    assert made.mode == "add"
    assert widget.points_layer.value is made
    made.data = np.array([[0, 0, 0]], float)  # on background
    assert widget.run() is None
    assert "background" in notes()[-1]


def test_2d_labels_are_edited_whole_and_redrawn_in_part(make_napari_viewer, lucchi_labels_3d,
                                                        monkeypatch, qtbot):
    plane = lucchi_labels_3d[12].astype(np.uint32)
    viewer = make_napari_viewer(show=True)  # a drawn canvas (napari redraws all before)
    layer = viewer.add_labels(plane.copy(), name="slice")
    points = viewer.add_points(np.zeros((0, 2)), ndim=2)
    qtbot.wait(50)
    a, b = ids_of(plane)[:2]
    full_refreshes = []
    monkeypatch.setattr(layer, "refresh", lambda *args, **kw: full_refreshes.append(1))
    widget = dock(viewer, "Merge Labels")
    widget.labels_layer.value, widget.points_layer.value = layer, points
    points.data = np.array([centre_voxel(plane, a), centre_voxel(plane, b)], float)
    assert widget.run() is not None
    assert not (layer.data == b).any()
    assert (layer.data == a).sum() == ((plane == a) | (plane == b)).sum()
    assert not full_refreshes  # only the changed region was redrawn
    # what napari shows for the slice is the edited data
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), layer.data)
    widget._history("undo")
    np.testing.assert_array_equal(layer.data, plane)
    assert not full_refreshes
