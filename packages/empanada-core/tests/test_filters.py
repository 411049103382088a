import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import empanada_core as ec
from empanada_core import _filters


def naive_stats(labels):
    """Per-object loop: the obvious (slow) definition."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    sizes, lo, hi = [], [], []
    for i in ids:
        coords = np.nonzero(labels == i)
        sizes.append(coords[0].size)
        lo.append([c.min() for c in coords])
        hi.append([c.max() + 1 for c in coords])
    return (
        ids,
        np.array(sizes),
        np.array(lo).reshape(-1, labels.ndim),
        np.array(hi).reshape(-1, labels.ndim),
    )


label_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    elements=st.integers(0, 6),
)


@pytest.fixture
def small_slabs(monkeypatch):
    """Force many tiny slabs so the slab-merging code runs."""
    monkeypatch.setattr(_filters, "_SLAB_VOXELS", 7)


# ---------------------------------------------------------------------------
# object_stats
# ---------------------------------------------------------------------------


def test_object_stats_3d_boxes():
    lab = np.zeros((4, 5, 6), np.int32)
    lab[1:3, 0:2, 4:6] = 9
    lab[0, 4, 0] = 2
    s = ec.object_stats(lab)
    assert s.ids.tolist() == [2, 9]
    assert s.sizes.tolist() == [1, 8]
    assert s.bbox_min.tolist() == [[0, 4, 0], [1, 0, 4]]
    assert s.bbox_max.tolist() == [[1, 5, 1], [3, 2, 6]]
    assert s.extents.tolist() == [[1, 1, 1], [2, 2, 2]]
    assert len(s) == 2


def test_object_stats_empty():
    s = ec.object_stats(np.zeros((3, 4), np.uint16))
    assert len(s) == 0
    assert s.ids.dtype == np.uint16
    assert s.bbox_min.shape == (0, 2)
    assert s.bbox_max.shape == (0, 2)


def test_object_stats_huge_uint64_ids():
    big = np.uint64(2**64 - 1)
    lab = np.array([[0, big], [3, big]], dtype=np.uint64)
    s = ec.object_stats(lab)
    assert s.ids.tolist() == [3, 2**64 - 1]
    assert s.sizes.tolist() == [1, 2]


@pytest.mark.parametrize("tiny_slabs", [False, True])
@settings(max_examples=60, deadline=None)
@given(lab=label_arrays)
def test_object_stats_matches_per_object_loop(lab, tiny_slabs):
    with pytest.MonkeyPatch.context() as mp:
        if tiny_slabs:
            mp.setattr(_filters, "_SLAB_VOXELS", 5)
        s = ec.object_stats(lab)
    ids, sizes, lo, hi = naive_stats(lab)
    np.testing.assert_array_equal(s.ids, ids)
    np.testing.assert_array_equal(s.sizes, sizes)
    np.testing.assert_array_equal(s.bbox_min, lo)
    np.testing.assert_array_equal(s.bbox_max, hi)


# ---------------------------------------------------------------------------
# remove_small_objects
# ---------------------------------------------------------------------------


def test_remove_small_objects_keeps_exact_min_size():
    lab = np.array([[1, 1, 0, 2, 2, 2], [0, 0, 0, 0, 0, 3]], np.uint16)
    out = ec.remove_small_objects(lab, min_size=3)
    assert out.dtype == np.uint16
    assert out.tolist() == [[0, 0, 0, 2, 2, 2], [0, 0, 0, 0, 0, 0]]
    assert lab[0, 0] == 1  # input untouched


def test_remove_small_objects_default_is_64():
    lab = np.zeros((4, 4, 4), np.int32)
    lab[:] = 1
    lab[0, 0, 0] = 2
    out = ec.remove_small_objects(lab)
    assert np.unique(out).tolist() == [0]  # 63 voxels < 64, 1 voxel < 64
    lab[0, 0, 0] = 1
    assert np.array_equal(ec.remove_small_objects(lab), lab)


def test_remove_small_objects_in_place_and_out():
    lab = np.array([[5, 0, 6, 6]], np.int64)
    buf = np.full_like(lab, 99)
    res = ec.remove_small_objects(lab, min_size=2, out=buf)
    assert res is buf
    assert buf.tolist() == [[0, 0, 6, 6]]
    assert lab.tolist() == [[5, 0, 6, 6]]
    res = ec.remove_small_objects(lab, min_size=2, out=lab)
    assert res is lab
    assert lab.tolist() == [[0, 0, 6, 6]]


def test_remove_small_objects_per_class():
    div = 1000
    lab = np.array([1001, 1001, 1002, 2001, 2002, 2002, 3005], np.uint32)
    out = ec.remove_small_objects(lab, min_size={1: 2, 2: 3}, label_divisor=div)
    # class 1: 1001 (2) stays, 1002 (1) goes; class 2: both < 3 go; class 3: no rule
    assert out.tolist() == [1001, 1001, 0, 0, 0, 0, 3005]


def test_remove_small_objects_with_small_slabs(small_slabs):
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 8, (6, 5, 4)).astype(np.int32)
    sizes = np.bincount(lab.ravel())
    out = ec.remove_small_objects(lab, min_size=16)
    expect = np.where(sizes[lab] < 16, 0, lab)
    expect[lab == 0] = 0
    np.testing.assert_array_equal(out, expect)


@settings(max_examples=80, deadline=None)
@given(lab=label_arrays, min_size=st.integers(0, 12))
def test_remove_small_objects_property(lab, min_size):
    out = ec.remove_small_objects(lab, min_size=min_size)
    assert out.dtype == lab.dtype
    assert out.shape == lab.shape
    in_ids = set(np.unique(lab).tolist()) - {0}
    out_ids = set(np.unique(out).tolist()) - {0}
    assert out_ids <= in_ids
    for i in in_ids:
        size = int((lab == i).sum())
        if i in out_ids:
            assert size >= min_size
            assert np.array_equal(out == i, lab == i)  # survivors unchanged
        else:
            assert size < min_size
    assert np.all((out == 0) | (out == lab))


# ---------------------------------------------------------------------------
# remove_pancakes
# ---------------------------------------------------------------------------


def test_remove_pancakes_tests_every_axis_by_default():
    lab = np.zeros((6, 6, 6), np.int32)
    lab[0:5, 0:5, 0:5] = 1  # 5 x 5 x 5
    lab[5, 0:6, 0:6] = 2  # thin in z
    lab[0:5, 5, 0:3] = 3  # thin in y
    out = ec.remove_pancakes(lab, min_extent=3)
    assert np.unique(out).tolist() == [0, 1]
    out_z = ec.remove_pancakes(lab, min_extent=3, axes=0)
    assert np.unique(out_z).tolist() == [0, 1, 3]
    out_neg = ec.remove_pancakes(lab, min_extent=3, axes=[-2])
    assert np.unique(out_neg).tolist() == [0, 1, 2]


def test_remove_pancakes_span_not_size():
    # a diagonal line: few voxels but a box spanning all axes survives
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[np.arange(4), np.arange(4), np.arange(4)] = 7
    assert np.array_equal(ec.remove_pancakes(lab, min_extent=4), lab)
    assert not ec.remove_pancakes(lab, min_extent=5).any()


def test_remove_pancakes_default_and_in_place():
    lab = np.zeros((4, 4, 4), np.int32)
    lab[:, :, :3] = 1
    ec.remove_pancakes(lab, out=lab)  # default min_extent=4: x span 3 < 4
    assert not lab.any()


def test_remove_pancakes_per_class():
    lab = np.zeros((2, 5), np.int64)
    lab[0, :] = 1001
    lab[1, :2] = 2001
    out = ec.remove_pancakes(lab, min_extent={1: 2, 2: 1}, label_divisor=1000, axes=1)
    assert np.array_equal(out, lab)
    out = ec.remove_pancakes(lab, min_extent={2: 3}, label_divisor=1000, axes=1)
    assert (out == 2001).sum() == 0
    assert (out == 1001).sum() == 5


@settings(max_examples=60, deadline=None)
@given(lab=label_arrays, min_extent=st.integers(0, 5))
def test_remove_pancakes_property(lab, min_extent):
    out = ec.remove_pancakes(lab, min_extent=min_extent)
    ids, _, lo, hi = naive_stats(lab)
    for i, span in zip(ids, hi - lo):
        kept = bool((out == i).any())
        assert kept == bool((span >= min_extent).all())
        if kept:
            assert np.array_equal(out == i, lab == i)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", [ec.object_stats, ec.remove_small_objects, ec.remove_pancakes])
def test_rejects_float_bool_negative_and_0d(func):
    with pytest.raises(TypeError, match="integer ids"):
        func(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="boolean mask"):
        func(np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="negative ids"):
        func(np.array([[0, -1]]))
    with pytest.raises(TypeError, match="at least 1 dimension"):
        func(np.array(3))


def test_min_size_errors():
    lab = np.ones((2, 2), np.int32)
    with pytest.raises(ValueError, match="`min_size` must be >= 0"):
        ec.remove_small_objects(lab, min_size=-1)
    with pytest.raises(TypeError, match="`min_size` must be an integer"):
        ec.remove_small_objects(lab, min_size=2.5)
    with pytest.raises(ValueError, match="needs `label_divisor`"):
        ec.remove_small_objects(lab, min_size={1: 3})
    with pytest.raises(ValueError, match=r"`min_size\[1\]` must be >= 0"):
        ec.remove_small_objects(lab, min_size={1: -3}, label_divisor=1000)
    with pytest.raises(ValueError, match="class ids must be non-negative"):
        ec.remove_small_objects(lab, min_size={-1: 3}, label_divisor=1000)
    with pytest.raises(ValueError, match="label_divisor"):
        ec.remove_small_objects(lab, min_size={1: 3}, label_divisor=1)


def test_out_errors():
    lab = np.ones((2, 2), np.int32)
    with pytest.raises(TypeError, match="dtype of `labels`"):
        ec.remove_small_objects(lab, out=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="same shape"):
        ec.remove_small_objects(lab, out=np.zeros((2, 3), np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        ec.remove_pancakes(lab, out=[[0, 0], [0, 0]])


def test_axes_and_min_extent_errors():
    lab = np.ones((2, 2), np.int32)
    with pytest.raises(ValueError, match="out of range"):
        ec.remove_pancakes(lab, axes=2)
    with pytest.raises(ValueError, match="repeats axis 1"):
        ec.remove_pancakes(lab, axes=[1, -1])
    with pytest.raises(TypeError, match="`axes` must hold integers"):
        ec.remove_pancakes(lab, axes=[0.5])
    with pytest.raises(ValueError, match="`min_extent` must be >= 0"):
        ec.remove_pancakes(lab, min_extent=-2)
    with pytest.raises(ValueError, match="needs `label_divisor`"):
        ec.remove_pancakes(lab, min_extent={1: 2})
