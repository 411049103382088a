"""Model configs: the small YAML files that describe a registered model.

The schema is the one the original empanada-napari reads and writes (research notes
§2 and §7.3), so configs move freely between the two:

=====================  ============================================================
key                    value
=====================  ============================================================
``model``              path or URL of the TorchScript ``.pth`` file (required)
``model_quantized``    path or URL of the int8 TorchScript file, or null
``sha256``             optional hex digest of ``model``, checked on every load
``sha256_quantized``   optional hex digest of ``model_quantized``
``norms``              ``{mean: float, std: float}``, fractions of the dtype maximum
``padding_factor``     positive int; height and width are padded to a multiple of it
``thing_list``         instance ("thing") class ids, a subset of ``labels``
``labels``             every class id (positive ints)
``class_names``        ``{class_id: name}``; the very old list form is converted
``description``        free text
``arch``, ``MODEL``    optional architecture name and builder arguments
``FINETUNE``           criterion, dataset and engine settings, kept as they are
=====================  ============================================================

Unknown keys are kept in :attr:`ModelConfig.extra` and written back unchanged.
YAML is read by :func:`load_yaml` only (safe loading, aliases refused). This module does not import torch.
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
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml

from empanada_core.io import atomic_output

from ._catalogue import ARCHITECTURES

__all__ = ["ConfigError", "ModelConfig", "Norms", "load_yaml"]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_REQUIRED = ("model", "norms", "padding_factor", "thing_list", "labels", "class_names")
_KNOWN = (
    "model", "model_quantized", "sha256", "sha256_quantized", "norms", "padding_factor",
    "thing_list", "labels", "class_names", "description", "arch", "MODEL", "FINETUNE",
)


class ConfigError(ValueError):
    """A model config is missing a key or holds a value of the wrong type.

    The message names the config (its file, or its name when it has no file) and the
    key, and says what was expected.
    """


class Norms(NamedTuple):
    """Intensity normalisation: ``(image - mean * max) / (std * max)``.

    ``max`` is the maximum of the image dtype (255 for uint8), as in the original.
    """

    mean: float
    std: float


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``).

    A handful of nested aliases expands into billions of nodes when the data is
    walked (a "billion laughs" file), and no config needs them.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            mark = event.start_mark
            raise yaml.YAMLError(
                f"YAML aliases (*{event.anchor}) are not allowed in empanada configs "
                f"(line {mark.line + 1}); write the values out"
            )
        return super().compose_node(parent, index)


def load_yaml(text: str):
    """Parse YAML config text safely: plain data only, no tags, no aliases.

    Parameters
    ----------
    text : str
        The YAML document.

    Returns
    -------
    object
        Plain dicts, lists, strings and numbers (None for an empty document).

    Raises
    ------
    yaml.YAMLError
        Invalid YAML, a Python tag, or an alias.

    Examples
    --------
    >>> load_yaml("{a: 1, b: [x, y]}")
    {'a': 1, 'b': ['x', 'y']}
    """
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _where(source, name) -> str:
    return str(source) if source is not None else f"model config {name!r}"


def _fail(where: str, key: str, what: str, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{where}: `{key}` must be {what}; got {shown} ({type(value).__name__})")


def _as_source(value, key, where, *, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        what = "a path or URL (or null)" if optional else "a path or URL"
        raise _fail(where, key, what, value)
    return value.strip()


def _as_int(value, key, where, *, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _fail(where, key, f"an integer >= {minimum}", value)
    return int(value)


def _as_float(value, key, where) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _fail(where, key, "a finite number", value)
    return float(value)


def _as_norms(value, where) -> Norms:
    if isinstance(value, Norms):
        value = value._asdict()
    if not isinstance(value, Mapping) or set(value) != {"mean", "std"}:
        raise _fail(where, "norms", "a mapping with exactly the keys `mean` and `std`", value)
    mean = _as_float(value["mean"], "norms.mean", where)
    std = _as_float(value["std"], "norms.std", where)
    if std <= 0:
        raise _fail(where, "norms.std", "positive", value["std"])
    return Norms(mean, std)


def _as_ids(value, key, where) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise _fail(where, key, "a list of positive class ids", value)
    ids = tuple(_as_int(v, f"{key}[{i}]", where) for i, v in enumerate(value))
    if len(set(ids)) != len(ids):
        raise _fail(where, key, "a list without repeated ids", value)
    return ids


def _as_class_names(value, labels, where) -> Mapping[int, str]:
    if isinstance(value, (list, tuple)):
        # The very old form: one name per label, in label order.
        if len(value) != len(labels):
            raise _fail(
                where, "class_names", f"a mapping {{id: name}} (a list needs one name per "
                f"label, {len(labels)} here)", value,
            )
        value = dict(zip(sorted(labels), value))
    if not isinstance(value, Mapping):
        raise _fail(where, "class_names", "a mapping {class_id: name}", value)
    names = {}
    for k, v in value.items():
        if isinstance(k, str) and k.strip().isdigit():
            k = int(k)
        k = _as_int(k, f"class_names key {k!r}", where)
        if not isinstance(v, str):
            raise _fail(where, f"class_names[{k}]", "a string", v)
        names[k] = v
    if set(names) != set(labels):
        raise ConfigError(
            f"{where}: `class_names` must name every id in `labels` and nothing else; "
            f"labels are {sorted(labels)}, class_names has {sorted(names)}"
        )
    return MappingProxyType(dict(sorted(names.items())))


def _check_plain(value, key, where):
    """Raise unless ``value`` is made of YAML-safe plain types."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise _fail(where, key, "made of plain YAML types", k)
            _check_plain(v, f"{key}.{k}", where)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]", where)
        return
    raise _fail(where, key, "made of plain YAML types (dict, list, str, number, bool, null)",
                value)


def _as_mapping(value, key, where, *, optional=True):
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise _fail(where, key, "a mapping", value)
    _check_plain(value, key, where)
    return MappingProxyType(copy.deepcopy(dict(value)))


def _as_digest(value, key, where):
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX64.match(value.strip()):
        raise _fail(where, key, "a SHA-256 hex digest (64 hex characters) or null", value)
    return value.strip().lower()


def _plain(value):
    """Deep copy into plain dicts and lists, ready for ``yaml.safe_dump``."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelConfig:
    """One registered model, as described by its YAML config.

    Build it with :meth:`from_yaml` or :meth:`from_dict`; both validate every key.
    Direct construction validates and normalises the fields the same way.

    Parameters
    ----------
    name : str
        Registry name (the config file name without ``.yaml``).
    model : str
        Path or URL of the TorchScript file. A relative path is resolved against the
        folder of :attr:`source` by the registry.
    norms : Norms or mapping
        ``mean`` and ``std`` as fractions of the image dtype maximum.
    padding_factor : int
        Height and width are padded to a multiple of this before inference.
    thing_list, labels : sequence of int
        Instance class ids and all class ids (``thing_list`` is a subset of ``labels``).
    class_names : mapping of int to str
        A name for every id in ``labels``.
    model_quantized : str or None
        Path or URL of the int8 TorchScript file (CPU only).
    description : str
        Free text.
    finetune : mapping or None
        The ``FINETUNE`` block (criterion, dataset and engine settings), kept as is.
    sha256, sha256_quantized : str or None
        Expected SHA-256 hex digests of the two weight files.
    arch : str or None
        Architecture name (e.g. ``"PanopticBiFPNPR"``), when known.
    arch_params : mapping or None
        The ``MODEL`` block (builder arguments), when present.
    extra : mapping
        Unknown top-level keys, written back unchanged.
    source : Path or None
        The file the config was read from (not compared).

    Raises
    ------
    ConfigError
        A field has the wrong type or value, or ``thing_list`` is not a subset of
        ``labels``.

    Examples
    --------
    >>> cfg = ModelConfig.from_dict(
    ...     {"model": "tiny.pth", "norms": {"mean": 0.5, "std": 0.1},
    ...      "padding_factor": 16, "thing_list": [1], "labels": [1],
    ...      "class_names": {1: "mito"}}, name="tiny")
    >>> cfg.norms
    Norms(mean=0.5, std=0.1)
    >>> cfg.to_dict()["class_names"]
    {1: 'mito'}
    """

    name: str
    model: str
    norms: Norms
    padding_factor: int
    thing_list: tuple[int, ...]
    labels: tuple[int, ...]
    class_names: Mapping[int, str] = field(hash=False)
    model_quantized: str | None = None
    description: str = ""
    finetune: Mapping[str, Any] | None = field(default=None, hash=False)
    sha256: str | None = None
    sha256_quantized: str | None = None
    arch: str | None = None
    arch_params: Mapping[str, Any] | None = field(default=None, hash=False)
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self):
        where = _where(self.source, self.name)
        set_ = object.__setattr__  # frozen: normalise in place once
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"{where}: the model name must be a non-empty string")
        if self.source is not None:
            set_(self, "source", Path(self.source))
        set_(self, "model", _as_source(self.model, "model", where))
        set_(self, "model_quantized",
             _as_source(self.model_quantized, "model_quantized", where, optional=True))
        set_(self, "norms", _as_norms(self.norms, where))
        set_(self, "padding_factor", _as_int(self.padding_factor, "padding_factor", where))
        set_(self, "labels", _as_ids(self.labels, "labels", where))
        set_(self, "thing_list", _as_ids(self.thing_list, "thing_list", where))
        if not set(self.thing_list) <= set(self.labels):
            raise ConfigError(
                f"{where}: `thing_list` {list(self.thing_list)} must be a subset of "
                f"`labels` {list(self.labels)}"
            )
        set_(self, "class_names", _as_class_names(self.class_names, self.labels, where))
        description = "" if self.description is None else self.description
        if not isinstance(description, str):
            raise _fail(where, "description", "a string", description)
        set_(self, "description", description)
        set_(self, "finetune", _as_mapping(self.finetune, "FINETUNE", where))
        set_(self, "arch_params", _as_mapping(self.arch_params, "MODEL", where))
        if self.arch is not None and not isinstance(self.arch, str):
            raise _fail(where, "arch", "a string or null", self.arch)
        for key, arch in (("arch", self.arch),
                          ("MODEL.arch", (self.arch_params or {}).get("arch"))):
            if arch is not None and arch not in ARCHITECTURES:
                raise _fail(where, key, f"one of {', '.join(ARCHITECTURES)}", arch)
        set_(self, "sha256", _as_digest(self.sha256, "sha256", where))
        set_(self, "sha256_quantized",
             _as_digest(self.sha256_quantized, "sha256_quantized", where))
        extra = _as_mapping(self.extra, "extra", where, optional=False)
        clash = sorted(set(extra) & set(_KNOWN))
        if clash:
            raise ConfigError(f"{where}: `extra` must not repeat schema keys; got {clash}")
        set_(self, "extra", extra)

    @property
    def base_dir(self) -> Path | None:
        """Folder that relative model paths are resolved against (None: the cwd)."""
        return None if self.source is None else self.source.parent

    @property
    def label_divisor(self) -> int:
        """``FINETUNE.engine_params.label_divisor`` (or ``dataset_params``), else 1000."""
        ft = self.finetune or {}
        for block in ("engine_params", "dataset_params"):
            params = ft.get(block)
            if isinstance(params, Mapping):
                value = params.get("label_divisor")
                if isinstance(value, numbers.Integral) and not isinstance(value, bool) \
                        and value > 0:
                    return int(value)
        return 1000

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str, source=None) -> ModelConfig:
        """Validate a parsed config mapping.

        Parameters
        ----------
        data : mapping
            The YAML content.
        name : str
            Registry name to give the model.
        source : path-like, optional
            File the mapping came from; used in error messages and to resolve
            relative model paths.

        Returns
        -------
        ModelConfig

        Raises
        ------
        ConfigError
            A required key is missing or a value is wrong; the message names the
            file (or the name) and the key.
        """
        where = _where(source, name)
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{where}: a model config must be a mapping of keys to values; got "
                f"{type(data).__name__}"
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ConfigError(
                f"{where}: missing required key(s) {', '.join(f'`{k}`' for k in missing)} "
                f"(a model config needs {', '.join(_REQUIRED)})"
            )
        extra = {k: v for k, v in data.items() if k not in _KNOWN}
        bad_keys = [k for k in extra if not isinstance(k, str)]
        if bad_keys:
            raise ConfigError(f"{where}: top-level keys must be strings; got {bad_keys!r}")
        return cls(
            name=name,
            model=data["model"],
            model_quantized=data.get("model_quantized"),
            sha256=data.get("sha256"),
            sha256_quantized=data.get("sha256_quantized"),
            norms=data["norms"],
            padding_factor=data["padding_factor"],
            thing_list=data["thing_list"],
            labels=data["labels"],
            class_names=data["class_names"],
            description=data.get("description", ""),
            arch=data.get("arch"),
            arch_params=data.get("MODEL"),
            finetune=data.get("FINETUNE"),
            extra=extra,
            source=None if source is None else Path(source),
        )

    @classmethod
    def from_yaml(cls, path, *, name: str | None = None) -> ModelConfig:
        """Read and validate a config file (:func:`load_yaml`: safe, no aliases).

        Parameters
        ----------
        path : path-like
            The ``.yaml`` file.
        name : str, optional
            Registry name; defaults to the file name without its suffix.

        Returns
        -------
        ModelConfig

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ConfigError
            The file is not valid YAML or a key is missing or wrong.
        """
        path = Path(path).expanduser().absolute()
        if not path.is_file():
            raise FileNotFoundError(f"model config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not a valid YAML file: {exc}") from exc
        return cls.from_dict(data, name=name or path.stem, source=path)

    def to_dict(self) -> dict[str, Any]:
        """The config as the original YAML mapping (plain types, schema keys first)."""
        out: dict[str, Any] = {"model": self.model, "model_quantized": self.model_quantized}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        if self.sha256_quantized is not None:
            out["sha256_quantized"] = self.sha256_quantized
        out["norms"] = {"mean": self.norms.mean, "std": self.norms.std}
        out["padding_factor"] = self.padding_factor
        out["thing_list"] = list(self.thing_list)
        out["labels"] = list(self.labels)
        out["class_names"] = dict(self.class_names)
        out["description"] = self.description
        if self.arch is not None:
            out["arch"] = self.arch
        if self.arch_params is not None:
            out["MODEL"] = _plain(self.arch_params)
        if self.finetune is not None:
            out["FINETUNE"] = _plain(self.finetune)
        out.update(_plain(self.extra))
        return out

    def to_yaml(self, path) -> Path:
        """Write the config atomically (a temporary file, then ``os.replace``).

        Parameters
        ----------
        path : path-like
            Destination ``.yaml`` file; its folder must exist.

        Returns
        -------
        Path
            The written file.
        """
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        with atomic_output(path) as f:
            f.write(text.encode("utf-8"))
        return path
