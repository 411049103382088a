"""Model management: register, inspect, export, import and archive models.

Every change is announced on ``model_events.changed``, which refreshes the model
lists of all open widgets at once.
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import CheckBox, Container, FileEdit, LineEdit, PushButton, TextEdit
from napari.utils.notifications import show_error, show_info

from ._common import model_combo, refresh_on_model_change
from ._models import model_events
from ._runner import RunControls, friendly_error

__all__ = ["RegisterModelWidget", "ModelInfoWidget", "ExportModelWidget",
           "ImportModelWidget", "ArchiveModelWidget", "format_model_info"]


def _text(value):
    return "" if value is None else str(value).strip()


class RegisterModelWidget(Container):
    """Register a model from its config (.yaml) and, optionally, weights (path or URL)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.model_name = LineEdit(value="", label="Model name",
                                   tooltip="letters, digits, '.', '_', '+', '-'; no spaces")
        self.config_file = FileEdit(mode="r", filter="*.yaml *.yml", label="Model config file")
        self.model_file = LineEdit(value="", label="Model file (optional)",
                                   tooltip="path or http(s) URL of the TorchScript .pth; "
                                           "empty: the one the config names")
        self.quantized_file = LineEdit(value="", label="Quantized model file (optional)")
        self.overwrite = CheckBox(value=False, label="Replace a model of the same name")
        self.run_button = PushButton(text="Register model")
        super().__init__(widgets=[self.model_name, self.config_file, self.model_file,
                                  self.quantized_file, self.overwrite, self.run_button])
        self.native.setMinimumWidth(460)
        self.run_button.changed.connect(self.run)

    def run(self, *_):
        import empanada_models as em

        try:
            name = _text(self.model_name.value)
            if not name:
                raise ValueError("give the model a name")
            config = self.config_file.value
            if config is None or not Path(config).is_file():
                raise FileNotFoundError(f"choose the model's config .yaml (got {config})")
            cfg = em.register_model(name, Path(config), _text(self.model_file.value) or None,
                                    _text(self.quantized_file.value) or None,
                                    overwrite=bool(self.overwrite.value))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(f"Register a model: {friendly_error(exc)}")
            return None
        model_events.changed.emit(cfg.name)
        show_info(f"registered model {cfg.name!r}; it is in every model list now")
        return cfg


def format_model_info(info):
    """The text shown by Get model info, from :func:`empanada_models.model_info`."""
    lines = [f"{info['name']} ({info['origin']})", ""]
    lines.append("classes: " + ", ".join(f"{c['id']} {c['name']} ({c['kind']})"
                                         for c in info["classes"]))
    first = info["classes"][0]["id"] if info["classes"] else 1
    lines.append(f"segmentation results: ids class x 'Max objects per class' + n "
                 f"({first * 10000 + 1}, {first * 10000 + 2}, ... with the default 10000)")
    lines.append(f"training data label divisor: {info['label_divisor']}")
    lines.append(f"architecture: {info.get('arch') or 'unknown'}"
                 + (f", {info['num_params'] / 1e6:.1f} M parameters"
                    if info.get("num_params") else ""))
    lines.append("quantized weights: " + ("yes" if info.get("model_quantized") else "no"))
    lines.append("weights: " + ("on this computer" if info.get("cached")
                                else "downloaded on first use"))
    lines += ["", *info.get("finetune_hints", [])]
    if info.get("weights_error"):
        lines += ["", f"problem with the weights: {info['weights_error']}"]
    if info.get("description"):
        lines += ["", info["description"]]
    if info.get("config_path"):
        lines += ["", f"config: {info['config_path']}"]
    return "\n".join(lines)


class ModelInfoWidget(Container):
    """Show what a registered model segments, its classes, label divisor and patch sizes."""

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.model = model_combo("Model name")
        self.info = TextEdit(value="", label="")
        self.info.native.setReadOnly(True)
        self.info.native.setMinimumHeight(420)
        self.run_button = PushButton(text="Get info")
        super().__init__(widgets=[self.model, self.run_button, self.info])
        self.native.setMinimumWidth(460)
        self.run_button.changed.connect(self.run)
        self.model.changed.connect(self.run)
        refresh_on_model_change(self)
        self.run()

    def run(self, *_):
        import empanada_models as em

        if self.model.value is None:
            self.info.value = "no model is registered"
            return None
        try:
            text = format_model_info(em.model_info(self.model.value))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(f"Get model info: {friendly_error(exc)}")
            return None
        self.info.value = text
        return text


class ExportModelWidget(Container):
    """Write a model and its config into one ``.empanada`` file to share it."""

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.model = model_combo("Model name")
        self.export_dir = FileEdit(mode="d", label="Export directory")
        self.overwrite = CheckBox(value=False, label="Replace an existing file")
        self.run_button = PushButton(text="Export model")
        self.controls = RunControls()
        super().__init__(widgets=[self.model, self.export_dir, self.overwrite,
                                  self.run_button, self.controls])
        self.native.setMinimumWidth(460)
        self.run_button.changed.connect(self.run)
        refresh_on_model_change(self)

    def run(self, *_):
        import empanada_models as em

        name, folder = self.model.value, self.export_dir.value
        if name is None or folder is None or not Path(folder).is_dir():
            show_error(f"Export a model: choose a model and an existing folder (got {folder})")
            return None
        overwrite = bool(self.overwrite.value)

        def job(progress, should_stop):
            def downloaded(done, total):
                if total:
                    progress(done, total)
            return em.export_bundle(name, Path(folder), overwrite=overwrite,
                                    progress=downloaded)

        def done(path):
            show_info(f"exported {name!r} to {path}")
            return Path(path).name

        return self.controls.start(job, done, "Export a model")


class ImportModelWidget(Container):
    """Register the model inside a ``.empanada`` file."""

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.bundle = FileEdit(mode="r", filter="*.empanada", label="Model file (.empanada)")
        self.model_name = LineEdit(value="", label="Model name (optional)",
                                   tooltip="empty: the file name without .empanada")
        self.overwrite = CheckBox(value=False, label="Replace a model of the same name")
        self.run_button = PushButton(text="Import model")
        super().__init__(widgets=[self.bundle, self.model_name, self.overwrite,
                                  self.run_button])
        self.native.setMinimumWidth(460)
        self.run_button.changed.connect(self.run)

    def run(self, *_):
        import empanada_models as em

        try:
            path = self.bundle.value
            if path is None or not Path(path).is_file():
                raise FileNotFoundError(f"choose a .empanada file (got {path})")
            cfg = em.import_bundle(Path(path), name=_text(self.model_name.value) or None,
                                   force=bool(self.overwrite.value))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(f"Import a model: {friendly_error(exc)}")
            return None
        model_events.changed.emit(cfg.name)
        show_info(f"imported model {cfg.name!r}; it is in every model list now")
        return cfg


class ArchiveModelWidget(Container):
    """Take a user model out of the model lists (its files move to ~/.empanada/archived)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.model = model_combo("Model name")
        self.run_button = PushButton(text="Archive model")
        super().__init__(widgets=[self.model, self.run_button])
        self.native.setMinimumWidth(460)
        self.run_button.changed.connect(self.run)
        refresh_on_model_change(self)

    def run(self, *_):
        import empanada_models as em

        name = self.model.value
        try:
            if name is None:
                raise ValueError("choose a model")
            dest = em.archive_model(name)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(f"Archive a model: {friendly_error(exc)}")
            return None
        model_events.changed.emit(name)
        show_info(f"archived {name!r} to {dest}; register its config again to restore it")
        return dest


