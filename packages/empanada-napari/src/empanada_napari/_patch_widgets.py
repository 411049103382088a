"""Training data: pick patches (or 5-slice flipbooks) to annotate, and save them as a dataset.

The picking and the dataset format are empanada-train's (``pick_patches``,
``store_patches``); these widgets move data between layers and those functions.
The picked layers carry, in ``metadata["empanada_patches"]``, where each patch
came from, which Save needs to name the files and crop off edge padding.
"""

from __future__ import annotations

import re
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_error, show_info

from ._common import path_of
from ._runner import friendly_error

__all__ = ["PickPatchesWidget", "SavePatchesWidget", "patch_metadata", "patches_from_layer",
           "source_name"]

META_KEY = "empanada_patches"


def source_name(layer_name):
    """A folder-safe source name from a layer name (spaces and path characters -> '_')."""
    name = re.sub(r'[\s/\\:*?"<>|]+', "_", str(layer_name)).strip("._") or "image"
    return name


def patch_metadata(patches, image_name):
    """What Save needs to know about each patch (no pixels), for layer metadata."""
    return {"image": image_name, "patches": [
        {"origin": [int(v) for v in p.origin], "valid": [[s.start, s.stop] for s in p.valid],
         "axis": p.axis, "level": int(p.level), "source": p.source, "name": p.name}
        for p in patches]}


def patches_from_layer(layer):
    """The :class:`empanada_train.Patch` objects of a picked image layer (pixels from the layer).

    Raises
    ------
    ValueError
        The layer was not made by Pick patches, or its patches no longer match its data.
    """
    from empanada_train import Patch

    meta = layer.metadata.get(META_KEY)
    if not meta:
        raise ValueError(f"image layer {layer.name!r} was not made by 'Pick finetune/"
                         f"training patches' (it has no patch locations); pick patches first")
    entries = meta["patches"]
    data = np.asarray(layer.data)
    if data.shape[0] != len(entries):
        raise ValueError(f"image layer {layer.name!r} holds {data.shape[0]} patches but its "
                         f"metadata describes {len(entries)}; pick the patches again")
    return [Patch(image=data[i], origin=tuple(e["origin"]),
                  valid=tuple(slice(a, b) for a, b in e["valid"]), axis=e["axis"],
                  level=e["level"], source=e["source"], name=e["name"])
            for i, e in enumerate(entries)]


def _world_points(points_layer, image_layer):
    """Points as level-0 pixel indices of the image layer ((n, ndim) float)."""
    data = np.asarray(points_layer.data, float)
    if data.size == 0:
        return np.zeros((0, image_layer.ndim))
    world = np.array([points_layer.data_to_world(p) for p in data])[:, -image_layer.ndim:]
    return np.round(np.array([image_layer.world_to_data(w) for w in world]))


class PickPatchesWidget(Container):
    """Pick patches (2D images, stacks) or flipbooks (volumes) to annotate."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.image_layer = create_widget(annotation=napari.layers.Image, label="image layer")
        self.points_layer = create_widget(annotation=napari.layers.Points | None,
                                          label="points layer (optional)")
        self.n_patches = SpinBox(value=16, min=1, max=3200,
                                 label="Number of patches for annotation",
                                 tooltip="patches at the points first, the rest random")
        self.patch_size = SpinBox(value=256, min=16, max=102400, step=16,
                                  label="Patch size in pixels")
        self.level = ComboBox(choices=list(range(9)), value=0, label="Multiscale image level",
                              tooltip="pyramid level (each 2x smaller); a plain image is "
                                      "downsampled by 2^level")
        self.pick_all_points = CheckBox(value=False, label="Pick all points")
        self.isotropic = CheckBox(value=False, label="Pick from xy, xz, or yz",
                                  tooltip="only for nearly isotropic voxels")
        self.is_stack = CheckBox(value=False, label="Image is 2D stack",
                                 tooltip="a stack of unrelated 2D images (Open Folder...)")
        self.paired = CheckBox(value=False, label="Pick paired patches (optional)",
                               tooltip="also crop an existing labels layer, to correct it")
        self.labels_layer = create_widget(annotation=napari.layers.Labels | None,
                                          label="labels layer (paired)")
        self.run_button = PushButton(text="Pick patches")
        self.status = Label(value="")
        super().__init__(widgets=[self.image_layer, self.points_layer, self.n_patches,
                                  self.patch_size, self.level, self.pick_all_points,
                                  self.isotropic, self.is_stack, self.paired,
                                  self.labels_layer, self.run_button, self.status])
        self.native.setMinimumWidth(420)
        self.run_button.changed.connect(self.run)

    def run(self, *_):
        """Pick; returns the (image, labels) layers added, or None after an error (shown)."""
        try:
            return self._run()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.value = f"failed: {friendly_error(exc)}"
            show_error(f"Pick patches: {friendly_error(exc)}")
            return None

    def _run(self):
        from empanada_train import pick_patches

        layer = self.image_layer.value
        if layer is None:
            raise ValueError("choose an image layer")
        if getattr(layer, "rgb", False):
            raise TypeError(f"{layer.name!r} is an RGB image; EM patches are greyscale")
        image = list(layer.data) if layer.multiscale else layer.data
        labels = None
        if self.paired.value:
            target = self.labels_layer.value
            if target is None:
                raise ValueError("Pick paired patches is checked: choose the labels layer")
            labels = list(target.data) if target.multiscale else target.data
        points_layer = self.points_layer.value
        points = None
        if points_layer is not None and len(points_layer.data):
            points = _world_points(points_layer, layer)
        mode = "stack" if self.is_stack.value else "auto"
        source = source_name(layer.name)
        patches = pick_patches(
            image, patch_size=int(self.patch_size.value), n_patches=int(self.n_patches.value),
            points=points, pick_all_points=bool(self.pick_all_points.value), mode=mode,
            isotropic=bool(self.isotropic.value), level=int(self.level.value), seed=None,
            labels=labels, source=source)
        used = 0
        if points is not None:
            used = len(points) if self.pick_all_points.value else min(
                len(points), int(self.n_patches.value))
            points_layer.data = np.asarray(points_layer.data)[used:]  # consumed
        stack = np.stack([p.image for p in patches])
        if labels is None:
            masks = np.zeros(stack.shape, np.uint32)
        else:
            masks = np.stack([np.asarray(p.labels) for p in patches]).astype(np.uint32)
        kind = "flipbooks" if patches[0].is_flipbook else "patches"
        meta = {META_KEY: patch_metadata(patches, layer.name)}
        name = f"{layer.name}_{kind}"
        image_out = self.viewer.add_image(stack, name=name, metadata=dict(meta),
                                          contrast_limits=_limits(stack))
        labels_out = self.viewer.add_labels(masks, name=f"{name}_labels", metadata=dict(meta))
        if kind == "flipbooks":
            # annotate the middle slice (index 2) of each flipbook
            self.viewer.dims.order = tuple(range(self.viewer.dims.ndim))
            self.viewer.dims.set_current_step(self.viewer.dims.ndim - 4, 0)
            self.viewer.dims.set_current_step(self.viewer.dims.ndim - 3, 2)
        self.viewer.layers.selection.active = labels_out
        text = (f"picked {len(patches)} {kind} of {stack.shape[-1]} px ({used} at points)"
                + ("; annotate slice 2 of each flipbook" if kind == "flipbooks" else ""))
        self.status.value = text
        show_info(text)
        return image_out, labels_out


def _limits(stack):
    lo, hi = float(stack.min()), float(stack.max())
    return (lo, hi) if hi > lo else (lo, lo + 1)


class SavePatchesWidget(Container):
    """Write annotated patches into a training dataset folder (created, or appended to)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.image_layer = create_widget(annotation=napari.layers.Image, label="image layer")
        self.labels_layer = create_widget(annotation=napari.layers.Labels,
                                          label="labels layer")
        self.save_dir = FileEdit(mode="d", label="Save directory", nullable=True)
        self.dataset_name = LineEdit(value="", label="Dataset name",
                                     tooltip="an existing dataset of this name is appended to")
        self.overwrite = CheckBox(value=False, label="Replace patches saved before",
                                  tooltip="unchecked: saving a patch that is already in "
                                          "the dataset is refused")
        self.run_button = PushButton(text="Save patches")
        self.status = Label(value="")
        super().__init__(widgets=[self.image_layer, self.labels_layer, self.save_dir,
                                  self.dataset_name, self.overwrite, self.run_button,
                                  self.status])
        self.native.setMinimumWidth(420)
        self.run_button.changed.connect(self.run)
        self.image_layer.changed.connect(self._pair_labels)

    def _pair_labels(self, layer):
        """Choose the labels layer picked together with the image."""
        meta = None if layer is None else layer.metadata.get(META_KEY)
        if not meta:
            return
        names = [p["name"] for p in meta["patches"]]
        for other in self.viewer.layers:
            other_meta = other.metadata.get(META_KEY) if isinstance(
                other, napari.layers.Labels) else None
            if other_meta and [p["name"] for p in other_meta["patches"]] == names:
                self.labels_layer.value = other
                return

    def run(self, *_):
        """Save; returns the list of (image, mask) files written, or None after an error."""
        try:
            written, root = self._run()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.value = f"failed: {friendly_error(exc)}"
            show_error(f"Save patches: {friendly_error(exc)}")
            return None
        from empanada_train import load_dataset

        total = len(load_dataset(root))
        text = f"saved {len(written)} patches to {root} (the dataset holds {total} now)"
        self.status.value = text
        show_info(text)
        return written

    def _run(self):
        from empanada_train import store_patches

        image, labels = self.image_layer.value, self.labels_layer.value
        if image is None or labels is None:
            raise ValueError("choose the picked image layer and its labels layer")
        name = str(self.dataset_name.value).strip()
        if not name:
            raise ValueError("give the dataset a name (a folder of that name is made in the "
                             "save directory)")
        folder = path_of(self.save_dir)
        if folder is None:
            raise ValueError("choose the save directory")
        patches = patches_from_layer(image)
        if tuple(labels.data.shape) != tuple(np.shape(image.data)):
            raise ValueError(f"labels layer {labels.name!r} has shape {labels.data.shape}; "
                             f"the patches of {image.name!r} are {np.shape(image.data)}")
        other = labels.metadata.get(META_KEY)
        if other is not None and [p["name"] for p in other["patches"]] != [
                p.name for p in patches]:
            raise ValueError(f"labels layer {labels.name!r} belongs to other patches than "
                             f"{image.name!r}; choose the labels picked with it")
        root = Path(folder).expanduser() / name
        try:
            written = store_patches(patches, list(np.asarray(labels.data)), Path(folder), name,
                                    overwrite=bool(self.overwrite.value))
        except ValueError as exc:
            if "already exist" not in str(exc):
                raise
            raise ValueError(f"these patches are already saved in {root} (nothing was "
                             f"written); check 'Replace patches saved before' to replace "
                             f"them, or pick new patches") from exc
        return written, root
