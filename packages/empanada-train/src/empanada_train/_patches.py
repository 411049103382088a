"""Pick patches (2D) and flipbooks (5-slice 3D context) to annotate for training.

Random patches come from a grid of non-overlapping ``P x P`` tiles (its origin
shifted by a random offset per call), sampled without replacement; patches
around points are centred on the point and shifted to lie inside the image.
Only images smaller than the patch are zero-padded, at the bottom and right.
"""

from __future__ import annotations

import csv
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from empanada_core.validation import check_int

from ._patch_geometry import (
    FLIPBOOK_MIDDLE,
    FLIPBOOK_SLICES,
    _check_points,
    _Downsampled,
    _grid_offsets,
    _point_positions,
    _random_positions,
    _resolve_level,
)

__all__ = ["Patch", "pick_patches", "pick_patches_from_file", "parse_patch_name"]

_MODES = ("auto", "2d", "stack", "3d")


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
