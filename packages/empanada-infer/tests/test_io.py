"""Readers (open_image, open_batch) and input validation (check_image)."""

import logging

import numpy as np
import pytest
import tifffile
import zarr

from empanada_core import _readers
from empanada_core._normalize import intensity_range
from empanada_core._readers import check_image, iter_batch, open_batch, open_image
from empanada_core.testing import data_path


def _volume(shape=(4, 32, 40), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("shape", [(32, 40), (4, 32, 40)])
def test_tiff_uncompressed_is_memory_mapped(tmp_path, shape):
    data = _volume(shape)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="minisblack")
    image = open_image(tmp_path / "a.tif")
    assert isinstance(image, np.memmap)
    np.testing.assert_array_equal(image, data)


def test_tiff_compressed_multipage_is_read(tmp_path):
    data = _volume((3, 16, 24), np.uint16)
    tifffile.imwrite(tmp_path / "c.tiff", data, photometric="minisblack", compression="zlib")
    image = open_image(str(tmp_path / "c.tiff"))
    assert not isinstance(image, np.memmap)
    np.testing.assert_array_equal(np.asarray(image), data)


def test_tiff_compressed_large_is_lazy(tmp_path, monkeypatch):
    data = _volume((3, 16, 24))
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="minisblack", compression="zlib")
    monkeypatch.setattr(_readers, "_EAGER_TIFF_BYTES", 10)
    image = open_image(tmp_path / "c.tif")
    assert isinstance(image, zarr.Array)
    np.testing.assert_array_equal(image[1], data[1])


# ---------------------------------------------------------------------- npy, png


def test_npy_is_memory_mapped(tmp_path):
    data = _volume((2, 8, 8), np.int16)
    np.save(tmp_path / "v.npy", data)
    image = open_image(tmp_path / "v.npy")
    assert isinstance(image, np.memmap)
    assert image.dtype == np.int16
    np.testing.assert_array_equal(image, data)


def test_png_is_read(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    data = _volume((16, 20))
    imageio.imwrite(tmp_path / "a.png", data)
    np.testing.assert_array_equal(open_image(tmp_path / "a.png"), data)


# --------------------------------------------------------------------------- zarr


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array(tmp_path, zarr_format):
    data = _volume()
    zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(1, 32, 40), zarr_format=zarr_format)
    image = open_image(tmp_path / "a.zarr")
    assert isinstance(image, zarr.Array)
    np.testing.assert_array_equal(image[2], data[2])


def test_zarr_group_with_one_array(tmp_path):
    data = _volume()
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_group("sub").create_array("raw", data=data)
    image = open_image(tmp_path / "g.zarr")
    np.testing.assert_array_equal(image[...], data)


def test_zarr_group_key(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("raw", data=_volume())
    group.create_array("mask", data=np.zeros((4, 32, 40), np.uint8))
    with pytest.raises(ValueError, match=r"several arrays.*'mask', 'raw'"):
        open_image(tmp_path / "g.zarr")
    assert open_image(tmp_path / "g.zarr", key="raw").dtype == np.uint8
    with pytest.raises(ValueError, match="no array or group 'nope'.*'mask', 'raw'"):
        open_image(tmp_path / "g.zarr", key="nope")


def test_zarr_key_on_array_and_level_on_plain_array(tmp_path):
    zarr.create_array(tmp_path / "a.zarr", data=_volume())
    with pytest.raises(ValueError, match="single array"):
        open_image(tmp_path / "a.zarr", key="x")
    with pytest.raises(ValueError, match="plain array"):
        open_image(tmp_path / "a.zarr", level=1)


def test_zarr_empty_group_and_not_a_store(tmp_path):
    zarr.open_group(tmp_path / "e.zarr", mode="w")
    with pytest.raises(ValueError, match="holds no arrays"):
        open_image(tmp_path / "e.zarr")
    (tmp_path / "bad.zarr").mkdir()
    with pytest.raises(ValueError, match="not a readable zarr store"):
        open_image(tmp_path / "bad.zarr")


def _write_ome(path, levels, version="0.5", lead=()):
    """An OME-Zarr image with one array per level, halving y and x."""
    zarr_format = 3 if version == "0.5" else 2
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    axes = [{"name": "c", "type": "channel"}] * len(lead) + [
        {"name": a, "type": "space"} for a in "zyx"
    ]
    datasets = []
    for i, data in enumerate(levels):
        root.create_array(str(i), data=data.reshape(lead + data.shape))
        scale = [1.0] * len(lead) + [1.0, 2.0**i, 2.0**i]
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms = {"axes": axes, "datasets": datasets, "name": "raw"}
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    else:
        root.attrs["multiscales"] = [{**ms, "version": "0.4"}]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels(tmp_path, version):
    full = _volume((4, 32, 40))
    half = full[:, ::2, ::2].copy()
    _write_ome(tmp_path / "img.ome.zarr", [full, half], version)
    np.testing.assert_array_equal(open_image(tmp_path / "img.ome.zarr")[...], full)
    np.testing.assert_array_equal(open_image(tmp_path / "img.ome.zarr", level=1)[...], half)
    np.testing.assert_array_equal(open_image(tmp_path / "img.ome.zarr", level=-1)[...], half)
    with pytest.raises(ValueError, match=r"levels are 0: \(4, 32, 40\), 1: \(4, 16, 20\)"):
        open_image(tmp_path / "img.ome.zarr", level=2)
    with pytest.raises(TypeError, match="integer"):
        open_image(tmp_path / "img.ome.zarr", level="0")


def test_ome_zarr_singleton_channel_is_dropped_lazily(tmp_path):
    full = _volume((4, 32, 40))
    _write_ome(tmp_path / "img.ome.zarr", [full], lead=(1,))
    image = open_image(tmp_path / "img.ome.zarr")
    assert image.shape == (4, 32, 40)
    assert image.ndim == 3
    assert image.dtype == np.uint8
    assert image.chunks[0] >= 1
    assert len(image) == 4
    np.testing.assert_array_equal(image[1], full[1])
    np.testing.assert_array_equal(image[1:3, 5], full[1:3, 5])
    np.testing.assert_array_equal(np.asarray(image), full)
    assert "view" in repr(image)
    check_image(image)


def test_ome_zarr_nested_label_group(tmp_path):
    full = _volume((4, 32, 40))
    _write_ome(tmp_path / "img.ome.zarr", [full])
    root = zarr.open_group(tmp_path / "img.ome.zarr", mode="a")
    labels = root.create_group("labels").create_group("mito")
    labels.create_array("0", data=np.ones((4, 32, 40), np.uint32))
    labels.attrs["ome"] = {"version": "0.5", "multiscales": [
        {"axes": [{"name": a, "type": "space"} for a in "zyx"], "datasets": [{"path": "0"}]}
    ]}
    # the root is itself a multiscale image: it wins unless key= picks the labels
    assert open_image(tmp_path / "img.ome.zarr").dtype == np.uint8
    assert open_image(tmp_path / "img.ome.zarr", key="labels/mito").dtype == np.uint32
    assert open_image(tmp_path / "img.ome.zarr", key="labels").dtype == np.uint32


# ------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        open_image(tmp_path / "nope.tif")


def test_unknown_extension(tmp_path):
    (tmp_path / "a.czi").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported image format: a\.czi.*TIFF.*\.npy.*zarr"):
        open_image(tmp_path / "a.czi")


def test_plain_folder_points_to_open_batch(tmp_path):
    with pytest.raises(ValueError, match="open_batch"):
        open_image(tmp_path)


def test_key_on_a_file(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="only to zarr"):
        open_image(tmp_path / "v.npy", key="a")


def test_path_type():
    with pytest.raises(TypeError, match="str or os.PathLike"):
        open_image(3)


# ------------------------------------------------------------------------ batches


def _batch_folder(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in (10, 2, 1):
        tifffile.imwrite(folder / f"img{i}.tif", _volume((8, 9), seed=i))
    (folder / "Thumbs.db").write_bytes(b"\x00junk")
    (folder / ".DS_Store").write_bytes(b"\x00junk")
    (folder / "._img1.tif").write_bytes(b"not a tiff")
    (folder / "notes.txt").write_text("hello")
    (folder / "sub").mkdir()
    return folder


def test_open_batch_skips_junk_with_a_note(tmp_path, caplog):
    folder = _batch_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="empanada_core"):
        images = open_batch(folder)
    assert [name for name, _ in images] == ["img1.tif", "img2.tif", "img10.tif"]
    np.testing.assert_array_equal(images[1][1], _volume((8, 9), seed=2))
    assert "Thumbs.db" in caplog.text
    assert ".DS_Store" in caplog.text
    assert "notes.txt" in caplog.text


def test_open_batch_png(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    imageio.imwrite(tmp_path / "b.png", _volume((8, 9), seed=1))
    imageio.imwrite(tmp_path / "a.jpg", np.full((8, 9), 100, np.uint8))
    with pytest.warns(UserWarning, match="constant"):
        images = open_batch(tmp_path)
    assert [name for name, _ in images] == ["a.jpg", "b.png"]


def test_iter_batch_reads_lazily(tmp_path):
    folder = _batch_folder(tmp_path)
    tifffile.imwrite(folder / "img3.tif", _volume((2, 8, 9)))
    batch = iter_batch(folder)
    assert next(batch)[0] == "img1.tif"
    next(batch)
    with pytest.raises(TypeError, match=r"img3\.tif.*must be 2D"):
        next(batch)


def test_open_batch_rgb_names_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", _volume((8, 9, 3)), photometric="rgb")
    with pytest.raises(TypeError, match=r"rgb\.tif.*RGB"):
        open_batch(tmp_path)


def test_open_batch_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        open_batch(tmp_path / "nope")
    (tmp_path / "f.tif").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        open_batch(tmp_path / "f.tif")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "Thumbs.db").write_bytes(b"")
    with pytest.raises(ValueError, match="no 2D images"):
        open_batch(empty)


def test_open_batch_logs_many_skipped_briefly(tmp_path, caplog):
    tifffile.imwrite(tmp_path / "img.tif", _volume((8, 9)))
    for i in range(25):
        (tmp_path / f"n{i}.txt").write_text("")
    with caplog.at_level(logging.INFO, logger="empanada_core"):
        open_batch(tmp_path)
    assert "and 5 more" in caplog.text


# -------------------------------------------------------------------- check_image


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.float32])
def test_check_image_accepts(dtype):
    image = _volume((3, 8, 9)).astype(dtype)
    assert check_image(image) is image
    check_image(image[0])


@pytest.mark.parametrize("shape", [(16, 20, 3), (16, 20, 4), (5, 16, 20, 3)])
def test_check_image_rgb(shape):
    with pytest.raises(TypeError, match="RGB.*colour.*greyscale"):
        check_image(np.zeros(shape, np.uint8))


def test_check_image_channels_first_colour():
    grey = _volume((16, 20))
    with pytest.raises(TypeError, match=r"channels-first.*image\[0\]"):
        check_image(np.stack([grey, grey, grey]))
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)])
    with pytest.raises(TypeError, match="channels-first"):
        check_image(rgba)
    # three different slices are a short volume
    check_image(_volume((3, 16, 20)))


def test_check_image_ndim():
    with pytest.raises(TypeError, match="2D or 3D; got 4D.*squeeze"):
        check_image(np.zeros((1, 2, 8, 8), np.uint8) + 1)
    with pytest.raises(TypeError, match="got 4D.*channel"):
        check_image(np.ones((2, 2, 8, 8), np.uint8))
    with pytest.raises(TypeError, match="must be 2D; got 3D"):
        check_image(_volume((2, 8, 8)), ndim=2)
    with pytest.raises(TypeError, match="got 1D"):
        check_image(np.arange(5))


def test_check_image_empty():
    with pytest.raises(ValueError, match="empty"):
        check_image(np.zeros((0, 8), np.uint8))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), bool), "boolean"),
        (np.zeros((4, 4), np.complex64), "complex"),
        (np.array([["a", "b"]]), "integers or floats"),
    ],
)
def test_check_image_dtypes(image, match):
    with pytest.raises(TypeError, match=match):
        check_image(image)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_image_non_finite(bad):
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    image[3, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite.*nan_to_num"):
        check_image(image)


def test_check_image_constant_warns():
    with pytest.warns(UserWarning, match="constant"):
        check_image(np.full((8, 8), 7, np.uint16))


def test_check_image_lazy_is_sampled(tmp_path):
    data = np.linspace(0, 1, 4 * 64 * 64, dtype=np.float32).reshape(4, 64, 64)
    data[2, 10, 10] = np.nan
    np.save(tmp_path / "v.npy", data)
    with pytest.raises(ValueError, match="NaN"):
        check_image(open_image(tmp_path / "v.npy"))


def test_check_image_list_input():
    check_image([[1, 2], [3, 4]])


# ----------------------------------------------------------------------- real data


# 0.5 and 99.5 percentiles of 2 million voxels sampled from 8 slices (seed 0); the exact
# figures over all 50 million voxels are 44 and 223.
LUCCHI_LO, LUCCHI_HI = 45.0, 224.0


@pytest.mark.realdata
def test_lucchi_volume_opens_lazily_and_range():
    path = data_path("lucchi_epfl_hippocampus") / "images.tif"
    image = open_image(path)
    assert isinstance(image, np.memmap)
    assert image.shape == (64, 768, 1024)
    assert image.dtype == np.uint8
    check_image(image)
    lo, hi = intensity_range(image)
    assert (lo, hi) == (LUCCHI_LO, LUCCHI_HI)
    # an exact computation on every voxel agrees to within a grey level
    exact = np.percentile(np.asarray(image), (0.5, 99.5))
    np.testing.assert_allclose((lo, hi), exact, atol=1.0)

