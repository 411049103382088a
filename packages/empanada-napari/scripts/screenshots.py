"""Render every widget docked in a napari viewer with its result into docs/images/napari_*.png.

Real EM: the Lucchi FIB-SEM volume from the shared data folder (``$EMPANADA_DATA_DIR`` or
``../shared/data``), segmented with the built-in MitoLite_v1 on the CPU. Registry changes
go to a throwaway ``EMPANADA_HOME``. Needs a display (``xvfb-run -a``)::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python \\
        packages/empanada-napari/scripts/screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from empanada_napari._common import viewer_camera

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "docs" / "images"
SIZE = (1500, 950)


def wait(app, widget, timeout=600):
    t0 = time.time()
    while widget.controls.running:
        app.processEvents()
        time.sleep(0.01)
        if time.time() - t0 > timeout:
            sys.exit(f"{type(widget).__name__} did not finish in {timeout} s")
    for _ in range(20):
        app.processEvents()


def save_png(rgb, path):
    """A 256-colour PNG: the pictures look the same at half the size of full colour."""
    from PIL import Image

    image = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.NONE)
    image.save(path, optimize=True)


def shoot(viewer, app, name):

    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)
    labels = {2: ("y", "x"), 3: ("z", "y", "x")}.get(viewer.dims.ndim)
    if labels:
        viewer.dims.axis_labels = labels
    # repaint the layer controls (a switch to 3D can leave them half drawn under Xvfb)
    active = viewer.layers.selection.active
    if active is not None and len(viewer.layers) > 1:
        viewer.layers.selection.active = viewer.layers[0]
        app.processEvents()
        viewer.layers.selection.active = active
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)
    img = viewer.screenshot(canvas_only=False, flash=False)
    path = OUT / f"napari_{name}.png"
    save_png(np.ascontiguousarray(img[..., :3]), path)
    print("wrote", path.relative_to(ROOT), img.shape)


def demo_dir(name):
    """A readable folder name for the pictures (under the system temp folder)."""
    path = Path(tempfile.gettempdir()) / "my_project" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def fresh_viewer(app):
    import napari

    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(*SIZE)
    return viewer


DOCKS = {}


def dock(viewer, name):
    dock_widget, widget = viewer.window.add_plugin_dock_widget("empanada-napari", name)
    DOCKS[id(widget)] = dock_widget
    return widget


def main():
    os.environ.setdefault("EMPANADA_HOME", tempfile.mkdtemp(prefix="empanada-shots-"))
    import tifffile
    from qtpy.QtWidgets import QApplication

    from empanada_core.testing import find_data_dir

    base = find_data_dir()
    if base is None:
        sys.exit("the shared data folder was not found; set EMPANADA_DATA_DIR")
    with tifffile.TiffFile(Path(base) / "lucchi_epfl_hippocampus" / "images.tif") as tif:
        vol = tif.asarray(key=range(16, 48))[:, 128:640, 384:896]
    OUT.mkdir(parents=True, exist_ok=True)

    import napari  # noqa: F401  (creates the QApplication on first viewer)

    # 2D Inference on the xy plane shown
    viewer = fresh_viewer(None)
    app = QApplication.instance()
    layer = viewer.add_image(vol, name="Lucchi FIB-SEM")
    viewer.dims.set_current_step(0, 16)
    w2 = dock(viewer, "2D Inference (Parameter Testing)")
    w2.image_layer.value = layer
    w2.run()
    wait(app, w2)
    viewer.layers[-1].opacity = 0.45
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.reset_view()
    shoot(viewer, app, "inference_2d")
    viewer.close()

    # 3D Inference, stack along xy, shown on one slice and in 3D
    viewer = fresh_viewer(app)
    layer = viewer.add_image(vol, name="Lucchi FIB-SEM")
    w3 = dock(viewer, "3D Inference")
    w3.image_layer.value = layer
    w3.run()
    wait(app, w3)
    labels = viewer.layers[-1]
    labels.opacity = 0.45
    viewer.dims.set_current_step(0, 16)
    viewer.reset_view()
    shoot(viewer, app, "inference_3d")
    layer.visible = False
    labels.opacity = 1.0
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer_camera(viewer).angles = (-15, 30, 75)
    viewer_camera(viewer).zoom *= 0.9
    shoot(viewer, app, "inference_3d_render")
    viewer.dims.ndisplay = 2
    layer.visible = True
    labels.opacity = 0.45

    # Export Segmentations of that result (the 3D widget closed to make room)
    viewer.window.remove_dock_widget(DOCKS[id(w3)])
    viewer.layers.selection.active = labels
    we = dock(viewer, "Export Segmentations")
    we.labels_layer.value = labels
    we.folder.value = demo_dir("exports")
    we.overwrite.value = True
    we.run()
    wait(app, we)
    shoot(viewer, app, "export_segmentations")
    viewer.close()

    # model management
    from empanada_models.testing import write_test_model

    config = write_test_model(demo_dir("training") / "MyModel_v1", "MyModel_v1")
    viewer = fresh_viewer(app)
    viewer.add_image(vol[16], name="Lucchi FIB-SEM")
    reg = dock(viewer, "Register a model")
    reg.model_name.value = "MyModel_v1"
    reg.config_file.value = config
    reg.model_file.value = str(config.with_suffix(".pth"))
    shoot(viewer, app, "register_model")
    reg.run()
    viewer.close()

    viewer = fresh_viewer(app)
    viewer.add_image(vol[16], name="Lucchi FIB-SEM")
    info = dock(viewer, "Get model info")
    info.model.value = "MitoLite_v1"
    info.run()
    shoot(viewer, app, "model_info")
    viewer.close()

    viewer = fresh_viewer(app)
    viewer.add_image(vol[16], name="Lucchi FIB-SEM")
    export_dir = demo_dir("shared-models")
    wx = dock(viewer, "Export a model")
    wx.model.value = "MyModel_v1"
    wx.export_dir.value = export_dir
    wx.overwrite.value = True  # the folder is reused between runs of this script
    wx.run()
    wait(app, wx)
    wi = dock(viewer, "Import a model")
    wi.bundle.value = export_dir / "MyModel_v1.empanada"
    wi.model_name.value = "MyModel_v1_copy"
    wi.run()
    wa = dock(viewer, "Archive a model")
    wa.model.value = "MyModel_v1_copy"
    shoot(viewer, app, "model_management")
    viewer.close()


if __name__ == "__main__":
    main()
