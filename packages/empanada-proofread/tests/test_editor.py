"""LabelEditor: history, undo / redo, on-disk history and crash recovery."""

import numpy as np
import pytest

import empanada_proofread as ep


def test_undo_redo_bitwise(volume):
    original = volume.copy()
    editor = ep.LabelEditor(volume)
    pts = np.argwhere(volume > 0)[[0, -1]]
    editor.merge(pts)
    merged = volume.copy()
    editor.morph(operation="dilate", radius=2)
    editor.delete(pts[:1])
    assert len(editor.history) == 3
    assert editor.can_undo
    assert not editor.can_redo
    editor.undo()
    editor.undo()
    np.testing.assert_array_equal(volume, merged)
    editor.undo()
    np.testing.assert_array_equal(volume, original)
    with pytest.raises(ValueError, match="nothing to undo"):
        editor.undo()
    editor.redo()
    np.testing.assert_array_equal(volume, merged)
    editor.delete(pts[:1])  # a new edit drops the redo branch
    assert not editor.can_redo


def test_history_memory_is_proportional_to_changed_voxels(volume):
    big = np.zeros((40, 200, 200), np.uint32)
    big[:12, :40, :40] = volume
    editor = ep.LabelEditor(big)
    edit = editor.delete(np.argwhere(big == 1)[:1])
    n = int((volume == 1).sum())
    assert len(edit.record) == n
    assert edit.record.nbytes <= n * (8 + 4 + 4)
    assert edit.record.nbytes < big.nbytes / 100


def test_queries_use_the_editors_index(volume):
    editor = ep.LabelEditor(volume, label_divisor=None)
    assert editor.next_available() == int(volume.max()) + 1
    loc = editor.locate(1)
    assert volume[loc.point] == 1
    assert len(editor.count()) == len(np.unique(volume)) - 1


def test_record_paint_is_undoable(volume):
    original = volume.copy()
    editor = ep.LabelEditor(volume)
    coords = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    old = volume[tuple(coords.T)].copy()
    volume[tuple(coords.T)] = 42
    editor.record_paint(coords, old)
    assert editor.locate(42).voxels == 3
    editor.undo()
    np.testing.assert_array_equal(volume, original)


def test_history_on_disk_survives_a_restart(tmp_path, volume, make_zarr):
    z, _ = make_zarr(volume, (4, 16, 16))
    original = volume.copy()
    editor = ep.LabelEditor(z, history=tmp_path / "labels.history")
    editor.delete(np.argwhere(volume == 1)[:1])
    editor.delete(np.argwhere(volume == 2)[:1])
    after = z[...]
    del editor
    again = ep.LabelEditor(z, history=tmp_path / "labels.history")
    assert [e["operation"] for e in again.history] == ["delete", "delete"]
    again.undo()
    again.undo()
    np.testing.assert_array_equal(z[...], original)
    again.redo()
    again.redo()
    np.testing.assert_array_equal(z[...], after)


def test_interrupted_edit_is_rolled_back_on_reopen(tmp_path, volume, make_zarr):
    z, _ = make_zarr(volume, (4, 16, 16))
    original = volume.copy()
    folder = tmp_path / "h"
    editor = ep.LabelEditor(z, history=folder)
    # a crash after the record was journaled and half of the array written
    from empanada_proofread import _arrays

    mask = volume == 3
    record = ep.EditRecord(volume.shape, np.flatnonzero(mask).astype(np.int64), volume[mask],
                           np.zeros(int(mask.sum()), volume.dtype))
    editor._history.begin_edit(record)
    half = len(record) // 2
    _arrays.write_values(z, record.flat[:half], record.new[:half])  # ... and the process dies
    assert not np.array_equal(z[...], original)  # half written
    reopened = ep.LabelEditor(z, history=folder)
    np.testing.assert_array_equal(z[...], original)
    assert not reopened.can_undo


def test_history_of_another_array_is_refused(tmp_path, volume):
    ep.LabelEditor(volume, history=tmp_path / "h")
    with pytest.raises(ValueError, match="belongs to labels of shape"):
        ep.LabelEditor(np.zeros((2, 2), np.uint32), history=tmp_path / "h")


def test_last_record_is_what_undo_and_redo_replayed(volume):
    editor = ep.LabelEditor(volume)
    assert editor.last_record is None
    point = np.argwhere(volume == 3)[0]
    edit = editor.delete([point])
    editor.undo()
    assert editor.last_record is edit.record  # a viewer redraws only these voxels
    assert (volume.flat[editor.last_record.flat] == edit.record.old).all()
    editor.redo()
    assert editor.last_record is edit.record
    assert (volume.flat[edit.record.flat] == 0).all()


def test_record_paint_with_new_values_before_the_write(volume):
    editor = ep.LabelEditor(volume)
    original = volume.copy()
    coords = np.array([[0, 1, 1], [0, 1, 2], [0, 1, 1]])  # (0, 1, 1) painted twice
    editor.record_paint(coords, [volume[0, 1, 1], volume[0, 1, 2], 5], [5, 5, 9])
    volume[0, 1, 1], volume[0, 1, 2] = 9, 5  # the paint lands after the record
    assert editor.history[-1].ids == (5, 9)
    editor.undo()
    np.testing.assert_array_equal(volume, original)
    editor.redo()
    assert volume[0, 1, 1] == 9
    assert volume[0, 1, 2] == 5
