"""3D Inference: stack (one plane) and ortho-plane segmentation of a volume."""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Labels
from napari.utils.notifications import show_error

from . import _layers as L
from ._common import (
    device_widgets,
    model_combo,
    refresh_on_model_change,
    sync_quantized,
    two_d_widgets,
)
from ._models import device_for, get_segmenter, gpu_count
from ._runner import RunControls, friendly_error

__all__ = ["Inference3DWidget", "store_path"]


def store_path(folder, image_name, model_name):
    """``<folder>/<image>_<model>.zarr`` with characters unsafe in file names replaced."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{image_name}_{model_name}")
    return Path(folder) / f"{safe}.zarr"


class Inference3DWidget(Container):
    """Segment a 3D volume slice by slice along one plane, or along all three (ortho-plane)
    and keep the voxels the views agree on; one labels layer per class."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.image_layer = create_widget(annotation=napari.layers.Image, label="image layer")
        self.model = model_combo("model")
        self.use_gpu, self.use_quantized = device_widgets()
        gpus = gpu_count()
        self.multi_gpu = CheckBox(value=False, enabled=gpus > 1, label="Multi GPU",
                                  tooltip=f"split the volume over the {gpus} GPUs"
                                  if gpus > 1 else "needs more than one CUDA GPU")
        p = two_d_widgets()
        self.downsampling = p["downsampling"]
        self.confidence_thr = p["confidence_thr"]
        self.center_thr = p["center_thr"]
        self.min_distance = p["min_distance"]
        self.fine_boundaries = p["fine_boundaries"]
        self.semantic_only = p["semantic_only"]
        self.median_size = ComboBox(choices=[1, 3, 5, 7, 9, 11], value=3,
                                    label="Median Filter Size",
                                    tooltip="slices over which probabilities are median-"
                                            "filtered (7-9 for < 10 nm voxels)")
        self.min_size = SpinBox(value=500, min=0, max=10**8, step=100,
                                label="Min Size (Voxels)")
        self.min_extent = SpinBox(value=5, min=0, max=1000, label="Min Box Extent",
                                  tooltip="remove objects thinner than this along any axis")
        self.max_objects = SpinBox(value=10000, min=2, max=2**31 - 1, step=1000,
                                   label="Max objects per class in 3D")
        self.plane = ComboBox(choices=["xy", "xz", "yz"], value="xy", label="Inference plane")
        self.orthoplane = CheckBox(value=False, label="Run ortho-plane")
        self.return_stacks = CheckBox(value=False, label="Return xy, xz, yz stacks")
        self.vote_thr = SpinBox(value=2, min=1, max=3, label="Voxel Vote Thr Out of 3")
        self.allow_one_view = CheckBox(
            value=False, label="Permit detections found in 1 stack into consensus")
        self.zarr_dir = FileEdit(mode="d", nullable=True, label="Zarr Directory (optional)",
                                 tooltip="write results to <dir>/<image>_<model>.zarr; an "
                                         "interrupted run resumes, a finished one reopens")
        self.run_button = PushButton(text="Run 3D Inference")
        self.controls = RunControls()
        heading = {k: Label(value=f"<b>{k}</b>") for k in (
            "General", "2D Parameters", "Stack Parameters", "Ortho-plane Parameters (Optional)")}
        super().__init__(widgets=[
            heading["General"], self.image_layer, self.model, self.zarr_dir, self.use_gpu,
            self.use_quantized, self.multi_gpu,
            heading["2D Parameters"], self.downsampling, self.confidence_thr, self.center_thr,
            self.min_distance, self.fine_boundaries, self.semantic_only,
            heading["Stack Parameters"], self.median_size, self.min_size, self.min_extent,
            self.max_objects, self.plane,
            heading["Ortho-plane Parameters (Optional)"], self.orthoplane,
            self.return_stacks, self.vote_thr, self.allow_one_view,
            self.run_button, self.controls])
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
            label_divisor=int(self.max_objects.value), median_size=int(self.median_size.value),
            min_size=int(self.min_size.value), min_extent=int(self.min_extent.value),
            vote_thr=int(self.vote_thr.value), allow_one_view=bool(self.allow_one_view.value))

    def run(self, *_):
        """Check the inputs, then segment in a worker; returns the worker (or None)."""
        if self.controls.running:
            show_error("3D Inference is already running; wait or press Cancel")
            return None
        try:
            job, add = self._plan()
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            show_error(f"3D Inference: {friendly_error(exc)}")
            return None
        return self.controls.start(job, add, "3D Inference")

    def _plan(self):
        from empanada_infer import check_image
        from empanada_models import resolve_model_config

        layer = self.image_layer.value
        if layer is None:
            raise ValueError("choose an image layer (open a volume first)")
        params = self.params()
        if self.model.value is None:
            raise ValueError("no model is registered")
        config = resolve_model_config(self.model.value)
        volume = check_image(L.image_array(layer), ndim=3)
        device = device_for(self.use_gpu.value)
        quantized = bool(self.use_quantized.value)
        ortho = bool(self.orthoplane.value)
        plane = self.plane.value
        want_stacks = ortho and bool(self.return_stacks.value)
        multi = bool(self.multi_gpu.value) and gpu_count() > 1
        folder = self.zarr_dir.value
        store = None if folder in (None, "", Path("")) else store_path(folder, layer.name,
                                                                     config.name)
        record = {"model": config.name, "image": layer.name, "mode": "ortho" if ortho
                  else "stack", "plane": None if ortho else plane, "quantized": quantized,
                  **{k: getattr(params, k) for k in (
                      "downsampling", "confidence_thr", "center_thr", "min_distance",
                      "fine_boundaries", "semantic_only", "label_divisor", "median_size",
                      "min_size", "min_extent", "vote_thr", "allow_one_view")}}

        layer_name = layer.name
        scale, translate = np.array(layer.scale), np.array(layer.translate)

        def job(progress, should_stop):
            from empanada_infer import create_output, is_complete, mark_complete

            out = None
            if store is not None:
                out = create_output(store, volume.shape, np.uint32, name="panoptic",
                                    resume=True, params=record,
                                    slice_axis=None if ortho else {"xy": 0, "xz": 1,
                                                                   "yz": 2}[plane])
                if is_complete(out):  # a finished run with these settings: reopen it
                    return _finish(out, _open_stacks(store) if want_stacks else {}, True)
            seg = get_segmenter(config, params, device=device, quantized=quantized)
            stacks = {}
            if multi:
                from empanada_infer import ortho_merge, segment_stack_distributed

                run = dict(world_size=gpu_count(), quantized=quantized)
                if ortho:
                    stacks = {}
                    for i, name in enumerate(("xy", "xz", "yz")):
                        progress(i, 3)
                        if should_stop():
                            from empanada_infer import InferenceCancelled
                            raise InferenceCancelled("cancelled")
                        stacks[name] = segment_stack_distributed(
                            np.asarray(volume), config, params, axis=name, **run)
                    pan = ortho_merge(stacks, params, config, out=out,
                                      thing_list=seg.thing_list)
                else:
                    progress(0, 1)
                    pan = segment_stack_distributed(np.asarray(volume), config, params, out,
                                                    axis=plane, **run)
            elif ortho:
                result = seg.segment_orthoplanes(volume, out, return_stacks=want_stacks,
                                                 progress=progress, should_stop=should_stop)
                pan, stacks = result if want_stacks else (result, {})
            else:
                pan = seg.segment_stack(volume, out, axis=plane, progress=progress,
                                        should_stop=should_stop)
            if store is not None:
                for name, vol in (stacks.items() if want_stacks else ()):
                    arr = create_output(store, vol.shape, np.uint32, name=f"stack_{name}",
                                        overwrite=True)
                    arr[...] = vol
                    mark_complete(arr)
                    stacks[name] = arr
                mark_complete(out)
            return _finish(pan, stacks if want_stacks else {}, False)

        def _finish(pan, stacks, reused):
            # in the worker: class arrays and object counts never block the GUI thread
            if store is not None and len(config.labels) > 1:
                results = L.class_results_into(store, pan, config, params.label_divisor)
            else:
                results = L.class_results(pan, config, params.label_divisor)
            counts = ", ".join(f"{L.count_objects(a)} {n}" for n, a in results)
            # the layers are built here too (napari layers are Qt-free); the GUI thread
            # only adds them
            meta = {**record, "store": None if store is None else str(store)}
            new = [Labels(labels, name=L.result_name(layer_name, config.name, class_name),
                          scale=scale, translate=translate,
                          metadata={"empanada": {**meta, "class": class_name}})
                   for class_name, labels in results]
            new += [Labels(vol, name=L.result_name(layer_name, config.name, "stack", name),
                           scale=scale, translate=translate, visible=False,
                           metadata={"empanada": {**meta, "stack": name}})
                    for name, vol in stacks.items()]
            return {"layers": new, "counts": counts, "reused": reused}

        def add(result):
            for new in result["layers"]:
                self.viewer.add_layer(new)
            return result["counts"] + (" (finished run reopened from zarr)"
                                       if result["reused"] else "")

        return job, add


def _open_stacks(store):
    import zarr

    root = zarr.open_group(str(store), mode="r")
    return {name: root[f"stack_{name}"] for name in ("xy", "xz", "yz")
            if f"stack_{name}" in root}
