"""Export Segmentations: labels layers to TIFF, one TIFF per slice, or zarr."""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    LineEdit,
    PushButton,
    RadioButtons,
    create_widget,
)
from napari.utils.notifications import show_error, show_info

from ._export import FORMATS, export_labels
from ._runner import RunControls, friendly_error

__all__ = ["ExportSegmentationsWidget"]


class ExportSegmentationsWidget(Container):
    """Write a labels layer as uint32 files that Fiji, Amira and Python read."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.labels_layer = create_widget(annotation=napari.layers.Labels,
                                          label="labels layer")
        self.fmt = RadioButtons(choices=list(FORMATS), value="TIFF (one file)",
                                label="Export as")
        self.folder = FileEdit(mode="d", label="Save directory")
        self.file_name = LineEdit(value="", label="Name (optional)",
                             tooltip="file or folder name; empty: the layer name")
        self.overwrite = CheckBox(value=False, label="Replace existing files")
        self.run_button = PushButton(text="Export")
        self.controls = RunControls()
        super().__init__(widgets=[self.labels_layer, self.fmt, self.folder, self.file_name,
                                  self.overwrite, self.run_button, self.controls])
        self.native.setMinimumWidth(460)
        self.run_button.changed.connect(self.run)

    def run(self, *_):
        layer = self.labels_layer.value
        folder = self.folder.value
        if layer is None:
            show_error("Export Segmentations: choose a labels layer")
            return None
        if folder is None or str(folder) in ("", "."):
            show_error("Export Segmentations: choose a save directory")
            return None
        fmt = FORMATS[self.fmt.value]
        name = (self.file_name.value or "").strip() or _safe(layer.name)
        names = (layer.metadata.get("empanada") or {}).get("source_files")
        overwrite = bool(self.overwrite.value)
        data = layer.data

        def job(progress, should_stop):
            progress(0, 1)
            paths = export_labels(data, Path(folder), name, fmt,
                                  slice_names=names if fmt == "slices" else None,
                                  overwrite=overwrite)
            progress(1, 1)
            return paths

        def done(paths):
            where = paths[0] if len(paths) == 1 else paths[0].parent
            show_info(f"exported {layer.name!r} to {where}")
            return f"saved {where.name}" + (f" ({len(paths)} files)" if len(paths) > 1 else "")

        try:
            return self.controls.start(job, done, "Export Segmentations")
        except Exception as exc:  # noqa: BLE001
            show_error(f"Export Segmentations: {friendly_error(exc)}")
            return None


def _safe(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
