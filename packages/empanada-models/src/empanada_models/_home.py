"""The empanada home folder and its layout (the original's ``~/.empanada``).

``$EMPANADA_HOME`` (default ``~/.empanada``) holds ``configs/`` (registered
models), ``cache/`` (downloaded weights), ``models/`` (weights copied in by
registration and bundle import) and ``archived/`` (archived models). Every
function re-reads the environment, so tests and users can point it elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["archived_dir", "cache_dir", "config_dir", "empanada_home", "models_dir",
           "BUILTIN_CONFIG_DIR"]

#: The built-in configs shipped inside this package.
BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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


def archived_dir() -> Path:
    """Folder of archived models, ``<home>/archived``."""
    return empanada_home() / "archived"
