"""Writing labels layers to files: one TIFF, one TIFF per slice, or zarr (uint32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "export_labels", "squeeze_labels"]

FORMATS = {"TIFF (one file)": "tiff", "TIFF (one file per slice)": "slices", "zarr": "zarr"}
_SLAB = 16


def squeeze_labels(labels):
    """``labels`` without size-1 axes (a plane result ``(1, H, W)`` becomes ``(H, W)``)."""
    shape = tuple(s for s in labels.shape if s != 1) or (1, 1)
    if len(shape) < 2:
        shape = (1,) * (2 - len(shape)) + shape
    return labels.reshape(shape) if isinstance(labels, np.ndarray) else \
        np.asarray(labels).reshape(shape)


def _check_ids(labels):
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise TypeError(f"labels must be integers; got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint32).max):
        raise ValueError("labels must be within 0 .. 2**32 - 1 to be written as uint32")
    return arr


def export_labels(labels, folder, name, fmt="tiff", *, slice_names=None, overwrite=False):
    """Write a label image as uint32 and return the written paths.

    Parameters
    ----------
    labels : (M, N) or (P, M, N) array-like of int
        Size-1 axes are dropped first.
    folder : path-like
        Created if missing.
    name : str
        File stem (``<name>.tif``, ``<name>/`` for slices, ``<name>.zarr``).
    fmt : {'tiff', 'slices', 'zarr'}
    slice_names : list of str, optional
        File names of the source images, one per slice (``'slices'`` only); their
        stems name the outputs (``<stem>.tif``). Default ``<name>_0000.tif``, ...
    overwrite : bool
        Replace existing files.

    Every file is written to a temporary name and renamed when complete.
    """
    from empanada_infer import create_output, mark_complete, write_tiff

    if fmt not in FORMATS.values():
        raise ValueError(f"`fmt` must be one of {sorted(FORMATS.values())}; got {fmt!r}")
    if not name or any(c in name for c in "/\\"):
        raise ValueError(f"`name` must be a file name without folders; got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = squeeze_labels(labels)
    if data.ndim > 3:
        raise ValueError(f"labels of shape {data.shape}: only 2D and 3D labels are exported")
    if fmt == "tiff":
        path = folder / f"{name}.tif"
        write_tiff(path, _check_ids(data).astype(np.uint32, copy=False), overwrite=overwrite)
        return [path]
    if fmt == "slices":
        planes = [data] if data.ndim == 2 else [data[i] for i in range(data.shape[0])]
        if slice_names is not None and len(slice_names) != len(planes):
            raise ValueError(f"{len(slice_names)} slice names for {len(planes)} slices")
        stems = ([Path(n).stem for n in slice_names] if slice_names is not None
                 else [f"{name}_{i:04d}" for i in range(len(planes))])
        if len(set(stems)) != len(stems):
            raise ValueError("the slice names are not unique")
        target = folder / name
        paths = [target / f"{stem}.tif" for stem in stems]
        if not overwrite:
            taken = [p for p in paths if p.exists()]
            if taken:
                raise FileExistsError(f"{taken[0]} exists; check overwrite to replace it")
        for plane, path in zip(planes, paths):
            write_tiff(path, _check_ids(plane).astype(np.uint32, copy=False), overwrite=True)
        return paths
    path = folder / f"{name}.zarr"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; check overwrite to replace it")
    out = create_output(path, data.shape, np.uint32, name="labels", overwrite=True)
    for start in range(0, data.shape[0], _SLAB):
        out[start:start + _SLAB] = _check_ids(data[start:start + _SLAB]).astype(np.uint32)
    mark_complete(out)
    return [path]
