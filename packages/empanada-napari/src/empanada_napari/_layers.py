"""Between napari layers and the engines: image data, view planes, ROIs, result layers.

Small functions over layers and arrays; no widgets and no segmentation here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["image_array", "view_plane", "take_plane", "roi_mask", "class_results",
           "result_name", "count_objects", "plane_placement"]

AXIS_NAMES = {0: "xy", 1: "xz", 2: "yz"}


def image_array(layer):
    """The layer's pixel data (level 0 of a multiscale image), checked for one channel.

    Raises
    ------
    TypeError
        The layer is an RGB(A) colour image.
    """
    if getattr(layer, "rgb", False):
        raise TypeError(
            f"image layer {layer.name!r} is an RGB colour image; empanada models segment "
            f"greyscale EM. Convert it to one channel first (e.g. keep one channel)")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return data


def view_plane(layer, dims):
    """``(axis, index)`` of the 2D plane of a 3D ``layer`` the viewer shows.

    ``axis`` is the layer axis not displayed (0: an xy plane, 1: xz, 2: yz),
    ``index`` the slice along it at the viewer's current position.

    Raises
    ------
    ValueError
        The viewer shows the layer in 3D, or the layer is not 3D.
    """
    if layer.ndim != 3:
        raise ValueError(f"{layer.name!r} is {layer.ndim}D; a view plane needs a 3D image")
    if dims.ndisplay != 2:
        raise ValueError("the viewer is in 3D display; switch to 2D (the 2D/3D button) to "
                         "segment the plane you see, or use 3D Inference for the volume")
    offset = dims.ndim - layer.ndim  # world axes before the layer's own
    displayed = [a - offset for a in dims.displayed]
    hidden = [a for a in range(3) if a not in displayed]
    if len(hidden) != 1:
        raise ValueError(f"cannot tell which plane of {layer.name!r} is shown")
    axis = hidden[0]
    data_point = layer.world_to_data(dims.point[offset:] if offset else dims.point)
    size = image_array(layer).shape[axis]
    index = int(np.clip(np.round(data_point[axis]), 0, size - 1))
    return axis, index


def take_plane(volume, axis, index):
    """One 2D plane of a 3D array (read into memory)."""
    key = [slice(None)] * 3
    key[axis] = index
    return np.asarray(volume[tuple(key)])


def plane_placement(layer, axis, index):
    """``(scale, translate)`` of a one-slice 3D layer sitting on plane ``index``."""
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float).copy()
    translate[axis] += index * scale[axis]
    return scale, translate


def roi_mask(shapes_layer, image_layer, shape, *, axis=None, index=None):
    """Boolean mask (``shape``) of the image pixels inside the shapes' outlines.

    The shapes are mapped into the image's pixel grid through both layers'
    scale and translate. For a plane of a 3D image (``axis``, ``index``) the
    shapes drawn on that plane are used.

    Raises
    ------
    ValueError
        No shape covers any pixel of the image (or of that plane).
    """
    from napari.layers import Shapes

    if len(shapes_layer.data) == 0:
        raise ValueError(f"shapes layer {shapes_layer.name!r} has no shapes; draw the ROI "
                         f"(rectangle, polygon or ellipse) first")
    s_scale = np.asarray(shapes_layer.scale, float)
    s_trans = np.asarray(shapes_layer.translate, float)
    i_scale = np.asarray(image_layer.scale, float)
    i_trans = np.asarray(image_layer.translate, float)
    n = min(len(s_scale), len(i_scale))
    converted = []
    for verts in shapes_layer.data:
        world = verts[:, -n:] * s_scale[-n:] + s_trans[-n:]
        converted.append((world - i_trans[-n:]) / i_scale[-n:])
    mapped = Shapes(converted, shape_type=list(shapes_layer.shape_type))
    full_shape = image_array(image_layer).shape[-n:]
    if axis is None:
        mask = mapped.to_masks(mask_shape=tuple(shape)).any(axis=0)
    else:
        masks = mapped.to_masks(mask_shape=tuple(full_shape)).any(axis=0)
        key = [slice(None)] * masks.ndim
        key[axis] = index
        mask = masks[tuple(key)]
    if not mask.any():
        raise ValueError(f"the shapes of {shapes_layer.name!r} cover no pixel of "
                         f"{image_layer.name!r}" + ("" if axis is None else " on this plane"))
    return mask


def class_results(panoptic, config, label_divisor):
    """``[(class name, labels)]``: one labels array per class of the model.

    A single-class model gives the panoptic array itself (no copy; it may be a
    zarr array). Otherwise each class keeps its own ids (``class *
    label_divisor + k``) and is 0 elsewhere.
    """
    names = dict(config.class_names)
    if len(config.labels) == 1:
        cid = config.labels[0]
        return [(names.get(cid, str(cid)), panoptic)]
    data = np.asarray(panoptic)
    classes = data // label_divisor
    return [(names.get(cid, str(cid)), np.where(classes == cid, data, 0).astype(np.uint32))
            for cid in config.labels]


def result_name(image_name, model_name, class_name, suffix=""):
    """Layer name of a result: ``<image> <model> <class>[ <suffix>]``."""
    return " ".join(p for p in (image_name, model_name, class_name, suffix) if p)


def count_objects(labels):
    """Number of distinct non-zero ids."""
    ids = np.unique(np.asarray(labels))
    return int((ids > 0).sum())


def source_files(layer, count):
    """File names of the ``count`` images a stack layer was opened from, or None.

    Known when napari opened a folder of 2D images ("Open Folder...") and the
    folder holds exactly ``count`` images, listed in the order empanada reads
    a folder (natural sort, the same as napari's).
    """
    from pathlib import Path

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not Path(path).is_dir():
        return None
    from empanada_core import list_batch

    try:
        files = [f.name for f in list_batch(Path(path))]
    except (OSError, ValueError):
        return None
    return files if len(files) == count else None


class LazyPlanes:
    """Sequence of the 2D planes of a 3D array along axis 0, read one at a time."""

    def __init__(self, volume):
        self.volume = volume

    def __len__(self):
        return int(self.volume.shape[0])

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return np.asarray(self.volume[i])


def class_results_into(store, panoptic, config, label_divisor, *, slab=16):
    """:func:`class_results` for a multi-class model, written into zarr arrays of ``store``
    (one per class, named by class) slab by slab, so the volume is never in memory."""
    from empanada_infer import create_output, mark_complete

    names = dict(config.class_names)
    out = []
    for cid in config.labels:
        name = names.get(cid, str(cid))
        arr = create_output(store, panoptic.shape, np.uint32, name=name, overwrite=True)
        for z in range(0, panoptic.shape[0], slab):
            part = np.asarray(panoptic[z:z + slab])
            arr[z:z + slab] = np.where(part // label_divisor == cid, part, 0)
        mark_complete(arr)
        out.append((name, arr))
    return out
