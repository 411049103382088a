"""Hypothesis property tests of the invariants."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import empanada_proofread as ep

volumes = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.uint32, np.uint64]),
    shape=st.tuples(st.integers(1, 5), st.integers(2, 12), st.integers(2, 12)),
    elements=st.integers(0, 5),
)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _fg_points(labels, seed, n):
    fg = np.argwhere(labels > 0)
    rng = np.random.default_rng(seed)
    return fg[rng.integers(0, len(fg), n)]


def _one_edit(editor, labels, kind, seed):
    pts = _fg_points(labels, seed, 3)
    if kind == 0:
        editor.merge(pts, in_3d=bool(seed % 2))
    elif kind == 1:
        editor.delete(pts[:1], in_3d=bool(seed % 2))
    elif kind == 2:
        editor.split(pts, points_as_markers=True, in_3d=bool(seed % 2))
    elif kind == 3:
        editor.split(pts[:1], min_distance=1)
    elif kind == 4:
        ops = ["dilate", "erode", "open", "close", "fill_holes"]
        editor.morph(operation=ops[seed % 5], radius=1 + seed % 2, in_3d=bool(seed % 2))
    elif kind == 5:
        editor.remove_small(1 + seed % 6, mode=["volume", "slices"][seed % 2])
    else:
        editor.remove_boundary(mode=["volume", "slices"][seed % 2])


@SETTINGS
@given(volumes, st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1000)), max_size=6))
def test_undo_after_any_sequence_restores_bitwise(labels, steps):
    original = labels.copy()
    editor = ep.LabelEditor(labels)
    for kind, seed in steps:
        if not (labels > 0).any():
            break
        try:
            _one_edit(editor, labels, kind, seed)
        except ValueError:  # nothing to merge / split, full dtype: the array is unchanged
            pass
        # the index stays exact after every edit
        fresh = ep.LabelIndex.build(labels)
        np.testing.assert_array_equal(editor.index.ids, fresh.ids)
        np.testing.assert_array_equal(editor.index.sizes, fresh.sizes)
    after = labels.copy()
    while editor.can_undo:
        editor.undo()
    np.testing.assert_array_equal(labels, original)
    assert labels.dtype == original.dtype
    while editor.can_redo:
        editor.redo()
    np.testing.assert_array_equal(labels, after)


@SETTINGS
@given(volumes, st.integers(0, 1000), st.integers(0, 2))
def test_in_3d_false_touches_one_slice(labels, seed, axis):
    if not (labels > 0).any():
        return
    before = labels.copy()
    pts = _fg_points(labels, seed, 2)
    pts[:, axis] = pts[0, axis]
    pts = pts[labels[tuple(pts.T)] > 0]
    for op in (ep.delete_labels, ep.merge_labels):
        try:
            op(labels, pts, in_3d=False, axis=axis)
        except ValueError:
            continue
        changed = np.argwhere(labels != before)
        assert (changed[:, axis] == pts[0, axis]).all()


@SETTINGS
@given(volumes, st.integers(1, 3), st.booleans(), st.sampled_from(["dilate", "close",
                                                                    "fill_holes"]))
def test_growth_never_changes_another_labels_voxels(labels, radius, in_3d, operation):
    ids = np.unique(labels[labels > 0])
    if ids.size == 0:
        return
    before = labels.copy()
    target = [int(ids[0])]
    ep.morph_labels(labels, target, operation=operation, radius=radius, in_3d=in_3d)
    changed = labels != before
    assert (before[changed] == 0).all()
    assert (labels[changed] == target[0]).all()
    ep.morph_labels(labels, operation=operation, radius=radius, in_3d=in_3d)  # every label
    kept = before != 0
    np.testing.assert_array_equal(labels[kept], before[kept])


@SETTINGS
@given(volumes, st.integers(0, 1000))
def test_numpy_and_zarr_agree(labels, seed):
    import pytest

    zarr = pytest.importorskip("zarr")
    if not (labels > 0).any():
        return
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=labels.shape, chunks=(2, 5, 3),
                          dtype=labels.dtype, fill_value=0)
    z[...] = labels
    for kind in range(7):
        results = []
        snapshot = labels.copy()
        if not (snapshot > 0).any():
            break
        for arr in (labels, z):
            editor = ep.LabelEditor(arr)
            try:
                _one_edit(editor, snapshot, kind, seed)
                results.append("ok")
            except ValueError as err:
                results.append(str(err))
        assert results[0] == results[1]
        np.testing.assert_array_equal(labels, z[...])


@SETTINGS
@given(volumes)
def test_index_matches_object_stats(labels):
    import empanada_core as ec

    index = ep.LabelIndex.build(labels)
    stats = ec.object_stats(labels)
    np.testing.assert_array_equal(index.ids, stats.ids.astype(np.uint64))
    np.testing.assert_array_equal(index.sizes, stats.sizes)
    np.testing.assert_array_equal(index.bbox_min, stats.bbox_min)
    np.testing.assert_array_equal(index.bbox_max, stats.bbox_max)


@SETTINGS
@given(st.integers(0, 10_000), st.booleans())
def test_merge_then_split_with_points_recovers_separate_objects(seed, in_3d):
    rng = np.random.default_rng(seed)
    labels = np.zeros((4, 16, 24), np.uint32)
    # two disjoint boxes of random size, a gap of at least one voxel between them
    w1, w2 = rng.integers(2, 10), rng.integers(2, 10)
    labels[:, 2:2 + rng.integers(3, 12), 1:1 + w1] = 5
    labels[:, 3:3 + rng.integers(3, 12), 2 + w1:2 + w1 + w2] = 9
    original = labels.copy()
    pa = np.argwhere(labels == 5)[rng.integers(0, (labels == 5).sum())]
    pb = np.argwhere(labels == 9)[rng.integers(0, (labels == 9).sum())]
    if not in_3d:
        pb[0] = pa[0]
    ep.merge_labels(labels, [pa, pb], in_3d=in_3d)
    ep.split_label(labels, [pa, pb], points_as_markers=True, in_3d=in_3d)
    from empanada_core.testing import assert_same_partition

    if in_3d:
        assert_same_partition(labels, original)
    else:  # the slice is split back into two objects, the other slices never changed
        assert_same_partition(labels[pa[0]], original[pa[0]])
        others = np.arange(labels.shape[0]) != pa[0]
        np.testing.assert_array_equal(labels[others], original[others])
