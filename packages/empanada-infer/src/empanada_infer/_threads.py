"""Running network forwards next to postprocessing: background threads and CPU pools.

On a GPU the network runs on a second thread while the main thread
postprocesses; on the CPU several single-threaded forwards can beat one
multi-threaded forward on small slices, which is measured, not assumed.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time

__all__ = []


def _forward_in_background(device):
    """Whether stack inference runs the network on a second thread (not on the CPU)."""
    return device.type != "cpu"


# Slices up to this many pixels go through several single-threaded forwards at once.
_SMALL_SLICE_PIXELS = 1 << 17


def _cpu_workers(requested, device, slice_shape):
    """How many forwards run at once on the CPU (1: one forward on all threads)."""
    if device.type != "cpu":
        return 1
    if requested is not None:
        return requested
    import torch

    if math.prod(slice_shape) > _SMALL_SLICE_PIXELS:
        return 1
    return max(1, min(8, torch.get_num_threads()))


def _parallel_in_order(fn, items, workers):
    """``map(fn, items)`` on ``workers`` threads of one torch thread each, in order.

    At most ``workers + 1`` calls are in flight. torch's thread count is 1 for
    the process while the generator runs and restored when it ends or is closed;
    closing it cancels the calls not started and waits for the running ones.
    """
    import collections
    import concurrent.futures

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="empanada-forward")
    try:
        items = iter(items)
        pending = collections.deque(pool.submit(fn, item)
                                    for item in itertools.islice(items, workers + 1))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _parallel_if_faster(fn, items, workers, probe=6):
    """``map(fn, items)`` in order, on ``workers`` threads if that proves faster.

    Whether several single-threaded forwards beat one multi-threaded forward
    depends on the network and the machine (faster for MitoLite_v1 on small
    slices on 2 cores, slower for some other nets; docs/performance.md), so
    the first ``probe`` items run one after the other and the next ``probe``
    on the threads, each timed from one request of the consumer to the next
    (its own work included); the faster way does the rest. Results are the
    same either way; a switch back recomputes at most ``workers + 1`` items.
    """
    items = list(items)
    if workers <= 1 or len(items) < 4 * probe:
        yield from map(fn, items)
        return
    t0 = time.perf_counter()
    for item in items[:probe]:
        yield fn(item)
    sequential = time.perf_counter() - t0
    parallel_items = _parallel_in_order(fn, items[probe:], workers)
    try:
        t0 = time.perf_counter()
        for _ in range(probe):
            yield next(parallel_items)
        if time.perf_counter() - t0 < 0.9 * sequential:
            yield from parallel_items
            return
    finally:
        parallel_items.close()
    yield from map(fn, items[2 * probe:])


def _background(iterable, depth=2):
    """Iterate ``iterable`` on a daemon thread, at most ``depth`` items ahead.

    Exceptions are re-raised in the consumer; closing the returned generator
    (or abandoning it) stops the producer at its next item.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                items.put(("ok", item))
            items.put(("end", None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            items.put(("error", exc))

    worker = threading.Thread(target=produce, name="empanada-forward", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "error":
                raise item
            if kind == "end":
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
