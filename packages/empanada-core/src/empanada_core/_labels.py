"""Label-image utilities: relabelling, per-label components, holes and morphology.

Every function takes an integer label image of any dimension (0 is background)
and is vectorised over objects: ids are compressed with a ``bincount`` lookup
table when they are small and with one ``np.unique`` sort otherwise, so ids up
to ``2**64 - 1`` work and no array is ever sized by the largest id.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as _sk_label

from .validation import check_label_divisor, check_label_image, check_positive_int

__all__ = [
    "label_dtype",
    "label_ids",
    "relabel_sequential",
    "connected_components_per_label",
    "fill_holes_per_label",
    "erode_labels",
    "dilate_labels",
    "split_panoptic",
]

_UINT32_MAX = int(np.iinfo(np.uint32).max)
_UINT64_MAX = int(np.iinfo(np.uint64).max)


# ---------------------------------------------------------------------------
# private helpers (shared with _metrics)
# ---------------------------------------------------------------------------


def _check_labels(labels, arg_name="labels", min_ndim=1):
    """Validate an integer label image of at least ``min_ndim`` dimensions."""
    labels = check_label_image(labels, arg_name)
    if labels.ndim < min_ndim:
        raise TypeError(
            f"`{arg_name}` must have at least {min_ndim} dimension(s); got a "
            f"{labels.ndim}D array with shape {tuple(labels.shape)}"
        )
    return labels


def _index_labels(labels):
    """Compress the nonzero ids of a label image.

    Returns
    -------
    ids : (K,) ndarray, labels.dtype
        Sorted nonzero ids.
    index : ndarray of intp, shape ``labels.shape``
        ``index[p]`` is the position of ``labels[p]`` in ``ids``; -1 on background.
    areas : (K,) ndarray of int64
        Pixel count of each id.
    """
    flat = labels.reshape(-1)
    if flat.size == 0:
        return (
            np.zeros(0, labels.dtype),
            np.zeros(labels.shape, np.intp),
            np.zeros(0, np.int64),
        )
    max_id = int(flat.max())
    if max_id <= max(2 * flat.size, 1 << 16):
        # small ids: bincount plus a lookup table, linear time
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=max_id + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.full(max_id + 1, -1, dtype=np.intp)
        lut[ids] = np.arange(ids.size, dtype=np.intp)
        index = lut[flat]
        areas = counts[ids].astype(np.int64, copy=False)
        ids = ids.astype(labels.dtype)
    else:
        # huge ids: sort once
        ids, index, areas = np.unique(flat, return_inverse=True, return_counts=True)
        index = index.reshape(-1).astype(np.intp, copy=False)
        areas = areas.astype(np.int64, copy=False)
        if ids[0] == 0:
            ids, areas = ids[1:], areas[1:]
            index = index - 1
    return ids, index.reshape(labels.shape), areas


def _present_ids(labels):
    """Sorted nonzero ids of a label image (no per-pixel index)."""
    flat = labels.reshape(-1)
    if flat.size == 0:
        return np.zeros(0, labels.dtype)
    max_id = int(flat.max())
    if max_id <= max(2 * flat.size, 1 << 16):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=max_id + 1)
        return (np.flatnonzero(counts[1:]) + 1).astype(labels.dtype)
    ids = np.unique(flat)
    return ids[ids != 0]


def label_ids(labels, *, slab_bytes=1 << 24):
    """Sorted nonzero ids present in a label array, read slab by slab.

    Works on numpy arrays and on lazy arrays (zarr, memory maps) without loading
    them whole: memory stays about ``slab_bytes`` plus the ids.

    Parameters
    ----------
    labels : array-like of int
        Label image or volume (anything with ``shape``, ``dtype`` and slicing).
    slab_bytes : int, optional
        Bytes read at a time along the first axis (16 MiB).

    Returns
    -------
    ids : 1D ndarray
        Sorted, unique, nonzero ids, in the dtype of ``labels``.

    Examples
    --------
    >>> import numpy as np
    >>> label_ids(np.array([[0, 7, 7], [3, 0, 10001]], np.uint32)).tolist()
    [3, 7, 10001]
    """
    if not (hasattr(labels, "shape") and hasattr(labels, "dtype")):
        labels = np.asarray(labels)
    dtype = np.dtype(labels.dtype)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"`labels` must be an integer array; got dtype {dtype}")
    shape = tuple(int(n) for n in labels.shape)
    if len(shape) == 0 or 0 in shape:
        return np.zeros(0, dtype)
    per_row = max(1, math.prod(shape[1:]) * dtype.itemsize)
    step = max(1, int(slab_bytes) // per_row)
    found = [_present_ids(np.asarray(labels[i:i + step]))
             for i in range(0, shape[0], step)]
    ids = np.unique(np.concatenate(found)) if len(found) > 1 else found[0]
    return ids.astype(dtype, copy=False)


def _axis_pairs(shape, axis):
    """Slices selecting each pixel (``lo``) and its +1 neighbour along ``axis`` (``hi``)."""
    lo = [slice(None)] * len(shape)
    hi = [slice(None)] * len(shape)
    lo[axis] = slice(None, -1)
    hi[axis] = slice(1, None)
    return tuple(lo), tuple(hi)


def _class_ids(labels, label_divisor):
    """``labels // label_divisor``, also when the divisor exceeds the dtype's range."""
    if labels.size == 0 or label_divisor > int(labels.max()):
        return np.zeros(labels.shape, dtype=labels.dtype)
    return labels // label_divisor


def _check_iterations(iterations):
    return check_positive_int(iterations, "iterations", minimum=0)


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def label_dtype(max_id):
    """Smallest unsigned dtype (uint32 or uint64) that holds ``max_id``.

    Parameters
    ----------
    max_id : int or ndarray of int
        The largest id to store, or an array whose maximum is used (an empty
        array counts as 0).

    Returns
    -------
    dtype : numpy.dtype
        ``uint32`` when ``max_id <= 2**32 - 1``, otherwise ``uint64``.

    Raises
    ------
    TypeError
        If ``max_id`` is not an integer (bool and float are refused).
    ValueError
        If ``max_id`` is negative or above ``2**64 - 1``.

    Notes
    -----
    uint32 is never narrowed to uint8/uint16, so that label images keep one
    dtype across a pipeline (napari and zarr handle uint32 well).

    Examples
    --------
    >>> label_dtype(70_000)
    dtype('uint32')
    >>> label_dtype(np.array([3, 2**40]))
    dtype('uint64')
    """
    if isinstance(max_id, np.ndarray):
        if max_id.dtype == bool or not np.issubdtype(max_id.dtype, np.integer):
            raise TypeError(f"`max_id` must be an integer array; got dtype {max_id.dtype}")
        max_id = int(max_id.max()) if max_id.size else 0
    elif isinstance(max_id, bool) or not isinstance(max_id, numbers.Integral):
        raise TypeError(f"`max_id` must be an integer or an integer array; got {max_id!r}")
    max_id = int(max_id)
    if max_id < 0:
        raise ValueError(f"`max_id` must be >= 0; got {max_id}")
    if max_id > _UINT64_MAX:
        raise ValueError(f"`max_id` does not fit in uint64; got {max_id}")
    return np.dtype(np.uint32) if max_id <= _UINT32_MAX else np.dtype(np.uint64)


def relabel_sequential(labels, *, offset=1, return_mapping=False):
    """Renumber the objects of a label image ``offset, offset + 1, ...``.

    New ids follow the order of the old ids (the smallest old id becomes
    ``offset``); background 0 stays 0.

    Parameters
    ----------
    labels : (M[, N[, ...]]) ndarray of int
        Label image; 0 is background. Any integer dtype, ids up to ``2**64 - 1``.
    offset : int, optional
        First new id (>= 1).
    return_mapping : bool, optional
        Also return the old ids.

    Returns
    -------
    relabelled : ndarray, same shape as ``labels``
        Dtype from :func:`label_dtype` of the largest new id (uint32 or uint64).
    old_ids : (K,) ndarray, ``labels.dtype``
        Only with ``return_mapping=True``: ``old_ids[k]`` is the old id of new
        id ``k + offset``.

    Raises
    ------
    TypeError
        If ``labels`` is boolean, not integer, or 0-dimensional, or ``offset`` is
        not an integer.
    ValueError
        If ``labels`` holds negative ids or ``offset < 1``.

    Notes
    -----
    Memory and time do not depend on the id values: ids are compressed with a
    ``bincount`` lookup table when they are small and with ``np.unique``
    otherwise.

    Examples
    --------
    >>> relabel_sequential(np.array([[0, 7], [2**40, 7]]))
    array([[0, 1],
           [2, 1]], dtype=uint32)
    >>> relabel_sequential(np.array([0, 9, 4]), offset=5, return_mapping=True)
    (array([0, 6, 5], dtype=uint32), array([4, 9]))
    """
    labels = _check_labels(labels)
    offset = check_positive_int(offset, "offset")
    flat = labels.reshape(-1)
    max_id = int(flat.max()) if flat.size else 0
    if max_id <= max(2 * flat.size, 1 << 16):
        # small ids: one lookup table indexed by the old ids
        present = np.bincount(flat.astype(np.intp, copy=False), minlength=max_id + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(max_id + 1, dtype=label_dtype(offset + ids.size - 1))
        lut[ids] = np.arange(offset, offset + ids.size)
        out = lut[labels]
        ids = ids.astype(labels.dtype)
    else:
        # huge ids: sort once; background (if present) is the first unique value
        ids, inverse = np.unique(flat, return_inverse=True)
        has_zero = ids[0] == 0
        first = offset - 1 if has_zero else offset
        lut = np.arange(first, first + ids.size, dtype=label_dtype(first + ids.size - 1))
        if has_zero:
            lut[0] = 0
            ids = ids[1:]
        out = lut[inverse.reshape(labels.shape)]
    if return_mapping:
        return out, ids
    return out


def connected_components_per_label(labels, *, connectivity=None, return_parents=False):
    """Split every object into its connected components.

    A pixel connects to a neighbour only when both hold the same id, so two
    touching objects stay apart and a fragmented object becomes several.

    Parameters
    ----------
    labels : (M[, N[, ...]]) ndarray of int
        Label image; 0 is background and stays 0.
    connectivity : int, optional
        Maximum number of orthogonal steps to a neighbour, 1 to ``labels.ndim``
        (1: 4-neighbours in 2D / 6 in 3D). Default ``labels.ndim`` (8 in 2D, 26
        in 3D), as ``skimage.measure.label``.
    return_parents : bool, optional
        Also return the original id of each component.

    Returns
    -------
    components : ndarray, same shape as ``labels``
        Components numbered ``1..K`` in raster (C) order of their first pixel;
        dtype from :func:`label_dtype` (uint32 unless K needs uint64).
    parents : (K,) ndarray, ``labels.dtype``
        Only with ``return_parents=True``: ``parents[k - 1]`` is the original id
        of component ``k``.

    Raises
    ------
    TypeError
        If ``labels`` is boolean, not integer or 0-dimensional, or
        ``connectivity`` is not an integer.
    ValueError
        If ``labels`` holds negative ids or ``connectivity`` is outside
        ``1..labels.ndim``.

    Notes
    -----
    This is the original's ``force_connected`` step without the class offset:
    ``skimage.measure.label`` on the multi-valued image, whose raster-order
    numbering we keep. The parents are read with one scatter (every pixel of a
    component holds the same original id), with no per-object loop.

    Examples
    --------
    >>> labels = np.array([[5, 0, 5],
    ...                    [5, 3, 3]])
    >>> cc, parents = connected_components_per_label(
    ...     labels, connectivity=1, return_parents=True)
    >>> cc
    array([[1, 0, 2],
           [1, 3, 3]], dtype=uint32)
    >>> parents
    array([5, 5, 3])
    """
    labels = _check_labels(labels)
    if connectivity is None:
        connectivity = labels.ndim
    connectivity = check_positive_int(connectivity, "connectivity")
    if connectivity > labels.ndim:
        raise ValueError(
            f"`connectivity` must be in 1..{labels.ndim} for a {labels.ndim}D image; "
            f"got {connectivity}"
        )
    if labels.size == 0:
        components, n = np.zeros(labels.shape, np.intp), 0
    else:
        components, n = _sk_label(labels, background=0, connectivity=connectivity, return_num=True)
    out = components.astype(label_dtype(n), copy=False)
    if not return_parents:
        return out
    parents = np.zeros(n + 1, dtype=labels.dtype)
    parents[components.reshape(-1)] = labels.reshape(-1)
    return out, parents[1:]


def fill_holes_per_label(labels, *, per_slice=False):
    """Fill background holes that lie inside a single object.

    Parameters
    ----------
    labels : (M[, N[, ...]]) ndarray of int
        Label image; 0 is background.
    per_slice : bool, optional
        Fill each slice along axis 0 on its own (needs ``labels.ndim >= 3``), as
        the original's 3D fill did per z-slice.

    Returns
    -------
    filled : ndarray, same shape and dtype as ``labels``

    Raises
    ------
    TypeError
        If ``labels`` is boolean, not integer or 0-dimensional, or
        ``per_slice=True`` with fewer than 3 dimensions.
    ValueError
        If ``labels`` holds negative ids.

    Notes
    -----
    A hole is a connected component of background pixels, connected through
    faces (4-connectivity in 2D, 6 in 3D; the complement of the objects' full
    connectivity, as in ``scipy.ndimage.binary_fill_holes``), that

    * does not touch the array border (the slice border with ``per_slice``), and
    * whose face neighbours all belong to one object.

    Such a component takes that object's id. Only background pixels are
    written: a hole bordered by two objects, or a gap around an object nested
    inside another, stays background, and no object is ever overwritten (the
    original wrote ``binary_fill_holes(crop) * id`` over each bounding box,
    relabelling other objects inside it).

    All holes are found in one ``ndimage.label`` pass; the neighbour ids come
    from shifted comparisons and one sort, so the cost does not grow with the
    number of objects.

    Examples
    --------
    >>> labels = np.array([[0, 1, 1, 1, 0],
    ...                    [0, 1, 0, 1, 2],
    ...                    [0, 1, 1, 1, 0]])
    >>> fill_holes_per_label(labels)
    array([[0, 1, 1, 1, 0],
           [0, 1, 1, 1, 2],
           [0, 1, 1, 1, 0]])
    """
    labels = _check_labels(labels)
    if per_slice and labels.ndim < 3:
        raise TypeError(
            "`per_slice=True` fills each slice along axis 0 and needs a 3D (or higher) "
            f"`labels`; got a {labels.ndim}D array with shape {tuple(labels.shape)}"
        )
    out = labels.copy()
    background = labels == 0
    if labels.size == 0 or not background.any():
        return out
    first_axis = 1 if per_slice else 0
    axes = range(first_axis, labels.ndim)

    # background components, face-connected (within slices when per_slice)
    structure = np.zeros((3,) * labels.ndim, dtype=bool)
    centre = (1,) * labels.ndim
    structure[centre] = True
    for ax in axes:
        for step in (0, 2):
            idx = list(centre)
            idx[ax] = step
            structure[tuple(idx)] = True
    holes, n_holes = ndi.label(
        background, structure=structure, output=np.intp if labels.size >= 2**31 else np.int32
    )

    # components touching the border are not holes
    touches_border = np.zeros(n_holes + 1, dtype=bool)
    for ax in axes:
        touches_border[np.take(holes, [0, -1], axis=ax).reshape(-1)] = True

    # (hole component, neighbouring object id) pairs from face neighbours
    comp_parts, id_parts = [], []
    for ax in axes:
        lo, hi = _axis_pairs(labels.shape, ax)
        for a, b in ((lo, hi), (hi, lo)):
            comp_a, lab_b = holes[a], labels[b]
            sel = (comp_a > 0) & (lab_b != 0)
            comp_parts.append(comp_a[sel])
            id_parts.append(lab_b[sel])
    comps = np.concatenate(comp_parts)
    if comps.size == 0:
        return out
    nbr_ids = np.concatenate(id_parts)
    order = np.argsort(comps, kind="stable")
    comps, nbr_ids = comps[order], nbr_ids[order]
    starts = np.flatnonzero(np.r_[True, comps[1:] != comps[:-1]])
    lowest = np.minimum.reduceat(nbr_ids, starts)
    highest = np.maximum.reduceat(nbr_ids, starts)
    comp_ids = comps[starts]

    fill = np.zeros(n_holes + 1, dtype=labels.dtype)
    single = (lowest == highest) & ~touches_border[comp_ids]
    fill[comp_ids[single]] = lowest[single]
    out[background] = fill[holes[background]]
    return out


def erode_labels(labels, *, iterations=1):
    """Erode every object on its own with a face-connected (cross) footprint.

    A pixel keeps its id only when all its face neighbours inside the array
    hold the same id; otherwise it becomes background.

    Parameters
    ----------
    labels : (M[, N[, ...]]) ndarray of int
        Label image; 0 is background.
    iterations : int, optional
        Number of erosions (>= 0; 0 returns a copy).

    Returns
    -------
    eroded : ndarray, same shape and dtype as ``labels``

    Raises
    ------
    TypeError
        If ``labels`` is boolean, not integer or 0-dimensional, or ``iterations``
        is not an integer.
    ValueError
        If ``labels`` holds negative ids or ``iterations < 0``.

    Notes
    -----
    Two touching objects both lose their contact pixels, and the array border
    does not erode (neighbours outside the array are ignored, like
    ``mode='nearest'``). The original ran a grey-scale erosion (min filter) on
    the label image, where the smaller id wins at a contact instead.

    Examples
    --------
    >>> labels = np.array([[1, 1, 1, 2, 2],
    ...                    [1, 1, 1, 2, 2],
    ...                    [1, 1, 1, 2, 2]])
    >>> erode_labels(labels)
    array([[1, 1, 0, 0, 2],
           [1, 1, 0, 0, 2],
           [1, 1, 0, 0, 2]])
    """
    labels = _check_labels(labels)
    iterations = _check_iterations(iterations)
    out = labels.copy()
    for _ in range(iterations):
        drop = np.zeros(out.shape, dtype=bool)
        for ax in range(out.ndim):
            lo, hi = _axis_pairs(out.shape, ax)
            differ = out[lo] != out[hi]
            drop[lo] |= differ
            drop[hi] |= differ
        drop &= out != 0
        if not drop.any():
            break
        out[drop] = 0
    return out


def dilate_labels(labels, *, iterations=1):
    """Grow every object into the background, never into another object.

    Parameters
    ----------
    labels : (M[, N[, ...]]) ndarray of int
        Label image; 0 is background.
    iterations : int, optional
        Growth distance in pixels (>= 0; 0 returns a copy).

    Returns
    -------
    dilated : ndarray, same shape and dtype as ``labels``

    Raises
    ------
    TypeError
        If ``labels`` is boolean, not integer or 0-dimensional, or ``iterations``
        is not an integer.
    ValueError
        If ``labels`` holds negative ids or ``iterations < 0``.

    Notes
    -----
    Each iteration is a dilation with the face-connected (cross) footprint, as
    in the original, but it writes only into background pixels: a background
    pixel takes the id of a face neighbour, so after ``iterations`` steps an
    object has grown over the background pixels within ``iterations`` face
    steps (an L1 "diamond", measured through background only). Where objects
    compete for a pixel the nearest one gets it, and among equally near
    objects the largest id (the original's max filter let the larger id
    overwrite the smaller one at every contact, inside objects too).

    ``skimage.segmentation.expand_labels`` grows by Euclidean distance
    instead; it is not used because its full-volume distance transform took
    about 35x longer and 8x more memory on a (64, 768, 1024) uint16 stack.

    Examples
    --------
    >>> dilate_labels(np.array([[0, 1, 0, 0, 2]]))
    array([[1, 1, 1, 2, 2]])
    """
    labels = _check_labels(labels)
    iterations = _check_iterations(iterations)
    out = labels.copy()
    for _ in range(iterations):
        grown = out.copy()
        for ax in range(out.ndim):
            lo, hi = _axis_pairs(out.shape, ax)
            np.maximum(grown[lo], out[hi], out=grown[lo])
            np.maximum(grown[hi], out[lo], out=grown[hi])
        new = (out == 0) & (grown != 0)
        if not new.any():
            break
        out[new] = grown[new]
    return out


def split_panoptic(panoptic, label_divisor):
    """Split a panoptic image into one instance image per class.

    Parameters
    ----------
    panoptic : (M[, N[, ...]]) ndarray of int
        Panoptic ids ``class_id * label_divisor + instance_id``; 0 is background.
    label_divisor : int
        The original's "max objects per class" (>= 2).

    Returns
    -------
    instances : dict of int to ndarray
        For every class id present (class 0 excluded), an image of the same
        shape holding ``id - class_id * label_divisor`` on that class's pixels
        and 0 elsewhere; dtype from :func:`label_dtype` of ``label_divisor - 1``.

    Raises
    ------
    TypeError
        If ``panoptic`` is boolean, not integer or 0-dimensional, or
        ``label_divisor`` is not an integer.
    ValueError
        If ``panoptic`` holds negative ids or ``label_divisor < 2``.

    Notes
    -----
    Stuff pixels (``id == class_id * label_divisor``, instance 0) read 0 in
    their class image, like background; use ``panoptic // label_divisor ==
    class_id`` for a semantic mask. One pass per class present, none per
    object.

    Examples
    --------
    >>> parts = split_panoptic(np.array([[0, 1001, 1002, 2001]]), 1000)
    >>> sorted(parts)
    [1, 2]
    >>> parts[1]
    array([[0, 1, 2, 0]], dtype=uint32)
    """
    panoptic = _check_labels(panoptic, "panoptic")
    label_divisor = check_label_divisor(label_divisor)
    classes = _class_ids(panoptic, label_divisor)
    class_ids = _present_ids(classes)
    if class_ids.size == 0:
        return {}
    instance = panoptic - classes * label_divisor  # the divisor fits the dtype here
    dtype = label_dtype(label_divisor - 1)
    zero = np.zeros((), dtype=dtype)
    return {
        int(c): np.where(classes == c, instance, zero).astype(dtype, copy=False) for c in class_ids
    }
