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
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from empanada_core.io import atomic_write_text
from empanada_models import ARCHITECTURES, load_yaml

__all__ = [
    "DEFAULTS",
    "FINETUNE_LAYERS",
    "LabelSpec",
    "TrainConfig",
    "TrainConfigError",
    "merge_configs",
    "parse_label_spec",
]

#: Options of ``TRAIN.finetune_layer`` / ``finetunable_layers``.
FINETUNE_LAYERS = ("none", "stage1", "stage2", "stage3", "stage4", "all")

#: URL of the CEM1.5M SwAV ResNet-50 encoder (``encoder_pretraining: cem``).
CEM_RESNET50_URL = ("https://zenodo.org/record/6453160/files/"
                    "cem1.5m_swav_resnet50_200ep_balanced.pth.tar?download=1")

_STALE_MODEL_KEYS = ("confidence_head", "confidence_bins")
_BEST_METRICS = ("pq", "f1_50", "semantic_iou")
_INTENSITY_MODES = ("auto", "dtype", "percentile")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_ATOMIC = frozenset({"class_names", "norms"})  # replaced, not merged

#: Architecture defaults filled in for keys the config leaves out (the original's
#: ``pdl_model.yaml`` and ``bifpn_model.yaml``: the MitoNet and MitoNet mini layouts),
#: from the catalogue :data:`empanada_models.ARCHITECTURES`.
ARCH_DEFAULTS = {name: dict(entry.training_defaults) for name, entry in ARCHITECTURES.items()}

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


class TrainConfigError(ValueError):
    """A training config or label spec is invalid; the message names the key or line."""


# ---------------------------------------------------------------------- label specs


class LabelSpec(NamedTuple):
    """Classes of a panoptic task, from a label spec (see :func:`parse_label_spec`)."""

    labels: tuple
    class_names: dict
    thing_list: tuple


def parse_label_spec(spec):
    """Parse the "Dataset labels" of the Train widget: one class per line.

    Parameters
    ----------
    spec : str or sequence of str
        Lines ``<class_id>,<class_name>,<semantic|instance>`` (e.g.
        ``1,er,semantic``); a string may also separate them with ``;``.
        Blank lines and ``#`` comments are skipped, spaces around items are
        ignored.

    Returns
    -------
    LabelSpec
        ``labels`` (sorted ids), ``class_names`` ``{id: name}`` and
        ``thing_list`` (the instance classes).

    Raises
    ------
    TrainConfigError
        For a line without three items, an id that is not a positive integer,
        an empty name, a kind other than semantic/instance, repeated ids or
        names, no classes, or ids that are not exactly 1..n (each class id is
        the index of a logit channel). The message quotes the line.

    Examples
    --------
    >>> parse_label_spec("1,er,semantic\\n2,mito,instance\\n3,nucleus,semantic")
    LabelSpec(labels=(1, 2, 3), class_names={1: 'er', 2: 'mito', 3: 'nucleus'}, thing_list=(2,))
    """
    if isinstance(spec, str):
        lines = spec.replace(";", "\n").splitlines()
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        lines = list(spec)
    else:
        raise TypeError(f"`spec` must be a str or a list of str; got {type(spec).__name__}")
    names, kinds = {}, {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"label line {number} ({raw.strip()!r})"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            raise TrainConfigError(
                f"{where}: expected 3 comma-separated items <class_id>,<class_name>,"
                f"<semantic|instance>, e.g. '2,mito,instance'; got {len(parts)}"
            )
        id_text, name, kind = parts
        if not re.fullmatch(r"\d+", id_text) or int(id_text) < 1:
            raise TrainConfigError(f"{where}: class id {id_text!r} must be an integer >= 1")
        class_id = int(id_text)
        if not name:
            raise TrainConfigError(f"{where}: the class name is empty")
        kind = kind.lower()
        if kind not in ("semantic", "instance"):
            raise TrainConfigError(
                f"{where}: class type {parts[2]!r} must be 'semantic' or 'instance'")
        if class_id in names:
            raise TrainConfigError(f"{where}: class id {class_id} is given twice")
        if name in names.values():
            raise TrainConfigError(f"{where}: class name {name!r} is given twice")
        names[class_id] = name
        kinds[class_id] = kind
    if not names:
        raise TrainConfigError("the label spec holds no classes; give lines like "
                               "'1,mito,instance'")
    ids = sorted(names)
    if ids != list(range(1, len(ids) + 1)):
        raise TrainConfigError(
            f"class ids must be 1..{len(ids)} without gaps (each id is the index of a "
            f"logit channel); got {ids}"
        )
    return LabelSpec(tuple(ids), {i: names[i] for i in ids},
                     tuple(i for i in ids if kinds[i] == "instance"))


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


# ----------------------------------------------------------------------- validators


def _shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(key, what, value):
    return TrainConfigError(f"`{key}` must be {what}; got {_shown(value)}")


def _int(minimum=None):
    def check(value, key):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
                (minimum is not None and value < minimum):
            what = "an integer" + ("" if minimum is None else f" >= {minimum}")
            raise _fail(key, what, value)
        return int(value)
    return check


def _float(low=None, high=None, *, open_low=False):
    def check(value, key):
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real) \
            and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if open_low else value >= low
        if ok and high is not None:
            ok = value <= high
        if not ok:
            bounds = []
            if low is not None:
                bounds.append(f"{'>' if open_low else '>='} {low}")
            if high is not None:
                bounds.append(f"<= {high}")
            raise _fail(key, "a finite number" + (" " + " and ".join(bounds) if bounds else ""),
                        value)
        return float(value)
    return check


def _bool(value, key):
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _text(value, key):
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    return value


def _bool_or_auto(value, key):
    return value if value == "auto" else _bool(value, key)


def _choice(options):
    def check(value, key):
        if value not in options:
            raise _fail(key, "one of " + ", ".join(repr(o) for o in options), value)
        return value
    return check


def _opt(check):
    def optional(value, key):
        return None if value is None else check(value, key)
    return optional


def _path(value, key):
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "a path", value)
    return value


def _paths(value, key):
    if isinstance(value, (str, os.PathLike)):
        return [_path(value, key)]
    if not isinstance(value, (list, tuple)):
        raise _fail(key, "a list of paths", value)
    return [_path(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _ids(allow_empty):
    def check(value, key):
        if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
            raise _fail(key, "a list of class ids" + ("" if allow_empty else " (not empty)"),
                        value)
        ids = [_int(1)(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if len(set(ids)) != len(ids):
            raise _fail(key, "a list without repeated ids", value)
        return ids
    return check


def _class_names(value, key):
    if isinstance(value, (list, tuple)):  # the very old form: names in label order
        value = {i + 1: v for i, v in enumerate(value)}
    if not isinstance(value, Mapping) or not value:
        raise _fail(key, "a mapping {class_id: name}", value)
    out = {}
    for k, v in value.items():
        if isinstance(k, str) and k.strip().isdigit():
            k = int(k)
        k = _int(1)(k, f"{key} key")
        out[k] = _text(v, f"{key}[{k}]")
    return dict(sorted(out.items()))


def _norms(value, key):
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"mean": value[0], "std": value[1]}
    if not isinstance(value, Mapping) or set(value) != {"mean", "std"}:
        raise _fail(key, "a mapping with exactly the keys `mean` and `std` (or null)", value)
    return {"mean": _float()(value["mean"], f"{key}.mean"),
            "std": _float(0.0, open_low=True)(value["std"], f"{key}.std")}


def _any_list(value, key):
    if not isinstance(value, (list, tuple)):
        raise _fail(key, "a list", value)
    return list(value)


def _pair(value, key):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(key, "a pair [low, high]", value)
    lo, hi = (_float(0.0, open_low=True)(v, f"{key}[{i}]") for i, v in enumerate(value))
    if lo > hi:
        raise _fail(key, "a pair [low, high] with low <= high", value)
    return [lo, hi]


_AUG_KEYS = {
    "scale_range": _pair,
    "rotate_limit": _float(0.0, 180.0),
    "brightness": _float(0.0, 1.0),
    "contrast": _float(0.0, 1.0),
    "invert_p": _float(0.0, 1.0),
    "blur_p": _float(0.0, 1.0),
    "noise_p": _float(0.0, 1.0),
    "gamma": _float(0.0, 2.0),
    "artefact_p": _float(0.0, 1.0),
    "scale_p": _float(0.0, 1.0),
}

# albumentations entries of original configs -> our options
_ALBUMENTATIONS = ("RandomScale", "PadIfNeeded", "RandomCrop", "Rotate",
                   "RandomBrightnessContrast", "HorizontalFlip", "VerticalFlip")


def _augmentations(value, key):
    """Our mapping form, or the original's albumentations list translated to it."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(_AUG_KEYS))
        if unknown:
            raise TrainConfigError(
                f"unknown key `{key}.{unknown[0]}`; augmentation options are "
                f"{', '.join(_AUG_KEYS)}"
            )
        out = dict(DEFAULTS["TRAIN"]["augmentations"])
        out.update({k: _AUG_KEYS[k](v, f"{key}.{k}") for k, v in value.items()})
        return out
    if not isinstance(value, (list, tuple)):
        raise _fail(key, "a mapping of augmentation options (or the original's list)", value)
    out = {"scale_range": [1.0, 1.0], "rotate_limit": 0.0, "brightness": 0.0,
           "contrast": 0.0, "invert_p": 0.0, "blur_p": 0.0, "noise_p": 0.0}
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(entry, Mapping) or "aug" not in entry:
            raise _fail(where, "a mapping with an `aug` name", entry)
        name = entry["aug"]
        if name not in _ALBUMENTATIONS:
            raise TrainConfigError(
                f"`{where}.aug` {name!r} is not supported; supported: "
                f"{', '.join(_ALBUMENTATIONS)} (or use the mapping form, see docs/training.md)"
            )
        if name == "RandomScale":
            # albumentations: factor = 1 + U(limit[0], limit[1])
            limit = entry.get("scale_limit", 0.1)
            if isinstance(limit, numbers.Real) and not isinstance(limit, bool):
                limit = [-limit, limit]
            if not isinstance(limit, (list, tuple)) or len(limit) != 2:
                raise _fail(f"{where}.scale_limit", "a number or a pair [low, high]", limit)
            low, high = (_float(-1.0, open_low=True)(v, f"{where}.scale_limit")
                         for v in limit)
            out["scale_range"] = _pair([1 + low, 1 + high], f"{where}.scale_limit")
        elif name == "Rotate":
            out["rotate_limit"] = _float(0.0, 180.0)(entry.get("limit", 90), f"{where}.limit")
        elif name == "RandomBrightnessContrast":
            out["brightness"] = _float(0.0, 1.0)(entry.get("brightness_limit", 0.2),
                                                 f"{where}.brightness_limit")
            out["contrast"] = _float(0.0, 1.0)(entry.get("contrast_limit", 0.2),
                                               f"{where}.contrast_limit")
        # PadIfNeeded / RandomCrop sizes come from TRAIN.patch_size; flips are always on
    return out


def _arch_keys(arch=None):
    """Builder arguments of ``arch`` (of every architecture when None)."""
    keys = set()
    for name, entry in ARCHITECTURES.items():
        if arch is None or name == arch:
            keys.update(entry.keyword_names())
    return keys


def _model_keys():
    return {"arch", *_STALE_MODEL_KEYS, *_arch_keys()}


def _model_block(value, key):
    if not isinstance(value, Mapping):
        raise _fail(key, "a mapping of architecture arguments", value)
    arch = value.get("arch")
    if arch not in ARCHITECTURES:
        raise _fail(f"{key}.arch", "one of " + ", ".join(ARCHITECTURES), arch)
    known = _model_keys()
    unknown = sorted(k for k in value if k not in known)
    if unknown:
        raise TrainConfigError(
            f"unknown key `{key}.{unknown[0]}`; architecture keys are "
            f"{', '.join(sorted(known))}"
        )
    if value.get("num_classes") is not None:
        _int(1)(value["num_classes"], f"{key}.num_classes")
    if not isinstance(value.get("encoder", "resnet50"), str):
        raise _fail(f"{key}.encoder", "an encoder name", value.get("encoder"))
    # fill in the architecture's defaults for the keys left out
    return {**ARCH_DEFAULTS[arch], **dict(value)}


_SCHEMA = {
    "model_name": _opt(_text),
    "description": _opt(_text),
    "DATASET": {
        "class_names": _opt(_class_names),
        "labels": _opt(_ids(False)),
        "thing_list": _opt(_ids(True)),
        "label_divisor": _opt(_int(2)),
        "norms": _opt(_norms),
        "dataset_name": _opt(_text),
    },
    "MODEL": _model_block,
    "TRAIN": {
        "train_dir": _opt(_path),
        "additional_train_dirs": _opt(_paths),
        "model_dir": _opt(_path),
        "iterations": _opt(_int(1)),
        "epochs": _opt(_int(1)),
        "batch_size": _int(1),
        "patch_size": _int(16),
        "workers": _opt(_int(0)),
        "seed": _opt(_int(0)),
        "device": _text,
        "amp": _bool,
        "amp_cpu": _bool_or_auto,
        "channels_last": _bool,
        "grad_clip": _opt(_float(0.0, open_low=True)),
        "encoder_pretraining": _opt(_path),
        "finetune_layer": _opt(_choice(FINETUNE_LAYERS)),
        "lr_schedule": _choice(("OneCycleLR",)),
        "schedule_params": {
            "max_lr": _float(0.0, open_low=True),
            "pct_start": _float(0.0, 1.0, open_low=True),
            "epochs": _opt(_int(1)),
            "steps_per_epoch": _opt(_int()),
            "div_factor": _float(0.0, open_low=True),
            "final_div_factor": _float(0.0, open_low=True),
        },
        "optimizer": _choice(("AdamW",)),
        "optimizer_params": {
            "weight_decay": _float(0.0),
            "eps": _float(0.0, open_low=True),
        },
        "criterion": _choice(("PanopticLoss",)),
        "criterion_params": {
            "ce_weight": _float(0.0),
            "mse_weight": _float(0.0),
            "l1_weight": _float(0.0),
            "pr_weight": _float(0.0),
            "top_k_percent": _float(0.0, 1.0, open_low=True),
        },
        "dataset_class": _opt(_choice(("SingleClassInstanceDataset", "PanopticDataset"))),
        "dataset_params": {
            "weight_gamma": _opt(_float(0.0)),
            "heatmap_sigma": _float(0.0, open_low=True),
            "intensity_mode": _choice(_INTENSITY_MODES),
            "labels": _opt(_ids(False)),
            "thing_list": _opt(_ids(True)),
            "label_divisor": _opt(_int(2)),
        },
        "weight_gamma": _opt(_float(0.0)),
        "augmentations": _augmentations,
        "save_freq": _opt(_int(1)),
        "save_every": _opt(_int(1)),
        "save_every_minutes": _opt(_float(0.0, open_low=True)),
        "print_freq": _opt(_int(1)),
        "metrics": _opt(_any_list),
        "quantize": _bool,
        "resume": _opt(_path),
    },
    "EVAL": {
        "eval_dir": _opt(_path),
        "epochs_per_eval": _opt(_int(1)),
        "eval_every": _opt(_int(1)),
        "best_metric": _choice(_BEST_METRICS),
        "metrics": _opt(_any_list),
        "engine": _choice(("PanopticDeepLabEngine",)),
        "engine_params": {
            "thing_list": _opt(_ids(True)),
            "label_divisor": _opt(_int(2)),
            "stuff_area": _int(0),
            "void_label": _choice((0,)),
            "nms_threshold": _float(0.0, 1.0),
            "nms_kernel": _int(1),
            "confidence_thr": _float(0.0, 1.0),
        },
    },
}


def _validate(data, schema, prefix):
    if not isinstance(data, Mapping):
        raise _fail(prefix.rstrip("."), "a mapping", data)
    out = {}
    for key, value in data.items():
        if key not in schema:
            where = f"{prefix}{key}"
            raise TrainConfigError(
                f"unknown key `{where}`; "
                + (f"keys of {prefix.rstrip('.')} are " if prefix else "top-level keys are ")
                + ", ".join(str(k) for k in schema)
            )
        rule = schema[key]
        if isinstance(rule, dict):
            out[key] = _validate(value, rule, f"{prefix}{key}.")
        else:
            out[key] = rule(value, f"{prefix}{key}")
    return out


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
    empanada_train._config.TrainConfigError: unknown key `TRAIN.batch_sise`; keys of TRAIN are ...
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
