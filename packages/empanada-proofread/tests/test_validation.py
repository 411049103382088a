"""Bad input raises a clear ValueError and leaves the array unchanged."""

import numpy as np
import pytest

import empanada_proofread as ep


@pytest.fixture
def labels():
    lab = np.zeros((4, 30, 40), np.uint32)
    lab[:, 5:15, 5:15] = 1
    lab[:, 5:15, 20:35] = 2
    return lab


OPS = [
    lambda lab, pts: ep.merge_labels(lab, pts),
    lambda lab, pts: ep.delete_labels(lab, pts),
    lambda lab, pts: ep.split_label(lab, pts),
]


@pytest.mark.parametrize("op", OPS, ids=["merge", "delete", "split"])
@pytest.mark.parametrize(("points", "message"), [
    ([[3, 10, 900]], r"point \(3, 10, 900\) is outside the labels of shape \(4, 30, 40\)"),
    ([[-1, 10, 10]], "outside"),
    ([[0, 0, 0]], r"point \(0, 0, 0\) is on background"),
    ([[0, 7.5, 7]], "non-integer coordinates"),
    ([[0, 7]], r"must be an \(n, 3\) array"),
    ([[0, 7, 7, 1]], r"must be an \(n, 3\) array"),
    (np.zeros((0, 3)), "empty"),
    ([["a", "b", "c"]], "numbers"),
])
def test_bad_points(op, points, message, labels):
    before = labels.copy()
    with pytest.raises(ValueError, match=message):
        op(labels, points)
    np.testing.assert_array_equal(labels, before)


def test_one_bad_point_among_good_ones_changes_nothing(labels):
    before = labels.copy()
    with pytest.raises(ValueError, match="background"):
        ep.delete_labels(labels, [[0, 7, 7], [0, 7, 25], [0, 0, 0]])
    np.testing.assert_array_equal(labels, before)


def test_integral_float_points_are_accepted(labels):
    ep.delete_labels(labels, np.array([[0.0, 7.0, 7.0]]))
    assert not (labels == 1).any()


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((4, 5, 5), np.float32), "integer ids"),
    (np.zeros((4, 5, 5), bool), "boolean mask"),
    (np.zeros(5, np.uint8), "2D, 3D or 4D"),
    ([[0, 1], [1, 0]], "numpy or zarr array"),
])
def test_bad_label_arrays(bad, message):
    with pytest.raises(ValueError, match=message):
        ep.delete_labels(bad, [[0, 0, 0]])
    with pytest.raises(TypeError):  # also a TypeError, as empanada-core raises for dtypes
        ep.count_labels(bad)


def test_negative_labels_are_refused():
    lab = np.zeros((3, 5, 5), np.int32)
    lab[1, 2, 2] = -4
    with pytest.raises(ValueError, match="negative ids"):
        ep.count_labels(lab)


def test_read_only_array_is_refused(labels):
    labels.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ep.delete_labels(labels, [[0, 7, 7]])
    assert ep.locate_label(labels, 1).first_slice == 0  # queries work on read-only arrays


def test_deleted_label_no_longer_exists(labels):
    ep.delete_labels(labels, [[0, 7, 7]])
    with pytest.raises(ValueError, match="label 1 does not exist"):
        ep.locate_label(labels, 1)
    with pytest.raises(ValueError, match="label 1 does not exist"):
        ep.morph_labels(labels, [1])


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(min_distance=0), "min_distance"),
    (dict(in_3d="yes"), "in_3d"),
    (dict(axis=3), "axis"),
    (dict(new_ids=[2]), "already used"),
    (dict(new_ids=[0]), "does not fit"),
    (dict(new_ids=2**40), "does not fit"),
])
def test_bad_split_options(kwargs, message, labels):
    before = labels.copy()
    kwargs.setdefault("points_as_markers", True)
    with pytest.raises(ValueError, match=message):
        ep.split_label(labels, [[0, 6, 6], [0, 13, 13]], **kwargs)
    np.testing.assert_array_equal(labels, before)


def test_nothing_to_merge(labels):
    with pytest.raises(ValueError, match="nothing to merge"):
        ep.merge_labels(labels, [[0, 7, 7], [1, 8, 8]])


def test_bad_filter_and_count_options(labels):
    with pytest.raises(ValueError, match="mode"):
        ep.remove_small_labels(labels, 5, mode="patch")
    with pytest.raises(ValueError, match="min_size"):
        ep.remove_small_labels(labels, -1)
    with pytest.raises(ValueError, match="plane"):
        ep.count_labels(labels, mode="image", plane=9)
    with pytest.raises(ValueError, match="class_id,name"):
        ep.count_labels(labels, class_names="mito")
    with pytest.raises(ValueError, match="shape"):
        ep.remove_small_labels(labels, 5, out=np.zeros((2, 2, 2), np.uint32))


def test_stale_index_after_outside_edit_is_rebuilt(labels):
    ep.locate_label(labels, 1)  # builds the shared index
    labels[0, 5:8, 5:8] = 0  # edits the index does not know: inside a box ...
    labels[2, 20:25, 5:10] = 7  # ... and a new id
    ep.delete_labels(labels, [[1, 7, 7], [2, 22, 7]])
    assert not np.isin(labels, [1, 7]).any()


def test_outside_edits_are_recorded_with_record_change(labels):
    index = ep.label_index(labels)
    coords = np.array([[0, 0, 0], [0, 0, 1]])
    labels[tuple(coords.T)] = 1  # painting outside the box of 1
    flat = np.ravel_multi_index(tuple(coords.T), labels.shape)
    index.record_change(flat, [0, 0], [1, 1])
    ep.delete_labels(labels, [[1, 7, 7]])
    assert not (labels == 1).any()
