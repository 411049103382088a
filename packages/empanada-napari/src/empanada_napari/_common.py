"""Widget pieces shared by the inference widgets."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox

from ._models import default_model, gpu_count, has_quantized, model_events, model_names

DOWNSAMPLING = [1, 2, 4, 8, 16, 32, 64]


def model_combo(label="model"):
    combo = ComboBox(choices=model_names, label=label,
                     tooltip="registered model (the list follows the registry live)")
    names = model_names()
    if default_model() in names:
        combo.value = default_model()
    return combo


def refresh_on_model_change(container):
    """Re-read model lists when a model is registered, imported or archived."""
    def refresh(_name=None):
        try:
            container.reset_choices()
        except RuntimeError:  # the widget was closed and its Qt objects deleted
            model_events.changed.disconnect(refresh)

    model_events.changed.connect(refresh)
    container.native.destroyed.connect(lambda *_: _disconnect(refresh))
    return refresh


def _disconnect(callback):
    try:
        model_events.changed.disconnect(callback)
    except (ValueError, RuntimeError):
        pass


def two_d_widgets():
    """The 2D parameters of both inference widgets, with the spec's labels and defaults."""
    return dict(
        downsampling=ComboBox(choices=DOWNSAMPLING, value=1, label="Image Downsampling",
                              tooltip="shrink the image by this factor before the network; "
                                      "PointRend renders the result back to full size"),
        confidence_thr=FloatSpinBox(value=0.5, min=0.05, max=0.95, step=0.05,
                                    label="Segmentation Confidence Thr",
                                    tooltip="minimum foreground probability (binary models)"),
        center_thr=FloatSpinBox(value=0.1, min=0.01, max=0.95, step=0.05,
                                label="Center Confidence Thr",
                                tooltip="minimum centre-heatmap peak of an object; higher: "
                                        "fewer, larger objects"),
        min_distance=SpinBox(value=3, min=1, max=35, label="Centers Min Distance",
                             tooltip="centre suppression window; larger merges centres "
                                     "that are close (long objects split less)"),
        fine_boundaries=CheckBox(value=False, label="Fine boundaries",
                                 tooltip="group pixels at full resolution (4x memory)"),
        semantic_only=CheckBox(value=False, label="Semantic Only",
                               tooltip="one region per class, no instances"),
    )


def device_widgets():
    gpus = gpu_count()
    use_gpu = CheckBox(value=gpus > 0, enabled=gpus > 0, label="Use GPU",
                       tooltip="run on the GPU" if gpus else "no CUDA GPU found: runs on CPU")
    quantized = CheckBox(value=False, label="Use quantized model",
                         tooltip="int8 weights on the CPU (only models that have them)")
    return use_gpu, quantized


def sync_quantized(model, use_gpu, quantized):
    """Enable the quantized box only for CPU runs of models with int8 weights."""
    def update(*_):
        ok = not use_gpu.value and has_quantized(model.value)
        quantized.enabled = ok
        if not ok:
            quantized.value = False

    model.changed.connect(update)
    use_gpu.changed.connect(update)
    update()
    return update


def path_of(edit):
    """The path typed or chosen in a FileEdit, or None when it is empty (the FileEdit's
    ``value`` would be the current folder then)."""
    from pathlib import Path

    text = str(edit.line_edit.value).strip()
    return Path(text).expanduser() if text else None


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 (``viewer.camera``,
    deprecated there, before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
