"""Training configs: the original empanada YAML schema, validated, with defaults.

A training config has the blocks of the original ``train_config.yaml`` and
``custom_configs/*.yaml`` files (``model_name``, ``DATASET``, ``MODEL``,
``TRAIN``, ``EVAL``); a custom file only needs the keys it changes, which are
merged recursively over the defaults (:data:`DEFAULTS`). ``BASE: other.yaml``
inherits from another file first. Unknown keys, wrong types and bad values
raise :class:`TrainConfigError` naming the key. This module does not import
torch.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from empanada_core.io import atomic_write_text
from empanada_models import ARCHITECTURES, load_yaml

from ._errors import TrainConfigError
from ._label_spec import LabelSpec, parse_label_spec
from ._schema import (
    _ATOMIC,
    _NAME,
    _SCHEMA,
    CEM_RESNET50_URL,
    FINETUNE_LAYERS,
    _arch_keys,
    _validate,
)

__all__ = [
    "CEM_RESNET50_URL",
    "DEFAULTS",
    "FINETUNE_LAYERS",
    "LabelSpec",
    "TrainConfig",
    "TrainConfigError",
    "merge_configs",
    "parse_label_spec",
]


#: Every key a training config may hold, with its default (null: set by the
#: user or derived; see ``docs/training.md``).
DEFAULTS: dict[str, Any] = {
    "model_name": None,
    "description": "",
    "DATASET": {
        "class_names": {1: "mito"},
        "labels": [1],
        "thing_list": [1],
        "label_divisor": None,
        "norms": None,
        "dataset_name": None,
    },
    "MODEL": {"arch": "PanopticDeepLabPR"},
    "TRAIN": {
        "train_dir": None,
        "additional_train_dirs": None,
        "model_dir": None,
        "iterations": None,
        "epochs": None,
        "batch_size": 16,
        "patch_size": 256,
        "workers": None,
        "seed": 0,
        "device": "auto",
        "amp": True,
        "amp_cpu": "auto",
        "channels_last": True,
        "grad_clip": 5.0,
        "encoder_pretraining": None,
        "finetune_layer": None,
        "lr_schedule": "OneCycleLR",
        "schedule_params": {
            "max_lr": 0.003, "pct_start": 0.3, "epochs": None, "steps_per_epoch": None,
            "div_factor": 25.0, "final_div_factor": 1e4,
        },
        "optimizer": "AdamW",
        "optimizer_params": {"weight_decay": 0.1, "eps": 1e-8},
        "criterion": "PanopticLoss",
        "criterion_params": {
            "ce_weight": 1.0, "mse_weight": 200.0, "l1_weight": 0.01, "pr_weight": 1.0,
            "top_k_percent": 0.2,
        },
        "dataset_class": None,
        "dataset_params": {
            "weight_gamma": 0.0, "heatmap_sigma": 6.0, "intensity_mode": "auto",
            "labels": None, "thing_list": None, "label_divisor": None,
        },
        "weight_gamma": None,
        "augmentations": {
            "scale_range": [0.5, 2.0], "rotate_limit": 180.0, "brightness": 0.3,
            "contrast": 0.3, "invert_p": 0.0, "blur_p": 0.0, "noise_p": 0.0,
            "gamma": 0.0, "artefact_p": 0.0, "scale_p": 0.5,
        },
        "save_freq": None,
        "save_every": None,
        "save_every_minutes": 5.0,
        "print_freq": None,
        "metrics": None,
        "quantize": False,
        "resume": None,
    },
    "EVAL": {
        "eval_dir": None,
        "epochs_per_eval": None,
        "eval_every": None,
        "best_metric": "pq",
        "metrics": None,
        "engine": "PanopticDeepLabEngine",
        "engine_params": {
            "thing_list": None, "label_divisor": None, "stuff_area": 64, "void_label": 0,
            "nms_threshold": 0.1, "nms_kernel": 7, "confidence_thr": 0.5,
        },
    },
}


# -------------------------------------------------------------------------- merging


def merge_configs(base, override):
    """Recursively merge ``override`` into a copy of ``base``.

    Mappings are merged key by key; lists, scalars and None replace the base
    value (as the original's ``BASE`` inheritance). ``class_names`` and
    ``norms`` are replaced as a whole.

    Examples
    --------
    >>> merge_configs({"TRAIN": {"batch_size": 16, "amp": True}}, {"TRAIN": {"amp": False}})
    {'TRAIN': {'batch_size': 16, 'amp': False}}
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
                and key not in _ATOMIC:
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _nest(overrides):
    """``{"TRAIN.iterations": 5}`` -> ``{"TRAIN": {"iterations": 5}}`` (nested keys kept)."""
    out: dict = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            value = _nest(value)
        parts = key.split(".") if isinstance(key, str) else [key]
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(target.get(parts[-1]), Mapping):
            target[parts[-1]] = merge_configs(target[parts[-1]], value)
        else:
            target[parts[-1]] = value
    return out


def _read_yaml(path, seen=()):
    path = Path(os.fspath(path)).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    if path in seen:
        raise TrainConfigError(f"{path}: `BASE` inheritance loops back to this file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: not a valid YAML file: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TrainConfigError(f"{path}: a training config must be a mapping; got "
                               f"{type(data).__name__}")
    data = dict(data)
    base = data.pop("BASE", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise TrainConfigError(f"{path}: `BASE` must be a path to a YAML file; got {base!r}")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    return merge_configs(_read_yaml(base_path, (*seen, path)), data)


# ---------------------------------------------------------------------- the config


@dataclass(frozen=True)
class TrainConfig:
    """A validated training config (the original schema plus our keys).

    Build it with :meth:`from_yaml` or :meth:`from_dict`; both merge the input
    over :data:`DEFAULTS` and validate every key. The blocks are plain dicts
    (treat them as read-only; :meth:`updated` returns a changed copy).

    Attributes
    ----------
    model_name : str or None
    description : str
    dataset, model, train, eval : dict
        The ``DATASET``, ``MODEL``, ``TRAIN`` and ``EVAL`` blocks.
    source : Path or None
        The YAML file it was read from; relative paths in it are resolved
        against the file's folder.

    Examples
    --------
    >>> cfg = TrainConfig.from_dict({"model_name": "demo", "TRAIN": {"batch_size": 4}})
    >>> cfg.train["batch_size"], cfg.train["schedule_params"]["max_lr"], cfg.model["encoder"]
    (4, 0.003, 'resnet50')
    >>> TrainConfig.from_dict({"TRAIN": {"batch_sise": 4}})
    Traceback (most recent call last):
    ...
    empanada_train._errors.TrainConfigError: unknown key `TRAIN.batch_sise`; keys of TRAIN are ...
    """

    model_name: str | None
    description: str
    dataset: dict
    model: dict
    train: dict
    eval: dict
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, data, *, overrides=None, source=None):
        """Validate a config mapping merged over the defaults.

        Parameters
        ----------
        data : mapping
            Original-schema config (a custom config only needs its changes).
        overrides : mapping, optional
            Applied after ``data``; keys may be dotted (``"TRAIN.iterations"``).
        source : path-like, optional
            File the mapping came from (for messages and relative paths).

        Returns
        -------
        TrainConfig

        Raises
        ------
        TrainConfigError
            An unknown key, a wrong type or a bad value (the message names
            the key and, when known, the file).
        """
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"a training config must be a mapping; got "
                                   f"{type(data).__name__}")
        data = dict(data)
        if "BASE" in data:
            raise TrainConfigError("`BASE` is only resolved when reading a file "
                                   "(TrainConfig.from_yaml)")
        merged = merge_configs(DEFAULTS, data)
        if overrides:
            merged = merge_configs(merged, _nest(overrides))
        try:
            checked = _validate(merged, _SCHEMA, "")
        except TrainConfigError as exc:
            if source is not None:
                raise TrainConfigError(f"{source}: {exc}") from None
            raise
        return cls(
            model_name=checked["model_name"],
            description=checked["description"] or "",
            dataset=checked["DATASET"],
            model=checked["MODEL"],
            train=checked["TRAIN"],
            eval=checked["EVAL"],
            source=None if source is None else Path(source),
        )

    @classmethod
    def from_yaml(cls, path, *, overrides=None):
        """Read a YAML config (``BASE:`` inheritance resolved) and validate it.

        Raises
        ------
        FileNotFoundError
            The file (or a ``BASE`` file) does not exist.
        TrainConfigError
            Invalid YAML or an invalid key.
        """
        path = Path(os.fspath(path)).expanduser().absolute()
        return cls.from_dict(_read_yaml(path), overrides=overrides, source=path)

    @classmethod
    def load(cls, config=None, *, overrides=None):
        """A TrainConfig from a TrainConfig, a mapping, a YAML path or None (defaults)."""
        if config is None:
            config = {}
        if isinstance(config, TrainConfig):
            return config.updated(overrides) if overrides else config
        if isinstance(config, (str, os.PathLike)):
            return cls.from_yaml(config, overrides=overrides)
        if isinstance(config, Mapping):
            return cls.from_dict(config, overrides=overrides)
        raise TypeError(f"`config` must be a TrainConfig, a mapping or a path to a YAML "
                        f"file; got {type(config).__name__}")

    def to_dict(self):
        """The config as an original-schema mapping (a deep copy)."""
        return copy.deepcopy({
            "model_name": self.model_name,
            "description": self.description,
            "DATASET": self.dataset,
            "MODEL": self.model,
            "TRAIN": self.train,
            "EVAL": self.eval,
        })

    def updated(self, overrides):
        """A copy with ``overrides`` merged in (dotted or nested keys), validated."""
        data = self.to_dict()
        if overrides and "MODEL" in _nest(overrides):
            new_model = _nest(overrides)["MODEL"]
            arch = new_model.get("arch")
            if arch in ARCHITECTURES and arch != data["MODEL"]["arch"]:
                # another architecture: keep only the arguments it shares with the old one
                keep = _arch_keys(arch)
                data["MODEL"] = {k: v for k, v in data["MODEL"].items() if k in keep}
                data["MODEL"]["arch"] = arch
        return TrainConfig.from_dict(data, overrides=overrides, source=self.source)

    def resolve_path(self, value):
        """``value`` as a Path; relative paths are taken from the config file's folder."""
        if value is None:
            return None
        path = Path(os.fspath(value)).expanduser()
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def to_yaml(self, path):
        """Write the config as YAML (atomic: a temporary file, then a rename)."""
        return atomic_write_text(
            path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def check_model_name(name, key="model_name"):
    """Raise TrainConfigError unless ``name`` is a usable registry and file name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TrainConfigError(
            f"`{key}` {name!r} is not a valid model name: use letters, digits, '.', '_', "
            f"'+' or '-', starting with a letter or digit (no spaces)"
        )
    return name
