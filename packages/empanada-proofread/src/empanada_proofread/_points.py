"""Point, line and scope handling shared by the operations."""

from __future__ import annotations

import numbers

import numpy as np
from skimage.draw import line_nd

from . import _arrays


def check_points(points, shape, arg_name="points", allow_empty=False):
    """Return ``points`` as an (n, ndim) int64 array, or raise a clear ``ValueError``."""
    ndim = len(shape)
    if points is None:
        if allow_empty:
            return np.zeros((0, ndim), np.int64)
        raise ValueError(f"`{arg_name}` is required: an (n, {ndim}) array of coordinates")
    arr = np.asarray(points)
    if arr.dtype == object:
        raise ValueError(f"`{arg_name}` must be a numeric (n, {ndim}) array; got ragged input")
    if arr.ndim == 1 and arr.size == ndim:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != ndim:
        raise ValueError(
            f"`{arg_name}` must be an (n, {ndim}) array of coordinates for labels of shape "
            f"{tuple(shape)}; got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        if allow_empty:
            return np.zeros((0, ndim), np.int64)
        raise ValueError(f"`{arg_name}` is empty: give at least one point")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"`{arg_name}` must hold numbers; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr).all(axis=1) | (arr != np.round(arr)).any(axis=1)
        if bad.any():
            p = tuple(float(v) for v in arr[np.flatnonzero(bad)[0]])
            raise ValueError(
                f"point {p} has non-integer coordinates; round points to voxel indices "
                "first (e.g. np.round(points).astype(int))"
            )
    out = arr.astype(np.int64)
    outside = ((out < 0) | (out >= np.array(shape, np.int64))).any(axis=1)
    if outside.any():
        p = tuple(int(v) for v in out[np.flatnonzero(outside)[0]])
        raise ValueError(f"point {p} is outside the labels of shape {tuple(shape)}")
    return out


def rasterize_lines(lines, shape):
    """Every voxel along line / path shapes: each a (m, ndim) array of vertices."""
    ndim = len(shape)
    if lines is None:
        return np.zeros((0, ndim), np.int64)
    if isinstance(lines, np.ndarray) and lines.ndim == 2:
        lines = [lines]
    parts = []
    for k, path in enumerate(lines):
        verts = check_points(path, shape, arg_name=f"lines[{k}]")
        if len(verts) == 1:
            parts.append(verts)
            continue
        for a, b in zip(verts[:-1], verts[1:]):
            parts.append(np.stack(line_nd(a, b, endpoint=True), axis=1).astype(np.int64))
    if not parts:
        return np.zeros((0, ndim), np.int64)
    return np.unique(np.concatenate(parts), axis=0)


def check_axis(axis, ndim):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"`axis` must be an integer; got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"`axis` must be in {-ndim}..{ndim - 1} for {ndim}D labels; got {axis}")
    return int(axis) % ndim


def fixed_axes(ndim, in_3d, axis):
    """Axes held at the point's coordinate: the operation's plane (or none for whole objects).

    2D: none. 3D: none with ``in_3d``, else the slice axis. 4D flipbooks
    (N x slices x H x W): the (patch, slice) axes 0 and 1, always.
    """
    if ndim == 4:
        return (0, 1)
    if ndim == 3 and not in_3d:
        return (axis,)
    return ()


def scope_box(shape, fixed, key):
    """Half-open box of the plane ``key`` (coordinates along ``fixed``), or the whole array."""
    lo = np.zeros(len(shape), np.int64)
    hi = np.array(shape, np.int64)
    for ax, v in zip(fixed, key):
        lo[ax], hi[ax] = v, v + 1
    return lo, hi


def intersect(box, other):
    lo = np.maximum(box[0], other[0])
    hi = np.minimum(box[1], other[1])
    return lo, hi


def pad_box(box, pad, shape, fixed=()):
    """Grow ``box`` by ``pad`` on every free axis, clipped to the array."""
    lo, hi = box[0].copy(), box[1].copy()
    free = np.array([ax not in fixed for ax in range(len(shape))])
    lo[free] = np.maximum(lo[free] - pad, 0)
    hi[free] = np.minimum(hi[free] + pad, np.array(shape, np.int64)[free])
    return lo, hi


def ids_at(labels, coords):
    """Label ids under integer coordinates (n, ndim), as uint64."""
    return _arrays.read_points(labels, coords).astype(np.uint64)


def _strides(shape):
    return [int(v) for v in np.cumprod((1,) + tuple(shape[:0:-1]))[::-1]]


def mask_to_flat(mask, box, shape):
    """Flat indices in the full array of the True voxels of ``mask`` (a crop at ``box``)."""
    return local_to_flat(np.flatnonzero(mask), (box[0], np.asarray(box[0]) + mask.shape), shape)


def local_to_flat(local_flat, box, shape):
    """Flat indices inside a box -> flat indices in the full array.

    A table of the global index of each row start of the box, then one divmod by
    the row length: much cheaper than unravelling every index.
    """
    lo, hi = np.asarray(box[0], np.int64), np.asarray(box[1], np.int64)
    crop = [int(v) for v in hi - lo]
    strides = _strides(shape)
    base = int(np.dot(lo, strides))
    row = np.full(crop[:-1], base, np.int64)
    for ax in range(len(crop) - 1):
        view = [1] * (len(crop) - 1)
        view[ax] = crop[ax]
        row = row + (np.arange(crop[ax], dtype=np.int64) * strides[ax]).reshape(view)
    q, r = np.divmod(np.asarray(local_flat, np.int64), crop[-1])
    return row.reshape(-1)[q] + r
