"""3D Inference in a real viewer: real EM with the default model, the blob model for the rest."""

import time

import numpy as np
import pytest
from napari_helpers import Heartbeat, blobs, dock, wait_for

from empanada_napari import _models

NAME = "3D Inference"


def test_defaults_on_a_real_em_volume_keep_the_viewer_responsive(make_napari_viewer, qtbot,
                                                                 lucchi_3d):
    viewer = make_napari_viewer()
    layer = viewer.add_image(lucchi_3d, name="lucchi", scale=(5.0, 5.0, 5.0),
                             translate=(100.0, 0.0, 0.0))
    widget = dock(viewer, NAME)
    assert widget.model.value == "MitoLite_v1"
    widget.image_layer.value = layer
    # cold start: loading TorchScript and its first forward hold the GIL (measured, not
    # asserted: see docs/napari.md); the model then stays cached for the next runs
    assert widget.run() is not None
    wait_for(qtbot, widget)
    viewer.layers.remove("lucchi MitoLite_v1 mito")
    seen = []
    widget.controls._relay.progressed.connect(lambda d, t: seen.append((d, t)))
    beat = Heartbeat()
    beat.start()
    worker = widget.run()
    ended = []
    worker.returned.connect(lambda _: ended.append(time.perf_counter()))
    wait_for(qtbot, widget)
    beat.stop()
    out = viewer.layers["lucchi MitoLite_v1 mito"]
    assert out.data.dtype == np.uint32
    assert out.data.shape == lucchi_3d.shape
    assert len(np.unique(out.data)) - 1 >= 1
    np.testing.assert_array_equal(out.scale, layer.scale)
    np.testing.assert_array_equal(out.translate, layer.translate)
    # a real progress bar: every slice reported, in order, out of the slice count
    assert [d for d, _ in seen] == list(range(1, lucchi_3d.shape[0] + 1))
    assert {t for _, t in seen} == {lucchi_3d.shape[0]}
    # The Qt event loop kept running during the whole 3D run, up to the results' arrival
    # (napari itself then takes 0.2-0.5 s to add a labels layer). The target, a
    # block of at most 100 ms, is measured by benchmarks/napari.py (37-101 ms); on a
    # shared, overloaded CI machine the OS alone delays threads by 100-200 ms, so the
    # test's bound is 500 ms: still far below one slice run on the GUI thread, which is
    # what it must catch.
    assert beat.ticks > 20
    assert beat.max_gap_before(ended[0]) < 500, beat.max_gap_before(ended[0])


def test_cancel_stops_within_a_slice_and_adds_nothing(make_napari_viewer, qtbot, blob_model,
                                                      notes):
    vol = blobs((80, 48, 48), n=20, radius=5)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol")
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    seen = []

    def on_progress(done, total):
        seen.append((done, total))
        if done == 5:
            widget.controls.cancel()

    widget.controls._relay.progressed.connect(on_progress)
    widget.run()
    wait_for(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["vol"]
    # The engine checks should_stop before every slice (tested in empanada-infer); here the
    # progress reaches the GUI thread through queued signals, so the worker may be a few
    # slices ahead when Cancel is pressed: the run must stop long before its end.
    done, total = max(seen)
    assert done < total / 2
    assert "cancelled" in widget.controls.status.value
    assert any("cancelled" in n for n in notes())


def test_zarr_output_is_lazy_and_a_finished_run_is_reopened(make_napari_viewer, qtbot,
                                                           blob_model, tmp_path):
    import zarr

    vol = blobs((24, 48, 48), n=8, radius=6)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol")
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    widget.zarr_dir.value = tmp_path
    widget.min_size.value = 50
    widget.run()
    wait_for(qtbot, widget)
    out = viewer.layers["vol BlobNet_test blob"]
    assert isinstance(out.data, zarr.Array)  # napari reads it chunk by chunk
    assert out.data.dtype == np.uint32
    assert (tmp_path / "vol_BlobNet_test.zarr").is_dir()
    first = np.asarray(out.data)
    assert len(np.unique(first)) > 1
    _models.clear_cache()
    loads = _models.cache_info()["loads"]
    widget.run()
    wait_for(qtbot, widget)
    assert "reopened" in widget.controls.status.value
    assert _models.cache_info()["loads"] == loads  # nothing was segmented again
    np.testing.assert_array_equal(np.asarray(viewer.layers[-1].data), first)


def test_orthoplane_with_stacks(make_napari_viewer, qtbot, blob_model):
    vol = blobs((32, 32, 32), n=5, radius=6)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol")
    widget = dock(viewer, NAME)
    widget.model.value = blob_model
    widget.image_layer.value = layer
    widget.orthoplane.value = True
    widget.return_stacks.value = True
    widget.min_size.value = 50
    seen = []
    widget.controls._relay.progressed.connect(lambda d, t: seen.append((d, t)))
    widget.run()
    wait_for(qtbot, widget)
    names = [lay.name for lay in viewer.layers]
    assert names == ["vol", "vol BlobNet_test blob", "vol BlobNet_test stack xy",
                     "vol BlobNet_test stack xz", "vol BlobNet_test stack yz"]
    consensus = viewer.layers["vol BlobNet_test blob"].data
    assert consensus.shape == vol.shape
    assert len(np.unique(consensus)) - 1 >= 2
    assert seen[-1] == (sum(vol.shape), sum(vol.shape))
    assert not viewer.layers["vol BlobNet_test stack xy"].visible


@pytest.mark.parametrize("to_zarr", [False, True])
def test_multiclass_model_gives_one_layer_per_class(make_napari_viewer, qtbot, tmp_path,
                                                    to_zarr):
    import empanada_models as em
    from empanada_models.testing import write_test_model

    em.register_model("Blob3", write_test_model(tmp_path / "b3", name="Blob3", num_classes=3))
    vol = blobs((16, 40, 40), n=6, radius=6)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol")
    widget = dock(viewer, NAME)
    widget.reset_choices()
    widget.model.value = "Blob3"
    widget.image_layer.value = layer
    widget.min_size.value = 50
    if to_zarr:
        widget.zarr_dir.value = tmp_path
    widget.run()
    wait_for(qtbot, widget)
    blob = np.asarray(viewer.layers["vol Blob3 blob"].data)
    other = np.asarray(viewer.layers["vol Blob3 class2"].data)
    assert blob.dtype == np.uint32
    assert len(np.unique(blob)) > 1
    assert set(np.unique(blob[blob > 0]) // 10000) == {1}
    assert not other.any()


def test_bad_input_is_a_notification(make_napari_viewer, blob_model, notes):
    viewer = make_napari_viewer()
    layer = viewer.add_image(blobs((32, 32)), name="flat")
    widget = dock(viewer, NAME)
    widget.image_layer.value = layer
    assert widget.run() is None
    assert "3D" in notes()[-1]
    assert [lay.name for lay in viewer.layers] == ["flat"]
