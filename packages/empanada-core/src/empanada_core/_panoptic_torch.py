"""Torch versions of the 2D panoptic postprocessing, run on the tensors' device.

Used for tensors on an accelerator (see :mod:`empanada_core._panoptic`, which
validates arguments, documents every function and sends CPU tensors through
numpy). Results equal the numpy versions; with CUDA tensors nothing leaves the
GPU. The tests run these functions on CPU tensors to prove the equality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validation import check_finite, check_grid_factor, check_ndim

# Pixels per chunk when measuring distances to every centre.
_GROUP_CHUNK_ELEMENTS = 1 << 24


def _as_chw(sem, arg_name="sem"):
    check_ndim(sem, (2, 3), arg_name)
    return sem[None] if sem.ndim == 2 else sem


def logits_to_probabilities(logits):
    logits = _as_chw(logits, "logits").float()
    check_finite(logits, "logits")
    if logits.shape[0] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=0)


def harden_semantic(sem, *, confidence_thr=0.5):
    sem = _as_chw(sem)
    check_finite(sem, "sem")
    if sem.shape[0] == 1:
        return (sem[0] >= confidence_thr).long()
    return sem.argmax(dim=0)


def find_instance_centers(ctr_hmp, *, threshold=0.1, nms_kernel=3, top_k=None,
                          plateaus="all"):
    check_ndim(ctr_hmp, 2, "ctr_hmp")
    check_finite(ctr_hmp, "ctr_hmp")
    hmp = ctr_hmp.float()
    candidates = torch.where(hmp > threshold, hmp, torch.full_like(hmp, -1.0))
    pooled = F.max_pool2d(candidates[None, None], nms_kernel, stride=1, padding=nms_kernel // 2)
    pooled = pooled[0, 0, : hmp.shape[0], : hmp.shape[1]]
    is_center = (candidates == pooled) & (candidates > 0)
    if plateaus == "one":
        h, w = is_center.shape
        # float indices, exact below 2**24 in float32 (max_pool2d has no integer kernel)
        dtype = torch.float32 if h * w <= 1 << 24 else torch.float64
        order = torch.arange(h * w, device=hmp.device, dtype=dtype).reshape(h, w)
        neg = torch.where(is_center, -order, torch.full_like(order, -float("inf")))
        first = -F.max_pool2d(neg[None, None], nms_kernel, stride=1, padding=nms_kernel // 2)
        is_center &= first[0, 0, :h, :w] == order
    centers = torch.nonzero(is_center)
    if top_k is not None and centers.shape[0] > top_k:
        scores = hmp[centers[:, 0], centers[:, 1]]
        order = torch.sort(-scores, stable=True).indices[:top_k]
        centers = centers[torch.sort(order).values]
    return centers


def group_pixels(centers, offsets, *, center_stride=1, mask=None):
    check_ndim(offsets, 3, "offsets")
    if offsets.shape[0] != 2:
        raise ValueError(f"`offsets` must have 2 channels (dy, dx); got {offsets.shape[0]}")
    check_finite(offsets, "offsets")
    device = offsets.device
    h, w = offsets.shape[1:]
    cells = torch.zeros((h, w), dtype=torch.int32, device=device)
    centers = torch.as_tensor(centers, device=device).reshape(-1, 2)
    if centers.shape[0] == 0:
        return cells
    if mask is None:
        mask = torch.ones((h, w), dtype=torch.bool, device=device)
    else:
        mask = torch.as_tensor(mask, device=device).bool()
        if tuple(mask.shape) != (h, w):
            raise ValueError(f"`mask` (shape {tuple(mask.shape)}) must match the offsets grid ({h}, {w})")
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if rows.numel() == 0:
        return cells
    off = offsets.float()
    loc = torch.stack(
        [center_stride * rows + off[0, rows, cols], center_stride * cols + off[1, rows, cols]], dim=1
    )
    ctr = center_stride * centers.float()
    nearest = torch.empty(rows.numel(), dtype=torch.int64, device=device)
    chunk = max(1, _GROUP_CHUNK_ELEMENTS // ctr.shape[0])
    for start in range(0, loc.shape[0], chunk):
        d = torch.cdist(loc[start : start + chunk], ctr, compute_mode="donot_use_mm_for_euclid_dist")
        nearest[start : start + chunk] = d.argmin(dim=1)
    cells[rows, cols] = (nearest + 1).int()
    return cells


def _numbers_within_class(object_class, keep, label_divisor, on_overflow, what):
    """Instance numbers 1, 2, ... per class in object order (0 where dropped)."""
    numbers = torch.zeros_like(object_class)
    limit = label_divisor - 1
    for c in torch.unique(object_class[keep]).tolist():
        in_class = (object_class == c) & keep
        count = int(in_class.sum())
        if count > limit and on_overflow == "raise":
            raise ValueError(
                f"class {c} has {count} {what}, more than label_divisor - 1 = {limit} that its "
                "id range can hold; raise `label_divisor` (the 'max objects per class') or pass "
                "on_overflow='drop' to keep only the largest"
            )
        rank = torch.cumsum(in_class.long(), 0)
        in_class &= rank <= limit
        numbers = torch.where(in_class, rank, numbers)
    return numbers


def _keep_largest_per_class(object_class, areas, limit):
    keep = torch.ones_like(object_class, dtype=torch.bool)
    for c in torch.unique(object_class).tolist():
        members = torch.nonzero(object_class == c).flatten()
        if members.numel() > limit:
            order = torch.sort(-areas[members], stable=True).indices
            keep[members] = False
            keep[members[order[:limit]]] = True
    return keep


def merge_semantic_and_instance(
    sem, cells, *, label_divisor=1000, thing_list=(1,), stuff_area=64, void_label=0,
    on_overflow="raise",
):
    check_ndim(sem, 2, "sem")
    cells = torch.as_tensor(cells, device=sem.device)
    if tuple(sem.shape) != tuple(cells.shape):
        raise ValueError(
            f"`cells` (shape {tuple(cells.shape)}) must have the same shape as `sem` "
            f"(shape {tuple(sem.shape)})"
        )
    if sem.is_floating_point() or cells.is_floating_point():
        raise TypeError("`sem` and `cells` must be integer images; harden probabilities first")
    sem = sem.long()
    cells = cells.long()
    if sem.numel() and (int(sem.min()) < 0 or int(cells.min()) < 0):
        raise ValueError("`sem` and `cells` must not contain negative values")
    device = sem.device
    n_classes = int(sem.max()) + 1 if sem.numel() else 1
    panoptic = torch.full(sem.shape, void_label, dtype=torch.int64, device=device)
    thing_classes = torch.zeros(n_classes, dtype=torch.bool, device=device)
    things = [c for c in thing_list if c < n_classes]
    if things:
        thing_classes[torch.tensor(things, device=device)] = True
    is_thing = thing_classes[sem]

    sel = is_thing & (cells > 0)
    if bool(sel.any()):
        cell_ids, inverse = torch.unique(cells[sel], return_inverse=True)
        n = cell_ids.numel()
        counts = torch.bincount(inverse * n_classes + sem[sel], minlength=n * n_classes)
        counts = counts.reshape(n, n_classes)
        object_class = counts.argmax(dim=1)
        if on_overflow == "drop":
            keep = _keep_largest_per_class(object_class, counts.sum(dim=1), label_divisor - 1)
        else:
            keep = torch.ones(n, dtype=torch.bool, device=device)
        numbers = _numbers_within_class(object_class, keep, label_divisor, on_overflow, "objects")
        lut = torch.where(
            keep, object_class * label_divisor + numbers, torch.full_like(numbers, void_label)
        )
        panoptic[sel] = lut[inverse]

    not_thing = ~is_thing
    stuff_counts = torch.bincount(sem[not_thing], minlength=n_classes)
    big = (stuff_counts >= stuff_area) & ~thing_classes & (stuff_counts > 0)
    class_ids = torch.arange(n_classes, device=device)
    stuff_lut = torch.where(big, class_ids * label_divisor, torch.full_like(class_ids, void_label))
    panoptic[not_thing] = stuff_lut[sem[not_thing]]
    return panoptic


def _connected_components(values):
    """8-connected components of equal non-zero values, by label propagation.

    Returns (H, W) int64 where each pixel holds 1 + the flat index of its
    component's first pixel in raster order (0 for background).
    """
    h, w = values.shape
    fg = values != 0
    labels = torch.arange(1, h * w + 1, device=values.device, dtype=torch.int64).reshape(h, w)
    labels = torch.where(fg, labels, torch.zeros_like(labels))
    sentinel = h * w + 1  # larger than any label
    padded_values = F.pad(values, (1, 1, 1, 1), value=0)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    same = [
        (padded_values[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == values) & fg
        for dy, dx in shifts
    ]
    while True:
        padded = F.pad(torch.where(fg, labels, sentinel), (1, 1, 1, 1), value=sentinel)
        new = labels.clone()
        for (dy, dx), eq in zip(shifts, same):
            neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            new = torch.where(eq, torch.minimum(new, neighbour), new)
        # Pointer jumping: follow each label to the label of the pixel it names.
        flat = new.flatten()
        jumped = torch.where(flat > 0, flat[(flat - 1).clamp(min=0)], flat)
        while True:
            again = torch.where(jumped > 0, jumped[(jumped - 1).clamp(min=0)], jumped)
            if torch.equal(again, jumped):
                break
            jumped = again
        new = jumped.reshape(h, w)
        if torch.equal(new, labels):
            return labels
        labels = new


def split_connected_instances(panoptic, *, label_divisor=1000, thing_list=(1,),
                              on_overflow="raise"):
    check_ndim(panoptic, 2, "panoptic")
    if panoptic.is_floating_point():
        raise TypeError(f"`panoptic` must hold integer ids; got dtype {panoptic.dtype}")
    panoptic = panoptic.long()
    if len(thing_list) == 0 or panoptic.numel() == 0:
        return panoptic.clone()
    device = panoptic.device
    classes = panoptic // label_divisor
    is_thing = torch.isin(classes, torch.tensor(list(thing_list), device=device))
    is_thing &= panoptic % label_divisor > 0
    roots = _connected_components(torch.where(is_thing, panoptic, torch.zeros_like(panoptic)))
    out = panoptic.clone()
    if not bool(is_thing.any()):
        return out
    root_ids, inverse = torch.unique(roots[is_thing], return_inverse=True)  # raster order
    piece_class = panoptic.flatten()[root_ids - 1] // label_divisor
    if on_overflow == "drop":
        areas = torch.bincount(inverse, minlength=root_ids.numel())
        keep = _keep_largest_per_class(piece_class, areas, label_divisor - 1)
    else:
        keep = torch.ones_like(piece_class, dtype=torch.bool)
    numbers = _numbers_within_class(piece_class, keep, label_divisor, on_overflow, "pieces")
    lut = torch.where(keep, piece_class * label_divisor + numbers, torch.zeros_like(numbers))
    out[is_thing] = lut[inverse]
    return out


def panoptic_postprocess(
    sem, ctr_hmp, offsets, *, thing_list=(1,), label_divisor=1000, confidence_thr=0.5,
    center_thr=0.1, nms_kernel=3, center_stride=4, stuff_area=64, top_k=None,
    semantic_only=False, force_connected=True, out_shape=None, on_overflow="raise",
    center_plateaus="all",
):
    sem = _as_chw(sem)
    device = sem.device
    ctr_hmp = torch.as_tensor(ctr_hmp, device=device)
    offsets = torch.as_tensor(offsets, device=device)
    check_ndim(ctr_hmp, 2, "ctr_hmp")
    check_ndim(offsets, 3, "offsets")
    if tuple(offsets.shape[1:]) != tuple(ctr_hmp.shape):
        raise ValueError(
            f"`offsets` (shape {tuple(offsets.shape)}) must be (2, *ctr_hmp.shape) = "
            f"(2, {ctr_hmp.shape[0]}, {ctr_hmp.shape[1]})"
        )
    factor = check_grid_factor(tuple(sem.shape[1:]), tuple(ctr_hmp.shape))
    things = () if semantic_only else tuple(thing_list)
    classes = harden_semantic(sem, confidence_thr=confidence_thr)
    if things:
        thing_mask = torch.isin(classes, torch.tensor(things, device=device))
    else:
        thing_mask = torch.zeros_like(classes, dtype=torch.bool)
    if things and bool(thing_mask.any()):
        centers = find_instance_centers(
            ctr_hmp, threshold=center_thr, nms_kernel=nms_kernel, top_k=top_k,
            plateaus=center_plateaus
        )
        h, w = ctr_hmp.shape
        grid_mask = thing_mask.reshape(h, factor, w, factor).any(dim=3).any(dim=1)
        cells = group_pixels(centers, offsets, center_stride=center_stride, mask=grid_mask)
        if factor > 1:
            cells = cells.repeat_interleave(factor, 0).repeat_interleave(factor, 1)
        cells = torch.where(thing_mask, cells, torch.zeros_like(cells))
    else:
        cells = torch.zeros_like(classes, dtype=torch.int32)
    if out_shape is not None:
        # Crop before merging: objects in the padding must not take ids.
        out_h, out_w = out_shape
        if out_h > classes.shape[0] or out_w > classes.shape[1]:
            raise ValueError(
                f"`out_shape` {tuple(out_shape)} exceeds the output {tuple(classes.shape)}"
            )
        classes, cells = classes[:out_h, :out_w], cells[:out_h, :out_w]
    panoptic = merge_semantic_and_instance(
        classes, cells, label_divisor=label_divisor, thing_list=things,
        stuff_area=stuff_area, void_label=0, on_overflow=on_overflow,
    )
    if force_connected and things:
        panoptic = split_connected_instances(
            panoptic, label_divisor=label_divisor, thing_list=things, on_overflow=on_overflow
        )
    return panoptic
