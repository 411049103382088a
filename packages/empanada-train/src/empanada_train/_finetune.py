"""Finetune a registered model on new annotations (the "Finetune a model" module).

The model keeps its classes, normalisation and architecture; its weights are
loaded from the registry (any registered model, TorchScript included) and
trained further with the loss, dataset and engine settings of its config's
``FINETUNE`` block.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from empanada_models import config_architecture, quiet_torchscript, save_torchscript

from ._config import (
    TrainConfig,
    TrainConfigError,
    _nest,
    _read_yaml,
    check_model_name,
    merge_configs,
)
from ._loop import (
    set_trainable_layers,
    timer,
)
from ._setup import (
    check_name_free,
    eval_items,
    export_quantized,
    finetune_block,
    loop_spec,
    prepare_run,
    register_outputs,
    resolve_classes,
    resolve_device,
    run_and_collect,
    training_items,
    write_model_config,
)

__all__ = ["finetune", "trainable_model"]

logger = logging.getLogger("empanada_train")

_CRITERION_KEYS = ("ce_weight", "mse_weight", "l1_weight", "pr_weight", "top_k_percent")
_ENGINE_KEYS = ("stuff_area", "nms_threshold", "nms_kernel", "confidence_thr")


def trainable_model(config, *, device="cpu"):
    """The model of a registry config, ready to finetune.

    Parameters
    ----------
    config : empanada_models.ModelConfig
        A registered model's config.
    device : str or torch.device, optional

    Returns
    -------
    model : nn.Module or torch.jit.ScriptModule
        When the config has a ``MODEL`` block (configs written by
        empanada-train and the built-in ones), the eager architecture it
        describes, BatchNorm folded as in the exported file, holding the
        file's weights; it can be exported again and quantized. Otherwise
        the TorchScript module itself (as the original did), which also
        trains: in training mode it returns the PointRend point outputs.
    kind : {'eager', 'torchscript'}
    """
    import empanada_models as em

    script = em.load_model(config, device=device)
    arch = config_architecture(config)
    if arch is not None and config.arch_params:
        kwargs = {k: v for k, v in config.arch_params.items() if k != "arch"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eager = em.fuse_model(em.build_model(arch, **kwargs), inplace=True)
            eager.load_state_dict(script.state_dict(), strict=True)
        except (TypeError, ValueError, RuntimeError, KeyError) as exc:
            logger.info("finetuning the TorchScript module of %s: its MODEL block does not "
                        "rebuild the weights (%s)", config.name, exc)
        else:
            return eager.to(device), "eager"
    return script, "torchscript"


def _save_script(module, path):
    return save_torchscript(module.eval(), path)


def _base_config(base, name):
    """A training config holding the model's classes and FINETUNE settings."""
    ft = dict(base.finetune or {})
    ds_params = dict(ft.get("dataset_params") or {})
    criterion = {k: v for k, v in dict(ft.get("criterion_params") or {}).items()
                 if k in _CRITERION_KEYS}
    engine = {k: v for k, v in dict(ft.get("engine_params") or {}).items() if k in _ENGINE_KEYS}
    dataset_class = ft.get("dataset_class")
    if dataset_class not in ("SingleClassInstanceDataset", "PanopticDataset"):
        dataset_class = None
    weight_gamma = ds_params.get("weight_gamma")
    if weight_gamma is None:
        weight_gamma = 0.0
    return {
        "model_name": name,
        "description": "",
        "DATASET": {
            "labels": list(base.labels),
            "class_names": dict(base.class_names),
            "thing_list": list(base.thing_list),
            "label_divisor": base.label_divisor,
            "norms": {"mean": base.norms.mean, "std": base.norms.std},
        },
        "MODEL": {"arch": config_architecture(base) or "PanopticDeepLabPR"},
        "TRAIN": {
            "iterations": 100,
            "finetune_layer": "none",
            "criterion_params": criterion,
            "dataset_class": dataset_class,
            "dataset_params": {"weight_gamma": weight_gamma},
        },
        "EVAL": {"engine_params": engine},
    }


def _custom(config):
    if config is None:
        return {}
    if isinstance(config, TrainConfig):
        data = config.to_dict()
        data.pop("DATASET", None)
        data.pop("MODEL", None)
        return data
    if isinstance(config, (str, os.PathLike)):
        data = _read_yaml(config)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise TypeError(f"`config` must be a path to a YAML file, a mapping or a TrainConfig; "
                        f"got {type(config).__name__}")
    for block in ("DATASET", "MODEL", "FINETUNE"):
        if block in data:
            raise TrainConfigError(
                f"a finetuning config cannot set `{block}`: the classes, normalisation and "
                f"architecture come from the model being finetuned"
            )
    return data


def finetune(model, train_dir, *, name=None, config=None, eval_dir=None, model_dir=None,
             finetunable_layers=None, iterations=None, batch_size=None, patch_size=None,
             overrides=None, description=None, quantize=None, resume=None, progress=None,
             should_stop=None, register=True, overwrite=False):
    """Finetune a registered model on a training dataset and register the result.

    Parameters
    ----------
    model : str, path-like or empanada_models.ModelConfig
        A registered model name (built-in, user or a TorchScript model
        registered earlier), a model config ``.yaml``, or a config.
    train_dir : path-like
        Dataset folder (``<dataset>/<source>/images|masks``, as
        :func:`store_patches` writes it).
    name : str, optional
        Name of the new model (default ``<model>_finetuned``).
    config : path-like, mapping or TrainConfig, optional
        A custom finetuning config (TRAIN and EVAL blocks of the original
        schema, e.g. ``configs/finetune_example.yaml``).
    eval_dir : path-like, optional
        Validation dataset; may be ``train_dir``.
    model_dir : path-like, optional
        Output folder (default ``./<name>``).
    finetunable_layers : {'none', 'stage1', 'stage2', 'stage3', 'stage4', 'all'}, optional
        Encoder layers that train (default ``'none'``: decoders and heads
        only). ``'stageN'`` trains encoder stages N..4 (``layerN`` of a
        ResNet), ``'all'`` the whole model.
    iterations : int, optional
        Default 100.
    batch_size, patch_size : int, optional
        Defaults 16 and 256; ``patch_size`` must be a multiple of the model's
        padding factor (and of 128 for Panoptic-BiFPN models).
    overrides : mapping, optional
        Further config changes (dotted keys allowed).
    description : str, optional
        Free text for the new model's config.
    quantize : bool, optional
        Also write an int8 model (eager models only).
    resume : path-like, optional
        Checkpoint of an interrupted finetuning run with the same settings.
    progress, should_stop, register, overwrite
        As for :func:`train`.

    Returns
    -------
    TrainResult

    Raises
    ------
    empanada_models.ModelNotFoundError
        Unknown model name.
    TrainConfigError
        An invalid setting or custom config (the message names the key).
    FileNotFoundError, ValueError, empanada_models.ModelExistsError
        As for :func:`train`.

    Notes
    -----
    The model's classes cannot change. Models whose config has a ``MODEL``
    block are rebuilt as their eager architecture (BatchNorm folded, as in
    the file) and loaded with the file's weights; other TorchScript models
    are trained as TorchScript modules. Both give the same result; only the
    eager form can be quantized. The original trained the TorchScript
    module and its ``stageN`` options froze the whole ResNet encoder; here
    they unfreeze what they name. The weighted sampler (``weight_gamma`` of
    the model's ``FINETUNE.dataset_params``) is used, as in the original's
    training script (its napari widget shuffled uniformly).
    """
    import empanada_models as em

    elapsed = timer()
    base = em.resolve_model_config(model)
    custom = _custom(config)
    name = name or custom.get("model_name") or f"{base.name}_finetuned"
    check_model_name(name, "name")
    data = _base_config(base, name)
    custom = {k: v for k, v in custom.items() if not (k == "model_name" and v is None)}
    given = {"model_name": name, "TRAIN.train_dir": os.fspath(train_dir)}
    for key, value in (("TRAIN.iterations", iterations), ("TRAIN.batch_size", batch_size),
                       ("TRAIN.patch_size", patch_size), ("EVAL.eval_dir", eval_dir),
                       ("TRAIN.model_dir", model_dir), ("TRAIN.finetune_layer",
                                                        finetunable_layers),
                       ("TRAIN.quantize", quantize), ("description", description)):
        if value is not None:
            given[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    merged = merge_configs(merge_configs(data, custom), _nest(given))
    if merged["TRAIN"].get("finetune_layer") is None:
        merged["TRAIN"]["finetune_layer"] = "none"
    if merged["TRAIN"].get("iterations") is None and not (
            merged["TRAIN"].get("epochs")
            or (merged["TRAIN"].get("schedule_params") or {}).get("epochs")):
        merged["TRAIN"]["iterations"] = 100
    source = Path(os.fspath(config)).absolute() if isinstance(config, (str, os.PathLike)) \
        else None
    cfg = TrainConfig.from_dict(merged, overrides=overrides, source=source)
    if register:
        check_name_free(name, overwrite)
    classes = resolve_classes(cfg)
    device = resolve_device(cfg.train["device"])
    items = training_items(cfg)
    evals = eval_items(cfg)

    torch.manual_seed(cfg.train["seed"] or 0)
    net, kind = trainable_model(base, device="cpu")
    layers = cfg.train["finetune_layer"]
    set_trainable_layers(net, layers)
    how = ("the eager architecture rebuilt from its MODEL block" if kind == "eager"
           else "its TorchScript module")
    notes = [f"finetuned {base.name} as {how} (finetunable layers: {layers})"]
    multiple = em.patch_multiple(base)
    patch = cfg.train["patch_size"]
    if patch % multiple:
        raise TrainConfigError(
            f"`TRAIN.patch_size` {patch} must be a multiple of {multiple} for {base.name} "
            f"(`empanada models info {base.name}`)"
        )
    norms = (base.norms.mean, base.norms.std)
    dataset, eval_dataset, (total, eval_every, save_every), model_dir = prepare_run(
        cfg, items, evals, classes, norms, name, patch)

    spec = loop_spec("finetune", cfg, name=name, model_dir=model_dir, model=net,
                     device=device, datasets=(dataset, eval_dataset),
                     schedule=(total, eval_every, save_every), classes=classes, norms=norms,
                     padding_factor=multiple,
                     extra={"finetune_layer": layers, "base_model": base.name})
    result = run_and_collect(spec, cfg, resume=resume, progress=progress,
                             should_stop=should_stop, notes=notes)
    if result.stopped:
        result.seconds = elapsed()
        return result
    done = result.iterations
    net.cpu().eval()
    model_path = model_dir / f"{name}.pth"
    quantized = None
    if kind == "eager":
        with quiet_torchscript():
            em.export_torchscript(net, model_path)
        if cfg.train["quantize"]:
            quantized = export_quantized(net, model_dir / f"{name}_quantized.pth", dataset,
                                         notes)
    else:
        _save_script(net, model_path)
        if cfg.train["quantize"]:
            notes.append("no int8 model: a TorchScript module cannot be quantized (register "
                         "the model with a MODEL block to rebuild its architecture)")
    data = base.to_dict()
    for key in ("sha256", "sha256_quantized"):
        data.pop(key, None)
    data.update(
        model=model_path.name,
        model_quantized=quantized.name if quantized else None,
        description=cfg.description or (
            f"{base.name} finetuned with empanada-train on {len(items)} images for {done} "
            f"iterations (finetunable layers: {layers}). {base.description}".strip()),
        FINETUNE=finetune_block(cfg, classes),
    )
    config_path = write_model_config(model_dir / f"{name}.yaml", data, name)
    result.model_path, result.config_path, result.quantized_path = \
        model_path, config_path, quantized
    if register:
        result.registered = register_outputs(name, config_path, model_path, quantized, overwrite)
    result.seconds = elapsed()
    return result
