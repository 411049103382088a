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

Unlike the original, no run-length encodings are built: everything the rules
need is the area of each piece and one sparse table of pixel overlaps per pair
of consecutive slices (a bincount of piece-id pairs). The backward pass and the
size and extent filters then touch no pixels. The output array is used as
scratch: each slice is written at once with piece numbers and rewritten through
one lookup table at the end, so memory holds one slice plus per-piece tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ._validation import (
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
        self._sparse_writes = bool(out_is_blank) and isinstance(out, np.ndarray)
        self.n_slices = out.shape[axis]
        self.slice_shape = tuple(s for i, s in enumerate(out.shape) if i != axis)
        self._max_scratch = np.iinfo(np.dtype(out.dtype)).max
        self._reset()

    def _reset(self):
        self._index = 0
        self._n_pieces = 0
        self._prev = None  # previous slice: (foreground flat indices, global piece numbers)
        self._scratch = None  # one dense slice of zeros, reused for sparse lookups
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
    def _connected_pieces(self, flat_idx, values):
        """8-connected pieces of equal value among the given foreground pixels.

        Works on the foreground only (a sparse neighbour graph), so the cost
        follows the number of object pixels, not the slice size. Returns
        0-based piece numbers in raster order of each piece's first pixel.
        """
        n = len(flat_idx)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        h, w = self.slice_shape
        scratch = self._scratch
        scratch[flat_idx] = np.arange(1, n + 1)
        rows, cols = np.divmod(flat_idx, w)
        heads, tails = [], []
        # forward half of the 8-neighbourhood: right, down-left, down, down-right
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
            ok = (rows + dr < h) & (cols + dc >= 0) & (cols + dc < w)
            src = np.flatnonzero(ok)
            nb = scratch[flat_idx[src] + dr * w + dc] - 1
            linked = nb >= 0
            src, nb = src[linked], nb[linked]
            same = values[src] == values[nb]
            heads.append(src[same])
            tails.append(nb[same])
        scratch[flat_idx] = 0
        heads = np.concatenate(heads)
        tails = np.concatenate(tails)
        graph = csr_matrix((np.ones(len(heads), np.int8), (heads, tails)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        # pixels are in raster order, so first occurrence order is raster order
        _, rank, _ = _first_occurrence_order(component)
        return rank

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
        flat = panoptic.ravel()
        idx = np.flatnonzero(flat)
        values = flat[idx]
        if np.issubdtype(values.dtype, np.signedinteger) and values.size and values.min() < 0:
            raise ValueError(f"slice {self._index} contains negative ids")
        if values.dtype != np.uint64:
            values = values.astype(np.int64)
        if self._scratch is None:
            self._scratch = np.zeros(flat.size, dtype=np.int64)

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
        piece = np.zeros(len(idx), dtype=np.int64)
        if self.force_connected:
            thing_rank = self._connected_pieces(idx[is_thing], values[is_thing])
        else:
            _, thing_rank, _ = _first_occurrence_order(values[is_thing])
        n_things = int(thing_rank.max()) + 1 if len(thing_rank) else 0
        piece[is_thing] = thing_rank + 1
        piece_class = np.zeros(n_things, dtype=np.int64)
        piece_class[thing_rank] = classes[is_thing]
        stuff_classes, stuff_rank = np.unique(classes[~is_thing], return_inverse=True)
        piece[~is_thing] = n_things + 1 + stuff_rank
        piece_class = np.concatenate([piece_class, stuff_classes])
        n = len(piece_class)
        if n > self._max_scratch:
            raise ValueError(
                f"the output dtype {np.dtype(self.out.dtype)} cannot number the {n} pieces "
                f"of slice {self._index}; use a uint64 output"
            )

        areas = np.bincount(piece, minlength=n + 1)[1:]
        rows, cols = np.divmod(idx, self.slice_shape[1])
        boxes = np.empty((n, 4), dtype=np.int64)
        boxes[:, [0, 2]] = np.iinfo(np.int64).max
        boxes[:, [1, 3]] = -1
        np.minimum.at(boxes[:, 0], piece - 1, rows)
        np.maximum.at(boxes[:, 1], piece - 1, rows + 1)
        np.minimum.at(boxes[:, 2], piece - 1, cols)
        np.maximum.at(boxes[:, 3], piece - 1, cols + 1)
        glob = piece + self._n_pieces

        labels = self._forward_labels(idx, glob, piece_class, areas)
        self._piece_class.append(piece_class)
        self._piece_area.append(areas)
        self._piece_box.append(boxes)
        self._labels.append(labels)
        # Scratch ids in the output: per-slice piece numbers, rewritten by finish().
        target = self._index_of(self._index)
        if self._sparse_writes:
            self.out[target][np.unravel_index(idx, self.slice_shape)] = piece
        else:
            dense = self._scratch
            dense[idx] = piece
            self.out[target] = dense.reshape(self.slice_shape)
            dense[idx] = 0
        self._prev = (idx, glob)
        self._n_pieces += n
        self._index += 1

    def _new_labels(self, count):
        labels = np.arange(self._next_label, self._next_label + count, dtype=np.int64)
        self._next_label += count
        return labels

    def _forward_labels(self, idx, glob, piece_class, areas):
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
            # Overlaps with the previous slice, through the scratch slice.
            prev_idx, prev_glob = self._prev
            self._scratch[prev_idx] = prev_glob
            key_prev = self._scratch[idx]
            self._scratch[prev_idx] = 0
            both = key_prev > 0
            key_prev = key_prev[both]
            key_cur = glob[both]
            span = np.int64(first_piece + n + 1)
            keys, counts = np.unique(key_prev.astype(np.int64) * span + key_cur, return_counts=True)
            pairs = (keys // span, keys % span, counts)
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

        # Rewrite each slice's scratch piece numbers into final ids (foreground only).
        out_dtype = np.dtype(self.out.dtype)
        final_of_piece = final[obj].astype(out_dtype)
        starts = np.cumsum([0] + [len(x) for x in per_slice])
        in_place = isinstance(self.out, np.ndarray)
        for i in range(self.n_slices):
            idx = self._index_of(i)
            # numpy: work on a view; other array-likes: read, rewrite, write back
            scratch = self.out[idx] if in_place else np.array(self.out[idx])
            nz = np.nonzero(scratch)
            if len(nz[0]) == 0:
                continue
            lut = np.concatenate([[0], final_of_piece[starts[i] : starts[i + 1]]]).astype(out_dtype)
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
