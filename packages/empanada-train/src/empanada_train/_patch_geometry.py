"""Where patches go: pyramid levels, random and point-centred positions, point checks.

Pure index arithmetic over shapes (no patch data is read here); :mod:`._patches`
turns the positions into :class:`Patch` objects.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: Slices of a flipbook (a short 3D stack whose middle slice is annotated).
FLIPBOOK_SLICES = 5
FLIPBOOK_MIDDLE = 2
_HALF = FLIPBOOK_SLICES // 2



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
