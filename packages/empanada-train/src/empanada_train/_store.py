"""Write annotated patches as a training dataset and find the pairs of one again.

Layout (the original's)::

    <dataset_dir>/<dataset_name>/<source>/images/<source>-<patch name>.tiff
    <dataset_dir>/<dataset_name>/<source>/masks/<source>-<patch name>.tiff
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from empanada_core.validation import check_label_image

from ._patches import FLIPBOOK_MIDDLE, Patch, _check_source_name

__all__ = ["store_patches", "load_dataset"]

logger = logging.getLogger("empanada_train")

_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", ".ds_store"})
_UINT32_MAX = np.iinfo(np.uint32).max


def _as_path(path, arg_name):
    if isinstance(path, (str, os.PathLike)):
        return Path(os.fspath(path)).expanduser()
    raise TypeError(f"`{arg_name}` must be a str or os.PathLike; got {type(path).__name__}")


def _mask_plane(patch, mask, index):
    """The mask of ``patch`` cropped to its valid region, validated, as uint32."""
    what = f"mask {index} (for {patch.name})"
    mask = check_label_image(mask, what, check_negative=False)
    full = patch.image.shape
    plane = full[-2:]
    if mask.shape == full and patch.is_flipbook:
        mask = mask[FLIPBOOK_MIDDLE]
    if mask.shape == plane:
        mask = mask[patch.valid]
    elif mask.shape != patch.valid_shape:
        allowed = {full, plane, patch.valid_shape}
        raise ValueError(
            f"{what} has shape {mask.shape}; expected one of "
            f"{', '.join(str(s) for s in sorted(allowed))} (the patch, its annotated plane, "
            f"or its region without padding)"
        )
    if mask.size:
        lo, hi = mask.min(), mask.max()
        if lo < 0:
            raise ValueError(f"{what} has negative ids (min {lo}); ids must be >= 0")
        if hi > _UINT32_MAX:
            raise ValueError(f"{what} has ids above {_UINT32_MAX} (max {hi}); they do not fit uint32")
    return mask.astype(np.uint32)


def store_patches(patches, masks, dataset_dir, dataset_name, *, source=None, overwrite=False):
    """Save annotated patches into a training dataset, creating or appending to it.

    Parameters
    ----------
    patches : sequence of Patch
        Patches from :func:`pick_patches`.
    masks : sequence of (H, W) or (5, H, W) integer arrays, or an (N, ...) array
        One label image per patch: the patch's shape, its annotated plane, or
        the plane already cropped to :attr:`Patch.valid`. For flipbooks only
        the middle slice (index 2) is saved.
    dataset_dir : str or os.PathLike
        Folder that holds datasets (created if needed).
    dataset_name : str
        Name of the dataset folder; an existing dataset is appended to.
    source : str, optional
        Source folder name for all patches; default: each patch's
        :attr:`Patch.source`.
    overwrite : bool, optional
        Replace files that already exist instead of refusing.

    Returns
    -------
    list of (Path, Path)
        The image and mask files written.

    Raises
    ------
    TypeError
        If an argument has the wrong type or a mask is not integer.
    ValueError
        If the counts differ, a mask is negative, too large or has the wrong
        shape, two patches share a file name, or a file exists and not
        ``overwrite`` (nothing is written then).

    Notes
    -----
    Images keep their dtype; masks are written as uint32 (the original wrote
    int32; :func:`load_dataset` and the datasets read both). The padding
    recorded in each patch is cropped off. All checks run before the first
    file is written.

    Examples
    --------
    >>> import tempfile
    >>> from empanada_train._patches import pick_patches
    >>> patch = pick_patches(np.zeros((30, 40), np.uint8), patch_size=32, n_patches=1)[0]
    >>> folder = tempfile.mkdtemp()
    >>> (image_file, mask_file), = store_patches([patch], [np.ones((32, 32), int)], folder, "demo")
    >>> patch.name, patch.valid_shape
    ('s0-LOC-2d_0-30_7-39', (30, 32))
    >>> image_file.relative_to(folder).as_posix()
    'demo/image/images/image-s0-LOC-2d_0-30_7-39.tiff'
    """
    import tifffile

    patches = list(patches)
    for i, patch in enumerate(patches):
        if not isinstance(patch, Patch):
            raise TypeError(f"`patches` must hold Patch objects; item {i} is {type(patch).__name__}")
    if isinstance(masks, np.ndarray) and masks.ndim >= 3:
        masks = list(masks)
    masks = list(masks)
    if len(masks) != len(patches):
        raise ValueError(f"got {len(patches)} patches but {len(masks)} masks")
    if not isinstance(dataset_name, str):
        raise TypeError(f"`dataset_name` must be a str; got {type(dataset_name).__name__}")
    _check_source_name(dataset_name, "dataset_name")
    if source is not None:
        _check_source_name(source)
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool; got {overwrite!r}")
    root = _as_path(dataset_dir, "dataset_dir") / dataset_name

    jobs = []
    seen = {}
    for i, (patch, mask) in enumerate(zip(patches, masks)):
        src = source if source is not None else _check_source_name(patch.source, "patch.source")
        stem = f"{src}-{patch.name}"
        if stem in seen:
            raise ValueError(
                f"patches {seen[stem]} and {i} would both be saved as {stem}.tiff (same source "
                f"and location); drop one of them"
            )
        seen[stem] = i
        image = patch.crop(patch.plane)
        jobs.append((root / src / "images" / f"{stem}.tiff", root / src / "masks" / f"{stem}.tiff",
                     image, _mask_plane(patch, mask, i)))
    if not overwrite:
        existing = [str(p) for job in jobs for p in job[:2] if p.exists()]
        if existing:
            more = f" (and {len(existing) - 5} more)" if len(existing) > 5 else ""
            raise ValueError(
                f"{len(existing)} files already exist, e.g. {', '.join(existing[:5])}{more}; "
                f"pass overwrite=True to replace them"
            )

    written = []
    for image_path, mask_path, image, mask in jobs:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(image_path, np.ascontiguousarray(image), photometric="minisblack")
        tifffile.imwrite(mask_path, mask, photometric="minisblack", compression="zlib")
        written.append((image_path, mask_path))
    return written


# ----------------------------------------------------------------------- load


def _natural_key(name):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _is_junk(path):
    name = path.name.lower()
    return name.startswith(".") or name in _JUNK_NAMES


def _files_by_stem(folder):
    files = {}
    skipped = []
    for path in folder.iterdir():
        if _is_junk(path) or not path.is_file() or not path.name.lower().endswith(_IMAGE_SUFFIXES):
            skipped.append(path.name)
            continue
        stem = path.name[: path.name.rfind(".")]
        if stem in files:
            raise ValueError(
                f"{folder} holds two files named {stem!r} ({files[stem].name} and {path.name}); "
                f"images and masks are paired by name, so keep one"
            )
        files[stem] = path
    if skipped:
        logger.info("ignored %d entries in %s: %s", len(skipped), folder, ", ".join(skipped[:20]))
    return files


def _source_pairs(source_dir):
    images = _files_by_stem(source_dir / "images")
    masks = _files_by_stem(source_dir / "masks")
    no_mask = sorted(set(images) - set(masks), key=_natural_key)
    if no_mask:
        raise ValueError(
            f"image {images[no_mask[0]]} has no mask of the same name in {source_dir / 'masks'}"
            + (f" ({len(no_mask) - 1} more images lack masks)" if len(no_mask) > 1 else "")
        )
    no_image = sorted(set(masks) - set(images), key=_natural_key)
    if no_image:
        raise ValueError(
            f"mask {masks[no_image[0]]} has no image of the same name in {source_dir / 'images'}"
            + (f" ({len(no_image) - 1} more masks lack images)" if len(no_image) > 1 else "")
        )
    return [(images[s], masks[s]) for s in sorted(images, key=_natural_key)]


def _source_dirs(root):
    """``(source name, folder)`` of one dataset root (or of one source folder)."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return [(root.name, root)]
    found = []
    for sub in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        if _is_junk(sub) or not sub.is_dir():
            continue
        has_images, has_masks = (sub / "images").is_dir(), (sub / "masks").is_dir()
        if has_images and has_masks:
            found.append((sub.name, sub))
        elif has_images or has_masks:
            missing = "masks" if has_images else "images"
            raise ValueError(f"source folder {sub} has no {missing}/ folder")
        else:
            logger.info("ignored %s: no images/ and masks/ folders", sub)
    return found


def load_dataset(path):
    """Find the (image, mask) pairs of a training dataset.

    Parameters
    ----------
    path : str or os.PathLike, or a sequence of them
        Dataset folder(s) holding one folder per source, each with ``images/``
        and ``masks/`` (what :func:`store_patches` writes); a source folder
        itself is accepted too. Sources of the same name in several roots are
        merged (as the original did).

    Returns
    -------
    list of (Path, Path, str)
        ``(image file, mask file, source name)``, sorted by source, then in
        natural file-name order.

    Raises
    ------
    FileNotFoundError
        If a root does not exist.
    ValueError
        If an image has no mask of the same name or vice versa (the message
        names it), a source folder lacks ``images/`` or ``masks/``, or no pair
        is found.

    Notes
    -----
    Images and masks are paired by file name (without extension), not by
    listing order as in the original, so a stray file cannot shift the pairs.
    Hidden files, ``Thumbs.db``, ``desktop.ini``, sub-folders and files that
    are not images (``.tif``, ``.tiff``, ``.png``, ``.jpg``, ``.jpeg``,
    ``.npy``) are ignored (logged at INFO level on ``empanada_train``).
    """
    roots = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not roots:
        raise ValueError("`path` is an empty list of dataset folders")
    by_source = {}
    for root in roots:
        root = _as_path(root, "path")
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        for name, folder in _source_dirs(root):
            by_source.setdefault(name, []).extend(_source_pairs(folder))
    items = [(image, mask, name)
             for name in sorted(by_source, key=_natural_key)
             for image, mask in sorted(by_source[name], key=lambda p: _natural_key(p[0].name))]
    if not items:
        raise ValueError(
            f"no image/mask pairs in {', '.join(str(r) for r in roots)}; expected "
            f"<dataset>/<source>/images/* and <dataset>/<source>/masks/*"
        )
    return items
