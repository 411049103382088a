"""Pick patches (2D) and flipbooks (5-slice 3D context) to annotate for training.

Random patches come from a grid of non-overlapping ``P x P`` tiles (its origin
shifted by a random offset per call), sampled without replacement; patches
around points are centred on the point and shifted to lie inside the image.
Only images smaller than the patch are zero-padded, at the bottom and right.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from empanada_core.validation import check_int

__all__ = ["Patch", "pick_patches", "pick_patches_from_file", "parse_patch_name"]

#: Slices in a flipbook and the index of the one to annotate.
FLIPBOOK_SLICES = 5
FLIPBOOK_MIDDLE = 2
_MODES = ("auto", "2d", "stack", "3d")
_HALF = FLIPBOOK_SLICES // 2


@dataclass(frozen=True, eq=False)
class Patch:
    """A patch (or flipbook) picked for annotation.

    Attributes
    ----------
    image : (P, P) or (5, P, P) ndarray
        The pixels, in the source dtype, zero-padded at the bottom/right when the
        image is smaller than the patch. A flipbook stacks 5 consecutive planes
        along ``axis``; its middle slice (index 2) is the one to annotate.
    origin : (int, int, int)
        ``(z, y, x)`` of the first source voxel in the patch, at ``level``
        (``z`` is 0 for a 2D image and the plane for a stack).
    valid : (slice, slice)
        Region of the (annotated) plane that holds image data; outside it is
        padding.
    axis : int or None
        Flipbook stacking axis of the source (0: xy planes, 1: xz, 2: yz); None
        for 2D patches.
    level : int
        Pyramid level the patch was taken from.
    source : str
        Name of the source image (the dataset's source folder when stored).
    name : str
        Location suffix, as in the original: ``s{level}-LOC-2d_{ys}-{ye}_{xs}-{xe}``
        (2D image), ``s{level}-LOC-2d-{plane}_{ys}-{ye}_{xs}-{xe}`` (stack), or
        ``s{level}-LOC-{axis}_{zs}-{ze}_{ys}-{ye}_{xs}-{xe}`` (flipbook); ranges are
        source coordinates at ``level`` (end exclusive), padding excluded.
    labels : ndarray or None
        Paired label patch, same shape as ``image`` (None unless labels were given).
    """

    image: np.ndarray
    origin: tuple
    valid: tuple
    axis: int | None
    level: int
    source: str
    name: str
    labels: np.ndarray | None = None

    @property
    def is_flipbook(self):
        """True for a 5-slice flipbook."""
        return self.image.ndim == 3

    @property
    def plane(self):
        """The image plane to annotate: the middle slice of a flipbook, else the image."""
        return self.image[FLIPBOOK_MIDDLE] if self.is_flipbook else self.image

    @property
    def valid_shape(self):
        """Shape of the image data in the annotated plane (the patch without padding)."""
        return tuple(s.stop - s.start for s in self.valid)

    @property
    def stem(self):
        """File name without extension used by :func:`store_patches`: ``<source>-<name>``."""
        return f"{self.source}-{self.name}"

    def crop(self, plane):
        """Crop a 2D array of the patch's plane shape to the valid region."""
        return np.asarray(plane)[self.valid]


# ----------------------------------------------------------------- validation


def _check_source_name(source, arg_name="source"):
    if not isinstance(source, str):
        raise TypeError(f"`{arg_name}` must be a str; got {type(source).__name__}")
    if (not source or source in (".", "..") or source.startswith(".")
            or any(c in source for c in '/\\:*?"<>|') or source != source.strip()):
        raise ValueError(
            f"`{arg_name}` {source!r} is not usable as a folder and file name prefix; "
            f"use letters, digits, '_' or '-'"
        )
    return source


def _check_array_like(image, arg_name):
    if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
        image = np.asarray(image)
    dtype = np.dtype(image.dtype)
    if dtype.kind == "b" and arg_name == "image":
        raise TypeError(f"`{arg_name}` is boolean (a mask); pass the EM image")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
            or dtype.kind == "b"):
        raise TypeError(f"`{arg_name}` must hold numbers; got dtype {dtype}")
    if arg_name == "labels" and not (np.issubdtype(dtype, np.integer) or dtype.kind == "b"):
        raise TypeError(f"`labels` must hold integer ids; got dtype {dtype}")
    shape = tuple(int(n) for n in image.shape)
    if len(shape) not in (2, 3):
        hint = ""
        if len(shape) in (3, 4) and shape[-1] in (3, 4):
            hint = "; it looks like a colour image: convert it to greyscale"
        raise TypeError(f"`{arg_name}` must be a 2D image or a 3D volume; got shape {shape}{hint}")
    if len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4:
        raise TypeError(
            f"`{arg_name}` of shape {shape} looks like a colour image (last axis "
            f"{shape[-1]}); convert it to greyscale first"
        )
    if 0 in shape:
        raise ValueError(f"`{arg_name}` is empty (shape {shape})")
    return image


def _as_pyramid(image, arg_name):
    """A list of levels: one array-like, or a sequence of them (level 0 first)."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError(f"`{arg_name}` is an empty list of pyramid levels")
        if all(hasattr(a, "shape") for a in image):
            levels = [_check_array_like(a, arg_name) for a in image]
            if len({len(a.shape) for a in levels}) != 1:
                raise ValueError(f"the levels of `{arg_name}` differ in dimensionality")
            return levels, True
    return [_check_array_like(image, arg_name)], False


def _resolve_mode(mode, ndim, isotropic):
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}")
    if mode == "auto":
        mode = "2d" if ndim == 2 else "3d"
    if mode == "2d" and ndim != 2:
        raise ValueError(
            "mode '2d' needs a 2D image; for a 3D array use mode='stack' (unrelated 2D "
            "images) or mode='3d' (a volume: flipbooks)"
        )
    if mode in ("stack", "3d") and ndim != 3:
        raise ValueError(f"mode {mode!r} needs a 3D array; got a 2D image (use mode='2d')")
    if not isinstance(isotropic, bool):
        raise TypeError(f"`isotropic` must be a bool; got {isotropic!r}")
    if isotropic and mode != "3d":
        raise ValueError("`isotropic` picks a flipbook axis and applies to mode='3d' only")
    return mode


# ---------------------------------------------------------------- level views


class _Downsampled:
    """Lazy view of an array reduced by integer factors per axis.

    ``how='mean'`` averages each block (partial edge blocks over the voxels they
    have), ``how='nearest'`` takes the voxel nearest each block centre (for
    labels). Only the region asked for is read from the source.
    """

    def __init__(self, array, factors, how):
        self._array = array
        self._factors = tuple(int(f) for f in factors)
        self._how = how
        self.shape = tuple(-(-int(n) // f) for n, f in zip(array.shape, self._factors))
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        # keys are tuples of ints and of slices with explicit bounds (what picking uses)
        src, squeeze = [], []
        for axis, (k, f, n) in enumerate(zip(key, self._factors, self._array.shape)):
            if isinstance(k, numbers.Integral):
                k = slice(int(k), int(k) + 1)
                squeeze.append(axis)
            src.append(slice(k.start * f, min(k.stop * f, int(n))))
        block = self._reduce(np.asarray(self._array[tuple(src)]))
        return block.squeeze(axis=tuple(squeeze)) if squeeze else block

    def _reduce(self, block):
        for axis, f in enumerate(self._factors):
            if f == 1:
                continue
            length = block.shape[axis]
            starts = np.arange(0, length, f)
            if self._how == "nearest":
                block = np.take(block, np.minimum(starts + f // 2, length - 1), axis=axis)
            else:
                sums = np.add.reduceat(block.astype(np.float64, copy=False), starts, axis=axis)
                counts = np.diff(np.append(starts, length)).astype(np.float64)
                shape = [1] * block.ndim
                shape[axis] = -1
                block = sums / counts.reshape(shape)
        if self._how == "mean" and block.dtype != self.dtype:
            if np.issubdtype(self.dtype, np.integer):
                block = np.rint(block)
            block = block.astype(self.dtype)
        return block


def _level_factors(shape0, shape_l):
    return tuple(max(1, round(a / b)) for a, b in zip(shape0, shape_l))


def _resolve_level(levels, is_pyramid, level, mode, isotropic, how, arg_name):
    """The array to pick from, and the per-axis factors to it from level 0."""
    if is_pyramid:
        if level >= len(levels):
            raise ValueError(
                f"`level` {level} does not exist: `{arg_name}` has {len(levels)} levels "
                f"({', '.join(str(tuple(a.shape)) for a in levels)})"
            )
        array = levels[level]
        return array, _level_factors(levels[0].shape, array.shape)
    array = levels[0]
    if level == 0:
        return array, (1,) * len(array.shape)
    f = 2 ** level
    if len(array.shape) == 2:
        factors = (f, f)
    else:
        factors = (f if (mode == "3d" and isotropic) else 1, f, f)
    return _Downsampled(array, factors, how), factors


# ------------------------------------------------------------------ positions


def _tile_starts(n, size, offset):
    """Starts of the non-overlapping tiles along one axis (one padded tile if n <= size)."""
    if n <= size:
        return np.zeros(1, np.int64)
    return offset + size * np.arange(n // size, dtype=np.int64)


def _grid_offsets(shape, size, rng):
    return [int(rng.integers(0, n - (n // size) * size + 1)) if n > size else 0 for n in shape]


def _in_plane_axes(axis):
    return tuple(a for a in range(3) if a != axis)


def _clamp_start(center, n, size):
    return int(min(max(center - size // 2, 0), max(n - size, 0)))


def _clamp_plane(center, n):
    return int(min(max(center, _HALF), n - 1 - _HALF))


def _valid_axes(shape, isotropic):
    axes = (0, 1, 2) if isotropic else (0,)
    valid = [a for a in axes if shape[a] >= FLIPBOOK_SLICES]
    if not valid:
        what = "any axis" if isotropic else "axis 0"
        raise ValueError(
            f"a flipbook needs {FLIPBOOK_SLICES} slices, but the volume (shape {shape}) has "
            f"fewer along {what}; use mode='stack' to pick 2D patches instead"
        )
    return valid


def _too_many(n_random, total, size, shape, mode):
    unit = "flipbooks" if mode == "3d" else "patches"
    where = "" if mode == "2d" else " on each plane"
    return ValueError(
        f"asked for {n_random} random {unit} but only {total} distinct {size}x{size} {unit} "
        f"fit in an image of shape {shape} (mode {mode!r}, non-overlapping tiles{where}); "
        f"lower `n_patches` or `patch_size`, or place points"
    )


def _random_positions(shape, mode, size, n_random, isotropic, offsets, rng):
    """``(axis, starts)`` of ``n_random`` distinct random patches, ``starts`` per source axis."""
    if n_random == 0:
        return []
    if mode == "2d":
        grids = [_tile_starts(shape[d], size, offsets[d]) for d in (0, 1)]
        total = len(grids[0]) * len(grids[1])
        if n_random > total:
            raise _too_many(n_random, total, size, shape, mode)
        flat = rng.choice(total, size=n_random, replace=False)
        iy, ix = np.unravel_index(flat, (len(grids[0]), len(grids[1])))
        return [(None, (int(grids[0][a]), int(grids[1][b]))) for a, b in zip(iy, ix)]
    if mode == "stack":
        grids = [_tile_starts(shape[d], size, offsets[d]) for d in (1, 2)]
        dims = (shape[0], len(grids[0]), len(grids[1]))
        total = math.prod(dims)
        if n_random > total:
            raise _too_many(n_random, total, size, shape, mode)
        flat = rng.choice(total, size=n_random, replace=False)
        iz, iy, ix = np.unravel_index(flat, dims)
        return [(None, (int(z), int(grids[0][a]), int(grids[1][b])))
                for z, a, b in zip(iz, iy, ix)]

    # 3D flipbooks: per axis, (centre plane, tile, tile)
    axes = _valid_axes(shape, isotropic)
    spaces = {}
    for axis in axes:
        b, c = _in_plane_axes(axis)
        grids = (_tile_starts(shape[b], size, offsets[b]), _tile_starts(shape[c], size, offsets[c]))
        dims = (shape[axis] - 2 * _HALF, len(grids[0]), len(grids[1]))
        spaces[axis] = (grids, dims, math.prod(dims))
    total = sum(space[2] for space in spaces.values())
    if n_random > total:
        raise _too_many(n_random, total, size, shape, mode)
    # each flipbook picks its axis uniformly among the axes that still have room
    order = []
    counts = dict.fromkeys(axes, 0)
    for _ in range(n_random):
        open_axes = [a for a in axes if counts[a] < spaces[a][2]]
        axis = open_axes[int(rng.integers(len(open_axes)))]
        counts[axis] += 1
        order.append(axis)
    drawn = {}
    for axis in axes:
        grids, dims, total_a = spaces[axis]
        flat = rng.choice(total_a, size=counts[axis], replace=False)
        drawn[axis] = list(zip(*np.unravel_index(flat, dims)))
    positions = []
    for axis in order:
        plane, a, b = drawn[axis].pop(0)
        grids = spaces[axis][0]
        starts = [0, 0, 0]
        starts[axis] = int(plane)  # first slice of the flipbook
        in_plane = _in_plane_axes(axis)
        starts[in_plane[0]] = int(grids[0][a])
        starts[in_plane[1]] = int(grids[1][b])
        positions.append((axis, tuple(starts)))
    return positions


def _point_positions(points, shape, mode, size, isotropic, rng):
    """``(axis, starts)`` of the patches centred on ``points`` (level coordinates)."""
    positions = []
    axes = _valid_axes(shape, isotropic) if mode == "3d" else None
    for point in points:
        if mode == "2d":
            positions.append((None, tuple(_clamp_start(p, n, size) for p, n in zip(point, shape))))
        elif mode == "stack":
            positions.append((None, (int(point[0]), _clamp_start(point[1], shape[1], size),
                                     _clamp_start(point[2], shape[2], size))))
        else:
            axis = axes[int(rng.integers(len(axes)))] if isotropic else 0
            starts = [0, 0, 0]
            starts[axis] = _clamp_plane(point[axis], shape[axis]) - _HALF
            for d in _in_plane_axes(axis):
                starts[d] = _clamp_start(point[d], shape[d], size)
            positions.append((axis, tuple(starts)))
    return positions


# ----------------------------------------------------------------- extraction


def _boxes(position, shape, mode, size):
    axis, starts = position
    if mode == "2d":
        return tuple(slice(s, min(s + size, n)) for s, n in zip(starts, shape))
    if mode == "stack":
        return (starts[0],) + tuple(
            slice(s, min(s + size, n)) for s, n in zip(starts[1:], shape[1:]))
    return tuple(
        slice(s, s + FLIPBOOK_SLICES) if d == axis else slice(s, min(s + size, shape[d]))
        for d, s in enumerate(starts)
    )


def _read(array, box, axis, size):
    data = np.asarray(array[box])
    if axis is not None:
        data = np.moveaxis(data, axis, 0)
    out = np.zeros(data.shape[:-2] + (size, size), dtype=data.dtype)
    out[..., : data.shape[-2], : data.shape[-1]] = data
    return out, data.shape[-2:]


def _name(box, mode, axis, level):
    def rng_(s):
        return f"{s.start}-{s.stop}"

    if mode == "2d":
        return f"s{level}-LOC-2d_{rng_(box[0])}_{rng_(box[1])}"
    if mode == "stack":
        return f"s{level}-LOC-2d-{box[0]}_{rng_(box[1])}_{rng_(box[2])}"
    return f"s{level}-LOC-{axis}_{rng_(box[0])}_{rng_(box[1])}_{rng_(box[2])}"


def _make_patch(array, labels, position, shape, mode, size, level, source):
    axis, starts = position
    box = _boxes(position, shape, mode, size)
    image, valid_shape = _read(array, box, axis, size)
    label_patch = _read(labels, box, axis, size)[0] if labels is not None else None
    origin = (0, *starts) if mode == "2d" else tuple(starts)
    valid = tuple(slice(0, int(n)) for n in valid_shape)
    return Patch(image=image, origin=tuple(int(o) for o in origin), valid=valid, axis=axis,
                 level=level, source=source, name=_name(box, mode, axis, level),
                 labels=label_patch)


# ---------------------------------------------------------------------- points


def _check_points(points, shape0, factors, shape_l):
    """Points (level-0 coordinates) to integer indices at the picked level."""
    ndim = len(shape0)
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`points` must be an (N, {ndim}) array of coordinates") from None
    if pts.ndim == 1 and pts.size == ndim:
        pts = pts[None]
    if pts.size == 0:
        return np.zeros((0, ndim), np.int64)
    if pts.ndim != 2 or pts.shape[1] != ndim:
        raise ValueError(
            f"`points` must be an (N, {ndim}) array of {'(z, y, x)' if ndim == 3 else '(y, x)'} "
            f"coordinates for an image of shape {shape0}; got shape {pts.shape}"
        )
    if not np.isfinite(pts).all():
        raise ValueError("`points` contains NaN or infinite coordinates")
    upper = np.asarray(shape0, np.float64) - 0.5
    outside = ((pts < -0.5) | (pts >= upper)).any(axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"point {i} {tuple(pts[i].tolist())} lies outside the image (shape {shape0}); "
            f"points must be in the image's pixel coordinates (in napari, convert with "
            f"`layer.world_to_data` and check the layers' scale and translate)"
        )
    f = np.asarray(factors, np.float64)
    idx = np.floor((pts + 0.5) / f).astype(np.int64)
    return np.minimum(np.maximum(idx, 0), np.asarray(shape_l) - 1)


# -------------------------------------------------------------------- public


def pick_patches(image, *, patch_size=256, n_patches=16, points=None, pick_all_points=False,
                 mode="auto", isotropic=False, level=0, seed=0, labels=None, source="image"):
    """Pick square patches, or 5-slice flipbooks, to annotate for training.

    Parameters
    ----------
    image : (M, N) or (P, M, N) array-like, or a list of them
        A 2D image, a stack of 2D images or a volume (ndarray, memory map or
        zarr array; only the patches are read). A list or tuple is a multiscale
        pyramid, full resolution first, each level 2x smaller (napari's and
        OME-Zarr's layout).
    patch_size : int, optional
        Side of the square patches, in pixels at ``level``.
    n_patches : int, optional
        Number of patches. Patches centred on ``points`` come first; the rest
        are random.
    points : (K, 2) or (K, 3) array-like, optional
        ``(y, x)`` or ``(z, y, x)`` coordinates in the full-resolution image
        (level 0), used in order, one patch per point.
    pick_all_points : bool, optional
        One patch per point, ignoring ``n_patches``.
    mode : {'auto', '2d', 'stack', '3d'}, optional
        ``'2d'``: a 2D image. ``'stack'``: a stack of unrelated 2D images, each
        patch from one plane. ``'3d'``: a volume; each patch is a flipbook of 5
        consecutive planes whose middle slice (index 2) is the one to annotate.
        ``'auto'``: '2d' for 2D images, '3d' for 3D arrays.
    isotropic : bool, optional
        Flipbooks stack along a random axis (xy, xz or yz planes) instead of
        always along z. Only for near-isotropic voxels.
    level : int, optional
        Pyramid level to pick from. A plain array is downsampled by
        ``2**level`` (block mean; labels take the pixel nearest each block
        centre) along y and x, and along z too when ``isotropic``; points are
        scaled alike.
    seed : int, numpy Generator or None, optional
        Seed of the random choices; the same seed gives the same patches.
    labels : array-like or a list of them, optional
        Label image of the same shape as ``image`` (or a pyramid); the same
        crops are returned in :attr:`Patch.labels` (the original's paired patches).
    source : str, optional
        Name of the source, stored in each :class:`Patch`.

    Returns
    -------
    list of Patch
        Point patches first (in the order of the points), then random ones.

    Raises
    ------
    TypeError
        If an argument has the wrong type, the image is not 2D/3D greyscale, or
        ``labels`` is not integer.
    ValueError
        If more random patches are asked for than fit, ``mode`` does not suit
        the image, a point lies outside it, ``labels`` differs in shape, or
        ``level`` does not exist.

    Notes
    -----
    Random patches are tiles of a grid of non-overlapping ``P x P`` squares
    whose origin is shifted by one random offset per call (so every part of
    the image can be picked), drawn without replacement, so no random patch
    repeats or overlaps another in the same plane; asking for more than the
    grid holds is an error. Flipbooks may use any plane whose 5-slice block
    fits. Point patches are centred on their point and shifted to lie inside the
    image (they may overlap random ones). An image smaller than the patch gives
    a patch zero-padded at the bottom and right, recorded in :attr:`Patch.valid`.

    Examples
    --------
    >>> image = np.arange(64 * 96, dtype=np.uint16).reshape(64, 96)
    >>> patches = pick_patches(image, patch_size=32, n_patches=3, seed=1)
    >>> [p.image.shape for p in patches]
    [(32, 32), (32, 32), (32, 32)]
    >>> pick_patches(image, patch_size=32, n_patches=1, points=[[5, 90]])[0].name
    's0-LOC-2d_0-32_64-96'
    """
    patch_size = check_int(patch_size, "patch_size", 1)
    n_patches = check_int(n_patches, "n_patches", 0)
    level = check_int(level, "level", 0)
    if not isinstance(pick_all_points, bool):
        raise TypeError(f"`pick_all_points` must be a bool; got {pick_all_points!r}")
    source = _check_source_name(source)
    if isinstance(seed, bool) or not (
            seed is None or isinstance(seed, (numbers.Integral, np.random.Generator))):
        raise TypeError(f"`seed` must be an int, a numpy Generator or None; got {seed!r}")
    rng = np.random.default_rng(seed)

    levels, is_pyramid = _as_pyramid(image, "image")
    shape0 = tuple(int(n) for n in levels[0].shape)
    mode = _resolve_mode(mode, len(shape0), isotropic)
    array, factors = _resolve_level(levels, is_pyramid, level, mode, isotropic, "mean", "image")
    shape = tuple(int(n) for n in array.shape)

    label_array = None
    if labels is not None:
        label_levels, labels_pyramid = _as_pyramid(labels, "labels")
        if tuple(label_levels[0].shape) != shape0:
            raise ValueError(
                f"`labels` (shape {tuple(label_levels[0].shape)}) must have the same shape as "
                f"`image` (shape {shape0})"
            )
        if labels_pyramid:
            label_array, _ = _resolve_level(label_levels, True, level, mode, isotropic,
                                            "nearest", "labels")
            if tuple(label_array.shape) != shape:
                raise ValueError(
                    f"`labels` level {level} (shape {tuple(label_array.shape)}) differs from "
                    f"`image` level {level} (shape {shape})"
                )
        elif level == 0:
            label_array = label_levels[0]
        else:
            label_array = _Downsampled(label_levels[0], factors, "nearest")

    pts = np.zeros((0, len(shape0)), np.int64)
    if points is not None:
        pts = _check_points(points, shape0, factors, shape)
    if pick_all_points:
        if len(pts) == 0:
            raise ValueError("`pick_all_points` needs `points`; none were given")
        n_point, n_random = len(pts), 0
    else:
        if n_patches == 0:
            raise ValueError("`n_patches` must be >= 1 (or set `pick_all_points`)")
        n_point = min(len(pts), n_patches)
        n_random = n_patches - n_point

    offsets = _grid_offsets(shape, patch_size, rng)
    positions = _point_positions(pts[:n_point], shape, mode, patch_size, isotropic, rng)
    positions += _random_positions(shape, mode, patch_size, n_random, isotropic, offsets, rng)
    return [_make_patch(array, label_array, position, shape, mode, patch_size, level, source)
            for position in positions]


def _stem(path):
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".npy",
                   ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_multiscale_zarr(path, key):
    """Whether ``path`` (a zarr store) resolves to an OME-Zarr multiscale group."""
    import zarr

    node = zarr.open(store=str(path), mode="r")
    if key is not None:
        node = node[key]
    if isinstance(node, zarr.Array):
        return False

    def has_ms(group):
        attrs = dict(group.attrs)
        attrs = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
        return bool(attrs.get("multiscales"))

    if has_ms(node):
        return True
    groups = [g for _, g in node.groups()] if hasattr(node, "groups") else []
    return any(has_ms(g) for g in groups)


def _open_levels(path, key, level):
    """The image at ``path`` as a pyramid list (OME-Zarr) or a single array."""
    from empanada_core import open_image

    if level > 0 and path.is_dir() and _is_multiscale_zarr(path, key):
        return [open_image(path, key=key, level=i) for i in range(level + 1)]
    return open_image(path, key=key)


def _read_points(points):
    """Points from an array-like, a ``.npy`` file or a napari points ``.csv`` file."""
    if not isinstance(points, (str, os.PathLike)):
        return points
    path = Path(points)
    if path.suffix.lower() == ".npy":
        return np.load(path)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"`points` file must be .csv (napari points) or .npy; got {path.name}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return np.zeros((0, 2))
    header = [h.strip() for h in rows[0]]
    columns = [i for i, h in enumerate(header) if re.fullmatch(r"axis-\d+", h)]
    if not columns:
        raise ValueError(
            f"{path.name} has no 'axis-0', 'axis-1', ... columns (napari's points CSV format)"
        )
    return np.array([[float(r[i]) for i in columns] for r in rows[1:] if r], np.float64)


def pick_patches_from_file(path, *, labels=None, points=None, key=None, labels_key=None,
                           source=None, **options):
    """:func:`pick_patches` on an image file (for ``empanada patches pick``).

    Parameters
    ----------
    path : str or os.PathLike
        Image to open with :func:`empanada_core.open_image` (TIFF, npy, PNG,
        zarr, OME-Zarr). With ``level > 0`` an OME-Zarr multiscale image is
        read at that level; other images are downsampled.
    labels : str or os.PathLike, optional
        Label image of the same shape (paired patches).
    points : array-like, or str or os.PathLike, optional
        Coordinates, or a ``.npy`` file or a napari points ``.csv`` file
        (columns ``axis-0``, ``axis-1``, ...).
    key, labels_key : str, optional
        Array or group inside a zarr store.
    source : str, optional
        Source name; default: the file name without its extension.
    **options
        Passed to :func:`pick_patches` (``patch_size``, ``n_patches``,
        ``pick_all_points``, ``mode``, ``isotropic``, ``level``, ``seed``).

    Returns
    -------
    list of Patch
    """
    path = Path(os.fspath(path))
    level = options.get("level", 0)
    level = check_int(level, "level", 0)
    image = _open_levels(path, key, level)
    label_image = None
    if labels is not None:
        label_image = _open_levels(Path(os.fspath(labels)), labels_key, level)
    if source is None:
        source = re.sub(r"[^A-Za-z0-9_.-]+", "_", _stem(path)).lstrip(".") or "image"
    return pick_patches(image, labels=label_image, points=_read_points(points)
                        if points is not None else None, source=source, **options)


_NAME_RE = re.compile(
    r"s(?P<level>\d+)-LOC-(?:(?P<kind>2d)(?:-(?P<plane>\d+))?|(?P<axis>[012]))"
    r"(?P<ranges>(?:_\d+-\d+){2,3})$"
)


def parse_patch_name(name):
    """Decode a patch location suffix (see :attr:`Patch.name`).

    Parameters
    ----------
    name : str
        A :attr:`Patch.name`, or a file stem ending with one.

    Returns
    -------
    dict
        ``level``, ``axis`` (None for 2D), ``plane`` (stack plane or None),
        ``ranges`` (tuple of (start, stop) per source axis) and ``valid_shape``
        (shape of the annotated plane without padding).

    Raises
    ------
    ValueError
        If ``name`` holds no location suffix.

    Examples
    --------
    >>> parse_patch_name("cells-s0-LOC-1_10-74_300-305_0-256")["valid_shape"]
    (64, 256)
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str; got {type(name).__name__}")
    match = _NAME_RE.search(name)
    if match is None:
        raise ValueError(
            f"{name!r} holds no patch location suffix like 's0-LOC-2d_0-256_0-256'"
        )
    ranges = tuple(tuple(int(v) for v in r.split("-"))
                   for r in match["ranges"].strip("_").split("_"))
    axis = None if match["axis"] is None else int(match["axis"])
    if len(ranges) != (2 if axis is None else 3):
        raise ValueError(f"{name!r} has {len(ranges)} ranges, which its kind does not allow")
    lengths = [b - a for a, b in ranges]
    valid = tuple(lengths) if axis is None else tuple(n for d, n in enumerate(lengths) if d != axis)
    return {
        "level": int(match["level"]),
        "axis": axis,
        "plane": None if match["plane"] is None else int(match["plane"]),
        "ranges": ranges,
        "valid_shape": valid,
    }
