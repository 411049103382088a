"""Stack assembly: link 2D panoptic slices into 3D objects.

Slices arrive one at a time, in order along one axis of the volume. Each thing
object of a slice is split into connected pieces; pieces are linked to the
objects of the previous slice (a forward pass), then, once the stack has ended,
linked again from the last slice back to the first (a backward pass). The rules
are the original empanada's:

* a piece and a previous object whose IoU is at least ``merge_iou_thr`` are
  paired one-to-one by maximum-IoU assignment (Hungarian);
* an unpaired piece lying mostly (IoA >= ``merge_ioa_thr``) inside a previous
  object joins it (a false split);
* otherwise the piece starts a new object (forward pass) or keeps its label
  (backward pass, which unites objects that merge going forward).

Each slice is read once, by one vectorised scan that cuts every row into runs
of equal non-zero value (the original builds run-length encodings pixel by
pixel). Everything else works on the runs, of which a slice has far fewer than
pixels: connected pieces are components of the graph of runs that touch in
consecutive rows, the overlaps with the previous slice come from intersecting
the runs of each row (one sparse table of piece pairs per slice pair), and the
backward pass and the size and extent filters touch no pixels at all. The
final ids are written once, at the end, from the kept runs; past a memory
budget for runs, slices are instead written at once as piece numbers and
rewritten through a lookup table at the end, so memory stays bounded whatever
the number of slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ._filters import _expand_ranges
from .validation import (
    check_label_divisor,
    check_ndim,
    check_positive_int,
    check_probability,
)

__all__ = ["StackAssembler", "AssemblyResult", "assemble_stack"]

_OVERFLOW_POLICIES = ("raise", "drop")


@dataclass(frozen=True)
class AssemblyResult:
    """What :class:`StackAssembler` built.

    Attributes
    ----------
    ids : (M,) ndarray
        Panoptic id of every object in the output (``class * div + k``).
    sizes : (M,) int64 ndarray
        Voxel count of each object.
    bbox_min, bbox_max : (M, 3) int64 ndarray
        Half-open bounding box of each object in volume (z, y, x) order.
    removed : int
        Objects removed by the size and extent filters (and ``'drop'``).
    """

    ids: np.ndarray
    sizes: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    removed: int = 0
    counts: dict = field(default_factory=dict)


def _first_occurrence_order(values):
    """Distinct values in order of first occurrence.

    Returns the distinct values, the position of each input value among them,
    and the index of each distinct value's first occurrence.
    """
    values = np.asarray(values)
    if len(values) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return values[:0], empty, empty
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    return uniq[order], rank[inverse.ravel()], first[order]


def _positions(values, table):
    """Index of each of ``values`` in ``table`` (all values must occur in it)."""
    sorter = np.argsort(table, kind="stable")
    return sorter[np.searchsorted(table, values, sorter=sorter)]


def _row_runs(image, buffer):
    """Runs of equal non-zero value along the rows of a 2D image.

    ``buffer`` is an (H, W + 1) array of the image's dtype whose last column is
    zero, so that no run crosses the end of a row. Returns the start and stop
    (exclusive) of each run as flat positions in that padded raster, in raster
    order, and the run's value.
    """
    buffer[:, : image.shape[1]] = image
    flat = buffer.reshape(-1)
    bounds = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([np.zeros(1, np.int64), bounds])
    stops = np.concatenate([bounds, np.array([flat.size], np.int64)])
    values = flat[starts]
    nonzero = values != 0
    return starts[nonzero], stops[nonzero], values[nonzero]


def _touching_runs(starts, stops, row_stride, n_rows, group):
    """Pairs of runs of one group in consecutive rows that touch (8-connectivity).

    Run ``j`` on the row above run ``i`` touches it when their column ranges
    overlap or meet at a corner. Found with two binary searches per run over
    the runs sorted by (group, row, column), never by visiting pixels.
    """
    rows = starts // row_stride
    order = np.argsort(group, kind="stable")  # by group, then raster order
    block = group[order] * (n_rows + 1) + rows[order]
    key = row_stride + 1
    col0 = starts[order] - rows[order] * row_stride
    col1 = stops[order] - rows[order] * row_stride
    above = (block - 1) * key  # the same group's previous row (row -1 never occurs)
    lo = np.searchsorted(block * key + col1, above + col0, side="left")
    hi = np.searchsorted(block * key + col0, above + col1, side="right")
    below, upper = _expand_ranges(lo, np.maximum(hi - lo, 0))
    return order[below], order[upper]


def _run_overlaps(starts, stops, prev_starts, prev_stops):
    """Pixel overlaps of the runs of two slices (both in raster order).

    Returns, for every pair of overlapping runs, the run of this slice, the
    run of the previous slice and the number of shared pixels.
    """
    lo = np.searchsorted(prev_stops, starts, side="right")
    hi = np.searchsorted(prev_starts, stops, side="left")
    cur, prev = _expand_ranges(lo, np.maximum(hi - lo, 0))
    shared = np.minimum(stops[cur], prev_stops[prev]) - np.maximum(starts[cur], prev_starts[prev])
    return cur, prev, shared


def _match(inter, target_areas, piece_areas, iou_thr, ioa_thr):
    """Apply the matching rules to one class of one slice pair.

    Parameters
    ----------
    inter : (T, M) float ndarray
        Pixel overlap of target object t and current object m.
    target_areas : (T,), piece_areas : (M,)

    Returns
    -------
    assigned : (M,) int64 ndarray
        Index of the target object each current object joins, or -1.
    """
    n_t, n_m = inter.shape
    assigned = np.full(n_m, -1, dtype=np.int64)
    if n_t == 0 or n_m == 0:
        return assigned
    union = target_areas[:, None] + piece_areas[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    good = iou[rows, cols] >= iou_thr
    assigned[cols[good]] = rows[good]
    ioa = np.divide(inter, piece_areas[None, :], out=np.zeros_like(inter),
                    where=piece_areas[None, :] > 0)
    best = ioa.argmax(axis=0)  # first maximum in target order, as the original
    false_split = (assigned < 0) & (ioa[best, np.arange(n_m)] >= ioa_thr)
    assigned[false_split] = best[false_split]
    return assigned


class StackAssembler:
    """Assemble 2D panoptic slices into a 3D panoptic volume, one slice at a time.

    Parameters
    ----------
    out : array-like, 3D
        Where the volume is written (numpy, zarr, or anything supporting
        ``out[index] = slice`` and reading it back). Its integer dtype must
        hold the final ids; uint32 is the usual choice.
    axis : int, optional
        Axis of ``out`` along which slices arrive: 0 for xy slices of a
        (z, y, x) volume, 1 for xz, 2 for yz.
    label_divisor : int, optional
        Id range per class; input and output ids are ``class * div + k``.
    thing_list : sequence of int, optional
        Classes with instances. Other non-zero classes are stuff: one object
        per class over the whole stack.
    merge_iou_thr, merge_ioa_thr : float, optional
        Matching thresholds (see the module docstring); 0.25 as the original.
    min_size : int, optional
        Remove 3D objects with fewer voxels.
    min_extent : int, optional
        Remove 3D objects whose bounding box spans fewer than this many voxels
        along any axis ("pancakes"; as the original, y and x count too).
    force_connected : bool, optional
        Split disconnected pieces of a 2D object before linking (the original
        always does).
    on_overflow : {'raise', 'drop'}, optional
        When a class has more surviving objects than ``label_divisor - 1``:
        raise ``ValueError`` or keep the largest.
    out_is_blank : bool, optional
        Promise that ``out`` is a numpy array of zeros (e.g. just created).
        Slices are then written sparsely, touching only object pixels, which
        saves most of the memory traffic on sparse scenes.
    run_memory : int, optional
        Bytes of row runs (12 per run) kept until :meth:`finish`, which then
        writes each slice once with its final ids (default 256 MiB, enough
        for thousands of typical slices). Slices pushed past it are written
        at once as piece numbers and rewritten at the end instead.

    Examples
    --------
    >>> out = np.zeros((3, 4, 4), np.uint32)
    >>> asm = StackAssembler(out, label_divisor=1000, min_size=0, min_extent=0)
    >>> s = np.zeros((4, 4), np.uint32); s[1:3, 1:3] = 1007
    >>> for _ in range(3): asm.push(s)
    >>> asm.finish().ids.tolist(), np.unique(out).tolist()
    ([1001], [0, 1001])
    """

    def __init__(
        self,
        out,
        *,
        axis=0,
        label_divisor=1000,
        thing_list=(1,),
        merge_iou_thr=0.25,
        merge_ioa_thr=0.25,
        min_size=500,
        min_extent=4,
        force_connected=True,
        on_overflow="raise",
        out_is_blank=False,
        run_memory=2**28,
    ):
        check_ndim(out, 3, "out")
        if not np.issubdtype(np.dtype(out.dtype), np.integer):
            raise TypeError(f"`out` must have an integer dtype; got {out.dtype}")
        if axis not in (0, 1, 2):
            raise ValueError(f"`axis` must be 0, 1 or 2; got {axis!r}")
        if on_overflow not in _OVERFLOW_POLICIES:
            raise ValueError(f"`on_overflow` must be one of {_OVERFLOW_POLICIES}; got {on_overflow!r}")
        self.out = out
        self.axis = axis
        self.label_divisor = check_label_divisor(label_divisor, tuple(thing_list))
        self.thing_list = tuple(int(c) for c in thing_list)
        self.merge_iou_thr = check_probability(merge_iou_thr, "merge_iou_thr")
        self.merge_ioa_thr = check_probability(merge_ioa_thr, "merge_ioa_thr")
        self.min_size = check_positive_int(min_size, "min_size", minimum=0)
        self.min_extent = check_positive_int(min_extent, "min_extent", minimum=0)
        self.force_connected = bool(force_connected)
        self.on_overflow = on_overflow
        self.run_memory = check_positive_int(run_memory, "run_memory", minimum=0)
        self._sparse_writes = bool(out_is_blank) and isinstance(out, np.ndarray)
        self.n_slices = out.shape[axis]
        self.slice_shape = tuple(s for i, s in enumerate(out.shape) if i != axis)
        self._max_scratch = np.iinfo(np.dtype(out.dtype)).max
        self._reset()

    def _reset(self):
        self._index = 0
        self._n_pieces = 0
        self._prev = None  # previous slice's runs: (starts, stops, global piece numbers)
        self._row_buffer = None  # (H, W + 1) copy of the slice, last column zero
        self._dense = None  # one dense output slice of zeros, for non-sparse writes
        self._runs = []  # per slice: (starts, stops, piece) kept for finish(), or None
        self._run_bytes = 0
        self._piece_class = []  # per slice
        self._piece_area = []
        self._piece_box = []  # per slice, (n, 4): r0, r1, c0, c1
        self._labels = []  # forward label of each piece, per slice
        self._pairs = []  # per slice: (prev piece, cur piece, count) with the slice before
        self._next_label = 0
        self._stuff_label = {}

    def _index_of(self, i):
        idx = [slice(None)] * 3
        idx[self.axis] = i
        return tuple(idx)

    # -- per slice ---------------------------------------------------------------------
    def _connected_pieces(self, starts, stops, values):
        """8-connected pieces of equal value among the given runs.

        Components of the graph of touching runs, so the cost follows the
        number of runs, not of pixels. Returns 0-based piece numbers in raster
        order of each piece's first pixel.
        """
        n = len(starts)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        _, group = np.unique(values, return_inverse=True)
        h, w = self.slice_shape
        heads, tails = _touching_runs(starts, stops, w + 1, h, group.ravel())
        graph = csr_matrix((np.ones(len(heads), np.int8), (heads, tails)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        # runs are in raster order, so first occurrence order is raster order
        _, rank, _ = _first_occurrence_order(component)
        return rank

    def _write_runs(self, i, starts, stops, run_values):
        """Write one value per run into slice ``i`` of ``out``."""
        h, w = self.slice_shape
        out_dtype = np.dtype(self.out.dtype)
        run, pixel = _expand_ranges(starts - starts // (w + 1), stops - starts)  # unpadded positions
        values = run_values.astype(out_dtype, copy=False)[run]
        target = self._index_of(i)
        if self._sparse_writes:
            view = self.out[target]
            if view.flags.c_contiguous:
                view.reshape(-1)[pixel] = values
            else:
                view[np.divmod(pixel, w)] = values
            return
        if self._dense is None:
            self._dense = np.zeros(h * w, dtype=out_dtype)
        self._dense[pixel] = values
        self.out[target] = self._dense.reshape(self.slice_shape)
        self._dense[pixel] = 0

    def push(self, panoptic):
        """Add the next slice (2D panoptic ids)."""
        if self._index >= self.n_slices:
            raise ValueError(f"all {self.n_slices} slices were already pushed; call finish()")
        panoptic = np.asarray(panoptic)
        if panoptic.shape != self.slice_shape:
            raise ValueError(
                f"slice {self._index} has shape {panoptic.shape}; slices along axis "
                f"{self.axis} of `out` must have shape {self.slice_shape}"
            )
        if not np.issubdtype(panoptic.dtype, np.integer):
            raise TypeError(f"slices must hold integer panoptic ids; got dtype {panoptic.dtype}")
        h, w = self.slice_shape
        if self._row_buffer is None or self._row_buffer.dtype != panoptic.dtype:
            self._row_buffer = np.zeros((h, w + 1), dtype=panoptic.dtype)
        starts, stops, values = _row_runs(panoptic, self._row_buffer)
        if np.issubdtype(values.dtype, np.signedinteger) and values.size and values.min() < 0:
            raise ValueError(f"slice {self._index} contains negative ids")
        if values.dtype != np.uint64:
            values = values.astype(np.int64)

        # Pieces: connected parts of thing objects, then one piece per stuff class.
        div = self.label_divisor
        classes = (values // div).astype(np.int64)
        if 0 not in self.thing_list and len(classes) and classes.min() == 0:
            raise ValueError(
                f"slice {self._index} holds ids between 1 and label_divisor - 1 = {div - 1}, "
                "i.e. class 0; give panoptic ids class * label_divisor + instance (for plain "
                "instance labels of class 1, add label_divisor to the non-zero ids)"
            )
        is_thing = np.isin(classes, self.thing_list) & (values % div > 0)
        piece = np.zeros(len(starts), dtype=np.int64)
        if self.force_connected:
            thing_rank = self._connected_pieces(starts[is_thing], stops[is_thing],
                                                values[is_thing])
        else:
            _, thing_rank, _ = _first_occurrence_order(values[is_thing])
        n_things = int(thing_rank.max()) + 1 if len(thing_rank) else 0
        piece[is_thing] = thing_rank + 1
        piece_class = np.zeros(n_things, dtype=np.int64)
        piece_class[thing_rank] = classes[is_thing]
        stuff_classes, stuff_rank = np.unique(classes[~is_thing], return_inverse=True)
        piece[~is_thing] = n_things + 1 + stuff_rank.ravel()
        piece_class = np.concatenate([piece_class, stuff_classes])
        n = len(piece_class)

        areas = np.bincount(piece, weights=stops - starts, minlength=n + 1)[1:].astype(np.int64)
        rows = starts // (w + 1)
        cols = starts - rows * (w + 1)
        boxes = np.empty((n, 4), dtype=np.int64)
        boxes[:, [0, 2]] = np.iinfo(np.int64).max
        boxes[:, [1, 3]] = -1
        np.minimum.at(boxes[:, 0], piece - 1, rows)
        np.maximum.at(boxes[:, 1], piece - 1, rows + 1)
        np.minimum.at(boxes[:, 2], piece - 1, cols)
        np.maximum.at(boxes[:, 3], piece - 1, cols + (stops - starts))
        glob = piece + self._n_pieces

        labels = self._forward_labels(starts, stops, glob, piece_class, areas)
        self._piece_class.append(piece_class)
        self._piece_area.append(areas)
        self._piece_box.append(boxes)
        self._labels.append(labels)
        # Keep the runs for finish() while they fit the budget; otherwise write the
        # slice now as per-slice piece numbers, rewritten by finish().
        small = np.int32 if (h * (w + 1) < 2**31 and n < 2**31) else np.int64
        kept = (starts.astype(small), stops.astype(small), piece.astype(small))
        size = sum(a.nbytes for a in kept)
        if self._run_bytes + size <= self.run_memory:
            self._runs.append(kept)
            self._run_bytes += size
        else:
            if n > self._max_scratch:
                raise ValueError(
                    f"the output dtype {np.dtype(self.out.dtype)} cannot number the {n} pieces "
                    f"of slice {self._index}; use a uint64 output"
                )
            self._write_runs(self._index, starts, stops, piece)
            self._runs.append(None)
        self._prev = (starts, stops, glob)
        self._n_pieces += n
        self._index += 1

    def _new_labels(self, count):
        labels = np.arange(self._next_label, self._next_label + count, dtype=np.int64)
        self._next_label += count
        return labels

    def _forward_labels(self, starts, stops, glob, piece_class, areas):
        """Forward-match this slice's pieces to the previous slice's objects."""
        n = len(piece_class)
        labels = np.full(n, -1, dtype=np.int64)
        first_piece = self._n_pieces
        # Stuff keeps one label per class for the whole stack.
        for k in np.flatnonzero(~np.isin(piece_class, self.thing_list)):
            c = int(piece_class[k])
            if c not in self._stuff_label:
                self._stuff_label[c] = int(self._new_labels(1)[0])
            labels[k] = self._stuff_label[c]
        if self._prev is None:
            pairs = None
        else:
            # Overlaps with the previous slice: intersections of the runs of each row.
            prev_starts, prev_stops, prev_glob = self._prev
            cur, prev, shared = _run_overlaps(starts, stops, prev_starts, prev_stops)
            span = np.int64(first_piece + n + 1)
            keys, inverse = np.unique(prev_glob[prev] * span + glob[cur], return_inverse=True)
            counts = np.bincount(inverse.ravel(), weights=shared, minlength=len(keys))
            pairs = (keys // span, keys % span, counts.astype(np.int64))
        self._pairs.append(pairs)

        prev_first = first_piece - (len(self._labels[-1]) if self._labels else 0)
        for c in self.thing_list:
            cur = np.flatnonzero(piece_class == c)
            if len(cur) == 0:
                continue
            if self._prev is None or not self._labels:
                labels[cur] = self._new_labels(len(cur))
                continue
            prev_labels = self._labels[-1]
            prev = np.flatnonzero(self._piece_class[-1] == c)
            target_labels, target_of_prev, _ = _first_occurrence_order(prev_labels[prev])
            n_t = len(target_labels)
            target_areas = np.bincount(
                target_of_prev, weights=self._piece_area[-1][prev], minlength=n_t
            )
            inter = np.zeros((n_t, len(cur)))
            if n_t and pairs is not None:
                prev_pos = np.full(len(prev_labels), -1, dtype=np.int64)
                prev_pos[prev] = target_of_prev
                cur_pos = np.full(n, -1, dtype=np.int64)
                cur_pos[cur] = np.arange(len(cur))
                t = prev_pos[pairs[0] - 1 - prev_first]
                m = cur_pos[pairs[1] - 1 - first_piece]
                ok = (t >= 0) & (m >= 0)
                np.add.at(inter, (t[ok], m[ok]), pairs[2][ok])
            assigned = _match(
                inter, target_areas, areas[cur].astype(np.float64),
                self.merge_iou_thr, self.merge_ioa_thr,
            )
            new = assigned < 0
            labels[cur[~new]] = target_labels[assigned[~new]]
            labels[cur[new]] = self._new_labels(int(new.sum()))
        return labels

    # -- end of stack --------------------------------------------------------------------
    def _backward_labels(self):
        """Backward pass; returns per-slice final labels and label first-seen order."""
        n_slices = len(self._labels)
        starts = np.cumsum([0] + [len(x) for x in self._labels])
        result = [None] * n_slices
        seen_order = []  # labels in order of first appearance, last slice first
        for i in range(n_slices - 1, -1, -1):
            fwd = self._labels[i]
            classes = self._piece_class[i]
            bwd = fwd.copy()
            if i < n_slices - 1:
                nxt_bwd = result[i + 1]
                nxt_classes = self._piece_class[i + 1]
                pairs = self._pairs[i + 1]
                for c in self.thing_list:
                    cur = np.flatnonzero(classes == c)
                    nxt = np.flatnonzero(nxt_classes == c)
                    if len(cur) == 0 or len(nxt) == 0:
                        continue
                    # Current objects: forward labels in forward insertion order.
                    m_labels, m_of_piece, _ = _first_occurrence_order(fwd[cur])
                    # Targets: the next slice's backward labels in its insertion order,
                    # which follows its forward objects' order.
                    nxt_fwd_order, nxt_m, _ = _first_occurrence_order(self._labels[i + 1][nxt])
                    obj_bwd = np.zeros(len(nxt_fwd_order), dtype=np.int64)
                    obj_bwd[nxt_m] = nxt_bwd[nxt]
                    t_labels, t_of_obj, _ = _first_occurrence_order(obj_bwd)
                    t_of_piece = t_of_obj[nxt_m]
                    t_areas = np.bincount(t_of_piece, weights=self._piece_area[i + 1][nxt],
                                          minlength=len(t_labels))
                    m_areas = np.bincount(m_of_piece, weights=self._piece_area[i][cur],
                                          minlength=len(m_labels))
                    inter = np.zeros((len(t_labels), len(m_labels)))
                    if pairs is not None:
                        m_pos = np.full(len(fwd), -1, dtype=np.int64)
                        m_pos[cur] = m_of_piece
                        t_pos = np.full(len(nxt_bwd), -1, dtype=np.int64)
                        t_pos[nxt] = t_of_piece
                        m = m_pos[pairs[0] - 1 - starts[i]]
                        t = t_pos[pairs[1] - 1 - starts[i + 1]]
                        ok = (t >= 0) & (m >= 0)
                        np.add.at(inter, (t[ok], m[ok]), pairs[2][ok])
                    assigned = _match(inter, t_areas, m_areas, self.merge_iou_thr,
                                      self.merge_ioa_thr)
                    obj_label = np.where(assigned >= 0, t_labels[np.maximum(assigned, 0)], m_labels)
                    bwd[cur] = obj_label[m_of_piece]
            result[i] = bwd
            # The tracker meets labels in the order of this slice's objects.
            _, _, first_piece = _first_occurrence_order(fwd)
            seen_order.append(bwd[first_piece])
        return result, seen_order

    def finish(self):
        """Finish the stack: backward pass, filters, final ids written into ``out``.

        Returns
        -------
        AssemblyResult
        """
        if self._index != self.n_slices:
            raise ValueError(
                f"only {self._index} of {self.n_slices} slices were pushed before finish()"
            )
        div = self.label_divisor
        per_slice, seen = self._backward_labels()
        labels = np.concatenate(per_slice) if per_slice else np.zeros(0, np.int64)
        classes = np.concatenate(self._piece_class)
        areas = np.concatenate(self._piece_area)
        boxes = np.concatenate(self._piece_box)
        slice_of = np.repeat(np.arange(self.n_slices), [len(x) for x in per_slice])

        # Objects numbered by first appearance in the backward pass (the original's order).
        seen_all = np.concatenate(seen) if seen else np.zeros(0, np.int64)
        object_labels, _, _ = _first_occurrence_order(seen_all)
        obj = _positions(labels, object_labels)
        n_obj = len(object_labels)
        obj_class = np.zeros(n_obj, dtype=np.int64)
        obj_class[obj] = classes
        sizes = np.bincount(obj, weights=areas, minlength=n_obj).astype(np.int64)
        # 3D boxes in (stack axis, rows, cols), then permuted into volume axis order.
        lo = np.full((n_obj, 3), np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full((n_obj, 3), -1, dtype=np.int64)
        np.minimum.at(lo, obj, np.stack([slice_of, boxes[:, 0], boxes[:, 2]], axis=1))
        np.maximum.at(hi, obj, np.stack([slice_of + 1, boxes[:, 1], boxes[:, 3]], axis=1))
        extent = hi - lo
        keep = (sizes >= self.min_size) & (extent.min(axis=1, initial=np.iinfo(np.int64).max)
                                            >= self.min_extent)
        removed = int((~keep).sum())

        is_thing = np.isin(obj_class, self.thing_list)
        numbers = np.zeros(n_obj, dtype=np.int64)
        counts = {}
        for c in np.unique(obj_class[keep & is_thing]):
            members = np.flatnonzero((obj_class == c) & keep)
            if len(members) > div - 1:
                if self.on_overflow == "raise":
                    raise ValueError(
                        f"class {c} has {len(members)} objects in 3D, more than "
                        f"label_divisor - 1 = {div - 1}; raise `label_divisor` or pass "
                        "on_overflow='drop' to keep only the largest"
                    )
                order = np.argsort(-sizes[members], kind="stable")
                dropped = members[order[div - 1:]]
                keep[dropped] = False
                removed += len(dropped)
                members = np.sort(members[order[: div - 1]])
            numbers[members] = np.arange(1, len(members) + 1)
            counts[int(c)] = len(members)
        for c in np.unique(obj_class[keep & ~is_thing]):
            counts[int(c)] = 1
        final = np.where(keep, obj_class * div + numbers, 0)
        if final.size and final.max() > self._max_scratch:
            raise ValueError(
                f"id {final.max()} does not fit the output dtype {np.dtype(self.out.dtype)}"
            )

        # Write each slice's final ids: from its kept runs, or by rewriting the piece
        # numbers written at push time (foreground only).
        out_dtype = np.dtype(self.out.dtype)
        final_of_piece = final[obj].astype(out_dtype)
        starts = np.cumsum([0] + [len(x) for x in per_slice])
        in_place = isinstance(self.out, np.ndarray)
        for i in range(self.n_slices):
            lut = np.concatenate([[0], final_of_piece[starts[i] : starts[i + 1]]]).astype(out_dtype)
            runs = self._runs[i]
            if runs is not None:
                run_starts, run_stops, piece = runs
                if len(piece) or not self._sparse_writes:
                    self._write_runs(i, run_starts, run_stops, lut[piece])
                continue
            idx = self._index_of(i)
            # numpy: work on a view; other array-likes: read, rewrite, write back
            scratch = self.out[idx] if in_place else np.array(self.out[idx])
            nz = np.nonzero(scratch)
            if len(nz[0]) == 0:
                continue
            scratch[nz] = lut[scratch[nz]]
            if not in_place:
                self.out[idx] = scratch

        # Boxes are in (stack, row, col) order; rows and cols are the other two
        # volume axes in increasing order.
        cols = [0, 1, 2]
        cols.remove(0)
        cols.insert(self.axis, 0)
        kept = np.flatnonzero(keep)
        self._reset()
        return AssemblyResult(
            ids=final[kept],
            sizes=sizes[kept],
            bbox_min=lo[kept][:, cols],
            bbox_max=hi[kept][:, cols],
            removed=removed,
            counts=counts,
        )


def assemble_stack(slices, out=None, *, shape=None, dtype=np.uint32, axis=0, **options):
    """Assemble an iterable of 2D panoptic slices into a 3D panoptic volume.

    Parameters
    ----------
    slices : iterable of (H, W) int ndarray
        Panoptic ids of each slice in order along ``axis`` (ids need not agree
        between slices; 2D postprocessing numbers each slice afresh).
    out : array-like, optional
        Output volume (numpy, zarr, ...). Created as ``np.zeros(shape, dtype)``
        when omitted.
    shape : (int, int, int), optional
        Volume shape, required without ``out``.
    dtype : dtype, optional
        Dtype of a created ``out``.
    axis : int, optional
        Stack axis (0 xy, 1 xz, 2 yz).
    **options
        Passed to :class:`StackAssembler` (``label_divisor``, ``thing_list``,
        ``min_size``, ``min_extent``, ``merge_iou_thr``, ``merge_ioa_thr``,
        ``force_connected``, ``on_overflow``).

    Returns
    -------
    out : array-like
        The filled volume (ids ``class * label_divisor + k``).

    Examples
    --------
    >>> s = np.zeros((4, 4), np.uint32); s[:2, :2] = 1003
    >>> vol = assemble_stack([s, s], shape=(2, 4, 4), min_size=0, min_extent=0)
    >>> np.unique(vol).tolist()
    [0, 1001]
    """
    blank = out is None
    if blank:
        if shape is None:
            raise ValueError("give `out` or `shape`")
        out = np.zeros(tuple(shape), dtype=dtype)
    assembler = StackAssembler(out, axis=axis, out_is_blank=blank, **options)
    for s in slices:
        assembler.push(s)
    assembler.finish()
    return out
