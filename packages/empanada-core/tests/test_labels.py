"""Tests for empanada_core._labels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from skimage.measure import label as sk_label

import empanada_core as ec
from empanada_core._labels import (
    connected_components_per_label,
    dilate_labels,
    erode_labels,
    fill_holes_per_label,
    label_dtype,
    relabel_sequential,
    split_panoptic,
)

INT_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]
HUGE = 2**64 - 1


def small_label_images(max_side=7, max_id=4, ndim=(1, 2, 3)):
    """Small random label images of 1-3 dimensions."""
    shapes = st.integers(min(ndim), max(ndim)).flatmap(
        lambda n: st.tuples(*[st.integers(1, max_side)] * n)
    )
    return shapes.flatmap(lambda shape: arrays(np.uint8, shape, elements=st.integers(0, max_id)))


def same_partition(a, b):
    """True when a and b are the same partition with 0 <-> 0 (ids may differ)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]).astype(np.uint64), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def brute_force_erode(labels, iterations):
    """Per-id binary erosion with a cross footprint; the border does not erode."""
    cross = ndi.generate_binary_structure(labels.ndim, 1)
    out = labels.copy()
    for _ in range(iterations):
        new = np.zeros_like(out)
        for i in np.unique(out[out != 0]):
            mask = ndi.binary_erosion(out == i, cross, border_value=1)
            new[mask] = i
        out = new
    return out


# --------------------------------------------------------------------------- label_dtype


@pytest.mark.parametrize(
    ("max_id", "expected"),
    [
        (0, np.uint32),
        (255, np.uint32),
        (2**32 - 1, np.uint32),
        (2**32, np.uint64),
        (HUGE, np.uint64),
        (np.uint64(2**40), np.uint64),
        (np.array([1, 2, 3], np.uint8), np.uint32),
        (np.array([1, 2**33], np.int64), np.uint64),
        (np.zeros(0, np.int64), np.uint32),
    ],
)
def test_label_dtype(max_id, expected):
    assert label_dtype(max_id) == np.dtype(expected)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (True, TypeError, "`max_id` must be an integer"),
        (1.5, TypeError, "`max_id` must be an integer"),
        (np.array([1.0]), TypeError, "integer array"),
        (np.array([True]), TypeError, "integer array"),
        (-1, ValueError, "must be >= 0"),
        (2**64, ValueError, "does not fit in uint64"),
    ],
)
def test_label_dtype_errors(bad, error, match):
    with pytest.raises(error, match=match):
        label_dtype(bad)


# --------------------------------------------------------------------------- relabel_sequential


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_relabel_sequential_exact(dtype):
    labels = np.array([[0, 9, 9], [4, 0, 100]], dtype=dtype)
    out, old = relabel_sequential(labels, return_mapping=True)
    np.testing.assert_array_equal(out, [[0, 2, 2], [1, 0, 3]])
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(old, [4, 9, 100])
    assert old.dtype == labels.dtype


def test_relabel_sequential_offset_and_mapping():
    labels = np.array([3, 0, 7, 3])
    out, old = relabel_sequential(labels, offset=10, return_mapping=True)
    np.testing.assert_array_equal(out, [10, 0, 11, 10])
    np.testing.assert_array_equal(old[out[out > 0] - 10], labels[labels > 0])


def test_relabel_sequential_huge_ids():
    labels = np.array([[HUGE, 0], [2**63, 2**40]], dtype=np.uint64)
    out, old = relabel_sequential(labels, return_mapping=True)
    np.testing.assert_array_equal(out, [[3, 0], [2, 1]])
    np.testing.assert_array_equal(old, np.array([2**40, 2**63, HUGE], dtype=np.uint64))


def test_relabel_sequential_uint64_output_when_offset_is_huge():
    out = relabel_sequential(np.array([0, 5]), offset=2**32)
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, [0, 2**32])


@pytest.mark.parametrize("labels", [np.zeros((3, 4), np.int32), np.zeros((0, 5), np.uint16)])
def test_relabel_sequential_empty(labels):
    out, old = relabel_sequential(labels, return_mapping=True)
    assert out.shape == labels.shape
    assert not out.any()
    assert old.size == 0


@given(small_label_images(max_id=200), st.integers(1, 1000))
@settings(max_examples=60, deadline=None)
def test_relabel_sequential_preserves_partition_and_order(labels, offset):
    out, old = relabel_sequential(labels, offset=offset, return_mapping=True)
    assert same_partition(labels, out)
    fg = labels != 0
    np.testing.assert_array_equal(old[out[fg].astype(np.int64) - offset], labels[fg])
    assert np.all(np.diff(old.astype(np.int64)) > 0)


@pytest.mark.parametrize(
    ("bad", "kwargs", "error", "match"),
    [
        (np.ones((2, 2), bool), {}, TypeError, "boolean mask"),
        (np.ones((2, 2), np.float32), {}, TypeError, "integer ids"),
        (np.array([[-1, 2]]), {}, ValueError, "negative ids"),
        (np.array(3), {}, TypeError, "at least 1 dimension"),
        (np.array([1, 2]), {"offset": 0}, ValueError, "`offset` must be >= 1"),
        (np.array([1, 2]), {"offset": 1.0}, TypeError, "`offset` must be an integer"),
    ],
)
def test_relabel_sequential_errors(bad, kwargs, error, match):
    with pytest.raises(error, match=match):
        relabel_sequential(bad, **kwargs)


# --------------------------------------------------------------------------- connected components


def test_connected_components_exact_2d():
    labels = np.array(
        [
            [7, 7, 0, 7],
            [0, 0, 7, 0],
            [3, 3, 0, 3],
        ],
        dtype=np.uint16,
    )
    full, parents = connected_components_per_label(labels, return_parents=True)
    np.testing.assert_array_equal(full, [[1, 1, 0, 1], [0, 0, 1, 0], [2, 2, 0, 3]])
    np.testing.assert_array_equal(parents, [7, 3, 3])
    assert full.dtype == np.uint32
    assert parents.dtype == np.uint16

    faces, parents = connected_components_per_label(labels, connectivity=1, return_parents=True)
    np.testing.assert_array_equal(faces, [[1, 1, 0, 2], [0, 0, 3, 0], [4, 4, 0, 5]])
    np.testing.assert_array_equal(parents, [7, 7, 7, 3, 3])


def test_connected_components_touching_objects_stay_apart():
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    np.testing.assert_array_equal(
        connected_components_per_label(labels), [[1, 1, 2, 2], [1, 1, 2, 2]]
    )


def test_connected_components_3d_and_huge_ids():
    labels = np.zeros((3, 3, 3), np.uint64)
    labels[0, 0, 0] = HUGE
    labels[1, 1, 1] = HUGE  # corner neighbour of (0, 0, 0)
    labels[2, 2, 2] = 2**40
    cc, parents = connected_components_per_label(labels, return_parents=True)
    assert cc[0, 0, 0] == cc[1, 1, 1] == 1
    assert cc[2, 2, 2] == 2
    np.testing.assert_array_equal(parents, np.array([HUGE, 2**40], np.uint64))
    cc6 = connected_components_per_label(labels, connectivity=1)
    assert cc6.max() == 3


def test_connected_components_empty():
    cc, parents = connected_components_per_label(np.zeros((0, 3), np.uint8), return_parents=True)
    assert cc.shape == (0, 3)
    assert parents.size == 0


@given(small_label_images(max_id=6))
@settings(max_examples=60, deadline=None)
def test_connected_components_match_skimage(labels):
    cc, parents = connected_components_per_label(labels, return_parents=True)
    np.testing.assert_array_equal(cc, sk_label(labels, background=0, connectivity=labels.ndim))
    fg = cc != 0
    np.testing.assert_array_equal(parents[cc[fg].astype(np.int64) - 1], labels[fg])


@given(small_label_images(max_id=6), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_connected_components_of_connected_image_is_a_permutation(labels, seed):
    connected = connected_components_per_label(labels)
    n = int(connected.max())
    perm = np.random.default_rng(seed).permutation(n) + 1
    shuffled = np.r_[0, perm][connected]
    again = connected_components_per_label(shuffled)
    assert same_partition(again, shuffled)
    assert int(again.max()) == n


@pytest.mark.parametrize(
    ("bad", "kwargs", "error", "match"),
    [
        (np.ones((2, 2), bool), {}, TypeError, "boolean mask"),
        (np.ones((2, 2)), {}, TypeError, "integer ids"),
        (np.array([[-2, 1]]), {}, ValueError, "negative ids"),
        (np.array(1), {}, TypeError, "at least 1 dimension"),
        (
            np.ones((2, 2), int),
            {"connectivity": 3},
            ValueError,
            r"`connectivity` must be in 1\.\.2",
        ),
        (np.ones((2, 2), int), {"connectivity": 0}, ValueError, "`connectivity` must be >= 1"),
        (
            np.ones((2, 2), int),
            {"connectivity": 1.5},
            TypeError,
            "`connectivity` must be an integer",
        ),
    ],
)
def test_connected_components_errors(bad, kwargs, error, match):
    with pytest.raises(error, match=match):
        connected_components_per_label(bad, **kwargs)


# --------------------------------------------------------------------------- fill holes


def test_fill_holes_single_object():
    labels = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 4, 4, 4, 4, 0],
            [0, 4, 0, 0, 4, 0],
            [0, 4, 0, 4, 4, 0],
            [0, 4, 4, 4, 0, 0],
        ],
        dtype=np.uint8,
    )
    expected = labels.copy()
    expected[2, 2:4] = 4
    expected[3, 2] = 4
    np.testing.assert_array_equal(fill_holes_per_label(labels), expected)


def test_fill_holes_leaves_border_and_shared_holes():
    labels = np.array(
        [
            [1, 0, 1, 0, 0, 0],  # border gap: not a hole
            [1, 1, 1, 2, 2, 2],
            [1, 0, 0, 0, 0, 2],  # hole bordered by 1 and 2: kept
            [1, 1, 1, 2, 2, 2],
        ]
    )
    np.testing.assert_array_equal(fill_holes_per_label(labels), labels)


def test_fill_holes_never_overwrites_nested_object():
    labels = np.array(
        [
            [1, 1, 1, 1, 1],
            [1, 0, 0, 0, 1],
            [1, 0, 2, 0, 1],
            [1, 0, 0, 0, 1],
            [1, 1, 1, 1, 1],
        ]
    )
    # the ring around 2 touches two objects, so it stays background, and 2 survives
    np.testing.assert_array_equal(fill_holes_per_label(labels), labels)


def test_fill_holes_diagonal_wall_encloses_like_binary_fill_holes():
    labels = np.array(
        [
            [0, 0, 3, 0, 0],
            [0, 3, 0, 3, 0],
            [0, 0, 3, 0, 0],
        ]
    )
    expected = labels.copy()
    expected[1, 2] = 3
    np.testing.assert_array_equal(fill_holes_per_label(labels), expected)
    np.testing.assert_array_equal(ndi.binary_fill_holes(labels > 0), expected > 0)


def test_fill_holes_per_slice_fills_an_open_tube():
    tube = np.zeros((3, 5, 5), np.uint32)
    tube[:, 1:4, 1:4] = 9
    tube[:, 2, 2] = 0  # a channel that reaches the z faces
    np.testing.assert_array_equal(fill_holes_per_label(tube), tube)
    filled = fill_holes_per_label(tube, per_slice=True)
    assert filled[:, 2, 2].tolist() == [9, 9, 9]


def test_fill_holes_3d_cavity():
    ball = np.zeros((5, 5, 5), np.int64)
    ball[1:4, 1:4, 1:4] = 2**40
    ball[2, 2, 2] = 0
    filled = fill_holes_per_label(ball)
    assert filled[2, 2, 2] == 2**40
    assert filled.dtype == np.int64


def test_fill_holes_no_background_and_empty():
    full = np.ones((2, 3), np.uint8)
    np.testing.assert_array_equal(fill_holes_per_label(full), full)
    assert fill_holes_per_label(np.zeros((0, 4), np.uint8)).shape == (0, 4)


@given(small_label_images(max_side=8, max_id=1, ndim=(2, 3)))
@settings(max_examples=60, deadline=None)
def test_fill_holes_single_id_matches_binary_fill_holes(mask):
    expected = ndi.binary_fill_holes(mask > 0).astype(np.uint8)
    np.testing.assert_array_equal(fill_holes_per_label(mask), expected)


@given(small_label_images(max_side=8, max_id=3, ndim=(2, 3)), st.booleans())
@settings(max_examples=80, deadline=None)
def test_fill_holes_never_changes_objects(labels, per_slice):
    per_slice = per_slice and labels.ndim == 3
    out = fill_holes_per_label(labels, per_slice=per_slice)
    fg = labels != 0
    np.testing.assert_array_equal(out[fg], labels[fg])
    # each filled pixel lies inside binary_fill_holes of its own object
    for i in np.unique(out[~fg & (out != 0)]):
        mask = labels == i
        if per_slice:
            holes = np.stack([ndi.binary_fill_holes(m) for m in mask])
        else:
            holes = ndi.binary_fill_holes(mask)
        assert holes[(out == i) & ~fg].all()


@pytest.mark.parametrize(
    ("bad", "kwargs", "error", "match"),
    [
        (np.ones((3, 3), bool), {}, TypeError, "boolean mask"),
        (np.ones((3, 3), np.float64), {}, TypeError, "integer ids"),
        (np.array([[-1, 0]]), {}, ValueError, "negative ids"),
        (np.array(0), {}, TypeError, "at least 1 dimension"),
        (np.ones((3, 3), int), {"per_slice": True}, TypeError, "needs a 3D"),
    ],
)
def test_fill_holes_errors(bad, kwargs, error, match):
    with pytest.raises(error, match=match):
        fill_holes_per_label(bad, **kwargs)


# --------------------------------------------------------------------------- erode / dilate


def test_erode_labels_touching_objects_and_border():
    labels = np.array(
        [
            [1, 1, 1, 2, 2, 2],
            [1, 1, 1, 2, 2, 2],
            [1, 1, 1, 2, 2, 2],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=np.int16,
    )
    expected = np.array(
        [
            [1, 1, 0, 0, 2, 2],
            [1, 1, 0, 0, 2, 2],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=np.int16,
    )
    out = erode_labels(labels)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(
        erode_labels(labels, iterations=2), [[1, 0, 0, 0, 0, 2]] + [[0] * 6] * 3
    )
    np.testing.assert_array_equal(erode_labels(labels, iterations=0), labels)


def test_erode_labels_3d_huge_ids():
    labels = np.full((3, 3, 3), HUGE, np.uint64)
    out = erode_labels(labels)
    np.testing.assert_array_equal(out, labels)  # the border does not erode
    labels[1, 1, 0] = 5
    out = erode_labels(labels)
    assert out[1, 1, 0] == 0
    assert out[1, 1, 1] == 0
    assert out[0, 0, 0] == HUGE


@given(small_label_images(max_side=7, max_id=3), st.integers(1, 3))
@settings(max_examples=60, deadline=None)
def test_erode_labels_matches_per_label_erosion(labels, iterations):
    np.testing.assert_array_equal(
        erode_labels(labels, iterations=iterations), brute_force_erode(labels, iterations)
    )


def test_dilate_labels_into_background_only():
    labels = np.array([[0, 0, 1, 0, 0, 0, 0, 2, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(dilate_labels(labels), [[0, 1, 1, 1, 0, 0, 2, 2, 3]])
    np.testing.assert_array_equal(
        dilate_labels(labels, iterations=2), [[1, 1, 1, 1, 1, 2, 2, 2, 3]]
    )
    np.testing.assert_array_equal(dilate_labels(labels, iterations=0), labels)


def test_dilate_labels_2d_cross_and_huge_ids():
    labels = np.zeros((3, 3), np.uint64)
    labels[1, 1] = HUGE
    out = dilate_labels(labels)
    expected = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint64) * np.uint64(HUGE)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint64


def test_dilate_labels_tie_goes_to_largest_id_and_stops_at_objects():
    labels = np.array([[1, 0, 2, 0, 0]], dtype=np.uint64)
    labels[0, 2] = HUGE
    np.testing.assert_array_equal(
        dilate_labels(labels, iterations=5), np.array([[1, HUGE, HUGE, HUGE, HUGE]], np.uint64)
    )


def brute_force_dilate(labels, iterations):
    """Cross-footprint grey dilation written into background only, per iteration."""
    cross = ndi.generate_binary_structure(labels.ndim, 1)
    out = labels.astype(np.int64)
    for _ in range(iterations):
        grown = ndi.grey_dilation(out, footprint=cross, mode="nearest")
        out = np.where(out == 0, grown, out)
    return out


@given(small_label_images(max_id=4), st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_dilate_labels_matches_background_only_grey_dilation(labels, iterations):
    np.testing.assert_array_equal(
        dilate_labels(labels, iterations=iterations), brute_force_dilate(labels, iterations)
    )


@given(small_label_images(max_id=4), st.integers(0, 2), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_erode_then_dilate_never_creates_labels(labels, n_erode, n_dilate):
    out = dilate_labels(erode_labels(labels, iterations=n_erode), iterations=n_dilate)
    assert set(np.unique(out).tolist()) <= set(np.unique(labels).tolist()) | {0}
    dilated = dilate_labels(labels, iterations=n_dilate)
    np.testing.assert_array_equal(dilated[labels != 0], labels[labels != 0])


@pytest.mark.parametrize("func", [erode_labels, dilate_labels])
@pytest.mark.parametrize(
    ("bad", "kwargs", "error", "match"),
    [
        (np.ones((3, 3), bool), {}, TypeError, "boolean mask"),
        (np.ones((3, 3), np.float32), {}, TypeError, "integer ids"),
        (np.array([[-1, 0]]), {}, ValueError, "negative ids"),
        (np.array(2), {}, TypeError, "at least 1 dimension"),
        (np.ones((3, 3), int), {"iterations": -1}, ValueError, "`iterations` must be >= 0"),
        (np.ones((3, 3), int), {"iterations": 1.0}, TypeError, "`iterations` must be an integer"),
    ],
)
def test_erode_dilate_errors(func, bad, kwargs, error, match):
    with pytest.raises(error, match=match):
        func(bad, **kwargs)


# --------------------------------------------------------------------------- split_panoptic


def test_split_panoptic_exact():
    pan = np.array([[0, 1001, 1002, 2001], [2000, 1001, 0, 3]], dtype=np.int32)
    parts = split_panoptic(pan, 1000)
    assert sorted(parts) == [1, 2]
    np.testing.assert_array_equal(parts[1], [[0, 1, 2, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(parts[2], [[0, 0, 0, 1], [0, 0, 0, 0]])  # stuff reads 0
    assert parts[1].dtype == np.uint32


def test_split_panoptic_huge_ids():
    div = 2**40
    pan = np.array([[3 * div + 5, 0], [2**63 + 7, 3 * div + 5]], dtype=np.uint64)
    parts = split_panoptic(pan, div)
    assert sorted(parts) == [3, 2**63 // div]
    assert parts[3].dtype == np.uint64
    np.testing.assert_array_equal(parts[3], [[5, 0], [0, 5]])
    np.testing.assert_array_equal(parts[2**63 // div], [[0, 0], [7, 0]])


def test_split_panoptic_divisor_beyond_dtype():
    assert split_panoptic(np.array([[0, 5]], np.uint8), 1000) == {}
    assert split_panoptic(np.zeros((2, 2), np.uint16), 1000) == {}


@pytest.mark.parametrize(
    ("bad", "div", "error", "match"),
    [
        (np.ones((2, 2), bool), 1000, TypeError, "`panoptic` is a boolean mask"),
        (np.ones((2, 2), np.float32), 1000, TypeError, "`panoptic` must hold integer ids"),
        (np.array([[-1001]]), 1000, ValueError, "`panoptic` contains negative ids"),
        (np.array(1001), 1000, TypeError, "`panoptic` must have at least 1 dimension"),
        (np.array([1001]), 1, ValueError, "`label_divisor` must be >= 2"),
        (np.array([1001]), 1000.0, TypeError, "`label_divisor` must be an integer"),
    ],
)
def test_split_panoptic_errors(bad, div, error, match):
    with pytest.raises(error, match=match):
        split_panoptic(bad, div)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_label_ids_equals_unique_for_any_slab_size(data):
    shape = data.draw(st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)))
    ids = np.array(data.draw(st.lists(st.integers(0, 2**31), min_size=1, max_size=6)))
    rng = np.random.default_rng(len(ids))
    labels = ids[rng.integers(0, len(ids), shape)].astype(np.uint32)
    slab = data.draw(st.integers(1, 400))
    expected = np.unique(labels)
    np.testing.assert_array_equal(ec.label_ids(labels, slab_bytes=slab),
                                  expected[expected != 0])


def test_label_ids_reads_a_lazy_array_in_slabs():
    labels = np.zeros((10, 4, 4), np.uint32)
    labels[3, 1, 1], labels[9, 0, 0] = 10001, 20002
    reads = []

    class Lazy:
        shape, dtype = labels.shape, labels.dtype

        def __getitem__(self, key):
            reads.append(key)
            return labels[key]

    assert ec.label_ids(Lazy(), slab_bytes=64 * 2).tolist() == [10001, 20002]
    assert len(reads) == 5  # 2 slices of 64 bytes a read
    with pytest.raises(TypeError, match="integer"):
        ec.label_ids(np.zeros((2, 2), np.float32))
