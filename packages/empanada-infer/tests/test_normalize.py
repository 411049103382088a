"""intensity_range and normalize."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empanada_core._normalize import intensity_range, normalize

MEAN, STD = 0.57571, 0.12765  # MitoNet


def _original_formula(image, mean, std):
    """The original's arithmetic, written out: float32 throughout, dtype max as scale."""
    max_value = np.iinfo(image.dtype).max
    mean32 = np.array(mean, dtype=np.float32) * np.float32(max_value)
    std32 = np.array(std, dtype=np.float32) * np.float32(max_value)
    inverse = np.reciprocal(std32, dtype=np.float32)
    return (image.astype(np.float32) - mean32) * inverse


# -------------------------------------------------------------------------- uint8


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.integers(0, 255), min_size=1, max_size=64),
    mean=st.floats(0.0, 1.0),
    std=st.floats(0.01, 1.0),
)
def test_uint8_is_bit_identical_to_the_original(values, mean, std):
    image = np.array(values, np.uint8).reshape(1, -1)
    out = normalize(image, mean=mean, std=std)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, _original_formula(image, mean, std))


def test_uint8_every_grey_level():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = _original_formula(image, MEAN, STD)
    np.testing.assert_array_equal(normalize(image, mean=MEAN, std=STD), expected)
    np.testing.assert_array_equal(normalize(image, mean=MEAN, std=STD, mode="dtype"), expected)
    # close to the textbook (x / 255 - mean) / std
    np.testing.assert_allclose(expected, (image / 255 - MEAN) / STD, rtol=0, atol=1e-5)


def test_uint8_dtype_mode_ignores_value_range():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(
        normalize(image, mean=MEAN, std=STD, value_range=(10, 20)),
        normalize(image, mean=MEAN, std=STD),
    )


def test_uint8_percentile_mode_on_request():
    image = np.array([[50, 100, 150]], np.uint8)
    out = normalize(image, mean=0.0, std=1.0, mode="percentile", value_range=(50, 150))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])


# ------------------------------------------------------------------- other dtypes


def test_uint16_default_is_percentile_rescale():
    rng = np.random.default_rng(0)
    image = rng.normal(3000, 200, (64, 64)).clip(0, 65535).astype(np.uint16)
    lo, hi = intensity_range(image)
    out = normalize(image, mean=MEAN, std=STD, value_range=(lo, hi))
    x01 = np.clip((image.astype(np.float64) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out, (x01 - MEAN) / STD, atol=1e-4)
    # the range spans the data: about 0.5 % of pixels are clipped at each end
    np.testing.assert_allclose([out.min(), out.max()], [-MEAN / STD, (1 - MEAN) / STD], atol=1e-5)
    assert 0.002 < (out == out.min()).mean() < 0.01
    assert 0.002 < (out == out.max()).mean() < 0.01
    # without value_range, the slice's own range gives the same result
    np.testing.assert_array_equal(normalize(image, mean=MEAN, std=STD), out)


def test_uint16_dtype_mode_divides_by_65535():
    image = np.array([[0, 65535, 3000]], np.uint16)
    out = normalize(image, mean=MEAN, std=STD, mode="dtype")
    np.testing.assert_array_equal(out, _original_formula(image, MEAN, STD))
    np.testing.assert_allclose(out, (image / 65535 - MEAN) / STD, atol=1e-5)


def test_signed_dtype_mode_uses_positive_max():
    image = np.array([[0, 32767]], np.int16)
    np.testing.assert_allclose(
        normalize(image, mean=0.0, std=1.0, mode="dtype"), [[0.0, 1.0]], atol=1e-6
    )


def test_float_in_unit_range_dtype_mode():
    image = np.array([[0.0, 0.25, 1.0]], np.float64)
    out = normalize(image, mean=0.5, std=0.25, mode="dtype")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-2.0, -1.0, 2.0]])


def test_float_outside_unit_range_dtype_mode_raises():
    with pytest.raises(ValueError, match=r"span \[0, 300\].*mode='percentile'"):
        normalize(np.array([[0.0, 300.0]], np.float32), mean=0.5, std=0.25, mode="dtype")


def test_float_default_is_percentile():
    image = np.array([[-5.0, 0.0, 5.0]], np.float32)
    out = normalize(image, mean=0.0, std=1.0, value_range=(-5.0, 5.0))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])
    out = normalize(image, mean=0.0, std=1.0, value_range=(-2.5, 2.5))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])  # clipped


@pytest.mark.parametrize("mode", ["auto", "dtype", "percentile"])
def test_float_nan_raises(mode):
    image = np.array([[0.0, np.nan]], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        normalize(image, mean=0.5, std=0.25, mode=mode, value_range=(0, 1))


def test_constant_maps_to_zero_then_mean():
    out = normalize(np.full((4, 4), 1234, np.uint16), mean=0.5, std=0.25)
    np.testing.assert_allclose(out, -2.0)


def test_other_shapes_are_accepted():
    image = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    assert normalize(image, mean=0, std=1).shape == (2, 3, 4)
    assert normalize(np.arange(5, dtype=np.uint16), mean=0, std=1).shape == (5,)


# ----------------------------------------------------------------- volume ranges


def test_volume_range_is_consistent_across_slices():
    """One range per volume: a slice normalises the same on its own and in the volume."""
    rng = np.random.default_rng(1)
    # brightness drifts along z: per-slice ranges would hide that
    volume = (rng.normal(1000, 50, (6, 32, 32)) + 400 * np.arange(6)[:, None, None])
    volume = volume.astype(np.uint16)
    value_range = intensity_range(volume)
    slices = [normalize(s, mean=MEAN, std=STD, value_range=value_range) for s in volume]
    whole = normalize(volume, mean=MEAN, std=STD, value_range=value_range)
    np.testing.assert_array_equal(np.stack(slices), whole)
    means = [s.mean() for s in slices]
    assert all(a < b for a, b in zip(means, means[1:]))  # the drift survives
    # while per-slice ranges flatten it
    own = [normalize(s, mean=MEAN, std=STD).mean() for s in volume]
    assert max(own) - min(own) < 0.2 * (max(means) - min(means))


def test_fixed_range_slice_by_slice_equals_formula():
    volume = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 100
    for s in volume:
        out = normalize(s, mean=0.5, std=0.5, value_range=(0, 5900))
        np.testing.assert_allclose(out, (s / 5900 - 0.5) / 0.5, atol=1e-6)


# ---------------------------------------------------------------- intensity_range


def test_intensity_range_small_is_exact():
    image = np.arange(1000, dtype=np.uint16).reshape(10, 100)
    assert intensity_range(image, percentiles=(0, 100)) == (0.0, 999.0)
    np.testing.assert_allclose(intensity_range(image), np.percentile(image, (0.5, 99.5)))


def test_intensity_range_sampled_volume_reads_few_slices():
    rng = np.random.default_rng(0)
    volume = rng.integers(1000, 3000, (40, 200, 200), dtype=np.uint16)

    class Counting:
        """Array-like that records which planes are read."""

        shape, dtype, read = volume.shape, volume.dtype, []

        def __getitem__(self, key):
            self.read.append(key[0] if isinstance(key, tuple) else key)
            return volume[key]

    lazy = Counting()
    lo, hi = intensity_range(lazy, max_samples=50_000)
    assert len(lazy.read) == 8  # evenly spaced planes, not the whole volume
    assert lazy.read[0] == 0
    assert lazy.read[-1] == 39
    exact = np.percentile(volume, (0.5, 99.5))
    np.testing.assert_allclose((lo, hi), exact, rtol=0.01)
    # reproducible for a seed
    assert intensity_range(volume, max_samples=50_000) == intensity_range(
        volume, max_samples=50_000
    )


def test_intensity_range_large_plane_is_strided():
    image = np.add.outer(np.arange(2000), np.arange(2000)).astype(np.uint16)
    lo, hi = intensity_range(image, max_samples=10_000)
    np.testing.assert_allclose((lo, hi), np.percentile(image, (0.5, 99.5)), rtol=0.05)


def test_intensity_range_dtype_mode():
    assert intensity_range(np.zeros((2, 2), np.uint16) + 1, mode="dtype") == (0.0, 65535.0)
    assert intensity_range(np.zeros((2, 2), np.float32), mode="dtype") == (0.0, 1.0)


def test_intensity_range_mostly_constant_falls_back_to_min_max():
    image = np.zeros((100, 100), np.uint16)
    image[0, :5] = 500
    assert intensity_range(image) == (0.0, 500.0)


def test_intensity_range_constant():
    assert intensity_range(np.full((4, 4), 9, np.uint8)) == (9.0, 9.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "minmax"}, ValueError, "`mode` must be one of"),
        ({"percentiles": (99, 1)}, ValueError, "0 <= low < high <= 100"),
        ({"percentiles": (1, 101)}, ValueError, "0 <= low < high <= 100"),
        ({"percentiles": 5}, TypeError, "two numbers"),
        ({"max_samples": 0}, ValueError, "max_samples"),
        ({"max_samples": 1.5}, TypeError, "max_samples"),
    ],
)
def test_intensity_range_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        intensity_range(np.ones((4, 4), np.uint8), **kwargs)


def test_intensity_range_bad_images():
    with pytest.raises(TypeError, match="2D image or a 3D volume"):
        intensity_range(np.ones((2, 2, 2, 2), np.uint8))
    with pytest.raises(TypeError, match="boolean"):
        intensity_range(np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="empty"):
        intensity_range(np.ones((0, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        intensity_range(np.array([[0.0, np.inf]]))


# ---------------------------------------------------------------- normalize errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mean": 0.5, "std": 0.0}, ValueError, "`std` must be a positive"),
        ({"mean": 0.5, "std": -1.0}, ValueError, "`std` must be a positive"),
        ({"mean": np.nan, "std": 1.0}, ValueError, "`mean` must be finite"),
        ({"mean": "0.5", "std": 1.0}, TypeError, "`mean` must be a number"),
        ({"mean": 0.5, "std": 1.0, "mode": "max"}, ValueError, "`mode` must be one of"),
        ({"mean": 0.5, "std": 1.0, "value_range": (5, 1)}, ValueError, "lo <= hi"),
        ({"mean": 0.5, "std": 1.0, "value_range": 5}, TypeError, "two numbers"),
    ],
)
def test_normalize_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        normalize(np.ones((4, 4), np.uint16), **kwargs)


@pytest.mark.parametrize(("dtype", "match"), [(bool, "boolean"), (np.complex64, "complex")])
def test_normalize_bad_dtypes(dtype, match):
    with pytest.raises(TypeError, match=match):
        normalize(np.ones((4, 4), dtype), mean=0.5, std=0.25)


def test_intensity_range_on_zarr(tmp_path):
    zarr = pytest.importorskip("zarr")
    volume = np.random.default_rng(2).integers(100, 5000, (20, 300, 300)).astype(np.uint16)
    lazy = zarr.create_array(tmp_path / "v.zarr", data=volume, chunks=(4, 128, 128))
    lo, hi = intensity_range(lazy, max_samples=20_000)
    np.testing.assert_allclose((lo, hi), np.percentile(volume, (0.5, 99.5)), rtol=0.05)
