"""Eager-mode static int8 post-training quantization and its TorchScript export.

The int8 CPU models of the original empanada are made by eager-mode static
post-training quantization (PTQ): fold BatchNorm, give the quantizable parts a
default ``fbgemm`` qconfig (histogram observers for activations, per-channel
symmetric int8 weights), run calibration batches through the model, convert,
script. The offsets head (``ins_xy``) and PointRend stay in float. This module
does the same for the models built here; ``model.quantizable_submodules()``
names the parts to convert.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.ao.nn.quantized import Quantize
from torch.ao.quantization.fake_quantize import FakeQuantizeBase
from torch.ao.quantization.observer import ObserverBase

from ._export import fuse_model
from ._torchscript import quiet_torchscript, save_torchscript

__all__ = [
    "calibration_batches_from_images",
    "export_quantized_torchscript",
    "quantize_model",
]

#: Backends that have a default qconfig in ``torch.ao.quantization``.
QUANTIZATION_BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn")

_NORMALIZE_MODES = ("auto", "dtype", "percentile")
_PERCENTILES = (0.5, 99.5)
_RANGE_SAMPLES = 1 << 20
_EMPTY = object()


@contextlib.contextmanager
def _quiet_quantization_warnings() -> Iterator[None]:
    # Warnings that eager-mode quantization itself raises in recent PyTorch: the
    # deprecation of torch.ao.quantization (no replacement yet writes TorchScript that
    # the original empanada-napari loads), the default observers' use of
    # `reduce_range`, and the deprecation of quantized tensor creation. None of them
    # gives the caller anything to act on.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", r"Please use quant_min and quant_max to specify the range", UserWarning
        )
        warnings.filterwarnings(
            "ignore",
            r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized "
            r"tensor creation",
            UserWarning,
        )
        yield


def _supported_engines() -> list[str]:
    return list(torch.backends.quantized.supported_engines)


def _check_backend(backend: object) -> str:
    if not isinstance(backend, str) or backend not in QUANTIZATION_BACKENDS:
        raise ValueError(
            f"`backend` must be one of {list(QUANTIZATION_BACKENDS)} ('x86' or 'fbgemm' "
            f"for Intel/AMD CPUs, 'qnnpack' for ARM), got {backend!r}"
        )
    supported = _supported_engines()
    if backend not in supported:
        raise ValueError(
            f"quantization backend {backend!r} is not available in this PyTorch build "
            f"(torch {torch.__version__} supports {supported}); choose one of those"
        )
    return backend


def _check_quantizable(model: object) -> list[str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    parts = getattr(model, "quantizable_submodules", None)
    if not callable(parts) or not callable(getattr(model, "fuse_model", None)):
        raise TypeError(
            "`model` must be built by empanada_models (it needs fuse_model() and "
            f"quantizable_submodules() methods), got {type(model).__name__}"
        )
    for module in model.modules():
        if isinstance(module, (ObserverBase, FakeQuantizeBase, Quantize)):
            raise ValueError(
                "`model` is already prepared for or converted to int8; quantize the "
                "float model"
            )
    names = list(parts())
    for name in names:
        if not isinstance(getattr(model, name, None), nn.Module):
            raise TypeError(f"quantizable_submodules() names {name!r}, not a submodule")
    return names


def _as_batch(batch: object, index: int, in_channels: int) -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"calibration batch {index} must be a torch.Tensor (or numpy array) of shape "
            f"(N, {in_channels}, H, W), got {type(batch).__name__}"
        )
    if not batch.is_floating_point():
        raise TypeError(
            f"calibration batch {index} must hold normalised floats, got dtype "
            f"{batch.dtype}; see calibration_batches_from_images"
        )
    if batch.dim() != 4 or batch.size(1) != in_channels or batch.numel() == 0:
        raise ValueError(
            f"calibration batch {index} must have shape (N, {in_channels}, H, W) with "
            f"N, H, W > 0, got {tuple(batch.shape)}"
        )
    return batch.detach().to("cpu", torch.float32)


def quantize_model(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    *,
    backend: str = "x86",
    inplace: bool = False,
) -> nn.Module:
    """Convert a float model to int8 by eager-mode static post-training quantization.

    The model is put in eval mode and fused (BatchNorm folded), the parts named by
    ``model.quantizable_submodules()`` get ``get_default_qconfig(backend)``, observers
    are inserted, every calibration batch is run through the model, and the observed
    parts are converted to int8. The offsets head (``ins_xy``) and PointRend stay in
    float, as in the original int8 models (Panoptic-BiFPN quantizes only its encoder).

    Parameters
    ----------
    model : nn.Module
        A float model from one of the builders (fused or not), with trained weights.
    calibration : iterable of Tensor
        Batches of shape ``(N, 1, H, W)``, float, normalised as for inference (see
        :func:`calibration_batches_from_images`). At least one; H and W must be
        multiples of the architecture's padding factor (4 for Panoptic-DeepLab, 128
        for Panoptic-BiFPN). The original used 32 batches of training crops. Numpy
        arrays are accepted too; batches are moved to the CPU.
    backend : {'x86', 'fbgemm', 'qnnpack', 'onednn'}
        Quantized engine the model is made for: 'x86' (or the older 'fbgemm') on
        Intel/AMD CPUs, 'qnnpack' on ARM. It must be in
        ``torch.backends.quantized.supported_engines``.
    inplace : bool
        Convert ``model`` itself (moved to the CPU) instead of a copy.

    Returns
    -------
    quantized : nn.Module
        The int8 model in eval mode, called like the float one,
        ``quantized(x, render_steps, interpolate_ins)``; CPU only. Script it with
        ``torch.jit.script`` or save it with :func:`export_quantized_torchscript`.

    Raises
    ------
    TypeError
        ``model`` was not built by empanada_models, or a calibration batch is not a
        float tensor.
    ValueError
        Unknown or unavailable ``backend``; ``model`` is already quantized;
        ``calibration`` is empty; a batch has the wrong shape (the message names
        the batch).

    Notes
    -----
    ``torch.backends.quantized.engine`` is set to ``backend`` (a process-wide
    setting) and left so: the converted modules pack their weights for the engine
    that is active when they are converted. A model saved as TorchScript runs under
    any engine; its weights are repacked when loaded.

    With 'x86' and 'fbgemm' the default activation observers use 7 of the 8 bits
    (``reduce_range``), which avoids overflow in the AVX2 kernels; 'qnnpack' uses all
    8 bits and per-tensor weights.

    Examples
    --------
    >>> import torch
    >>> from empanada_models._builders import panoptic_deeplab_pr
    >>> model = panoptic_deeplab_pr(encoder="resnet18", decoder_channels=32,
    ...                             low_level_stages=[1], low_level_channels_project=[16])
    >>> batches = [torch.randn(2, 1, 64, 64) for _ in range(2)]
    >>> int8 = quantize_model(model, batches)
    >>> out = int8(torch.randn(1, 1, 64, 64), 2, True)
    >>> tuple(out["sem_logits"].shape), type(int8.ins_xy.head[1]).__name__
    ((1, 1, 64, 64), 'Conv2d')
    """
    parts = _check_quantizable(model)
    backend = _check_backend(backend)
    if isinstance(calibration, torch.Tensor) or not isinstance(calibration, Iterable):
        raise TypeError(
            "`calibration` must be an iterable of (N, 1, H, W) tensors (a list of batches "
            f"or a generator), got {type(calibration).__name__}"
        )
    in_channels = int(getattr(model, "in_channels", 1))
    batches = iter(calibration)
    first = next(batches, _EMPTY)
    if first is _EMPTY:
        raise ValueError(
            "`calibration` yielded no batches; pass at least one (N, 1, H, W) float "
            "tensor of normalised images (the original used 32 batches)"
        )
    first = _as_batch(first, 0, in_channels)  # checked before the model is touched

    from torch.ao.quantization import convert, get_default_qconfig, prepare

    if not inplace:
        model = copy.deepcopy(model)
    model = fuse_model(model.cpu(), inplace=True)
    torch.backends.quantized.engine = backend
    with _quiet_quantization_warnings():
        qconfig = get_default_qconfig(backend)
        for module in model.modules():
            # a stale qconfig anywhere would change what is converted
            module.__dict__.pop("qconfig", None)
        for name in parts:
            getattr(model, name).qconfig = qconfig
        prepare(model, inplace=True)
        with torch.no_grad():
            for index, batch in enumerate(_chain(first, batches)):
                batch = batch if index == 0 else _as_batch(batch, index, in_channels)
                try:
                    # observers sit in the quantizable parts only, so PointRend and
                    # the upsampling of the instance outputs are skipped
                    model(batch, 0, False)
                except ValueError as exc:
                    raise ValueError(f"calibration batch {index}: {exc}") from exc
        convert(model, inplace=True)
    model.eval()
    return model


def _chain(first: torch.Tensor, rest: Iterator[object]) -> Iterator[object]:
    yield first
    yield from rest


def export_quantized_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    calibration: Iterable[torch.Tensor],
    *,
    backend: str = "x86",
) -> torch.jit.ScriptModule:
    """Quantize ``model`` to int8, script it and save it atomically to ``path``.

    The file is the ``model_quantized`` of a registry config: ``torch.jit.load(path)``
    gives a CPU module called as ``module(x, render_steps, interpolate_ins)`` that
    returns ``sem_logits``, ``ctr_hmp`` and ``offsets`` (float tensors), like the
    float export of :func:`export_torchscript` and the original ``*_quantized.pth``.

    Parameters
    ----------
    model : nn.Module
        A float model from one of the builders; it is copied, not modified.
    path : str or PathLike
        Destination file (by convention ``<name>_quantized.pth``). Its folder must
        exist.
    calibration : iterable of Tensor
        Normalised ``(N, 1, H, W)`` batches, as for :func:`quantize_model`.
    backend : {'x86', 'fbgemm', 'qnnpack', 'onednn'}
        As for :func:`quantize_model`.

    Returns
    -------
    scripted : torch.jit.ScriptModule
        The module that was saved.

    Raises
    ------
    FileNotFoundError
        The destination folder does not exist (checked before quantizing).
    TypeError, ValueError
        As for :func:`quantize_model`.

    Notes
    -----
    The model is scripted, never traced, so PointRend's data-dependent refinement and
    both ``render_steps`` and ``interpolate_ins`` stay live. The file is written
    under a temporary name in the same folder and renamed over ``path``.
    """
    destination = Path(os.fspath(path))
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"folder of `path` does not exist: {destination.parent}")
    quantized = quantize_model(model, calibration, backend=backend)
    with quiet_torchscript(), _quiet_quantization_warnings():
        scripted = torch.jit.script(quantized)
    save_torchscript(scripted, destination)
    return scripted


# --------------------------------------------------------------------------------------
# calibration data


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return int(value)


def _check_norm(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"`{name}` must be {'positive and ' if positive else ''}finite, "
                         f"got {value!r}")
    return value


def _as_volumes(images: object) -> list:
    """``images`` as a list of 3D array-likes (a 2D image becomes one plane)."""
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        items = [images]
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        items = list(images)
    else:
        raise TypeError(
            "`images` must be a 2D image, a 3D volume or a sequence of them (arrays), "
            f"got {type(images).__name__}"
        )
    if not items:
        raise ValueError("`images` is empty; pass at least one 2D image or 3D volume")
    volumes = []
    for i, image in enumerate(items):
        if not (hasattr(image, "shape") and hasattr(image, "dtype")):
            image = np.asarray(image)
        dtype = np.dtype(image.dtype)
        if dtype not in (np.uint8, np.uint16):
            raise TypeError(
                f"images[{i}] must be uint8 or uint16 (raw EM intensities), got {dtype}"
            )
        if len(image.shape) == 2:
            image = _Plane(image)
        elif len(image.shape) != 3:
            raise ValueError(
                f"images[{i}] must be 2D (H, W) or 3D (D, H, W), got shape {tuple(image.shape)}"
            )
        if min(image.shape) == 0:
            raise ValueError(f"images[{i}] is empty (shape {tuple(image.shape)})")
        volumes.append(image)
    return volumes


class _Plane:
    """A 2D array-like seen as a volume of one plane (without reading it)."""

    def __init__(self, image) -> None:
        self.image = image
        self.shape = (1, *image.shape)
        self.dtype = image.dtype

    def __getitem__(self, key):
        # only ``volume[z, rows, cols]`` with an int ``z`` (always 0) is used here
        _, *rest = key
        return self.image[tuple(rest)]


def _intensity_range(volume) -> tuple[float, float]:
    """The (0.5, 99.5) percentiles of a strided sample of a volume (min/max if equal)."""
    depth, height, width = volume.shape
    planes = np.unique(np.linspace(0, depth - 1, min(depth, 8)).round().astype(int))
    stride = max(1, int(math.sqrt(len(planes) * height * width / _RANGE_SAMPLES)))
    sample = np.concatenate(
        [np.asarray(volume[int(z), ::stride, ::stride]).ravel() for z in planes]
    )
    lo, hi = (float(v) for v in np.percentile(sample, _PERCENTILES))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return lo, hi


def calibration_batches_from_images(
    images,
    *,
    mean: float,
    std: float,
    patch_size: int = 256,
    n_batches: int = 8,
    batch_size: int = 4,
    seed: int = 0,
    mode: str = "auto",
) -> list[torch.Tensor]:
    """Random crops of real EM images, normalised, as calibration batches.

    Parameters
    ----------
    images : array-like or sequence of array-likes
        2D ``(H, W)`` images and/or 3D ``(D, H, W)`` volumes, uint8 or uint16. Only
        the crops (and, in percentile mode, a strided sample) are read, so memory-
        mapped or zarr volumes are not loaded whole.
    mean, std : float
        The model's normalisation constants in [0, 1] units (``config.norms``).
    patch_size : int
        Height and width of the crops; a multiple of the model's padding factor and
        at most the smallest image height and width.
    n_batches, batch_size : int
        How many batches, and crops per batch.
    seed : int
        Seed of the crop positions; the same arguments give the same batches.
    mode : {'auto', 'dtype', 'percentile'}
        How intensities are scaled to [0, 1] before ``(x - mean) / std``: 'dtype'
        divides by the dtype maximum (the original: ``x / 255`` for uint8); 'percentile'
        maps the (0.5, 99.5) percentiles of each image or volume to 0 and 1 (clipped);
        'auto' is 'dtype' for uint8 and 'percentile' for uint16, the default of
        empanada-infer's inference, so the model is calibrated on what it will see.

    Returns
    -------
    batches : list of Tensor
        ``n_batches`` float32 tensors of shape ``(batch_size, 1, patch_size,
        patch_size)``.

    Raises
    ------
    TypeError
        An image is not uint8/uint16, or ``mean``/``std`` are not numbers.
    ValueError
        An image is not 2D or 3D or is smaller than ``patch_size``; a count is not
        positive; ``std`` is not positive; unknown ``mode``.

    Notes
    -----
    Each crop picks an image with probability proportional to its number of planes,
    then a plane and a position uniformly. The original calibrated on 32 batches of
    augmented training crops; plain crops of the images the model will be used on
    serve the same purpose.

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.random.default_rng(0).integers(0, 256, (4, 96, 80), dtype=np.uint8)
    >>> batches = calibration_batches_from_images(volume, mean=0.5, std=0.2,
    ...                                           patch_size=64, n_batches=2)
    >>> len(batches), tuple(batches[0].shape), batches[0].dtype
    (2, (4, 1, 64, 64), torch.float32)
    """
    volumes = _as_volumes(images)
    mean = _check_norm("mean", mean)
    std = _check_norm("std", std, positive=True)
    patch_size = _check_count("patch_size", patch_size)
    n_batches = _check_count("n_batches", n_batches)
    batch_size = _check_count("batch_size", batch_size)
    if mode not in _NORMALIZE_MODES:
        raise ValueError(f"`mode` must be one of {list(_NORMALIZE_MODES)}, got {mode!r}")
    for i, volume in enumerate(volumes):
        if min(volume.shape[1:]) < patch_size:
            raise ValueError(
                f"images[{i}] has planes of {tuple(volume.shape[1:])} pixels, smaller than "
                f"`patch_size` {patch_size}; choose a smaller patch_size"
            )
    scales = []  # (lo, hi, clip) per volume
    for volume in volumes:
        if mode == "dtype" or (mode == "auto" and volume.dtype == np.uint8):
            scales.append((0.0, float(np.iinfo(volume.dtype).max), False))
        else:
            scales.append((*_intensity_range(volume), True))

    rng = np.random.default_rng(seed)
    depths = np.array([v.shape[0] for v in volumes], dtype=float)
    choice = rng.choice(len(volumes), size=n_batches * batch_size, p=depths / depths.sum())
    crops = np.empty((n_batches * batch_size, 1, patch_size, patch_size), np.float32)
    for k, i in enumerate(choice):
        volume = volumes[i]
        depth, height, width = volume.shape
        z = int(rng.integers(depth))
        y = int(rng.integers(height - patch_size + 1))
        x = int(rng.integers(width - patch_size + 1))
        crop = np.asarray(volume[z, y : y + patch_size, x : x + patch_size], np.float32)
        lo, hi, clip = scales[i]
        crop = (crop - np.float32(lo)) / np.float32(hi - lo) if hi > lo else crop * 0
        if clip:
            np.clip(crop, 0.0, 1.0, out=crop)
        crops[k, 0] = (crop - np.float32(mean)) / np.float32(std)
    return list(torch.from_numpy(crops).split(batch_size))
