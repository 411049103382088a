import numpy as np
import pytest
import torch
from skimage.measure import regionprops

from empanada_train._targets import gaussian_kernel_size, heatmap_and_offsets


def _kernel(sigma):
    """OpenCV's float Gaussian kernel, written out independently."""
    size = int(round(8 * sigma + 1)) | 1
    x = np.arange(size) - size // 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _blur_constant(image, k):
    """Separable convolution with zero border, one row/column at a time."""
    r = len(k) // 2
    padded = np.pad(image.astype(np.float64), r)
    rows = np.stack([np.convolve(row, k, mode="valid") for row in padded])
    return np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T


def _brute_force(mask, sigma):
    heat = np.zeros(mask.shape, np.float64)
    cy_map = np.zeros(mask.shape)
    cx_map = np.zeros(mask.shape)
    for region in regionprops(mask):
        cy, cx = region.centroid
        heat[int(cy), int(cx)] = 1
        cy_map[mask == region.label] = cy
        cx_map[mask == region.label] = cx
    heat = _blur_constant(heat, _kernel(sigma))
    if heat.max() > 0:
        heat /= heat.max()
    rows, cols = np.indices(mask.shape)
    offsets = np.stack([cy_map - rows, cx_map - cols])
    offsets[:, mask == 0] = 0
    return heat[None], offsets


def test_single_square_peak_and_offsets():
    mask = np.zeros((64, 64), np.uint16)
    mask[20:31, 10:21] = 5  # centroid (25, 15)
    heat, off = heatmap_and_offsets(mask)
    assert heat.shape == (1, 64, 64)
    assert off.shape == (2, 64, 64)
    assert heat.dtype == np.float32
    assert off.dtype == np.float32
    assert heat[0, 25, 15] == 1.0
    assert np.unravel_index(heat.argmax(), heat.shape) == (0, 25, 15)
    rows, cols = np.indices(mask.shape)
    inside = mask > 0
    np.testing.assert_allclose((rows + off[0])[inside], 25.0)
    np.testing.assert_allclose((cols + off[1])[inside], 15.0)
    assert not off[:, ~inside].any()


def test_peak_at_truncated_centroid():
    mask = np.zeros((16, 16), np.int32)
    mask[2:4, 6:8] = 1  # centroid (2.5, 6.5): the peak goes to (int(cy), int(cx)) = (2, 6)
    heat, off = heatmap_and_offsets(mask, sigma=1)
    assert heat[0, 2, 6] == 1.0
    np.testing.assert_allclose(off[:, 2, 6], [0.5, 0.5])


def test_two_touching_instances():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 10:30] = 1
    mask[10:30, 30:50] = 2  # touches instance 1
    heat, off = heatmap_and_offsets(mask, sigma=3)
    rows, cols = np.indices(mask.shape)
    for label in (1, 2):
        ys, xs = np.nonzero(mask == label)
        cy, cx = ys.mean(), xs.mean()
        sel = mask == label
        np.testing.assert_allclose((rows + off[0])[sel], cy, atol=1e-4)
        np.testing.assert_allclose((cols + off[1])[sel], cx, atol=1e-4)
        assert heat[0, int(cy), int(cx)] == pytest.approx(1.0, abs=1e-6)
    assert heat.max() == 1.0


def test_overlapping_gaussians_add_and_normalise_globally():
    mask = np.zeros((40, 40), np.uint8)
    mask[10, 10] = 1
    mask[10, 12] = 2
    mask[35, 35] = 3  # isolated
    heat, _ = heatmap_and_offsets(mask, sigma=2)
    # the two close peaks add, so the isolated one is below 1 after normalisation
    assert heat.max() == 1.0
    assert heat[0, 35, 35] < heat[0, 10, 11]


def test_empty_mask_gives_zeros():
    heat, off = heatmap_and_offsets(np.zeros((8, 9), np.uint32))
    assert heat.shape == (1, 8, 9)
    assert off.shape == (2, 8, 9)
    assert not heat.any()
    assert not off.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((48, 56), np.int64)
    for label in rng.choice(np.arange(1, 5000), size=6, replace=False):
        y, x = rng.integers(0, 44), rng.integers(0, 50)
        h, w = rng.integers(2, 15, size=2)
        mask[y:y + h, x:x + w] = label  # later boxes overwrite: odd shapes and touching
    heat, off = heatmap_and_offsets(mask, sigma=6)
    ref_heat, ref_off = _brute_force(mask, 6)
    np.testing.assert_allclose(heat, ref_heat, atol=1e-6)
    np.testing.assert_allclose(off, ref_off, atol=1e-4)


def test_blur_kernel_is_49_tap_gaussian():
    assert gaussian_kernel_size(6) == 49
    mask = np.zeros((101, 101), np.uint8)
    mask[50, 50] = 1
    heat, _ = heatmap_and_offsets(mask, sigma=6)
    k = _kernel(6)
    assert len(k) == 49
    expected = np.outer(k, k) / k[24] ** 2
    np.testing.assert_allclose(heat[0, 26:75, 26:75], expected, rtol=1e-5, atol=1e-7)
    nonzero_rows = np.flatnonzero(heat[0].any(axis=1))
    assert (nonzero_rows[0], nonzero_rows[-1]) == (26, 74)  # radius 24, zero beyond


@pytest.mark.parametrize("sigma", [1.0, 1.3, 2.5, 4, 6, 10])
def test_kernel_size_matches_opencv_rule(sigma):
    assert gaussian_kernel_size(sigma) == (int(round(sigma * 8 + 1)) | 1)


def test_constant_border_cuts_gaussian():
    mask = np.zeros((30, 30), np.uint8)
    mask[0, 0] = 1
    heat, _ = heatmap_and_offsets(mask, sigma=6)
    k = _kernel(6)
    np.testing.assert_allclose(heat[0, 0, :25], k[24:] / k[24], rtol=1e-5)


def test_torch_tensor_in_tensor_out():
    mask = torch.zeros((10, 10), dtype=torch.int64)
    mask[2:6, 2:6] = 3
    heat, off = heatmap_and_offsets(mask, sigma=2)
    assert isinstance(heat, torch.Tensor)
    assert isinstance(off, torch.Tensor)
    ref_heat, ref_off = heatmap_and_offsets(mask.numpy(), sigma=2)
    np.testing.assert_array_equal(heat.numpy(), ref_heat)
    np.testing.assert_array_equal(off.numpy(), ref_off)


def test_errors():
    with pytest.raises(TypeError, match="boolean"):
        heatmap_and_offsets(np.ones((4, 4), bool))
    with pytest.raises(TypeError, match="integer"):
        heatmap_and_offsets(np.ones((4, 4), np.float32))
    with pytest.raises(TypeError, match="2D"):
        heatmap_and_offsets(np.ones((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="negative"):
        heatmap_and_offsets(np.full((4, 4), -1, np.int32))
    with pytest.raises(ValueError, match="sigma"):
        heatmap_and_offsets(np.ones((4, 4), np.uint8), sigma=0)
    with pytest.raises(TypeError, match="sigma"):
        heatmap_and_offsets(np.ones((4, 4), np.uint8), sigma="6")


def test_filter_and_matmul_blurs_agree(monkeypatch):
    import empanada_train._targets as targets

    rng = np.random.default_rng(3)
    mask = rng.integers(0, 40, (60, 70)).astype(np.uint16)
    heat, off = heatmap_and_offsets(mask)
    monkeypatch.setattr(targets, "_MATMUL_PEAKS", 0)  # force the full-image filter
    heat_f, off_f = heatmap_and_offsets(mask)
    np.testing.assert_allclose(heat, heat_f, atol=1e-6)
    np.testing.assert_array_equal(off, off_f)


def test_huge_ids_use_compaction():
    mask = np.zeros((20, 20), np.uint32)
    mask[2:8, 2:8] = 4_000_000_000
    mask[10:18, 10:18] = 7
    heat, off = heatmap_and_offsets(mask, sigma=2)
    compact = np.unique(mask, return_inverse=True)[1].reshape(mask.shape)  # same partition
    ref_heat, ref_off = _brute_force(compact, 2)
    np.testing.assert_allclose(heat, ref_heat, atol=1e-6)
    np.testing.assert_allclose(off, ref_off, atol=1e-5)
