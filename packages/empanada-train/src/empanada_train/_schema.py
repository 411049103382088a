"""The training-config schema: every key, its check, and the original's augmentation list.

Each check raises :class:`TrainConfigError` naming the key and what it holds.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping

from empanada_models import ARCHITECTURES

from ._errors import TrainConfigError

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
        from ._config import DEFAULTS  # the config module imports this one

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
