"""Finetune and Train widgets: progress, live plot, Cancel with a kept checkpoint, resume,
registration into every model list; and the finetuning tutorial end to end."""

import numpy as np
import pytest
from napari_helpers import dock, wait_for

torch = pytest.importorskip("torch")

# RegNetY-200MF at output stride 32 with a narrow decoder: trains in a blink on a CPU
TINY_CONFIG = """\
MODEL:
  arch: PanopticDeepLabPR
  encoder: regnety_200mf
  stage4_stride: 32
  decoder_channels: 32
  low_level_channels_project: [16]
  train_num_points: 128
  subdivision_num_points: 512
TRAIN:
  seed: 0
"""


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def lucchi_dataset(make_napari_viewer, lucchi_image_3d, lucchi_labels_3d, tmp_path):
    """A dataset of 4 real Lucchi 2D patches (64 px) with their true masks, made with the
    Pick and Save widgets; returns (viewer, dataset folder)."""
    viewer = make_napari_viewer()
    image = viewer.add_image(lucchi_image_3d[12], name="lucchi")
    truth = viewer.add_labels(lucchi_labels_3d[12].astype(np.uint32), name="truth")
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value = image
    pick.n_patches.value, pick.patch_size.value = 4, 64
    pick.paired.value, pick.labels_layer.value = True, truth
    out, _ = pick.run()
    save = dock(viewer, "Save finetune/training patches")
    save.image_layer.value = out
    save.save_dir.value, save.dataset_name.value = tmp_path / "datasets", "lucchi_mito"
    assert len(save.run()) == 4
    return viewer, tmp_path / "datasets" / "lucchi_mito"


def choices(widget, attr="model"):
    return list(getattr(widget, attr).choices)


def test_finetune_cancel_keeps_the_checkpoint_and_resume_finishes(lucchi_dataset, qtbot,
                                                                  tmp_path):
    viewer, data = lucchi_dataset
    inference = dock(viewer, "2D Inference (Parameter Testing)")
    widget = dock(viewer, "Finetune a model")
    assert widget.base_model.value == "MitoLite_v1"
    widget.model_name.value = "MitoLite_lucchi"
    widget.train_dir.value = data
    widget.model_dir.value = tmp_path / "models"
    widget.iterations.value, widget.batch_size.value, widget.patch_size.value = 6, 2, 64
    assert widget.run() is not None
    qtbot.waitUntil(lambda: len(widget.plot.losses) >= 2, timeout=120_000)
    assert "Finetune a model: " in widget.controls.status.value
    widget.controls.cancel()
    wait_for(qtbot, widget)
    result = widget.result
    assert result.stopped
    assert 2 <= result.iterations < 6
    assert result.checkpoint_path.is_file()
    assert widget.resume.value == result.checkpoint_path
    assert "MitoLite_lucchi" not in choices(inference)  # nothing registered yet
    stopped_at = result.iterations
    assert widget.run() is not None  # resumes from the checkpoint the box holds
    wait_for(qtbot, widget)
    result = widget.result
    assert not result.stopped
    assert result.iterations == 6
    assert [row["iteration"] for row in result.history] == list(range(1, 7))
    assert widget.plot.iterations == list(range(stopped_at + 1, 7))
    assert all(np.isfinite(widget.plot.losses))
    assert "MitoLite_lucchi" in choices(inference)  # in every open model list at once
    assert "MitoLite_lucchi registered" in widget.controls.status.value


def test_train_from_a_custom_config_with_validation_plot(lucchi_dataset, qtbot, tmp_path):
    viewer, data = lucchi_dataset
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    finetune = dock(viewer, "Finetune a model")
    widget = dock(viewer, "Train a model")
    assert not widget.use_cem.value or widget.use_cem.enabled
    widget.model_name.value = "TinyMito"
    widget.train_dir.value = widget.eval_dir.value = data
    widget.model_dir.value = tmp_path / "tiny"
    widget.custom_config.value = config
    widget.iterations.value, widget.batch_size.value, widget.patch_size.value = 3, 2, 64
    widget.use_cem.value = False
    widget.description.value = "tiny Lucchi test model"
    assert widget.run() is not None
    wait_for(qtbot, widget)
    result = widget.result
    assert result is not None
    assert result.iterations == 3
    assert widget.plot.eval_iterations  # validation scores were plotted
    assert all(0 <= v <= 1 for v in widget.plot.scores["semantic_iou"])
    assert "TinyMito" in choices(finetune, "base_model")
    import empanada_models as em

    cfg = em.get_model_config("TinyMito")
    assert cfg.description == "tiny Lucchi test model"
    assert cfg.to_dict()["MODEL"]["encoder"] == "regnety_200mf"  # the custom MODEL won


def test_training_input_errors_are_notifications(make_napari_viewer, notes, tmp_path):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Train a model")
    assert widget.run() is None
    assert "train directory" in notes()[-1]
    widget.train_dir.value = tmp_path
    widget.labels_text.value = "1,mito"
    assert widget.run() is None
    assert "Train a model:" in notes()[-1]
    finetune = dock(viewer, "Finetune a model")
    finetune.model_name.value = "has space"
    finetune.train_dir.value = tmp_path
    assert finetune.run() is None
    assert "without spaces" in notes()[-1]


def test_the_finetuning_tutorial_end_to_end(make_napari_viewer, qtbot, lucchi_image_3d,
                                            lucchi_labels_3d, tmp_path):
    """Spec tutorial "Finetuning an existing model", click by click: points on hard areas,
    pick flipbooks with paired labels, save them, finetune the default model, run 2D
    inference with the new model."""
    viewer = make_napari_viewer()
    image = viewer.add_image(lucchi_image_3d, name="lucchi_em", scale=(5, 5, 5))
    truth = viewer.add_labels(lucchi_labels_3d.astype(np.uint32), name="lucchi_mitos",
                              scale=(5, 5, 5))
    points = viewer.add_points(np.array([[16, 64, 64], [16, 180, 190]]) * 5.0, name="hard")
    info = dock(viewer, "Get model info")
    assert "divisible by 16" in info.info.value
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value, pick.points_layer.value = image, points
    pick.n_patches.value, pick.patch_size.value = 4, 64
    pick.isotropic.value = True  # 5 nm isotropic voxels
    pick.paired.value, pick.labels_layer.value = True, truth
    books, book_labels = pick.run()
    assert books.data.shape == (4, 5, 64, 64)
    assert book_labels.data[:, 2].any()  # the true mitochondria, ready to correct
    save = dock(viewer, "Save finetune/training patches")
    save.image_layer.value = books
    save.save_dir.value, save.dataset_name.value = tmp_path, "tutorial"
    assert len(save.run()) == 4
    finetune = dock(viewer, "Finetune a model")
    finetune.model_name.value = "MitoLite_tutorial"
    finetune.train_dir.value = finetune.eval_dir.value = tmp_path / "tutorial"
    finetune.model_dir.value = tmp_path / "model"
    finetune.layers.value = "all"
    finetune.iterations.value, finetune.batch_size.value, finetune.patch_size.value = 2, 2, 64
    assert finetune.run() is not None
    wait_for(qtbot, finetune)
    assert finetune.result is not None
    assert not finetune.result.stopped
    assert finetune.plot.eval_iterations[-1] == 2  # validated at the end
    inference = dock(viewer, "2D Inference (Parameter Testing)")
    inference.model.value = "MitoLite_tutorial"
    inference.image_layer.value = image
    viewer.dims.set_point(viewer.dims.ndim - 3, 16 * 5.0)  # the volume's slice 16 (the
    # flipbooks added a 4th viewer axis in front)
    assert inference.run() is not None
    wait_for(qtbot, inference)
    out = viewer.layers["lucchi_em MitoLite_tutorial mito xy 16"]
    assert out.data.shape == (1, 256, 256)
    assert out.data.dtype == np.uint32
