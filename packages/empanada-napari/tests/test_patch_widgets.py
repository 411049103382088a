"""Pick and Save training patches in a real viewer, on the real Lucchi volume."""

import numpy as np
import pytest
import tifffile
from napari_helpers import dock


def test_flipbooks_from_points_and_random_then_saved_and_appended(make_napari_viewer,
                                                                  lucchi_image_3d, tmp_path,
                                                                  notes):
    viewer = make_napari_viewer()
    image = viewer.add_image(lucchi_image_3d, name="lucchi", scale=(5, 5, 5))
    points = viewer.add_points(np.array([[15, 60, 70], [20, 200, 180], [8, 128, 128]]) * 5.0,
                               name="rois")
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value, pick.points_layer.value = image, points
    pick.n_patches.value, pick.patch_size.value = 4, 64
    out, labels = pick.run()
    assert out.name == "lucchi_flipbooks"
    assert labels.name == "lucchi_flipbooks_labels"
    assert out.data.shape == (4, 5, 64, 64)
    assert labels.data.shape == out.data.shape
    assert labels.data.dtype == np.uint32
    assert not labels.data.any()
    assert len(points.data) == 0  # the 3 points were used up
    # the first flipbook is centred on the first point (z 15, y 60, x 70) in xy planes
    np.testing.assert_array_equal(out.data[0], lucchi_image_3d[13:18, 28:92, 38:102])
    assert viewer.dims.current_step[:2] == (0, 2)  # the slice to annotate
    # annotate the middle slices, then save
    labels.data[:, 2, 10:30, 10:30] = 1
    save = dock(viewer, "Save finetune/training patches")
    save.image_layer.value = out
    assert save.labels_layer.value.name == labels.name  # paired automatically
    save.save_dir.value, save.dataset_name.value = tmp_path, "mito"
    written = save.run()
    assert len(written) == 4
    image_file, mask_file = written[0]
    np.testing.assert_array_equal(tifffile.imread(image_file), out.data[0, 2])
    assert tifffile.imread(mask_file)[15, 15] == 1
    assert "holds 4 now" in save.status.value
    # saving the same patches again is refused; new patches are appended
    assert save.run() is None
    assert "already saved" in notes()[-1]
    out2, _ = pick.run()
    save.image_layer.value = out2
    assert len(save.run()) == 4
    assert "holds 8 now" in save.status.value


def test_paired_patches_from_a_2d_image_crop_the_labels(make_napari_viewer, lucchi_image_3d,
                                                        lucchi_labels_3d):
    viewer = make_napari_viewer()
    image = viewer.add_image(lucchi_image_3d[10], name="em")
    truth = viewer.add_labels(lucchi_labels_3d[10].astype(np.uint32), name="truth")
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value = image
    pick.n_patches.value, pick.patch_size.value = 3, 128
    pick.paired.value, pick.labels_layer.value = True, truth
    out, labels = pick.run()
    assert out.data.shape == (3, 128, 128)
    for i, meta in enumerate(out.metadata["empanada_patches"]["patches"]):
        (y0, y1), (x0, x1) = meta["valid"]
        oy, ox = meta["origin"][1:]
        np.testing.assert_array_equal(labels.data[i][y0:y1, x0:x1],
                                      truth.data[oy:oy + y1 - y0, ox:ox + x1 - x0])


def test_stack_mode_and_isotropic_planes(make_napari_viewer, lucchi_image_3d):
    viewer = make_napari_viewer()
    image = viewer.add_image(lucchi_image_3d, name="stack")
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value = image
    pick.n_patches.value, pick.patch_size.value = 5, 64
    pick.is_stack.value = True
    out, _ = pick.run()
    assert out.name == "stack_patches"
    assert out.data.shape == (5, 64, 64)
    pick.is_stack.value = False
    pick.isotropic.value = True
    pick.n_patches.value = 12
    out, _ = pick.run()
    axes = {m["axis"] for m in out.metadata["empanada_patches"]["patches"]}
    assert axes <= {0, 1, 2}
    assert len(axes) > 1  # planes along more than one axis


def test_save_refuses_layers_that_do_not_match(make_napari_viewer, lucchi_image_3d, tmp_path,
                                               notes):
    viewer = make_napari_viewer()
    plain = viewer.add_image(lucchi_image_3d[:, :64, :64], name="plain")
    plain_labels = viewer.add_labels(np.zeros((32, 64, 64), np.uint32), name="plain labels")
    save = dock(viewer, "Save finetune/training patches")
    save.image_layer.value, save.labels_layer.value = plain, plain_labels
    save.save_dir.value, save.dataset_name.value = tmp_path, "ds"
    assert save.run() is None
    assert "was not made by 'Pick finetune/training patches'" in notes()[-1]
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value = viewer.layers["plain"]
    pick.n_patches.value, pick.patch_size.value = 2, 32
    out, labels = pick.run()
    save.image_layer.value, save.labels_layer.value = out, plain_labels
    assert save.run() is None
    assert "has shape" in notes()[-1]
    save.labels_layer.value = labels
    save.dataset_name.value = ""
    assert save.run() is None
    assert "name" in notes()[-1]
    assert not any(tmp_path.iterdir())  # nothing written by the refused saves


@pytest.mark.parametrize("bad", ["n", "size"])
def test_pick_errors_are_notifications(make_napari_viewer, lucchi_image_3d, notes, bad):
    viewer = make_napari_viewer()
    image = viewer.add_image(lucchi_image_3d[0, :100, :100], name="small")
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value = image
    pick.patch_size.value = 64
    pick.n_patches.value = 50 if bad == "n" else 1
    if bad == "size":
        pick.paired.value = True
    assert pick.run() is None
    assert notes()[-1].startswith("Pick patches:")
    assert len(viewer.layers) == 1
