"""Model info: everything a user needs to choose, run or finetune a model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ._catalogue import config_architecture, patch_multiple
from ._download import ChecksumError, _verify, cached_model_file
from ._registry import _discover, _jit_load, resolve_model_config

__all__ = ["model_info"]


def _architecture_parameters(arch: str, arch_params) -> int | None:
    """Parameter count of the eager architecture a config's ``MODEL`` block describes."""
    from ._builders import build_model, count_parameters

    kwargs = {k: v for k, v in dict(arch_params).items() if k != "arch"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stale keys of old configs are reported elsewhere
            return count_parameters(build_model(arch, **kwargs))
    except (TypeError, ValueError, KeyError):
        return None


def _count_parameters(path: Path) -> int:
    module = _jit_load(path, "cpu")
    return int(sum(p.numel() for p in module.parameters()))


def model_info(name_or_config) -> dict[str, Any]:
    """Everything needed to choose, run or finetune a model, as a plain dict.

    Parameters
    ----------
    name_or_config : str, path-like or ModelConfig
        Model name, config path or config.

    Returns
    -------
    dict
        ``name``, ``origin`` (built-in / user), ``config_path``, ``description``,
        ``arch``, ``classes`` (per class: ``id``, ``name``, ``kind`` = instance or
        semantic, ``first_label``), ``class_names``, ``labels``, ``thing_list``,
        ``label_divisor``, ``padding_factor``, ``patch_multiple`` (what patch sizes
        must be divisible by), ``norms``, ``model`` and ``model_quantized`` (sources),
        ``cached`` and ``quantized_cached`` (available without downloading),
        ``local_path``, ``num_params`` (from the weights when local or cached, else from
        the architecture in the config's ``MODEL`` block, else None), ``num_params_from``
        (``'weights'``, ``'architecture'`` or None),
        ``weights_error`` (why they could not be read, or None) and
        ``finetune_hints`` (sentences for the user).

    Notes
    -----
    Counting parameters loads the TorchScript file (after checking its SHA-256 when
    the config has one); nothing is downloaded.
    """
    config = resolve_model_config(name_or_config)
    divisor = config.label_divisor
    arch = config_architecture(config)
    multiple = patch_multiple(config)
    things = set(config.thing_list)
    classes = []
    for cid, cname in config.class_names.items():
        kind = "instance" if cid in things else "semantic"
        first = cid * divisor + 1 if kind == "instance" else cid * divisor
        classes.append({"id": cid, "name": cname, "kind": kind, "first_label": first})

    local = cached_model_file(config)
    num_params = error = None
    if local is not None:
        try:
            _verify(local, config.sha256, f"model of {config.name!r}")
            num_params = _count_parameters(local)
        except (ChecksumError, RuntimeError, OSError) as exc:
            error = str(exc)
    params_from = "weights" if num_params is not None else None
    if num_params is None and arch and config.arch_params:
        # no weights at hand: count the architecture the config describes
        num_params = _architecture_parameters(arch, config.arch_params)
        params_from = "architecture" if num_params is not None else None
    quant_local = cached_model_file(config, quantized=True) if config.model_quantized else None

    hints = [
        f"Patch height and width must be divisible by {multiple}"
        + (f" (the padding factor, and {multiple} for {arch} inputs)."
           if multiple != config.padding_factor else " (the padding factor)."),
        f"Use a label divisor of {divisor}: a panoptic label is "
        f"class_id * {divisor} + instance_id.",
    ]
    single = len(classes) == 1 and classes[0]["kind"] == "instance"
    for c in classes:
        if c["kind"] == "instance":
            hints.append(
                f"Class {c['id']} ({c['name']}) needs instance segmentation: label its "
                f"objects {c['first_label']}, {c['first_label'] + 1}, ..."
                + (" (with a single instance class, any unique positive ids also work)."
                   if single else ".")
            )
        else:
            hints.append(f"Class {c['id']} ({c['name']}) needs semantic segmentation: "
                         f"label it {c['first_label']}.")

    found = _discover().get(config.name)
    if config.source is None:
        origin = "in memory"
    elif found is not None and found[0].resolve() == config.source.resolve():
        origin = found[1]
    else:
        origin = "file"
    return {
        "name": config.name,
        "origin": origin,
        "config_path": None if config.source is None else str(config.source),
        "description": config.description.strip(),
        "arch": arch,
        "classes": classes,
        "class_names": dict(config.class_names),
        "labels": list(config.labels),
        "thing_list": list(config.thing_list),
        "label_divisor": divisor,
        "padding_factor": config.padding_factor,
        "patch_multiple": multiple,
        "norms": {"mean": config.norms.mean, "std": config.norms.std},
        "model": config.model,
        "model_quantized": config.model_quantized,
        "sha256": config.sha256,
        "cached": local is not None,
        "quantized_cached": quant_local is not None,
        "local_path": None if local is None else str(local),
        "num_params": num_params,
        "num_params_from": params_from,
        "weights_error": error,
        "finetune_hints": hints,
    }
