"""The model registry: find, resolve, load, register and archive models.

Configs are looked up in two places, later ones overriding earlier ones by name:

1. the built-in configs shipped in ``empanada_models/configs/*.yaml``;
2. the user folder ``$EMPANADA_HOME/configs/*.yaml`` (default ``~/.empanada/configs``).

The ``~/.empanada`` layout of the original is kept: ``configs/`` (registered models),
``cache/`` (downloaded weights; files the original cached directly in ``~/.empanada``
are found too) and ``models/`` (weights copied in by :func:`register_model` and
bundle import); see :mod:`empanada_models._home`. Every call re-reads the folders,
so newly registered models show up at once. Weights are fetched by
:mod:`empanada_models._download`; :func:`resolve_model_config` is the one place
where a registry name, a YAML path or a config becomes a validated config.

Weights are TorchScript files loaded with ``torch.jit.load`` only; nothing here
unpickles arbitrary objects. torch is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from empanada_core.io import atomic_output

from ._config import ModelConfig
from ._download import (
    _CHUNK,
    ChecksumError,
    ModelDownloadError,
    _classify,
    cached_model_file,
    fetch_model_file,
    file_sha256,
)
from ._home import BUILTIN_CONFIG_DIR, archived_dir, config_dir, models_dir
from ._torchscript import quiet_torchscript

__all__ = [
    "DEFAULT_MODEL",
    "archive_model",
    "ChecksumError",
    "ModelDownloadError",
    "ModelExistsError",
    "ModelNotFoundError",
    "cached_model_file",
    "fetch_model_file",
    "file_sha256",
    "get_default_model",
    "get_model_config",
    "check_model_file",
    "WeightsFileError",
    "list_models",
    "resolve_model_config",
    "load_model",
    "models_dir",
    "register_model",
]

#: Name of the model used when none is chosen: the built-in MitoLite_v1, whose weights
#: ship inside this package (``weights/``), so it works offline.
DEFAULT_MODEL = "MitoLite_v1"

ProgressCallback = Callable[[int, "int | None"], None]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ModelNotFoundError(LookupError):
    """No registered model has the requested name; the message lists the names."""


class ModelExistsError(FileExistsError):
    """A model with this name is already registered (pass ``overwrite=True``)."""


# -------------------------------------------------------------------------- discovery


def _discover() -> dict[str, tuple[Path, str]]:
    """``{name: (config file, origin)}``, built-ins first; origin is 'built-in',
    'user' or 'user (overrides built-in)'."""
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(BUILTIN_CONFIG_DIR.glob("*.yaml")):
        found[path.stem] = (path, "built-in")
    user = config_dir()
    if user.is_dir():
        users = {}
        for path in sorted(user.glob("*.yaml")):
            if path.name.startswith(".") or not path.is_file():
                continue
            origin = "user (overrides built-in)" if path.stem in found else "user"
            users[path.stem] = (path, origin)
        for name, entry in users.items():
            found[name] = entry
    return found


def list_models() -> list[str]:
    """Names of all registered models.

    Built-in models come first, then user models; each group is sorted. The folders
    are re-read on every call.

    Returns
    -------
    list of str
    """
    return list(_discover())


def get_default_model() -> str:
    """Name of the model used when none is chosen (:data:`DEFAULT_MODEL`)."""
    return DEFAULT_MODEL


def get_model_config(name: str) -> ModelConfig:
    """Read and validate the config of a registered model.

    Parameters
    ----------
    name : str
        Registry name, as listed by :func:`list_models`.

    Returns
    -------
    ModelConfig

    Raises
    ------
    ModelNotFoundError
        No model has this name; the message lists the available names.
    ConfigError
        The config file is invalid.
    """
    found = _discover()
    if name not in found:
        names = ", ".join(found) or "none"
        raise ModelNotFoundError(
            f"no model named {name!r}; available models: {names}. Register one with "
            f"`empanada models register NAME CONFIG`."
        )
    return ModelConfig.from_yaml(found[name][0], name=name)


def resolve_model_config(name_or_config=None) -> ModelConfig:
    """The validated config for a registry name, a YAML path or a config.

    Every package (inference, training, finetuning, the CLIs and the napari
    plugin) turns what the user gave into a config through this function.
    Nothing is downloaded or loaded.

    Parameters
    ----------
    name_or_config : str, path-like, ModelConfig or None
        ``None`` for the default model (:func:`get_default_model`); a registry
        name (see :func:`list_models`); a path to a ``.yaml`` / ``.yml`` config
        (a string ending so, holding a path separator, or naming an existing
        file); or a :class:`ModelConfig`, returned as it is.

    Returns
    -------
    ModelConfig

    Raises
    ------
    ModelNotFoundError
        A name that is not registered (the message lists the names).
    FileNotFoundError
        A config path that does not exist.
    ConfigError
        The config is invalid.
    TypeError
        Anything else.

    Examples
    --------
    >>> from empanada_models import resolve_model_config
    >>> resolve_model_config().name
    'MitoLite_v1'
    """
    if name_or_config is None:
        return get_model_config(get_default_model())
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, (str, os.PathLike)):
        text = os.fspath(name_or_config)
        path = Path(text).expanduser()
        looks_like_file = text.endswith((".yaml", ".yml")) or os.sep in text or (
            os.altsep is not None and os.altsep in text)
        if path.is_file() and (looks_like_file or text not in _discover()):
            return ModelConfig.from_yaml(path)
        if looks_like_file:
            raise FileNotFoundError(f"model config file not found: {text}")
        return get_model_config(text)
    raise TypeError(
        f"a model must be given as a registered name, a path to a .yaml config or a "
        f"ModelConfig; got {type(name_or_config).__name__}"
    )


_resolve_config = resolve_model_config


def _check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '+' or '-', "
            f"starting with a letter or digit (no spaces or path separators)"
        )
    return name


# ---------------------------------------------------------------------------- loading


class WeightsFileError(ValueError):
    """A weights file that is not a loadable TorchScript model."""


def check_model_file(path, *, what: str = "model file") -> Path:
    """Check that a file is a TorchScript model before it is registered or shipped.

    The file's zip layout is read first, without unpickling anything: a plain
    pickle, a ``torch.save`` state dict, random bytes and truncated files are
    refused there. The model is then loaded with ``torch.jit.load`` (which
    runs no Python code from the file) to catch damaged archives.

    Parameters
    ----------
    path : path-like
        The weights file.
    what : str
        How to name the file in messages.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        No such file.
    WeightsFileError
        Not a TorchScript model (the message says why).
    """
    import zipfile

    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    hint = ("empanada models are TorchScript files saved with torch.jit.save (the original's "
            ".pth files are); export a trained model with `empanada models export` or "
            "empanada_models.export_torchscript")
    if not zipfile.is_zipfile(path):
        raise WeightsFileError(f"{what} {path} is not a TorchScript model (not a zip "
                               f"archive: truncated, a plain pickle or another format); {hint}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsFileError(f"{what} {path} is damaged ({exc}); {hint}") from None
    layout = {n.split("/", 1)[1].split("/", 1)[0] for n in names if "/" in n}
    if not {"data.pkl", "code", "constants.pkl"} <= layout:
        kind = "a torch.save checkpoint or state dict" if "data.pkl" in layout else "an archive"
        raise WeightsFileError(f"{what} {path} is {kind}, not a TorchScript model; {hint}")
    try:
        _jit_load(path, "cpu")
    except RuntimeError as exc:
        raise WeightsFileError(f"{what} {path} does not load: {exc}") from None
    return path


def _jit_load(path: Path, device):
    import torch

    with quiet_torchscript():
        try:
            return torch.jit.load(str(path), map_location=device)
        except RuntimeError as exc:
            raise RuntimeError(
                f"{path} is not a loadable TorchScript model ({exc}); empanada models are "
                f"TorchScript files saved with torch.jit.save"
            ) from exc


def load_model(name_or_config, *, device="cpu", quantized: bool = False,
               progress: ProgressCallback | None = None):
    """Load a registered model as an evaluation-mode TorchScript module.

    Parameters
    ----------
    name_or_config : str, path-like or ModelConfig
        Model name, path to a ``.yaml`` config, or a config.
    device : str or torch.device
        Where to map the weights.
    quantized : bool
        Load the int8 weights (``model_quantized``); CPU only.
    progress : callable, optional
        ``progress(bytes_done, bytes_total_or_None)``, called while downloading.

    Returns
    -------
    torch.jit.ScriptModule
        Called as ``model(image, render_steps, interpolate_ins)`` on a
        ``(1, 1, H, W)`` float tensor; returns ``sem_logits``, ``ctr_hmp`` and
        ``offsets``.

    Raises
    ------
    ValueError
        ``quantized=True`` on a non-CPU device, or the model has no quantized weights,
        or ``device`` is not a device.
    ModelNotFoundError, ConfigError, FileNotFoundError, ModelDownloadError, ChecksumError
        See :func:`get_model_config` and :func:`fetch_model_file`.
    RuntimeError
        The file is not TorchScript.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda:0'; "
                         f"got {device!r}") from exc
    if quantized and dev.type != "cpu":
        raise ValueError(
            f"quantized models run on the CPU only; got device={device!r}. Use "
            f"quantized=False on {dev.type}"
        )
    config = _resolve_config(name_or_config)
    path = fetch_model_file(config, quantized=quantized, progress=progress)
    model = _jit_load(path, dev)
    model.eval()
    return model


# ------------------------------------------------------------------------ registering


def _as_config(config, name: str) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return dataclasses.replace(config, name=name)
    if isinstance(config, Mapping):
        return ModelConfig.from_dict(config, name=name)
    if isinstance(config, (str, os.PathLike)):
        return ModelConfig.from_yaml(config, name=name)
    raise TypeError(f"`config` must be a path to a .yaml file, a mapping or a ModelConfig; "
                    f"got {type(config).__name__}")


def _copy_hashed(src: Path, dst: Path, *, move: bool = False) -> str:
    """Copy (or move, within one file system) ``src`` to ``dst`` atomically; return
    the SHA-256 of the bytes written."""
    if move:
        digest = file_sha256(src)
        os.replace(src, dst)
        return digest
    h = hashlib.sha256()
    with open(src, "rb") as fin, atomic_output(dst) as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            fout.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def _place_weights(name, given, dest: Path, config_source: str | None, config_digest,
                   base_dir, key, *, move=False):
    """Return ``(source string, sha256)`` for one weights entry of a new registration."""
    if given is not None:
        text = os.fspath(given)
        kind, where = _classify(text, None)
        if kind == "url":
            return where, None
        if not where.is_file():
            raise FileNotFoundError(f"{key} file for {name!r} not found: {where}")
        check_model_file(where, what=f"{key} file for {name!r}")
        same = dest.exists() and os.path.samefile(where, dest)
        digest = file_sha256(dest) if same else _copy_hashed(where, dest, move=move)
        return str(dest), digest
    if config_source is None:
        return None, None
    kind, where = _classify(config_source, base_dir)
    if kind == "url":
        return where, config_digest
    if not where.is_file():
        raise FileNotFoundError(
            f"`{key}` of the config for {name!r} points to a missing file: {where}; pass "
            f"the weights with "
            + ("quantized_file= / --quantized-file" if key == "model_quantized"
               else "model_file= / --model-file")
        )
    return str(where), config_digest


def register_model(name: str, config, model_file=None, quantized_file=None, *,
                   overwrite: bool = False) -> ModelConfig:
    """Register a model under ``name`` in the user config folder.

    Parameters
    ----------
    name : str
        New registry name: letters, digits, ``.``, ``_``, ``+``, ``-``.
    config : path-like, mapping or ModelConfig
        The model's config (e.g. the ``.yaml`` written by training or finetuning).
    model_file, quantized_file : path-like or str, optional
        Weights to use instead of ``model`` / ``model_quantized`` of the config. A
        local file is copied to ``<home>/models/<name>.pth`` (``<name>_quantized.pth``)
        and its SHA-256 recorded; an http(s) URL is stored as is.
    overwrite : bool
        Replace an existing model of the same name (a built-in one is shadowed, not
        deleted).

    Returns
    -------
    ModelConfig
        The config as written to ``<home>/configs/<name>.yaml``.

    Raises
    ------
    ValueError
        Invalid name.
    ModelExistsError
        The name is taken and ``overwrite`` is False.
    FileNotFoundError
        A local weights file (given or named by the config) does not exist.
    ConfigError
        The config is invalid.

    Notes
    -----
    Relative paths in the config are made absolute (relative to the config file),
    so the written config works from any folder.
    """
    return _register(name, config, model_file, quantized_file, overwrite=overwrite)


def _register(name, config, model_file, quantized_file, *, overwrite, move=False):
    _check_name(name)
    cfg = _as_config(config, name)
    if not overwrite and name in _discover():
        raise ModelExistsError(
            f"a model named {name!r} is already registered; choose another name or "
            f"overwrite it (overwrite=True, --overwrite)"
        )
    target = config_dir() / f"{name}.yaml"
    weights = models_dir()
    if model_file is not None or quantized_file is not None:
        weights.mkdir(parents=True, exist_ok=True)
    model, sha = _place_weights(name, model_file, weights / f"{name}.pth", cfg.model,
                                cfg.sha256, cfg.base_dir, "model", move=move)
    quant, sha_q = _place_weights(name, quantized_file, weights / f"{name}_quantized.pth",
                                  cfg.model_quantized, cfg.sha256_quantized, cfg.base_dir,
                                  "model_quantized", move=move)
    new = dataclasses.replace(cfg, name=name, model=model, model_quantized=quant, sha256=sha,
                              sha256_quantized=sha_q, source=target)
    target.parent.mkdir(parents=True, exist_ok=True)
    new.to_yaml(target)
    return new


def archive_model(name: str) -> Path:
    """Take a user model out of the registry, keeping its files.

    The config moves to ``<home>/archived/<name>[-N]/<name>.yaml`` together with
    the weight files that registration or import copied into ``<home>/models``;
    weights elsewhere (a training folder, a URL) are left where they are. A
    built-in model that the user model shadowed is listed again.

    Parameters
    ----------
    name : str
        A user-registered model (see :func:`list_models`).

    Returns
    -------
    Path
        The archive folder. To restore the model, register its config again.

    Raises
    ------
    ModelNotFoundError
        No model has this name.
    ValueError
        The model is built in (built-in configs ship with the package and cannot
        be archived).
    """
    found = _discover()
    if name not in found:
        raise ModelNotFoundError(
            f"no model named {name!r}; available models: {', '.join(found) or 'none'}")
    path, origin = found[name]
    if origin == "built-in":
        raise ValueError(f"{name!r} is a built-in model and cannot be archived; only models "
                         f"registered or imported by the user can")
    config = ModelConfig.from_yaml(path, name=name)
    own = models_dir().resolve()
    weights = []
    for source in (config.model, config.model_quantized):
        if source is None:
            continue
        kind, where = _classify(source, config.base_dir)
        if kind == "path" and where.is_file() and where.resolve().parent == own:
            weights.append(where)
    base = archived_dir()
    dest = base / name
    n = 1
    while dest.exists():
        dest = base / f"{name}-{n}"
        n += 1
    dest.mkdir(parents=True)
    os.replace(path, dest / path.name)  # first: the model leaves the registry at once
    for w in weights:
        os.replace(w, dest / w.name)
    return dest
