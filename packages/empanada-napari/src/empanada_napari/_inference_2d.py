"""2D Inference (Parameter Testing): one image, the plane on screen, or a batch of images."""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, Container, PushButton, SpinBox, create_widget
from napari.utils.notifications import show_error

from . import _layers as L
from ._common import (
    device_widgets,
    model_combo,
    refresh_on_model_change,
    sync_quantized,
    two_d_widgets,
)
from ._models import device_for, get_segmenter
from ._runner import RunControls, friendly_error

__all__ = ["Inference2DWidget"]


class Inference2DWidget(Container):
    """Segment a 2D image, the 2D plane of a volume shown in the viewer (xy, xz or yz),
    or (batch mode) every slice of a stack of unrelated 2D images."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.image_layer = create_widget(annotation=napari.layers.Image, label="image layer")
        self.model = model_combo("Model")
        p = two_d_widgets()
        self.downsampling = p["downsampling"]
        self.confidence_thr = p["confidence_thr"]
        self.center_thr = p["center_thr"]
        self.min_distance = p["min_distance"]
        self.fine_boundaries = p["fine_boundaries"]
        self.semantic_only = p["semantic_only"]
        self.max_objects = SpinBox(value=10000, min=2, max=2**31 - 1, step=1000,
                                   label="Max objects per class",
                                   tooltip="label divisor: ids are class * this + k")
        self.tile_size = SpinBox(value=0, min=0, max=128000, step=512, label="Tile size",
                                 tooltip="run images larger than this in overlapping tiles "
                                         "(0: whole image)")
        self.batch_mode = CheckBox(value=False, label="Batch mode",
                                   tooltip="segment every slice of a stack of unrelated "
                                           "2D images (e.g. opened with Open Folder...)")
        self.use_gpu, self.use_quantized = device_widgets()
        self.roi_layer = create_widget(annotation=napari.layers.Shapes | None,
                                       label="ROI shapes (optional)")
        self.output_to_layer = CheckBox(value=False, label="Output to layer")
        self.output_layer = create_widget(annotation=napari.layers.Labels | None,
                                          label="output layer")
        self.run_button = PushButton(text="Run 2D Inference")
        self.controls = RunControls()
        super().__init__(
            widgets=[self.image_layer, self.model, self.downsampling, self.confidence_thr,
                     self.center_thr, self.min_distance, self.fine_boundaries,
                     self.semantic_only, self.max_objects, self.tile_size, self.batch_mode,
                     self.use_gpu, self.use_quantized, self.roi_layer, self.output_to_layer,
                     self.output_layer, self.run_button, self.controls],
            scrollable=False,
        )
        self.run_button.changed.connect(self.run)
        sync_quantized(self.model, self.use_gpu, self.use_quantized)
        refresh_on_model_change(self)

    def params(self):
        from empanada_infer import SegmentationParams

        return SegmentationParams(
            downsampling=int(self.downsampling.value),
            confidence_thr=float(self.confidence_thr.value),
            center_thr=float(self.center_thr.value), min_distance=int(self.min_distance.value),
            fine_boundaries=bool(self.fine_boundaries.value),
            semantic_only=bool(self.semantic_only.value),
            label_divisor=int(self.max_objects.value), tile_size=int(self.tile_size.value))

    def run(self, *_):
        """Check the inputs, then segment in a worker; returns the worker (or None)."""
        if self.controls.running:
            show_error("2D Inference is already running; wait or press Cancel")
            return None
        try:
            plan = self._plan()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            show_error(f"2D Inference: {friendly_error(exc)}")
            return None
        return self.controls.start(plan["job"], plan["add"], "2D Inference")

    def _plan(self):
        from empanada_infer import check_image
        from empanada_models import resolve_model_config

        layer = self.image_layer.value
        if layer is None:
            raise ValueError("choose an image layer (open an image first)")
        params = self.params()
        model = self.model.value
        if model is None:
            raise ValueError("no model is registered")
        config = resolve_model_config(model)  # raises for a missing model
        device = device_for(self.use_gpu.value)
        quantized = bool(self.use_quantized.value)
        data = L.image_array(layer)
        roi = self.roi_layer.value
        target = self.output_layer.value if self.output_to_layer.value else None
        if self.output_to_layer.value and target is None:
            raise ValueError("Output to layer is checked: choose the output labels layer")
        if target is not None and tuple(target.data.shape) != tuple(data.shape):
            raise ValueError(f"output layer {target.name!r} has shape {target.data.shape}; "
                             f"it must match the image's {tuple(data.shape)}")
        axis = index = None
        if self.batch_mode.value:
            if data.ndim != 3:
                raise ValueError(f"batch mode needs a stack of 2D images (3D layer); "
                                 f"{layer.name!r} is {data.ndim}D")
            if target is not None or roi is not None:
                raise ValueError("batch mode cannot be combined with Output to layer or an ROI")
            images = L.LazyPlanes(data)
            check_image(images[0], ndim=2)
        elif data.ndim == 2:
            image = np.asarray(data)
        elif data.ndim == 3:
            axis, index = L.view_plane(layer, self.viewer.dims)
            image = L.take_plane(data, axis, index)
        else:
            raise ValueError(f"{layer.name!r} is {data.ndim}D; 2D Inference takes 2D images "
                             f"or one plane of a 3D volume")
        box = mask = None
        if not self.batch_mode.value:
            image = check_image(image, ndim=2)
            if roi is not None:
                mask = L.roi_mask(roi, layer, image.shape, axis=axis, index=index)
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))

        def job(progress, should_stop):
            seg = get_segmenter(config, params, device=device, quantized=quantized)
            if self.batch_mode.value:
                return finish(np.stack(seg.segment_batch(images, progress=progress,
                                                         should_stop=should_stop)))
            progress(0, 1)
            if box is None:
                pan = seg.segment_image(image)
            else:
                pan = np.zeros(image.shape, np.uint32)
                pan[box] = seg.segment_image(image[box]) * mask[box]
            progress(1, 1)
            return finish(pan)

        def finish(pan):
            # in the worker: class arrays and object counts never block the GUI thread
            results = L.class_results(pan, config, params.label_divisor)
            return pan, results, [L.count_objects(a) for _, a in results]

        meta = {"model": config.name, "image": layer.name, "label_divisor":
                params.label_divisor, "plane": None if axis is None else L.AXIS_NAMES[axis],
                "plane_index": index, "params": {k: getattr(params, k) for k in (
                    "downsampling", "confidence_thr", "center_thr", "min_distance",
                    "fine_boundaries", "semantic_only", "tile_size")}}

        def add(result):
            pan, results, numbers = result
            if target is not None:
                if axis is None:
                    target.data[...] = pan
                else:
                    key = [slice(None)] * 3
                    key[axis] = index
                    target.data[tuple(key)] = pan
                target.refresh()
                return f"{sum(numbers)} objects written into {target.name!r}"
            if axis is not None:
                scale, translate = L.plane_placement(layer, axis, index)
                results = [(n, np.expand_dims(a, axis)) for n, a in results]
                suffix = f"{L.AXIS_NAMES[axis]} {index}"
            else:
                scale, translate = layer.scale, layer.translate
                suffix = "batch" if self.batch_mode.value else ""
            extra = {}
            if self.batch_mode.value:
                files = L.source_files(layer, pan.shape[0])
                if files:
                    extra["source_files"] = files
            counts = []
            for (class_name, labels), number in zip(results, numbers):
                self.viewer.add_labels(
                    labels, name=L.result_name(layer.name, config.name, class_name, suffix),
                    scale=scale, translate=translate,
                    metadata={"empanada": {**meta, "class": class_name, **extra}})
                counts.append(f"{number} {class_name}")
            return ", ".join(counts)

        return {"job": job, "add": add}
