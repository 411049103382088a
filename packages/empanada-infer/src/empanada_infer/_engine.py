"""Inference engines: 2D images, stacks along one axis, and ortho-plane consensus.

A :class:`Segmenter` holds a loaded model, its config and the run settings. It
turns a 2D greyscale image into network outputs (normalise, downsample by a power
of two, pad to the model's ``padding_factor``, forward with PointRend rendering
back to full size) and then into panoptic ids with :mod:`empanada_core`.

Volumes are processed slice by slice along one axis. Slices go through the
network in batches on a background thread, while the main thread median-filters
the probabilities, postprocesses each slice and links it into 3D objects
(:class:`empanada_core.StackAssembler`) written straight into the output array.
A bounded queue keeps at most a few batches of network outputs in memory.
"""

from __future__ import annotations

import copy
import itertools
import math
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

import empanada_core as ec

from ._normalize import intensity_range, normalize

__all__ = [
    "SegmentationParams",
    "Segmenter",
    "InferenceCancelled",
    "segment_image",
    "segment_stack",
    "segment_orthoplanes",
    "PLANES",
]

PLANES = {"xy": 0, "xz": 1, "yz": 2}
_PRECISIONS = ("auto", "fp32", "bf16")


class InferenceCancelled(RuntimeError):
    """Raised when a run is cancelled through its ``should_stop`` callback."""


@dataclass(frozen=True)
class SegmentationParams:
    """Settings of one segmentation run (defaults: the original widgets').

    Attributes
    ----------
    downsampling : int
        Power of two; the image is shrunk by it before the network and the
        result rendered back to full size (PointRend).
    confidence_thr : float
        Foreground probability threshold of binary models ("segmentation
        confidence").
    center_thr : float
        Minimum centre-heatmap value of an object ("center confidence").
    min_distance : int
        Centre suppression window ("centers min distance"), in heatmap pixels
        (4 image pixels each unless ``fine_boundaries``).
    fine_boundaries : bool
        Group pixels at full resolution instead of on the 1/4 grid.
    semantic_only : bool
        No instances: every class is returned as one semantic region.
    label_divisor : int
        Id range per class ("max objects per class"): ids are
        ``class * label_divisor + k`` with ``k < label_divisor``.
    stuff_area : int
        Minimum pixel count of a stuff region per slice.
    on_overflow : {'raise', 'drop'}
        More objects in a class than ``label_divisor`` allows: raise or keep
        the largest.
    median_size : int
        Odd window of the median filter of probabilities along the stack.
    min_size : int
        3D objects with fewer voxels are removed.
    min_extent : int
        3D objects spanning fewer voxels along any axis are removed.
    vote_thr : int
        Ortho-plane: how many of the three views must agree on a voxel.
    allow_one_view : bool
        Ortho-plane: keep objects found in one view only (with ``vote_thr=1``).
    batch_size : int
        Slices per network forward.
    precision : {'auto', 'fp32', 'bf16'}
        Network precision. 'bf16': autocast on GPUs; on the CPU the weights
        themselves are converted to bf16 (in place, like the device and memory
        format), or autocast if the model cannot run so; a TorchScript model
        with bf16 weights is then frozen and its 1x1 conv1d calls (PointRend's
        point head) run as matmuls, the same arithmetic. 'fp32': full
        precision, the original's. 'auto' (default): bf16 on CUDA devices
        that support it and on CPUs with bf16 matrix units (Intel AMX: 1.7-4.1x
        faster forwards for MitoLite_v1, validation F1 within 0.0022 of fp32,
        see docs/compat.md), fp32 elsewhere.
    normalize : {'auto', 'percentile', 'dtype'}
        Intensity normalisation (see :func:`empanada_infer.normalize`).
    tile_size : int
        2D images with a side longer than this go through the network in
        overlapping tiles (0: never). The tiles' outputs are stitched before
        postprocessing, so objects are never cut or duplicated at tile borders.
    tile_overlap : int
        Context (pixels) each tile sees beyond the part of it that is kept.
    channels_last : bool or None
        Run the network in channels-last memory format: faster convolutions on
        GPUs and on x86 CPUs (measured 1.7x for a ResNet-18 PDL-PR on 512²
        slices on the CPU; equal for very small slices), with float sums in a
        different order (outputs differ by ~1e-6). None (default): on CUDA and
        CPU devices, not on others.
    cpu_workers : int or None
        Stack and ortho inference on the CPU: run this many slices (batches)
        through the network at once, each forward on one torch thread, instead
        of one forward on all threads, when a probe of the first slices finds
        it faster. Small slices can use many threads poorly (MitoLite_v1: 1.35x
        end to end for a 64 x 256² ortho run on 2 cores, same labels); large
        ones gain nothing. None (default): the number of torch threads (at most
        8) for slices of at most 2**17 pixels, else 1. While the threads run,
        torch's thread count is 1 for the whole process.
    """

    downsampling: int = 1
    confidence_thr: float = 0.5
    center_thr: float = 0.1
    min_distance: int = 3
    fine_boundaries: bool = False
    semantic_only: bool = False
    label_divisor: int = 10000
    stuff_area: int = 64
    on_overflow: str = "raise"
    median_size: int = 3
    min_size: int = 500
    min_extent: int = 5
    vote_thr: int = 2
    allow_one_view: bool = False
    batch_size: int = 1
    precision: str = "auto"
    normalize: str = "auto"
    tile_size: int = 0
    tile_overlap: int = 128
    channels_last: bool | None = None
    cpu_workers: int | None = None

    def __post_init__(self):
        s = self.downsampling
        if isinstance(s, bool) or not isinstance(s, int) or s < 1 or s & (s - 1):
            raise ValueError(f"`downsampling` must be a power of two (1, 2, 4, ...); got {s!r}")
        if not 0.0 <= float(self.confidence_thr) <= 1.0:
            raise ValueError(f"`confidence_thr` must be in [0, 1]; got {self.confidence_thr!r}")
        for name, minimum in (("min_distance", 1), ("batch_size", 1), ("min_size", 0),
                              ("min_extent", 0), ("stuff_area", 0), ("label_divisor", 2),
                              ("tile_size", 0), ("tile_overlap", 0)) + \
                (() if self.cpu_workers is None else (("cpu_workers", 1),)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
        if self.median_size % 2 == 0 or self.median_size < 1:
            raise ValueError(f"`median_size` must be odd (1, 3, 5, ...); got {self.median_size!r}")
        if self.vote_thr not in (1, 2, 3):
            raise ValueError(f"`vote_thr` must be 1, 2 or 3; got {self.vote_thr!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"`precision` must be one of {_PRECISIONS}; got {self.precision!r}")
        if self.normalize not in ("auto", "percentile", "dtype"):
            raise ValueError(
                f"`normalize` must be 'auto', 'percentile' or 'dtype'; got {self.normalize!r}"
            )
        if self.on_overflow not in ("raise", "drop"):
            raise ValueError(f"`on_overflow` must be 'raise' or 'drop'; got {self.on_overflow!r}")

    def with_options(self, **changes):
        """A copy with some settings changed."""
        return replace(self, **changes)


def _resolve_device(device):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") \
            from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r} asked for a GPU, but torch sees no CUDA device")
    return dev


def cpu_has_bf16_matrix_units():
    """True where this CPU multiplies bf16 matrices in hardware (Intel AMX).

    Read from the ``amx_bf16`` flag of ``/proc/cpuinfo`` (Linux); False
    elsewhere. Without such units bf16 is emulated and no faster than fp32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _resolve_precision(precision, device):
    """The precision a run uses.

    'auto' is bf16 on CUDA devices with bf16 and on CPUs with bf16 matrix units
    (AMX), fp32 elsewhere.
    """
    if precision != "auto":
        return precision
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_bf16_matrix_units():
        return "bf16"
    return "fp32"


def _to_bf16_weights(model, config):
    """Convert ``model`` in place to bf16 if it then runs; False (and fp32) if not."""
    import torch

    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params or any(p.dtype != torch.float32 for p in params):
        return False  # int8 packed weights, or nothing to convert
    factor = int(config.padding_factor)
    probe = torch.zeros((1, 1, 2 * factor, 2 * factor), dtype=torch.bfloat16)
    try:
        model.to(torch.bfloat16)
        with torch.inference_mode():
            model(probe, 2, False)
    except (RuntimeError, TypeError, ValueError):
        model.to(torch.float32)
        return False
    return True


def resolve_model_config(name_or_config=None):
    """The :class:`empanada_models.ModelConfig` for a registry name, a YAML path or a config.

    ``None`` gives the registry's default model. Nothing is downloaded or loaded.
    """
    import empanada_models as em

    if name_or_config is None:
        name_or_config = em.get_default_model()
    if isinstance(name_or_config, em.ModelConfig):
        return name_or_config
    if isinstance(name_or_config, str) and not name_or_config.endswith((".yaml", ".yml")):
        return em.get_model_config(name_or_config)
    return em.ModelConfig.from_yaml(name_or_config)


def _pointwise_conv1d_as_matmul(model):
    """A frozen copy of a TorchScript ``model`` whose 1x1 ``conv1d`` calls are matmuls.

    PointRend's point head is a stack of kernel-1 Conv1d layers over thousands
    of points. With bf16 on x86 CPUs, torch's oneDNN ``conv1d`` reorders its
    output through a slow transposing copy (8 ms against 0.8 ms for the same
    product as a matmul on [256, 257] x [257, 8192]), which made small bf16
    forwards no faster than fp32. The rewrite is the same arithmetic: ``W @ x
    + b[:, None]`` for every conv1d whose weight is a constant of kernel size 1
    with stride 1, no padding, dilation 1 and one group. Returns ``(model,
    count)``: the input unchanged and 0 when it is not a ScriptModule, cannot
    be frozen, or holds no such call.
    """
    import torch

    if not isinstance(model, torch.jit.ScriptModule):
        return model, 0
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch, still what we load
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message=r".*torch\.jit\.")
            frozen = torch.jit.freeze(model.eval())
    except (RuntimeError, TypeError, ValueError, AttributeError):
        return model, 0
    graph = frozen.graph
    count = _rewrite_pointwise_conv1d(graph.block(), graph)
    if not count:
        return model, 0
    torch._C._jit_pass_lint(graph)
    return frozen, count


def _checked_matmul_rewrite(model, config):
    """:func:`_pointwise_conv1d_as_matmul`, kept only if a probe image gives the same
    outputs (up to bf16 rounding) as ``model``; else ``(model, 0)``."""
    import torch

    rewritten, count = _pointwise_conv1d_as_matmul(model)
    if not count:
        return model, 0
    factor = int(config.padding_factor)
    size = 4 * factor
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((1, 1, size, size), generator=generator).to(torch.bfloat16)
    try:
        with torch.inference_mode():
            ref, out = model(probe, 2, True), rewritten(probe, 2, True)
        same = ref.keys() == out.keys() and all(
            ref[k].shape == out[k].shape
            and float((ref[k].float() - out[k].float()).abs().mean()) <= 0.05
            for k in ref)
    except (RuntimeError, TypeError, ValueError):
        same = False
    return (rewritten, count) if same else (model, 0)


def _constant(value):
    """The constant behind a graph value, or a sentinel when it is not one."""
    if value.node().kind() != "prim::Constant":
        return _NOT_CONSTANT
    return value.toIValue()


_NOT_CONSTANT = object()


def _rewrite_pointwise_conv1d(block, graph):
    import torch

    count = 0
    for node in list(block.nodes()):
        for sub in node.blocks():
            count += _rewrite_pointwise_conv1d(sub, graph)
        if node.kind() != "aten::conv1d" or len(list(node.inputs())) != 7:
            continue
        x, w, b, stride, padding, dilation, groups = node.inputs()
        weight, bias = _constant(w), _constant(b)
        if not (isinstance(weight, torch.Tensor) and weight.dim() == 3
                and weight.shape[-1] == 1):
            continue
        if bias is _NOT_CONSTANT or (bias is not None and not isinstance(bias, torch.Tensor)):
            continue
        settings = [_constant(v) for v in (stride, padding, dilation, groups)]
        if any(v is _NOT_CONSTANT for v in settings):
            continue
        stride, padding, dilation, groups = settings
        if not (list(stride) == [1] and list(padding) == [0] and list(dilation) == [1]
                and groups == 1):
            continue
        graph.setInsertPoint(node)
        out = graph.insertNode(graph.create(
            "aten::matmul", [graph.insertConstant(weight[:, :, 0].contiguous()), x])).output()
        if bias is not None:
            out = graph.insertNode(graph.create(
                "aten::add", [out, graph.insertConstant(bias[:, None].contiguous()),
                              graph.insertConstant(1)])).output()
        out.setType(node.output().type())
        node.output().replaceAllUsesWith(out)
        node.destroy()
        count += 1
    return count


class Segmenter:
    """A model ready to segment images, with its config and run settings.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        Called as ``model(x, render_steps, interpolate_ins)`` returning a dict
        with ``sem_logits``, ``ctr_hmp`` and ``offsets``.
    config : empanada_models.ModelConfig
        Its registry config (norms, padding factor, classes).
    params : SegmentationParams, optional
    device : str or torch.device, optional
        ``'auto'`` picks CUDA when available.

    Examples
    --------
    >>> seg = Segmenter.from_registry("MitoNet_v1", device="cpu")  # doctest: +SKIP
    >>> labels = seg.segment_image(image)                          # doctest: +SKIP
    """

    def __init__(self, model, config, params=None, *, device="auto"):
        import torch

        self.params = params if params is not None else SegmentationParams()
        self.config = config
        self.device = _resolve_device(device)
        self.model = model.to(self.device).eval()
        self._torch = torch
        use_cl = self.params.channels_last
        self.channels_last = (self.device.type in ("cuda", "cpu") if use_cl is None
                              else bool(use_cl))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = _resolve_precision(self.params.precision, self.device)
        # On the CPU, bf16 weights beat autocast (which re-casts every weight at
        # every forward): 1.2-1.4x more for MitoLite_v1. Models that cannot run
        # with bf16 weights (int8, fp32-only ops) run under autocast instead.
        self._bf16_weights = (self.precision == "bf16" and self.device.type == "cpu"
                              and _to_bf16_weights(self.model, self.config))
        self._matmul_point_head = 0
        if self._bf16_weights:
            self.model, self._matmul_point_head = _checked_matmul_rewrite(self.model,
                                                                          self.config)
        self.thing_list = () if self.params.semantic_only else tuple(config.thing_list)

    @classmethod
    def from_registry(cls, name_or_config=None, params=None, *, device="auto", quantized=False,
                      progress=None):
        """Load a registered model (the registry default when ``None``)."""
        import empanada_models as em

        config = resolve_model_config(name_or_config)
        dev = _resolve_device(device)
        model = em.load_model(config, device=dev, quantized=quantized, progress=progress)
        return cls(model, config, params, device=dev)

    #: settings fixed when the model is prepared (weights converted, memory format)
    _MODEL_SETTINGS = ("precision", "channels_last")

    def with_params(self, params):
        """A Segmenter sharing this one's prepared model, with other run settings.

        Lets a caller (the napari widgets) keep one loaded model per device and
        run it with new thresholds without loading or converting it again.

        Raises
        ------
        ValueError
            ``params`` changes ``precision`` or ``channels_last``, which are
            applied to the model itself when it is prepared.
        """
        if not isinstance(params, SegmentationParams):
            raise TypeError(f"`params` must be SegmentationParams; got {type(params).__name__}")
        for name in self._MODEL_SETTINGS:
            if getattr(params, name) != getattr(self.params, name):
                raise ValueError(
                    f"`{name}` is fixed when the model is prepared ({getattr(self.params, name)!r}"
                    f" here, {getattr(params, name)!r} asked); make a new Segmenter")
        other = copy.copy(self)
        other.params = params
        other.thing_list = () if params.semantic_only else tuple(self.config.thing_list)
        return other

    # -- one batch through the network ---------------------------------------------------
    def _prepare(self, images):
        """Normalised, downsampled, padded (N, 1, Hp, Wp) tensor on the device."""
        torch = self._torch
        F = torch.nn.functional
        s = self.params.downsampling
        x = torch.from_numpy(np.stack(images)[:, None]).to(self.device, non_blocking=True)
        h, w = x.shape[-2:]
        if s > 1:
            x = F.interpolate(x, size=(math.ceil(h / s), math.ceil(w / s)), mode="bilinear",
                              align_corners=False)
        factor = int(self.config.padding_factor)
        ph = (-x.shape[-2]) % factor
        pw = (-x.shape[-1]) % factor
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images):
        """Network outputs for a batch of normalised 2D images of one shape.

        Returns probabilities ``(N, C, H', W')``, heatmaps ``(N, h, w)`` and
        offsets ``(N, 2, h, w)`` as float32 tensors on the device, where
        ``H' >= H`` is the padded full size.
        """
        torch = self._torch
        x = self._prepare(images)
        if self._bf16_weights:
            x = x.to(torch.bfloat16)
        render_steps = 2 + int(math.log2(self.params.downsampling))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bf16" and not self._bf16_weights)
        with torch.inference_mode(), autocast:
            out = self.model(x, render_steps, bool(self.params.fine_boundaries))
        logits = out["sem_logits"].float()
        _check_classes(logits.shape[1], self.config)
        prob = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return prob, out["ctr_hmp"].float()[:, 0], out["offsets"].float()

    def postprocess(self, prob, ctr, offsets, out_shape):
        """Panoptic ids of one image from its (C, H', W') probabilities and heads."""
        p = self.params
        pan = ec.panoptic_postprocess(
            prob, ctr, offsets, thing_list=self.thing_list, label_divisor=p.label_divisor,
            confidence_thr=p.confidence_thr, center_thr=p.center_thr, nms_kernel=p.min_distance,
            center_stride=1 if p.fine_boundaries else 4, stuff_area=p.stuff_area,
            semantic_only=p.semantic_only, out_shape=out_shape, on_overflow=p.on_overflow,
            # bf16 heatmaps have exact ties at maxima, which would split objects
            center_plateaus="one" if self.precision == "bf16" else "all",
        )
        if not isinstance(pan, np.ndarray):
            pan = pan.cpu().numpy()
        return pan.astype(ec.label_dtype(int(pan.max()) if pan.size else 0), copy=False)

    def normalize(self, image, value_range=None):
        norms = self.config.norms
        return normalize(np.asarray(image), mean=norms.mean, std=norms.std,
                         mode=self.params.normalize, value_range=value_range)

    def value_range(self, image):
        """Intensity range used for every slice of ``image`` (None in dtype mode)."""
        mode = self.params.normalize
        dtype = np.dtype(image.dtype)
        if mode == "dtype" or (mode == "auto" and dtype == np.uint8):
            return None
        return intensity_range(image, mode="percentile")

    # -- public ------------------------------------------------------------------------
    def segment_image(self, image, *, value_range=None):
        """Panoptic segmentation of one 2D image.

        Returns
        -------
        (H, W) uint32 ndarray of ``class * label_divisor + k`` ids.
        """
        image = _check_image(image, ndim=2)
        if value_range is None:
            value_range = self.value_range(image)
        tile = self.params.tile_size
        if _is_constant(image):
            # no structure, no organelle; a network's flat output would otherwise make
            # every pixel of its flat heatmap a centre (hundreds of objects)
            return np.zeros(image.shape, np.uint32)
        if tile and max(image.shape) > tile:
            prob, ctr, off = self._forward_tiled(image, value_range)
            return self.postprocess(prob, ctr, off, image.shape)
        prob, ctr, off = self.forward([self.normalize(image, value_range)])
        return self.postprocess(prob[0], ctr[0], off[0], image.shape)

    def _forward_tiled(self, image, value_range):
        """Network outputs of a large image, stitched from overlapping tiles.

        Each tile is run with ``tile_overlap`` pixels of context on every side
        and only its centre is kept, so the stitched maps cover the image once.
        Offsets point from a pixel to its centre, so they stitch unchanged.
        """
        torch = self._torch
        p = self.params
        s = p.downsampling
        grid = s if p.fine_boundaries else 4 * s  # image pixels per heatmap pixel
        unit = grid * int(self.config.padding_factor)
        step = max(unit, (p.tile_size // unit) * unit)
        margin = -(-p.tile_overlap // grid) * grid
        h, w = image.shape
        gh, gw = -(-h // grid), -(-w // grid)
        prob = ctr = off = None
        for y0 in range(0, h, step):
            for x0 in range(0, w, step):
                ty0, tx0 = max(0, y0 - margin), max(0, x0 - margin)
                ty1, tx1 = min(h, y0 + step + margin), min(w, x0 + step + margin)
                tile = self.normalize(image[ty0:ty1, tx0:tx1], value_range)
                t_prob, t_ctr, t_off = self.forward([tile])
                if prob is None:
                    prob = torch.zeros((t_prob.shape[1], gh * grid, gw * grid),
                                       device=t_prob.device)
                    ctr = torch.zeros((gh, gw), device=t_prob.device)
                    off = torch.zeros((2, gh, gw), device=t_prob.device)
                ky1, kx1 = min(h, y0 + step), min(w, x0 + step)
                # keep [y0, ky1) x [x0, kx1): at full resolution, then on the heatmap grid
                prob[:, y0:ky1, x0:kx1] = t_prob[0, :, y0 - ty0:ky1 - ty0, x0 - tx0:kx1 - tx0]
                gy0, gx0 = y0 // grid, x0 // grid
                gy1, gx1 = -(-ky1 // grid), -(-kx1 // grid)
                oy, ox = ty0 // grid, tx0 // grid
                ctr[gy0:gy1, gx0:gx1] = t_ctr[0, gy0 - oy:gy1 - oy, gx0 - ox:gx1 - ox]
                off[:, gy0:gy1, gx0:gx1] = t_off[0, :, gy0 - oy:gy1 - oy, gx0 - ox:gx1 - ox]
        return prob, ctr, off

    def segment_batch(self, images, *, progress=None, should_stop=None):
        """Segment a list of unrelated 2D images (each normalised on its own)."""
        results = []
        for i, image in enumerate(images):
            _check_stop(should_stop)
            results.append(self.segment_image(image))
            if progress is not None:
                progress(i + 1, len(images))
        return results

    def iter_stack(self, volume, *, axis=0, value_range=None, should_stop=None, start=0):
        """Yield ``(index, panoptic slice)`` along ``axis``, median-filtered, in order.

        ``start`` skips the slices before it (a resumed run): the network then
        runs from ``start - median_size // 2`` on, so the yielded slices equal
        those of a run over the whole stack.

        On an accelerator the network runs on a background thread, a bounded
        queue ahead, so postprocessing overlaps it. On the CPU, forwards of
        large slices run in this thread on all torch threads (from a second
        thread they ran ~40 % slower: a second OpenMP pool); small slices go
        through ``cpu_workers`` single-threaded forwards at once.
        """
        volume = _check_image(volume, ndim=3)
        if value_range is None:
            value_range = self.value_range(volume)
        n = volume.shape[axis]
        slice_shape = tuple(s for a, s in enumerate(volume.shape) if a != axis)
        batch = self.params.batch_size

        def forward_batch(start):
            images = [self.normalize(_take(volume, i, axis), value_range)
                      for i in range(start, min(start + batch, n))]
            return self.forward(images)

        if start >= n:
            return
        first = max(0, start - self.params.median_size // 2)
        starts = range(first, n, batch)
        workers = _cpu_workers(self.params.cpu_workers, self.device, slice_shape)
        if _forward_in_background(self.device):
            batches = _background(map(forward_batch, starts))
        elif workers > 1:
            batches = _parallel_if_faster(forward_batch, starts, workers)
        else:
            batches = map(forward_batch, starts)
        median = ec.MedianFilter(self.params.median_size, start=first)
        try:
            for prob, ctr, off in batches:
                ready = []
                for j in range(prob.shape[0]):
                    ready += median.push(prob[j], payload=(ctr[j], off[j]))
                for index, p, (c, o) in ready:
                    if index >= start:
                        _check_stop(should_stop)
                        yield index, self.postprocess(p, c, o, slice_shape)
            for index, p, (c, o) in median.finish():
                if index >= start:
                    _check_stop(should_stop)
                    yield index, self.postprocess(p, c, o, slice_shape)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def segment_stack(self, volume, out=None, *, axis=0, progress=None, should_stop=None,
                      value_range=None, checkpoint=None):
        """Segment a volume slice by slice along ``axis`` and link slices into 3D objects.

        Parameters
        ----------
        volume : (Z, Y, X) array-like
        out : array-like, optional
            Output (numpy or zarr) of the volume's shape; created (uint32) if None.
        axis : int or {'xy', 'xz', 'yz'}
        progress : callable, optional
            ``progress(done, total)`` after each slice.
        should_stop : callable, optional
            Checked between slices; when it returns True the run stops with
            :class:`InferenceCancelled`.
        checkpoint : zarr.Array, optional
            An array of the volume's shape made by :func:`create_output` (with
            ``slice_axis=axis``) that keeps each slice's 2D result as soon as it
            is computed, recorded with :func:`mark_done`. A run that was killed
            or cancelled resumes from its first unfinished slice and gives the
            same volume as an uninterrupted run.

        Returns
        -------
        out : the filled array (ids ``class * label_divisor + k``)
        """
        volume = _check_image(volume, ndim=3)
        return self._segment_stack(volume, out, _axis(axis), progress, should_stop, value_range,
                                   _fit_min_extent(self.params, volume.shape), checkpoint)

    def _segment_stack(self, volume, out, axis, progress, should_stop, value_range, p,
                       checkpoint=None):
        from ._writers import done_keys, mark_done

        blank = out is None
        if blank:
            out = np.zeros(volume.shape, dtype=np.uint32)
        n = volume.shape[axis]
        resume_at = 0
        if checkpoint is not None:
            if tuple(checkpoint.shape) != tuple(volume.shape):
                raise ValueError(f"`checkpoint` has shape {tuple(checkpoint.shape)}; the "
                                 f"volume has {tuple(volume.shape)}")
            done = {k for k in done_keys(checkpoint) if isinstance(k, int)}
            while resume_at in done:
                resume_at += 1
        assembler = ec.StackAssembler(
            out, axis=axis, label_divisor=p.label_divisor, thing_list=self.thing_list,
            min_size=p.min_size, min_extent=p.min_extent, on_overflow=p.on_overflow,
            out_is_blank=blank,
        )
        for index in range(resume_at):  # finished before: read back, not recomputed
            assembler.push(np.asarray(_take(checkpoint, index, axis)))
        if resume_at and progress is not None:
            progress(resume_at, n)
        for index, pan in self.iter_stack(volume, axis=axis, value_range=value_range,
                                          should_stop=should_stop, start=resume_at):
            if checkpoint is not None:
                _put(checkpoint, index, axis, pan)
                mark_done(checkpoint, index)
            assembler.push(pan)
            if progress is not None:
                progress(index + 1, n)
        assembler.finish()
        return out

    def segment_orthoplanes(self, volume, out=None, *, return_stacks=False, progress=None,
                            should_stop=None, checkpoints=None):
        """Segment along xy, xz and yz and keep what the views agree on.

        Parameters
        ----------
        checkpoints : dict of {'xy', 'xz', 'yz': zarr.Array}, optional
            One checkpoint per plane (see :meth:`segment_stack`), so a killed or
            cancelled run resumes from the first unfinished slice of each plane.

        Returns
        -------
        out : consensus panoptic volume; with ``return_stacks`` also a dict
            ``{'xy': ..., 'xz': ..., 'yz': ...}`` of the three stacks.
        """
        volume = _check_image(volume, ndim=3)
        value_range = self.value_range(volume)
        stacks = {}
        n_total = sum(volume.shape)
        done = dict.fromkeys(PLANES, 0)
        checkpoints = checkpoints or {}
        unknown = set(checkpoints) - set(PLANES)
        if unknown:
            raise ValueError(f"`checkpoints` keys must be among {sorted(PLANES)}; got "
                             f"{sorted(unknown)}")

        params = _fit_min_extent(self.params, volume.shape)
        for name, axis in PLANES.items():

            def step(i, _n, name=name):
                done[name] = i
                if progress is not None:
                    progress(sum(done.values()), n_total)

            stacks[name] = self._segment_stack(volume, None, axis, step, should_stop,
                                               value_range, params, checkpoints.get(name))
        consensus = ortho_merge(stacks, params, self.config, out=out,
                                thing_list=self.thing_list)
        return (consensus, stacks) if return_stacks else consensus


def _check_classes(channels, config):
    """The config's classes must be outputs of the network (else results are silently empty).

    One channel is a binary network (sigmoid) with one class; C > 1 channels are
    softmax scores of background and classes 1 .. C-1.
    """
    labels = tuple(config.labels)
    if channels == 1:
        if len(labels) != 1:
            raise ValueError(
                f"model {config.name!r}: its config lists {len(labels)} classes (labels "
                f"{list(labels)}) but the network has 1 output channel (one class); fix "
                f"`labels`, `class_names` and `thing_list` in {config.source or 'the config'}"
            )
    elif max(labels) >= channels:
        raise ValueError(
            f"model {config.name!r}: its config lists class {max(labels)} but the network "
            f"has {channels} output channels (background and classes 1..{channels - 1}); "
            f"fix `labels` in {config.source or 'the config'}"
        )


def _fit_min_extent(params, shape):
    """``params`` with ``min_extent`` lowered to the volume's smallest side, if larger.

    Objects thinner than ``min_extent`` along any axis are removed, so on a stack
    of 2 slices the default of 5 would remove every object and return nothing.
    """
    smallest = min(int(n) for n in shape)
    if params.min_extent <= smallest:
        return params
    warnings.warn(
        f"the volume {tuple(int(n) for n in shape)} is only {smallest} voxel"
        f"{'s' if smallest != 1 else ''} along one "
        f"axis, less than min_extent={params.min_extent} (--min-extent), which would "
        f"remove every object; using min_extent={smallest} for this volume",
        stacklevel=3,
    )
    return replace(params, min_extent=smallest)


def ortho_merge(stacks, params, config, *, out=None, thing_list=None):
    """Combine three panoptic stacks into the consensus volume (per class).

    Memory: besides the three stacks and ``out``, one uint32 volume per
    class (the consensus) and slab-sized temporaries; with a single class the
    stacks go to the consensus as they are, without per-class copies.
    """
    if thing_list is None:
        thing_list = tuple(config.thing_list)
    div = params.label_divisor
    shape = stacks["xy"].shape
    if out is None:
        out = np.zeros(shape, dtype=np.uint32)
    views = [np.asarray(stacks[k]) for k in ("xy", "xz", "yz")]
    single_class = len(config.labels) == 1
    for class_id in config.labels:
        if class_id in thing_list:
            # one class: every nonzero id is class_id * div + instance already
            per_view = views if single_class else [
                _class_part(v, class_id, div, instances=True) for v in views]
            labels = ec.ortho_consensus(
                *per_view, vote_thr=params.vote_thr, allow_one_view=params.allow_one_view,
                min_size=params.min_size, min_extent=params.min_extent,
            )
            del per_view
            if labels.max() >= div:
                raise ValueError(
                    f"class {class_id}: {int(labels.max())} objects exceed label_divisor "
                    f"{div}; raise the max objects per class"
                )
            _write_class(out, labels, class_id * div)
        else:
            mask = ec.semantic_consensus(
                *[_class_part(v, class_id, div, instances=False) for v in views],
                vote_thr=params.vote_thr)
            _write_class(out, mask, class_id * div)
    return out


def _slabs(n, per_slab=16):
    return (slice(i, min(n, i + per_slab)) for i in range(0, n, per_slab))


def _class_part(view, class_id, div, *, instances):
    """Instance numbers (uint32) or a bool mask of one class of a panoptic volume, by slabs."""
    lo, hi = class_id * div, (class_id + 1) * div
    part = np.zeros(view.shape, dtype=np.uint32 if instances else bool)
    for s in _slabs(view.shape[0]):
        v = view[s]
        inside = (v >= lo) & (v < hi)
        if instances:
            part[s] = np.where(inside, v.astype(np.int64) - lo, 0)
        else:
            part[s] = inside
    return part


def _chunk_blocks(shape, chunks):
    """Index tuples of the chunk grid ``chunks`` over ``shape``, in C order."""
    ranges = [range(0, n, c) for n, c in zip(shape, chunks)]
    for corner in itertools.product(*ranges):
        yield tuple(slice(i, min(n, i + c)) for i, n, c in zip(corner, shape, chunks))


def _write_class(out, labels, offset):
    """Write ``labels + offset`` (or ``offset`` where a bool mask is set) into ``out``
    wherever ``labels`` is nonzero: slab by slab into numpy, chunk by chunk into a
    chunked array such as zarr (so each chunk is read and rewritten once)."""
    chunks = None if isinstance(out, np.ndarray) else getattr(out, "chunks", None)
    if chunks is not None and len(chunks) == labels.ndim:
        blocks = _chunk_blocks(labels.shape, tuple(int(c) for c in chunks))
    else:
        blocks = _slabs(labels.shape[0])
    for s in blocks:
        part = labels[s]
        fg = part > 0 if part.dtype != bool else part
        if not fg.any():
            continue
        values = np.uint32(offset) if part.dtype == bool else part.astype(np.uint32) + np.uint32(offset)
        if isinstance(out, np.ndarray):
            np.copyto(out[s], values, where=fg, casting="unsafe")
        else:
            region = np.asarray(out[s])
            np.copyto(region, values, where=fg, casting="unsafe")
            out[s] = region


def _forward_in_background(device):
    """Whether stack inference runs the network on a second thread (not on the CPU)."""
    return device.type != "cpu"


# Slices up to this many pixels go through several single-threaded forwards at once.
_SMALL_SLICE_PIXELS = 1 << 17


def _cpu_workers(requested, device, slice_shape):
    """How many forwards run at once on the CPU (1: one forward on all threads)."""
    if device.type != "cpu":
        return 1
    if requested is not None:
        return requested
    import torch

    if math.prod(slice_shape) > _SMALL_SLICE_PIXELS:
        return 1
    return max(1, min(8, torch.get_num_threads()))


def _parallel_in_order(fn, items, workers):
    """``map(fn, items)`` on ``workers`` threads of one torch thread each, in order.

    At most ``workers + 1`` calls are in flight. torch's thread count is 1 for
    the process while the generator runs and restored when it ends or is closed;
    closing it cancels the calls not started and waits for the running ones.
    """
    import collections
    import concurrent.futures

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="empanada-forward")
    try:
        items = iter(items)
        pending = collections.deque(pool.submit(fn, item)
                                    for item in itertools.islice(items, workers + 1))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _parallel_if_faster(fn, items, workers, probe=6):
    """``map(fn, items)`` in order, on ``workers`` threads if that proves faster.

    Whether several single-threaded forwards beat one multi-threaded forward
    depends on the network and the machine (1.2-1.6x for MitoLite_v1 on small
    slices on 2 cores, 0.75-0.9x for a ResNet-18 net with other weights), so
    the first ``probe`` items run one after the other and the next ``probe``
    on the threads, each timed from one request of the consumer to the next
    (its own work included); the faster way does the rest. Results are the
    same either way; a switch back recomputes at most ``workers + 1`` items.
    """
    items = list(items)
    if workers <= 1 or len(items) < 4 * probe:
        yield from map(fn, items)
        return
    t0 = time.perf_counter()
    for item in items[:probe]:
        yield fn(item)
    sequential = time.perf_counter() - t0
    parallel_items = _parallel_in_order(fn, items[probe:], workers)
    try:
        t0 = time.perf_counter()
        for _ in range(probe):
            yield next(parallel_items)
        if time.perf_counter() - t0 < 0.9 * sequential:
            yield from parallel_items
            return
    finally:
        parallel_items.close()
    yield from map(fn, items[2 * probe:])


def _background(iterable, depth=2):
    """Iterate ``iterable`` on a daemon thread, at most ``depth`` items ahead.

    Exceptions are re-raised in the consumer; closing the returned generator
    (or abandoning it) stops the producer at its next item.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                items.put(("ok", item))
            items.put(("end", None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            items.put(("error", exc))

    worker = threading.Thread(target=produce, name="empanada-forward", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "error":
                raise item
            if kind == "end":
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def _axis(axis):
    if isinstance(axis, str):
        if axis not in PLANES:
            raise ValueError(f"`axis` must be one of {sorted(PLANES)} or 0, 1, 2; got {axis!r}")
        return PLANES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"`axis` must be one of {sorted(PLANES)} or 0, 1, 2; got {axis!r}")
    return axis


def _take(volume, i, axis):
    index = [slice(None)] * 3
    index[axis] = i
    return np.asarray(volume[tuple(index)])


def _is_constant(image):
    image = np.asarray(image)
    return image.size > 0 and image.min() == image.max()


def _put(volume, i, axis, values):
    index = [slice(None)] * 3
    index[axis] = i
    volume[tuple(index)] = values


def _check_stop(should_stop):
    if should_stop is not None and should_stop():
        raise InferenceCancelled("the segmentation run was cancelled")


def _check_image(image, *, ndim):
    from ._readers import check_image

    return check_image(image, ndim=ndim)


def segment_image(image, model=None, params=None, *, device="auto", quantized=False):
    """Segment one 2D image with a registered model (default: the registry default)."""
    return Segmenter.from_registry(model, params, device=device, quantized=quantized) \
        .segment_image(image)


def segment_stack(volume, model=None, params=None, *, axis=0, out=None, device="auto",
                  quantized=False, progress=None):
    """Segment a volume along one axis with a registered model."""
    seg = Segmenter.from_registry(model, params, device=device, quantized=quantized)
    return seg.segment_stack(volume, out, axis=axis, progress=progress)


def segment_orthoplanes(volume, model=None, params=None, *, out=None, device="auto",
                        quantized=False, return_stacks=False, progress=None):
    """Segment a volume along xy, xz and yz and return the consensus."""
    seg = Segmenter.from_registry(model, params, device=device, quantized=quantized)
    return seg.segment_orthoplanes(volume, out, return_stacks=return_stacks, progress=progress)


ProgressCallback = Callable[[int, int], None]
