"""Click-to-refreshed-layer latency of the proofreading widgets on a full-size Lucchi result.

The volume is the size of the full Lucchi test volume, 165 x 768 x 1024 (uint32): the
real 64-slice Lucchi 3D mitochondria labels (``mito_instances_3d.tif``) stacked three
times along z (the second copy mirrored so objects continue across the seam, the last one
cut to 37 slices), each copy's ids offset so every object keeps its own id. It is shown in
a real napari viewer (an X display is needed: run under ``xvfb-run -a``), as a labels
layer in 2D, sliced at the middle of the objects edited.

Each row times one widget press, from ``widget.run()`` to the layer's canvas having
processed the redraw (``QApplication.processEvents()`` after the call), on objects close
to the median size. The baseline, measured in the same run, is what a widget without the
label index and partial redraw does: the same edit with whole-array numpy
(``labels[labels == i] = 0`` and so on) followed by ``layer.refresh()``. The one-time
label-index sweep (when a layer is first edited) is reported on its own.

Usage::

    xvfb-run -a python benchmarks/napari_proofread.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

# benchmarks/napari.py would shadow the napari package when this folder is on sys.path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from empanada_core.testing import find_data_dir  # noqa: E402


def full_size_lucchi():
    import tifffile

    base = find_data_dir()
    path = None if base is None else base / "lucchi_epfl_hippocampus" / "mito_instances_3d.tif"
    if path is None or not path.is_file():
        sys.exit("the Lucchi labels were not found: set EMPANADA_DATA_DIR (see README)")
    part = tifffile.imread(path).astype(np.uint32)
    step = np.uint32(part.max() + 1)
    mirrored = np.where(part[::-1] > 0, part[::-1] + step, 0)
    last = np.where(part[:37] > 0, part[:37] + 2 * step, 0)
    return np.ascontiguousarray(np.concatenate([part, mirrored, last]))


def nearest_neighbour(labels, label):
    """The label closest to ``label`` (what a user merges: touching pieces)."""
    from scipy import ndimage as ndi

    box = ndi.find_objects((labels == label).astype(np.uint8))[0]
    pad = tuple(slice(max(0, s.start - 40), s.stop + 40) for s in box)
    crop = labels[pad]
    dist = ndi.distance_transform_edt(crop != label)
    others = (crop > 0) & (crop != label)
    return int(crop[others][np.argmin(dist[others])])


def settle():
    """Let Qt and the canvas finish whatever is queued (untimed)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
        time.sleep(0.02)


DRAWS = []  # perf_counter of every canvas draw (paintGL), filled by the viewer's canvas


def timed(fn, repeat, reset, setup=lambda: None):
    """Medians (ms) of: the call itself on the GUI thread; until the canvas has drawn
    (the first paint after the call: what the user sees); until Qt has run everything
    the call queued (e.g. clearing the points layer after the redraw)."""
    from qtpy.QtWidgets import QApplication

    calls, drawn, totals = [], [], []
    for _ in range(repeat):
        setup()
        gc.collect()
        settle()
        DRAWS.clear()
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        while not DRAWS and time.perf_counter() - t0 < 60:
            QApplication.processEvents()
        first = DRAWS[0] if DRAWS else float("nan")
        QApplication.processEvents()
        t2 = time.perf_counter()
        calls.append(t1 - t0)
        drawn.append(first - t0)
        totals.append(t2 - t0)
        reset()
    return tuple(float(np.median(v)) * 1000 for v in (calls, drawn, totals))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from empanada_napari import _proofread

    labels = full_size_lucchi()
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    order = np.argsort(np.abs(sizes - np.median(sizes)))
    label = int(ids[order[0]])
    other = nearest_neighbour(labels, label)
    obj = np.argwhere(labels == label)
    centre = obj[np.argmin(((obj - obj.mean(0)) ** 2).sum(1))]
    obj2 = np.argwhere(labels == other)
    centre2 = obj2[np.argmin(((obj2 - obj2.mean(0)) ** 2).sum(1))]
    print(f"labels {labels.shape} {labels.dtype}, {ids.size} objects; edited: {label} "
          f"({(labels == label).sum()} voxels) and {other} ({(labels == other).sum()} voxels)")

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(
        lambda event: DRAWS.append(time.perf_counter()), position="last")
    layer = viewer.add_labels(labels, name="lucchi full")
    points = viewer.add_points(np.zeros((0, 3)), ndim=3, name="clicks")
    viewer.dims.set_point(0, int(centre[0]))
    for _ in range(5):
        QApplication.processEvents()
    widgets = {}
    for name in ("Delete Labels", "Merge Labels", "Split Labels", "Morph Labels",
                 "Jump to label"):
        _, w = viewer.window.add_plugin_dock_widget("empanada-napari", name)
        w.labels_layer.value = layer
        if hasattr(w, "points_layer"):
            w.points_layer.value = points
        if hasattr(w, "apply_3d"):
            w.apply_3d.value = True
        widgets[name] = w
    QApplication.processEvents()

    t0 = time.perf_counter()
    session = _proofread.session_for(layer)
    index_ms = (time.perf_counter() - t0) * 1000
    original = labels.copy()

    def reset():  # untimed: put the array back as it was
        while session.editor.can_undo:
            session.undo()
        settle()

    def click(*voxels):  # the user's clicks on the canvas (untimed)
        return lambda: setattr(points, "data", np.array(voxels, float))

    def press(name, **settings):
        w = widgets[name]
        for key, value in settings.items():
            getattr(w, key).value = value

        def run():
            if w.run() is None:
                raise RuntimeError(f"{name} failed: {w.status.value}")
        return run

    def naive(fn):
        def run():
            fn(layer.data)
            layer.refresh()
        return run

    def naive_reset():
        layer.data[...] = original
        layer.refresh()
        settle()

    def split_naive(data):
        from skimage.segmentation import watershed

        mask = data == label
        markers = np.zeros(data.shape, np.int32)
        markers[tuple(centre)], markers[tuple(centre2)] = 1, 2
        pieces = watershed(np.zeros(data.shape, np.uint8), markers, mask=mask)
        data[pieces == 2] = data.max() + 1

    def dilate_naive(data):
        from scipy import ndimage as ndi

        grown = ndi.binary_dilation(data == label, ndi.generate_binary_structure(3, 1))
        data[grown & (data == 0)] = label

    def merged_pair():  # setup of the split: the pair merged (untimed)
        session.apply("merge", [centre, centre2], in_3d=True, target=label)
        click(centre, centre2)()

    naive_repeat = max(2, args.repeat // 2)
    rows = []
    cases = [
        ("delete one object", press("Delete Labels"), click(centre),
         naive(lambda d: d.__setitem__(d == label, 0)), lambda: None),
        ("merge two touching objects", press("Merge Labels"), click(centre, centre2),
         naive(lambda d: d.__setitem__(d == other, label)), lambda: None),
        ("dilate one object (r=1)", press("Morph Labels", radius=1), click(centre),
         naive(dilate_naive), lambda: None),
        ("split a merged pair (2 points)", press("Split Labels", points_as_markers=True),
         merged_pair, naive(split_naive),
         lambda: layer.data.__setitem__(layer.data == other, label)),
    ]
    for name, ours, setup, theirs, naive_setup in cases:
        ours_ms = timed(ours, args.repeat, reset, setup)
        np.testing.assert_array_equal(layer.data, original)
        naive_ms = timed(theirs, naive_repeat, naive_reset, naive_setup)
        rows.append((name, *ours_ms, naive_ms[1]))

    # Ctrl+Z, a real key press on the canvas, undoing a delete
    from qtpy.QtCore import QEvent, Qt
    from qtpy.QtGui import QKeyEvent

    canvas = viewer.window._qt_viewer.canvas.native
    viewer.layers.selection.active = layer

    def ctrl_z():
        for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            QApplication.sendEvent(canvas, QKeyEvent(kind, Qt.Key.Key_Z,
                                                     Qt.KeyboardModifier.ControlModifier, "z"))

    def deleted():
        session.apply("delete", [centre], in_3d=True)

    ours_ms = timed(ctrl_z, args.repeat, lambda: np.testing.assert_array_equal(
        layer.data, original), deleted)
    rows.append(("undo a delete (Ctrl+Z)", *ours_ms, float("nan")))

    jump = widgets["Jump to label"]
    jump.label_id.value = label

    def jump_naive():
        from skimage.measure import regionprops

        props = {p.label: p for p in regionprops(layer.data)}
        viewer.dims.set_point(0, props[label].bbox[0])

    away = lambda: viewer.dims.set_point(0, 0)  # noqa: E731
    ours_ms = timed(press("Jump to label"), args.repeat, lambda: None, away)
    naive_ms = timed(jump_naive, naive_repeat, lambda: None, away)
    rows.append(("jump to label", *ours_ms, naive_ms[1]))

    # fixed costs of this display: a full refresh, and one repaint with nothing changed
    def repaint():
        viewer.window._qt_viewer.canvas.native.update()
    repaint_ms = timed(repaint, args.repeat, lambda: None)[1]
    refresh_ms = timed(layer.refresh, args.repeat, lambda: None)[1]

    print(f"\none-time label index when the layer is first edited: {index_ms:.0f} ms")
    print(f"this display: update() to drawn with nothing changed {repaint_ms:.1f} ms; "
          f"layer.refresh() to drawn {refresh_ms:.1f} ms (medians)\n")
    print("| widget press | ours: call (ms) | ours: click to drawn (ms) | ours: all queued "
          "work done (ms) | naive: click to drawn (ms) | speed-up (drawn) | drawn under "
          "100 ms |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name, call, drawn, total, naive_drawn in rows:
        ratio = f"{naive_drawn / drawn:.1f}x" if naive_drawn == naive_drawn else "-"
        naive_text = f"{naive_drawn:.0f}" if naive_drawn == naive_drawn else "-"
        print(f"| {name} | {call:.1f} | {drawn:.1f} | {total:.1f} | {naive_text} | {ratio} | "
              f"{'yes' if drawn < 100 else 'NO'} |")
    viewer.close()


if __name__ == "__main__":
    main()
