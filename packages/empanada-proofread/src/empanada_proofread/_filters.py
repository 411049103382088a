"""Whole-array filters (small labels, boundary labels) and label counts with CSV export."""

from __future__ import annotations

import csv
import io
import numbers
import os
from dataclasses import dataclass, field

import numpy as np

from empanada_core import object_stats
from empanada_core.io import atomic_write_text
from empanada_core.validation import check_label_divisor, check_positive_int

from . import _arrays, _points
from ._index import _compress, _register
from ._ops import _ids_text, object_mask, prepare, run_edit
from ._record import Edit, EditRecord

__all__ = ["remove_small_labels", "remove_boundary_labels", "count_labels", "LabelTable"]

MODES = ("image", "slices", "volume")
# Sweep the whole array instead of reading boxes once the boxes cover this share of it.
_SWEEP_SHARE = 0.25


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}")
    return mode


def plane_axes(ndim, axis):
    """Axes that name a 2D plane: none for 2D, the slice axis for 3D, (patch, slice) for 4D."""
    if ndim == 4:
        return (0, 1)
    if ndim == 3:
        return (axis,)
    return ()


def _check_plane(plane, shape, fixed):
    if not fixed:
        return ()
    if plane is None:
        raise ValueError(
            "mode='image' on a stack needs `plane`: the slice index"
            + (" (patch, slice) pair" if len(fixed) == 2 else "")
            + " to filter; use mode='slices' for every slice or 'volume' for 3D objects")
    key = (plane,) if isinstance(plane, numbers.Integral) else tuple(plane)
    if len(key) != len(fixed) or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in key):
        raise ValueError(f"`plane` must be {len(fixed)} integer(s); got {plane!r}")
    for ax, v in zip(fixed, key):
        if not 0 <= v < shape[ax]:
            raise ValueError(f"`plane` {tuple(key)} is outside the labels of shape {shape}")
    return tuple(int(v) for v in key)


def iter_planes(labels, fixed, only=None, progress=None):
    """Yield ``(key, box, plane)`` for every 2D plane (or the one plane ``only``).

    Planes are read in slabs (one zarr chunk thick along the slice axis) so a
    sweep reads each chunk once.
    """
    shape = tuple(labels.shape)
    if not fixed:
        box = (np.zeros(len(shape), np.int64), np.array(shape, np.int64))
        yield (), box, _arrays.read(labels, box)
        return
    if only is not None:
        box = _points.scope_box(shape, fixed, only)
        yield only, box, _arrays.read(labels, box).reshape([shape[a] for a in range(len(shape))
                                                            if a not in fixed])
        return
    outer = fixed[0]
    plane_voxels = int(np.prod([shape[a] for a in range(len(shape)) if a not in fixed]))
    chunks = _arrays.write_chunks(labels)
    thick = chunks[outer] if chunks is not None else _arrays.BLOCK_VOXELS // max(plane_voxels, 1)
    if len(fixed) == 2:
        thick = 1
    thick = max(1, min(thick, (8 * _arrays.BLOCK_VOXELS) // max(plane_voxels, 1)))
    for start in range(0, shape[outer], thick):
        if progress is not None:
            progress(start, shape[outer])
        lo = np.zeros(len(shape), np.int64)
        hi = np.array(shape, np.int64)
        lo[outer], hi[outer] = start, min(start + thick, shape[outer])
        slab = _arrays.read(labels, (lo, hi))
        for i in range(int(hi[outer] - lo[outer])):
            sub = np.take(slab, i, axis=outer)
            if len(fixed) == 1:
                keys = [((start + i,), sub)]
            else:
                keys = [((start + i, j), sub[j]) for j in range(sub.shape[0])]
            for key, plane in keys:
                yield key, _points.scope_box(shape, fixed, key), plane
    if progress is not None:
        progress(shape[outer], shape[outer])


def _plane_drop_part(plane, box, drop_flags, compressed, shape):
    """Diff zeroing the voxels whose compressed id is flagged in ``drop_flags``."""
    hit = drop_flags[compressed.reshape(-1)]
    local = np.flatnonzero(hit)
    flat = _points.local_to_flat(local, box, shape)
    return flat, plane.reshape(-1)[local].astype(np.uint64), np.zeros(local.size, np.uint64)


def _delete_ids(labels, index, drop_ids, shape, progress=None):
    """Diff deleting every id of the sorted ``drop_ids`` (boxes, or one sweep when many)."""
    if drop_ids.size == 0:
        return []
    rows = index.rows(drop_ids)
    boxes = index._hi[rows] - index._lo[rows]
    covered = float(np.prod(boxes, axis=1, dtype=np.float64).sum())
    if covered < _SWEEP_SHARE * float(np.prod(shape, dtype=np.float64)):
        parts = []
        for label_id, row in zip(drop_ids, rows):
            box = (index._lo[row], index._hi[row])
            _, mask = object_mask(labels, index, int(label_id), box, True)
            flat = _points.mask_to_flat(mask, box, shape)
            parts.append((flat, np.full(flat.size, label_id, np.uint64),
                          np.zeros(flat.size, np.uint64)))
        return parts
    parts = []
    top = int(drop_ids[-1])
    lut = None
    if top < (1 << 24):  # small ids: one boolean lookup per voxel instead of a search
        lut = np.zeros(top + 2, bool)  # the last entry stands for every id above ``top``
        lut[drop_ids.astype(np.intp)] = True
    blocks = list(_arrays.iter_blocks(shape, _arrays.write_chunks(labels)))
    for n, box in enumerate(blocks, 1):
        if progress is not None:
            progress(n - 1, len(blocks))
        block = _arrays.read(labels, box).reshape(-1)
        nonzero = np.flatnonzero(block)  # only foreground voxels are looked up
        vals = block[nonzero]
        if lut is not None:
            hit = lut[np.minimum(vals, lut.size - 1)]
        else:
            v64 = vals.astype(np.uint64)
            pos = np.minimum(np.searchsorted(drop_ids, v64), drop_ids.size - 1)
            hit = drop_ids[pos] == v64
        local = nonzero[hit]
        if local.size:
            flat = _points.local_to_flat(local, box, shape)
            parts.append((flat, vals[hit], np.zeros(local.size, block.dtype)))
    return parts


def _destination(labels, index, out):
    """Where a filter writes: ``labels`` itself, or ``out`` filled with a copy first."""
    if out is None or out is labels:
        return labels, index
    out = _arrays.check_labels(out, arg_name="out")
    _arrays.copy_into(labels, out)
    out_index = index.copy()
    _register(out, out_index)
    return out, out_index


def _filter(labels, mode, axis, plane, out, index, journal, name, volume_ids, plane_flags,
            progress=None):
    labels, index = prepare(labels, index, writable=out is None)
    shape = tuple(labels.shape)
    mode = _check_mode(mode)
    axis = _points.check_axis(axis, len(shape))
    fixed = plane_axes(len(shape), axis)
    key = _check_plane(plane, shape, fixed) if mode == "image" else None
    if mode == "image" and not fixed:
        mode = "volume"  # a 2D image is its own single plane

    def compute(index):
        if mode == "volume":
            drop = volume_ids(index)
            parts = _delete_ids(labels, index, drop, shape, progress)
            removed = drop
        else:
            parts, removed = [], []
            for _pkey, box, data in iter_planes(labels, fixed, key, progress):
                ids, compressed, sizes = _compress(data)
                if ids.size == 0:
                    continue
                flags = np.zeros(ids.size + 1, bool)
                flags[1:] = plane_flags(data, ids, sizes, compressed)
                if flags.any():
                    parts.append(_plane_drop_part(data, box, flags, compressed, shape))
                    removed.append(ids[flags[1:]])
            removed = np.unique(np.concatenate(removed)) if removed else np.zeros(0, np.uint64)
        record = EditRecord.concatenate(shape, labels.dtype, parts)
        ids = tuple(int(i) for i in removed)
        where = {"volume": "", "slices": " (per slice)", "image": f" in plane {key}"}[mode]
        msg = (f"removed {len(ids)} {name} label(s){where}: {_ids_text(ids)}" if ids
               else f"no {name} labels{where}")
        return Edit(f"remove_{name}", ids, (), record, msg)

    dst, dst_index = _destination(labels, index, out)
    if dst is labels:
        return run_edit(labels, index, compute, journal)
    edit = compute(index)
    from ._record import commit

    commit(dst, dst_index, edit.record, journal)
    return edit


def remove_small_labels(labels, min_size, *, mode="volume", axis=0, plane=None, out=None,
                        index=None, progress=None, _journal=None):
    """Remove every label with fewer than ``min_size`` voxels.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
    min_size : int
        Labels (or label parts, per slice) with ``size < min_size`` voxels are
        removed; one of exactly ``min_size`` stays (empanada-core's rule; the
        original's Filter Labels widget also removed sizes equal to it).
    mode : {"volume", "slices", "image"}
        ``"volume"``: whole objects (sizes from the label index, no sweep);
        ``"slices"``: each 2D plane on its own (slices along ``axis`` of a
        3D stack, (patch, slice) planes of a 4D flipbook); ``"image"``: only
        the plane ``plane`` (or the whole of a 2D image).
    axis : int, optional
        Slice axis of a 3D stack.
    plane : int or (int, int), optional
        The plane for ``mode="image"``.
    out : numpy or zarr array, optional
        Write the filtered labels here (a copy of ``labels`` first), leaving
        ``labels`` unchanged, as the original's filter made a new layer.
    index : LabelIndex, optional
    progress : callable, optional
        ``progress(done, total)`` during whole-array sweeps; raise from it to cancel
        (nothing is written then).

    Returns
    -------
    edit : Edit
        ``ids`` the removed ids; ``record`` the diff of the written array.
    """
    min_size = check_positive_int(min_size, "min_size", minimum=0)

    def volume_ids(index):
        return index._ids[index._sizes < min_size].copy()

    def plane_flags(data, ids, sizes, compressed):
        return sizes < min_size

    return _filter(labels, mode, axis, plane, out, index, _journal, "small", volume_ids,
                   plane_flags, progress)


def remove_boundary_labels(labels, *, mode="volume", axis=0, plane=None, out=None, index=None,
                           progress=None, _journal=None):
    """Remove every label that touches the border of the array (or of its plane).

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
    mode : {"volume", "slices", "image"}
        ``"volume"``: objects touching any face of the array (from the label
        index's boxes, no sweep); ``"slices"``: in each 2D plane, labels
        touching that plane's edges (``skimage.segmentation.clear_border`` per
        slice); ``"image"``: only in the plane ``plane``.
    axis, plane, out, index, progress
        As in :func:`remove_small_labels`.

    Returns
    -------
    edit : Edit
        ``ids`` the removed ids.
    """
    def volume_ids(index):
        shape = np.array(index.shape, np.int64)
        touch = ((index._lo == 0) | (index._hi == shape)).any(axis=1)
        loose = touch & index._loose
        if loose.any():  # a loose box may touch the border only because voxels were removed
            for label_id in index._ids[loose]:
                index.tighten(labels_ref[0], int(label_id))
            touch = ((index._lo == 0) | (index._hi == shape)).any(axis=1)
        return index._ids[touch].copy()

    def plane_flags(data, ids, sizes, compressed):
        edge = np.unique(np.concatenate([np.take(compressed, [0, -1], axis=ax).reshape(-1)
                                         for ax in range(compressed.ndim)]))
        flags = np.zeros(ids.size + 1, bool)
        flags[edge] = True
        return flags[1:]

    labels_ref = [labels]
    return _filter(labels, mode, axis, plane, out, index, _journal, "boundary", volume_ids,
                   plane_flags, progress)


# ---------------------------------------------------------------------------------------
# counts
# ---------------------------------------------------------------------------------------


def _class_names(class_names):
    if class_names is None:
        return {}
    if isinstance(class_names, str):
        names = {}
        for n, line in enumerate(class_names.strip().splitlines(), 1):
            if not line.strip():
                continue
            head, sep, name = line.partition(",")
            if not sep or not head.strip().isdigit() or not name.strip():
                raise ValueError(f"`class_names` line {n} must read 'class_id,name'; got {line!r}")
            names[int(head)] = name.strip()
        return names
    if not hasattr(class_names, "items"):
        raise ValueError("`class_names` must be a {class_id: name} dict or 'id,name' lines; "
                         f"got {type(class_names).__name__}")
    return {check_positive_int(k, "class id", minimum=0): str(v) for k, v in class_names.items()}


_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("n", "z", "y", "x")}


@dataclass(frozen=True)
class LabelTable:
    """Ids, classes, voxel counts and boxes of labels: one row per label (per plane).

    Attributes
    ----------
    columns : dict of str to ndarray
        Equal-length columns: the plane (``slice`` or ``patch``, ``slice``) in
        per-slice modes, ``class_id``, ``class_name``, ``label_id``,
        ``instance_id``, ``voxels`` and the box (``min_<axis>``, ``max_<axis>``,
        half-open).
    mode : str
    """

    columns: dict
    mode: str
    class_names: dict = field(default_factory=dict)

    def __len__(self):
        return int(self.columns["label_id"].size)

    def per_class(self):
        """``{class_name: number of distinct ids}``."""
        out = {}
        names, ids = self.columns["class_name"], self.columns["label_id"]
        for name in dict.fromkeys(names.tolist()):
            out[name] = int(np.unique(ids[names == name]).size)
        return out

    def to_csv(self, path):
        """Write the table as CSV (to a temporary file, then renamed); returns the path."""
        path = os.fspath(path)
        keys = list(self.columns)
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(keys)
        writer.writerows(zip(*(self.columns[k].tolist() for k in keys)))
        atomic_write_text(path, text.getvalue())
        return path

    def __str__(self):
        parts = [f"{name}: {n} label(s)" for name, n in self.per_class().items()]
        return "; ".join(parts) if parts else "no labels"


def count_labels(labels, *, label_divisor=None, class_names=None, mode="volume", axis=0,
                 plane=None, path=None, index=None, progress=None):
    """Ids and voxel counts per class (per plane in the 2D modes), with bounding boxes.

    Parameters
    ----------
    labels : numpy or zarr array of int, 2D, 3D or 4D
    label_divisor : int, optional
        Panoptic divisor (class = id // label_divisor); without it every label
        is class 1, as in the original.
    class_names : dict or str, optional
        ``{class_id: name}`` or lines ``"class_id,name"`` (the original's
        text box). Unnamed classes read ``class_<id>``.
    mode : {"volume", "slices", "image"}
        ``"volume"``: one row per object, from the label index (no sweep);
        ``"slices"``: one row per (plane, id); ``"image"``: the plane ``plane``.
    axis : int, optional
        Slice axis of a 3D stack.
    plane : int or (int, int), optional
        The plane for ``mode="image"``.
    path : str or path, optional
        Also write the table there as CSV.
    index : LabelIndex, optional
    progress : callable, optional
        ``progress(done, total)`` during the per-slice sweep; raise from it to cancel.

    Returns
    -------
    table : LabelTable
    """
    labels, index = prepare(labels, index, writable=False)
    shape = tuple(labels.shape)
    mode = _check_mode(mode)
    axis = _points.check_axis(axis, len(shape))
    if label_divisor is not None:
        label_divisor = check_label_divisor(label_divisor)
    names = _class_names(class_names)
    fixed = plane_axes(len(shape), axis)
    key = _check_plane(plane, shape, fixed) if mode == "image" else None
    if mode == "image" and not fixed:
        mode = "volume"
    columns = {}
    if mode == "volume":
        for label_id in index._ids[index._loose]:
            index.tighten(labels, int(label_id))
        ids, voxels = index._ids.copy(), index._sizes.copy()
        lo, hi = index._lo.copy(), index._hi.copy()
        axes = _AXIS_NAMES[len(shape)]
    else:
        free = [a for a in range(len(shape)) if a not in fixed]
        axes = tuple(_AXIS_NAMES[len(shape)][a] for a in free)
        plane_keys, id_parts, vox_parts, lo_parts, hi_parts = [], [], [], [], []
        for pkey, _box, data in iter_planes(labels, fixed, key, progress):
            stats = object_stats(data)
            if len(stats) == 0:
                continue
            plane_keys.append(np.tile(np.array(pkey, np.int64), (len(stats), 1)))
            id_parts.append(stats.ids.astype(np.uint64))
            vox_parts.append(stats.sizes)
            lo_parts.append(stats.bbox_min)
            hi_parts.append(stats.bbox_max)
        if id_parts:
            keys_arr = np.concatenate(plane_keys)
            ids, voxels = np.concatenate(id_parts), np.concatenate(vox_parts)
            lo, hi = np.concatenate(lo_parts), np.concatenate(hi_parts)
        else:
            keys_arr = np.zeros((0, len(fixed)), np.int64)
            ids, voxels = np.zeros(0, np.uint64), np.zeros(0, np.int64)
            lo = hi = np.zeros((0, len(free)), np.int64)
        for j, name in enumerate(("patch", "slice") if len(fixed) == 2 else ("slice",)):
            columns[name] = keys_arr[:, j]
    classes = (ids // np.uint64(label_divisor) if label_divisor is not None
               else np.ones(ids.size, np.uint64))
    columns["class_id"] = classes.astype(np.int64)
    uniq_classes, class_inv = np.unique(classes, return_inverse=True)
    class_labels = np.array([names.get(int(c), f"class_{int(c)}") for c in uniq_classes] or [""],
                            dtype=object)
    columns["class_name"] = class_labels[class_inv.reshape(-1)] if ids.size else np.zeros(0, object)
    columns["label_id"] = ids
    columns["instance_id"] = (ids - classes * np.uint64(label_divisor)
                              if label_divisor is not None else ids.copy())
    columns["voxels"] = voxels.astype(np.int64)
    for j, name in enumerate(axes):
        columns[f"min_{name}"] = lo[:, j].astype(np.int64)
    for j, name in enumerate(axes):
        columns[f"max_{name}"] = hi[:, j].astype(np.int64)
    table = LabelTable(columns, mode, names)
    if path is not None:
        table.to_csv(path)
    return table
