import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import empanada_core as ec
from empanada_core.testing import assert_same_partition, data_path

DIV = 1000


def slices_of(volume, axis, rng=None, div=DIV, cls=1):
    """Per-slice panoptic ids as 2D postprocessing gives them: renumbered per slice."""
    out = []
    for i in range(volume.shape[axis]):
        s = np.take(volume, i, axis=axis)
        ids = np.unique(s[s > 0])
        perm = rng.permutation(len(ids)) + 1 if rng is not None else np.arange(1, len(ids) + 1)
        lut = np.zeros(int(volume.max()) + 1, np.int64)
        lut[ids] = cls * div + perm
        out.append(lut[s])
    return out


@st.composite
def cuboid_volumes(draw):
    """Non-touching cuboids: every slice of an object overlaps its neighbours fully."""
    shape = tuple(draw(st.integers(4, 12)) for _ in range(3))
    vol = np.zeros(shape, np.int64)
    for k in range(1, draw(st.integers(0, 6)) + 1):
        lo = [draw(st.integers(0, s - 1)) for s in shape]
        hi = [draw(st.integers(lo[a] + 1, shape[a])) for a in range(3)]
        region = tuple(slice(max(a - 1, 0), b + 1) for a, b in zip(lo, hi))
        if vol[region].any():  # keep a gap of one voxel to every other object
            continue
        vol[tuple(slice(a, b) for a, b in zip(lo, hi))] = k
    return vol


@settings(max_examples=60, deadline=None)
@given(vol=cuboid_volumes(), axis=st.integers(0, 2), seed=st.integers(0, 99))
def test_reassembles_volume_along_any_axis(vol, axis, seed):
    rng = np.random.default_rng(seed)
    out = ec.assemble_stack(slices_of(vol, axis, rng), shape=vol.shape, axis=axis,
                            min_size=0, min_extent=0)
    assert_same_partition(out, vol)
    assert out.dtype == np.uint32
    assert set(np.unique(out[out > 0]) // DIV) <= {1}


def test_object_spanning_full_width_along_xz():
    # The original's xz tracker corrupted runs that wrap at the row end.
    vol = np.zeros((5, 4, 6), np.int64)
    vol[1:4, :, :] = 1
    vol[0, 1:3, 2:4] = 0
    out = ec.assemble_stack(slices_of(vol, 1), shape=vol.shape, axis=1, min_size=0, min_extent=0)
    assert_same_partition(out, vol)


def tube(shape, centers, radius):
    vol = np.zeros(shape, bool)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    for z, c in enumerate(centers):
        if c is not None:
            vol[z] |= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= radius ** 2
    return vol


def test_y_shape_becomes_one_object():
    shape = (12, 40, 60)
    left = tube(shape, [(20, 10 + 2 * z) for z in range(12)], 5)
    right = tube(shape, [(20, 50 - 2 * z) for z in range(12)], 5)
    merged = left | right
    slices = [np.where(s, DIV + 1, 0) for s in merged]
    out = ec.assemble_stack(slices, shape=shape, min_size=0, min_extent=0)
    assert len(np.unique(out)) == 2  # one object + background


def test_split_is_joined_by_ioa():
    shape = (6, 20, 20)
    vol = np.zeros(shape, np.int64)
    vol[:3, 5:15, 5:15] = 1
    vol[3:, 5:15, 5:9] = 1
    vol[3:, 5:15, 11:15] = 2
    slices = slices_of(vol, 0)
    out = ec.assemble_stack(slices, shape=shape, min_size=0, min_extent=0)
    assert len(np.unique(out)) == 2


def test_gap_breaks_the_track():
    shape = (5, 10, 10)
    vol = np.zeros(shape, np.int64)
    vol[[0, 1, 3, 4], 2:6, 2:6] = 1
    out = ec.assemble_stack(slices_of(vol, 0), shape=shape, min_size=0, min_extent=0)
    assert len(np.unique(out)) == 3


def test_small_shift_keeps_identity_and_far_jump_does_not():
    shape = (4, 30, 30)
    vol = np.zeros(shape, np.int64)
    vol[0, 5:15, 5:15] = 1
    vol[1, 7:17, 7:17] = 1  # IoU 0.47
    vol[2, 19:29, 19:29] = 1  # disjoint from slice 1
    out = ec.assemble_stack(slices_of(vol, 0), shape=shape, min_size=0, min_extent=0)
    assert out[0, 10, 10] == out[1, 10, 10] != out[2, 20, 20] > 0


def test_size_and_extent_filters():
    shape = (6, 20, 20)
    vol = np.zeros(shape, np.int64)
    vol[:, 1:5, 1:5] = 1  # 96 voxels, extent 6, 4, 4
    vol[:2, 10:18, 10:18] = 2  # 128 voxels, extent 2 in z
    vol[:, 10:12, 1:9] = 3  # 96 voxels, extent 2 in y
    kw = dict(shape=shape)
    out = ec.assemble_stack(slices_of(vol, 0), min_size=100, min_extent=0, **kw)
    assert_same_partition(out, np.where(vol == 2, 2, 0))
    out = ec.assemble_stack(slices_of(vol, 0), min_size=0, min_extent=3, **kw)
    assert_same_partition(out, np.where(vol == 1, 1, 0))


def test_result_stats_and_sequential_ids():
    shape = (6, 20, 20)
    vol = np.zeros(shape, np.int64)
    vol[1:4, 2:5, 3:9] = 1
    vol[:, 10:20, 10:12] = 2
    out = np.zeros(shape, np.uint32)
    asm = ec.StackAssembler(out, min_size=0, min_extent=0)
    for s in slices_of(vol, 0):
        asm.push(s)
    res = asm.finish()
    assert sorted(res.ids.tolist()) == [1001, 1002]
    by_id = dict(zip(res.ids.tolist(), zip(res.sizes, res.bbox_min.tolist(), res.bbox_max.tolist())))
    first = out[1, 2, 3]
    assert by_id[int(first)] == (54, [1, 2, 3], [4, 5, 9])
    assert res.counts == {1: 2}


def test_bbox_in_volume_axes_for_yz():
    vol = np.zeros((6, 7, 8), np.int64)
    vol[1:4, 2:5, 3:8] = 1
    out = np.zeros(vol.shape, np.uint32)
    asm = ec.StackAssembler(out, axis=2, min_size=0, min_extent=0)
    for s in slices_of(vol, 2):
        asm.push(s)
    res = asm.finish()
    assert res.bbox_min.tolist() == [[1, 2, 3]]
    assert res.bbox_max.tolist() == [[4, 5, 8]]


def test_multiclass_and_stuff():
    shape = (4, 10, 10)
    slices = []
    for _ in range(4):
        s = np.zeros(shape[1:], np.int64)
        s[:, :3] = 3 * DIV  # stuff class 3
        s[1:4, 4:6] = 1 * DIV + 7
        s[6:9, 6:9] = 2 * DIV + 2
        slices.append(s)
    out = ec.assemble_stack(slices, shape=shape, thing_list=[1, 2], min_size=0, min_extent=0)
    assert np.unique(out).tolist() == [0, 1001, 2001, 3000]


def test_thing_classes_do_not_link_across_classes():
    shape = (2, 6, 6)
    a = np.zeros(shape[1:], np.int64)
    a[1:5, 1:5] = DIV + 1
    b = np.where(a > 0, 2 * DIV + 1, 0)
    out = ec.assemble_stack([a, b], shape=shape, thing_list=[1, 2], min_size=0, min_extent=0)
    assert np.unique(out).tolist() == [0, 1001, 2001]


def test_without_force_connected_keeps_disconnected_pieces_together():
    s = np.zeros((6, 6), np.int64)
    s[0, 0] = s[5, 5] = DIV + 1
    out = ec.assemble_stack([s], shape=(1, 6, 6), force_connected=False, min_size=0, min_extent=0)
    assert out[0, 0, 0] == out[0, 5, 5] == 1001
    out = ec.assemble_stack([s], shape=(1, 6, 6), min_size=0, min_extent=0)
    assert out[0, 0, 0] != out[0, 5, 5]


def test_overflow_raises_or_drops_smallest():
    div = 3  # room for 2 objects per class
    s = np.array([[0, 4, 4, 0, 4, 0, 4, 4, 4]])  # class 1: pieces of 2, 1 and 3 pixels
    with pytest.raises(ValueError, match="raise `label_divisor`"):
        ec.assemble_stack([s], shape=(1, 1, 9), label_divisor=div, min_size=0, min_extent=0)
    out = ec.assemble_stack([s], shape=(1, 1, 9), label_divisor=div, min_size=0, min_extent=0,
                            on_overflow="drop")
    assert out[0, 0, 4] == 0
    assert out[0, 0, 1] != out[0, 0, 6]
    assert sorted(np.unique(out).tolist()) == [0, 4, 5]


def test_empty_stack():
    out = ec.assemble_stack([np.zeros((3, 3), np.uint8)] * 2, shape=(2, 3, 3))
    assert not out.any()


def test_zarr_output():
    zarr = pytest.importorskip("zarr")
    vol = np.zeros((5, 8, 8), np.int64)
    vol[:, 2:6, 2:6] = 1
    z = zarr.create_array(store={}, shape=vol.shape, chunks=(2, 4, 4), dtype="uint32")
    ec.assemble_stack(slices_of(vol, 1), out=z, axis=1, min_size=0, min_extent=0)
    assert_same_partition(z[:], vol)


class TestErrors:
    def test_wrong_slice_shape(self):
        asm = ec.StackAssembler(np.zeros((2, 3, 3), np.uint32))
        with pytest.raises(ValueError, match="must have shape \\(3, 3\\)"):
            asm.push(np.zeros((3, 4), np.int64))

    def test_float_slice(self):
        asm = ec.StackAssembler(np.zeros((2, 3, 3), np.uint32))
        with pytest.raises(TypeError, match="integer panoptic ids"):
            asm.push(np.zeros((3, 3)))

    def test_negative_ids(self):
        asm = ec.StackAssembler(np.zeros((2, 3, 3), np.uint32))
        with pytest.raises(ValueError, match="negative ids"):
            asm.push(-np.ones((3, 3), np.int64))

    def test_too_many_and_too_few_slices(self):
        asm = ec.StackAssembler(np.zeros((1, 3, 3), np.uint32))
        with pytest.raises(ValueError, match="only 0 of 1 slices"):
            asm.finish()
        asm.push(np.zeros((3, 3), np.int64))
        with pytest.raises(ValueError, match="already pushed"):
            asm.push(np.zeros((3, 3), np.int64))

    def test_bad_out(self):
        with pytest.raises(TypeError, match="`out` must be 3D"):
            ec.StackAssembler(np.zeros((3, 3), np.uint32))
        with pytest.raises(TypeError, match="integer dtype"):
            ec.StackAssembler(np.zeros((1, 3, 3)))

    def test_bad_axis_and_threshold(self):
        with pytest.raises(ValueError, match="`axis`"):
            ec.StackAssembler(np.zeros((1, 3, 3), np.uint32), axis=3)
        with pytest.raises(ValueError, match="merge_iou_thr"):
            ec.StackAssembler(np.zeros((1, 3, 3), np.uint32), merge_iou_thr=2)

    def test_output_dtype_too_small(self):
        s = np.zeros((40, 40), np.int64)
        s[::2, ::2] = 3  # 400 separate pieces of class 1 in one slice
        # piece numbers are only written into `out` past the run memory budget
        with pytest.raises(ValueError, match="use a uint64 output"):
            ec.assemble_stack([s], out=np.zeros((1, 40, 40), np.uint8), label_divisor=2,
                              run_memory=0)
        # within it, only the final ids must fit (here every piece is too small to keep)
        out = ec.assemble_stack([s], out=np.zeros((1, 40, 40), np.uint8), label_divisor=2)
        assert not out.any()
        with pytest.raises(ValueError, match="does not fit the output dtype"):
            ec.assemble_stack([np.full((4, 4), DIV + 1)], out=np.zeros((1, 4, 4), np.uint8),
                              min_size=0, min_extent=0)

    def test_plain_instance_labels_are_refused(self):
        with pytest.raises(ValueError, match="add label_divisor to the non-zero ids"):
            ec.assemble_stack([np.full((4, 4), 3)], shape=(1, 4, 4))

    def test_missing_shape(self):
        with pytest.raises(ValueError, match="give `out` or `shape`"):
            ec.assemble_stack([])


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["lucchi_epfl_hippocampus", "drosophila_vnc_sstem"])
def test_golden_real_instances(name):
    """Assembling the per-slice ground truth reproduces the 3D ground truth.

    Measured: Lucchi (isotropic FIB-SEM) 32 of 32 objects exactly; Drosophila VNC
    (50 nm ssTEM sections) 53 objects for 47 true ones, every object inside one true
    object (splits only, where profiles in consecutive sections overlap little).
    """
    tifffile = pytest.importorskip("tifffile")
    folder = data_path(name)
    i2 = tifffile.imread(folder / "mito_instances_2d.tif")
    i3 = tifffile.imread(folder / "mito_instances_3d.tif")
    slices = [np.where(s > 0, DIV + s.astype(np.int64), 0) for s in i2]
    out = ec.assemble_stack(slices, shape=i2.shape, min_size=0, min_extent=0)
    n_true = len(np.unique(i3)) - 1
    n_ours = len(np.unique(out)) - 1
    # every predicted object lies inside one true object (no false merges)
    both = (out > 0) | (i3 > 0)
    pairs = np.unique(out[both].astype(np.int64) * 2**20 + i3[both])
    assert len(pairs) == n_ours
    if name == "lucchi_epfl_hippocampus":
        assert_same_partition(out, i3)
    else:
        assert n_true <= n_ours <= n_true * 1.2


# -- the row-run machinery ---------------------------------------------------------------
@st.composite
def small_label_images(draw):
    """Random label images with few values, so that equal values touch often."""
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    values = draw(st.lists(st.integers(0, 3), min_size=h * w, max_size=h * w))
    return np.array(values, dtype=np.int64).reshape(h, w)


@settings(max_examples=150, deadline=None)
@given(image=small_label_images())
def test_pieces_from_runs_equal_pixel_connected_components(image):
    from skimage.measure import label

    out = np.zeros((1,) + image.shape, np.uint32)
    asm = ec.StackAssembler(out, label_divisor=DIV, min_size=0, min_extent=0)
    asm.push(np.where(image > 0, DIV + image, 0))
    asm.finish()
    # equal-valued 8-connected regions, exactly as skimage labels them
    assert_same_partition(out[0], label(image, background=0, connectivity=2))


@settings(max_examples=100, deadline=None)
@given(a=small_label_images(), shift=st.integers(-2, 2))
def test_overlaps_from_runs_equal_pixel_overlaps(a, shift):
    from empanada_core._stack import _row_runs, _run_overlaps

    b = np.roll(a, shift, axis=1)
    buf_a = np.zeros((a.shape[0], a.shape[1] + 1), a.dtype)
    buf_b = buf_a.copy()
    sa, ea, va = _row_runs(a, buf_a)
    sb, eb, vb = _row_runs(b, buf_b)
    cur, prev, shared = _run_overlaps(sb, eb, sa, ea)
    # shared pixels per value pair, from runs and from pixels
    got = {}
    for c, p, n in zip(vb[cur], va[prev], shared):
        got[(int(p), int(c))] = got.get((int(p), int(c)), 0) + int(n)
    both = (a > 0) & (b > 0)
    pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    assert got == {(int(p), int(c)): int(n) for (p, c), n in zip(pairs.T, counts)}


@pytest.mark.parametrize("run_memory", [0, 300, 2**28])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_run_memory_budget_gives_the_same_volume(run_memory, axis):
    """Slices kept as runs, written as piece numbers, or a mix: one result."""
    rng = np.random.default_rng(axis)
    vol = np.zeros((9, 20, 24), np.int64)
    for k in range(1, 12):
        z, y, x = rng.integers(0, 6), rng.integers(0, 14), rng.integers(0, 18)
        vol[z : z + 4, y : y + 6, x : x + 6] = k  # later boxes overwrite: touching objects
    slices = slices_of(vol, axis, rng)
    ref = ec.assemble_stack(slices, shape=vol.shape, axis=axis, min_size=0, min_extent=0)
    for blank in (True, False):
        out = np.zeros(vol.shape, np.uint32) if blank else np.full(vol.shape, 7, np.uint32)
        asm = ec.StackAssembler(out, axis=axis, min_size=0, min_extent=0,
                                run_memory=run_memory, out_is_blank=blank)
        for s in slices:
            asm.push(s)
        asm.finish()
        np.testing.assert_array_equal(out, ref)


def test_run_memory_must_be_non_negative():
    with pytest.raises(ValueError, match="run_memory"):
        ec.StackAssembler(np.zeros((1, 3, 3), np.uint32), run_memory=-1)
