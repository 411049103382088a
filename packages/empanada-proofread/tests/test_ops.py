"""Unit tests of each operation on small numpy volumes."""

import numpy as np
import pytest

import empanada_proofread as ep


def two_boxes():
    labels = np.zeros((3, 10, 20), np.uint32)
    labels[:, 2:8, 1:8] = 4
    labels[:, 2:8, 11:19] = 9
    return labels


def test_merge_keeps_smallest_or_target():
    labels = two_boxes()
    edit = ep.merge_labels(labels, [[0, 3, 3], [1, 3, 15]])
    assert edit.ids == (4, 9)
    assert edit.new_ids == (4,)
    assert set(np.unique(labels)) == {0, 4}
    labels = two_boxes()
    ep.merge_labels(labels, [[0, 3, 3], [1, 3, 15]], target=9)
    assert set(np.unique(labels)) == {0, 9}
    labels = two_boxes()
    ep.merge_labels(labels, [[0, 3, 3], [1, 3, 15]], target=77)  # not among them: smallest
    assert set(np.unique(labels)) == {0, 4}


def test_merge_along_a_line_counts_every_voxel():
    labels = two_boxes()
    labels[:, 2:8, 9:10] = 5  # a thin label between the two
    edit = ep.merge_labels(labels, None, lines=[np.array([[1, 4, 2], [1, 4, 17]])])
    assert edit.ids == (4, 5, 9)
    assert set(np.unique(labels)) == {0, 4}


def test_merge_in_one_slice_only():
    labels = two_boxes()
    before = labels.copy()
    ep.merge_labels(labels, [[1, 3, 3], [1, 3, 15]], in_3d=False)
    changed = np.argwhere(labels != before)
    assert set(changed[:, 0]) == {1}
    assert (labels[1][before[1] == 9] == 4).all()
    assert (labels[0] == before[0]).all()
    assert (labels[2] == before[2]).all()


def test_delete_whole_and_per_slice():
    labels = two_boxes()
    edit = ep.delete_labels(labels, [[0, 3, 3]])
    assert edit.ids == (4,)
    assert not (labels == 4).any()
    assert (labels == 9).sum() == 3 * 6 * 8
    labels = two_boxes()
    ep.delete_labels(labels, [[2, 3, 15]], in_3d=False, axis=0)
    assert (labels[2] == 9).sum() == 0
    assert (labels[:2] == 9).sum() == 2 * 6 * 8


def test_delete_along_another_axis():
    labels = two_boxes()
    ep.delete_labels(labels, [[0, 5, 3]], in_3d=False, axis=1)
    assert (labels[:, 5] == 4).sum() == 0
    assert (labels == 4).sum() == 3 * 5 * 7


def dumbbell(dtype=np.uint32):
    labels = np.zeros((30, 60), dtype)
    yy, xx = np.indices(labels.shape)
    labels[(yy - 15) ** 2 + (xx - 14) ** 2 <= 100] = 3
    labels[(yy - 15) ** 2 + (xx - 45) ** 2 <= 100] = 3
    labels[13:18, 14:46] = 3
    labels[0:3, 0:3] = 7  # another label
    return labels


def test_split_by_distance_peaks_never_reuses_ids():
    labels = dumbbell()
    edit = ep.split_label(labels, [[15, 14]], min_distance=8)
    assert edit.ids == (3,)
    assert len(edit.new_ids) == 1
    new = edit.new_ids[0]
    assert new not in (3, 7)
    assert new == 8
    assert (labels[15, 5] == 3) != (labels[15, 54] == 3)
    assert {labels[15, 5], labels[15, 54]} == {3, new}
    assert (labels[0:3, 0:3] == 7).all()


def test_split_with_points_as_markers_and_explicit_ids():
    labels = dumbbell()
    edit = ep.split_label(labels, [[15, 10], [15, 50]], points_as_markers=True, new_ids=100)
    assert edit.new_ids == (100,)
    assert labels[15, 10] == 3
    assert labels[15, 50] == 100


def test_split_refuses_used_ids_and_full_range():
    labels = dumbbell()
    before = labels.copy()
    with pytest.raises(ValueError, match="already used"):
        ep.split_label(labels, [[15, 10], [15, 50]], points_as_markers=True, new_ids=[7])
    np.testing.assert_array_equal(labels, before)
    labels = dumbbell(np.uint8)
    labels[labels == 7] = 255
    ep.forget_index(labels)
    with pytest.raises(ValueError, match="no free label id"):
        ep.split_label(labels, [[15, 10], [15, 50]], points_as_markers=True)


def test_split_new_ids_stay_in_class_with_label_divisor():
    labels = dumbbell() * 0
    labels[dumbbell() == 3] = 1005
    labels[0, 0] = 1001
    edit = ep.split_label(labels, [[15, 10], [15, 50]], points_as_markers=True,
                          label_divisor=1000)
    assert edit.new_ids == (1002,)


def test_split_one_marker_is_nothing_to_split():
    labels = dumbbell()
    before = labels.copy()
    with pytest.raises(ep.NothingToSplitError, match="nothing to split"):
        ep.split_label(labels, [[15, 10]], points_as_markers=True)
    np.testing.assert_array_equal(labels, before)


def test_split_several_labels_at_once():
    labels = np.concatenate([dumbbell(), dumbbell() * 2], axis=0)  # ids 3 and 6 (and 7, 14)
    edit = ep.split_label(labels, [[15, 10], [15, 50], [45, 10], [45, 50]],
                          points_as_markers=True)
    assert edit.ids == (3, 6)
    assert len(set(edit.new_ids)) == 2
    assert not set(edit.new_ids) & {3, 6, 7, 14}


def test_split_per_slice_uses_globally_new_ids():
    labels = np.stack([dumbbell(), dumbbell()])
    labels[1][labels[1] == 7] = 50  # a big id on another slice
    ep.forget_index(labels)
    edit = ep.split_label(labels, [[0, 15, 10], [0, 15, 50]], points_as_markers=True,
                          in_3d=False)
    assert edit.new_ids == (51,)
    assert (labels[1] == np.where(dumbbell() == 7, 50, dumbbell())).all()


@pytest.mark.parametrize("operation", ["dilate", "erode", "open", "close", "fill_holes"])
def test_morph_only_changes_its_label_and_background(operation, make_blobs):
    labels = make_blobs(seed=3)
    labels[5, 10:14, 10:14] = 0  # make holes / gaps
    before = labels.copy()
    target = 2
    edit = ep.morph_labels(labels, [target], operation=operation, radius=1, hole_size=100)
    changed = labels != before
    assert ((before[changed] == target) | (before[changed] == 0)).all()
    assert ((labels[changed] == target) | (labels[changed] == 0)).all()
    if operation in ("dilate", "close", "fill_holes"):
        assert (before[changed] == 0).all()
    else:
        assert (before[changed] == target).all()
    assert edit.record.old.size == changed.sum()


def test_dilate_matches_scipy_where_free():
    labels = np.zeros((20, 20), np.uint16)
    labels[8:12, 8:12] = 1
    from scipy import ndimage as ndi
    from skimage.morphology import disk

    ep.morph_labels(labels, operation="dilate", radius=2)
    expected = ndi.binary_dilation(np.pad(np.ones((4, 4), bool), 8), disk(2))
    np.testing.assert_array_equal(labels == 1, expected)


def test_dilate_never_overwrites_and_contested_voxels_stay_background():
    labels = np.zeros((1, 5, 7), np.uint32)
    labels[0, :, 0:3] = 1
    labels[0, :, 4:7] = 2
    ep.morph_labels(labels, operation="dilate", radius=1)
    assert (labels[0, :, 3] == 0).all()  # equally near to both
    assert (labels[0, :, :3] == 1).all()
    assert (labels[0, :, 4:] == 2).all()


def test_fill_holes_per_size_and_per_slice():
    labels = np.zeros((3, 12, 12), np.uint32)
    labels[:, 1:11, 1:11] = 5
    labels[:, 4:7, 4:7] = 0  # a 3x3 hole in each slice, a 27-voxel hole in 3D
    small = labels.copy()
    ep.morph_labels(small, operation="fill_holes", hole_size=8, in_3d=False)
    assert (small[:, 4:7, 4:7] == 0).all()
    ep.morph_labels(small, operation="fill_holes", hole_size=9, in_3d=False)
    assert (small == 5).sum() == 300


def test_morph_refuses_unknown_ids_and_operations():
    labels = two_boxes()
    with pytest.raises(ValueError, match="does not exist"):
        ep.morph_labels(labels, [5])
    with pytest.raises(ValueError, match="operation"):
        ep.morph_labels(labels, operation="grow")


def test_remove_small_labels_modes():
    labels = two_boxes()
    labels[0, 0, 0] = 2
    labels[1, 9, 19] = 3
    out = np.zeros_like(labels)
    edit = ep.remove_small_labels(labels, 2, out=out)
    assert edit.ids == (2, 3)
    assert not np.isin(out, [2, 3]).any()
    assert (labels[0, 0, 0] == 2)  # labels untouched when `out` is given
    edit = ep.remove_small_labels(labels, 50, mode="slices")
    assert edit.ids == (2, 3, 4, 9)  # every slice part of 4 and 9 has 42 / 48 voxels
    assert labels.max() == 0


def test_remove_small_labels_image_mode_needs_a_plane():
    labels = two_boxes()
    with pytest.raises(ValueError, match="plane"):
        ep.remove_small_labels(labels, 50, mode="image")
    edit = ep.remove_small_labels(labels, 43, mode="image", plane=1)
    assert edit.ids == (4,)
    assert (labels[1] == 4).sum() == 0
    assert (labels[0] == 4).sum() == 42


def test_remove_boundary_labels_removes_whole_labels(make_blobs):
    # clear_border removes only the touching connected piece of a label; we remove the label
    labels = make_blobs(seed=1)
    faces = np.concatenate([np.take(labels, [0, -1], axis=a).ravel() for a in range(3)])
    touching = np.setdiff1d(faces, [0])
    expected = np.where(np.isin(labels, touching), 0, labels)
    edit = ep.remove_boundary_labels(labels)
    np.testing.assert_array_equal(labels, expected)
    assert edit.ids == tuple(touching)


def test_remove_boundary_labels_matches_clear_border_on_connected_labels(make_blobs):
    from skimage.measure import label
    from skimage.segmentation import clear_border

    labels = label(make_blobs(seed=1) > 0).astype(np.uint32)
    expected = clear_border(labels)
    ep.remove_boundary_labels(labels)
    np.testing.assert_array_equal(labels, expected)


def test_remove_boundary_labels_per_slice_matches_clear_border_per_slice(make_blobs):
    from skimage.segmentation import clear_border

    labels = make_blobs(seed=2)
    expected = np.stack([clear_border(s) for s in labels])
    ep.remove_boundary_labels(labels, mode="slices")
    np.testing.assert_array_equal(labels, expected)


def test_locate_label_matches_regionprops(make_blobs):
    from skimage.measure import regionprops

    labels = make_blobs(seed=4)
    for prop in regionprops(labels):
        loc = ep.locate_label(labels, prop.label)
        nd = labels.ndim
        assert loc.bbox_min == prop.bbox[:nd]
        assert loc.bbox_max == prop.bbox[nd:]
        assert loc.first_slice == prop.bbox[0]
        assert labels[loc.point] == prop.label
        assert loc.point[0] == loc.first_slice
        assert loc.voxels == prop.area
        assert ep.locate_label(labels, prop.label, axis=2).first_slice == prop.bbox[2]


def test_locate_after_edits_gives_exact_box():
    labels = two_boxes()
    ep.delete_labels(labels, [[0, 3, 3]], in_3d=False)
    assert ep.locate_label(labels, 4).bbox_min == (1, 2, 1)
    with pytest.raises(ValueError, match="does not exist"):
        ep.locate_label(labels, 5)


def test_next_available_label():
    labels = np.array([[0, 1, 2, 4], [1001, 1002, 0, 0]], np.uint32)
    assert ep.next_available_label(labels) == 3
    assert ep.next_available_label(labels, 1, 1000) == 1003
    assert ep.next_available_label(labels, 2, 1000) == 2001
    full = np.arange(1, 10, dtype=np.uint32).reshape(3, 3)
    with pytest.raises(ValueError, match="no free label id"):
        ep.next_available_label(full, 0, 10)
    with pytest.raises(ValueError, match="label_divisor"):
        ep.next_available_label(labels, 2)


def test_count_labels_volume_and_slices(tmp_path):
    labels = np.zeros((2, 6, 6), np.uint32)
    labels[0, :2, :2] = 1001
    labels[:, 3:, 3:] = 2001
    table = ep.count_labels(labels, label_divisor=1000, class_names="1,mito\n2,nucleus",
                            path=tmp_path / "counts.csv")
    assert table.per_class() == {"mito": 1, "nucleus": 1}
    assert table.columns["voxels"].tolist() == [4, 18]
    assert table.columns["instance_id"].tolist() == [1, 1]
    text = (tmp_path / "counts.csv").read_text().splitlines()
    assert text[0].startswith("class_id,class_name,label_id,instance_id,voxels,min_z")
    assert text[1].split(",")[:5] == ["1", "mito", "1001", "1", "4"]
    per_slice = ep.count_labels(labels, mode="slices")
    assert per_slice.columns["slice"].tolist() == [0, 0, 1]
    assert per_slice.columns["voxels"].tolist() == [4, 9, 9]
    assert str(per_slice) == "class_1: 2 label(s)"


def test_flipbooks_are_edited_per_patch_and_slice():
    labels = np.zeros((2, 5, 8, 8), np.uint32)
    labels[:, :, 1:4, 1:4] = 1
    labels[:, :, 5:7, 5:7] = 2
    before = labels.copy()
    ep.merge_labels(labels, [[1, 2, 2, 2], [1, 2, 6, 6]])
    changed = np.argwhere(labels != before)
    assert {tuple(c[:2]) for c in changed} == {(1, 2)}
    counts = ep.count_labels(labels, mode="slices")
    assert len(counts) == 2 * 5 * 2 - 1


def test_2d_labels():
    labels = dumbbell()
    ep.delete_labels(labels, [[1, 1]])
    assert not (labels == 7).any()
    assert ep.locate_label(labels, 3).first_slice == 5


def test_sweeps_report_progress_and_can_be_cancelled(make_blobs):
    labels = make_blobs(seed=5)
    before = labels.copy()
    seen = []
    ep.count_labels(labels, mode="slices", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (labels.shape[0], labels.shape[0])

    def cancel(done, total):
        if done > 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ep.remove_small_labels(labels, 10**6, mode="slices", progress=cancel)
    np.testing.assert_array_equal(labels, before)
    steps = []
    ep.LabelIndex.build(labels, progress=lambda d, t: steps.append(d))
    assert steps[-1] >= 1


@pytest.mark.parametrize("share", [0.0, 2.0])  # force the whole-array sweep / the boxes
@pytest.mark.parametrize("dtype", [np.uint16, np.uint64])
def test_volume_filters_sweep_and_boxes_agree(share, dtype, make_blobs, monkeypatch):
    from empanada_proofread import _filters

    monkeypatch.setattr(_filters, "_SWEEP_SHARE", share)
    labels = make_blobs(seed=6).astype(dtype)
    if dtype == np.uint64:
        labels[labels > 0] += np.uint64(2**40)
    expected = labels.copy()
    sizes = {i: (labels == i).sum() for i in np.unique(labels[labels > 0])}
    for i, n in sizes.items():
        if n < 300:
            expected[expected == i] = 0
    edit = ep.remove_small_labels(labels, 300)
    np.testing.assert_array_equal(labels, expected)
    assert set(edit.ids) == {i for i, n in sizes.items() if n < 300}
