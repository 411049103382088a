"""Stack inference split across several devices with ``torch.distributed``.

One process per device (NCCL on GPUs, gloo on CPUs). The volume is cut into
contiguous runs of slices, one per process; each process reads a few extra
slices on both sides (half the median window) so that its median filter sees
exactly what a single process would, and writes its 2D panoptic slices into a
shared scratch file. The parent process then links the slices into 3D objects
in order, as :meth:`Segmenter.segment_stack` does, so the labels equal a
single-device run.

The volume reaches the workers as a file (the input's own file when it is a
path; otherwise one temporary ``.npy`` that every worker memory-maps), never as
a pickled copy per process.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

import empanada_core as ec

__all__ = ["segment_stack_distributed"]


def _chunks(n, world_size):
    """Contiguous [start, stop) runs of slices, as even as possible."""
    bounds = np.linspace(0, n, world_size + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _worker(rank, world_size, job):
    import torch
    import torch.distributed as dist

    from ._image_io import open_image
    from ._segmenter import Segmenter

    backend = job["backend"]
    dist.init_process_group(backend, init_method=f"file://{job['rendezvous']}", rank=rank,
                            world_size=world_size)
    failed = torch.zeros(1)
    try:
        device = f"cuda:{rank}" if backend == "nccl" else "cpu"
        if backend == "nccl":
            torch.cuda.set_device(rank)
            failed = failed.to(device)
        seg = Segmenter.from_registry(job["config"], job["params"], device=device,
                                      quantized=job["quantized"])
        volume = open_image(job["volume"], key=job.get("key"))
        axis = job["axis"]
        n = volume.shape[axis]
        start, stop = _chunks(n, world_size)[rank]
        if start < stop:
            halo = job["params"].median_size // 2
            lo, hi = max(0, start - halo), min(n, stop + halo)
            index = [slice(None)] * 3
            index[axis] = slice(lo, hi)
            part = volume[tuple(index)]
            scratch = np.load(job["scratch"], mmap_mode="r+")
            for i, pan in seg.iter_stack(part, axis=axis, value_range=job["value_range"]):
                g = lo + i
                if start <= g < stop:
                    scratch[g] = pan
            scratch.flush()
    except BaseException:
        failed += 1
        raise
    finally:
        # every rank learns whether any rank failed, then all leave together
        dist.all_reduce(failed)
        dist.destroy_process_group()


def segment_stack_distributed(volume, config, params, out=None, *, axis=0, world_size=2,
                              backend=None, quantized=False, key=None):
    """Segment a volume along one axis with ``world_size`` processes.

    Parameters
    ----------
    volume : path or (Z, Y, X) array-like
        A path (TIFF, npy, zarr) is opened by every worker; an array is written
        once to a temporary ``.npy`` the workers memory-map.
    config : str, path or empanada_models.ModelConfig
        Model name, config file or config (its file is passed to the workers).
    params : SegmentationParams
    out : array-like, optional
        Output volume (numpy or zarr); created as uint32 when None.
    axis : int or {'xy', 'xz', 'yz'}
    world_size : int
        Number of processes (one per GPU with NCCL).
    backend : {'nccl', 'gloo'}, optional
        Default: NCCL when CUDA has ``world_size`` devices, else gloo on CPUs.

    Returns
    -------
    out : the filled array (ids ``class * label_divisor + k``)
    """
    import torch
    import torch.multiprocessing as mp

    from empanada_models import resolve_model_config

    from ._image_io import intensity_range, open_image
    from ._params import _axis
    from ._segmenter import _check_image

    axis = _axis(axis)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"`world_size` must be a positive integer; got {world_size!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and \
            torch.cuda.device_count() >= world_size else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"`backend` must be 'nccl' or 'gloo'; got {backend!r}")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"{world_size} processes on NCCL need {world_size} GPUs; "
                         f"torch sees {torch.cuda.device_count()}")
    config = resolve_model_config(config)

    with tempfile.TemporaryDirectory(prefix="empanada-dist-") as tmp:
        tmp = Path(tmp)
        if isinstance(volume, (str, os.PathLike)):
            source = str(volume)
            array = open_image(source, key=key)
        else:
            array = volume
            source = str(tmp / "volume.npy")
            np.save(source, np.asarray(volume))
        array = _check_image(array, ndim=3)
        config_file = config.to_yaml(tmp / f"{config.name}.yaml") if config.source is None \
            else config.source
        mode = params.normalize
        value_range = None
        if not (mode == "dtype" or (mode == "auto" and np.dtype(array.dtype) == np.uint8)):
            value_range = intensity_range(array, mode="percentile")
        slice_shape = tuple(s for a, s in enumerate(array.shape) if a != axis)
        n = array.shape[axis]
        scratch = tmp / "slices.npy"
        np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint32,
                                  shape=(n, *slice_shape)).flush()
        job = {
            "backend": backend, "rendezvous": str(tmp / "rendezvous"), "config": str(config_file),
            "params": params, "quantized": quantized, "volume": source, "key": key,
            "axis": axis, "scratch": str(scratch), "value_range": value_range,
        }
        mp.spawn(_worker, args=(world_size, job), nprocs=world_size, join=True)

        blank = out is None
        if blank:
            out = np.zeros(array.shape, dtype=np.uint32)
        thing_list = () if params.semantic_only else tuple(config.thing_list)
        assembler = ec.StackAssembler(
            out, axis=axis, label_divisor=params.label_divisor, thing_list=thing_list,
            min_size=params.min_size, min_extent=params.min_extent,
            on_overflow=params.on_overflow, out_is_blank=blank,
        )
        slices = np.load(scratch, mmap_mode="r")
        for i in range(n):
            assembler.push(np.asarray(slices[i]))
        assembler.finish()
        del slices
    return out
