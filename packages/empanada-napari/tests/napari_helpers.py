"""Helpers of the empanada-napari tests."""

import numpy as np


def blobs(shape, n=6, radius=7, seed=0):
    """Dark round blobs on a bright background (what BlobNet_test segments)."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 200, np.uint8)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(n):
        c = [rng.uniform(radius + 1, s - radius - 1) for s in shape]
        d = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        img[d <= radius ** 2] = 40
    return img


def wait_for(qtbot, widget, timeout=120_000):
    """Wait until the widget's run has ended."""
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=timeout)


def dock(viewer, name):
    """Open a widget from the plugin manifest, as the Plugins menu does."""
    _, widget = viewer.window.add_plugin_dock_widget("empanada-napari", name)
    return widget
