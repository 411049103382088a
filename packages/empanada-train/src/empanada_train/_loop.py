"""The optimisation loop shared by training and finetuning.

Layer freezing, AdamW + OneCycleLR, the iteration loop (mixed precision,
gradient clipping, weighted sampling), validation with empanada-core
metrics, resumable checkpoints, and the loss/metric log (CSV, optional PNG).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from empanada_core.io import atomic_path, atomic_write_text

from ._config import FINETUNE_LAYERS

__all__ = ["TrainResult", "set_trainable_layers"]

logger = logging.getLogger("empanada_train")

_CHECKPOINT_FORMAT = "empanada-train-checkpoint"
_CHECKPOINT_VERSION = 1
_LOSS_COLUMNS = ("total_loss", "ce", "mse", "l1", "pointrend_ce")
_METRIC_COLUMNS = ("eval_loss", "semantic_iou", "f1_50", "pq")
_CSV_COLUMNS = ("iteration", "lr", *_LOSS_COLUMNS, *_METRIC_COLUMNS)


@dataclass
class TrainResult:
    """What a training or finetuning run produced.

    Attributes
    ----------
    model_name : str
        Name of the model (and of the registry entry when registered).
    model_dir : Path
        Folder holding every output file.
    model_path, config_path : Path or None
        The TorchScript model and its registry config (YAML); None when the
        run was stopped early.
    quantized_path : Path or None
        The int8 TorchScript model, when one was made.
    checkpoint_path : Path
        The last resumable checkpoint (``<name>_checkpoint.pth.tar``).
    best_checkpoint_path : Path or None
        Weights with the best validation score (``<name>_best.pth.tar``).
    iterations, total_iterations : int
        Iterations done (counting those before a resume) and planned.
    history : list of dict
        One row per iteration: ``iteration``, ``lr``, the loss terms and, at
        validation iterations, ``eval_loss``, ``semantic_iou``, ``f1_50``,
        ``pq``.
    best : dict or None
        ``{"metric", "value", "iteration"}`` of the best validation.
    metrics : dict or None
        The last validation's scores (with ``per_class`` for several classes).
    exported_from : str
        ``"best"`` or ``"last"``: which weights the exported model holds.
    log_path : Path
        The CSV log.
    plot_path : Path or None
        The PNG plot (None without matplotlib).
    registered : empanada_models.ModelConfig or None
        The registry entry, when registered.
    stopped : bool
        True when ``should_stop`` ended the run early (nothing exported;
        resume from ``checkpoint_path``).
    seconds : float
        Wall time of the run.
    notes : list of str
        Things the user should know (skipped plot, missing int8 support ...).
    """

    model_name: str
    model_dir: Path
    checkpoint_path: Path
    log_path: Path
    iterations: int
    total_iterations: int
    model_path: Path | None = None
    config_path: Path | None = None
    quantized_path: Path | None = None
    best_checkpoint_path: Path | None = None
    history: list = field(default_factory=list)
    best: dict | None = None
    metrics: dict | None = None
    exported_from: str = "last"
    plot_path: Path | None = None
    registered: object = None
    stopped: bool = False
    seconds: float = 0.0
    notes: list = field(default_factory=list)


# ------------------------------------------------------------------------- freezing


def _stage_names(model):
    encoder = getattr(model, "encoder", None)
    names = getattr(encoder, "stage_names", None) if encoder is not None else None
    if isinstance(names, (list, tuple)) and len(names) == 4:
        return [str(n) for n in names]
    params = [n for n, _ in model.named_parameters()]
    for candidate in (["layer1", "layer2", "layer3", "layer4"],
                      ["stage1", "stage2", "stage3", "stage4"]):
        if all(any(p.startswith(f"encoder.{c}.") for p in params) for c in candidate):
            return candidate
    raise ValueError(
        "cannot find the 4 encoder stages of this model (no encoder.layer1..4 or "
        "encoder.stage1..4 parameters); use finetunable layers 'none' or 'all'"
    )


def set_trainable_layers(model, layers="all"):
    """Freeze or unfreeze the encoder of a panoptic model; decoders and heads train.

    Parameters
    ----------
    model : nn.Module or torch.jit.ScriptModule
        A model from empanada-models (eager or TorchScript) with an
        ``encoder`` whose stages are ``layer1..4`` (ResNet) or ``stage1..4``
        (RegNet).
    layers : {'none', 'stage1', 'stage2', 'stage3', 'stage4', 'all'}
        ``'none'``: the encoder is frozen. ``'stageN'``: encoder stages N..4
        train, the stem and the stages before N stay frozen. ``'all'``:
        everything trains.

    Returns
    -------
    dict
        ``trainable`` and ``frozen`` parameter counts (elements) and
        ``trainable_names``, the names of the trainable parameters.

    Raises
    ------
    ValueError
        Unknown ``layers``, or stages asked for on an encoder without them.

    Notes
    -----
    Every parameter outside the frozen part gets ``requires_grad=True``, also
    the biases that BatchNorm folding creates without gradients. The original
    matched ``encoder.stageN`` names only, so for ResNet encoders (all its
    shipped models) every ``stageN`` option froze the whole encoder; here
    ``stageN`` means ``layerN`` for ResNets. BatchNorm layers whose
    parameters are all frozen are kept in eval mode during training (see
    :func:`train_mode`), so their running statistics are frozen too.

    Examples
    --------
    >>> from empanada_models import panoptic_deeplab
    >>> model = panoptic_deeplab(encoder="resnet18", decoder_channels=16,
    ...                          low_level_stages=[1], low_level_channels_project=[8])
    >>> info = set_trainable_layers(model, "stage4")
    >>> any(n.startswith("encoder.layer3.") for n in info["trainable_names"])
    False
    >>> any(n.startswith("encoder.layer4.") for n in info["trainable_names"])
    True
    """
    if layers not in FINETUNE_LAYERS:
        raise ValueError(f"`layers` must be one of {', '.join(FINETUNE_LAYERS)}; got {layers!r}")
    if layers in ("none", "all"):
        open_prefixes = () if layers == "none" else ("encoder.",)
    else:
        stages = _stage_names(model)
        first = int(layers[-1])
        open_prefixes = tuple(f"encoder.{s}." for s in stages[first - 1:])
    trainable = frozen = 0
    names = []
    for name, param in model.named_parameters():
        train_it = not name.startswith("encoder.") or name.startswith(open_prefixes)
        param.requires_grad_(train_it)
        if train_it:
            trainable += param.numel()
            names.append(name)
        else:
            frozen += param.numel()
    return {"trainable": trainable, "frozen": frozen, "trainable_names": names}


def _is_batchnorm(module):
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    return str(getattr(module, "original_name", "")).startswith(("BatchNorm", "SyncBatchNorm"))


def train_mode(model):
    """``model.train()``, but BatchNorm layers with only frozen parameters stay in eval."""
    model.train()
    for module in model.modules():
        if _is_batchnorm(module):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return model


# ------------------------------------------------------------------------- optimiser


def make_optimizer(model, *, lr, weight_decay, eps=1e-8):
    """AdamW over the trainable parameters; biases and norm weights get no decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith("bias") else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, eps=eps)


def make_scheduler(optimizer, *, total_iterations, max_lr, pct_start, div_factor,
                   final_div_factor):
    """OneCycleLR over ``total_iterations`` steps (stepped once per iteration)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=int(total_iterations), pct_start=pct_start,
        div_factor=div_factor, final_div_factor=final_div_factor)


# ------------------------------------------------------------------------ validation


def _pad_to(x, factor):
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % factor, 0, (-h) % factor))


def _stack_padded(arrays):
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    big = max((int(a.max()) for a in arrays if a.size), default=0) > np.iinfo(np.uint32).max
    out = np.zeros((len(arrays), h, w), np.uint64 if big else np.uint32)
    for i, a in enumerate(arrays):
        out[i, :a.shape[0], :a.shape[1]] = a
    return out


def score_panoptic(gts, preds, *, labels, thing_list, label_divisor, single_class,
                   class_names=None):
    """Semantic IoU, F1 at IoU 0.5 and PQ of predicted vs true label images.

    The images are scored together (true positives, false positives and
    false negatives are pooled over the images before the ratios). With
    several classes each score is the mean over the classes present in
    either the truth or the prediction (F1 over the instance classes only),
    and ``per_class`` holds each class's scores.
    """
    import empanada_core as ec

    gt = _stack_padded(gts)
    pred = _stack_padded(preds)
    if single_class:
        rep = ec.evaluate_segmentation(gt, pred, iou_thresholds=0.5,
                                       per_slice=True)["per_slice"]["pooled"]
        return {"semantic_iou": rep["semantic_iou"], "f1_50": rep["instance"]["0.5"]["f1"],
                "pq": rep["panoptic"]["pq"]}
    report = ec.evaluate_segmentation(gt, pred, iou_thresholds=0.5, label_divisor=label_divisor,
                                      per_slice=True)
    per_class = {}
    for c in labels:
        block = report.get("classes", {}).get(str(c))
        if block is None:
            continue
        pooled = block["per_slice"]["pooled"]
        name = (class_names or {}).get(c, str(c))
        per_class[name] = {
            "semantic_iou": pooled["semantic_iou"],
            "f1_50": pooled["instance"]["0.5"]["f1"] if c in thing_list else None,
            "pq": pooled["panoptic"]["pq"],
        }

    def mean(key):
        values = [v[key] for v in per_class.values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    return {"semantic_iou": mean("semantic_iou"), "f1_50": mean("f1_50"), "pq": mean("pq"),
            "per_class": per_class}


def evaluate_model(model, dataset, *, padding_factor, labels, thing_list, label_divisor,
                   single_class, engine_params, device, criterion=None, autocast=None,
                   class_names=None, memory_format=torch.contiguous_format):
    """Run ``model`` (eval mode) over ``dataset`` and score its panoptic output.

    Every image is zero-padded (after normalisation, as inference does) to a
    multiple of ``padding_factor``, the outputs are cropped back, turned into
    a panoptic segmentation by :func:`empanada_core.panoptic_postprocess`
    with the original validation settings (heads at full resolution) and
    compared with the true masks by :func:`score_panoptic`. Returns the
    scores and, with ``criterion``, ``eval_loss`` (without the PointRend
    term).
    """
    import empanada_core as ec

    model.eval()
    preds, gts, losses = [], [], []
    context = autocast if autocast is not None else contextlib.nullcontext
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            image = item["image"][None].to(device)
            h, w = image.shape[-2:]
            padded = _pad_to(image, padding_factor).contiguous(memory_format=memory_format)
            with context():
                out = model(padded, 2, True)
            logits = out["sem_logits"].float()[..., :h, :w]
            ctr = out["ctr_hmp"].float()[..., :h, :w]
            offsets = out["offsets"].float()[..., :h, :w]
            if criterion is not None:
                target = {k: item[k][None].to(device) for k in ("sem", "ctr_hmp", "offsets")}
                losses.append(criterion({"sem_logits": logits, "ctr_hmp": ctr,
                                         "offsets": offsets}, target)[1]["total_loss"])
            prob = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
            pan = ec.panoptic_postprocess(
                prob[0].cpu().numpy(), ctr[0, 0].cpu().numpy(), offsets[0].cpu().numpy(),
                thing_list=tuple(thing_list), label_divisor=label_divisor,
                confidence_thr=engine_params["confidence_thr"],
                center_thr=engine_params["nms_threshold"], nms_kernel=engine_params["nms_kernel"],
                center_stride=1, stuff_area=engine_params["stuff_area"], on_overflow="drop",
            )
            preds.append(np.asarray(pan, np.int64))
            gts.append(item["mask"].numpy().astype(np.int64))
    metrics = score_panoptic(gts, preds, labels=labels, thing_list=thing_list,
                             label_divisor=label_divisor, single_class=single_class,
                             class_names=class_names)
    if losses:
        metrics["eval_loss"] = float(np.mean(losses))
    return metrics


# ----------------------------------------------------------------------- file output


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file next to ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _atomic_text(path, text):
    return atomic_write_text(path, text)


def write_log_csv(history, path):
    """Write the per-iteration history as CSV (blank cells where a value is absent)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else
                         (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                         for c in _CSV_COLUMNS])
    return _atomic_text(path, buffer.getvalue())


def write_log_plot(history, path, title=""):
    """Plot the losses and validation scores to a PNG; None if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    its = np.array([r["iteration"] for r in history])
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for key in _LOSS_COLUMNS:
        values = np.array([np.nan if r.get(key) is None else r[key] for r in history], float)
        if np.isfinite(values).any():
            ax_loss.plot(its, _ema(values), label=key)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_title("training loss (EMA 0.98)")
    ax_loss.legend(fontsize="small")
    plotted = False
    for key in _METRIC_COLUMNS[1:]:
        pts = [(r["iteration"], r[key]) for r in history if r.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax_metric.plot(x, y, marker="o", label=key)
            plotted = True
    ax_metric.set_xlabel("iteration")
    ax_metric.set_ylim(0, 1)
    ax_metric.set_title("validation")
    if plotted:
        ax_metric.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _ema(values, beta=0.98):
    out = np.empty_like(values)
    running = np.nan
    for i, v in enumerate(values):
        if np.isfinite(v):
            running = v if not np.isfinite(running) else beta * running + (1 - beta) * v
        out[i] = running
    return out


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopSpec:
    """Everything the optimisation loop needs (built by ``train`` and ``finetune``)."""

    kind: str
    name: str
    model_dir: Path
    model: object
    device: torch.device
    dataset: object
    eval_dataset: object
    criterion: nn.Module
    total_iterations: int
    batch_size: int
    workers: int
    seed: int
    precision: str  # "fp32", "bf16" or "fp16"
    grad_clip: float | None
    eval_every: int
    save_every: int
    best_metric: str
    padding_factor: int
    labels: tuple
    thing_list: tuple
    class_names: dict
    label_divisor: int
    single_class: bool
    engine_params: dict
    optimizer_params: dict
    schedule_params: dict
    config: dict
    norms: tuple
    extra: dict = field(default_factory=dict)
    channels_last: bool = True
    save_every_seconds: float | None = None

    @property
    def checkpoint_path(self):
        return self.model_dir / f"{self.name}_checkpoint.pth.tar"

    @property
    def best_path(self):
        return self.model_dir / f"{self.name}_best.pth.tar"

    @property
    def log_path(self):
        return self.model_dir / f"{self.name}_log.csv"

    @property
    def plot_path(self):
        return self.model_dir / f"{self.name}_log.png"


def _autocast(spec):
    if spec.precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float16

    def context():
        return torch.autocast(spec.device.type, dtype=dtype)
    return context


def _rng_state(generator):
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, generator):
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # another GPU count than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path):
    """Read a checkpoint written by :func:`train` or :func:`finetune`.

    Parameters
    ----------
    path : path-like
        A ``<name>_checkpoint.pth.tar`` (resumable) or ``<name>_best.pth.tar``.

    Returns
    -------
    dict
        ``model`` (state dict), ``iteration``, ``history``, ``best``, ``norms``,
        and for resumable checkpoints also ``optimizer``, ``scheduler``,
        ``scaler``, ``rng``, ``total_iterations`` and ``config``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a checkpoint of empanada-train, or holds objects that
        ``torch.load(weights_only=True)`` refuses.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise ValueError(f"{path} is not a readable training checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an empanada-train checkpoint (written by train or "
                         f"finetune)")
    return state


def _save_checkpoint(spec, iteration, optimizer, scheduler, scaler, generator, history, best):
    return atomic_torch_save({
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "kind": spec.kind,
        "model_name": spec.name,
        "iteration": iteration,
        "total_iterations": spec.total_iterations,
        "model": spec.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(generator),
        "history": history,
        "best": best,
        "config": spec.config,
        "norms": {"mean": float(spec.norms[0]), "std": float(spec.norms[1])},
        **spec.extra,
    }, spec.checkpoint_path)


def _make_loader(spec, start):
    """Batches ``start``, ``start + 1``, ... of the run's :class:`SampleStream`.

    Which examples and augmentations each iteration gets depends only on the
    seed and the iteration, so a resumed run sees the same batches as an
    uninterrupted one. The loader has its own generator (worker seeds) so
    it never draws from torch's global one, which the checkpoint restores
    for dropout and PointRend's point sampling.
    """
    from ._dataset import SampleStream

    stream = SampleStream(spec.dataset, spec.batch_size, seed=spec.seed, start=start,
                          stop=spec.total_iterations)
    return torch.utils.data.DataLoader(
        spec.dataset, batch_sampler=stream, num_workers=spec.workers,
        pin_memory=spec.device.type == "cuda", generator=torch.Generator().manual_seed(spec.seed),
    )


def _float_outputs(out):
    """The network outputs in fp32, so the loss is computed in fp32 under autocast."""
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in out.items()}


def _memory_format(spec):
    return torch.channels_last if spec.channels_last else torch.contiguous_format


def _is_better(value, best):
    # ties go to the later (longer trained) weights
    return value is not None and (best is None or value >= best["value"])


def run_loop(spec, *, resume=None, progress=None, should_stop=None):
    """Optimise ``spec.model`` for ``spec.total_iterations`` iterations.

    Returns ``(iterations_done, history, best, last_metrics, stopped)``.
    The model is left in eval mode holding the last weights.
    """
    model, device = spec.model, spec.device
    memory_format = _memory_format(spec)
    # channels_last: about 3x faster convolutions on CPU (oneDNN) and faster on GPUs
    model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, lr=spec.schedule_params["max_lr"],
                               weight_decay=spec.optimizer_params["weight_decay"],
                               eps=spec.optimizer_params["eps"])
    scheduler = make_scheduler(optimizer, total_iterations=spec.total_iterations,
                               max_lr=spec.schedule_params["max_lr"],
                               pct_start=spec.schedule_params["pct_start"],
                               div_factor=spec.schedule_params["div_factor"],
                               final_div_factor=spec.schedule_params["final_div_factor"])
    scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")
    # kept in checkpoints for their format (version 1); the batches come from SampleStream
    generator = torch.Generator()
    generator.manual_seed(spec.seed)
    iteration, history, best, metrics = 0, [], None, None
    if resume is not None:
        state = load_checkpoint(resume)
        if state["total_iterations"] != spec.total_iterations:
            raise ValueError(
                f"the checkpoint {resume} was made for {state['total_iterations']} iterations, "
                f"this run plans {spec.total_iterations}; resume with the same iteration count"
            )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"the checkpoint {resume} does not fit this model: "
                             f"{str(exc).splitlines()[0]}") from exc
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:
            raise ValueError(f"the checkpoint {resume} was made with other trainable layers: "
                             f"{exc}") from exc
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], generator)
        iteration = int(state["iteration"])
        history = list(state["history"])
        best = state["best"]
        logger.info("resumed %s at iteration %d of %d", spec.name, iteration,
                    spec.total_iterations)

    loader = _make_loader(spec, iteration)
    autocast = _autocast(spec)
    trainable = [p for p in model.parameters() if p.requires_grad]
    stopped = False
    batches = iter(loader)
    last_save = time.monotonic()
    train_mode(model)
    if progress is not None:
        progress({"phase": "start", "iteration": iteration, "total": spec.total_iterations})
    while iteration < spec.total_iterations:
        batch = next(batches)
        x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        target = {k: batch[k].to(device, non_blocking=True) for k in ("sem", "ctr_hmp", "offsets")}
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = model(x, 2, True)
        # the weights stay fp32 (autocast casts copies); the loss is computed in fp32
        loss, parts = spec.criterion(_float_outputs(out), target)
        if not math.isfinite(parts["total_loss"]):
            raise FloatingPointError(
                f"the loss became {parts['total_loss']} at iteration {iteration + 1}; lower "
                f"TRAIN.schedule_params.max_lr or check the training data"
            )
        scaler.scale(loss).backward()
        if spec.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, spec.grad_clip)
        lr = float(optimizer.param_groups[0]["lr"])
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        iteration += 1
        row = {"iteration": iteration, "lr": lr, **parts}
        if progress is not None:
            progress({"phase": "train", "iteration": iteration, "total": spec.total_iterations,
                      "loss": dict(parts), "lr": lr})
        last = iteration == spec.total_iterations
        if spec.eval_dataset is not None and (iteration % spec.eval_every == 0 or last):
            metrics = evaluate_model(
                model, spec.eval_dataset, padding_factor=spec.padding_factor,
                labels=spec.labels, thing_list=spec.thing_list,
                label_divisor=spec.label_divisor, single_class=spec.single_class,
                engine_params=spec.engine_params, device=device, criterion=spec.criterion,
                # fp32: bf16 centre heatmaps have plateaus that split objects in the
                # postprocessing (F1 0.81 -> 0.64 on MitoLite_v1's monitoring images)
                autocast=None, class_names=spec.class_names, memory_format=memory_format)
            row.update({k: metrics.get(k) for k in _METRIC_COLUMNS})
            name = spec.best_metric
            if metrics.get(name) is None:  # e.g. F1 without instance classes
                name = "pq"
            value = metrics.get(name)
            if _is_better(value, best):
                best = {"metric": name, "value": float(value), "iteration": iteration}
                atomic_torch_save({"format": _CHECKPOINT_FORMAT, "kind": "best",
                                   "model_name": spec.name, "iteration": iteration,
                                   "best": best, "model": model.state_dict(),
                                   "norms": {"mean": float(spec.norms[0]),
                                             "std": float(spec.norms[1])}},
                                  spec.best_path)
            if progress is not None:
                progress({"phase": "eval", "iteration": iteration,
                          "total": spec.total_iterations, "metrics": metrics,
                          "best": dict(best) if best else None})
            train_mode(model)
        history.append(row)
        stop = bool(should_stop()) if should_stop is not None else False
        due = (spec.save_every_seconds is not None
               and time.monotonic() - last_save >= spec.save_every_seconds)
        if iteration % spec.save_every == 0 or last or stop or due:
            _save_checkpoint(spec, iteration, optimizer, scheduler, scaler, generator, history,
                             best)
            write_log_csv(history, spec.log_path)
            last_save = time.monotonic()
        if stop and not last:
            stopped = True
            logger.info("stopped at iteration %d; resume from %s", iteration,
                        spec.checkpoint_path)
            break
    del batches  # ends the loader's worker processes
    model.to(memory_format=torch.contiguous_format)  # exports and checkpoints as before
    model.eval()
    return iteration, history, best, metrics, stopped


def finish_logs(spec, history, notes):
    """Write the CSV and the PNG plot; returns the plot path or None (noted)."""
    write_log_csv(history, spec.log_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plot = write_log_plot(history, spec.plot_path, title=spec.name)
    except Exception as exc:  # a plot must never fail a finished run
        notes.append(f"the PNG plot could not be drawn ({type(exc).__name__}: {exc})")
        return None
    if plot is None:
        notes.append("matplotlib is not installed: no PNG plot of the log was written "
                     f"(the CSV {spec.log_path.name} has every value)")
    return plot


def load_best_weights(spec, best, notes):
    """Load the best checkpoint's weights into ``spec.model``; returns 'best' or 'last'."""
    if best is None or not spec.best_path.is_file():
        return "last"
    state = torch.load(spec.best_path, map_location="cpu", weights_only=True)
    spec.model.load_state_dict(state["model"])
    notes.append(f"exported the weights of iteration {best['iteration']} "
                 f"(best {best['metric']} = {best['value']:.4f})")
    return "best"


def timer():
    """Seconds since the call, as a closure."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
