"""Reading and writing label arrays (numpy or zarr) one region at a time.

Everything else in the package reaches the labels through these helpers, so
that a zarr array is only ever read over boxes and written chunk by chunk, and
a numpy array is edited in place without copies of the whole volume.
"""

from __future__ import annotations

import numpy as np

from empanada_core.validation import check_positive_int

# Voxels per block when sweeping a whole array (index builds, filters, counts).
BLOCK_VOXELS = 1 << 22


class LabelsError(TypeError, ValueError):
    """The label array itself is unusable (wrong dtype, not writable, wrong ndim).

    It is both a ``TypeError`` (empanada-core's convention for a wrong kind of
    input) and a ``ValueError`` (what proofreading callers catch).
    """


def check_labels(labels, *, writable=True, arg_name="labels"):
    """Validate a label array (numpy ndarray or zarr array) without reading it.

    Returns the array itself (never a copy: edits must land in the caller's
    array). Values (negative ids) are checked where they are read.
    """
    if isinstance(labels, (list, tuple)):
        raise LabelsError(
            f"`{arg_name}` must be a numpy or zarr array (edits are made in place); "
            f"got a {type(labels).__name__}"
        )
    for attr in ("shape", "dtype", "__getitem__", "__setitem__"):
        if not hasattr(labels, attr):
            raise LabelsError(
                f"`{arg_name}` must be a numpy or zarr array; got {type(labels).__name__}"
            )
    dtype = np.dtype(labels.dtype)
    if dtype.kind == "b":
        raise LabelsError(
            f"`{arg_name}` is a boolean mask, not a label image; label it first "
            "(e.g. skimage.measure.label)"
        )
    if not np.issubdtype(dtype, np.integer):
        raise LabelsError(f"`{arg_name}` must hold integer ids; got dtype {dtype}")
    if not 2 <= len(labels.shape) <= 4:
        raise LabelsError(
            f"`{arg_name}` must be 2D, 3D or 4D (N x slices x H x W flipbooks); got "
            f"shape {tuple(labels.shape)}"
        )
    if writable:
        if isinstance(labels, np.ndarray) and not labels.flags.writeable:
            raise LabelsError(f"`{arg_name}` is a read-only numpy array; edits are made in place")
        if getattr(labels, "read_only", False):
            raise LabelsError(f"`{arg_name}` is a read-only zarr array; open it with mode='r+'")
    return labels


def is_numpy(labels):
    return isinstance(labels, np.ndarray)


def write_chunks(labels):
    """Shape of the smallest independently written unit (zarr shard or chunk); None for numpy."""
    if is_numpy(labels):
        return None
    shards = getattr(labels, "shards", None)
    chunks = shards if shards is not None else getattr(labels, "chunks", None)
    return tuple(int(c) for c in chunks) if chunks is not None else None


def check_values(block, arg_name="labels"):
    """Refuse negative ids in a block just read (signed dtypes only)."""
    if np.issubdtype(block.dtype, np.signedinteger) and block.size and block.min() < 0:
        raise LabelsError(f"`{arg_name}` contains negative ids (min {block.min()})")
    return block


def read(labels, box):
    """Read the half-open box ``(lo, hi)`` as a numpy array (a copy for numpy input)."""
    lo, hi = box
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return check_values(np.array(labels[sl]))


def read_points(labels, coords):
    """Values at integer coordinates ``coords`` (n, ndim)."""
    if coords.shape[0] == 0:
        return np.zeros(0, labels.dtype)
    idx = tuple(coords.T)
    if is_numpy(labels):
        return check_values(labels[idx])
    if hasattr(labels, "vindex"):
        return check_values(np.asarray(labels.vindex[idx]))
    return check_values(np.array([labels[tuple(c)] for c in coords], dtype=labels.dtype))


def iter_blocks(shape, chunks=None, target=BLOCK_VOXELS):
    """Yield boxes ``(lo, hi)`` tiling ``shape``, aligned to ``chunks`` when given.

    Blocks grow from the chunk shape over the last axes first until they hold
    about ``target`` voxels, so a sweep reads each chunk once.
    """
    shape = tuple(int(s) for s in shape)
    if any(s == 0 for s in shape):
        return
    ndim = len(shape)
    base = list(chunks) if chunks is not None else [1] * ndim
    block = [min(b, s) for b, s in zip(base, shape)]
    for ax in range(ndim - 1, -1, -1):
        vol = int(np.prod(block, dtype=np.int64))
        if vol >= target:
            break
        factor = max(1, target // vol)
        mult = min(factor, -(-shape[ax] // block[ax]))
        block[ax] = min(shape[ax], block[ax] * mult)
    grids = [range(0, s, b) for s, b in zip(shape, block)]
    for start in np.ndindex(*[len(g) for g in grids]):
        lo = np.array([g[i] for g, i in zip(grids, start)], np.int64)
        hi = np.minimum(lo + np.array(block, np.int64), np.array(shape, np.int64))
        yield lo, hi


def write_values(labels, flat, values):
    """Write ``values`` at the flat (C-order) indices ``flat``, in place.

    numpy: one fancy assignment. zarr: grouped by write chunk (shard), each
    chunk read once and written once, and only chunks holding a changed
    voxel are touched.
    """
    if flat.size == 0:
        return
    values = np.asarray(values)
    if values.shape != flat.shape:
        values = np.broadcast_to(values, flat.shape)
    shape = tuple(labels.shape)
    if is_numpy(labels) and labels.flags.c_contiguous:
        labels.reshape(-1)[flat] = values  # a view: no coordinates needed
        return
    coords = np.unravel_index(flat, shape)
    if is_numpy(labels):
        labels[coords] = values
        return
    chunks = write_chunks(labels) or shape
    coords = np.stack(coords, axis=1)
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks))
    key = np.ravel_multi_index(tuple((coords // np.array(chunks)).T), grid)
    order = np.argsort(key, kind="stable")
    key, coords, values = key[order], coords[order], values[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], key.size]
    chunk_arr = np.array(chunks, np.int64)
    shape_arr = np.array(shape, np.int64)
    for s, e in zip(starts, ends):
        c = coords[s:e]
        lo = (c[0] // chunk_arr) * chunk_arr
        hi = np.minimum(lo + chunk_arr, shape_arr)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        region = np.array(labels[sl])
        region[tuple((c - lo).T)] = values[s:e]
        labels[sl] = region


def copy_into(src, dst):
    """Copy ``src`` into ``dst`` (same shape and dtype) block by block."""
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(
            f"`out` (shape {tuple(dst.shape)}) must have the shape of `labels` "
            f"(shape {tuple(src.shape)})"
        )
    if np.dtype(src.dtype) != np.dtype(dst.dtype):
        raise LabelsError(f"`out` must have the dtype of `labels` ({src.dtype}); got {dst.dtype}")
    if dst is src:
        return
    for lo, hi in iter_blocks(src.shape, write_chunks(dst) or write_chunks(src)):
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        dst[sl] = np.asarray(src[sl])


def check_radius(radius, arg_name="radius"):
    return check_positive_int(radius, arg_name, minimum=1)
