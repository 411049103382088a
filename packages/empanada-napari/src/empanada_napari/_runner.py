"""Run long work off the GUI thread with a progress bar, an ETA and a Cancel button."""

from __future__ import annotations

import gc
import threading
import time

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

__all__ = ["RunControls", "friendly_error"]


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int)


def friendly_error(exc):
    """The message shown for an exception raised by the engines."""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "OutOfMemory" in name:
        return ("Out of memory while segmenting. Try a larger Image Downsampling, a Zarr "
                "directory for 3D results, or the CPU instead of the GPU."
                + (f" ({exc})" if str(exc) else ""))
    text = str(exc) or name
    return text if isinstance(exc, (ValueError, TypeError, LookupError, OSError)) \
        else f"{name}: {text}"


class _Failure:
    def __init__(self, exc):
        self.exc = exc


_CANCELLED = object()

# Python's cyclic garbage collector walks every live object of the process in a full
# collection, holding the GIL: 0.3-1.4 s in a napari session with a few viewers (measured
# in the test process), long enough to freeze the GUI. While a run is in progress the
# objects that existed before it are frozen (gc.freeze), so collections only walk what
# the run creates; they are unfrozen, and collected as usual, when the last run ends.
_frozen_runs = [0]
_freeze_lock = threading.Lock()


def _freeze_gc():
    with _freeze_lock:
        if _frozen_runs[0] == 0:
            gc.freeze()
        _frozen_runs[0] += 1


def _unfreeze_gc():
    with _freeze_lock:
        _frozen_runs[0] = max(0, _frozen_runs[0] - 1)
        if _frozen_runs[0] == 0:
            gc.unfreeze()


class RunControls(Container):
    """Progress bar, status line (done / total, ETA) and a Cancel button.

    ``start(job, on_result, title)`` runs ``job(progress, should_stop)`` in a
    napari ``thread_worker``; ``progress(done, total)`` may be called from the
    worker thread. ``on_result(result)`` runs on the GUI thread when the job
    ends normally; errors become napari notifications and nothing else.
    """

    def __init__(self, **kwargs):
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = Label(value="")
        # a long message must not widen the dock: it is cut at the dock's width, and the
        # whole text is the tooltip
        from qtpy.QtWidgets import QSizePolicy

        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                         QSizePolicy.Policy.Preferred)
        self.status.changed.connect(lambda text: self.status.native.setToolTip(str(text)))
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.bar, self.status, self.cancel_button], labels=False,
                         **kwargs)
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self.cancel_button.changed.connect(self.cancel)
        self._stop = threading.Event()
        self.worker = None
        self._t0 = 0.0
        self._title = ""
        self.result_time = None

    @property
    def running(self):
        return self.worker is not None

    def start(self, job, on_result, title):
        from napari.qt.threading import create_worker

        if self.running:
            raise RuntimeError("a run is already in progress")
        self._stop = threading.Event()
        stop = self._stop
        relay = self._relay

        def work():
            try:
                return job(relay.progressed.emit, stop.is_set)
            except BaseException as exc:  # shown on the GUI thread
                from empanada_infer import InferenceCancelled

                if isinstance(exc, InferenceCancelled):
                    return _CANCELLED
                return _Failure(exc)

        self._title = title
        self._t0 = time.perf_counter()
        self.bar.max = 0  # busy until the first progress report
        self.bar.value = 0
        self.bar.visible = True
        self.status.value = f"{title}: starting..."
        self.cancel_button.enabled = True
        worker = create_worker(work)
        worker.returned.connect(lambda result: self._done(result, on_result))
        self.worker = worker
        _freeze_gc()
        worker.start()
        return worker

    def cancel(self, *_):
        if self.running:
            self._stop.set()
            self.status.value = f"{self._title}: cancelling..."
            self.cancel_button.enabled = False

    def _on_progress(self, done, total):
        if not self.running:
            return
        self.bar.max = max(total, 1)
        self.bar.value = min(done, total)
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / done * (total - done) if done else float("nan")
        text = f"{self._title}: {done} / {total}"
        if done and done < total:
            text += f", about {_duration(eta)} left"
        self.status.value = text

    def _done(self, result, on_result):
        self.result_time = time.perf_counter()  # when the worker's result arrived
        try:
            self._finish(result, on_result)
        finally:
            _unfreeze_gc()

    def _finish(self, result, on_result):
        self.worker = None
        self.cancel_button.enabled = False
        self.bar.visible = False
        elapsed = time.perf_counter() - self._t0
        if result is _CANCELLED:
            self.status.value = f"{self._title}: cancelled, nothing added"
            show_info(f"{self._title} cancelled; no layer was added")
            return
        if isinstance(result, _Failure):
            self.status.value = f"{self._title}: failed"
            show_error(f"{self._title}: {friendly_error(result.exc)}")
            return
        try:
            summary = on_result(result)
        except Exception as exc:  # noqa: BLE001 - any failure adding results is shown
            self.status.value = f"{self._title}: failed"
            show_error(f"{self._title}: {friendly_error(exc)}")
            return
        self.status.value = f"{self._title}: done in {_duration(elapsed)}" + (
            f" ({summary})" if summary else "")


def _duration(seconds):
    if seconds != seconds:  # nan
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
