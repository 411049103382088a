"""Ortho-plane consensus of three panoptic stacks, class by class, slab by slab."""

from __future__ import annotations

import itertools

import numpy as np

import empanada_core as ec

__all__ = ["ortho_merge"]


def ortho_merge(stacks, params, config, *, out=None, thing_list=None):
    """Combine three panoptic stacks into the consensus volume (per class).

    Memory: besides the three stacks and ``out``, one uint32 volume per
    class (the consensus) and slab-sized temporaries; with a single class the
    stacks go to the consensus as they are, without per-class copies.
    """
    if thing_list is None:
        thing_list = tuple(config.thing_list)
    div = params.label_divisor
    shape = stacks["xy"].shape
    if out is None:
        out = np.zeros(shape, dtype=np.uint32)
    views = [np.asarray(stacks[k]) for k in ("xy", "xz", "yz")]
    single_class = len(config.labels) == 1
    for class_id in config.labels:
        if class_id in thing_list:
            # one class: every nonzero id is class_id * div + instance already
            per_view = views if single_class else [
                _class_part(v, class_id, div, instances=True) for v in views]
            labels = ec.ortho_consensus(
                *per_view, vote_thr=params.vote_thr, allow_one_view=params.allow_one_view,
                min_size=params.min_size, min_extent=params.min_extent,
            )
            del per_view
            if labels.max() >= div:
                raise ValueError(
                    f"class {class_id}: {int(labels.max())} objects exceed label_divisor "
                    f"{div}; raise the max objects per class"
                )
            _write_class(out, labels, class_id * div)
        else:
            mask = ec.semantic_consensus(
                *[_class_part(v, class_id, div, instances=False) for v in views],
                vote_thr=params.vote_thr)
            _write_class(out, mask, class_id * div)
    return out


def _slabs(n, per_slab=16):
    return (slice(i, min(n, i + per_slab)) for i in range(0, n, per_slab))


def _class_part(view, class_id, div, *, instances):
    """Instance numbers (uint32) or a bool mask of one class of a panoptic volume, by slabs."""
    lo, hi = class_id * div, (class_id + 1) * div
    part = np.zeros(view.shape, dtype=np.uint32 if instances else bool)
    for s in _slabs(view.shape[0]):
        v = view[s]
        inside = (v >= lo) & (v < hi)
        if instances:
            part[s] = np.where(inside, v.astype(np.int64) - lo, 0)
        else:
            part[s] = inside
    return part


def _chunk_blocks(shape, chunks):
    """Index tuples of the chunk grid ``chunks`` over ``shape``, in C order."""
    ranges = [range(0, n, c) for n, c in zip(shape, chunks)]
    for corner in itertools.product(*ranges):
        yield tuple(slice(i, min(n, i + c)) for i, n, c in zip(corner, shape, chunks))


def _write_class(out, labels, offset):
    """Write ``labels + offset`` (or ``offset`` where a bool mask is set) into ``out``
    wherever ``labels`` is nonzero: slab by slab into numpy, chunk by chunk into a
    chunked array such as zarr (so each chunk is read and rewritten once)."""
    chunks = None if isinstance(out, np.ndarray) else getattr(out, "chunks", None)
    if chunks is not None and len(chunks) == labels.ndim:
        blocks = _chunk_blocks(labels.shape, tuple(int(c) for c in chunks))
    else:
        blocks = _slabs(labels.shape[0])
    for s in blocks:
        part = labels[s]
        fg = part > 0 if part.dtype != bool else part
        if not fg.any():
            continue
        values = np.uint32(offset) if part.dtype == bool else part.astype(np.uint32) + np.uint32(offset)
        if isinstance(out, np.ndarray):
            np.copyto(out[s], values, where=fg, casting="unsafe")
        else:
            region = np.asarray(out[s])
            np.copyto(region, values, where=fg, casting="unsafe")
            out[s] = region
