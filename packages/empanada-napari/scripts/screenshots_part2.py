"""Screenshots of the proofreading, training-data and training widgets (docs/images/napari_*.png).

Real data: a 32 x 512 x 512 crop of the Lucchi FIB-SEM volume and its 3D mitochondria
labels from the shared data folder. Finetuning and training run for real on the CPU
(a few dozen iterations), so the plots show a real run. Registry changes go to a
throwaway ``EMPANADA_HOME``. Needs a display::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python \\
        packages/empanada-napari/scripts/screenshots_part2.py [proofread] [data] [training]

(the sections named, or all three; training needs the dataset that ``data`` writes).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import demo_dir, dock, fresh_viewer, shoot, wait  # noqa: E402

from empanada_napari._common import viewer_camera  # noqa: E402

TINY_CONFIG = """\
MODEL:
  arch: PanopticDeepLabPR
  encoder: regnety_200mf
  stage4_stride: 32
  decoder_channels: 32
  low_level_channels_project: [16]
  train_num_points: 128
  subdivision_num_points: 512
"""


def centre(labels, label_id, z):
    pts = np.argwhere(labels[z] == label_id)
    mid = pts.mean(0)
    return np.array([z, *pts[np.argmin(((pts - mid) ** 2).sum(1))]])


def touching_pair(labels, z):
    """Two labels of slice ``z`` close to each other (to show a merge)."""
    from scipy import ndimage as ndi

    plane = labels[z]
    ids = [i for i in np.unique(plane) if i]
    best = None
    for a in ids:
        dist = ndi.distance_transform_edt(plane != a)
        for b in ids:
            if b <= a:
                continue
            d = dist[plane == b].min()
            if best is None or d < best[0]:
                best = (d, a, b)
    return best[1], best[2]


def main():
    os.environ.setdefault("EMPANADA_HOME", tempfile.mkdtemp(prefix="empanada-shots-"))
    import tifffile

    from empanada_core.testing import find_data_dir

    base = find_data_dir()
    if base is None:
        sys.exit("the shared data folder was not found; set EMPANADA_DATA_DIR")
    folder = Path(base) / "lucchi_epfl_hippocampus"
    box = (slice(16, 48), slice(128, 640), slice(384, 896))
    with tifffile.TiffFile(folder / "images.tif") as tif:
        vol = tif.asarray(key=range(16, 48))[:, box[1], box[2]]
    truth = tifffile.imread(folder / "mito_instances_3d.tif")[box].astype(np.uint32)
    z = 16
    import napari  # noqa: F401

    def scene(name="Lucchi FIB-SEM mito"):
        viewer = fresh_viewer(None)
        image = viewer.add_image(vol, name="Lucchi FIB-SEM")
        labels = viewer.add_labels(truth.copy(), name=name, opacity=0.55)
        viewer.dims.set_current_step(0, z)
        viewer.reset_view()
        return viewer, image, labels

    from napari.qt import get_qapp

    app = get_qapp()
    a, b = touching_pair(truth, z)
    ids = [i for i in np.unique(truth[z]) if i]
    sections = [arg for arg in sys.argv[1:] if not arg.startswith("-")] or [
        "proofread", "data", "training"]
    if "proofread" in sections:
        proofread_shots(app, scene, truth, z, a, b)
    datasets = demo_dir("datasets")
    if "data" in sections:
        data_shots(app, vol, truth, z, a, b, ids, datasets)
    if "training" in sections:
        training_shots(app, vol, datasets)


def proofread_shots(app, scene, truth, z, a, b):

    # merge: two touching objects, then merged (the status line says what happened)
    viewer, image, labels = scene()
    points = viewer.add_points(np.array([centre(truth, a, z), centre(truth, b, z)], float),
                               name="clicks", size=12, face_color="red")
    w = dock(viewer, "Merge Labels")
    w.labels_layer.value, w.points_layer.value = labels, points
    w.apply_3d.value = True
    shoot(viewer, app, "merge_labels_before")
    w.run()
    viewer.layers.selection.active = labels
    shoot(viewer, app, "merge_labels")

    # split the merged pair again from two points
    points.data = np.array([centre(truth, a, z), centre(truth, b, z)], float)
    viewer.window.remove_dock_widget("all")
    w = dock(viewer, "Split Labels")
    w.labels_layer.value, w.points_layer.value = labels, points
    w.apply_3d.value = True
    w.points_as_markers.value = True
    w.run()
    shoot(viewer, app, "split_labels")
    viewer.close()

    # delete one object in this slice only; morph (dilate) another
    viewer, image, labels = scene()
    ids = [i for i in np.unique(truth[z]) if i]
    points = viewer.add_points(np.array([centre(truth, ids[0], z)], float), name="clicks",
                               size=12, face_color="red")
    w = dock(viewer, "Delete Labels")
    w.labels_layer.value, w.points_layer.value = labels, points
    w.run()
    shoot(viewer, app, "delete_labels")
    viewer.window.remove_dock_widget("all")
    points.data = np.array([centre(truth, ids[1], z)], float)
    w = dock(viewer, "Morph Labels")
    w.labels_layer.value, w.points_layer.value = labels, points
    w.radius.value = 4
    w.run()
    shoot(viewer, app, "morph_labels")
    viewer.close()

    # filter boundary labels into a new layer; count labels with the table
    viewer, image, labels = scene()
    w = dock(viewer, "Filter Labels")
    w.labels_layer.value = labels
    w.remove.value = "Boundary labels"
    w.apply_to.value = "Current image"
    w.run()
    labels.visible = False
    shoot(viewer, app, "filter_labels")
    viewer.window.remove_dock_widget("all")
    labels.visible = True
    viewer.layers[-1].visible = False
    w = dock(viewer, "Count Labels")
    w.labels_layer.value = labels
    w.csv_path.value = demo_dir("counts") / "lucchi_mito_counts.csv"
    w.run()
    viewer.layers.selection.active = labels
    shoot(viewer, app, "count_labels")
    viewer.close()

    # jump to a label; next available label for painting
    viewer, image, labels = scene()
    w = dock(viewer, "Jump to label")
    w.labels_layer.value = labels
    found, sizes = np.unique(truth[truth > 0], return_counts=True)
    w.label_id.value = int(found[np.argmax(sizes)])  # the biggest: easy to see
    viewer.dims.set_current_step(0, 0)
    w.run()
    labels.show_selected_label = True
    shoot(viewer, app, "jump_to_label")
    labels.show_selected_label = False
    viewer.window.remove_dock_widget("all")
    w = dock(viewer, "Find next available label")
    w.labels_layer.value = labels
    w.run()
    shoot(viewer, app, "next_label")
    viewer.close()



def data_shots(app, vol, truth, z, a, b, ids, datasets):
    """Pick flipbooks from points with paired labels; save them (and a validation set)."""
    import shutil

    viewer = fresh_viewer(app)
    image = viewer.add_image(vol, name="lucchi")
    paired = viewer.add_labels(truth.copy(), name="lucchi_mito", visible=False)
    points = viewer.add_points(np.array([centre(truth, a, z), centre(truth, b, z)],
                                        float), name="hard areas", size=12,
                               face_color="red")
    pick = dock(viewer, "Pick finetune/training patches")
    pick.image_layer.value, pick.points_layer.value = image, points
    pick.n_patches.value, pick.patch_size.value = 16, 128  # xy flipbooks: the crop is
    # only 32 slices deep, so xz / yz planes would be mostly padding
    pick.paired.value, pick.labels_layer.value = True, paired
    books, book_labels = pick.run()
    image.visible = False
    book_labels.opacity = 0.5
    # frame one flipbook (reset_view would fit the hidden 512 px source as well)
    viewer_camera(viewer).center = (64, 64)
    viewer_camera(viewer).zoom = 5
    shoot(viewer, app, "pick_patches")
    save = dock(viewer, "Save finetune/training patches")
    save.image_layer.value = books
    shutil.rmtree(datasets / "lucchi_mito", ignore_errors=True)
    save.save_dir.value = datasets
    save.dataset_name.value = "lucchi_mito"
    save.overwrite.value = True  # the folder is reused between runs of this script
    save.run()
    shoot(viewer, app, "save_patches")
    # a few more patches so the dataset holds enough for training
    for _ in range(2):
        more, _ = pick.run()
        save.image_layer.value = more
        save.run()
    # a small validation set: 8 more random flipbooks
    shutil.rmtree(datasets / "lucchi_mito_val", ignore_errors=True)
    pick.n_patches.value = 8
    val, _ = pick.run()
    save.image_layer.value = val
    save.dataset_name.value = "lucchi_mito_val"
    save.run()
    viewer.close()


def training_shots(app, vol, datasets):
    data, val = datasets / "lucchi_mito", datasets / "lucchi_mito_val"
    viewer = fresh_viewer(app)
    viewer.add_image(vol, name="Lucchi FIB-SEM")
    ft = dock(viewer, "Finetune a model")
    ft.model_name.value = "MitoLite_lucchi"
    ft.train_dir.value, ft.eval_dir.value = data, val
    ft.model_dir.value = demo_dir("models") / "MitoLite_lucchi"
    ft.layers.value = "none"  # decoders and heads: stable on 48 patches
    ft.iterations.value, ft.batch_size.value, ft.patch_size.value = 30, 4, 128
    ft.overwrite.value = True
    ft.run()
    wait(app, ft, timeout=3000)
    shoot(viewer, app, "finetune_model")
    viewer.close()

    config = demo_dir("configs") / "tiny_pdl.yaml"
    config.write_text(TINY_CONFIG)
    viewer = fresh_viewer(app)
    viewer.add_image(vol, name="Lucchi FIB-SEM")
    tr = dock(viewer, "Train a model")
    tr.model_name.value = "TinyMito_lucchi"
    tr.train_dir.value, tr.eval_dir.value = data, val
    tr.model_dir.value = demo_dir("models") / "TinyMito_lucchi"
    tr.custom_config.value = config
    tr.iterations.value, tr.batch_size.value, tr.patch_size.value = 100, 8, 128
    tr.description.value = "Tiny PDL trained on 48 Lucchi patches (screenshot run)"
    tr.overwrite.value = True
    tr.run()
    wait(app, tr, timeout=3000)
    shoot(viewer, app, "train_model")
    viewer.close()


if __name__ == "__main__":
    main()
