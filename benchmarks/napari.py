"""Widget overhead of the 3D Inference widget against the engine, and GUI responsiveness.

The same model (the built-in MitoLite_v1, CPU) and the same real FIB-SEM crop
(Lucchi, ``--shape`` slices from the centre of the volume) are segmented in one
process in two ways, alternately, ``--repeat`` times each (best of N):

- engine: ``Segmenter.segment_stack`` on a Segmenter that is already loaded;
- widget: the 3D Inference widget in a napari viewer (Xvfb or a display), from
  the Run button to the labels layer in the viewer, the model cached by the
  widget (its first run, which loads the model, is not timed).

``overhead`` is widget / engine - 1 (issue: at most 10 %). The engine runs with
the garbage collector's existing objects frozen, as the widget's runs do (a full
collection walks all of napari's objects: 0.3-1.4 s each in a busy process). During every widget
run a 10 ms QTimer measures the longest time the Qt event loop went without a
tick, split into the run itself (up to the results' arrival) and adding the
result layers (napari's own work on the GUI thread).

Usage (needs napari, a Qt binding and a display; ``xvfb-run -a`` provides one)::

    xvfb-run -a .venv/bin/python benchmarks/napari.py
    xvfb-run -a .venv/bin/python benchmarks/napari.py --shape 32 512 512 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# this file is named like the napari package: keep its folder off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def load_crop(shape):
    import tifffile

    from empanada_core.testing import find_data_dir

    base = find_data_dir()
    if base is None:
        sys.exit("the Lucchi volume was not found: set EMPANADA_DATA_DIR (see README.md)")
    vol = tifffile.imread(Path(base) / "lucchi_epfl_hippocampus" / "images.tif")
    z, y, x = shape
    z0, y0, x0 = [(s - n) // 2 for s, n in zip(vol.shape, shape)]
    return np.ascontiguousarray(vol[z0:z0 + z, y0:y0 + y, x0:x0 + x])


class Heartbeat:
    def __init__(self):
        from qtpy.QtCore import QTimer

        self.gaps = []
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)

    def tick(self):
        now = time.perf_counter()
        self.gaps.append((now, 1000 * (now - self.last)))
        self.last = now

    def start(self):
        self.last = time.perf_counter()
        self.timer.start()

    def max_gap(self, t0, t1):
        return max((g for t, g in self.gaps if t0 < t <= t1), default=0.0)


def widget_run(viewer, widget, app, beat):
    """One Run click to the layers in the viewer, with Qt's own event loop waiting."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    app.processEvents()
    beat.start()
    t0 = time.perf_counter()
    worker = widget.run()
    # RunControls adds the layers on `returned`; quit right after that
    worker.returned.connect(lambda _: QTimer.singleShot(0, loop.quit))
    loop.exec()
    t_end = time.perf_counter()
    app.processEvents()  # the heartbeat's tick after the layers were added
    t_tick = time.perf_counter()
    arrived = widget.controls.result_time
    return t_end - t0, beat.max_gap(t0, arrived), beat.max_gap(arrived, t_tick)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(16, 256, 256))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("EMPANADA_HOME", tempfile.mkdtemp(prefix="empanada-bench-"))

    import napari
    from qtpy.QtWidgets import QApplication

    import empanada_infer as ei
    from empanada_napari._inference_3d import Inference3DWidget

    vol = load_crop(tuple(args.shape))
    viewer = napari.Viewer(show=False)
    app = QApplication.instance()
    layer = viewer.add_image(vol, name="lucchi")
    widget = Inference3DWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_layer.value = layer
    beat = Heartbeat()
    beat.start()
    cold, cold_gap, _ = widget_run(viewer, widget, app, beat)  # loads and caches the model
    engine = ei.Segmenter.from_registry(None, widget.params(), device="cpu")
    engine.segment_stack(vol[:4])
    t_engine, t_widget, gaps_run, gaps_add = [], [], [], []
    for _ in range(args.repeat):
        gc.freeze()  # as the widget does during a run, so only the widget's own work differs
        t0 = time.perf_counter()
        engine.segment_stack(vol)
        t_engine.append(time.perf_counter() - t0)
        gc.unfreeze()
        for lay in [lay for lay in viewer.layers if lay.name != "lucchi"]:
            viewer.layers.remove(lay)
        t, g_run, g_add = widget_run(viewer, widget, app, beat)
        t_widget.append(t)
        gaps_run.append(g_run)
        gaps_add.append(g_add)
    e, w = min(t_engine), min(t_widget)
    print(f"3D Inference widget vs engine, MitoLite_v1 on CPU, Lucchi crop {tuple(vol.shape)}, "
          f"best of {args.repeat}")
    print(f"{'case':<34}{'seconds':>10}{'ratio':>9}")
    print(f"{'engine segment_stack':<34}{e:>10.2f}{1.0:>9.2f}")
    print(f"{'widget (Run -> layer in viewer)':<34}{w:>10.2f}{w / e:>9.2f}")
    print(f"widget overhead: {100 * (w / e - 1):+.1f} % (target <= +10 %)")
    print(f"longest event-loop block during warm runs: {max(gaps_run):.0f} ms (target < 100); "
          f"adding the result layer (napari): {max(gaps_add):.0f} ms")
    print(f"first (cold) widget run: {cold:.2f} s incl. model load; longest block "
          f"{cold_gap:.0f} ms (TorchScript load and first forward hold the GIL)")
    viewer.close()


if __name__ == "__main__":
    main()
