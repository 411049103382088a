"""Settings of a segmentation run, the viewing planes, and cancellation."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["PLANES", "InferenceCancelled", "SegmentationParams"]


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
        that support it and on CPUs with bf16 matrix units (Intel AMX; speed
        and accuracy against fp32 in docs/performance.md and docs/compat.md),
        fp32 elsewhere.
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
        GPUs and on x86 CPUs (docs/performance.md; no gain for very small
        slices), with float sums in a different order (outputs differ by ~1e-6). None (default): on CUDA and
        CPU devices, not on others.
    cpu_workers : int or None
        Stack and ortho inference on the CPU: run this many slices (batches)
        through the network at once, each forward on one torch thread, instead
        of one forward on all threads, when a probe of the first slices finds
        it faster. Small slices can use many threads poorly (figures in
        docs/performance.md; same labels either way); large ones gain nothing. None (default): the number of torch threads (at most
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


def _axis(axis):
    if isinstance(axis, str):
        if axis not in PLANES:
            raise ValueError(f"`axis` must be one of {sorted(PLANES)} or 0, 1, 2; got {axis!r}")
        return PLANES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"`axis` must be one of {sorted(PLANES)} or 0, 1, 2; got {axis!r}")
    return axis


def _check_stop(should_stop):
    if should_stop is not None and should_stop():
        raise InferenceCancelled("the segmentation run was cancelled")


ProgressCallback = Callable[[int, int], None]
