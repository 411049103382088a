"""Panoptic-DeepLab postprocessing: from network outputs to a 2D panoptic label image.

The network gives, for one image, semantic probabilities, a centre heatmap and
per-pixel offsets to the object centre. Postprocessing hardens the semantics,
finds centres by max-pool non-maximum suppression, assigns every thing pixel to
its nearest predicted centre, and merges semantics and instances into ids
``class_id * label_divisor + instance_id``.

Every public function accepts numpy arrays or torch tensors and returns the
same kind. Tensors on an accelerator are handled by
:mod:`empanada_core._panoptic_torch` on their device (CUDA tensors never leave
the GPU); CPU tensors go through the numpy code, which is faster on a CPU.
torch is imported only when a tensor is passed.
"""

from __future__ import annotations

import inspect

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import label as _skimage_label

from .validation import (
    check_finite,
    check_grid_factor,
    check_label_divisor,
    check_ndim,
    check_positive_int,
    check_probability,
    is_torch_tensor,
)

__all__ = [
    "logits_to_probabilities",
    "harden_semantic",
    "find_instance_centers",
    "group_pixels",
    "merge_semantic_and_instance",
    "split_connected_instances",
    "panoptic_postprocess",
]

_OVERFLOW_POLICIES = ("raise", "drop")


def _torch_impl():
    from . import _panoptic_torch

    return _panoptic_torch


def _tensor_call(func, arguments):
    """Run ``func`` for tensor input: on the tensors' device, or through numpy on the CPU.

    Tensors on an accelerator go to the torch implementation of the same name and
    stay there. CPU tensors go through the numpy implementation (faster there:
    connected components by union-find instead of label propagation) and the
    result comes back as a tensor (integer results as int64).
    """
    import torch

    names = list(inspect.signature(func).parameters)
    kwargs = {name: arguments[name] for name in names}
    first = kwargs[names[0]]
    if first.device.type != "cpu":
        return getattr(_torch_impl(), func.__name__)(**kwargs)
    as_numpy = {k: (v.detach().numpy() if is_torch_tensor(v) else v) for k, v in kwargs.items()}
    result = np.asarray(func(**as_numpy))
    if np.issubdtype(result.dtype, np.integer):
        result = result.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(result))


def _as_chw(sem, arg_name="sem"):
    """Return ``sem`` as (C, H, W); a 2D array is one binary channel."""
    check_ndim(sem, (2, 3), arg_name)
    return sem[None] if sem.ndim == 2 else sem


def _panoptic_dtype(max_id):
    return np.dtype(np.uint32) if max_id <= np.iinfo(np.uint32).max else np.dtype(np.uint64)


def _check_overflow_policy(on_overflow):
    if on_overflow not in _OVERFLOW_POLICIES:
        raise ValueError(
            f"`on_overflow` must be one of {_OVERFLOW_POLICIES}; got {on_overflow!r}"
        )


def logits_to_probabilities(logits):
    """Turn semantic logits into probabilities.

    One channel uses the sigmoid (a binary model); several channels use the
    softmax over the channel axis, as the original engines do.

    Parameters
    ----------
    logits : (C, H, W) or (H, W) ndarray or tensor
        Raw semantic logits of one image.

    Returns
    -------
    prob : (C, H, W) float32 ndarray, or a tensor for tensor input

    Examples
    --------
    >>> logits_to_probabilities(np.zeros((1, 2, 2))).ravel().tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    if is_torch_tensor(logits):
        return _tensor_call(logits_to_probabilities, locals())
    logits = _as_chw(np.asarray(logits, dtype=np.float32), "logits")
    check_finite(logits, "logits")
    if logits.shape[0] == 1:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = logits - logits.max(axis=0, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def harden_semantic(sem, *, confidence_thr=0.5):
    """Turn semantic probabilities into a class-id image.

    Parameters
    ----------
    sem : (C, H, W) or (H, W) ndarray or tensor
        Class probabilities. With one channel (or a 2D array) it is the
        foreground probability of a binary model.
    confidence_thr : float, optional
        Binary models only: a pixel is foreground when its probability is
        ``>= confidence_thr``. Ignored for several channels (argmax).

    Returns
    -------
    classes : (H, W) uint8 ndarray (uint16 beyond 256 classes), or an int64 tensor

    Examples
    --------
    >>> harden_semantic(np.array([[0.2, 0.5]]), confidence_thr=0.5).tolist()
    [[0, 1]]
    """
    check_probability(confidence_thr, "confidence_thr")
    if is_torch_tensor(sem):
        return _tensor_call(harden_semantic, locals())
    sem = _as_chw(np.asarray(sem), "sem")
    check_finite(sem, "sem")
    if sem.shape[0] == 1:
        return (sem[0] >= confidence_thr).astype(np.uint8)
    dtype = np.uint8 if sem.shape[0] <= 256 else np.uint16
    return np.argmax(sem, axis=0).astype(dtype)


def find_instance_centers(ctr_hmp, *, threshold=0.1, nms_kernel=3, top_k=None,
                          plateaus="all"):
    """Find object centres in a heatmap by max-pool non-maximum suppression.

    A pixel is a centre when its value is ``> threshold`` and equal to the
    maximum of its ``nms_kernel`` x ``nms_kernel`` neighbourhood. Equal
    neighbouring maxima (plateaus) all count, as in the original, unless
    ``plateaus='one'``.

    Parameters
    ----------
    ctr_hmp : (H, W) ndarray or tensor
        Centre heatmap (raw network output, trained towards Gaussian peaks of 1).
    threshold : float, optional
        Minimum heatmap value of a centre (strictly greater).
    nms_kernel : int, optional
        Side of the suppression window, in heatmap pixels. With the original's
        coarse boundaries the heatmap is at 1/4 resolution, so 3 means 12
        input pixels.
    top_k : int, optional
        Keep only the ``top_k`` strongest centres (the original has no cap).
    plateaus : {'all', 'one'}, optional
        'all' (default, the original's rule): every pixel of a flat maximum is
        a centre, so two adjacent equal maxima split one object in two. 'one':
        a maximum is dropped when an earlier one (row-major) lies in its
        window, which leaves one centre per plateau. Exact ties are rare in
        float32 heatmaps but common in bf16 ones (8-bit mantissa), so bf16
        inference uses 'one'.

    Returns
    -------
    centers : (K, 2) int64 ndarray or tensor
        (row, col) of each centre, in row-major order.

    Examples
    --------
    >>> hmp = np.zeros((5, 5)); hmp[1, 1] = 1.0; hmp[3, 4] = 0.5
    >>> find_instance_centers(hmp, nms_kernel=3).tolist()
    [[1, 1], [3, 4]]
    """
    nms_kernel = check_positive_int(nms_kernel, "nms_kernel")
    if top_k is not None:
        top_k = check_positive_int(top_k, "top_k")
    if plateaus not in ("all", "one"):
        raise ValueError(f"`plateaus` must be 'all' or 'one'; got {plateaus!r}")
    if is_torch_tensor(ctr_hmp):
        return _tensor_call(find_instance_centers, locals())
    ctr_hmp = np.asarray(ctr_hmp, dtype=np.float32)
    check_ndim(ctr_hmp, 2, "ctr_hmp")
    check_finite(ctr_hmp, "ctr_hmp")
    candidates = np.where(ctr_hmp > threshold, ctr_hmp, np.float32(-1))
    # scipy centres an even window like max_pool2d(padding=k//2) cropped by one.
    pooled = ndimage.maximum_filter(candidates, size=nms_kernel, mode="constant", cval=-np.inf)
    is_center = (candidates == pooled) & (candidates > 0)
    if plateaus == "one" and is_center.any():
        # the row-major index of the first centre in each pixel's window
        none = is_center.size  # past every index (scipy mangles int64's max as cval)
        order = np.where(is_center, np.arange(is_center.size).reshape(is_center.shape), none)
        first = ndimage.minimum_filter(order, size=nms_kernel, mode="constant", cval=none)
        is_center &= first == order
    centers = np.argwhere(is_center)
    if top_k is not None and len(centers) > top_k:
        scores = ctr_hmp[centers[:, 0], centers[:, 1]]
        keep = np.sort(np.argsort(-scores, kind="stable")[:top_k])
        centers = centers[keep]
    return centers.astype(np.int64)


def group_pixels(centers, offsets, *, center_stride=1, mask=None):
    """Assign each pixel to the nearest centre after moving it by its offset.

    Parameters
    ----------
    centers : (K, 2) int ndarray or tensor
        Centres in heatmap-grid (row, col), as from :func:`find_instance_centers`.
    offsets : (2, H, W) float ndarray or tensor
        Predicted (dy, dx) from each grid pixel to its centre, in units of
        ``1 / center_stride`` grid pixels.
    center_stride : int, optional
        Spacing between grid samples in the units of ``offsets``: 4 when the
        heads run at 1/4 resolution (the original's coarse boundaries), 1 when
        they are at full resolution.
    mask : (H, W) bool ndarray or tensor, optional
        Only these pixels are grouped; the others get 0. Saves work: the
        original groups every pixel and discards non-thing pixels later.

    Returns
    -------
    cells : (H, W) int32 ndarray or tensor
        Index (1..K) of the nearest centre; 0 outside ``mask`` or if K == 0.

    Notes
    -----
    Ties in distance go to the lower centre index, as in the original.

    Examples
    --------
    >>> offsets = np.zeros((2, 1, 4)); offsets[1] = [0, -1, 1, 0]
    >>> group_pixels(np.array([[0, 0], [0, 3]]), offsets).tolist()
    [[1, 1, 2, 2]]
    """
    center_stride = check_positive_int(center_stride, "center_stride")
    if is_torch_tensor(offsets):
        return _tensor_call(group_pixels, locals())
    offsets = np.asarray(offsets)
    check_ndim(offsets, 3, "offsets")
    if offsets.shape[0] != 2:
        raise ValueError(f"`offsets` must have 2 channels (dy, dx); got {offsets.shape[0]}")
    check_finite(offsets, "offsets")
    centers = np.asarray(centers).reshape(-1, 2)
    h, w = offsets.shape[1:]
    cells = np.zeros((h, w), dtype=np.int32)
    if len(centers) == 0:
        return cells
    if mask is None:
        rows, cols = np.indices((h, w)).reshape(2, -1)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (h, w):
            raise ValueError(
                f"`mask` (shape {mask.shape}) must match the offsets grid ({h}, {w})"
            )
        rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return cells
    loc = np.stack(
        [center_stride * rows + offsets[0, rows, cols], center_stride * cols + offsets[1, rows, cols]],
        axis=1,
    ).astype(np.float64)
    points = center_stride * centers.astype(np.float64)
    tree = cKDTree(points)
    k = min(2, len(centers))
    dist, idx = tree.query(loc, k=k)
    if k == 2:
        # cKDTree orders equal distances arbitrarily; the original takes the lowest index.
        nearest = idx[:, 0].copy()
        tie = np.flatnonzero(dist[:, 0] == dist[:, 1])
        if tie.size:
            nearest[tie] = _lowest_nearest(loc[tie], points)
    else:
        nearest = idx
    cells[rows, cols] = nearest + 1
    return cells


def _lowest_nearest(loc, points, chunk_elements=1 << 22):
    """Index of the nearest point, the lowest index among exact ties (any number).

    A dense (n, K) distance matrix, in chunks: only called for the rare pixels
    whose two nearest centres tie, where a k-d tree's order is arbitrary.
    """
    out = np.empty(len(loc), dtype=np.intp)
    step = max(1, chunk_elements // len(points))
    for start in range(0, len(loc), step):
        part = loc[start:start + step]
        d2 = ((part[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1)
        out[start:start + step] = np.argmin(d2, axis=1)  # first of equal minima
    return out


def _class_counts(ids, classes, n_ids, n_classes):
    """Pixel counts per (id, class) pair as an (n_ids, n_classes) array."""
    flat = ids.astype(np.int64) * n_classes + classes
    return np.bincount(flat, minlength=n_ids * n_classes).reshape(n_ids, n_classes)


def _keep_largest(areas, limit):
    """Boolean mask keeping the ``limit`` largest entries (ties: lower index)."""
    order = np.argsort(-areas, kind="stable")
    keep = np.zeros(len(areas), dtype=bool)
    keep[order[:limit]] = True
    return keep


def _numbers_within_class(object_class, keep, label_divisor, on_overflow, what):
    """Instance numbers 1, 2, ... per class in object order (0 for dropped)."""
    numbers = np.zeros(len(object_class), dtype=np.int64)
    if len(object_class) == 0:
        return numbers
    limit = label_divisor - 1
    for c in np.unique(object_class[keep]):
        members = np.flatnonzero((object_class == c) & keep)
        if len(members) > limit and on_overflow == "raise":
            raise ValueError(
                f"class {c} has {len(members)} {what}, more than label_divisor - 1 = {limit} "
                "that its id range can hold; raise `label_divisor` (the 'max objects per "
                "class') or pass on_overflow='drop' to keep only the largest"
            )
        numbers[members[:limit]] = np.arange(1, min(len(members), limit) + 1)
    return numbers


def merge_semantic_and_instance(
    sem,
    cells,
    *,
    label_divisor=1000,
    thing_list=(1,),
    stuff_area=64,
    void_label=0,
    on_overflow="raise",
):
    """Merge a class image and an instance-cell image into panoptic ids.

    Each non-empty cell restricted to thing pixels becomes one object of the
    class most of its pixels have; objects of a class are numbered 1, 2, ...
    in increasing cell order. A stuff class keeps id ``class * label_divisor``
    where it covers at least ``stuff_area`` pixels; elsewhere ``void_label``.

    Parameters
    ----------
    sem : (H, W) int ndarray or tensor
        Class id per pixel (0 = background), as from :func:`harden_semantic`.
    cells : (H, W) int ndarray or tensor
        Instance cell per pixel (0 = none), as from :func:`group_pixels`.
    label_divisor : int, optional
        Id range per class; at most ``label_divisor - 1`` objects per class.
    thing_list : sequence of int, optional
        Classes with instances. Empty for semantic-only output.
    stuff_area : int, optional
        Minimum pixel count of a stuff class region to keep it.
    void_label : int, optional
        Id of pixels that are neither a kept stuff nor a thing object.
    on_overflow : {'raise', 'drop'}, optional
        What to do when a class has more objects than ``label_divisor - 1``:
        raise a ``ValueError`` (default) or keep only the largest objects.
        The original let ids spill into the next class's range.

    Returns
    -------
    panoptic : (H, W) uint32 ndarray (uint64 if needed), or an int64 tensor

    Examples
    --------
    >>> sem = np.array([[1, 1, 0, 1]]); cells = np.array([[2, 2, 0, 1]])
    >>> merge_semantic_and_instance(sem, cells, label_divisor=1000).tolist()
    [[1002, 1002, 0, 1001]]
    """
    label_divisor = check_label_divisor(label_divisor, tuple(thing_list))
    _check_overflow_policy(on_overflow)
    check_positive_int(stuff_area, "stuff_area", minimum=0)
    if is_torch_tensor(sem):
        return _tensor_call(merge_semantic_and_instance, locals())
    sem = np.asarray(sem)
    cells = np.asarray(cells)
    check_ndim(sem, 2, "sem")
    if sem.shape != cells.shape:
        raise ValueError(
            f"`cells` (shape {cells.shape}) must have the same shape as `sem` (shape {sem.shape})"
        )
    if not np.issubdtype(sem.dtype, np.integer) or not np.issubdtype(cells.dtype, np.integer):
        raise TypeError("`sem` and `cells` must be integer images; harden probabilities first")
    if sem.size and (sem.min() < 0 or cells.min() < 0):
        raise ValueError("`sem` and `cells` must not contain negative values")

    n_classes = int(sem.max()) + 1 if sem.size else 1
    max_id = max(n_classes - 1, 0) * label_divisor + label_divisor - 1
    panoptic = np.full(sem.shape, void_label, dtype=_panoptic_dtype(max(max_id, void_label)))

    thing_classes = np.zeros(n_classes, dtype=bool)
    thing_classes[[c for c in thing_list if c < n_classes]] = True
    is_thing = thing_classes[sem]

    # Things: one bincount gives every cell's class histogram.
    sel = is_thing & (cells > 0)
    if sel.any():
        cell_ids, inverse = np.unique(cells[sel], return_inverse=True)
        counts = _class_counts(inverse, sem[sel], len(cell_ids), n_classes)
        object_class = counts.argmax(axis=1)  # mode; ties go to the lower class
        areas = counts.sum(axis=1)
        keep = np.ones(len(cell_ids), dtype=bool)
        if on_overflow == "drop":
            for c in np.unique(object_class):
                members = np.flatnonzero(object_class == c)
                if len(members) > label_divisor - 1:
                    keep[members] = _keep_largest(areas[members], label_divisor - 1)
        numbers = _numbers_within_class(object_class, keep, label_divisor, on_overflow, "objects")
        lut = np.where(keep, object_class * label_divisor + numbers, void_label)
        panoptic[sel] = lut[inverse]

    # Stuff: one bincount of the class image.
    stuff_counts = np.bincount(sem[~is_thing].ravel(), minlength=n_classes)
    stuff_lut = np.full(n_classes, void_label, dtype=np.int64)
    big = (stuff_counts >= stuff_area) & ~thing_classes & (stuff_counts > 0)
    stuff_lut[big] = np.flatnonzero(big) * label_divisor
    not_thing = ~is_thing
    panoptic[not_thing] = stuff_lut[sem[not_thing]]
    return panoptic


def split_connected_instances(
    panoptic, *, label_divisor=1000, thing_list=(1,), on_overflow="raise"
):
    """Make every thing object connected: each connected piece becomes its own object.

    Pixels connect to their 8 neighbours with the same id. Per thing class,
    pieces are renumbered 1, 2, ... in raster order of their first pixel,
    as the original's ``force_connected`` does. Stuff ids are left unchanged.

    Parameters
    ----------
    panoptic : (H, W) int ndarray or tensor
        Panoptic ids ``class * label_divisor + instance``.
    label_divisor, thing_list, on_overflow
        As for :func:`merge_semantic_and_instance`. ``'drop'`` keeps the
        largest pieces of a class that has too many.

    Returns
    -------
    panoptic : (H, W) ndarray or tensor of the same kind as the input

    Examples
    --------
    >>> pan = np.array([[1001, 0, 1001], [0, 0, 0], [1002, 1002, 0]])
    >>> split_connected_instances(pan, label_divisor=1000).tolist()
    [[1001, 0, 1002], [0, 0, 0], [1003, 1003, 0]]
    """
    label_divisor = check_label_divisor(label_divisor, tuple(thing_list))
    _check_overflow_policy(on_overflow)
    if is_torch_tensor(panoptic):
        return _tensor_call(split_connected_instances, locals())
    panoptic = np.asarray(panoptic)
    check_ndim(panoptic, 2, "panoptic")
    if not np.issubdtype(panoptic.dtype, np.integer):
        raise TypeError(f"`panoptic` must hold integer ids; got dtype {panoptic.dtype}")
    if len(thing_list) == 0 or panoptic.size == 0:
        return panoptic.copy()
    original = panoptic
    if panoptic.dtype != np.uint64:
        panoptic = panoptic.astype(np.int64, copy=False)
    classes = panoptic // label_divisor
    is_thing = np.isin(classes, np.asarray(list(thing_list))) & (panoptic % label_divisor > 0)
    pieces = _skimage_label(np.where(is_thing, panoptic, 0), connectivity=2)
    n = int(pieces.max())
    out = original.copy()
    if n == 0:
        return out
    piece_class = np.zeros(n + 1, dtype=np.int64)
    piece_class[pieces[is_thing]] = classes[is_thing]
    piece_class = piece_class[1:]
    keep = np.ones(n, dtype=bool)
    if on_overflow == "drop":
        areas = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
        for c in np.unique(piece_class):
            members = np.flatnonzero(piece_class == c)
            if len(members) > label_divisor - 1:
                keep[members] = _keep_largest(areas[members], label_divisor - 1)
    numbers = _numbers_within_class(piece_class, keep, label_divisor, on_overflow, "pieces")
    lut = np.concatenate([[0], np.where(keep, piece_class * label_divisor + numbers, 0)])
    if lut.max() > np.iinfo(out.dtype).max:
        out = out.astype(_panoptic_dtype(int(lut.max())))
    out[is_thing] = lut[pieces[is_thing]]
    return out


def _upsample_nearest(image, factor):
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def panoptic_postprocess(
    sem,
    ctr_hmp,
    offsets,
    *,
    thing_list=(1,),
    label_divisor=1000,
    confidence_thr=0.5,
    center_thr=0.1,
    nms_kernel=3,
    center_stride=4,
    stuff_area=64,
    top_k=None,
    semantic_only=False,
    force_connected=True,
    out_shape=None,
    on_overflow="raise",
    center_plateaus="all",
):
    """Panoptic segmentation of one image from Panoptic-DeepLab outputs.

    Parameters
    ----------
    sem : (C, H, W) or (H, W) float ndarray or tensor
        Semantic probabilities at output resolution (see
        :func:`logits_to_probabilities`).
    ctr_hmp : (h, w) float ndarray or tensor
        Centre heatmap; ``H`` and ``W`` must be the same integer multiple of
        ``h`` and ``w`` (4 x downsampling with the original's coarse
        boundaries, the downsampling factor with fine boundaries).
    offsets : (2, h, w) float ndarray or tensor
        (dy, dx) offsets to the centre, on the heatmap grid.
    thing_list : sequence of int, optional
        Classes with instances (1 for mitochondria models).
    label_divisor : int, optional
        Id range per class (the widgets' "max objects per class" + 1).
    confidence_thr : float, optional
        Foreground probability threshold of a binary model (``>=``).
    center_thr : float, optional
        Minimum heatmap value of a centre (``>``).
    nms_kernel : int, optional
        Centre suppression window in heatmap pixels (the widgets' "centers min
        distance").
    center_stride : int, optional
        Spacing of the heatmap grid in offset units: 4 for coarse heads, 1 for
        heads interpolated to full resolution ("fine boundaries").
    stuff_area : int, optional
        Minimum pixel count of a stuff region.
    top_k : int, optional
        Keep at most this many centres.
    semantic_only : bool, optional
        Treat every class as stuff: no instances.
    force_connected : bool, optional
        Split disconnected pieces of an object into separate objects (the
        original's 2D behaviour).
    out_shape : (int, int), optional
        Crop the result to this shape (the un-padded image size).
    on_overflow : {'raise', 'drop'}, optional
        See :func:`merge_semantic_and_instance`.
    center_plateaus : {'all', 'one'}, optional
        Centres on flat maxima: see ``plateaus`` of
        :func:`find_instance_centers` ('one' for bf16 network outputs).

    Returns
    -------
    panoptic : (H, W) uint32 ndarray (uint64 if needed), or an int64 tensor
        on the input's device for tensor input.

    Raises
    ------
    TypeError
        If an input has the wrong number of dimensions.
    ValueError
        For NaN/inf inputs, grids that do not divide, bad parameters or, with
        ``on_overflow='raise'``, more objects than ``label_divisor`` allows.

    Examples
    --------
    >>> sem = np.zeros((1, 8, 8), np.float32); sem[0, :4, :4] = 0.9
    >>> ctr = np.zeros((2, 2), np.float32); ctr[0, 0] = 1.0
    >>> pan = panoptic_postprocess(sem, ctr, np.zeros((2, 2, 2)), stuff_area=1)
    >>> np.unique(pan).tolist()
    [0, 1001]
    """
    if is_torch_tensor(sem):
        return _tensor_call(panoptic_postprocess, locals())
    sem = _as_chw(np.asarray(sem), "sem")
    ctr_hmp = np.asarray(ctr_hmp)
    offsets = np.asarray(offsets)
    check_ndim(ctr_hmp, 2, "ctr_hmp")
    check_ndim(offsets, 3, "offsets")
    if offsets.shape[1:] != ctr_hmp.shape:
        raise ValueError(
            f"`offsets` (shape {offsets.shape}) must be (2, *ctr_hmp.shape) = "
            f"(2, {ctr_hmp.shape[0]}, {ctr_hmp.shape[1]})"
        )
    factor = check_grid_factor(sem.shape[1:], ctr_hmp.shape)
    things = () if semantic_only else tuple(thing_list)

    classes = harden_semantic(sem, confidence_thr=confidence_thr)
    thing_mask = np.isin(classes, np.asarray(things, dtype=np.int64))
    if things and thing_mask.any():
        centers = find_instance_centers(
            ctr_hmp, threshold=center_thr, nms_kernel=nms_kernel, top_k=top_k,
            plateaus=center_plateaus,
        )
        h, w = ctr_hmp.shape
        # Group only grid cells under which some thing pixel lies.
        grid_mask = thing_mask.reshape(h, factor, w, factor).any(axis=(1, 3))
        cells = group_pixels(centers, offsets, center_stride=center_stride, mask=grid_mask)
        cells = _upsample_nearest(cells, factor)
        cells[~thing_mask] = 0
    else:
        cells = np.zeros(classes.shape, dtype=np.int32)
    if out_shape is not None:
        # Crop before merging: objects in the padding must not take ids.
        out_h, out_w = out_shape
        if out_h > classes.shape[0] or out_w > classes.shape[1]:
            raise ValueError(f"`out_shape` {tuple(out_shape)} exceeds the output {classes.shape}")
        classes, cells = classes[:out_h, :out_w], cells[:out_h, :out_w]
    panoptic = merge_semantic_and_instance(
        classes, cells, label_divisor=label_divisor, thing_list=things,
        stuff_area=stuff_area, on_overflow=on_overflow,
    )
    if force_connected and things:
        panoptic = split_connected_instances(
            panoptic, label_divisor=label_divisor, thing_list=things, on_overflow=on_overflow
        )
    return np.ascontiguousarray(panoptic)
