import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import label as sk_label

import empanada_core as ec

try:
    import torch

    from empanada_core import _panoptic_torch as pt
except ImportError:  # pragma: no cover - core alone
    torch = pt = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (core alone)")


def synthetic_outputs(size=64, n=6, seed=0, stride=4):
    """Discs with matching centre heatmap and offsets on a 1/stride grid."""
    rng = np.random.default_rng(seed)
    sem = np.full((1, size, size), 0.05, np.float32)
    g = size // stride
    ctr = np.zeros((g, g), np.float32)
    off = np.zeros((2, g, g), np.float32)
    yy, xx = np.mgrid[:g, :g] * stride
    for _ in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(4, 8)
        full = (np.mgrid[:size, :size][0] - cy) ** 2 + (np.mgrid[:size, :size][1] - cx) ** 2 <= r * r
        sem[0][full] = 0.9
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + stride) ** 2
        off[0][inside] = cy - yy[inside]
        off[1][inside] = cx - xx[inside]
        ctr[cy // stride, cx // stride] = 1.0
    return sem, ctr, off


def reference_group(centers, offsets, stride):
    """Brute force nearest centre for every pixel (the original's definition)."""
    h, w = offsets.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    loc = np.stack([stride * yy + offsets[0], stride * xx + offsets[1]], -1).reshape(-1, 1, 2)
    d = ((loc - stride * centers[None].astype(float)) ** 2).sum(-1)
    return (d.argmin(1) + 1).reshape(h, w)


def reference_merge(sem, ins, div, things, stuff_area):
    """The original's loop over instances, written plainly."""
    pan = np.zeros(sem.shape, np.int64)
    thing = np.isin(sem, things)
    counter = {}
    for i in np.unique(ins):
        if i == 0:
            continue
        m = (ins == i) & thing
        if not m.any():
            continue
        c = np.bincount(sem[m]).argmax()
        n = counter.get(c, 1)
        counter[c] = n + 1
        pan[m] = c * div + n
    for c in np.unique(sem):
        if c in things:
            continue
        m = (sem == c) & (ins == 0)
        if m.sum() >= stuff_area:
            pan[m] = c * div
    return pan


class TestHarden:
    def test_binary_uses_greater_or_equal(self):
        assert ec.harden_semantic(np.array([[0.49, 0.5, 0.51]]), confidence_thr=0.5).tolist() == [
            [0, 1, 1]
        ]

    def test_multiclass_argmax(self):
        sem = np.array([[[0.1, 0.7]], [[0.8, 0.1]], [[0.1, 0.2]]])
        assert ec.harden_semantic(sem).tolist() == [[1, 0]]

    def test_nan_raises(self):
        with pytest.raises(ValueError, match="`sem` contains NaN"):
            ec.harden_semantic(np.array([[np.nan]]))

    def test_bad_threshold(self):
        with pytest.raises(ValueError, match="confidence_thr"):
            ec.harden_semantic(np.zeros((2, 2)), confidence_thr=1.5)

    def test_wrong_ndim(self):
        with pytest.raises(TypeError, match="`sem` must be 2D or 3D"):
            ec.harden_semantic(np.zeros((1, 1, 2, 2)))


class TestCenters:
    def test_threshold_is_strict(self):
        hmp = np.zeros((5, 5), np.float32)
        hmp[2, 2] = 0.1
        assert len(ec.find_instance_centers(hmp, threshold=0.1)) == 0
        hmp[2, 2] = 0.11
        assert ec.find_instance_centers(hmp, threshold=0.1).tolist() == [[2, 2]]

    def test_plateau_gives_every_maximum(self):
        hmp = np.zeros((5, 5), np.float32)
        hmp[2, 2] = hmp[2, 3] = 0.8
        assert ec.find_instance_centers(hmp).tolist() == [[2, 2], [2, 3]]

    def test_plateau_one_keeps_its_first_pixel(self):
        hmp = np.zeros((8, 8), np.float32)
        hmp[2, 2] = hmp[2, 3] = hmp[3, 3] = 0.8  # one flat maximum of three pixels
        hmp[6, 6] = 0.5
        assert ec.find_instance_centers(hmp, plateaus="one").tolist() == [[2, 2], [6, 6]]

    def test_plateau_option_is_checked(self):
        with pytest.raises(ValueError, match="plateaus"):
            ec.find_instance_centers(np.zeros((4, 4)), plateaus="first")

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2**31 - 1), kernel=st.sampled_from([1, 3, 5]),
           levels=st.integers(2, 12))
    def test_plateau_one_is_a_subset_without_neighbouring_centres(self, seed, kernel, levels):
        # coarse levels make many exact ties, as in bf16 heatmaps
        rng = np.random.default_rng(seed)
        hmp = (rng.integers(0, levels, (17, 23)) / levels).astype(np.float32)
        every = {tuple(c) for c in ec.find_instance_centers(hmp, nms_kernel=kernel).tolist()}
        one = ec.find_instance_centers(hmp, nms_kernel=kernel, plateaus="one")
        assert {tuple(c) for c in one.tolist()} <= every
        if len(one) > 1:
            gap = np.abs(one[:, None, :] - one[None, :, :]).max(-1)
            np.fill_diagonal(gap, kernel)
            assert gap.min() > kernel // 2  # no two kept centres share a window
        if torch is None:
            return  # core alone: the torch implementation is not installed
        theirs = pt.find_instance_centers(torch.from_numpy(hmp), nms_kernel=kernel,
                                          plateaus="one")
        np.testing.assert_array_equal(one, theirs.numpy())

    def test_plateau_one_changes_nothing_without_ties(self):
        hmp = np.random.default_rng(3).random((40, 40)).astype(np.float32)
        np.testing.assert_array_equal(ec.find_instance_centers(hmp, plateaus="one"),
                                      ec.find_instance_centers(hmp))

    def test_kernel_suppresses_neighbours(self):
        hmp = np.zeros((9, 9), np.float32)
        hmp[4, 4], hmp[4, 6] = 1.0, 0.9
        assert ec.find_instance_centers(hmp, nms_kernel=3).tolist() == [[4, 4], [4, 6]]
        assert ec.find_instance_centers(hmp, nms_kernel=5).tolist() == [[4, 4]]

    def test_top_k_keeps_strongest_in_raster_order(self):
        hmp = np.zeros((9, 9), np.float32)
        hmp[0, 0], hmp[4, 4], hmp[8, 8] = 0.5, 0.9, 0.7
        assert ec.find_instance_centers(hmp, top_k=2).tolist() == [[4, 4], [8, 8]]

    @needs_torch
    @pytest.mark.parametrize("kernel", [1, 2, 3, 4, 7])
    def test_matches_torch_max_pool(self, kernel):
        rng = np.random.default_rng(kernel)
        hmp = rng.random((23, 31)).astype(np.float32)
        ours = ec.find_instance_centers(hmp, threshold=0.3, nms_kernel=kernel)
        theirs = pt.find_instance_centers(torch.from_numpy(hmp), threshold=0.3, nms_kernel=kernel)
        np.testing.assert_array_equal(ours, theirs.numpy())


class TestGroupPixels:
    @pytest.mark.parametrize("stride", [1, 4])
    def test_equals_brute_force(self, stride):
        rng = np.random.default_rng(stride)
        offsets = rng.normal(0, 5, (2, 20, 24)).astype(np.float32)
        centers = np.argwhere(rng.random((20, 24)) > 0.93)
        got = ec.group_pixels(centers, offsets, center_stride=stride)
        np.testing.assert_array_equal(got, reference_group(centers, offsets, stride))

    def test_mask_restricts_and_no_centres_gives_zero(self):
        offsets = np.zeros((2, 4, 4), np.float32)
        mask = np.zeros((4, 4), bool)
        mask[0, 0] = True
        got = ec.group_pixels(np.array([[3, 3]]), offsets, mask=mask)
        assert got.sum() == 1
        assert got[0, 0] == 1
        assert not ec.group_pixels(np.zeros((0, 2), int), offsets).any()

    def test_tie_goes_to_lower_index(self):
        offsets = np.zeros((2, 1, 3), np.float32)
        assert ec.group_pixels(np.array([[0, 0], [0, 2]]), offsets)[0, 1] == 1

    @pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
    def test_many_way_tie_goes_to_lowest_index(self, order):
        # the centre pixel (2, 2) is equally far from four centres
        ring = np.array([[0, 2], [2, 0], [2, 4], [4, 2]])[order]
        offsets = np.zeros((2, 5, 5), np.float32)
        got = ec.group_pixels(ring, offsets)
        assert got[2, 2] == 1
        np.testing.assert_array_equal(got, reference_group(ring, offsets, 1))

    def test_ties_on_a_regular_grid_equal_brute_force(self):
        # zero offsets and centres on a lattice: many pixels tie 2, 3 or 4 ways
        centers = np.argwhere(np.ones((4, 4), bool)) * 4
        offsets = np.zeros((2, 16, 16), np.float32)
        got = ec.group_pixels(centers[::-1].copy(), offsets)
        np.testing.assert_array_equal(got, reference_group(centers[::-1], offsets, 1))

    def test_bad_offsets(self):
        with pytest.raises(ValueError, match="2 channels"):
            ec.group_pixels(np.zeros((1, 2)), np.zeros((3, 4, 4)))

    @needs_torch
    def test_torch_equals_numpy(self):
        rng = np.random.default_rng(3)
        offsets = rng.normal(0, 5, (2, 20, 24)).astype(np.float32)
        centers = np.argwhere(rng.random((20, 24)) > 0.93)
        mask = rng.random((20, 24)) > 0.3
        a = ec.group_pixels(centers, offsets, center_stride=4, mask=mask)
        b = pt.group_pixels(torch.from_numpy(centers), torch.from_numpy(offsets), center_stride=4,
                            mask=torch.from_numpy(mask))
        np.testing.assert_array_equal(a, b.numpy())


class TestMerge:
    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 10_000), stuff_area=st.integers(0, 6))
    def test_equals_reference_loop(self, seed, stuff_area):
        rng = np.random.default_rng(seed)
        sem = rng.integers(0, 4, (9, 11))
        ins = rng.integers(0, 6, (9, 11))
        things = [1, 3]
        ins = ins * np.isin(sem, things)
        got = ec.merge_semantic_and_instance(
            sem, ins, label_divisor=100, thing_list=things, stuff_area=stuff_area
        )
        np.testing.assert_array_equal(got, reference_merge(sem, ins, 100, things, stuff_area))

    def test_stuff_area_edge(self):
        sem = np.zeros((8, 8), np.uint8)
        sem.flat[:64] = 2
        assert (ec.merge_semantic_and_instance(sem, np.zeros_like(sem), thing_list=[1]) == 2000).all()
        sem.flat[63] = 0
        assert not ec.merge_semantic_and_instance(
            sem, np.zeros_like(sem), thing_list=[1]
        ).any()

    def test_overflow_raises_with_advice(self):
        sem = np.ones((1, 5), np.uint8)
        cells = np.arange(1, 6)[None]
        with pytest.raises(ValueError, match="raise `label_divisor`"):
            ec.merge_semantic_and_instance(sem, cells, label_divisor=4)

    def test_overflow_drop_keeps_largest(self):
        sem = np.ones((1, 7), np.uint8)
        cells = np.array([[1, 2, 2, 3, 3, 3, 4]])
        got = ec.merge_semantic_and_instance(sem, cells, label_divisor=3, on_overflow="drop")
        assert got.tolist() == [[0, 4, 4, 5, 5, 5, 0]]

    def test_bad_policy(self):
        with pytest.raises(ValueError, match="on_overflow"):
            ec.merge_semantic_and_instance(np.ones((2, 2), int), np.ones((2, 2), int),
                                           on_overflow="wrap")

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same shape"):
            ec.merge_semantic_and_instance(np.ones((2, 2), int), np.ones((2, 3), int))

    def test_float_input(self):
        with pytest.raises(TypeError, match="harden probabilities first"):
            ec.merge_semantic_and_instance(np.ones((2, 2)), np.ones((2, 2), int))

    def test_small_divisor(self):
        with pytest.raises(ValueError, match="label_divisor"):
            ec.merge_semantic_and_instance(np.ones((2, 2), int), np.ones((2, 2), int),
                                           label_divisor=1)

    @needs_torch
    def test_torch_equals_numpy(self):
        rng = np.random.default_rng(0)
        sem = rng.integers(0, 4, (30, 30))
        ins = rng.integers(0, 9, (30, 30)) * np.isin(sem, [1, 2])
        kw = dict(label_divisor=50, thing_list=[1, 2], stuff_area=5)
        a = ec.merge_semantic_and_instance(sem, ins, **kw)
        b = pt.merge_semantic_and_instance(torch.from_numpy(sem), torch.from_numpy(ins), **kw)
        np.testing.assert_array_equal(a, b.numpy())


class TestSplitConnected:
    @settings(max_examples=40, deadline=None)
    @given(seed=st.integers(0, 10_000))
    def test_pieces_are_connected_and_ordered(self, seed):
        rng = np.random.default_rng(seed)
        pan = rng.choice([0, 1001, 1002, 2001, 3000], size=(12, 12))
        out = ec.split_connected_instances(pan, label_divisor=1000, thing_list=[1, 2])
        assert ((out == 3000) == (pan == 3000)).all()  # stuff untouched
        for c in (1, 2):
            comps = sk_label(np.where(pan // 1000 == c, pan, 0), connectivity=2)
            ids = np.where(out // 1000 == c, out % 1000, 0)
            np.testing.assert_array_equal(ids, comps)

    @needs_torch
    @settings(max_examples=25, deadline=None)
    @given(seed=st.integers(0, 10_000))
    def test_torch_equals_numpy(self, seed):
        rng = np.random.default_rng(seed)
        pan = rng.choice([0, 1001, 1002, 2001], size=(16, 13), p=[0.4, 0.3, 0.2, 0.1])
        a = ec.split_connected_instances(pan, label_divisor=1000, thing_list=[1, 2])
        b = pt.split_connected_instances(torch.from_numpy(pan), label_divisor=1000,
                                         thing_list=[1, 2])
        np.testing.assert_array_equal(a, b.numpy())

    @needs_torch
    def test_torch_long_snake(self):
        pan = np.zeros((40, 40), np.int64)
        pan[::4, 1:-1] = 1001
        pan[1::4, -2] = pan[2::4, -2] = pan[3::4, 1] = pan[3::4, 1] = 1001
        pan[2::8, 1] = pan[3::8, 1] = 0
        a = ec.split_connected_instances(pan, label_divisor=1000)
        b = pt.split_connected_instances(torch.from_numpy(pan), label_divisor=1000)
        np.testing.assert_array_equal(a, b.numpy())


class TestPostprocess:
    def test_recovers_discs(self):
        sem, ctr, off = synthetic_outputs(size=96, n=5, seed=1)
        pan = ec.panoptic_postprocess(sem, ctr, off, label_divisor=1000, stuff_area=1)
        truth = sk_label(sem[0] > 0.5, connectivity=2)
        # Every object lies inside the semantic mask and no ids leave class 1's range.
        assert ((pan > 0) == (sem[0] > 0.5)).all()
        assert pan.max() < 2000
        assert pan[pan > 0].min() > 1000
        assert len(np.unique(pan)) - 1 >= truth.max()

    def test_semantic_only_has_no_instances(self):
        sem, ctr, off = synthetic_outputs()
        pan = ec.panoptic_postprocess(sem, ctr, off, semantic_only=True, stuff_area=1)
        assert set(np.unique(pan)) <= {0, 1000}

    def test_crop_and_dtype(self):
        sem, ctr, off = synthetic_outputs(size=64)
        pan = ec.panoptic_postprocess(sem, ctr, off, out_shape=(50, 61))
        assert pan.shape == (50, 61)
        assert pan.dtype == np.uint32

    def test_fine_grid(self):
        sem, ctr, off = synthetic_outputs(size=64, stride=1)
        pan = ec.panoptic_postprocess(sem, ctr, off, center_stride=1, nms_kernel=7)
        assert pan.max() > 1000

    def test_grid_that_does_not_divide(self):
        with pytest.raises(ValueError, match="integer factor"):
            ec.panoptic_postprocess(np.zeros((1, 10, 10)), np.zeros((3, 3)), np.zeros((2, 3, 3)))

    def test_offsets_shape(self):
        with pytest.raises(ValueError, match="must be \\(2, \\*ctr_hmp.shape\\)"):
            ec.panoptic_postprocess(np.zeros((1, 8, 8)), np.zeros((2, 2)), np.zeros((2, 3, 3)))

    def test_empty_image(self):
        pan = ec.panoptic_postprocess(np.zeros((1, 8, 8)), np.zeros((2, 2)), np.zeros((2, 2, 2)))
        assert not pan.any()

    def test_object_without_centre_is_void(self):
        sem = np.zeros((1, 8, 8), np.float32)
        sem[0, 2:6, 2:6] = 1
        pan = ec.panoptic_postprocess(sem, np.zeros((2, 2)), np.zeros((2, 2, 2)), stuff_area=1)
        assert not pan.any()

    @needs_torch
    @pytest.mark.parametrize("stride", [1, 4])
    def test_torch_equals_numpy(self, stride):
        sem, ctr, off = synthetic_outputs(size=96, n=7, seed=5, stride=stride)
        kw = dict(center_stride=stride, stuff_area=1, out_shape=(90, 95))
        a = ec.panoptic_postprocess(sem, ctr, off, **kw)
        b = pt.panoptic_postprocess(torch.from_numpy(sem), torch.from_numpy(ctr),
                                    torch.from_numpy(off), **kw)
        assert b.device.type == "cpu"
        np.testing.assert_array_equal(a, b.numpy())


def test_logits_to_probabilities():
    p = ec.logits_to_probabilities(np.array([[[0.0]], [[np.log(3.0)]]]))
    np.testing.assert_allclose(p.ravel(), [0.25, 0.75], rtol=1e-6)


def test_core_import_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, empanada_core as ec;"
        "ec.panoptic_postprocess(np.zeros((1, 8, 8)), np.zeros((2, 2)), np.zeros((2, 2, 2)));"
        "ec.assemble_stack; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0



@needs_torch
def test_cpu_tensors_go_through_numpy_and_come_back_as_tensors():
    sem, ctr, off = synthetic_outputs(size=64, n=4, seed=2)
    a = ec.panoptic_postprocess(sem, ctr, off, stuff_area=1)
    b = ec.panoptic_postprocess(torch.from_numpy(sem), torch.from_numpy(ctr),
                                torch.from_numpy(off), stuff_area=1)
    assert isinstance(b, torch.Tensor)
    assert b.dtype == torch.int64
    np.testing.assert_array_equal(a, b.numpy())
    centers = ec.find_instance_centers(torch.from_numpy(ctr))
    assert isinstance(centers, torch.Tensor)
