"""Model weights: where a config's sources point, the download cache, SHA-256 checks.

A source is a local path (relative to the config's folder), a ``file://`` URL or
an ``http(s)`` URL. URLs are downloaded once into ``<home>/cache`` (files the
original cached directly in ``~/.empanada`` are found too), through a temporary
file, with a read timeout and stall detection, and checked against the config's
``sha256`` when it has one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from empanada_core.io import atomic_output, remove_stale_temporaries

from ._config import ConfigError, ModelConfig
from ._home import cache_dir, empanada_home

__all__ = ["ChecksumError", "ModelDownloadError", "cached_download", "cached_model_file",
           "download_file", "fetch_model_file", "file_sha256"]

ProgressCallback = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60.0
# A download that receives less than this many bytes in any window of this many
# seconds has stalled (a server trickling a few bytes never hits the read timeout).
_STALL_WINDOW_S = 60.0
_STALL_MIN_BYTES = 64 * 1024


class ModelDownloadError(OSError):
    """Model weights could not be downloaded; the message names the URL and the fix."""


class ChecksumError(OSError):
    """A weights file does not have the SHA-256 digest its config expects."""


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


def cached_download(url: str) -> Path | None:
    """Where :func:`download_file` keeps ``url`` in the cache, or None if not downloaded."""
    for path in (_cache_path(url), _legacy_cache_path(url)):
        if path is not None and path.is_file():
            return path
    return None


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
    config = _resolved(config)
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
    config = _resolved(config)
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


def _resolved(name_or_config) -> ModelConfig:
    from ._registry import resolve_model_config  # the registry imports this module

    return resolve_model_config(name_or_config)
