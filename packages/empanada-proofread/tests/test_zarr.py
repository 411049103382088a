"""zarr-backed labels: same results as numpy, and only the chunks an edit touches."""

import numpy as np
import pytest

import empanada_proofread as ep


@pytest.fixture
def scene(make_blobs):
    return make_blobs(shape=(16, 64, 64), n=10, seed=7)


def chunks_of_box(lo, hi, chunks):
    first = [lo_ // c for lo_, c in zip(lo, chunks)]
    last = [(hi_ - 1) // c for hi_, c in zip(hi, chunks)]
    return {tuple(i) for i in np.ndindex(*[b - a + 1 for a, b in zip(first, last)])
            for i in [tuple(a + j for a, j in zip(first, i))]}


def test_delete_touches_only_the_objects_chunks(scene, make_zarr, key_of):
    chunks = (4, 16, 16)
    z, store = make_zarr(scene, chunks, counting=True)
    ep.label_index(z)  # the one sweep
    store.reset()
    target = 3
    coords = np.argwhere(scene == target)
    lo, hi = coords.min(0), coords.max(0) + 1
    ep.delete_labels(z, [coords[0]])
    box_chunks = {key_of(c) for c in chunks_of_box(lo, hi, chunks)}
    holding = {key_of(c) for c in np.unique(coords // np.array(chunks), axis=0)}
    total = int(np.prod([s // c for s, c in zip(scene.shape, chunks)]))
    assert set(store.reads) <= box_chunks
    assert set(store.writes) == holding  # exactly the chunks holding a voxel of the object
    assert len(store.writes) == len(set(store.writes))  # each written once
    assert len(box_chunks) < total / 4
    expected = scene.copy()
    expected[scene == target] = 0
    np.testing.assert_array_equal(z[...], expected)


def test_locate_reads_only_the_objects_box(scene, make_zarr, key_of):
    chunks = (4, 16, 16)
    z, store = make_zarr(scene, chunks, counting=True)
    ep.label_index(z)
    store.reset()
    coords = np.argwhere(scene == 5)
    loc = ep.locate_label(z, 5)
    box_chunks = {key_of(c) for c in chunks_of_box(coords.min(0), coords.max(0) + 1, chunks)}
    assert set(store.reads) <= box_chunks
    assert not store.writes
    assert loc.first_slice == coords[:, 0].min()


def test_undo_writes_only_changed_chunks(scene, make_zarr, key_of):
    chunks = (4, 16, 16)
    z, store = make_zarr(scene, chunks, counting=True)
    editor = ep.LabelEditor(z)
    coords = np.argwhere(scene == 2)
    editor.delete([coords[0]])
    store.reset()
    editor.undo()
    holding = {key_of(c) for c in np.unique(coords // np.array(chunks), axis=0)}
    assert set(store.writes) == holding
    np.testing.assert_array_equal(z[...], scene)


def run_all(labels, pts):
    edits = [
        lambda: ep.merge_labels(labels, pts[:2]),
        lambda: ep.split_label(labels, pts[:2], points_as_markers=True),
        lambda: ep.morph_labels(labels, operation="dilate", radius=1),
        lambda: ep.morph_labels(labels, [int(np.asarray(labels[tuple(pts[2])]))],
                                operation="erode"),
        lambda: ep.delete_labels(labels, pts[3:4], in_3d=False),
        lambda: ep.remove_small_labels(labels, 30, mode="slices"),
        lambda: ep.remove_boundary_labels(labels),
    ]
    return [e() for e in edits]


def test_numpy_and_zarr_give_identical_results(scene, make_zarr):
    rng = np.random.default_rng(1)
    fg = np.argwhere(scene > 0)
    ids = np.unique(scene[scene > 0])
    pts = np.array([fg[scene[tuple(fg.T)] == i][rng.integers(0, (scene == i).sum())]
                    for i in ids[:4]])
    numpy_labels = scene.copy()
    z, _ = make_zarr(scene, (5, 13, 17))
    a = run_all(numpy_labels, pts)
    b = run_all(z, pts)
    np.testing.assert_array_equal(numpy_labels, z[...])
    for ea, eb in zip(a, b):
        assert ea.ids == eb.ids
        assert ea.new_ids == eb.new_ids
        np.testing.assert_array_equal(ea.record.flat, eb.record.flat)
    counts_a = ep.count_labels(numpy_labels, mode="slices").columns
    counts_b = ep.count_labels(z, mode="slices").columns
    for key in counts_a:
        np.testing.assert_array_equal(counts_a[key], counts_b[key])


def test_failed_write_rolls_back(scene, make_zarr):
    z, store = make_zarr(scene, (4, 16, 16), counting=True)
    ep.label_index(z)
    inner_set = type(store).set
    calls = {"n": 0}

    async def failing_set(self, key, value):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return await inner_set(self, key, value)

    target = np.argwhere(scene == 1)
    type(store).set = failing_set
    try:
        with pytest.raises(OSError, match="disk full"):
            ep.morph_labels(z, operation="dilate", radius=2)
    finally:
        type(store).set = inner_set
    np.testing.assert_array_equal(z[...], scene)
    ep.delete_labels(z, [target[0]])  # the index is still right after the rollback
    assert not (z[...] == 1).any()


def test_filters_write_into_a_new_zarr_array(scene, make_zarr):
    z, _ = make_zarr(scene, (4, 16, 16))
    out, _ = make_zarr(np.zeros_like(scene), (4, 16, 16))
    edit = ep.remove_boundary_labels(z, out=out)
    np.testing.assert_array_equal(z[...], scene)
    assert edit.ids
    assert not np.isin(out[...], edit.ids).any()
    assert ep.label_index(out).ids.tolist() == sorted(set(np.unique(out[...])) - {0})
