"""Object edits: merge, delete, split, morph, and the locate / next-id queries.

Every edit works in three steps: validate everything, compute the sparse diff
inside the bounding boxes of the objects involved (read from the label
index), then commit it all-or-nothing (see ``_record.commit``).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import ball, disk
from skimage.segmentation import watershed

from empanada_core.validation import check_label_divisor, check_positive_int

from . import _arrays, _points
from ._index import LabelIndex, StaleIndexError, label_index
from ._record import Edit, EditRecord, commit

__all__ = [
    "merge_labels", "delete_labels", "split_label", "morph_labels", "locate_label",
    "next_available_label", "Location", "NothingToSplitError",
]

MORPH_OPERATIONS = ("dilate", "erode", "open", "close", "fill_holes")


class NothingToSplitError(ValueError):
    """A split found a single marker in every selected label; the array is unchanged."""


# ---------------------------------------------------------------------------------------
# shared plumbing
# ---------------------------------------------------------------------------------------


def prepare(labels, index, writable=True):
    labels = _arrays.check_labels(labels, writable=writable)
    if index is None:
        index = label_index(labels)
    elif not isinstance(index, LabelIndex):
        raise TypeError(f"`index` must be a LabelIndex; got {type(index).__name__}")
    elif index.shape != tuple(labels.shape):
        raise ValueError(f"`index` was built for shape {index.shape}, not {tuple(labels.shape)}")
    return labels, index


def run_edit(labels, index, compute, journal=None):
    """Compute an edit (retrying once on a stale index) and commit it."""
    for attempt in (0, 1):
        try:
            edit = compute(index)
            break
        except StaleIndexError:
            if attempt:
                raise
            index.refresh(labels)
    commit(labels, index, edit.record, journal)
    return edit


def object_mask(labels, index, label_id, box, whole):
    """Read ``box`` and the mask of ``label_id`` in it; check the voxel count for whole objects."""
    crop = _arrays.read(labels, box)
    mask = crop == label_id
    if whole and int(np.count_nonzero(mask)) != index.size(label_id):
        raise StaleIndexError(f"label {label_id} changed outside the index")
    return crop, mask


def _region(index, label_id, fixed, key, shape):
    box = index.bbox(label_id)
    if box is None:
        raise StaleIndexError(f"label {label_id} is not indexed")
    return _points.intersect(box, _points.scope_box(shape, fixed, key))


def _point_values(labels, index, coords, what):
    vals = _points.ids_at(labels, coords)
    bg = np.flatnonzero(vals == 0)
    if bg.size:
        p = tuple(int(v) for v in coords[bg[0]])
        raise ValueError(f"point {p} is on background (label 0); place it on a label to {what}")
    if (index.rows(vals) < 0).any():
        raise StaleIndexError("a point is on an id the index does not know")
    return vals


def _groups(keys):
    """Rows grouped by identical scope key: list of (key tuple, row indices)."""
    if keys.shape[1] == 0:
        return [((), np.arange(keys.shape[0]))]
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    return [(tuple(int(v) for v in u), np.flatnonzero(inv == g)) for g, u in enumerate(uniq)]


def _relabel_part(labels, index, label_id, value, box, whole, shape):
    _, mask = object_mask(labels, index, label_id, box, whole)
    flat = _points.mask_to_flat(mask, box, shape)
    dtype = labels.dtype
    return flat, np.full(flat.size, label_id, dtype), np.full(flat.size, value, dtype)


def _ids_text(ids, limit=8):
    ids = [int(i) for i in ids]
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False; got {value!r}")
    return bool(value)


# ---------------------------------------------------------------------------------------
# merge and delete
# ---------------------------------------------------------------------------------------


def merge_labels(labels, points=None, *, target=None, in_3d=True, axis=0, lines=None,
                 index=None, _journal=None):
    """Merge the labels under the points (and along lines) into one id, in place.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
        Label array (0 is background), edited in place.
    points : (n, labels.ndim) array of int, optional
        Voxel coordinates; each must lie on a label.
    target : int, optional
        The id to keep, if it is among the merged ids; otherwise the smallest
        merged id is kept.
    in_3d : bool, optional
        3D labels: merge whole objects (True) or only inside the slice of each
        point along ``axis`` (False, for stacks of 2D results). 4D flipbooks
        are always merged per (patch, slice) plane.
    axis : int, optional
        Slice axis for ``in_3d=False``.
    lines : sequence of (m, labels.ndim) arrays, optional
        Line or path vertices (napari line / path shapes); every voxel along
        the segments counts as a point, background voxels are skipped.
    index : LabelIndex, optional
        The label index to use and update (default: the shared one of ``labels``).

    Returns
    -------
    edit : Edit
        ``ids`` the merged ids, ``new_ids`` the kept id(s), ``record`` the diff for undo.

    Raises
    ------
    ValueError
        Points outside the array, on background, not integer or of the wrong
        dimensionality; or fewer than two labels selected (nothing to merge).
        The array is unchanged.
    """
    labels, index = prepare(labels, index)
    shape = tuple(labels.shape)
    axis = _points.check_axis(axis, len(shape))
    in_3d = _check_bool(in_3d, "in_3d")
    coords = _points.check_points(points, shape, allow_empty=lines is not None)
    if target is not None and (isinstance(target, bool) or not isinstance(target, numbers.Integral)):
        raise ValueError(f"`target` must be an integer label id; got {target!r}")
    line_coords = _points.rasterize_lines(lines, shape)
    fixed = _points.fixed_axes(len(shape), in_3d, axis)

    def compute(index):
        vals = _point_values(labels, index, coords, "merge")
        if line_coords.size:
            lvals = _points.ids_at(labels, line_coords)
            on = lvals != 0
            all_coords = np.concatenate([coords, line_coords[on]])
            all_vals = np.concatenate([vals, lvals[on]])
            if (index.rows(lvals[on]) < 0).any():
                raise StaleIndexError("a line crosses an id the index does not know")
        else:
            all_coords, all_vals = coords, vals
        if all_vals.size == 0:
            raise ValueError("nothing to merge: the lines cross no label")
        parts, merged, kept = [], set(), set()
        for key, rows in _groups(all_coords[:, list(fixed)]):
            ids = np.unique(all_vals[rows])
            if ids.size < 2:
                continue
            keep = int(target) if target is not None and int(target) in ids else int(ids[0])
            kept.add(keep)
            for label_id in ids:
                merged.add(int(label_id))
                if int(label_id) == keep:
                    continue
                box = _region(index, int(label_id), fixed, key, shape)
                parts.append(_relabel_part(labels, index, int(label_id), keep, box,
                                           not fixed, shape))
        if not parts:
            where = " in any one slice" if fixed else ""
            raise ValueError(
                f"nothing to merge: the points select only label(s) "
                f"{_ids_text(np.unique(all_vals))}{where}; select at least two labels"
            )
        record = EditRecord.concatenate(shape, labels.dtype, parts)
        kept_t = tuple(sorted(kept))
        return Edit("merge", tuple(sorted(merged)), kept_t, record,
                    f"merged labels {_ids_text(sorted(merged))} into {_ids_text(kept_t)}")

    return run_edit(labels, index, compute, _journal)


def delete_labels(labels, points, *, in_3d=True, axis=0, index=None, _journal=None):
    """Set the labels under the points to 0 (background), in place.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
        Label array, edited in place.
    points : (n, labels.ndim) array of int
        Voxel coordinates; each must lie on a label.
    in_3d : bool, optional
        3D labels: delete whole objects (True) or only their part in the slice
        of each point along ``axis`` (False). 4D: per (patch, slice) plane.
    axis : int, optional
        Slice axis for ``in_3d=False``.
    index : LabelIndex, optional
        The label index to use and update.

    Returns
    -------
    edit : Edit
        ``ids`` the deleted ids, ``record`` the diff for undo.

    Raises
    ------
    ValueError
        Bad points (outside, on background, non-integer, wrong dimensionality);
        the array is unchanged.
    """
    labels, index = prepare(labels, index)
    shape = tuple(labels.shape)
    axis = _points.check_axis(axis, len(shape))
    in_3d = _check_bool(in_3d, "in_3d")
    coords = _points.check_points(points, shape)
    fixed = _points.fixed_axes(len(shape), in_3d, axis)

    def compute(index):
        vals = _point_values(labels, index, coords, "delete")
        parts, deleted = [], set()
        for key, rows in _groups(coords[:, list(fixed)]):
            for label_id in np.unique(vals[rows]):
                deleted.add(int(label_id))
                box = _region(index, int(label_id), fixed, key, shape)
                parts.append(_relabel_part(labels, index, int(label_id), 0, box, not fixed,
                                           shape))
        record = EditRecord.concatenate(shape, labels.dtype, parts)
        ids = tuple(sorted(deleted))
        return Edit("delete", ids, (), record, f"deleted labels {_ids_text(ids)}")

    return run_edit(labels, index, compute, _journal)


# ---------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------


class _IdAllocator:
    """Hands out new ids that are unused anywhere in the array."""

    def __init__(self, index, dtype, label_divisor, new_ids):
        self.index = index
        self.dtype_max = int(np.iinfo(dtype).max)
        self.dtype = np.dtype(dtype)
        self.divisor = label_divisor
        self.taken = set()
        self.explicit = None
        if new_ids is not None:
            if isinstance(new_ids, numbers.Integral) and not isinstance(new_ids, bool):
                self.explicit = _count_from(int(new_ids))
            else:
                seq = list(np.asarray(new_ids).reshape(-1).tolist())
                if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in seq):
                    raise ValueError(f"`new_ids` must be an int or a sequence of ints; got "
                                     f"{new_ids!r}")
                self.explicit = iter(seq)
                self.n_explicit = len(seq)

    def _check_free(self, value):
        if value < 1 or value > self.dtype_max:
            raise ValueError(f"new id {value} does not fit in the labels' dtype {self.dtype} "
                             f"(1..{self.dtype_max})")
        if value in self.index or value in self.taken:
            raise ValueError(f"new id {value} is already used by another label; choose "
                             "unused ids (see next_available_label)")

    def take(self, label_id, n):
        if n == 0:
            return []
        if self.explicit is not None:
            out = []
            for _ in range(n):
                value = next(self.explicit, None)
                if value is None:
                    raise ValueError(f"`new_ids` gives {self.n_explicit} id(s), but the split "
                                     f"needs {len(self.taken) + n}")
                self._check_free(value)
                self.taken.add(value)
                out.append(value)
            return out
        if self.divisor is not None:
            cls = label_id // self.divisor
            lo, hi = cls * self.divisor + 1, (cls + 1) * self.divisor - 1
            what = f"class {cls} (ids {lo}..{hi})"
        else:
            lo = max([self.index.max_id, *self.taken]) + 1
            hi = self.dtype_max
            what = f"the labels' dtype {self.dtype} (max {self.dtype_max})"
        out = smallest_unused(self.index, lo, min(hi, self.dtype_max), n, self.taken)
        if len(out) < n:
            raise ValueError(f"no free label id left in {what}: the split needs {n} new id(s); "
                             "use a wider dtype or another label_divisor")
        self.taken.update(out)
        return out


def _count_from(start):
    while True:
        yield start
        start += 1


def smallest_unused(index, lo, hi, n, exclude=()):
    """The ``n`` smallest ids in ``lo..hi`` that are neither indexed nor in ``exclude``."""
    if hi < lo or n <= 0:
        return []
    ids = index._ids
    a, b = np.searchsorted(ids, np.uint64(lo)), np.searchsorted(ids, np.uint64(hi), "right")
    used = ids[a:b]
    if exclude:
        used = np.union1d(used, np.array(sorted(exclude), np.uint64))
    stop = min(hi, lo + n + used.size - 1)
    candidates = np.arange(lo, stop + 1, dtype=np.uint64)
    return [int(v) for v in np.setdiff1d(candidates, used, assume_unique=True)[:n]]


def _markers_from_points(work_shape, local_points):
    markers = np.zeros(work_shape, np.int32)
    # keep the caller's point order: the first point's piece keeps the id
    _, first = np.unique(local_points, axis=0, return_index=True)
    pts = local_points[np.sort(first)]
    markers[tuple((pts + 1).T)] = np.arange(1, len(pts) + 1)
    return markers, len(pts)


def split_label(labels, points, *, min_distance=10, points_as_markers=False, new_ids=None,
                in_3d=True, axis=0, label_divisor=None, index=None, _journal=None):
    """Split the labels under the points by a distance-transform watershed, in place.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
        Label array, edited in place.
    points : (n, labels.ndim) array of int
        Points on the labels to split; points are grouped by label, so several
        labels can be split in one call.
    min_distance : int, optional
        Minimum distance in voxels between two markers (peaks of the distance
        transform), as in the original's code (its docs call it a distance
        from the boundary). Larger values split into fewer pieces.
    points_as_markers : bool, optional
        Use the points themselves as markers (one piece per distinct point;
        ``min_distance`` is ignored) and flood the object from them.
    new_ids : int or sequence of int, optional
        Ids for the new pieces: a first id (consecutive ids from it) or the ids
        themselves. Every one must be unused. Default: ids above the largest id
        in the array (with ``label_divisor``: the smallest unused ids of the
        split label's class).
    in_3d : bool, optional
        3D labels: split whole objects (True) or only their part in the
        point's slice along ``axis`` (False). 4D: per (patch, slice) plane.
    axis : int, optional
        Slice axis for ``in_3d=False``.
    label_divisor : int, optional
        Panoptic divisor; new ids then stay in the split label's class.
    index : LabelIndex, optional
        The label index to use and update.

    Returns
    -------
    edit : Edit
        ``ids`` the split labels, ``new_ids`` the new pieces' ids, ``skipped``
        the labels that had a single marker, ``record`` the diff for undo.

    Raises
    ------
    NothingToSplitError
        (a ``ValueError``) every selected label has a single marker; the array
        is unchanged.
    ValueError
        Bad points, ``new_ids`` already in use, or no free id left.

    Notes
    -----
    The watershed runs in the label's bounding box, padded by one voxel, with
    ``-distance`` as energy (or a flat energy with ``points_as_markers``).
    The piece of the first point (the largest piece for distance peaks) keeps
    the label's id; voxels no marker reaches (disconnected parts) keep it too.
    The original renumbered every piece and, per slice, took new ids from
    that slice's maximum, colliding with ids on other slices; here new ids
    are never in use anywhere in the array.
    """
    labels, index = prepare(labels, index)
    shape = tuple(labels.shape)
    axis = _points.check_axis(axis, len(shape))
    in_3d = _check_bool(in_3d, "in_3d")
    points_as_markers = _check_bool(points_as_markers, "points_as_markers")
    min_distance = check_positive_int(min_distance, "min_distance")
    if label_divisor is not None:
        label_divisor = check_label_divisor(label_divisor)
    coords = _points.check_points(points, shape)
    fixed = _points.fixed_axes(len(shape), in_3d, axis)
    free = [ax for ax in range(len(shape)) if ax not in fixed]

    def compute(index):
        vals = _point_values(labels, index, coords, "split")
        alloc = _IdAllocator(index, labels.dtype, label_divisor, new_ids)
        parts, split, created, skipped = [], [], [], []
        keys = np.concatenate([coords[:, list(fixed)], vals[:, None].astype(np.int64)], axis=1)
        for key_and_id, rows in _groups(keys):
            key, label_id = key_and_id[:-1], int(vals[rows[0]])
            box = _points.pad_box(_region(index, label_id, fixed, key, shape), 1, shape, fixed)
            _, mask = object_mask(labels, index, label_id, box, not fixed)
            work = mask[tuple(0 if ax in fixed else slice(None) for ax in range(len(shape)))]
            padded = np.pad(work, 1)
            if points_as_markers:
                local = coords[rows][:, free] - box[0][free]
                markers, n_markers = _markers_from_points(padded.shape, local)
                energy = np.zeros(padded.shape, np.uint8)
            else:
                distance = ndi.distance_transform_edt(padded)
                peaks = peak_local_max(distance, min_distance=min_distance, exclude_border=False,
                                       labels=padded.astype(np.uint8))
                seeds = np.zeros(padded.shape, bool)
                seeds[tuple(peaks.T)] = True
                markers, n_markers = ndi.label(seeds, structure=np.ones((3,) * padded.ndim))
                energy = -distance
            if n_markers < 2:
                skipped.append(label_id)
                continue
            pieces = watershed(energy, markers, mask=padded)[(slice(1, -1),) * padded.ndim]
            counts = np.bincount(pieces[work], minlength=n_markers + 1)
            nonempty = np.flatnonzero(counts[1:]) + 1
            if nonempty.size < 2:
                skipped.append(label_id)
                continue
            keep = 1 if points_as_markers and counts[1] else int(nonempty[np.argmax(
                counts[nonempty])])
            others = [int(p) for p in nonempty if p != keep]
            ids_new = alloc.take(label_id, len(others))
            lut = np.full(n_markers + 1, label_id, np.uint64)
            lut[others] = ids_new
            new_vals = lut[pieces[work]]
            local_flat = np.flatnonzero(work)  # = flat index in the (unsqueezed) box
            changed = new_vals != label_id
            flat = _points.local_to_flat(local_flat[changed], box, shape)
            parts.append((flat, np.full(flat.size, label_id, np.uint64), new_vals[changed]))
            split.append(label_id)
            created.extend(ids_new)
        if not parts:
            raise NothingToSplitError(
                f"nothing to split: label(s) {_ids_text(sorted(set(skipped)))} gave a single "
                + ("marker (place two or more points on a label)" if points_as_markers else
                   f"marker at min_distance={min_distance} (lower it to split)")
                + "; the labels are unchanged")
        record = EditRecord.concatenate(shape, labels.dtype, parts)
        msg = f"split labels {_ids_text(sorted(set(split)))}; new labels {_ids_text(created)}"
        if skipped:
            msg += f"; nothing to split in {_ids_text(sorted(set(skipped)))}"
        return Edit("split", tuple(sorted(set(split))), tuple(created), record, msg,
                    tuple(sorted(set(skipped))))

    return run_edit(labels, index, compute, _journal)


# ---------------------------------------------------------------------------------------
# morphology
# ---------------------------------------------------------------------------------------


def _expand(footprint, fixed):
    for ax in sorted(fixed):
        footprint = np.expand_dims(footprint, ax)
    return footprint


def _footprint(ndim, fixed, radius):
    n_free = ndim - len(fixed)
    base = ball(radius) if n_free == 3 else disk(radius)
    return _expand(base.astype(bool), fixed)


def _face_structure(ndim, fixed):
    """Face connectivity that never links voxels across the fixed axes."""
    s = ndi.generate_binary_structure(ndim, 1)
    for ax in fixed:
        idx = [slice(None)] * ndim
        for v in (0, 2):
            idx[ax] = v
            s[tuple(idx)] = False
    return s


def _holes(mask, hole_size, fixed):
    """Background voxels of ``mask`` in enclosed holes of at most ``hole_size`` voxels."""
    padded = np.pad(~mask, 1)
    comp, n = ndi.label(padded, structure=_face_structure(mask.ndim, fixed))
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(comp.reshape(-1), minlength=n + 1)
    fill = sizes <= hole_size
    fill[0] = False
    for ax in range(mask.ndim):
        fill[np.take(comp, [0, -1], axis=ax).reshape(-1)] = False
    return fill[comp][(slice(1, -1),) * mask.ndim]


def morph_labels(labels, ids=None, *, operation="dilate", radius=1, hole_size=64, in_3d=True,
                 axis=0, index=None, _journal=None):
    """Dilate, erode, open, close or fill holes of labels, each inside its own box, in place.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
        Label array, edited in place.
    ids : int or sequence of int, optional
        The labels to change (default: every label).
    operation : {"dilate", "erode", "open", "close", "fill_holes"}
        Binary morphology of each label's mask.
    radius : int, optional
        Footprint radius: a ball for 3D labels with ``in_3d``, else a disk in
        each slice (planes along ``axis``; (patch, slice) planes for 4D).
    hole_size : int, optional
        ``fill_holes``: enclosed background regions of at most this many voxels
        are filled.
    in_3d : bool, optional
        3D footprint (True) or a 2D one per slice along ``axis`` (False).
    axis : int, optional
        Slice axis for ``in_3d=False``.
    index : LabelIndex, optional
        The label index to use and update.

    Returns
    -------
    edit : Edit
        ``ids`` the labels whose voxels changed, ``record`` the diff for undo.

    Notes
    -----
    Growth (dilate, close, fill_holes) writes only into background voxels:
    no label ever overwrites another (the original wrote each label's padded
    box back, so dilation overwrote neighbours). Every label grows from the
    array as it was; a background voxel claimed by two labels stays
    background, so the result does not depend on the order of the ids.
    Shrinking (erode, open) only removes a label's own voxels.
    """
    labels, index = prepare(labels, index)
    shape = tuple(labels.shape)
    axis = _points.check_axis(axis, len(shape))
    in_3d = _check_bool(in_3d, "in_3d")
    if operation not in MORPH_OPERATIONS:
        raise ValueError(f"`operation` must be one of {MORPH_OPERATIONS}; got {operation!r}")
    radius = _arrays.check_radius(radius)
    hole_size = check_positive_int(hole_size, "hole_size", minimum=0)
    fixed = _points.fixed_axes(len(shape), in_3d, axis)
    if len(shape) == 4:
        fixed = (0, 1)
    if ids is not None:
        if isinstance(ids, numbers.Integral) and not isinstance(ids, bool):
            ids = [int(ids)]
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).reshape(-1)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"`ids` must be label ids (integers); got {ids!r}")
        if (arr <= 0).any():
            raise ValueError(f"`ids` must be positive label ids; got {arr[arr <= 0][0]}")
        ids = np.unique(arr.astype(np.uint64))
    footprint = _footprint(len(shape), fixed, radius)
    pad = {"dilate": radius, "erode": radius, "open": radius, "close": 2 * radius,
           "fill_holes": 1}[operation]

    def compute(index):
        todo = index.ids if ids is None else ids
        if ids is not None:
            missing = index.rows(todo) < 0
            if missing.any():
                raise ValueError(f"label {int(todo[missing][0])} does not exist in `labels` (it "
                                 "may have been deleted or merged)")
        grow, shrink = [], []
        for label_id in todo:
            label_id = int(label_id)
            box = _points.pad_box(index.bbox(label_id), pad, shape)
            crop, mask = object_mask(labels, index, label_id, box, True)
            if operation == "dilate":
                change = ndi.binary_dilation(mask, footprint) & (crop == 0)
            elif operation == "close":
                closed = ndi.binary_erosion(ndi.binary_dilation(mask, footprint), footprint,
                                            border_value=1)
                change = closed & (crop == 0)
            elif operation == "fill_holes":
                change = _holes(mask, hole_size, fixed) & (crop == 0)
            elif operation == "erode":
                change = mask & ~ndi.binary_erosion(mask, footprint, border_value=1)
            else:  # open
                opened = ndi.binary_dilation(ndi.binary_erosion(mask, footprint, border_value=1),
                                             footprint) & mask
                change = mask & ~opened
            flat = _points.mask_to_flat(change, box, shape)
            (grow if operation in ("dilate", "close", "fill_holes") else shrink).append(
                (flat, label_id))
        parts = []
        if grow:
            flat = np.concatenate([f for f, _ in grow])
            owner = np.concatenate([np.full(f.size, i, np.uint64) for f, i in grow])
            uniq, counts = np.unique(flat, return_counts=True)
            contested = uniq[counts > 1]
            keep = ~np.isin(flat, contested)
            parts.append((flat[keep], np.zeros(int(keep.sum()), np.uint64), owner[keep]))
        for flat, label_id in shrink:
            parts.append((flat, np.full(flat.size, label_id, np.uint64),
                          np.zeros(flat.size, np.uint64)))
        record = EditRecord.concatenate(shape, labels.dtype, parts)
        changed_ids = np.unique(np.concatenate([record.old, record.new])) if len(record) else []
        changed_ids = tuple(int(i) for i in changed_ids if i != 0)
        return Edit(f"morph:{operation}", changed_ids, (), record,
                    f"{operation} (radius {radius}) changed {len(record)} voxels of "
                    f"{len(changed_ids)} label(s)")

    return run_edit(labels, index, compute, _journal)


# ---------------------------------------------------------------------------------------
# queries
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a label is, for "Jump to label".

    Attributes
    ----------
    label_id : int
    bbox_min, bbox_max : tuple of int
        Exact half-open bounding box.
    first_slice : int
        First index along the requested axis where the label appears.
    point : tuple of int
        A voxel of the label in that first slice, near the middle of its part there.
    voxels : int
        Voxel count.
    """

    label_id: int
    bbox_min: tuple
    bbox_max: tuple
    first_slice: int
    point: tuple
    voxels: int

    @property
    def slices(self):
        """The bounding box as a tuple of slices."""
        return tuple(slice(a, b) for a, b in zip(self.bbox_min, self.bbox_max))


def _check_id(label_id, name="label_id"):
    if isinstance(label_id, bool) or not isinstance(label_id, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer label id; got {label_id!r}")
    if label_id <= 0:
        raise ValueError(f"`{name}` must be a positive label id (0 is background); got {label_id}")
    return int(label_id)


def locate_label(labels, label_id, *, axis=0, index=None):
    """Bounding box, first slice along ``axis`` and a voxel of ``label_id``.

    Uses the label index, so only the label's own box is read (to make a
    loose box exact after edits and to pick the voxel), never the volume.

    Parameters
    ----------
    labels : numpy or zarr array of int
    label_id : int
    axis : int, optional
        The viewer's slice axis.
    index : LabelIndex, optional

    Returns
    -------
    location : Location

    Raises
    ------
    ValueError
        If ``label_id`` is not a positive integer or does not exist.
    """
    labels, index = prepare(labels, index, writable=False)
    shape = tuple(labels.shape)
    axis = _points.check_axis(axis, len(shape))
    label_id = _check_id(label_id)
    for attempt in (0, 1):
        try:
            if label_id not in index:
                raise ValueError(f"label {label_id} does not exist in `labels` (it may have been "
                                 "deleted or merged)")
            index.tighten(labels, label_id)
            lo, hi = index.bbox(label_id)
            first = int(lo[axis])
            plane_box = (lo.copy(), hi.copy())
            plane_box[0][axis], plane_box[1][axis] = first, first + 1
            mask = _arrays.read(labels, plane_box) == label_id
            if not mask.any():
                raise StaleIndexError(f"label {label_id} is not in its first slice")
            break
        except StaleIndexError:
            if attempt:
                raise
            index.refresh(labels)
    pts = np.argwhere(mask)
    centre = pts.mean(axis=0)
    best = pts[np.argmin(((pts - centre) ** 2).sum(axis=1))] + plane_box[0]
    return Location(label_id, tuple(int(v) for v in lo), tuple(int(v) for v in hi), first,
                    tuple(int(v) for v in best), index.size(label_id))


def next_available_label(labels, class_id=1, label_divisor=None, *, index=None):
    """The smallest id not used anywhere in ``labels`` within a class's id range.

    Parameters
    ----------
    labels : numpy or zarr array of int
    class_id : int, optional
        Panoptic class; its ids are ``class_id * label_divisor + 1`` to
        ``(class_id + 1) * label_divisor - 1``.
    label_divisor : int, optional
        Without it every id is class 1 and the range is 1 to the dtype's maximum.
    index : LabelIndex, optional

    Returns
    -------
    label_id : int

    Raises
    ------
    ValueError
        If the range is full, ``class_id`` is given without ``label_divisor``,
        or the range does not fit the labels' dtype.
    """
    labels, index = prepare(labels, index, writable=False)
    dtype_max = int(np.iinfo(labels.dtype).max)
    class_id = check_positive_int(class_id, "class_id", minimum=0)
    if label_divisor is None:
        if class_id != 1:
            raise ValueError(f"`class_id={class_id}` needs `label_divisor` (without it every "
                             "label is class 1)")
        lo, hi = 1, dtype_max
    else:
        label_divisor = check_label_divisor(label_divisor, [class_id])
        lo, hi = class_id * label_divisor + 1, (class_id + 1) * label_divisor - 1
        if lo > dtype_max:
            raise ValueError(f"class {class_id} ids start at {lo}, beyond the labels' dtype "
                             f"{labels.dtype} (max {dtype_max})")
        hi = min(hi, dtype_max)
    free = smallest_unused(index, lo, hi, 1)
    if not free:
        raise ValueError(f"no free label id left in class {class_id}: ids {lo}..{hi} are all used")
    return free[0]
