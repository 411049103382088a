"""Train a panoptic segmentation model from scratch (the "Train a model" module).

:func:`train` reads a training config (:class:`TrainConfig`), builds any
architecture of empanada-models for the config's classes, optionally loads
pretrained encoder weights (the CEM1.5M ResNet-50 or any checkpoint), runs the
optimisation loop with validation, and writes a TorchScript model with its
registry config, registered in one step.
"""

from __future__ import annotations

import logging

import torch

from empanada_models import quiet_torchscript

from ._config import (
    CEM_RESNET50_URL,
    TrainConfig,
    TrainConfigError,
    check_model_name,
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
    padding_factor_of,
    prepare_run,
    register_outputs,
    resolve_classes,
    resolve_device,
    run_and_collect,
    training_items,
    write_model_config,
)

__all__ = ["train"]

logger = logging.getLogger("empanada_train")

_SINGLE = "SingleClassInstanceDataset"
_PANOPTIC = "PanopticDataset"


# --------------------------------------------------------------------- pretraining


def _download(url):
    """The encoder weights at ``url``, downloaded once into the empanada cache."""
    import empanada_models as em

    logger.info("encoder weights %s (downloaded once into %s)", url, em.cache_dir())
    return em.download_file(
        url, what="encoder weights (TRAIN.encoder_pretraining)",
        hint="Download the file another way and set TRAIN.encoder_pretraining (or "
             "--pretrained) to its local path.")


def _norms_of(value, where):
    if value is None:
        return None
    if isinstance(value, dict) and set(value) >= {"mean", "std"}:
        value = (value["mean"], value["std"])
    try:
        mean, std = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `norms` must be (mean, std); got {value!r}") from None
    return mean, std


def load_pretraining(cfg, model):
    """Load TRAIN.encoder_pretraining into ``model.encoder``; return its norms or None."""
    import empanada_models as em

    spec = cfg.train["encoder_pretraining"]
    if spec.lower() in ("cem", "cem1.5m", "cem1.5m_swav_resnet50"):
        spec = CEM_RESNET50_URL
    if spec.startswith(("http://", "https://")):
        path = _download(spec)
    else:
        path = cfg.resolve_path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"`TRAIN.encoder_pretraining` file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(
            f"cannot read encoder weights {path} with torch.load(weights_only=True): {exc}; "
            f"save a plain state_dict (or {{'state_dict': ..., 'norms': [mean, std]}})"
        ) from exc
    norms = None
    if isinstance(state, dict) and state.get("format") == "empanada-train-checkpoint":
        weights = {k: v for k, v in state["model"].items() if k.startswith("encoder.")}
        norms = _norms_of(state.get("norms"), path)
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        weights = state["state_dict"]
        norms = _norms_of(state.get("norms"), path)
    elif isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        weights = state
    else:
        raise ValueError(f"{path} holds no state_dict of encoder weights")
    report = em.load_encoder_weights(model, weights)
    # BatchNorm's num_batches_tracked is never reported missing
    n_encoder = sum(not k.endswith("num_batches_tracked") for k in model.encoder.state_dict())
    if len(report.missing_keys) >= n_encoder:
        raise ValueError(
            f"none of the weights in {path} match the {cfg.model['encoder']!r} encoder "
            f"(MODEL.encoder); the CEM weights fit resnet50 only"
        )
    if report.missing_keys:
        logger.warning("%d encoder tensors were not in %s and keep their initial values "
                       "(e.g. %s)", len(report.missing_keys), path, report.missing_keys[0])
    if report.unexpected_keys:
        logger.info("ignored %d tensors of %s that the encoder does not have",
                    len(report.unexpected_keys), path)
    return norms


# ----------------------------------------------------------------------------- train


def train(config=None, *, overrides=None, resume=None, progress=None, should_stop=None,
          register=True, overwrite=False):
    """Train a panoptic segmentation model from scratch and register it.

    Parameters
    ----------
    config : TrainConfig, mapping, path-like or None
        A training config (original schema; see ``docs/training.md`` and
        ``configs/train_mitolite.yaml``); None uses the defaults.
    overrides : mapping, optional
        Changes applied on top of ``config`` (dotted keys allowed, e.g.
        ``{"TRAIN.iterations": 20, "TRAIN.train_dir": "data/train"}``).
    resume : path-like, optional
        A checkpoint (``<name>_checkpoint.pth.tar``) of an interrupted run of
        the same config; training continues at its iteration.
    progress : callable, optional
        Called with a dict once before the first iteration (``phase='start'``,
        ``iteration`` (0, or the resumed one), ``total``), after every
        iteration (``phase='train'``, ``iteration``, ``total``, ``loss`` (dict
        of floats), ``lr``) and after every validation (``phase='eval'``,
        ``metrics``, ``best``).
    should_stop : callable, optional
        Polled after every iteration; when it returns True a checkpoint is
        written and the run ends without exporting (``result.stopped``).
    register : bool, optional
        Register the exported model under ``model_name`` (usable at once by
        ``empanada segment --model NAME``).
    overwrite : bool, optional
        Replace a registered model of the same name.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainConfigError
        An invalid config (the message names the key).
    FileNotFoundError
        A dataset folder, the checkpoint or the pretrained weights are missing.
    ValueError
        Too few images for the batch size, invalid masks, a checkpoint that
        does not fit.
    empanada_models.ModelExistsError
        ``register`` and the name is taken (checked before training starts).
    FloatingPointError
        The loss became NaN or infinite.

    Notes
    -----
    The recipe is the original's: AdamW (weight decay 0.1, none for biases
    and norm weights), OneCycleLR to ``max_lr`` 3e-3 stepped every iteration,
    bf16 autocast on GPUs, the loss of :class:`PanopticLoss`, batches drawn by
    a weighted sampler balancing the data sources (``weight_gamma``).
    Differences: iterations (not epochs) are the unit, so runs of a few
    iterations work; gradients are clipped (``TRAIN.grad_clip``); frozen
    BatchNorm layers keep their statistics; validation scores the true masks
    (not masks rebuilt from the targets); the exported model holds the best
    validated weights when there is an ``EVAL.eval_dir``.

    Outputs in ``TRAIN.model_dir`` (default ``./<model_name>``):
    ``<name>.pth`` (TorchScript), ``<name>.yaml`` (registry config),
    ``<name>_quantized.pth`` (with ``TRAIN.quantize``),
    ``<name>_checkpoint.pth.tar`` (resumable), ``<name>_best.pth.tar``,
    ``<name>_log.csv`` and ``<name>_log.png`` (with matplotlib).
    """
    elapsed = timer()
    cfg = TrainConfig.load(config, overrides=overrides)
    if cfg.model_name is None:
        raise TrainConfigError("`model_name` is missing; set it in the config or pass --name")
    name = check_model_name(cfg.model_name)
    if register:
        check_name_free(name, overwrite)
    classes = resolve_classes(cfg)
    device = resolve_device(cfg.train["device"])
    items = training_items(cfg)
    evals = eval_items(cfg)

    import empanada_models as em

    arch = cfg.model["arch"]
    model_kwargs = {k: v for k, v in cfg.model.items() if k != "arch"}
    model_kwargs["num_classes"] = classes.num_classes
    torch.manual_seed(cfg.train["seed"] or 0)  # the initial weights, and then the run
    try:
        model = em.build_model(arch, **model_kwargs)
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"MODEL: {exc}") from exc
    notes = []
    norms = None
    layers = cfg.train["finetune_layer"] or "all"
    if cfg.train["encoder_pretraining"]:
        norms = load_pretraining(cfg, model)
        given = cfg.dataset["norms"]
        if norms is not None and given is not None and \
                (given["mean"], given["std"]) != tuple(norms):
            notes.append(f"DATASET.norms replaced by the pretrained encoder's normalisation "
                         f"(mean {norms[0]:.5f}, std {norms[1]:.5f}), as the original did")
    elif layers != "all":
        notes.append(f"TRAIN.finetune_layer {layers!r} ignored: without encoder_pretraining "
                     f"the whole model trains")
        layers = "all"
    set_trainable_layers(model, layers)
    if norms is None and cfg.dataset["norms"] is not None:
        norms = (cfg.dataset["norms"]["mean"], cfg.dataset["norms"]["std"])
    if norms is None:
        from ._dataset import compute_norms

        norms = compute_norms(items, intensity_mode=cfg.train["dataset_params"]["intensity_mode"])
        notes.append(f"normalisation computed from the training images: mean {norms[0]:.5f}, "
                     f"std {norms[1]:.5f}")

    padding_factor = padding_factor_of(arch, model_kwargs)
    patch = cfg.train["patch_size"]
    if patch % padding_factor:
        raise TrainConfigError(
            f"`TRAIN.patch_size` {patch} must be a multiple of {padding_factor} for "
            f"{arch} (use e.g. {max(padding_factor, patch // padding_factor * padding_factor)})"
        )
    dataset, eval_dataset, (total, eval_every, save_every), model_dir = prepare_run(
        cfg, items, evals, classes, norms, name, patch)

    spec = loop_spec("train", cfg, name=name, model_dir=model_dir, model=model, device=device,
                     datasets=(dataset, eval_dataset), schedule=(total, eval_every, save_every),
                     classes=classes, norms=norms, padding_factor=padding_factor,
                     extra={"finetune_layer": layers})
    result = run_and_collect(spec, cfg, resume=resume, progress=progress,
                             should_stop=should_stop, notes=notes)
    if result.stopped:
        result.seconds = elapsed()
        return result
    done = result.iterations
    model.cpu().eval()
    model_path = model_dir / f"{name}.pth"
    with quiet_torchscript():
        em.export_torchscript(model, model_path)
    quantized = None
    if cfg.train["quantize"]:
        quantized = export_quantized(model, model_dir / f"{name}_quantized.pth", dataset, notes)
    description = cfg.description or (
        f"{arch} with a {cfg.model['encoder']} encoder, trained from scratch with "
        f"empanada-train on {len(items)} images for {done} iterations."
    )
    config_path = write_model_config(model_dir / f"{name}.yaml", {
        "model": model_path.name,
        "model_quantized": quantized.name if quantized else None,
        "norms": {"mean": float(norms[0]), "std": float(norms[1])},
        "padding_factor": padding_factor,
        "thing_list": list(classes.thing_list),
        "labels": list(classes.labels),
        "class_names": dict(classes.class_names),
        "description": description,
        "arch": arch,
        "MODEL": {"arch": arch, **model_kwargs},
        "FINETUNE": finetune_block(cfg, classes),
    }, name)
    result.model_path, result.config_path, result.quantized_path = \
        model_path, config_path, quantized
    if register:
        result.registered = register_outputs(name, config_path, model_path, quantized, overwrite)
    result.seconds = elapsed()
    return result
