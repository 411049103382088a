"""2D Inference (Parameter Testing) in a real viewer, on real EM and on the blob model."""

import numpy as np
import pytest
from napari_helpers import blobs, dock, wait_for
from scipy import ndimage

from empanada_napari import _models

NAME = "2D Inference (Parameter Testing)"


def run(qtbot, widget):
    worker = widget.run()
    assert worker is not None
    wait_for(qtbot, widget)


def test_defaults_on_a_real_em_image(make_napari_viewer, qtbot, lucchi_2d):
    viewer = make_napari_viewer()
    layer = viewer.add_image(lucchi_2d, name="lucchi", scale=(5.0, 5.0), translate=(10, 20))
    widget = dock(viewer, NAME)
    assert widget.model.value == "MitoLite_v1"
    widget.image_layer.value = layer
    run(qtbot, widget)
    out = viewer.layers["lucchi MitoLite_v1 mito"]
    assert out.data.dtype == np.uint32
    assert out.data.shape == lucchi_2d.shape
    assert len(np.unique(out.data)) - 1 >= 2  # this crop shows several mitochondria
    assert set(np.unique(out.data[out.data > 0]) // 10000) == {1}
    np.testing.assert_array_equal(out.scale, layer.scale)
    np.testing.assert_array_equal(out.translate, layer.translate)
    assert "mito" in widget.controls.status.value
    # a second run with other thresholds reuses the loaded model
    loads = _models.cache_info()["loads"]
    widget.center_thr.value = 0.3
    run(qtbot, widget)
    assert _models.cache_info()["loads"] == loads
    assert "lucchi MitoLite_v1 mito [1]" in viewer.layers


@pytest.mark.parametrize(("order", "axis", "plane"), [((0, 1, 2), 0, "xy"),
                                                      ((1, 0, 2), 1, "xz"),
                                                      ((2, 0, 1), 2, "yz")])
def test_the_plane_on_screen_of_a_volume(make_napari_viewer, qtbot, blob_model, order, axis,
                                         plane):
    vol = blobs((40, 48, 56), n=12, radius=6)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol", scale=(2.0, 1.0, 1.0))
    viewer.dims.order = order
    viewer.dims.set_current_step(axis, 17)
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    run(qtbot, widget)
    out = viewer.layers[f"vol BlobNet_test blob {plane} 17"]
    expected = list(vol.shape)
    expected[axis] = 1
    assert out.data.shape == tuple(expected)
    assert out.data.dtype == np.uint32
    truth = np.take(vol, 17, axis=axis) < 100
    got = np.take(out.data, 0, axis=axis) > 0
    assert (got == truth).mean() > 0.98
    assert out.translate[axis] == 17 * layer.scale[axis]
    np.testing.assert_array_equal(out.scale, layer.scale)


def test_batch_mode_segments_each_image(make_napari_viewer, qtbot, blob_model):
    stack = np.stack([blobs((64, 64), n=k + 1, seed=k) for k in range(3)])
    viewer = make_napari_viewer()
    layer = viewer.add_image(stack, name="stack")
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    widget.batch_mode.value = True
    run(qtbot, widget)
    out = viewer.layers["stack BlobNet_test blob batch"]
    assert out.data.shape == stack.shape
    expected = [ndimage.label(image < 100)[1] for image in stack]  # blobs per image
    assert [len(np.unique(s)) - 1 for s in out.data] == expected


def test_roi_limits_the_result(make_napari_viewer, qtbot, blob_model):
    img = blobs((96, 96), n=10, radius=5)
    viewer = make_napari_viewer()
    layer = viewer.add_image(img, name="img")
    shapes = viewer.add_shapes([np.array([[10, 10], [10, 50], [60, 50], [60, 10]])],
                               shape_type="rectangle", name="roi")
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    widget.roi_layer.value = shapes
    run(qtbot, widget)
    out = viewer.layers["img BlobNet_test blob"].data
    assert out.shape == img.shape
    outside = np.ones(img.shape, bool)
    outside[10:61, 10:51] = False
    assert not out[outside].any()
    assert out[~outside].any()


def test_multiclass_and_semantic_only_give_one_layer_per_class(make_napari_viewer, qtbot,
                                                                tmp_path):
    import empanada_models as em
    from empanada_models.testing import write_test_model

    em.register_model("Blob3", write_test_model(tmp_path / "b3", name="Blob3", num_classes=3))
    img = blobs((64, 64), n=4)
    viewer = make_napari_viewer()
    layer = viewer.add_image(img, name="img")
    widget = dock(viewer, NAME)
    widget.reset_choices()
    widget.model.value = "Blob3"
    widget.image_layer.value = layer
    widget.semantic_only.value = True
    run(qtbot, widget)
    blob = viewer.layers["img Blob3 blob"].data
    other = viewer.layers["img Blob3 class2"].data
    assert set(np.unique(blob)) == {0, 10000}  # one semantic region of class 1
    assert not other.any()


def test_output_to_layer_writes_the_plane(make_napari_viewer, qtbot, blob_model):
    vol = blobs((20, 48, 48), n=6)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol")
    target = viewer.add_labels(np.zeros(vol.shape, np.uint32), name="edit")
    viewer.dims.set_current_step(0, 9)
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    widget.output_to_layer.value = True
    widget.output_layer.value = target
    n_layers = len(viewer.layers)
    run(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert target.data[9].any()
    assert not target.data[8].any()


def test_errors_are_notifications_and_add_nothing(make_napari_viewer, qtbot, blob_model,
                                                  notes, monkeypatch):
    viewer = make_napari_viewer()
    rgb = viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    widget = dock(viewer, NAME)
    widget.image_layer.value = rgb
    n_layers = len(viewer.layers)
    assert widget.run() is None
    assert "RGB" in notes()[-1]
    img = viewer.add_image(blobs((32, 32)), name="img")
    widget.image_layer.value = img
    widget.batch_mode.value = True
    assert widget.run() is None
    assert "batch mode needs a stack" in notes()[-1]
    widget.batch_mode.value = False

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("empanada_napari._inference_2d.get_segmenter", no_memory)
    widget.model.value = blob_model
    run(qtbot, widget)
    assert "Out of memory" in notes()[-1]
    assert len(viewer.layers) == n_layers + 1  # only the image added above
