"""Register, inspect, export, import and archive models; the model lists follow live."""

from napari_helpers import dock, wait_for


def choices(widget):
    return list(widget.model.choices)


def test_register_info_export_import_archive_with_live_lists(make_napari_viewer, qtbot,
                                                             tmp_path):
    from empanada_models.testing import write_test_model

    viewer = make_napari_viewer()
    inference_2d = dock(viewer, "2D Inference (Parameter Testing)")
    inference_3d = dock(viewer, "3D Inference")
    info = dock(viewer, "Get model info")
    assert "MyBlob" not in choices(inference_2d)

    register = dock(viewer, "Register a model")
    register.model_name.value = "MyBlob"
    register.config_file.value = write_test_model(tmp_path / "src")
    assert register.run() is not None
    # every open widget lists the new model at once, without reopening
    for widget in (inference_2d, inference_3d, info):
        assert "MyBlob" in choices(widget)

    info.model.value = "MyBlob"
    text = info.info.value
    assert text.startswith("MyBlob (user)\n")
    assert "classes: 1 blob (instance)" in text
    assert "training data label divisor: 1000" in text
    assert "label its objects 1001, 1002" in text

    export = dock(viewer, "Export a model")
    export.model.value = "MyBlob"
    export.export_dir.value = tmp_path
    assert export.run() is not None
    wait_for(qtbot, export)
    bundle = tmp_path / "MyBlob.empanada"
    assert bundle.is_file()

    importer = dock(viewer, "Import a model")
    importer.bundle.value = bundle
    importer.model_name.value = "MyBlobCopy"
    assert importer.run() is not None
    assert "MyBlobCopy" in choices(inference_2d)

    archive = dock(viewer, "Archive a model")
    archive.model.value = "MyBlobCopy"
    assert archive.run() is not None
    assert "MyBlobCopy" not in choices(inference_2d)
    assert "MyBlobCopy" not in choices(archive)
    assert "MyBlob" in choices(inference_3d)


def test_model_errors_are_notifications(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    register = dock(viewer, "Register a model")
    assert register.run() is None
    assert "name" in notes()[-1]
    register.model_name.value = "bad name"
    register.config_file.value = tmp_path / "missing.yaml"
    assert register.run() is None
    assert "config" in notes()[-1]
    archive = dock(viewer, "Archive a model")
    archive.model.value = "MitoLite_v1"
    assert archive.run() is None
    assert "built-in" in notes()[-1]
    importer = dock(viewer, "Import a model")
    (tmp_path / "junk.empanada").write_bytes(b"not a zip")
    importer.bundle.value = tmp_path / "junk.empanada"
    assert importer.run() is None
    assert "Import a model" in notes()[-1]


def test_default_model_info_is_shown_in_the_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    info = dock(viewer, "Get model info")
    assert info.model.value == "MitoLite_v1"
    assert "MitoLite_v1 (built-in)" in info.info.value
    assert "divisible by 16" in info.info.value
