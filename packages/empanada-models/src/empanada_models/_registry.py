"""The model registry: find configs, fetch and verify weights, load TorchScript models.

Configs are looked up in two places, later ones overriding earlier ones by name:

1. the built-in configs shipped in ``empanada_models/configs/*.yaml``;
2. the user folder ``$EMPANADA_HOME/configs/*.yaml`` (default ``~/.empanada/configs``).

The ``~/.empanada`` layout of the original is kept: ``configs/`` (registered models),
``cache/`` (downloaded weights; files the original cached directly in ``~/.empanada``
are found too) and ``models/`` (weights copied in by :func:`register_model` and
bundle import). Every call re-reads the folders, so newly registered models show up
at once.

Weights are TorchScript files loaded with ``torch.jit.load`` only; nothing here
unpickles arbitrary objects. torch is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import math
import os
import re
import ssl
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from ._config import ConfigError, ModelConfig, atomic_output, remove_stale_temporaries

__all__ = [
    "DEFAULT_MODEL",
    "archive_model",
    "archived_dir",
    "ChecksumError",
    "ModelDownloadError",
    "ModelExistsError",
    "ModelNotFoundError",
    "cache_dir",
    "cached_model_file",
    "config_dir",
    "download_file",
    "empanada_home",
    "fetch_model_file",
    "file_sha256",
    "get_default_model",
    "get_model_config",
    "check_model_file",
    "WeightsFileError",
    "list_models",
    "load_model",
    "model_info",
    "models_dir",
    "register_model",
]

#: Name of the model used when none is chosen: the built-in MitoLite_v1, whose weights
#: ship inside this package (``weights/``), so it works offline.
DEFAULT_MODEL = "MitoLite_v1"

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"

ProgressCallback = Callable[[int, "int | None"], None]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60.0
# A download that receives less than this many bytes in any window of this many
# seconds has stalled (a server trickling a few bytes never hits the read timeout).
_STALL_WINDOW_S = 60.0
_STALL_MIN_BYTES = 64 * 1024


class ModelNotFoundError(LookupError):
    """No registered model has the requested name; the message lists the names."""


class ModelExistsError(FileExistsError):
    """A model with this name is already registered (pass ``overwrite=True``)."""


class ModelDownloadError(OSError):
    """Model weights could not be downloaded; the message names the URL and the fix."""


class ChecksumError(OSError):
    """A weights file does not have the SHA-256 digest its config expects."""


# --------------------------------------------------------------------------- folders


def empanada_home() -> Path:
    """The empanada folder: ``$EMPANADA_HOME`` if set, else ``~/.empanada``."""
    env = os.environ.get("EMPANADA_HOME")
    return Path(env).expanduser() if env else Path.home() / ".empanada"


def config_dir() -> Path:
    """Folder of user-registered configs, ``<home>/configs``."""
    return empanada_home() / "configs"


def cache_dir() -> Path:
    """Folder of downloaded weights, ``<home>/cache``."""
    return empanada_home() / "cache"


def models_dir() -> Path:
    """Folder of weights copied in by registration and bundle import, ``<home>/models``."""
    return empanada_home() / "models"


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


def _resolve_config(name_or_config) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, (str, os.PathLike)):
        text = os.fspath(name_or_config)
        looks_like_file = text.endswith((".yaml", ".yml"))
        if looks_like_file and Path(text).expanduser().is_file():
            return ModelConfig.from_yaml(text)
        if looks_like_file and text not in _discover():
            raise FileNotFoundError(f"model config file not found: {text}")
        return get_model_config(text)
    raise TypeError(
        f"`name_or_config` must be a model name, a path to a .yaml config or a "
        f"ModelConfig; got {type(name_or_config).__name__}"
    )


def _check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '+' or '-', "
            f"starting with a letter or digit (no spaces or path separators)"
        )
    return name


# ---------------------------------------------------------------------------- sources


def _classify(source: str, base_dir: Path | None) -> tuple[str, str | Path]:
    """``('url', url)`` for http(s) sources, else ``('path', absolute path)``."""
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return "url", source
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"file URL {source!r} names a remote host; use a local path")
        return "path", Path(urllib.request.url2pathname(parsed.path))
    if len(scheme) > 1:  # one letter is a Windows drive
        raise ConfigError(
            f"unsupported model source {source!r}: use a local path, a file:// URL or an "
            f"http(s) URL"
        )
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = (base_dir / path) if base_dir is not None else path.absolute()
    return "path", path


def _pick(config: ModelConfig, quantized: bool) -> tuple[str, str | None, str]:
    if quantized:
        if config.model_quantized is None:
            raise ValueError(
                f"model {config.name!r} has no quantized weights (`model_quantized` is "
                f"null); use quantized=False"
            )
        return config.model_quantized, config.sha256_quantized, "model_quantized"
    return config.model, config.sha256, "model"


def _url_basename(url: str) -> str:
    return PurePosixPath(unquote(urlparse(url).path)).name


def _cache_path(url: str) -> Path:
    """Cache file of a URL: ``<basename stem>-<12 hex of sha256(url)><suffix>``."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", _url_basename(url)).lstrip(".") or "model.pth"
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return cache_dir() / (f"{stem}-{digest}.{suffix}" if suffix else f"{stem}-{digest}")


def _legacy_cache_path(url: str) -> Path | None:
    """Where the original cached a URL: ``<home>/<basename of the URL path>``."""
    name = os.path.basename(urlparse(url).path)
    return empanada_home() / name if name and name not in (".", "..") else None


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: str | None, what: str, hint: str = "") -> None:
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {what} file {path}: expected sha256 {expected}, got "
            f"{actual}.{(' ' + hint) if hint else ''}"
        )


def cached_model_file(config, *, quantized: bool = False) -> Path | None:
    """The local weights file of a model if it is available without downloading.

    Parameters
    ----------
    config : str or ModelConfig
        Model name, config path or config.
    quantized : bool
        Look for the quantized weights.

    Returns
    -------
    Path or None
        The local file, the cached download, or None when a download is needed (or
        a local file is missing). The checksum is not verified here.
    """
    config = _resolve_config(config)
    source, _, _ = _pick(config, quantized)
    kind, where = _classify(source, config.base_dir)
    if kind == "path":
        return where if where.is_file() else None
    cached = _cache_path(where)
    if cached.is_file():
        return cached
    legacy = _legacy_cache_path(where)
    if legacy is not None and legacy.is_file():
        return legacy
    return None


def fetch_model_file(config, *, quantized: bool = False,
                     progress: ProgressCallback | None = None) -> Path:
    """Local path of a model's weights, downloading them into the cache if needed.

    Parameters
    ----------
    config : str or ModelConfig
        Model name, config path or config.
    quantized : bool
        Fetch the quantized weights (``model_quantized``).
    progress : callable, optional
        Called as ``progress(bytes_done, bytes_total_or_None)`` while downloading.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        A local model path does not exist.
    ModelDownloadError
        The download failed (offline, HTTP error, TLS error, truncated).
    ChecksumError
        The file does not match ``sha256`` / ``sha256_quantized``.
    ValueError
        ``quantized=True`` but the model has no quantized weights.

    Notes
    -----
    A URL is downloaded once into ``<home>/cache/`` (name: URL basename plus a short
    hash of the full URL), through a temporary file that is moved into place only
    when complete and verified. TLS certificates are verified (``SSL_CERT_FILE`` is
    honoured). A file that the original cached as ``<home>/<basename>`` is reused.
    """
    config = _resolve_config(config)
    source, expected, key = _pick(config, quantized)
    what = f"{key} of {config.name!r}"
    kind, where = _classify(source, config.base_dir)
    if kind == "path":
        if not where.is_file():
            origin = f" (`{key}` in {config.source})" if config.source else ""
            raise FileNotFoundError(f"weights file of model {config.name!r} not found: "
                                    f"{where}{origin}")
        _verify(where, expected, what)
        return where
    cached = _cache_path(where)
    if cached.is_file():
        _verify(cached, expected, what, f"Delete {cached} to download it again.")
        return cached
    legacy = _legacy_cache_path(where)
    if legacy is not None and legacy.is_file():
        _verify(legacy, expected, what, f"Delete {legacy} to download it again.")
        return legacy
    cached.parent.mkdir(parents=True, exist_ok=True)
    _download(where, cached, expected=expected, progress=progress, config=config, key=key)
    return cached


def _ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("SSL_CERT_FILE") or None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ModelDownloadError(f"SSL_CERT_FILE={cafile!r} could not be loaded as CA "
                                 f"certificates: {exc}") from exc


def download_file(url: str, *, what: str = "file", hint: str = "",
                  expected: str | None = None, progress: ProgressCallback | None = None) -> Path:
    """Download ``url`` once into the cache and return the local file.

    The file is kept in :func:`cache_dir` under the URL's basename plus 12 hex digits of
    the URL's SHA-256 (two URLs never share a file); a later call returns it without
    network access. The download is atomic (a temporary file moved into place).

    Parameters
    ----------
    url : str
        ``http(s)`` URL.
    what : str, optional
        What the file is, for error messages (e.g. ``"encoder weights"``).
    hint : str, optional
        Appended to error messages: how to get on without the download.
    expected : str, optional
        SHA-256 hex digest the file must have (checked after download and on reuse).
    progress : callable, optional
        ``progress(done_bytes, total_bytes_or_None)``.

    Returns
    -------
    Path

    Raises
    ------
    ModelDownloadError
        Offline, HTTP error, or a download cut short (the message names the URL).
    ChecksumError
        The file does not match ``expected``.
    """
    dest = _cache_path(url)
    if dest.is_file():
        _verify(dest, expected, what, hint)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _fetch(url, dest, expected=expected, progress=progress, what=what, hint=hint)
    return dest


def _download(url: str, dest: Path, *, expected: str | None, progress, config: ModelConfig,
              key: str) -> None:
    flag = "--quantized-file" if key == "model_quantized" else "--model-file"
    config_arg = str(config.source) if config.source is not None else "CONFIG.yaml"
    hint = (
        f"To use a local copy instead, get the file another way and register it: "
        f"`empanada models register {config.name} {config_arg} {flag} FILE --overwrite`."
    )
    _fetch(url, dest, expected=expected, progress=progress, what=f"{key} of {config.name!r}",
           hint=hint)


def _fetch(url: str, dest: Path, *, expected: str | None, progress, what: str,
           hint: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "empanada-models"})
    try:
        response = urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S,
                                          context=_ssl_context())
    except urllib.error.HTTPError as exc:
        raise ModelDownloadError(
            f"could not download {what} from {url}: the server answered HTTP {exc.code} "
            f"{exc.reason}. {hint}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, ModelDownloadError):
            raise
        reason = getattr(exc, "reason", exc)
        raise ModelDownloadError(
            f"could not download {what} from {url}: {reason}. Check the network "
            f"connection (are you offline?). {hint}"
        ) from exc

    def chunks():
        window_start, window_bytes = time.monotonic(), 0
        while True:
            try:
                # read1: what has arrived, so a trickle is measured, not waited for
                chunk = response.read1(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # lost or timed out
                raise ModelDownloadError(
                    f"download of {what} from {url} failed part-way: {exc}. {hint}"
                ) from exc
            if not chunk:
                return
            window_bytes += len(chunk)
            now = time.monotonic()
            if now - window_start >= _STALL_WINDOW_S:
                if window_bytes < _STALL_MIN_BYTES:
                    raise ModelDownloadError(
                        f"download of {what} from {url} stalled: {window_bytes} bytes in "
                        f"the last {now - window_start:.0f} s. {hint}"
                    )
                window_start, window_bytes = now, 0
            yield chunk

    remove_stale_temporaries(dest)
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        h = hashlib.sha256()
        done = 0
        # Disk errors (full, read-only) propagate as they are: they are not network errors.
        with atomic_output(dest) as f:
            if progress is not None:
                progress(0, total)
            for chunk in chunks():
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if total is not None and done != total:
                raise ModelDownloadError(
                    f"download of {what} from {url} was cut short ({done} of {total} "
                    f"bytes). {hint}"
                )
            actual = h.hexdigest()
            if expected is not None and actual != expected:
                raise ChecksumError(
                    f"checksum mismatch for {what} downloaded from {url}: expected sha256 "
                    f"{expected}, got {actual}. The file was not kept."
                )


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

    with warnings.catch_warnings():
        # TorchScript is the model format of the original; the deprecation notice
        # says nothing the caller can act on.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated",
                                category=DeprecationWarning)
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


def archived_dir() -> Path:
    """Folder of archived models, ``<home>/archived``."""
    return empanada_home() / "archived"


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


# ------------------------------------------------------------------------------- info


def _architecture(config: ModelConfig) -> str | None:
    if config.arch:
        return config.arch
    params = config.arch_params or {}
    arch = params.get("arch")
    return arch if isinstance(arch, str) else None


def _architecture_parameters(arch: str, arch_params) -> int | None:
    """Parameter count of the eager architecture a config's ``MODEL`` block describes."""
    import warnings

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
    config = _resolve_config(name_or_config)
    divisor = config.label_divisor
    arch = _architecture(config)
    multiple = config.padding_factor
    if arch and "bifpn" in arch.lower():
        multiple = math.lcm(multiple, 128)
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
        + (" (padding factor, and 128 for BiFPN models)." if multiple != config.padding_factor
           else " (the padding factor)."),
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

