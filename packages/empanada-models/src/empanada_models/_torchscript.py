"""One filter for PyTorch's TorchScript deprecation notices.

Recent PyTorch marks ``torch.jit`` (script, trace, save, load, freeze) as
deprecated, but TorchScript is the model format that the original
empanada-napari reads and writes, so every package keeps using it; the notice
gives a user nothing to act on. Every place that calls ``torch.jit`` wraps the
call in :func:`quiet_torchscript` instead of writing its own filter.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["quiet_torchscript", "save_torchscript"]


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Hide TorchScript deprecation warnings inside the ``with`` block.

    Other warnings, and deprecation warnings about anything else, still show.

    Examples
    --------
    >>> import warnings
    >>> from empanada_models import quiet_torchscript
    >>> with quiet_torchscript():
    ...     warnings.warn("`torch.jit.load` is deprecated", DeprecationWarning)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*TorchScript.*deprecated", DeprecationWarning)
        yield


def save_torchscript(module, path):
    """Write a scripted module to ``path`` atomically (never a half-written model file).

    Parameters
    ----------
    module : torch.jit.ScriptModule
    path : path-like
        The ``.pth`` file to create or replace; its folder must exist.

    Returns
    -------
    Path
    """
    import torch

    from empanada_core.io import atomic_path

    with atomic_path(path) as tmp, quiet_torchscript():
        torch.jit.save(module, os.fspath(tmp))
    return Path(path)
