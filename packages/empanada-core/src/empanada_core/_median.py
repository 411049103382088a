"""Streaming median filter of semantic probabilities along the stack axis.

3D inference runs a 2D model slice by slice; a median over neighbouring slices
of the semantic probabilities removes one-slice flickers before instances are
built. Only ``size`` slices are held at a time.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .validation import check_odd_window, is_torch_tensor

__all__ = ["MedianFilter", "median_filter_stack"]


def _median(window):
    if len(window) == 3:
        # the common window: max(min(a, b), min(max(a, b), c)) is exact and
        # several times faster than a general median (no stacked copy, no sort)
        a, b, c = window
        if is_torch_tensor(a):
            import torch

            return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    if is_torch_tensor(window[0]):
        import torch

        return torch.stack(list(window)).median(dim=0).values
    return np.median(np.stack(window), axis=0).astype(window[0].dtype, copy=False)


class MedianFilter:
    """Median over a sliding window of slices, fed one slice at a time.

    Slice ``i`` is replaced by the element-wise median of slices
    ``i - r .. i + r`` with ``r = min(size // 2, i, n - 1 - i)``: the window
    shrinks symmetrically at the ends of the stack, so it is always odd, the
    first and last slices pass through unchanged, and stacks shorter than the
    window work.

    Parameters
    ----------
    size : int
        Odd window length (1, 3, 5, ...). 1 passes slices through.
    start : int, optional
        Index of the first slice pushed (default 0), to filter the end of a
        stack from slice ``start`` on: slices from ``start + size // 2`` on get
        the same values as in a run over the whole stack (a resumed run pushes
        from ``k - size // 2`` to redo slices ``k, k + 1, ...``).

    Notes
    -----
    Differences from the original empanada (``_MedianQueue``), see
    ``docs/compat.md``: the median is taken over the *input* slices (the
    original fed its own filtered output back into later windows, a recursive
    median); the first and last ``size // 2`` slices get a shrinking window
    instead of no filtering; stacks shorter than the window no longer lose
    slices or crash.

    Each pushed slice may carry a ``payload`` (e.g. the centre heatmap and
    offsets of that slice) that is returned unchanged with its filtered slice.

    Examples
    --------
    >>> f = MedianFilter(3)
    >>> out = [r for x in [0, 9, 0, 9, 0] for r in f.push(np.array([x]))] + f.finish()
    >>> [(i, int(v[0])) for i, v, _ in out]
    [(0, 0), (1, 0), (2, 9), (3, 0), (4, 0)]
    """

    def __init__(self, size=3, *, start=0):
        self.size = check_odd_window(size, "size")
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"`start` must be a non-negative integer; got {start!r}")
        self._radius = self.size // 2
        self._window = deque(maxlen=self.size)  # (index, slice, payload)
        self._start = int(start)
        self._next_in = self._start
        self._next_out = self._start

    def _emit(self, i, last):
        """Filtered slice ``i`` given that the last slice seen is ``last``."""
        r = min(self._radius, i - self._start, last - i)
        first_held = self._window[0][0]
        window = [self._window[j - first_held][1] for j in range(i - r, i + r + 1)]
        _, raw, payload = self._window[i - first_held]
        value = raw if r == 0 else _median(window)
        return i, value, payload

    def push(self, probabilities, payload=None):
        """Add the next slice; return the (index, filtered, payload) triples now ready."""
        if self._window and tuple(self._window[-1][1].shape) != tuple(probabilities.shape):
            raise ValueError(
                f"slice {self._next_in} has shape {tuple(probabilities.shape)}, but earlier "
                f"slices have {tuple(self._window[-1][1].shape)}"
            )
        self._window.append((self._next_in, probabilities, payload))
        self._next_in += 1
        ready = []
        # Slice i is final once slice i + radius has arrived.
        while self._next_out + self._radius < self._next_in:
            ready.append(self._emit(self._next_out, last=10**18))
            self._next_out += 1
        return ready

    def finish(self):
        """Return the remaining filtered slices (the stack has ended) and reset."""
        last = self._next_in - 1
        ready = []
        while self._next_out < self._next_in:
            ready.append(self._emit(self._next_out, last=last))
            self._next_out += 1
        self._window.clear()
        self._next_in = self._next_out = self._start
        return ready


def median_filter_stack(slices, size=3):
    """Yield median-filtered slices in order, holding at most ``size`` at a time.

    Parameters
    ----------
    slices : iterable of ndarray or tensor
        Per-slice semantic probabilities, all of one shape, e.g. (C, H, W).
    size : int, optional
        Odd window length; see :class:`MedianFilter` for the ends of the stack.

    Yields
    ------
    filtered : ndarray or tensor
        One per input slice, in input order.

    Examples
    --------
    >>> [int(s[0]) for s in median_filter_stack([np.array([v]) for v in [1, 5, 2, 8, 3]], 3)]
    [1, 2, 5, 3, 3]
    """
    f = MedianFilter(size)
    for s in slices:
        for _, value, _ in f.push(s):
            yield value
    for _, value, _ in f.finish():
        yield value
