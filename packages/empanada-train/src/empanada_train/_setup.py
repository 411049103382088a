"""What training and finetuning share: classes, devices and precision, datasets,
schedules, exports and registration, and the loop's run specification."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch

from empanada_models import quiet_torchscript

from ._config import (
    TrainConfigError,
)
from ._loop import (
    LoopSpec,
    TrainResult,
    finish_logs,
    load_best_weights,
    run_loop,
)
from ._losses import PanopticLoss

__all__ = ["Classes", "resolve_classes", "resolve_device", "resolve_precision",
           "cpu_has_native_bf16"]

logger = logging.getLogger("empanada_train")

_SINGLE = "SingleClassInstanceDataset"
_PANOPTIC = "PanopticDataset"


# --------------------------------------------------------------------------- classes


@dataclasses.dataclass(frozen=True)
class Classes:
    """The classes of a run, resolved from the DATASET block."""

    labels: tuple
    class_names: dict
    thing_list: tuple
    label_divisor: int
    dataset_class: str
    num_classes: int

    @property
    def single_class(self):
        return self.dataset_class == _SINGLE


def resolve_classes(cfg):
    """Check the DATASET block against the rest of the config; derive the class setup."""
    ds = cfg.dataset
    labels = tuple(sorted(ds["labels"] or ()))
    if not labels:
        raise TrainConfigError("`DATASET.labels` is missing; give the class ids (or a label "
                               "spec with --labels)")
    if list(labels) != list(range(1, len(labels) + 1)):
        raise TrainConfigError(
            f"`DATASET.labels` must be the class ids 1..n (each is the index of a logit "
            f"channel); got {list(labels)}"
        )
    thing_list = tuple(sorted(ds["thing_list"] or ()))
    extra = sorted(set(thing_list) - set(labels))
    if extra:
        raise TrainConfigError(f"`DATASET.thing_list` has classes {extra} that are not in "
                               f"`DATASET.labels` {list(labels)}")
    names = ds["class_names"] or {}
    if set(names) != set(labels):
        raise TrainConfigError(
            f"`DATASET.class_names` must name every class id in `DATASET.labels` and "
            f"nothing else; labels are {list(labels)}, class_names has {sorted(names)}"
        )
    params = cfg.train["dataset_params"]
    for key, mine in (("labels", labels), ("thing_list", thing_list)):
        if params[key] is not None and tuple(sorted(params[key])) != mine:
            raise TrainConfigError(
                f"`TRAIN.dataset_params.{key}` {params[key]} disagrees with "
                f"`DATASET.{key}` {list(mine)}; remove it (DATASET is used)"
            )
    divisor = ds["label_divisor"]
    if divisor is not None and params["label_divisor"] not in (None, divisor):
        raise TrainConfigError(
            f"`TRAIN.dataset_params.label_divisor` {params['label_divisor']} disagrees with "
            f"`DATASET.label_divisor` {divisor}"
        )
    if divisor is None:
        divisor = params["label_divisor"] or cfg.eval["engine_params"]["label_divisor"] or 1000
    single = labels == (1,) and thing_list == (1,)
    dataset_class = cfg.train["dataset_class"] or (_SINGLE if single else _PANOPTIC)
    if dataset_class == _SINGLE and not single:
        raise TrainConfigError(
            "`TRAIN.dataset_class` SingleClassInstanceDataset needs exactly one instance "
            f"class (labels [1], thing_list [1]); got labels {list(labels)}, thing_list "
            f"{list(thing_list)}: use PanopticDataset"
        )
    allowed = (1, 2) if len(labels) == 1 else (len(labels) + 1,)
    num_classes = cfg.model.get("num_classes")
    if num_classes is None:
        num_classes = 1 if len(labels) == 1 else len(labels) + 1
    elif num_classes not in allowed:
        raise TrainConfigError(
            f"`MODEL.num_classes` {num_classes} does not fit {len(labels)} classes: use "
            f"{' or '.join(map(str, allowed))} (or null to derive it)"
        )
    return Classes(labels, {int(k): v for k, v in names.items()}, thing_list, int(divisor),
                   dataset_class, int(num_classes))


# ------------------------------------------------------------------ shared set-up


def resolve_device(text):
    """``'auto'`` -> cuda when available, else cpu; other strings as torch devices."""
    from empanada_models import resolve_device as resolve

    try:
        return resolve(text, "TRAIN.device")
    except ValueError as exc:
        raise TrainConfigError(str(exc)) from None


def cpu_has_native_bf16():
    """True when oneDNN runs bf16 natively on this CPU (avx512_bf16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    except RuntimeError:
        return False


def resolve_precision(cfg, device):
    """'bf16' (or 'fp16' on GPUs without bf16) with TRAIN.amp, else 'fp32'.

    On CPUs ``TRAIN.amp_cpu`` decides: true, false, or 'auto' (the default):
    bf16 where the CPU computes it natively (:func:`cpu_has_native_bf16`).
    """
    if not cfg.train["amp"]:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    amp_cpu = cfg.train["amp_cpu"]
    if amp_cpu == "auto":
        amp_cpu = cpu_has_native_bf16()
    return "bf16" if amp_cpu else "fp32"


def _existing_dir(cfg, value, key):
    path = cfg.resolve_path(value)
    if path is None:
        raise TrainConfigError(f"`{key}` is missing; give the dataset folder")
    if not path.is_dir():
        raise FileNotFoundError(f"`{key}` folder not found: {path}")
    return path


def training_items(cfg):
    """``load_dataset`` items of TRAIN.train_dir and TRAIN.additional_train_dirs."""
    from ._store import load_dataset

    dirs = [_existing_dir(cfg, cfg.train["train_dir"], "TRAIN.train_dir")]
    for i, extra in enumerate(cfg.train["additional_train_dirs"] or ()):
        dirs.append(_existing_dir(cfg, extra, f"TRAIN.additional_train_dirs[{i}]"))
    items = load_dataset(dirs)
    batch = cfg.train["batch_size"]
    if len(items) < batch:
        raise ValueError(
            f"the training data ({', '.join(map(str, dirs))}) holds {len(items)} annotated "
            f"images, fewer than the batch size {batch}; annotate more images or lower the "
            f"batch size (TRAIN.batch_size, --batch-size)"
        )
    return items


def eval_items(cfg):
    from ._store import load_dataset

    if cfg.eval["eval_dir"] is None:
        return None
    return load_dataset(_existing_dir(cfg, cfg.eval["eval_dir"], "EVAL.eval_dir"))


def make_dataset(items, classes, transforms, cfg, norms):
    from ._dataset import PanopticDataset, SingleClassInstanceDataset

    params = cfg.train["dataset_params"]
    gamma = cfg.train["weight_gamma"]
    if gamma is None:
        gamma = params["weight_gamma"] if params["weight_gamma"] is not None else 0.0
    common = {"transforms": transforms, "heatmap_sigma": params["heatmap_sigma"],
              "weight_gamma": gamma, "norms": norms,
              "intensity_mode": params["intensity_mode"]}
    if classes.single_class:
        return SingleClassInstanceDataset(items, **common)
    dataset = PanopticDataset(items, classes.labels, classes.thing_list, classes.label_divisor,
                              **common)
    dataset.validate()
    return dataset


def padding_factor_of(arch, model_kwargs):
    """Multiple that input sizes need: the encoder stride (PDL) or 128 (BiFPN)."""
    from empanada_models import get_architecture

    return get_architecture(arch).input_multiple(model_kwargs)


def schedule(cfg, n_items):
    """Total iterations, validation and checkpoint cadence (all in iterations)."""
    t = cfg.train
    per_epoch = max(1, n_items // t["batch_size"])
    epochs = t["epochs"] or t["schedule_params"]["epochs"]
    if t["iterations"] is not None and epochs is not None:
        raise TrainConfigError("set either `TRAIN.iterations` or `TRAIN.epochs` "
                               "(`schedule_params.epochs`), not both")
    total = t["iterations"] or (epochs * per_epoch if epochs else 500)
    eval_every = cfg.eval["eval_every"] or (
        cfg.eval["epochs_per_eval"] * per_epoch if cfg.eval["epochs_per_eval"] else
        max(1, total // 5))
    save_every = t["save_every"] or (t["save_freq"] * per_epoch if t["save_freq"] else eval_every)
    return total, eval_every, save_every


def workers_for(cfg, device):
    workers = cfg.train["workers"]
    if workers is None:
        workers = 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    return workers


def criterion_from(cfg):
    p = cfg.train["criterion_params"]
    return PanopticLoss(ce_weight=p["ce_weight"], mse_weight=p["mse_weight"],
                        l1_weight=p["l1_weight"], pr_weight=p["pr_weight"],
                        top_k_percent=p["top_k_percent"])


def check_name_free(name, overwrite):
    import empanada_models as em

    if not overwrite and name in em.list_models():
        raise em.ModelExistsError(
            f"a model named {name!r} is already registered; choose another name, pass "
            f"overwrite=True (--overwrite), or register=False (--no-register)"
        )


def engine_params(cfg, classes):
    p = dict(cfg.eval["engine_params"])
    p["thing_list"] = list(classes.thing_list)
    p["label_divisor"] = classes.label_divisor
    return p


def finetune_block(cfg, classes):
    """The FINETUNE block of an exported model config (criterion, dataset, engine)."""
    c = cfg.train["criterion_params"]
    dataset_params = {"weight_gamma": cfg.train["weight_gamma"]
                      if cfg.train["weight_gamma"] is not None
                      else cfg.train["dataset_params"]["weight_gamma"]}
    if not classes.single_class:
        dataset_params.update(labels=list(classes.labels), thing_list=list(classes.thing_list),
                              label_divisor=classes.label_divisor)
    return {
        "criterion": "PanopticLoss",
        "criterion_params": {"ce_weight": c["ce_weight"], "mse_weight": c["mse_weight"],
                             "l1_weight": c["l1_weight"], "pr_weight": c["pr_weight"],
                             "top_k_percent": c["top_k_percent"]},
        "dataset_class": classes.dataset_class,
        "dataset_params": dataset_params,
        "engine": "PanopticDeepLabEngine",
        "engine_params": engine_params(cfg, classes),
    }


# ------------------------------------------------------------------------- exporting


def prepare_run(cfg, items, evals, classes, norms, name, patch):
    """Datasets, iteration schedule and output folder shared by training and finetuning."""
    from ._augment import default_train_augmentations

    transforms = default_train_augmentations(patch, **cfg.train["augmentations"])
    dataset = make_dataset(items, classes, transforms, cfg, norms)
    eval_dataset = make_dataset(evals, classes, None, cfg, norms) if evals else None
    model_dir = cfg.resolve_path(cfg.train["model_dir"]) or Path.cwd() / name
    model_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(cfg, model_dir / f"{name}_training.yaml")
    return dataset, eval_dataset, schedule(cfg, len(items)), model_dir


def int8_exporter():
    """``export_quantized_torchscript`` of empanada-models."""
    import empanada_models as em

    return em.export_quantized_torchscript


def calibration_batches(dataset, *, batch_size=4, n_images=32):
    """Normalised training crops for int8 calibration (the original used 32 batches)."""
    images = [dataset[i]["image"] for i in range(min(len(dataset), n_images))]
    return [torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def export_quantized(model, path, dataset, notes):
    exporter = int8_exporter()
    if exporter is None:
        notes.append("this empanada-models has no int8 export: no quantized model written")
        return None
    try:
        with quiet_torchscript():
            exporter(model, path, calibration_batches(dataset))
    except (RuntimeError, ValueError, TypeError) as exc:
        notes.append(f"int8 export failed ({exc}); only the float model was written")
        return None
    return Path(path)


def write_run_config(cfg, path):
    """Save the complete training config of a run (paths made absolute)."""
    resolved = {"TRAIN.model_dir": None if cfg.train["model_dir"] is None
                else os.fspath(cfg.resolve_path(cfg.train["model_dir"]))}
    for key, block, name in (("TRAIN.train_dir", cfg.train, "train_dir"),
                             ("EVAL.eval_dir", cfg.eval, "eval_dir"),
                             ("TRAIN.encoder_pretraining", cfg.train, "encoder_pretraining")):
        value = block[name]
        if value is not None and not str(value).startswith(("http://", "https://")) \
                and str(value).lower() not in ("cem", "cem1.5m", "cem1.5m_swav_resnet50"):
            resolved[key] = os.fspath(cfg.resolve_path(value))
    extra = cfg.train["additional_train_dirs"]
    if extra:
        resolved["TRAIN.additional_train_dirs"] = [os.fspath(cfg.resolve_path(d)) for d in extra]
    return dataclasses.replace(cfg.updated(resolved), source=None).to_yaml(path)


def write_model_config(path, data, name):
    import empanada_models as em

    config = em.ModelConfig.from_dict(data, name=name)
    return config.to_yaml(path)


def register_outputs(name, config_path, model_path, quantized_path, overwrite):
    import empanada_models as em

    return em.register_model(name, config_path, model_file=model_path,
                             quantized_file=quantized_path, overwrite=overwrite)


# ----------------------------------------------------------------------------- train


def loop_spec(kind, cfg, *, name, model_dir, model, device, datasets, schedule, classes, norms,
              padding_factor, extra):
    """The LoopSpec of a training or finetuning run (``kind``) from its resolved parts."""
    dataset, eval_dataset = datasets
    total, eval_every, save_every = schedule
    return LoopSpec(
        kind=kind, name=name, model_dir=model_dir, model=model, device=device,
        dataset=dataset, eval_dataset=eval_dataset, criterion=criterion_from(cfg),
        total_iterations=total, batch_size=cfg.train["batch_size"],
        workers=workers_for(cfg, device), seed=cfg.train["seed"] or 0,
        precision=resolve_precision(cfg, device), grad_clip=cfg.train["grad_clip"],
        eval_every=eval_every, save_every=save_every, best_metric=cfg.eval["best_metric"],
        padding_factor=padding_factor, labels=classes.labels, thing_list=classes.thing_list,
        class_names=classes.class_names, label_divisor=classes.label_divisor,
        single_class=classes.single_class, engine_params=engine_params(cfg, classes),
        optimizer_params=cfg.train["optimizer_params"],
        schedule_params=cfg.train["schedule_params"], config=cfg.to_dict(),
        norms=tuple(norms), extra=extra, channels_last=cfg.train["channels_last"],
        save_every_seconds=(None if cfg.train["save_every_minutes"] is None
                            else 60.0 * cfg.train["save_every_minutes"]),
    )


def run_and_collect(spec, cfg, *, resume, progress, should_stop, notes):
    """Run the loop of ``spec`` and gather a TrainResult; the best weights are loaded
    into ``spec.model`` unless the run was stopped (shared by train and finetune)."""
    resume = resume if resume is not None else cfg.resolve_path(cfg.train["resume"])
    done, history, best, metrics, stopped = run_loop(spec, resume=resume, progress=progress,
                                                     should_stop=should_stop)
    result = TrainResult(
        model_name=spec.name, model_dir=spec.model_dir, checkpoint_path=spec.checkpoint_path,
        log_path=spec.log_path, iterations=done, total_iterations=spec.total_iterations,
        history=history, best=best, metrics=metrics, stopped=stopped, notes=notes,
        best_checkpoint_path=spec.best_path if best is not None else None,
    )
    result.plot_path = finish_logs(spec, history, notes)
    if not stopped:
        result.exported_from = load_best_weights(spec, best, notes)
    return result
