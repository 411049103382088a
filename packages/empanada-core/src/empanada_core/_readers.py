"""Open EM images (TIFF, npy, zarr, OME-Zarr, folders of 2D images) and check them.

Readers return array-likes (numpy memory maps, zarr arrays) without reading the
data, so a large volume is read slice by slice during inference.

They live in empanada-core because inference and training both read images:
neither depends on the other for it. tifffile comes with scikit-image; zarr is
needed only for zarr inputs (``empanada-core[zarr]``).
"""

from __future__ import annotations

import errno
import logging
import math
import numbers
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ._normalize import _check_numeric_dtype, _sample_values

__all__ = ["open_image", "iter_batch", "open_batch", "check_image", "UnreadableImageError",
           "image_fingerprint", "batch_output_names"]

logger = logging.getLogger("empanada_core")

_TIFF_SUFFIXES = (".tif", ".tiff")
_PLAIN_2D_SUFFIXES = (".png", ".jpg", ".jpeg")
_BATCH_SUFFIXES = _TIFF_SUFFIXES + _PLAIN_2D_SUFFIXES
_SUPPORTED = (
    "TIFF (.tif, .tiff), NumPy (.npy), zarr v2/v3 arrays and groups (.zarr), "
    "OME-Zarr (.ome.zarr), PNG/JPEG (.png, .jpg, .jpeg)"
)
# Files that operating systems and viewers leave in image folders.
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", ".ds_store"})
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
# A compressed TIFF up to this size is decompressed into memory; a larger one is
# read lazily through tifffile's zarr interface (one strip or tile at a time).
_EAGER_TIFF_BYTES = 1 << 30
# Max values compared when testing whether a (3|4, M, N) stack is a colour image.
_COLOUR_CHECK_SAMPLES = 1 << 20
_LOG_SKIPPED_MAX = 20


def _as_path(path, arg_name="path"):
    if isinstance(path, Path):
        return path.expanduser()
    if isinstance(path, (str, os.PathLike)):
        return Path(os.fspath(path)).expanduser()
    raise TypeError(f"`{arg_name}` must be a str or os.PathLike; got {type(path).__name__}")


def _missing(path, what="image"):
    return FileNotFoundError(errno.ENOENT, f"{what} not found: {path}", str(path))


def _is_zarr_dir(path):
    return path.is_dir() and any((path / m).exists() for m in _ZARR_MARKERS)


def open_image(path, *, key=None, level=None):
    """Open a 2D image or 3D volume without reading it all into memory.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF (2D or multipage), ``.npy``, PNG/JPEG file, or a zarr (v2 or v3)
        store: an array, a group, or an OME-Zarr multiscale image or labels group.
    key : str, optional
        Path of the array or multiscale group inside a zarr group, for example
        ``"raw"`` or ``"labels/mito"``. Needed only when the group holds several.
    level : int, optional
        Resolution level of an OME-Zarr multiscale image, an index into its
        ``multiscales`` datasets (0, the default, is full resolution; -1 the
        coarsest).

    Returns
    -------
    image : (M, N) or (P, M, N) array-like
        ``numpy.memmap`` for uncompressed TIFF and ``.npy`` files, a
        ``zarr.Array`` (or a light view of one) for zarr stores and large
        compressed TIFFs, an ``ndarray`` otherwise. Index it (``image[z]``) or
        call ``np.asarray`` to read.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TypeError
        If ``path`` is not a path.
    ValueError
        If the format is not supported (the message lists those that are), the
        zarr group holds several candidate arrays and ``key`` is not given,
        ``key`` or ``level`` do not exist or do not apply to the format.

    See Also
    --------
    check_image : validate what was opened.
    open_batch : folders of 2D images.

    Notes
    -----
    * TIFF: the first series. Uncompressed files are memory-mapped; compressed
      files up to 1 GiB are decompressed into memory, larger ones are read
      lazily through tifffile's zarr interface.
    * OME-Zarr: singleton time and channel axes in front of the spatial axes are
      dropped, so a ``(1, 1, P, M, N)`` image opens as ``(P, M, N)``.
    * A zarr group without multiscale metadata is resolved when it holds exactly
      one array (or one multiscale group), at any depth.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "vol.npy"), np.zeros((2, 4, 4), np.uint8))
    >>> image = open_image(os.path.join(folder, "vol.npy"))
    >>> image.shape, type(image).__name__
    ((2, 4, 4), 'memmap')
    """
    path = _as_path(path)
    if not path.exists():
        raise _missing(path)
    name = path.name.lower()
    if path.is_dir():
        if name.endswith(".zarr") or _is_zarr_dir(path):
            return _open_zarr(path, key, level)
        raise ValueError(
            f"{path} is a folder but not a zarr store; use open_batch(folder) for a folder "
            f"of 2D images. Supported: {_SUPPORTED}"
        )
    if key is not None or level not in (None, 0):
        given = "`key` and `level` apply" if key is not None and level not in (None, 0) \
            else "`key` applies" if key is not None else "`level` applies"
        raise ValueError(f"{given} only to zarr stores; {path.name} is a file")
    if name.endswith(_TIFF_SUFFIXES):
        opener, what = _open_tiff, "a TIFF file"
    elif name.endswith(".npy"):
        opener, what = _open_npy, "a NumPy .npy file"
    elif name.endswith(_PLAIN_2D_SUFFIXES):
        opener, what = _read_plain_2d, f"a {path.suffix.lstrip('.').upper()} image"
    else:
        raise ValueError(f"unsupported image format: {path.name}. Supported: {_SUPPORTED}")
    try:
        return opener(path)
    except (OSError, ValueError, IndexError, KeyError, EOFError, SyntaxError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        # Library messages ("header=b'hell'", "failed to read 1048576 bytes") do not
        # say which file is bad: in a batch folder the user needs the name.
        raise UnreadableImageError(
            f"cannot read {path}: the file is truncated or not {what} "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from err


class UnreadableImageError(ValueError):
    """A file that has an image's name but cannot be read as one (truncated, corrupt)."""


def _open_npy(path):
    return np.load(path, mmap_mode="r", allow_pickle=False)


# tifffile logs (rather than raises) when pages of a truncated or corrupt file are
# missing, and then returns fewer pages: a cut 3D stack would silently become 2D.
_TIFF_DAMAGE_MESSAGES = ("invalid page offset", "invalid offset", "failed to reshape",
                         "corrupted", "truncated")


class _TiffDamageLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if any(m in message for m in _TIFF_DAMAGE_MESSAGES):
            self.messages.append(message)


def _open_tiff(path):
    import tifffile

    damage = _TiffDamageLog()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(damage)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = series.shape, np.dtype(series.dtype)
            if damage.messages:
                raise ValueError(damage.messages[0])
            offset = series.dataoffset
            nbytes = math.prod(shape) * dtype.itemsize
            if offset is not None and offset + nbytes > path.stat().st_size:
                raise ValueError(
                    f"{nbytes} bytes of pixels expected from offset {offset}, "
                    f"file has {path.stat().st_size}"
                )
            if offset is None and nbytes <= _EAGER_TIFF_BYTES:
                image = series.asarray()
                if damage.messages:
                    raise ValueError(damage.messages[0])
                return image
    finally:
        tiff_logger.removeHandler(damage)
    if offset is not None:  # uncompressed and contiguous: memory-mapped
        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:  # e.g. a byte order numpy cannot map
            if nbytes <= _EAGER_TIFF_BYTES:
                return tifffile.imread(path)
    import zarr

    return zarr.open(tifffile.imread(path, aszarr=True), mode="r")


def _read_plain_2d(path):
    try:
        import imageio.v3 as iio
    except ImportError:  # pragma: no cover - imageio comes with scikit-image
        try:
            from PIL import Image
        except ImportError:
            raise ValueError(
                f"reading {path.suffix} files needs imageio or Pillow; install one, or "
                f"convert the images to TIFF"
            ) from None
        with Image.open(path) as im:
            return np.asarray(im)
    return iio.imread(path)


# --------------------------------------------------------------------------- zarr


def _ome_attrs(attrs):
    """NGFF metadata of a group: under ``"ome"`` (0.5) or at the top level (<= 0.4)."""
    attrs = dict(attrs)
    ome = attrs.get("ome")
    return ome if isinstance(ome, dict) else attrs


def _multiscales(group):
    ms = _ome_attrs(group.attrs).get("multiscales")
    return ms[0] if isinstance(ms, list) and ms else None


def _open_zarr(path, key, level):
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError,
            zarr.errors.GroupNotFoundError) as err:
        raise ValueError(f"{path} is not a readable zarr store ({err})") from err
    if key is not None:
        if isinstance(node, zarr.Array):
            raise ValueError(f"`key` given but {path} is a single array, not a group")
        if key not in node:
            raise ValueError(
                f"no array or group {key!r} in {path}; it holds: {_describe(node)}"
            )
        node = node[key]
    return _resolve_node(node, level, path)


def _resolve_node(node, level, path):
    import zarr

    if isinstance(node, zarr.Array):
        if level not in (None, 0):
            raise ValueError(
                f"`level` applies to OME-Zarr multiscale groups; {path} is a plain array"
            )
        return node
    ms = _multiscales(node)
    if ms is not None:
        return _open_level(node, ms, level, path)
    candidates = _candidates(node)
    if len(candidates) == 1:
        return _resolve_node(node[candidates[0]], level, path)
    if not candidates:
        raise ValueError(f"zarr group {path} holds no arrays")
    raise ValueError(
        f"zarr group {path} holds several arrays; choose one with key=, one of: "
        f"{', '.join(repr(c) for c in candidates[:20])}"
    )


def _candidates(group):
    """Arrays and multiscale groups of ``group`` at any depth (not inside a multiscale)."""
    import zarr

    multiscale = []
    arrays = []
    for name, member in group.members(max_depth=None):
        if any(name.startswith(m + "/") for m in multiscale):
            continue
        if isinstance(member, zarr.Array):
            arrays.append(name)
        elif _multiscales(member) is not None:
            multiscale.append(name)
    arrays = [a for a in arrays if not any(a.startswith(m + "/") for m in multiscale)]
    return sorted(multiscale + arrays)


def _describe(group):
    names = _candidates(group)
    return ", ".join(repr(n) for n in names[:20]) if names else "nothing"


def _open_level(group, ms, level, path):
    datasets = ms.get("datasets") or []
    if not datasets:
        raise ValueError(f"OME-Zarr group {path} lists no datasets in its multiscales metadata")
    if level is None:
        level = 0
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"`level` must be an integer; got {level!r}")
    if not -len(datasets) <= level < len(datasets):
        shapes = ", ".join(
            f"{i}: {tuple(group[d['path']].shape)}" for i, d in enumerate(datasets)
        )
        raise ValueError(f"`level` {level} does not exist in {path}; levels are {shapes}")
    array = group[datasets[level]["path"]]
    return _drop_leading_singletons(array, ms.get("axes"))


def _drop_leading_singletons(array, axes):
    """Drop singleton non-spatial axes (time, channel) in front of the spatial ones."""
    if not axes or len(axes) != array.ndim:
        return array
    drop = 0
    for axis, size in zip(axes, array.shape):
        kind = axis.get("type") if isinstance(axis, dict) else None
        name = axis.get("name") if isinstance(axis, dict) else str(axis)
        is_space = kind == "space" or (kind is None and name in ("z", "y", "x"))
        if is_space or size != 1:
            break
        drop += 1
    return _LeadingIndex(array, drop) if drop else array


class _LeadingIndex:
    """View of ``array[0, ..., 0, ...]`` (``n`` leading zeros) that reads lazily."""

    def __init__(self, array, n):
        self._array = array
        self._lead = (0,) * n
        self.shape = tuple(array.shape[n:])
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        chunks = getattr(array, "chunks", None)
        self.chunks = tuple(chunks[n:]) if chunks is not None else None

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        return self._array[self._lead + key]

    def __array__(self, dtype=None, copy=None):
        data = np.asarray(self[...])
        return data if dtype is None else data.astype(dtype, copy=False)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"<view {self.shape} {self.dtype} of {self._array!r}>"


# ------------------------------------------------------------------------ batches


def _natural_key(name):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def iter_batch(folder):
    """Yield ``(name, image)`` for each 2D image of a folder, in natural order.

    Like :func:`open_batch`, but reads one image at a time.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder of 2D images (``.tif``, ``.tiff``, ``.png``, ``.jpg``, ``.jpeg``).

    Yields
    ------
    name : str
        File name, with its extension.
    image : (M, N) array-like
        The image (a memory map for uncompressed TIFF).

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    NotADirectoryError
        If ``folder`` is a file.
    ValueError
        If no image is found, or an image has NaN/inf values (the message names
        the file).
    TypeError
        If an image is not 2D greyscale (colour, multipage), naming the file.
    """
    files = list_batch(folder)

    def generate():
        for path in files:
            image = open_image(path)
            check_image(image, ndim=2, arg_name=str(path))
            yield path.name, image

    return generate()


def list_batch(folder):
    """``[(name, path)]`` of the readable 2D images of a folder, in natural order."""
    folder = _as_path(folder, "folder")
    if not folder.exists():
        raise _missing(folder, "folder")
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"not a folder: {folder}", str(folder))
    files, skipped = [], []
    for path in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        name = path.name.lower()
        if (name.startswith(".") or name in _JUNK_NAMES or not path.is_file()
                or not name.endswith(_BATCH_SUFFIXES)):
            skipped.append(path.name)
        else:
            files.append(path)
    if skipped:
        shown = ", ".join(skipped[:_LOG_SKIPPED_MAX])
        more = f" and {len(skipped) - _LOG_SKIPPED_MAX} more" if len(skipped) > _LOG_SKIPPED_MAX else ""
        logger.info("skipped %d non-image entries in %s: %s%s", len(skipped), folder, shown, more)
    if not files:
        raise ValueError(
            f"no 2D images in {folder}; looked for {', '.join(_BATCH_SUFFIXES)} files"
        )
    return files


def open_batch(folder):
    """Open every 2D image of a folder, for batch inference.

    Hidden files, folders, and files that are not images (``Thumbs.db``,
    ``.DS_Store``, ``desktop.ini``, text files, ...) are skipped; their names are
    logged at INFO level on the ``empanada_core`` logger.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder of 2D greyscale images (``.tif``, ``.tiff``, ``.png``, ``.jpg``,
        ``.jpeg``). Images may differ in shape and dtype.

    Returns
    -------
    images : list of (str, (M, N) array-like)
        ``(file name, image)`` pairs in natural order (``img2`` before
        ``img10``). Uncompressed TIFFs are memory maps; PNG and JPEG files are
        decoded into memory (use :func:`iter_batch` to read one at a time).

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    NotADirectoryError
        If ``folder`` is a file.
    ValueError
        If the folder holds no image, or an image has NaN/inf values.
    TypeError
        If an image is not 2D greyscale (the message names the file).

    Examples
    --------
    >>> import numpy as np, tempfile, os, tifffile
    >>> folder = tempfile.mkdtemp()
    >>> for i in (10, 2):
    ...     tifffile.imwrite(os.path.join(folder, f"img{i}.tif"), np.eye(4, dtype=np.uint8))
    >>> open(os.path.join(folder, "Thumbs.db"), "wb").close()
    >>> [name for name, _ in open_batch(folder)]
    ['img2.tif', 'img10.tif']
    """
    return list(iter_batch(folder))


# --------------------------------------------------------------------- validation


def _is_in_memory(image):
    return isinstance(image, np.ndarray) and not isinstance(image, np.memmap)


def check_image(image, *, ndim=(2, 3), arg_name="image", check_values=True):
    """Check that an image or volume can be segmented, with errors that say what to do.

    Parameters
    ----------
    image : array-like
        The image: an ndarray, memory map or zarr array (anything with ``shape``
        and ``dtype``; other inputs go through ``np.asarray``).
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    arg_name : str, optional
        Name used in messages.
    check_values : bool, optional
        Also check the values (NaN, infinity, constant). False checks only the
        shape and dtype, for a stack of unrelated images whose slices are
        checked one by one.

    Returns
    -------
    image : array-like
        ``image`` itself (unchanged and unread when lazy), so that calls chain.

    Raises
    ------
    TypeError
        If the dtype is boolean, complex or not numeric; the image looks like an
        RGB/RGBA colour image; or its number of dimensions is not allowed.
    ValueError
        If the image is empty, or a float image holds NaN or infinity.

    Warns
    -----
    UserWarning
        If the image is constant (nothing can be segmented in it).

    Notes
    -----
    A last axis of size 3 or 4 (``(M, N, 3)``, ``(P, M, N, 4)``) is taken as
    colour. A ``(3, M, N)`` or ``(4, M, N)`` stack is taken as a colour image
    only when it is obvious: its first three planes are identical (a greyscale
    image saved as RGB). Otherwise it is a short volume. Value checks (NaN,
    constant) read all of an in-memory array but only a sample of a lazy one
    (memory map, zarr); :func:`normalize` checks each slice again.
    8-, 16- and 32-bit integer and float images are all accepted.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    >>> check_image(image) is image
    True
    >>> check_image(np.zeros((8, 8, 3), np.uint8))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: `image` looks like an RGB colour image (shape (8, 8, 3)); ...
    """
    if not (hasattr(image, "shape") and hasattr(image, "dtype")):
        image = np.asarray(image)
    allowed = (ndim,) if isinstance(ndim, numbers.Integral) else tuple(ndim)
    _check_numeric_dtype(image.dtype, arg_name)
    shape = tuple(int(n) for n in image.shape)
    if math.prod(shape) == 0:
        raise ValueError(f"`{arg_name}` is empty (shape {shape})")
    if len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4:
        kind = "RGB" if shape[-1] == 3 else "RGBA"
        raise TypeError(
            f"`{arg_name}` looks like an {kind} colour image (shape {shape}); EM models "
            f"take greyscale. Convert it, for example with skimage.color.rgb2gray(image"
            f"{'[..., :3]' if shape[-1] == 4 else ''}), or image[..., 0] when the channels are equal"
        )
    if len(shape) not in allowed:
        want = " or ".join(f"{n}D" for n in allowed)
        hint = ""
        if len(shape) > max(allowed) and 1 in shape:
            hint = "; it has singleton axes: drop them with np.squeeze(image)"
        elif allowed == (2,) and len(shape) == 3:
            hint = (f"; it is a stack of {shape[0]} slices: segment it as a volume (stack or "
                    "ortho mode, --mode stack) or pick one slice")
        elif len(shape) > max(allowed):
            hint = "; pick one channel or time point first"
        raise TypeError(f"`{arg_name}` must be {want}; got {len(shape)}D, shape {shape}{hint}")
    if len(shape) == 3 and shape[0] in (3, 4) and _is_planar_colour(image, shape):
        raise TypeError(
            f"`{arg_name}` (shape {shape}) looks like a colour image stored channels-first: "
            f"its first three planes are identical. Use one plane, image[0], as a 2D image"
        )
    if not check_values:
        return image
    values = image if _is_in_memory(image) else _sample_values(image, 2_000_000, 0)
    lo, hi = values.min(), values.max()
    if values.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(
            f"`{arg_name}` contains NaN or infinite values; replace them first, for example "
            f"with np.nan_to_num(image, nan=0.0)"
        )
    if lo == hi:
        warnings.warn(
            f"`{arg_name}` is constant (every value is {lo}); nothing will be segmented",
            UserWarning,
            stacklevel=2,
        )
    return image


def _is_planar_colour(image, shape):
    stride = max(1, math.ceil(math.sqrt(shape[1] * shape[2] / _COLOUR_CHECK_SAMPLES)))
    planes = np.asarray(image[:3, ::stride, ::stride])
    if planes[0].min() == planes[0].max():
        return False  # constant or blank: nothing tells colour from a short volume
    return bool((planes[0] == planes[1]).all() and (planes[0] == planes[2]).all())


# ------------------------------------------------------------------- fingerprints

# Slices hashed by image_fingerprint, and the most values read from each.
_FINGERPRINT_SLICES = 8
_FINGERPRINT_VALUES = 1 << 18


def image_fingerprint(image, path=None):
    """A short digest that changes when an input image or its file changes.

    Used to refuse resuming an output from a different input that has the same
    path and shape. It hashes the shape, the dtype and a strided sample of up to
    8 evenly spaced slices (at most 2**18 values each, so a volume of any size
    costs a few milliseconds), plus the size and modification time of ``path``
    when it is a file.

    Parameters
    ----------
    image : array-like
        The opened image (numpy, memory map, zarr array).
    path : str or os.PathLike, optional
        The file or store it was read from.

    Returns
    -------
    str
        Hex digest (SHA-256, 16 characters).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 8, 8), np.uint8)
    >>> b = a.copy(); b[2, 0, 0] = 1
    >>> image_fingerprint(a) == image_fingerprint(a.copy()), image_fingerprint(a) == image_fingerprint(b)
    (True, False)
    """
    import hashlib

    shape = tuple(int(n) for n in image.shape)
    h = hashlib.sha256(repr((shape, str(np.dtype(image.dtype)))).encode())
    if path is not None:
        path = _as_path(path)
        if path.is_file():
            stat = path.stat()
            h.update(repr((stat.st_size, stat.st_mtime_ns)).encode())
    if len(shape) >= 3 and shape[0] > 0:
        picks = np.unique(np.linspace(0, shape[0] - 1, _FINGERPRINT_SLICES).round().astype(int))
        plane = math.prod(shape[1:])
    else:
        picks, plane = [None], math.prod(shape)
    step = max(1, math.isqrt(max(plane // _FINGERPRINT_VALUES, 1)))
    for z in picks:
        index = (slice(None, None, step),) * min(len(shape), 2)
        sample = image[(int(z), *index)] if z is not None else image[index]
        h.update(np.ascontiguousarray(np.asarray(sample)).tobytes())
    return h.hexdigest()[:16]


def batch_output_names(names, suffix="_labels.tif"):
    """Output file names for a batch of inputs, one distinct name per input.

    ``cell.tif`` gives ``cell_labels.tif``; inputs whose stems collide
    (``cell.tif``, ``cell.tiff``, ``cell.png``) keep their extension in the name
    (``cell_tif_labels.tif``, ...), so no result overwrites another.

    Parameters
    ----------
    names : sequence of str
        Input file names (with extensions), distinct.
    suffix : str, optional
        Appended to each stem.

    Returns
    -------
    list of str

    Examples
    --------
    >>> batch_output_names(["a.tif", "cell.tif", "cell.png"])
    ['a_labels.tif', 'cell_tif_labels.tif', 'cell_png_labels.tif']
    """
    stems = [Path(n).stem for n in names]
    counts = {}
    for stem in stems:
        key = stem.lower()
        counts[key] = counts.get(key, 0) + 1
    out = []
    for name, stem in zip(names, stems):
        ext = Path(name).suffix.lstrip(".").lower()
        unique = counts[stem.lower()] == 1 or not ext
        out.append(f"{stem}{suffix}" if unique else f"{stem}_{ext}{suffix}")
    if len({n.lower() for n in out}) != len(out):  # e.g. "a.tif" next to "a_tif.png"
        out = [f"{Path(n).name.replace('.', '_')}{suffix}" for n in names]
    return out
