"""BatchNorm folding and TorchScript export."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from ._torchscript import quiet_torchscript, save_torchscript

__all__ = ["export_torchscript", "fuse_model"]


def fuse_model(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm into its preceding conv (and conv + ReLU pairs) for inference.

    Parameters
    ----------
    model : nn.Module
        A model from one of the builders (anything with a ``fuse_model()`` method).
    inplace : bool
        Fuse ``model`` itself instead of a copy.

    Returns
    -------
    fused : nn.Module
        The fused model, in eval mode. It computes the same outputs as ``model`` in eval
        mode (up to float rounding) and is the layout that eager-mode int8 quantization
        and the original exported ``.pth`` files use.

    Raises
    ------
    TypeError
        If ``model`` has no ``fuse_model`` method.

    Notes
    -----
    Fusion uses the BatchNorm running statistics, so the result must not be trained
    further. Fusing twice is harmless.
    """
    if not isinstance(model, nn.Module) or not callable(getattr(model, "fuse_model", None)):
        raise TypeError(
            f"`model` must be an nn.Module with a fuse_model() method (built by "
            f"empanada_models), got {type(model).__name__}"
        )
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    model.fuse_model()
    return model


def export_torchscript(
    model: nn.Module, path: str | os.PathLike[str], *, fuse: bool = True
) -> torch.jit.ScriptModule:
    """Script ``model`` (eval mode, BatchNorm folded) and save it atomically to ``path``.

    The saved file needs only PyTorch: ``torch.jit.load(path)`` gives a module called as
    ``module(x, render_steps, interpolate_ins)`` that returns a ``Dict[str, Tensor]`` with
    ``sem_logits``, ``ctr_hmp`` and ``offsets``, the contract of the original empanada
    ``.pth`` models (so empanada-napari can run it too).

    Parameters
    ----------
    model : nn.Module
        A model from one of the builders; it is copied, not modified.
    path : str or PathLike
        Destination file (by convention ``.pth``). Its folder must exist.
    fuse : bool
        Fold BatchNorm into the convs first (as the original export did).

    Returns
    -------
    scripted : torch.jit.ScriptModule
        The module that was saved.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` (or has no ``fuse_model`` when ``fuse``).
    FileNotFoundError
        If the destination folder does not exist.

    Notes
    -----
    The model is scripted (``torch.jit.script``), never traced, so the data-dependent
    PointRend refinement and both ``render_steps`` and ``interpolate_ins`` stay live.
    The file is written next to ``path`` under a temporary name and then renamed over it,
    so a crash never leaves a truncated model behind.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    destination = Path(os.fspath(path))
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"folder of `path` does not exist: {destination.parent}")
    if fuse:
        prepared = fuse_model(model)
    else:
        prepared = copy.deepcopy(model).eval()
    with quiet_torchscript():
        scripted = torch.jit.script(prepared)
    save_torchscript(scripted, destination)
    return scripted
