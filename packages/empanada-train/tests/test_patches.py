import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from empanada_train._patches import (
    Patch,
    parse_patch_name,
    pick_patches,
    pick_patches_from_file,
)


def _image2d(shape=(100, 130), dtype=np.uint16):
    return np.arange(np.prod(shape), dtype=np.int64).reshape(shape).astype(dtype)


def _volume(shape=(12, 40, 50)):
    return np.arange(np.prod(shape), dtype=np.int64).reshape(shape).astype(np.uint32)


def _source_block_2d(image, patch):
    ys, xs = patch.origin[1:]
    h, w = patch.valid_shape
    return image[ys:ys + h, xs:xs + w]


def _check_flipbook(volume, patch, size):
    """The flipbook equals the source block, moved so its stacking axis comes first."""
    z, y, x = patch.origin
    axis = patch.axis
    stops = []
    plane_shape = iter(patch.valid_shape)
    for d, start in enumerate((z, y, x)):
        stops.append(start + 5 if d == axis else start + next(plane_shape))
    block = volume[z:stops[0], y:stops[1], x:stops[2]]
    expected = np.moveaxis(block, axis, 0)
    h, w = patch.valid_shape
    assert patch.image.shape == (5, size, size)
    np.testing.assert_array_equal(patch.image[:, :h, :w], expected)
    assert not patch.image[:, h:].any()
    assert not patch.image[:, :, w:].any()


# ----------------------------------------------------------------- 2D


@pytest.mark.parametrize("seed", range(3))
def test_2d_patches_lie_inside_and_match_source(seed):
    image = _image2d()
    patches = pick_patches(image, patch_size=32, n_patches=9, seed=seed)
    assert len(patches) == 9
    for p in patches:
        assert isinstance(p, Patch)
        assert p.image.shape == (32, 32)
        assert p.image.dtype == image.dtype
        assert p.valid == (slice(0, 32), slice(0, 32))
        assert p.axis is None
        assert p.level == 0
        z, y, x = p.origin
        assert z == 0
        assert 0 <= y <= 100 - 32
        assert 0 <= x <= 130 - 32
        np.testing.assert_array_equal(p.image, image[y:y + 32, x:x + 32])
        assert p.name == f"s0-LOC-2d_{y}-{y + 32}_{x}-{x + 32}"
        assert p.labels is None
        assert p.stem == f"image-{p.name}"


def test_random_patches_never_repeat_or_overlap():
    image = _image2d((96, 128))
    patches = pick_patches(image, patch_size=32, n_patches=12, seed=5)  # the whole 3x4 grid
    assert len({p.name for p in patches}) == 12
    cover = np.zeros(image.shape, int)
    for p in patches:
        _, y, x = p.origin
        cover[y:y + 32, x:x + 32] += 1
    assert cover.max() == 1
    assert cover.sum() == 12 * 32 * 32


def test_too_many_patches_is_an_error():
    with pytest.raises(ValueError, match=r"only 12 distinct 32x32 patches fit"):
        pick_patches(_image2d((96, 128)), patch_size=32, n_patches=13)


def test_grid_offset_reaches_the_whole_image():
    image = _image2d((40, 40))
    starts = {pick_patches(image, patch_size=32, n_patches=1, seed=s)[0].origin for s in range(40)}
    ys, xs = {o[1] for o in starts}, {o[2] for o in starts}
    assert ys == xs == set(range(9))  # every offset occurs: the last rows/columns can be picked


def test_deterministic_with_seed():
    image = _image2d((300, 300))
    a = [p.name for p in pick_patches(image, patch_size=32, n_patches=10, seed=3)]
    b = [p.name for p in pick_patches(image, patch_size=32, n_patches=10, seed=3)]
    c = [p.name for p in pick_patches(image, patch_size=32, n_patches=10, seed=4)]
    assert a == b
    assert a != c
    g = [p.name for p in pick_patches(image, patch_size=32, n_patches=10,
                                      seed=np.random.default_rng(3))]
    assert g == a


def test_small_image_is_padded_and_padding_recorded():
    image = _image2d((20, 45), np.uint8) + 1
    (p,) = pick_patches(image, patch_size=32, n_patches=1)
    assert p.image.shape == (32, 32)
    assert p.valid == (slice(0, 20), slice(0, 32))
    assert p.valid_shape == (20, 32)
    assert not p.image[20:].any()
    np.testing.assert_array_equal(p.crop(p.image), _source_block_2d(image, p))
    assert p.name.endswith(f"_0-20_{p.origin[2]}-{p.origin[2] + 32}")
    assert parse_patch_name(p.name)["valid_shape"] == (20, 32)
    with pytest.raises(ValueError, match="only 1 distinct"):
        pick_patches(image, patch_size=32, n_patches=2)


# ------------------------------------------------------------- points


def test_points_centre_patches_in_order_then_random():
    image = _image2d((200, 200))
    points = [[100, 100], [50, 150.4], [199, 0]]
    patches = pick_patches(image, patch_size=40, n_patches=5, points=points, seed=0)
    assert len(patches) == 5
    assert patches[0].origin == (0, 80, 80)  # centred
    assert patches[1].origin == (0, 30, 130)
    assert patches[2].origin == (0, 160, 0)  # clamped into the image at the corner
    for p in patches[:3]:
        np.testing.assert_array_equal(p.image, _source_block_2d(image, p))


def test_points_consumed_up_to_n_patches_and_pick_all():
    image = _image2d((200, 200))
    points = np.array([[20, 20], [100, 100], [150, 60]])
    two = pick_patches(image, patch_size=40, n_patches=2, points=points)
    assert [p.origin for p in two] == [(0, 0, 0), (0, 80, 80)]
    every = pick_patches(image, patch_size=40, n_patches=1, points=points, pick_all_points=True)
    assert [p.origin for p in every] == [(0, 0, 0), (0, 80, 80), (0, 130, 40)]
    with pytest.raises(ValueError, match="needs `points`"):
        pick_patches(image, pick_all_points=True)


def test_point_errors():
    image = _image2d((50, 50))
    with pytest.raises(ValueError, match="outside the image"):
        pick_patches(image, patch_size=16, points=[[10, 60]])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        pick_patches(image, patch_size=16, points=[[1, 2, 3]])
    with pytest.raises(ValueError, match="NaN"):
        pick_patches(image, patch_size=16, points=[[np.nan, 2]])


# ------------------------------------------------------------- stacks and flipbooks


def test_stack_mode_takes_one_plane_per_patch():
    stack = _volume((6, 40, 50))
    patches = pick_patches(stack, patch_size=16, n_patches=8, mode="stack", seed=1,
                           points=[[4, 20, 20]])
    assert patches[0].origin == (4, 12, 12)
    assert patches[0].name == "s0-LOC-2d-4_12-28_12-28"
    for p in patches:
        z, y, x = p.origin
        assert p.image.shape == (16, 16)
        np.testing.assert_array_equal(p.image, stack[z, y:y + 16, x:x + 16])
    assert len({p.name for p in patches}) == 8


def test_flipbooks_middle_slice_is_the_annotated_plane():
    volume = _volume((12, 40, 50))
    patches = pick_patches(volume, patch_size=16, n_patches=6, seed=2,
                           points=[[0, 20, 20], [7, 20, 20]])
    assert len(patches) == 6
    for p in patches:
        assert p.axis == 0
        _check_flipbook(volume, p, 16)
        z, y, x = p.origin
        np.testing.assert_array_equal(p.plane, volume[z + 2, y:y + 16, x:x + 16])
        assert p.name == f"s0-LOC-0_{z}-{z + 5}_{y}-{y + 16}_{x}-{x + 16}"
    assert patches[0].origin[0] + 2 == 2  # point at z=0 clamped so the flipbook fits
    assert patches[1].origin[0] + 2 == 7  # the middle slice is the point's plane


def test_isotropic_flipbooks_cover_xy_xz_yz():
    volume = _volume((20, 24, 28))
    patches = pick_patches(volume, patch_size=16, n_patches=30, isotropic=True, seed=0)
    assert {p.axis for p in patches} == {0, 1, 2}
    for p in patches:
        _check_flipbook(volume, p, 16)
    assert len({p.name for p in patches}) == 30
    xz = next(p for p in patches if p.axis == 1)
    z, y, x = xz.origin
    np.testing.assert_array_equal(xz.plane, volume[z:z + 16, y + 2, x:x + 16])


def test_isotropic_padding_along_a_short_z_axis():
    volume = _volume((8, 40, 40))
    patches = pick_patches(volume, patch_size=32, n_patches=6, isotropic=True, seed=3)
    for p in patches:
        _check_flipbook(volume, p, 32)
        if p.axis != 0:
            assert p.valid_shape == (8, 32)
            assert parse_patch_name(p.name)["valid_shape"] == (8, 32)


def test_flipbooks_need_five_slices():
    with pytest.raises(ValueError, match="mode='stack'"):
        pick_patches(_volume((4, 30, 30)), patch_size=16, n_patches=1)


# ------------------------------------------------------------------- levels


def test_pyramid_level_and_points():
    level0 = _image2d((128, 128), np.float32)
    level1 = level0.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    (p,) = pick_patches([level0, level1], patch_size=16, n_patches=1, level=1,
                        points=[[101, 41]])
    assert p.level == 1
    assert p.name.startswith("s1-")
    assert p.origin == (0, 42, 12)  # point (50, 20) at level 1, centred
    np.testing.assert_array_equal(p.image, level1[42:58, 12:28])
    with pytest.raises(ValueError, match="does not exist"):
        pick_patches([level0, level1], patch_size=16, n_patches=1, level=2)


def test_plain_array_level_downsamples_image_and_labels():
    image = _image2d((64, 64), np.uint16)
    labels = np.repeat(np.repeat(np.arange(16, dtype=np.uint16).reshape(4, 4), 16, 0), 16, 1)
    (p,) = pick_patches(image, labels=labels, patch_size=16, n_patches=1, level=1, seed=0)
    _, y, x = p.origin
    expected = image.astype(float).reshape(32, 2, 32, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(p.image, np.rint(expected[y:y + 16, x:x + 16]))
    np.testing.assert_array_equal(p.labels, labels[1::2, 1::2][y:y + 16, x:x + 16])
    assert p.image.dtype == np.uint16


def test_plain_volume_level_keeps_z_unless_isotropic():
    volume = _volume((10, 32, 32))
    (p,) = pick_patches(volume, patch_size=8, n_patches=1, level=1, seed=0)
    z = p.origin[0]
    assert p.image.shape == (5, 8, 8)
    assert z + 5 <= 10
    (q,) = pick_patches(volume, patch_size=8, n_patches=1, level=1, seed=0, isotropic=True)
    assert max(q.origin) <= 16


# ------------------------------------------------------------------- labels


def test_paired_labels_are_the_same_crops():
    volume = _volume((12, 40, 50))
    labels = (volume % 7).astype(np.int32)
    for p in pick_patches(volume, labels=labels, patch_size=16, n_patches=5, isotropic=True,
                          seed=1):
        assert p.labels.shape == p.image.shape
        assert p.labels.dtype == np.int32
        np.testing.assert_array_equal(p.labels, p.image % 7)


def test_label_errors():
    image = _image2d((40, 40))
    with pytest.raises(ValueError, match="same shape"):
        pick_patches(image, labels=np.zeros((40, 41), np.uint8), patch_size=16)
    with pytest.raises(TypeError, match="integer"):
        pick_patches(image, labels=np.zeros((40, 40), np.float32), patch_size=16)


# ------------------------------------------------------------------- errors


def test_argument_errors():
    image = _image2d((40, 40))
    with pytest.raises(ValueError, match="mode='stack'"):
        pick_patches(_volume(), mode="2d")
    with pytest.raises(ValueError, match="3D array"):
        pick_patches(image, mode="3d")
    with pytest.raises(ValueError, match="`mode`"):
        pick_patches(image, mode="xy")
    with pytest.raises(ValueError, match="isotropic"):
        pick_patches(_volume(), mode="stack", isotropic=True)
    with pytest.raises(TypeError, match="patch_size"):
        pick_patches(image, patch_size=16.0)
    with pytest.raises(ValueError, match="n_patches"):
        pick_patches(image, n_patches=0)
    with pytest.raises(TypeError, match="seed"):
        pick_patches(image, seed="a")
    with pytest.raises(TypeError, match="colour"):
        pick_patches(np.zeros((30, 30, 3), np.uint8))
    with pytest.raises(TypeError, match="boolean"):
        pick_patches(np.zeros((30, 30), bool))
    with pytest.raises(ValueError, match="source"):
        pick_patches(image, source="a/b")


# ---------------------------------------------------------------- from file


def test_pick_from_tiff_with_csv_points(tmp_path):
    volume = _volume((10, 40, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", volume)
    tifffile.imwrite(tmp_path / "cells_labels.tif", (volume % 5).astype(np.uint16))
    (tmp_path / "points.csv").write_text("index,axis-0,axis-1,axis-2\n0,5.0,20.0,20.0\n")
    patches = pick_patches_from_file(tmp_path / "cells.tif", labels=tmp_path / "cells_labels.tif",
                                     points=tmp_path / "points.csv", patch_size=16, n_patches=3)
    assert patches[0].source == "cells"
    assert patches[0].origin == (3, 12, 12)
    for p in patches:
        np.testing.assert_array_equal(p.labels, p.image % 5)


def test_pick_from_ome_zarr_level(tmp_path):
    zarr = pytest.importorskip("zarr")
    level0 = _image2d((64, 64), np.uint8)
    level1 = level0[::2, ::2]
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=level0)
    root.create_array("1", data=level1)
    root.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0"}, {"path": "1"}],
    }]
    (p,) = pick_patches_from_file(tmp_path / "img.ome.zarr", patch_size=16, n_patches=1, level=1,
                                  points=[[40, 40]])
    assert p.source == "img"
    assert p.origin == (0, 12, 12)
    np.testing.assert_array_equal(p.image, level1[12:28, 12:28])


def test_parse_patch_name():
    info = parse_patch_name("lucchi-s1-LOC-2d-7_0-20_32-64")
    assert info == {"level": 1, "axis": None, "plane": 7, "ranges": ((0, 20), (32, 64)),
                    "valid_shape": (20, 32)}
    assert parse_patch_name("s0-LOC-0_3-8_0-256_10-266")["valid_shape"] == (256, 256)
    with pytest.raises(ValueError, match="location suffix"):
        parse_patch_name("image.tiff")


# ----------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(5, 30), st.integers(1, 50), st.integers(5, 50)),
       size=st.integers(1, 40), n=st.integers(1, 6), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["2d", "stack", "3d", "iso"]))
def test_property_patches_are_exact_padded_crops(shape, size, n, seed, mode):
    volume = _volume(shape) + 1  # no zero voxel, so padding is visible
    image = volume[0] if mode == "2d" else volume
    kwargs = {"mode": "3d", "isotropic": True} if mode == "iso" else {"mode": mode}
    def tiles(k):
        return max(1, k // size)

    d0, d1, d2 = shape
    total = {
        "2d": tiles(d1) * tiles(d2),
        "stack": d0 * tiles(d1) * tiles(d2),
        "3d": (d0 - 4) * tiles(d1) * tiles(d2),
        "iso": sum((shape[a] - 4) * tiles(shape[b]) * tiles(shape[c])
                   for a, b, c in ((0, 1, 2), (1, 0, 2), (2, 0, 1)) if shape[a] >= 5),
    }[mode]
    if n > total:
        with pytest.raises(ValueError, match=f"only {total} distinct"):
            pick_patches(image, patch_size=size, n_patches=n, seed=seed, **kwargs)
        return
    patches = pick_patches(image, patch_size=size, n_patches=n, seed=seed, **kwargs)
    assert len(patches) == n
    assert len({p.name for p in patches}) == n
    for p in patches:
        h, w = p.valid_shape
        assert p.image.shape[-2:] == (size, size)
        assert 1 <= h <= size
        assert 1 <= w <= size
        assert (p.plane[p.valid] > 0).all()
        assert not p.plane[h:].any()
        assert not p.plane[:, w:].any()
        z, y, x = p.origin
        if mode == "2d":
            np.testing.assert_array_equal(p.crop(p.image), image[y:y + h, x:x + w])
        elif mode == "stack":
            np.testing.assert_array_equal(p.crop(p.image), volume[z, y:y + h, x:x + w])
        else:
            _check_flipbook(volume, p, size)
        assert parse_patch_name(p.name)["valid_shape"] == (h, w)
