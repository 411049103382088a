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


class Heartbeat:
    """A 10 ms QTimer; ``max_gap_ms`` is the longest the event loop went without a tick."""

    def __init__(self, interval_ms=10):
        import time

        from qtpy.QtCore import QTimer

        self._clock = time.perf_counter
        self.last = self._clock()
        self.max_gap_ms = 0.0
        self.ticks = 0
        self.max_gap_at = None
        self.gaps = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = self._clock()
        gap = 1000 * (now - self.last)
        self.gaps.append((now, gap))
        if gap > self.max_gap_ms:
            self.max_gap_ms = gap
            self.max_gap_at = now
        self.last = now
        self.ticks += 1

    def max_gap_before(self, t):
        """Longest gap (ms) that ended before ``t`` (perf_counter seconds)."""
        return max((g for at, g in self.gaps if at <= t), default=0.0)

    def start(self):
        self.last = self._clock()
        self.timer.start()

    def stop(self):
        self.timer.stop()
