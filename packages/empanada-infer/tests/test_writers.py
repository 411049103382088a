"""write_tiff, create_output and the progress record."""

import json

import numpy as np
import pytest
import tifffile
import zarr

from empanada_core import open_image
from empanada_infer import _writers
from empanada_infer._writers import (
    PROGRESS_ATTR,
    create_output,
    done_keys,
    is_complete,
    is_done,
    mark_complete,
    mark_done,
    write_tiff,
)


def _labels(shape=(3, 16, 20), seed=0):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(np.uint32)


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("shape", [(16, 20), (3, 16, 20)])
def test_write_tiff_round_trip(tmp_path, shape):
    labels = _labels(shape)
    out = write_tiff(tmp_path / "l.tif", labels)
    assert out == tmp_path / "l.tif"
    back = tifffile.imread(out)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(np.int64, np.uint32), (np.int32, np.uint32), (np.uint16, np.uint32), (np.uint64, np.uint64)],
)
def test_write_tiff_dtypes(tmp_path, dtype, expected):
    write_tiff(tmp_path / "l.tif", np.array([[0, 1], [2, 3]], dtype))
    assert tifffile.imread(tmp_path / "l.tif").dtype == expected


def test_write_tiff_large_ids_become_uint64(tmp_path):
    write_tiff(tmp_path / "l.tif", np.array([[0, 2**40]], np.int64))
    back = tifffile.imread(tmp_path / "l.tif")
    assert back.dtype == np.uint64
    assert back[0, 1] == 2**40


def test_write_tiff_squeezes_single_slice(tmp_path):
    write_tiff(tmp_path / "l.tif", _labels((1, 16, 20)))
    assert tifffile.imread(tmp_path / "l.tif").shape == (16, 20)


def test_write_tiff_3_channel_like_shape_stays_greyscale(tmp_path):
    labels = _labels((5, 8, 3))
    write_tiff(tmp_path / "l.tif", labels, compression=None)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), labels)


def test_write_tiff_refuses_overwrite(tmp_path):
    write_tiff(tmp_path / "l.tif", _labels())
    with pytest.raises(FileExistsError, match="overwrite"):
        write_tiff(tmp_path / "l.tif", _labels(seed=1))
    write_tiff(tmp_path / "l.tif", _labels(seed=1), overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), _labels(seed=1))


def test_write_tiff_creates_parent_folders(tmp_path):
    write_tiff(tmp_path / "a" / "b" / "l.tiff", _labels((4, 4)), compression="none")
    assert (tmp_path / "a" / "b" / "l.tiff").is_file()


def test_write_tiff_failure_leaves_nothing(tmp_path, monkeypatch):
    """A crash mid-write leaves neither a target file nor a partial file behind."""
    real_imwrite = tifffile.imwrite

    def crash(path, data, **kwargs):
        real_imwrite(path, data[:1], **kwargs)  # some bytes reach the disk
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(tmp_path / "l.tif", _labels())
    assert list(tmp_path.iterdir()) == []


def test_write_tiff_failure_keeps_previous_file(tmp_path, monkeypatch):
    write_tiff(tmp_path / "l.tif", _labels())

    def crash(path, data, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(KeyboardInterrupt):
        write_tiff(tmp_path / "l.tif", _labels(seed=1), overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), _labels())
    assert [p.name for p in tmp_path.iterdir()] == ["l.tif"]


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.ones((4, 4), bool), TypeError, "boolean"),
        (np.ones((4, 4), np.float32), TypeError, "must hold integer ids"),
        (np.ones((2, 2, 4, 4), np.uint32), TypeError, "2D or 3D"),
        (np.ones((0, 4), np.uint32), ValueError, "empty"),
        (np.array([[-1, 2]]), ValueError, "negative"),
    ],
)
def test_write_tiff_bad_labels(tmp_path, labels, error, match):
    with pytest.raises(error, match=match):
        write_tiff(tmp_path / "l.tif", labels)


def test_write_tiff_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.tif or \.tiff"):
        write_tiff(tmp_path / "l.png", _labels())


# --------------------------------------------------------------------------- zarr


def test_create_output_zarr(tmp_path):
    out = create_output(tmp_path / "o.zarr", (100, 300, 700), np.uint32, name="mito")
    assert out.shape == (100, 300, 700)
    assert out.dtype == np.uint32
    assert out.chunks == (64, 256, 256)
    assert out.metadata.dimension_names == ("z", "y", "x")
    assert int(out[5, 5, 5]) == 0
    out[3] = 9
    again = open_image(tmp_path / "o.zarr")
    assert int(again[3].max()) == 9
    record = out.attrs[PROGRESS_ATTR]
    assert record["complete"] is False
    assert record["done"] == []
    assert record["params"] == {}


def test_create_output_chunks(tmp_path):
    assert create_output(tmp_path / "a.zarr", (10, 20, 30), "uint32").chunks == (10, 20, 30)
    assert create_output(tmp_path / "b.zarr", (3000, 50), "uint32").chunks == (1024, 50)
    out = create_output(tmp_path / "c.zarr", (4, 64, 64), "uint64", chunks=(1, 32, 100))
    assert out.chunks == (1, 32, 64)
    assert out.dtype == np.uint64


def test_create_output_slice_axis_gives_thin_chunks(tmp_path):
    shape = (10, 2000, 30)
    assert create_output(tmp_path / "a.zarr", shape, "uint32", slice_axis=0).chunks == (
        1, 1024, 30
    )
    assert create_output(tmp_path / "b.zarr", shape, "uint32", slice_axis=1).chunks == (
        10, 1, 30
    )
    assert create_output(tmp_path / "c.zarr", shape, "uint32", slice_axis=2).chunks == (
        10, 1024, 1
    )
    explicit = create_output(tmp_path / "d.zarr", shape, "uint32", slice_axis=2, chunks=(2, 2, 2))
    assert explicit.chunks == (2, 2, 2)


@pytest.mark.parametrize(("shape", "axis"), [((4, 4), 0), ((4, 4, 4), 3), ((4, 4, 4), True)])
def test_create_output_bad_slice_axis(tmp_path, shape, axis):
    with pytest.raises(ValueError, match="slice_axis"):
        create_output(tmp_path / "o.zarr", shape, "uint32", slice_axis=axis)


def test_create_output_several_classes_in_one_store(tmp_path):
    a = create_output(tmp_path / "o.zarr", (2, 8, 8), np.uint32, name="mito")
    a[:] = 1
    create_output(tmp_path / "o.zarr", (2, 8, 8), np.uint8, name="er")
    assert int(zarr.open_group(tmp_path / "o.zarr")["mito"][0, 0, 0]) == 1
    with pytest.raises(ValueError, match="several arrays"):
        open_image(tmp_path / "o.zarr")


def test_create_output_refuses_existing(tmp_path):
    out = create_output(tmp_path / "o.zarr", (2, 8, 8), np.uint32)
    out[:] = 5
    with pytest.raises(FileExistsError, match="overwrite=True.*resume=True"):
        create_output(tmp_path / "o.zarr", (2, 8, 8), np.uint32)
    fresh = create_output(tmp_path / "o.zarr", (2, 8, 8), np.uint32, overwrite=True)
    assert int(fresh[...].max()) == 0  # no stale chunks survive an overwrite


def test_create_output_refuses_foreign_paths(tmp_path):
    (tmp_path / "f.zarr").write_text("not zarr")
    with pytest.raises(FileExistsError, match="not a zarr group"):
        create_output(tmp_path / "f.zarr", (2, 8, 8), np.uint32)
    (tmp_path / "d.zarr").mkdir()
    (tmp_path / "d.zarr" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a zarr group"):
        create_output(tmp_path / "d.zarr", (2, 8, 8), np.uint32, overwrite=True)
    assert (tmp_path / "d.zarr" / "keep.txt").exists()
    (tmp_path / "empty.zarr").mkdir()
    create_output(tmp_path / "empty.zarr", (2, 8, 8), np.uint32)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("o.tif", (2, 2), "uint32"), {}, ValueError, r"\.zarr or \.ome\.zarr"),
        (("o.zarr", (2, 2), "int64"), {}, TypeError, "unsigned.*label_dtype"),
        (("o.zarr", (2, 2), "float32"), {}, TypeError, "unsigned"),
        (("o.zarr", (2, 2), "nonsense"), {}, TypeError, "numpy dtype"),
        (("o.zarr", (2, 2, 2, 2), "uint32"), {}, ValueError, "2D or 3D"),
        (("o.zarr", (2, 0), "uint32"), {}, ValueError, "positive ints"),
        (("o.zarr", 5, "uint32"), {}, TypeError, "tuple of ints"),
        (("o.zarr", (2, 2), "uint32"), {"chunks": (2,)}, ValueError, "2 positive ints"),
        (("o.zarr", (2, 2), "uint32"), {"chunks": 3}, TypeError, "tuple of ints"),
        (("o.zarr", (2, 2), "uint32"), {"name": "a/b"}, ValueError, "`name`"),
        (("o.zarr", (2, 2), "uint32"), {"name": ""}, ValueError, "`name`"),
        (("o.zarr", (2, 2), "uint32"), {"overwrite": True, "resume": True}, ValueError,
         "exclude each other"),
        (("o.ome.zarr", (2, 2), "uint32"), {"ngff_version": "0.3"}, ValueError, "ngff_version"),
        (("o.zarr", (2, 2), "uint32"), {"params": {"a": object()}}, TypeError, "JSON"),
        (("o.zarr", (2, 2), "uint32"), {"params": [1]}, TypeError, "dict"),
        (("o.zarr", (2, 2), "uint32"), {"attrs": {PROGRESS_ATTR: 1}}, ValueError, "managed"),
    ],
)
def test_create_output_bad_arguments(tmp_path, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        create_output(tmp_path / args[0], *args[1:], **kwargs)


def test_create_output_attrs(tmp_path):
    out = create_output(tmp_path / "o.zarr", (2, 2), "uint32", attrs={"model": "MitoNet_v1"})
    assert out.attrs["model"] == "MitoNet_v1"


# ------------------------------------------------------------------------ OME-Zarr


def _json(path):
    return json.loads(path.read_text())


def test_ome_zarr_05_metadata(tmp_path):
    store = tmp_path / "o.ome.zarr"
    out = create_output(store, (4, 32, 40), np.uint32, name="mito", chunks=(2, 16, 16))
    assert out.path == "mito/0"
    root = _json(store / "zarr.json")["attributes"]["ome"]
    assert root == {"version": "0.5", "labels": ["mito"]}
    group = _json(store / "mito" / "zarr.json")["attributes"]["ome"]
    assert group["version"] == "0.5"
    assert "image-label" in group
    (ms,) = group["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a["type"] for a in ms["axes"]} == {"space"}
    assert ms["datasets"] == [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * 3}]}
    ]
    array = _json(store / "mito" / "0" / "zarr.json")
    assert array["shape"] == [4, 32, 40]
    assert array["data_type"] == "uint32"
    assert array["dimension_names"] == ["z", "y", "x"]
    # a second class joins the collection; readers find each by key
    create_output(store, (4, 32, 40), np.uint32, name="er")
    assert _json(store / "zarr.json")["attributes"]["ome"]["labels"] == ["mito", "er"]
    out[1] = 3
    assert int(open_image(store, key="mito")[1].max()) == 3
    assert int(open_image(store / "mito")[1].max()) == 3


def test_ome_zarr_04_metadata(tmp_path):
    store = tmp_path / "o.ome.zarr"
    out = create_output(store, (32, 40), np.uint32, ngff_version="0.4")
    assert _json(store / ".zattrs") == {"labels": ["labels"]}
    attrs = _json(store / "labels" / ".zattrs")
    assert attrs["image-label"] == {"version": "0.4"}
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert _json(store / "labels" / "0" / ".zarray")["shape"] == [32, 40]
    out[:] = 2
    assert int(open_image(store)[0, 0]) == 2  # the only label resolves without a key


def test_ome_zarr_version_clash(tmp_path):
    create_output(tmp_path / "o.ome.zarr", (4, 4), np.uint32, ngff_version="0.4")
    with pytest.raises(ValueError, match="zarr v2 store.*needs zarr v3"):
        create_output(tmp_path / "o.ome.zarr", (4, 4), np.uint32, name="b")


def test_ome_zarr_overwrite_and_resume(tmp_path):
    store = tmp_path / "o.ome.zarr"
    out = create_output(store, (2, 4, 4), np.uint32, params={"k": 1})
    out[:] = 1
    mark_done(out, [0, 1])
    with pytest.raises(FileExistsError):
        create_output(store, (2, 4, 4), np.uint32)
    again = create_output(store, (2, 4, 4), np.uint32, resume=True, params={"k": 1})
    assert done_keys(again) == [0, 1]
    assert int(again[...].min()) == 1
    fresh = create_output(store, (2, 4, 4), np.uint32, overwrite=True)
    assert int(fresh[...].max()) == 0
    assert done_keys(fresh) == []
    assert _json(store / "zarr.json")["attributes"]["ome"]["labels"] == ["labels"]


# ----------------------------------------------------------------------- resuming


PARAMS = {"model": "MitoNet_v1", "confidence_thr": 0.5, "axes": ("xy", "xz")}


def test_resume_after_crash(tmp_path):
    store = tmp_path / "run.zarr"
    shape = (8, 24, 24)
    expected = _labels(shape)
    out = create_output(store, shape, np.uint32, chunks=(4, 16, 16), params=PARAMS)
    for z in range(4):
        out[z] = expected[z]
        mark_done(out, z)
    out[4, :12] = expected[4, :12]  # slice 4 was being written when the process died
    del out

    out = create_output(store, shape, np.uint32, chunks=(4, 16, 16), resume=True,
                        params=dict(PARAMS))
    assert done_keys(out) == [0, 1, 2, 3]
    assert not is_done(out, 4)
    assert not is_complete(out)
    np.testing.assert_array_equal(out[:4], expected[:4])
    for z in range(8):
        if not is_done(out, z):
            out[z] = expected[z]
            mark_done(out, z)
    mark_done(out, "xy")
    mark_complete(out)

    final = create_output(store, shape, np.uint32, resume=True, params=PARAMS)
    assert is_complete(final)
    assert is_done(final, "xy")
    assert done_keys(final) == [*range(8), "xy"]
    assert final.attrs[PROGRESS_ATTR]["done_slices"] == [[0, 8]]
    np.testing.assert_array_equal(final[...], expected)


def test_resume_missing_store_creates_it(tmp_path):
    out = create_output(tmp_path / "new.zarr", (2, 4, 4), np.uint32, resume=True)
    assert done_keys(out) == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"params": {**PARAMS, "confidence_thr": 0.3}}, r"confidence_thr=0\.5 \(this run: 0\.3\)"),
        ({"params": {"model": "MitoNet_v1"}}, r"axes=\['xy', 'xz'\] \(this run: '<unset>'\)"),
        ({"shape": (9, 8, 8)}, r"shape \(8, 8, 8\) \(this run: \(9, 8, 8\)\)"),
        ({"dtype": np.uint64}, "dtype uint32"),
        ({"chunks": (2, 8, 8)}, "chunks"),
    ],
)
def test_resume_mismatch_asks_for_overwrite(tmp_path, change, match):
    create_output(tmp_path / "r.zarr", (8, 8, 8), np.uint32, params=PARAMS)
    kwargs = {"shape": (8, 8, 8), "dtype": np.uint32, "params": PARAMS, **change}
    with pytest.raises(ValueError, match=match + r".*--overwrite"):
        create_output(tmp_path / "r.zarr", resume=True, **kwargs)


def test_resume_without_record_refused(tmp_path):
    zarr.open_group(tmp_path / "r.zarr", mode="w").create_array(
        "labels", shape=(2, 2), dtype="uint32"
    )
    with pytest.raises(ValueError, match="no empanada progress record.*--overwrite"):
        create_output(tmp_path / "r.zarr", (2, 2), np.uint32, resume=True)


def test_progress_keys(tmp_path):
    out = create_output(tmp_path / "p.zarr", (20, 4, 4), np.uint32)
    mark_done(out, range(5, 8))
    mark_done(out, np.int64(2))
    mark_done(out, [3, 4, "xz"])
    mark_done(out, "xz")
    mark_done(out, 10)
    assert out.attrs[PROGRESS_ATTR]["done_slices"] == [[2, 8], [10, 11]]
    assert done_keys(out) == [2, 3, 4, 5, 6, 7, 10, "xz"]
    assert [is_done(out, k) for k in (1, 2, 7, 8, 10, 11, "xz", "yz")] == [
        False, True, True, False, True, False, True, False
    ]


@pytest.mark.parametrize(
    ("key", "error"), [(1.0, TypeError), (True, TypeError), ([None], TypeError), (-1, ValueError)]
)
def test_mark_done_bad_keys(tmp_path, key, error):
    out = create_output(tmp_path / "p.zarr", (2, 4, 4), np.uint32)
    with pytest.raises(error):
        mark_done(out, key)


def test_is_done_bad_key(tmp_path):
    out = create_output(tmp_path / "p.zarr", (2, 4, 4), np.uint32)
    with pytest.raises(TypeError, match="int or a str"):
        is_done(out, [1])


def test_progress_on_foreign_array(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=(2, 2), dtype="uint32")
    assert is_complete(array) is False
    for call in (lambda: mark_done(array, 0), lambda: is_done(array, 0),
                 lambda: mark_complete(array), lambda: done_keys(array)):
        with pytest.raises(ValueError, match="no empanada progress record"):
            call()


def test_progress_survives_reopening_with_zarr(tmp_path):
    out = create_output(tmp_path / "p.zarr", (2, 4, 4), np.uint32)
    mark_done(out, 0)
    reopened = zarr.open_group(tmp_path / "p.zarr", mode="r")["labels"]
    assert is_done(reopened, 0)
    assert not is_done(reopened, 1)


def test_private_label_conversion_keeps_uint():
    labels = np.zeros((2, 2), np.uint64)
    assert _writers._as_labels(labels) is labels
