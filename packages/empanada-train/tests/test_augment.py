import numpy as np
import pytest

from empanada_train._augment import (
    ORIGINAL_SCALE_RANGE,
    Compose,
    FactorPad,
    GaussianBlur,
    GaussianNoise,
    HorizontalFlip,
    PadIfNeeded,
    RandomBrightnessContrast,
    RandomCrop,
    RandomInvert,
    RandomRotate,
    RandomScale,
    VerticalFlip,
    _rotate_pair,
    default_train_augmentations,
    eval_transform,
)


def _pair(shape=(90, 110), seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint16)
    size = min(20, min(shape) // 2)
    for label in (3, 17, 250, 4000):
        y, x = rng.integers(0, shape[0] - size), rng.integers(0, shape[1] - size)
        mask[y:y + size, x:x + size] = label
    image = rng.random(shape).astype(np.float32)
    return image, mask


@pytest.mark.parametrize("shape", [(90, 110), (40, 30), (300, 257)])
@pytest.mark.parametrize("seed", range(4))
def test_default_pipeline_shapes_and_ids(shape, seed):
    image, mask = _pair(shape, seed)
    aug = default_train_augmentations(64, invert_p=0.5, blur_p=0.5, noise_p=0.5)
    out_image, out_mask = aug(image, mask, rng=seed)
    assert out_image.shape == out_mask.shape == (64, 64)
    assert out_image.dtype == np.float32
    assert out_mask.dtype == mask.dtype
    assert set(np.unique(out_mask)) <= set(np.unique(mask)) | {0}
    assert 0 <= out_image.min()
    assert out_image.max() <= 1


def test_original_scale_range_pipeline():
    image, mask = _pair()
    aug = default_train_augmentations(32, scale_range=ORIGINAL_SCALE_RANGE)
    for seed in range(5):
        out_image, out_mask = aug(image, mask, rng=seed)
        assert out_image.shape == (32, 32)
        assert set(np.unique(out_mask)) <= set(np.unique(mask)) | {0}


def test_deterministic_with_seed():
    image, mask = _pair()
    aug = default_train_augmentations(48, noise_p=1.0)
    a = aug(image, mask, rng=7)
    b = aug(image, mask, rng=np.random.default_rng(7))
    c = aug(image, mask, rng=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def _marker():
    image = np.zeros((9, 11), np.float32)
    mask = np.zeros((9, 11), np.int32)
    image[1, 2] = 1.0  # an asymmetric marker
    mask[1, 2] = 7
    image[1, 3] = 0.5
    mask[1, 3] = 8
    return image, mask


@pytest.mark.parametrize(("transform", "expected"), [
    (HorizontalFlip(p=1.0), (1, 8)),
    (VerticalFlip(p=1.0), (7, 2)),
])
def test_flips_move_image_and_mask_alike(transform, expected):
    image, mask = _marker()
    out_image, out_mask = transform(image, mask, np.random.default_rng(0))
    assert out_image[expected] == 1.0
    assert out_mask[expected] == 7
    np.testing.assert_array_equal(out_mask > 0, out_image > 0)


def test_flip_probability_zero_is_identity():
    image, mask = _marker()
    out = HorizontalFlip(p=0.0)(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out[0], image)


@pytest.mark.parametrize("angle", [90, -90, 180])
def test_right_angle_rotation_is_exact_for_both(angle):
    image, mask = _marker()
    image = np.pad(image, ((1, 1), (0, 0)))  # square 11x11 so a quarter turn maps the grid
    mask = np.pad(mask, ((1, 1), (0, 0)))
    out_image, out_mask = _rotate_pair(image, mask, angle)
    k = {90: 1, -90: -1, 180: 2}[angle]
    candidates = [np.rot90(mask, k), np.rot90(mask, -k)]
    assert any(np.array_equal(out_mask, c) for c in candidates)
    np.testing.assert_allclose(out_image, out_mask.astype(bool) * image.max()
                               * (out_mask == 7) + 0.5 * (out_mask == 8), atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_rotation_keeps_image_and_mask_aligned(seed):
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:50] = 4
    mask[40:60, 5:20] = 9
    image = (mask > 0).astype(np.float32)
    out_image, out_mask = RandomRotate(180, p=1.0)(image, mask, np.random.default_rng(seed))
    assert out_image.shape == out_mask.shape == (64, 64)
    assert set(np.unique(out_mask)) <= {0, 4, 9}
    agree = ((out_image > 0.5) == (out_mask > 0)).mean()
    assert agree > 0.97
    assert out_image[0, 0] == 0 or out_mask[0, 0] != 0  # corners zero-filled


def test_random_scale_shapes_and_nearest_mask():
    image, mask = _pair((50, 60))
    for seed in range(6):
        out_image, out_mask = RandomScale((0.5, 2.0), p=1.0)(image, mask, np.random.default_rng(seed))
        f = out_image.shape[0] / 50
        assert 0.5 <= f <= 2.0
        assert out_image.shape == out_mask.shape
        assert abs(out_image.shape[1] - round(60 * f)) <= 1
        assert set(np.unique(out_mask)) <= set(np.unique(mask))


def test_scale_integer_image_rounds():
    image = np.array([[0, 255]], np.uint8)
    out, _ = RandomScale((2.0, 2.0), p=1.0)(image, np.zeros((1, 2), np.uint8),
                                           np.random.default_rng(0))
    assert out.dtype == np.uint8
    assert out.shape == (2, 4)
    assert out.min() == 0
    assert out.max() == 255


def test_pad_and_crop():
    image, mask = _pair((20, 70))
    pi, pm = PadIfNeeded(32)(image, mask, None)
    assert pi.shape == (32, 70)
    assert not pi[:6].any()
    assert not pi[-6:].any()
    ci, cm = RandomCrop(32)(pi, pm, np.random.default_rng(0))
    assert ci.shape == cm.shape == (32, 32)
    with pytest.raises(ValueError, match="PadIfNeeded"):
        RandomCrop(32)(image, mask, np.random.default_rng(0))


def test_brightness_contrast_clips_to_unit_range():
    image = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), np.uint8)
    for seed in range(5):
        out, out_mask = RandomBrightnessContrast(0.3, 0.3, p=1.0)(image, mask,
                                                                  np.random.default_rng(seed))
        assert 0 <= out.min()
        assert out.max() <= 1
        assert out.dtype == np.float32
        assert out_mask is mask


def test_invert_blur_noise():
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    mask = np.arange(64, dtype=np.uint16).reshape(8, 8)
    inv, m = RandomInvert(p=1.0)(image, mask, np.random.default_rng(0))
    np.testing.assert_allclose(inv, 1 - image)
    blurred, m2 = GaussianBlur(p=1.0)(image, mask, np.random.default_rng(0))
    assert blurred.std() < image.std()
    assert m2 is mask
    noisy, m3 = GaussianNoise((0.1, 0.1), p=1.0)(image, mask, np.random.default_rng(0))
    assert not np.array_equal(noisy, image)
    assert 0 <= noisy.min()
    assert noisy.max() <= 1
    assert m3 is mask


@pytest.mark.parametrize("transform", [RandomInvert(p=1.0), GaussianNoise(p=1.0),
                                       GaussianBlur(p=1.0), RandomBrightnessContrast(p=1.0)])
def test_intensity_transforms_need_float_images(transform):
    with pytest.raises(TypeError, match=r"\[0, 1\]"):
        transform(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.random.default_rng(0))


def test_eval_transform_pads_bottom_right():
    image = np.ones((20, 33), np.float32)
    mask = np.full((20, 33), 5, np.uint32)
    out_image, out_mask = eval_transform(16)(image, mask)
    assert out_image.shape == out_mask.shape == (32, 48)
    np.testing.assert_array_equal(out_image[:20, :33], image)
    assert not out_image[20:].any()
    assert not out_mask[:, 33:].any()
    same = FactorPad(4)(np.ones((8, 8)), np.ones((8, 8), int))
    assert same[0].shape == (8, 8)


def test_compose_validation():
    with pytest.raises(TypeError, match="callables"):
        Compose([1])
    aug = Compose([])
    with pytest.raises(ValueError, match="same shape"):
        aug(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.uint8))
    with pytest.raises(TypeError, match="integer"):
        aug(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="2D"):
        aug(np.zeros((4,), np.float32), np.zeros((4,), np.uint8))
    with pytest.raises(TypeError, match="rng"):
        aug(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), rng="x")
    assert "HorizontalFlip(p=0.5)" in repr(Compose([HorizontalFlip()]))


def test_argument_errors():
    with pytest.raises(ValueError, match="`p`"):
        HorizontalFlip(p=1.5)
    with pytest.raises(TypeError, match="`p`"):
        VerticalFlip(p="a")
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((0.0, 2.0))
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((2.0, 1.0))
    with pytest.raises(TypeError, match="scale_range"):
        RandomScale(2.0)
    with pytest.raises(ValueError, match="min_size"):
        PadIfNeeded(0)
    with pytest.raises(TypeError, match="patch_size"):
        default_train_augmentations(25.5)
    with pytest.raises(ValueError, match="limit"):
        RandomRotate(-1)
    with pytest.raises(ValueError, match="brightness"):
        RandomBrightnessContrast(brightness=float("nan"))
