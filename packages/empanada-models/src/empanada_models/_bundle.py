"""``.empanada`` bundles: one zip file that carries a model from machine to machine.

The format is the original's "Export a model": a flat zip holding ``<stem>.yaml``
(the config, with ``model`` and ``model_quantized`` set to member names),
``<stem>.pth`` and optionally ``<stem>_quantized.pth``, where ``<stem>`` is the bundle
file name without ``.empanada``. Bundles written here open in the original plugin and
the original's bundles import here. Our configs also record the SHA-256 of each
member (extra keys the original ignores).

Import treats the zip as untrusted: members with absolute paths, ``..``, folders,
symlinks, unexpected names or sizes over a limit are rejected before anything is
written, and the weights are verified against the recorded digests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import secrets
import shutil
import stat
import zipfile
from pathlib import Path

import yaml

from empanada_core.io import atomic_output, process_alive

from ._config import ConfigError, ModelConfig, load_yaml
from ._download import _CHUNK, ChecksumError, ProgressCallback, fetch_model_file, file_sha256
from ._home import models_dir
from ._registry import (
    ModelExistsError,
    _check_name,
    _discover,
    _register,
    check_model_file,
    resolve_model_config,
)

__all__ = ["BUNDLE_SUFFIX", "MAX_MEMBER_BYTES", "BundleError", "export_bundle",
           "import_bundle"]

BUNDLE_SUFFIX = ".empanada"
#: Largest weights member accepted by :func:`import_bundle` (4 GiB).
MAX_MEMBER_BYTES = 4 << 30
_MAX_CONFIG_BYTES = 1 << 20


class BundleError(ValueError):
    """A ``.empanada`` file is not a valid, safe model bundle."""


def _bundle_stem(path: Path) -> str:
    name = path.name
    return name[: -len(BUNDLE_SUFFIX)] if name.endswith(BUNDLE_SUFFIX) else path.stem


def export_bundle(name_or_config, out_path, *, overwrite: bool = False,
                  progress: ProgressCallback | None = None) -> Path:
    """Write a model and its config into one ``.empanada`` file.

    Parameters
    ----------
    name_or_config : str, path-like or ModelConfig
        Registered model name, config path or config.
    out_path : path-like
        Destination file ending in ``.empanada``, or an existing folder (the file is
        then ``<folder>/<name>.empanada``).
    overwrite : bool
        Replace an existing file.
    progress : callable, optional
        ``progress(bytes_done, bytes_total_or_None)`` while downloading remote weights.

    Returns
    -------
    Path
        The bundle, written atomically.

    Raises
    ------
    ValueError
        ``out_path`` does not end in ``.empanada``.
    FileExistsError
        ``out_path`` exists and ``overwrite`` is False.
    ModelDownloadError, ChecksumError, FileNotFoundError
        The weights could not be fetched or verified.
    """
    config = resolve_model_config(name_or_config)
    out = Path(out_path).expanduser()
    if out.is_dir():
        out = out / f"{config.name}{BUNDLE_SUFFIX}"
    if not out.name.endswith(BUNDLE_SUFFIX) or out.name == BUNDLE_SUFFIX:
        raise ValueError(f"`out_path` must be a file name ending in {BUNDLE_SUFFIX!r} or a "
                         f"folder; got {os.fspath(out_path)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another name or overwrite it "
                              f"(overwrite=True, --force)")
    stem = _bundle_stem(out)
    weights = check_model_file(fetch_model_file(config, progress=progress),
                               what=f"model file of {config.name!r}")
    quantized = None
    if config.model_quantized is not None:
        quantized = check_model_file(fetch_model_file(config, quantized=True, progress=progress),
                                     what=f"quantized model file of {config.name!r}")
    inner = dataclasses.replace(
        config,
        model=f"{stem}.pth",
        sha256=config.sha256 or file_sha256(weights),
        model_quantized=None if quantized is None else f"{stem}_quantized.pth",
        sha256_quantized=None if quantized is None
        else (config.sha256_quantized or file_sha256(quantized)),
        source=None,
    )
    text = yaml.safe_dump(inner.to_dict(), sort_keys=False, allow_unicode=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as f, zipfile.ZipFile(f, "w") as zf:
        zf.writestr(f"{stem}.yaml", text, compress_type=zipfile.ZIP_DEFLATED)
        # TorchScript files are zip archives already: store them as they are.
        zf.write(weights, inner.model, compress_type=zipfile.ZIP_STORED)
        if quantized is not None:
            zf.write(quantized, inner.model_quantized, compress_type=zipfile.ZIP_STORED)
    return out


def _check_member(info: zipfile.ZipInfo, bundle: Path, limit: int) -> None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"{bundle}: member {name!r} has an absolute path; refusing to "
                          f"import")
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        raise BundleError(f"{bundle}: member {name!r} points outside the bundle ('..'); "
                          f"refusing to import")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BundleError(f"{bundle}: member {name!r} is a symbolic link; refusing to import")
    if info.is_dir() or len(parts) > 1:
        raise BundleError(f"{bundle}: unexpected member {name!r}: a bundle holds only a "
                          f"config and weight files, with no folders")
    if info.file_size > limit:
        raise BundleError(f"{bundle}: member {name!r} is {info.file_size} bytes, over the "
                          f"limit of {limit} bytes")


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, limit: int,
             bundle: Path) -> None:
    """Copy one member to ``dest``, never writing more than its declared size."""
    cap = min(info.file_size, limit)
    written = 0
    with zf.open(info) as src, open(dest, "xb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            written += len(chunk)
            if written > cap:
                raise BundleError(f"{bundle}: member {info.filename!r} holds more data than "
                                  f"its header declares; refusing to import")
            out.write(chunk)


def _pick_member(value, key, names, bundle, member) -> str:
    if value not in names:
        raise BundleError(
            f"{bundle}: `{key}` in {member} is {value!r}, which is not a file in the bundle "
            f"(members: {', '.join(sorted(names))})"
        )
    return value


def import_bundle(path, *, name: str | None = None, force: bool = False,
                  max_member_bytes: int = MAX_MEMBER_BYTES) -> ModelConfig:
    """Register the model inside a ``.empanada`` file.

    Parameters
    ----------
    path : path-like
        The bundle.
    name : str, optional
        Registry name; defaults to the bundle file name without ``.empanada``.
    force : bool
        Replace a registered model of that name and its weight files. Without it,
        nothing that exists is overwritten.
    max_member_bytes : int
        Largest accepted weights member.

    Returns
    -------
    ModelConfig
        The registered config; the weights are in ``<home>/models/<name>.pth`` (and
        ``<name>_quantized.pth``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    BundleError
        Not a zip, unsafe or unexpected members, oversized members, a missing or
        invalid config, or config entries that name no member.
    ModelExistsError
        The name or its weight files exist and ``force`` is False.
    ChecksumError
        A member does not match the digest recorded in the bundle's config.
    ValueError
        Invalid name.
    """
    bundle = Path(path).expanduser()
    if not bundle.is_file():
        raise FileNotFoundError(f"bundle not found: {bundle}")
    stem = _bundle_stem(bundle)
    name = _check_name(name if name is not None else stem)
    home_models = models_dir()
    targets = [home_models / f"{name}.pth", home_models / f"{name}_quantized.pth"]
    if not force:
        if name in _discover():
            raise ModelExistsError(f"a model named {name!r} is already registered; pass "
                                   f"another name (--name) or force=True (--force)")
        _remove_killed_import(home_models, name, targets)
        taken = [str(t) for t in targets if t.exists()]
        if taken:
            raise ModelExistsError(f"weight files for {name!r} already exist: "
                                   f"{', '.join(taken)}; pass --name or --force")
    try:
        zf = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{bundle} is not a valid .empanada (zip) file: {exc}") from exc
    with zf:
        infos = zf.infolist()
        seen: set[str] = set()
        for info in infos:
            _check_member(info, bundle, max_member_bytes)
            if info.filename in seen:
                raise BundleError(f"{bundle}: member {info.filename!r} appears twice")
            seen.add(info.filename)
        members = {info.filename: info for info in infos}
        configs = sorted(n for n in members if n.endswith((".yaml", ".yml")))
        if f"{stem}.yaml" in members:
            member = f"{stem}.yaml"
        elif len(configs) == 1:
            member = configs[0]
        else:
            raise BundleError(f"{bundle}: expected one .yaml config in the bundle; found "
                              f"{configs or 'none'}")
        if members[member].file_size > _MAX_CONFIG_BYTES:
            raise BundleError(f"{bundle}: config {member!r} is over {_MAX_CONFIG_BYTES} bytes")
        try:
            data = load_yaml(zf.read(member).decode("utf-8"))
            config = ModelConfig.from_dict(data, name=name)
        except (yaml.YAMLError, UnicodeDecodeError, ConfigError) as exc:
            raise BundleError(f"{bundle}: invalid config {member!r}: {exc}") from exc
        model_member = _pick_member(config.model, "model", members, bundle, member)
        quant_member = None
        if config.model_quantized is not None:
            quant_member = _pick_member(config.model_quantized, "model_quantized", members,
                                        bundle, member)
        unexpected = sorted(set(members) - {member, model_member, quant_member})
        if unexpected:
            raise BundleError(f"{bundle}: unexpected member(s) {unexpected}; a bundle holds "
                              f"only {member}, {model_member}"
                              + (f" and {quant_member}" if quant_member else ""))

        home_models.mkdir(parents=True, exist_ok=True)
        # Removed only after the config is written: while it exists, the weights of
        # `name` are this import's, so a killed import can be told from a user's file.
        tmp = home_models / f".import-{name}.{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir()
        try:
            model_tmp = tmp / "model.pth"
            _extract(zf, members[model_member], model_tmp, max_member_bytes, bundle)
            _verify_member(model_tmp, config.sha256, bundle, model_member)
            quant_tmp = None
            if quant_member is not None:
                quant_tmp = tmp / "model_quantized.pth"
                _extract(zf, members[quant_member], quant_tmp, max_member_bytes, bundle)
                _verify_member(quant_tmp, config.sha256_quantized, bundle, quant_member)
            return _register(name, config, model_tmp, quant_tmp, overwrite=force, move=True)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)


def _remove_killed_import(home_models: Path, name: str, targets) -> None:
    """Delete what an import of ``name`` killed before writing its config left behind.

    Its working folder ``.import-<name>.<pid>-<hex>`` outlives it, and the weights it
    may already have moved to ``targets`` belong to no registered model.
    """
    for work in home_models.glob(f".import-{glob.escape(name)}.*-*"):
        pid = work.name[len(f".import-{name}."):].split("-", 1)[0]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        for target in targets:
            with contextlib.suppress(OSError):
                target.unlink()
        shutil.rmtree(work, ignore_errors=True)


def _verify_member(path: Path, expected: str | None, bundle: Path, member: str) -> None:
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError(f"{bundle}: member {member!r} is corrupt: expected sha256 "
                            f"{expected}, got {actual}")
