"""Export Segmentations and the writer behind it."""

import numpy as np
import pytest
import tifffile
from napari_helpers import dock, wait_for

from empanada_napari._export import export_labels, squeeze_labels


def test_squeeze_drops_plane_axes():
    assert squeeze_labels(np.zeros((1, 5, 6), np.int64)).shape == (5, 6)
    assert squeeze_labels(np.zeros((3, 1, 6))).shape == (3, 6)
    assert squeeze_labels(np.zeros((4, 5, 6))).shape == (4, 5, 6)


@pytest.mark.parametrize("fmt", ["tiff", "slices", "zarr"])
def test_export_formats_are_uint32_and_complete(tmp_path, fmt):
    import zarr

    labels = np.arange(3 * 4 * 5, dtype=np.int64).reshape(3, 4, 5) + 70000
    paths = export_labels(labels, tmp_path, "seg", fmt)
    if fmt == "tiff":
        back = tifffile.imread(paths[0])
    elif fmt == "slices":
        assert [p.name for p in paths] == ["seg_0000.tif", "seg_0001.tif", "seg_0002.tif"]
        back = np.stack([tifffile.imread(p) for p in paths])
    else:
        back = zarr.open_group(str(paths[0]), mode="r")["labels"][...]
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(FileExistsError):
        export_labels(labels, tmp_path, "seg", fmt)
    export_labels(labels, tmp_path, "seg", fmt, overwrite=True)
    assert not list(tmp_path.rglob("*partial*"))


def test_slices_take_the_source_names(tmp_path):
    labels = np.ones((2, 4, 4), np.uint8)
    paths = export_labels(labels, tmp_path, "seg", "slices", slice_names=["a.png", "b.tif"])
    assert [p.name for p in paths] == ["a.tif", "b.tif"]
    with pytest.raises(ValueError, match="slice names"):
        export_labels(labels, tmp_path, "x", "slices", slice_names=["a.png"])


def test_bad_labels_are_refused(tmp_path):
    with pytest.raises(TypeError, match="integers"):
        export_labels(np.zeros((4, 4), float), tmp_path, "f")
    with pytest.raises(ValueError, match="uint32"):
        export_labels(np.full((4, 4), -1), tmp_path, "neg")
    with pytest.raises(ValueError, match="fmt"):
        export_labels(np.zeros((4, 4), int), tmp_path, "x", "png")


def test_widget_exports_a_plane_result_squeezed(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((1, 8, 9), np.uint32)
    data[0, 2:4, 2:5] = 10001
    viewer.add_labels(data, name="vol MitoLite_v1 mito xy 3")
    widget = dock(viewer, "Export Segmentations")
    widget.folder.value = tmp_path
    widget.run()
    wait_for(qtbot, widget)
    back = tifffile.imread(tmp_path / "vol_MitoLite_v1_mito_xy_3.tif")
    assert back.shape == (8, 9)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, data[0])


def test_widget_uses_source_file_names_from_batch_mode(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((2, 4, 4), np.uint32), name="batch",
                      metadata={"empanada": {"source_files": ["cell_a.tif", "cell_b.tif"]}})
    widget = dock(viewer, "Export Segmentations")
    widget.folder.value = tmp_path
    widget.fmt.value = "TIFF (one file per slice)"
    widget.run()
    wait_for(qtbot, widget)
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["cell_a.tif",
                                                                     "cell_b.tif"]
