"""Finetune a model and Train a model: empanada-train runs in a worker thread.

Progress per iteration with an ETA, a live plot of the training loss and the
validation scores, Cancel (stops after the current iteration and keeps the
checkpoint, which the Resume box is then set to), and the new model is
registered and announced to every model list.
"""

from __future__ import annotations

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    PushButton,
    SpinBox,
    TextEdit,
)
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ._common import model_combo, path_of, refresh_on_model_change
from ._models import gpu_count, model_events
from ._runner import RunControls, friendly_error

__all__ = ["FinetuneWidget", "TrainWidget", "TrainingPlot", "cem_weights_path"]

FINETUNE_LAYERS = ["none", "stage4", "stage3", "stage2", "stage1", "all"]
ARCHS = ["PanopticDeepLabPR", "PanopticDeepLab", "PanopticBiFPNPR", "PanopticBiFPN"]
METRICS = ("f1_50", "pq", "semantic_iou")


class _PlotRelay(QObject):
    """Carries training reports from the worker thread to the plot (queued signal)."""

    reported = Signal(object)


class TrainingPlot(Container):
    """Training loss per iteration (log scale) and validation scores, drawn as they come."""

    def __init__(self):
        import pyqtgraph as pg

        super().__init__(labels=False)
        pg.setConfigOptions(antialias=True)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("#262930")  # napari's dark panel colour
        self.graphics.setMinimumHeight(300)
        self.loss_plot = self.graphics.addPlot(row=0, col=0, title="training loss")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.showGrid(x=True, y=True, alpha=0.2)
        self.loss_plot.setLabel("bottom", "iteration")
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#f0a040", width=1.5))
        self.eval_plot = self.graphics.addPlot(row=1, col=0, title="validation")
        self.eval_plot.setYRange(0, 1)
        self.eval_plot.showGrid(x=True, y=True, alpha=0.2)
        self.eval_plot.setLabel("bottom", "iteration")
        self.eval_plot.addLegend(offset=(5, 5))
        colours = {"f1_50": "#40c0f0", "pq": "#80e080", "semantic_iou": "#e080e0"}
        self.eval_curves = {
            m: self.eval_plot.plot([], [], pen=pg.mkPen(colours[m], width=1.5), symbol="o",
                                   symbolSize=5, symbolBrush=colours[m], name=m)
            for m in METRICS}
        self.native.layout().addWidget(self.graphics)
        self.clear()

    def clear(self):
        self.iterations, self.losses = [], []
        self.eval_iterations, self.scores = [], {m: [] for m in METRICS}
        self._redraw()

    def report(self, info):
        """One progress dict of empanada-train (``phase`` train / eval / start)."""
        phase = info.get("phase")
        if phase == "train":
            loss = info.get("loss", {}).get("total_loss")
            if loss is not None and loss > 0:
                self.iterations.append(int(info["iteration"]))
                self.losses.append(float(loss))
        elif phase == "eval":
            metrics = info.get("metrics") or {}
            self.eval_iterations.append(int(info["iteration"]))
            for m in METRICS:
                value = metrics.get(m)
                self.scores[m].append(float("nan") if value is None else float(value))
        self._redraw()

    def _redraw(self):
        self.loss_curve.setData(self.iterations, self.losses)
        for m, curve in self.eval_curves.items():
            curve.setData(self.eval_iterations, self.scores[m])


def cem_weights_path():
    """The CEM1.5M encoder weights in the download cache, or None when not downloaded."""
    try:
        from empanada_models import cached_download
        from empanada_train._config import CEM_RESNET50_URL
    except ImportError:  # pragma: no cover
        return None
    return cached_download(CEM_RESNET50_URL)


def _dir_widget(label, tooltip=""):
    return FileEdit(mode="d", label=label, tooltip=tooltip, nullable=True)


def _file_widget(label, filter, tooltip=""):
    return FileEdit(mode="r", filter=filter, label=label, tooltip=tooltip, nullable=True)


class _TrainingWidget(Container):
    """What both training widgets share: directories, run settings, progress and plot."""

    title = ""
    button_text = ""

    def __init__(self, viewer, name, head, tail):
        self.viewer = viewer
        self.model_name = LineEdit(value=name, label="Model name, no spaces")
        self.train_dir = _dir_widget("Train directory",
                                     "a dataset folder written by Save patches")
        self.eval_dir = _dir_widget("Validation directory (optional)",
                                    "may be the train directory")
        self.model_dir = _dir_widget("Model directory", "created if missing")
        self.iterations = SpinBox(value=100, min=1, max=100000, step=100, label="Iterations")
        self.patch_size = SpinBox(value=256, min=16, max=4096, step=16,
                                  label="Patch size in pixels",
                                  tooltip="a multiple of the model's padding factor (16 for "
                                          "Panoptic-DeepLab, 128 for Panoptic-BiFPN)")
        self.batch_size = SpinBox(value=16, min=1, max=512, label="Batch size",
                                  tooltip="at least this many images must be in the train "
                                          "directory")
        self.custom_config = _file_widget("Custom config (optional)", "*.yaml *.yml")
        self.resume = _file_widget("Resume from checkpoint (optional)", "*.pth.tar",
                                   "the <name>_checkpoint.pth.tar of a cancelled run")
        gpus = gpu_count()
        self.use_gpu = CheckBox(value=gpus > 0, enabled=gpus > 0, label="Use GPU")
        self.overwrite = CheckBox(value=False, label="Replace a model of the same name")
        self.run_button = PushButton(text=self.button_text)
        self.controls = RunControls()
        self.plot = TrainingPlot()
        super().__init__(widgets=[self.model_name, self.train_dir, self.eval_dir,
                                  self.model_dir, *head, self.iterations, self.patch_size,
                                  self.batch_size, *tail, self.custom_config, self.resume,
                                  self.use_gpu, self.overwrite, self.run_button,
                                  self.controls, self.plot])
        self.native.setMinimumWidth(460)
        self._relay = _PlotRelay()
        self._relay.reported.connect(self.plot.report)
        self.run_button.changed.connect(self.run)
        self.result = None

    def run(self, *_):
        """Check the inputs and start training in a worker; returns the worker or None."""
        if self.controls.running:
            show_error(f"{self.title} is already running; wait or press Cancel")
            return None
        try:
            call = self._call()
            name = str(self.model_name.value).strip()
            if not name or any(c.isspace() for c in name):
                raise ValueError("give the model a name without spaces")
            if path_of(self.train_dir) is None:
                raise ValueError("choose the train directory (a dataset written by Save "
                                 "patches)")
        except Exception as exc:  # noqa: BLE001 - every input problem becomes a notification
            show_error(f"{self.title}: {friendly_error(exc)}")
            return None
        relay = self._relay
        self.plot.clear()

        def job(progress, should_stop):
            def report(info):
                if info.get("phase") == "train":
                    progress(int(info["iteration"]), int(info["total"]))
                relay.reported.emit(info)

            return call(progress=report, should_stop=should_stop)

        return self.controls.start(job, self._done, self.title)

    def _common(self):
        """Keyword arguments and overrides both engines take."""
        device = "cuda" if self.use_gpu.value and gpu_count() else "cpu"
        return {"resume": path_of(self.resume),
                "overwrite": bool(self.overwrite.value)}, {"TRAIN.device": device}

    def _done(self, result):
        self.result = result
        if result.stopped:
            self.resume.value = str(result.checkpoint_path)
            text = (f"stopped at iteration {result.iterations} of {result.total_iterations}; "
                    f"checkpoint kept: {result.checkpoint_path} (Resume from checkpoint is "
                    f"set to it: press {self.button_text!r} to continue)")
            show_info(text)
            return f"stopped at iteration {result.iterations}"
        self.resume.line_edit.value = ""
        name = result.model_name
        model_events.changed.emit(name)
        best = ""
        if result.best:
            best = (f", best {result.best['metric']} {result.best['value']:.3f} at iteration "
                    f"{result.best['iteration']}")
        show_info(f"{self.title}: model {name!r} is registered and in every model list "
                  f"({result.model_path}){best}")
        return f"{name} registered{best}"


class FinetuneWidget(_TrainingWidget):
    """Finetune a registered model on an annotated dataset; the result is registered."""

    title = "Finetune a model"
    button_text = "Finetune model"

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.base_model = model_combo("Model to finetune")
        self.layers = ComboBox(choices=FINETUNE_LAYERS, value="none",
                               label="Finetunable layers",
                               tooltip="encoder stages that train as well (none: decoders "
                                       "and heads only; all: the whole model)")
        self.description = TextEdit(value="", label="Description (optional)")
        self.description.native.setMaximumHeight(50)
        super().__init__(napari_viewer, "FinetunedModel", [self.base_model, self.layers],
                         [self.description])
        refresh_on_model_change(self)

    def _call(self):
        from empanada_train import finetune

        if self.base_model.value is None:
            raise ValueError("no model to finetune is registered")
        kwargs, overrides = self._common()
        args = dict(
            name=str(self.model_name.value).strip(), config=path_of(
                self.custom_config), eval_dir=path_of(self.eval_dir),
            model_dir=path_of(self.model_dir), finetunable_layers=self.layers.value,
            iterations=int(self.iterations.value), batch_size=int(self.batch_size.value),
            patch_size=int(self.patch_size.value), overrides=overrides,
            description=str(self.description.value).strip() or None, **kwargs)
        base, train_dir = self.base_model.value, path_of(self.train_dir)

        def call(progress, should_stop):
            return finetune(base, train_dir, progress=progress, should_stop=should_stop,
                            **args)

        return call


class TrainWidget(_TrainingWidget):
    """Train a panoptic segmentation model from scratch (optionally from CEM weights)."""

    title = "Train a model"
    button_text = "Train model"

    def __init__(self, napari_viewer: napari.viewer.Viewer = None):
        self.labels_text = TextEdit(value="1,mito,instance", label="Dataset labels",
                                    tooltip="one class per line: <id>,<name>,<semantic|"
                                            "instance>, ids 1..n")
        self.labels_text.native.setMaximumHeight(60)
        self.label_divisor = SpinBox(value=1000, min=2, max=2**31 - 1, step=1000,
                                     label="Label divisor",
                                     tooltip="masks hold class x divisor + instance (several "
                                             "classes only)")
        self.arch = ComboBox(choices=ARCHS, value="PanopticDeepLabPR",
                             label="Model architecture",
                             tooltip="a MODEL block in the custom config overrides this")
        cem = cem_weights_path()
        self.use_cem = CheckBox(value=cem is not None, enabled=cem is not None,
                                label="Use CEM pretrained weights",
                                tooltip="initialise the ResNet-50 encoder from the CEM1.5M "
                                        "weights" + ("" if cem else " (not downloaded on "
                                                     "this computer; give a local file "
                                                     "below instead)"))
        self.pretrained_file = _file_widget("Pretrained encoder file (optional)",
                                            "*.pth *.pth.tar *.pt",
                                            "encoder weights on this computer (e.g. the "
                                            "CEM1.5M file downloaded elsewhere)")
        self.layers = ComboBox(choices=FINETUNE_LAYERS, value="all",
                               label="Finetunable layers",
                               tooltip="only with pretrained weights; otherwise all train")
        self.description = TextEdit(value="", label="Description")
        self.description.native.setMaximumHeight(50)
        super().__init__(napari_viewer, "NewModel",
                         [self.labels_text, self.label_divisor, self.arch, self.use_cem,
                          self.pretrained_file, self.layers], [self.description])
        self.iterations.value = 500

    def _call(self):
        import yaml

        from empanada_train import parse_label_spec, train

        spec = parse_label_spec(str(self.labels_text.value))
        kwargs, overrides = self._common()
        config = path_of(self.custom_config)
        custom = {}
        if config is not None:
            if not config.is_file():
                raise FileNotFoundError(f"custom config not found: {config}")
            custom = yaml.safe_load(config.read_text()) or {}
        overrides.update({
            "model_name": str(self.model_name.value).strip(),
            "TRAIN.train_dir": str(path_of(self.train_dir)),
            "TRAIN.iterations": int(self.iterations.value),
            "TRAIN.patch_size": int(self.patch_size.value),
            "TRAIN.batch_size": int(self.batch_size.value),
            "TRAIN.finetune_layer": self.layers.value,
            "DATASET.labels": list(spec.labels),
            "DATASET.class_names": dict(spec.class_names),
            "DATASET.thing_list": list(spec.thing_list),
        })
        if len(spec.labels) > 1:
            overrides["DATASET.label_divisor"] = int(self.label_divisor.value)
        if "MODEL" not in custom:  # a custom MODEL block wins over the combo box
            overrides["MODEL.arch"] = self.arch.value
        description = str(self.description.value).strip()
        if description:
            overrides["description"] = description
        for key, edit in (("EVAL.eval_dir", self.eval_dir), ("TRAIN.model_dir", self.model_dir)):
            if path_of(edit) is not None:
                overrides[key] = str(path_of(edit))
        local = path_of(self.pretrained_file)
        if local is not None:
            overrides["TRAIN.encoder_pretraining"] = str(local)
        elif self.use_cem.value:
            overrides["TRAIN.encoder_pretraining"] = str(cem_weights_path() or "cem")
        elif "encoder_pretraining" not in (custom.get("TRAIN") or {}):
            overrides["TRAIN.encoder_pretraining"] = None

        def call(progress, should_stop):
            return train(config, overrides=overrides, progress=progress,
                         should_stop=should_stop, **kwargs)

        return call
