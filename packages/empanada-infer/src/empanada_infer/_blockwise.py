"""Blockwise 3D inference on a Dask distributed cluster, with stitched ids and resumable blocks.

The volume is cut into a regular grid of core blocks. Each block is segmented
on a Dask worker with a halo of context on every side (stack inference along
one plane, or ortho-plane consensus), by the engines of :mod:`._segmenter`
unchanged; the worker writes only the block's core into a chunked zarr /
OME-Zarr output, with provisional ids that are unique to the block. Three
stages follow each other, each a set of tasks of one per block:

1. **segment**: a block's core labels (provisional ids ``(b + 1) * stride +
   local id``, above every final id), and a small table saved next to the
   output: the objects on its faces (ids, sizes, boxes), the slabs of labels on
   both sides of each face, and the ids of its interior objects that pass the
   size and extent filters (they are whole inside the core).
2. **match**: in the overlap of two neighbouring blocks, each block's
   prediction over the other's core is compared with the other's own labels
   there (:func:`._stitch.overlap_counts`); pairs overlapping by at least
   ``stitch_threshold`` of the smaller are linked. The client takes the
   connected components of the link graph (only face objects take part), judges
   each stitched object whole against ``min_size`` / ``min_extent``, and
   numbers objects per class, block by block.
3. **relabel**: each block rewrites its core with the final ids
   ``class_id * label_divisor + k``.

The client records a block as done (in the output's progress record) only
after its task returned, that is after the block's data was written; a rerun
of the same call skips done blocks and, because every stage is deterministic,
gives the same labels bit for bit. Relabelling only touches provisional ids,
so a block interrupted half-way through it is finished correctly by a rerun.
Tasks have deterministic keys, and Dask reruns those of a lost worker.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from empanada_core.io import atomic_output
from empanada_core.validation import check_int

from ._stitch import (
    _triple,
    block_grid,
    connected_groups,
    face_depth,
    link_overlaps,
    overlap_counts,
    padded_region,
)

__all__ = ["segment_blockwise", "BlockwiseResult", "default_block_size", "default_halo",
           "connect_client"]

_MODES = ("stack", "ortho")
_PLANES = {"xy": 0, "xz": 1, "yz": 2}
_DEFAULT_CHUNK = (64, 256, 256)
_STITCHED = "stitched"


@dataclass(frozen=True)
class BlockwiseResult:
    """What :func:`segment_blockwise` did.

    Attributes
    ----------
    output : zarr.Array or ndarray
        The labels (an ndarray when no output path was given).
    counts : dict
        Objects per thing class id.
    n_blocks : int
        Blocks of the grid.
    grid : tuple of int
        Blocks along z, y, x.
    block_size, halo : tuple of int
    segmented : int
        Blocks segmented by this call (the others were done before, or skipped).
    skipped : int
        Blocks found empty by this call and not segmented.
    block_seconds : list of float
        Worker seconds of each block segmented by this call.
    stage_seconds : dict
        Wall seconds of each stage (segment, match, stitch, relabel).
    worker_peak_rss : dict
        Peak resident memory (bytes) of each worker process that ran a block.
    already_complete : bool
        The output was complete before the call; nothing was run.
    dashboard_link : str or None
    """

    output: object
    counts: dict
    n_blocks: int
    grid: tuple
    block_size: tuple
    halo: tuple
    segmented: int = 0
    skipped: int = 0
    block_seconds: list = field(default_factory=list)
    stage_seconds: dict = field(default_factory=dict)
    worker_peak_rss: dict = field(default_factory=dict)
    already_complete: bool = False
    dashboard_link: str | None = None


# ---------------------------------------------------------------------- defaults


def default_block_size(config, mode="stack", plane="xy"):
    """Core block shape for a model: 64 slices of 512 x 512 (stack), 128³ (ortho).

    In-plane sizes are multiples of the model's ``padding_factor``, so that
    blocks are not padded further before the network.
    """
    factor = max(1, int(getattr(config, "padding_factor", 16)))
    if mode == "ortho":
        side = max(factor, 128 // factor * factor)
        return (side, side, side)
    side = max(factor, 512 // factor * factor)
    size = [side, side, side]
    size[_PLANES[plane]] = 64
    return tuple(size)


def default_halo(config, params, mode="stack", plane="xy"):
    """Halo (context on each side of a block): 32 pixels in-plane (at least the
    ``padding_factor``), along the stack axis half the median window plus 2.

    Along the stack axis the slices inside the core then see the same median
    window as in a single run, and two slices overlap each neighbour for
    stitching. In-plane, the network sees 32 pixels beyond the core.
    """
    factor = max(1, int(getattr(config, "padding_factor", 16)))
    in_plane = max(32, factor)
    if mode == "ortho":
        return (in_plane,) * 3
    halo = [in_plane] * 3
    halo[_PLANES[plane]] = params.median_size // 2 + 2
    return tuple(halo)


# ---------------------------------------------------------------------- client


def connect_client(scheduler=None, *, n_workers=None, threads_per_worker=1, timeout=10):
    """A ``distributed.Client``: connected to ``scheduler``, or on a new ``LocalCluster``.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://HOST:PORT``), started by
        ``dask scheduler`` or dask-jobqueue.
    n_workers : int, optional
        Worker processes of a local cluster (default: 1 per CUDA device, else 2).
    timeout : float
        Seconds to wait for the scheduler before giving up.

    Returns
    -------
    client, cluster : the client, and the local cluster it started (None when
        connected to ``scheduler``); close both when done.

    Raises
    ------
    ImportError
        If dask.distributed is not installed (``pip install empanada-infer[distributed]``).
    ConnectionError
        If the scheduler cannot be reached within ``timeout`` seconds.
    """
    distributed = _import_distributed()
    if scheduler is not None:
        if not isinstance(scheduler, str) or "://" not in scheduler and ":" not in scheduler:
            raise ValueError(f"`scheduler` must be an address such as tcp://host:8786; got "
                             f"{scheduler!r}")
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"could not reach the Dask scheduler at {scheduler} within {timeout:g} s "
                f"({type(exc).__name__}); start one with `dask scheduler` (and workers with "
                f"`dask worker {scheduler}`), or use a local cluster (--workers N)"
            ) from None
        return client, None
    if n_workers is None:
        n_workers = _default_workers()
    check_int(n_workers, "n_workers", 1)
    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
        dashboard_address=":0", silence_logs=logging.ERROR,
    )
    return distributed.Client(cluster), cluster


def _default_workers():
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency of empanada-models
        pass
    return 2


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "blockwise inference needs Dask distributed: pip install 'empanada-infer[distributed]'"
        ) from None
    return distributed


# ---------------------------------------------------------------------- worker side

_CACHE = {}
_CACHE_LOCK = threading.Lock()
_CACHE_KEEP = 2  # objects of each kind a worker keeps (the current run's, and one before)


def _cached(kind, key, make):
    """One object per worker process and key (a model, an open volume), made on first use.

    Only the last few keys of each kind are kept, so a long-lived worker that
    serves many runs does not pile up models.
    """
    with _CACHE_LOCK:
        slot = _CACHE.setdefault(kind, {})
        if key not in slot:
            while len(slot) >= _CACHE_KEEP:
                slot.pop(next(iter(slot)))
            slot[key] = make()
        return slot[key]


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return None


def _worker_device(device):
    """``auto`` and ``cuda`` spread local workers over the GPUs by worker number."""
    import torch

    if device not in (None, "auto", "cuda"):
        return device
    if not torch.cuda.is_available():
        return "cpu" if device in (None, "auto") else device
    name = _worker_name()
    index = name if isinstance(name, int) else 0
    return f"cuda:{index % torch.cuda.device_count()}"


def _keep_freed_memory():
    """Undo, in this worker process, the malloc trimming that Dask's nanny asks for.

    The nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it also
    fixes glibc's mmap threshold at 128 KiB, so every large tensor of every forward
    is mapped afresh and page-faulted in, and torch forwards ran much slower in a
    worker than in a plain process (docs/scale-out.md). Raising both thresholds keeps freed memory for the next
    forward, as in a plain process. glibc (Linux) only; elsewhere nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        for limit in (1 << 30, 1 << 25):  # older glibc caps the mmap threshold at 32 MiB
            if libc.mallopt(m_mmap_threshold, limit):
                break
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


def _worker_segmenter(job):
    def make():
        from ._segmenter import Segmenter

        _keep_freed_memory()
        if job["torch_threads"]:
            import torch

            torch.set_num_threads(job["torch_threads"])
        params = job["params"].with_options(min_size=0, min_extent=0)
        return Segmenter.from_registry(job["model"], params, device=_worker_device(job["device"]),
                                       quantized=job["quantized"])

    key = json.dumps([job["model"], repr(job["params"]), str(job["device"]), job["quantized"],
                      job["torch_threads"]])
    return _cached("segmenter", key, make)


def _worker_volume(job):
    kind, source = job["source"]
    if kind == "path":
        from ._image_io import open_image

        path, key, level = source
        return _cached("volume", (job["token"], path, key, level),
                       lambda: open_image(path, key=key, level=level))
    return source  # a zarr array (pickled by reference to its store)


def _worker_output(job):
    import zarr

    store, array_path = job["output"]
    return _cached("output", (job["token"], store, array_path),
                   lambda: zarr.open_array(store, path=array_path, mode="r+"))


def _slices(bounds):
    return tuple(slice(a, b) for a, b in bounds)


def _core(job, b):
    """Core region of block ``b`` (slices), from the grid: the job stays small."""
    pos = np.unravel_index(b, job["grid"])
    return tuple(slice(i * s, min(n, (i + 1) * s))
                 for i, s, n in zip(pos, job["block_size"], job["shape"]))


def _region(job, b):
    return padded_region(_core(job, b), job["halo"], job["shape"])


def _is_empty(data, skip_below):
    """No signal: an all-zero block, or one whose values are all <= ``skip_below``."""
    if skip_below is not None and data.max() <= skip_below:
        return True
    return not data.any()


def _block_file(job, b):
    return Path(job["scratch"]) / f"block_{b}.npz"


def _save_npz(path, **arrays):
    """Write ``path`` atomically (a partial file renamed into place)."""
    with atomic_output(path) as f:
        np.savez(f, **arrays)


def _run_engine(job, data):
    from ._ortho import ortho_merge

    seg = _worker_segmenter(job)
    value_range = job["value_range"]
    if job["mode"] == "stack":
        return seg.segment_stack(data, axis=job["axis"], value_range=value_range)
    stacks = {name: seg.segment_stack(data, axis=axis, value_range=value_range)
              for name, axis in _PLANES.items()}
    return ortho_merge(stacks, seg.params, seg.config, thing_list=seg.thing_list)


def _thing_mask(labels, job):
    div = job["label_divisor"]
    classes = np.asarray(job["thing_classes"])
    return (labels % div != 0) & np.isin(labels // div, classes)


def _segment_block(job, b, data=None):
    """Stage 1 for block ``b``: segment core + halo, write the core, save the face table."""
    import resource

    t0 = time.perf_counter()
    core = _core(job, b)
    region = _region(job, b)
    if data is None:
        data = _worker_volume(job)[region]
    data = np.asarray(data)
    rel = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, region))
    dtype = np.dtype(job["dtype"])
    skipped = _is_empty(data, job["skip_below"])
    if skipped:
        padded = np.zeros(data.shape, dtype)
    else:
        labels = np.asarray(_run_engine(job, data))
        padded = labels.astype(dtype)
        things = _thing_mask(labels, job)
        padded[things] += dtype.type((b + 1) * job["stride"])
        del labels
        _worker_output(job)[core] = padded[rel]
    table = _face_table(job, b, padded, rel, skipped)
    _save_npz(_block_file(job, b), **table)
    return {"block": b, "skipped": skipped, "seconds": time.perf_counter() - t0,
            "worker": str(_worker_name()),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _face_table(job, b, padded, rel, skipped):
    """Face slabs, face-object stats and interior kept ids of one block (see module doc)."""
    from empanada_core import object_stats

    stride = job["stride"]
    core_labels = padded[rel]
    provisional = np.where(core_labels >= stride, core_labels, 0)
    table = {}
    core_ids = np.unique(provisional)
    core_ids = core_ids[core_ids > 0]
    face_parts = []
    for d, side, m, has_halo in _faces(job, b):
        lo = rel[d].start
        hi = rel[d].stop
        inside = [slice(None)] * 3
        outside = list(rel)
        inside[d] = slice(0, m) if side == 0 else slice(hi - lo - m, hi - lo)
        core_slab = provisional[tuple(inside)]
        table[f"core_{d}{side}"] = core_slab
        face_parts.append(core_slab[core_slab > 0])
        if has_halo:
            outside[d] = slice(lo - m, lo) if side == 0 else slice(hi, hi + m)
            halo_slab = padded[tuple(outside)]
            halo_slab = np.where(np.isin(halo_slab, core_ids), halo_slab, 0)
            table[f"halo_{d}{side}"] = halo_slab
            face_parts.append(halo_slab[halo_slab > 0])
    face_ids = np.unique(np.concatenate(face_parts)) if face_parts else core_ids[:0]
    stats = object_stats(provisional) if not skipped else None
    offset = np.array([s.start for s in _core(job, b)])
    if stats is None or len(stats) == 0:
        ids = core_ids[:0]
        sizes = np.zeros(0, np.int64)
        bmin = bmax = np.zeros((0, 3), np.int64)
    else:
        ids, sizes = stats.ids, stats.sizes
        bmin, bmax = stats.bbox_min + offset, stats.bbox_max + offset
    on_face = np.isin(ids, face_ids)
    extent = (bmax - bmin).min(axis=1, initial=np.iinfo(np.int64).max) if len(ids) else sizes
    keep = ~on_face & (sizes >= job["min_size"]) & (extent >= job["min_extent"])
    table.update(face_ids=ids[on_face], face_sizes=sizes[on_face], face_bmin=bmin[on_face],
                 face_bmax=bmax[on_face], interior_ids=ids[keep])
    return table


def _faces(job, b):
    """``(axis, side, depth, has_halo)`` of each face of block ``b`` with a neighbour."""
    grid = job["grid"]
    pos = np.unravel_index(b, grid)
    for d in range(3):
        for side in (0, 1):
            nb = pos[d] - 1 if side == 0 else pos[d] + 1
            if not 0 <= nb < grid[d]:
                continue
            yield d, side, _depth(job, d, pos[d], nb), job["halo"][d] > 0


def _core_length(job, d, index):
    size = job["block_size"][d]
    return min(size, job["shape"][d] - index * size)


def _depth(job, d, i, j):
    return face_depth(job["halo"][d], _core_length(job, d, i), _core_length(job, d, j))


def _match_block(job, a):
    """Stage 2 for block ``a``: its face table and its links with the next block along each axis."""
    grid = job["grid"]
    pos = np.unravel_index(a, grid)
    with np.load(_block_file(job, a)) as fa:
        table = {k: fa[k] for k in ("face_ids", "face_sizes", "face_bmin", "face_bmax",
                                    "interior_ids")}
        edges_a, edges_b = [], []
        for d in range(3):
            if pos[d] + 1 >= grid[d]:
                continue
            nb_pos = list(pos)
            nb_pos[d] += 1
            b = int(np.ravel_multi_index(nb_pos, grid))
            with np.load(_block_file(job, b)) as fb:
                if job["halo"][d] > 0:  # (the core's own labels, the neighbour's halo)
                    comparisons = [(fb[f"core_{d}0"], fa[f"halo_{d}1"]),
                                   (fa[f"core_{d}1"], fb[f"halo_{d}0"])]
                else:  # no overlap: the two touching layers
                    last = [slice(None)] * 3
                    last[d] = slice(-1, None)
                    first = [slice(None)] * 3
                    first[d] = slice(0, 1)
                    comparisons = [(fa[f"core_{d}1"][tuple(last)],
                                    fb[f"core_{d}0"][tuple(first)])]
                for x, y in comparisons:
                    ids_x, ids_y, counts, area_x, area_y = overlap_counts(x, y)
                    linked = link_overlaps(ids_x, ids_y, counts, area_x, area_y,
                                           job["stitch_threshold"])
                    same_class = _class_of(ids_x, job) == _class_of(ids_y, job)
                    linked &= same_class
                    edges_a.append(ids_x[linked])
                    edges_b.append(ids_y[linked])
    dtype = np.dtype(job["dtype"])
    table["edges_a"] = np.concatenate(edges_a).astype(dtype) if edges_a else np.zeros(0, dtype)
    table["edges_b"] = np.concatenate(edges_b).astype(dtype) if edges_b else np.zeros(0, dtype)
    return table


def _class_of(ids, job):
    return (np.asarray(ids, np.int64) % job["stride"]) // job["label_divisor"]


def _relabel_block(job, b, face_ids, face_final, offsets):
    """Stage 3 for block ``b``: provisional ids -> final ids in its core (idempotent)."""
    stride = job["stride"]
    div = job["label_divisor"]
    with np.load(_block_file(job, b)) as f:
        interior = f["interior_ids"]
    classes = np.asarray(job["thing_classes"])
    cls = _class_of(interior, job)
    interior_final = np.zeros(len(interior), np.int64)
    for ci, c in enumerate(classes):  # a loop over classes, not objects
        members = np.flatnonzero(cls == c)  # interior ids are sorted
        interior_final[members] = c * div + offsets[ci] + 1 + np.arange(len(members))
    keys = np.concatenate([np.asarray(face_ids, np.int64), interior.astype(np.int64)])
    values = np.concatenate([np.asarray(face_final, np.int64), interior_final])
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    if not len(keys):
        keys, values = np.zeros(1, np.int64), np.zeros(1, np.int64)  # nothing kept: all 0
    out = _worker_output(job)
    core = _core(job, b)
    data = np.asarray(out[core])
    provisional = data >= stride
    if not provisional.any():
        return b
    uniq, inv = np.unique(data[provisional], return_inverse=True)
    pos = np.minimum(np.searchsorted(keys, uniq.astype(np.int64)), len(keys) - 1)
    mapped = np.where(keys[pos] == uniq, values[pos], 0).astype(data.dtype)
    data[provisional] = mapped[inv.reshape(-1)]
    out[core] = data
    return b


# ---------------------------------------------------------------------- client side


def _stitch(tables, job):
    """Connected components of the face links, filters, and final numbering.

    Returns the face ids, their final ids and the (n_blocks, n_classes)
    numbering offsets; raises when a class has more objects than the divisor allows.
    """
    n_blocks = math.prod(job["grid"])
    classes = np.asarray(job["thing_classes"], np.int64)
    div, stride = job["label_divisor"], job["stride"]
    ids = np.concatenate([t["face_ids"] for t in tables]).astype(np.int64)
    sizes = np.concatenate([t["face_sizes"] for t in tables]).astype(np.int64)
    bmin = np.concatenate([t["face_bmin"] for t in tables]).reshape(-1, 3)
    bmax = np.concatenate([t["face_bmax"] for t in tables]).reshape(-1, 3)
    ea = np.concatenate([t["edges_a"] for t in tables]).astype(np.int64)
    eb = np.concatenate([t["edges_b"] for t in tables]).astype(np.int64)
    interior = np.zeros((n_blocks, len(classes)), np.int64)
    for b, t in enumerate(tables):
        cls = _class_of(t["interior_ids"], job)
        interior[b] = [(cls == c).sum() for c in classes]

    group = connected_groups(ids, ea, eb)
    n_groups = int(group.max()) + 1 if len(group) else 0
    g_size = np.bincount(group, weights=sizes, minlength=n_groups).astype(np.int64)
    g_min = np.full((n_groups, 3), np.iinfo(np.int64).max, np.int64)
    g_max = np.full((n_groups, 3), -1, np.int64)
    np.minimum.at(g_min, group, bmin)
    np.maximum.at(g_max, group, bmax)
    g_first = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(g_first, group, ids)  # smallest provisional id: first block, then local id
    g_block = g_first // stride - 1
    g_class = _class_of(g_first, job)
    extent = (g_max - g_min).min(axis=1) if n_groups else g_size
    keep = (g_size >= job["min_size"]) & (extent >= job["min_extent"])

    class_index = np.searchsorted(classes, g_class)
    first_count = np.zeros((n_blocks, len(classes)), np.int64)
    np.add.at(first_count, (g_block[keep], class_index[keep]), 1)
    counts = interior + first_count
    totals = counts.sum(axis=0)
    for c, total in zip(classes, totals):
        if total > div - 1:
            raise ValueError(
                f"class {c} has {int(total)} objects in the whole volume, more than "
                f"label_divisor - 1 = {div - 1}; raise `label_divisor` (--max-objects)"
            )
    offsets = np.cumsum(counts, axis=0) - counts
    # kept groups numbered after their first block's interior objects, by smallest id
    kept = np.flatnonzero(keep)
    order = kept[np.lexsort((g_first[kept], g_block[kept], class_index[kept]))]
    run_key = g_block[order] * len(classes) + class_index[order]
    run_start = np.r_[0, np.flatnonzero(np.diff(run_key)) + 1] if len(order) else np.zeros(0,
                                                                                        int)
    rank = np.arange(len(order)) - np.repeat(run_start, np.diff(np.r_[run_start, len(order)]))
    g_final = np.zeros(n_groups, np.int64)
    blk, ci = g_block[order], class_index[order]
    g_final[order] = classes[ci] * div + offsets[blk, ci] + interior[blk, ci] + 1 + rank
    counts_per_class = {int(c): int(t) for c, t in zip(classes, totals)}
    return ids, g_final[group] if len(group) else ids, offsets, counts_per_class


def _as_record(record):
    if record is None:
        return {}
    if not isinstance(record, dict):
        raise TypeError(f"`record` must be a dict; got {type(record).__name__}")
    return record


def _token(record):
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _fingerprint(kind, source, array):
    """What tells inputs apart in task keys: the file (and its size and time) or the shape."""
    if kind == "path":
        stat = os.stat(source[0])
        return [source, stat.st_size, stat.st_mtime_ns]
    return [kind, list(array.shape), str(array.dtype), id(array)]


def _resolve_source(volume, key, level):
    """``(kind, source, array)``: how workers read ``volume``, and a client-side view of it."""
    from ._image_io import _as_path, open_image

    if isinstance(volume, (str, os.PathLike)):
        path = _as_path(volume)
        array = open_image(path, key=key, level=level)
        return ("path", (str(path.resolve()), key, level)), array
    if key is not None or level is not None:
        raise ValueError("`key` and `level` apply to a path input only")
    if type(volume).__module__.startswith("dask"):
        return ("dask", None), volume
    if type(volume).__module__.startswith("zarr"):
        return ("zarr", volume), volume
    if not (hasattr(volume, "shape") and hasattr(volume, "dtype")):
        volume = np.asarray(volume)
    return ("memory", None), volume


def _check_chunks_fit(chunks, block_size, shape):
    for c, bsz, n in zip(chunks, block_size, shape):
        if bsz % c and bsz < n:
            raise ValueError(
                f"output chunks {tuple(chunks)} do not fit the blocks {tuple(block_size)}: each "
                f"block size must be a multiple of the chunk size along its axis, so that no "
                f"two workers ever write one chunk; choose block_size or chunks accordingly"
            )


def _default_chunks(block_size, shape):
    """Per axis, the largest divisor of the block size up to (64, 256, 256)."""
    chunks = []
    for bsz, n, limit in zip(block_size, shape, _DEFAULT_CHUNK):
        bsz = min(bsz, n)
        chunks.append(max(c for c in range(1, min(bsz, limit) + 1) if bsz % c == 0))
    return tuple(chunks)


def segment_blockwise(volume, out=None, *, model=None, params=None, mode="stack", plane="xy",
                      block_size=None, halo=None, client=None, n_workers=None, device="auto",
                      quantized=False, key=None, level=None, name="labels", chunks=None,
                      overwrite=False, skip_below=None, stitch_threshold=0.5,
                      torch_threads=None, progress=None, should_stop=None, record=None,
                      keep_scratch=False):
    """Segment a 3D volume block by block on a Dask cluster and stitch the blocks.

    Parameters
    ----------
    volume : path, zarr array, dask array or (Z, Y, X) array-like
        A path (TIFF, npy, zarr, OME-Zarr with ``key`` / ``level``) or a zarr
        array is read by the workers themselves, block by block; a dask array
        is computed block by block on the cluster; an in-memory array is sent
        to the workers one block at a time.
    out : path, optional
        Output store, ``*.zarr`` or ``*.ome.zarr`` (NGFF ``image-label``
        metadata), on a file system the workers share. Without it the labels
        are returned as an ndarray (written to a temporary store first).
    model : str, path or empanada_models.ModelConfig, optional
        Registered model name or config file (default: the registry default).
        Loaded once per worker, not per block.
    params : SegmentationParams, optional
        ``min_size`` and ``min_extent`` are applied after stitching, to whole
        objects; the other settings go to the engine of every block.
    mode : {'stack', 'ortho'}
        Stack inference along ``plane``, or the ortho-plane consensus, per block.
    plane : {'xy', 'xz', 'yz'}
    block_size : int or (3,) ints, optional
        Core block shape (default :func:`default_block_size`; for a dask array
        with regular chunks, its chunks).
    halo : int or (3,) ints, optional
        Context on every side of a block (default :func:`default_halo`). The
        network sees it, the block does not write it; neighbours are stitched
        where their halos overlap (without a halo, by the touching layers).
    client : distributed.Client or str, optional
        A client, or a scheduler address (``tcp://HOST:PORT``). Default: a
        ``LocalCluster`` of ``n_workers`` processes, closed at the end.
    n_workers : int, optional
        Workers of the local cluster (default: 1 per GPU, else 2).
    device : str
        'auto' (local workers spread over the GPUs), 'cpu', 'cuda', 'cuda:N'.
    quantized : bool
    name : str
        Array name in the output store.
    chunks : (3,) ints, optional
        Output chunks; each block size must be a multiple of them (default: the
        largest divisors of the block size up to 64 x 256 x 256).
    overwrite : bool
        Start again; otherwise an existing output of the same call is resumed
        (done blocks are skipped) and one of another call is refused.
    skip_below : float, optional
        Blocks whose input values (core and halo) are all <= this are not
        segmented (label 0). All-zero blocks (for example zero padding outside
        the sample) are always skipped.
    stitch_threshold : float
        Two blocks' ids are one object when their overlap is at least this
        fraction of the smaller in the compared slabs.
    torch_threads : int, optional
        torch threads per worker (default: the number of cores divided by the
        workers for a local cluster on the CPU, else torch's own setting).
    progress : callable, optional
        ``progress(done, total)``; each block counts three steps (segment,
        match, relabel), so ``total`` is three times the number of blocks.
    should_stop : callable, optional
        Polled about twice a second; True cancels the run with
        :class:`InferenceCancelled` (done blocks stay done).
    record : dict, optional
        Extra JSON parameters recorded in (and compared on resume with) the
        output's progress record.
    keep_scratch : bool
        Keep the per-block tables (next to the output, a hidden folder) after
        a complete run.

    Returns
    -------
    BlockwiseResult
        ``result.output`` is the zarr array (or an ndarray without ``out``) of
        ids ``class_id * label_divisor + k``, uint32 (uint64 when the
        provisional ids of many blocks need it).

    Raises
    ------
    TypeError
        If the volume is not a 3D greyscale image.
    ValueError
        If a setting is invalid, the output's chunks do not fit the blocks, or
        an existing output was written by another call.
    ConnectionError
        If a scheduler address cannot be reached (within 10 s).
    """
    from empanada_models import resolve_model_config

    from ._image_io import check_image, intensity_range
    from ._params import InferenceCancelled, SegmentationParams
    from ._writers import create_output, is_complete, is_done, mark_complete, mark_done

    t_start = time.perf_counter()
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}")
    if plane not in _PLANES:
        raise ValueError(f"`plane` must be one of {sorted(_PLANES)}; got {plane!r}")
    params = SegmentationParams() if params is None else params
    if not isinstance(params, SegmentationParams):
        raise TypeError(f"`params` must be a SegmentationParams; got {type(params).__name__}")
    if not 0.0 < float(stitch_threshold) <= 1.0:
        raise ValueError(f"`stitch_threshold` must be in (0, 1]; got {stitch_threshold!r}")
    if torch_threads is not None:
        check_int(torch_threads, "torch_threads", 1)
    (kind, source), array = _resolve_source(volume, key, level)
    if kind == "dask":
        if len(array.shape) != 3:
            raise TypeError(f"`volume` must be 3D (z, y, x); got shape {tuple(array.shape)}")
    else:
        check_image(array, ndim=3, arg_name="volume")
    shape = tuple(int(n) for n in array.shape)
    config = resolve_model_config(model)
    if block_size is None and kind == "dask":
        block_size = _regular_chunks(array)
    block_size = default_block_size(config, mode, plane) if block_size is None else block_size
    block_size = tuple(min(b, n) for b, n in zip(_triple(block_size, "block_size", 1), shape))
    halo = default_halo(config, params, mode, plane) if halo is None else halo
    halo = _triple(halo, "halo", 0)
    grid, cores = block_grid(shape, block_size)
    n_blocks = len(cores)
    regions = [padded_region(c, halo, shape) for c in cores]
    thing_classes = () if params.semantic_only else tuple(
        sorted(int(c) for c in config.thing_list if c in tuple(config.labels)))
    div = params.label_divisor
    stride = (max([int(c) for c in config.labels] + [0]) + 1) * div
    max_id = (n_blocks + 1) * stride + stride
    dtype = np.dtype(np.uint32 if max_id <= np.iinfo(np.uint32).max else np.uint64)

    chunks = _default_chunks(block_size, shape) if chunks is None else \
        _triple(chunks, "chunks", 1)
    _check_chunks_fit(chunks, block_size, shape)

    run_record = {
        "engine": "blockwise", "mode": mode, "plane": plane, "block_size": list(block_size),
        "halo": list(halo), "stitch_threshold": float(stitch_threshold),
        "skip_below": skip_below, "model": config.name, "quantized": bool(quantized),
        "params": {k: v for k, v in vars(params).items()
                   if k not in ("batch_size", "precision", "channels_last", "cpu_workers")},
        "run": _as_record(record),
    }

    temporary = None
    if out is None:
        temporary = tempfile.mkdtemp(prefix="empanada-blockwise-")
        out = Path(temporary) / "labels.zarr"
    out_path = Path(out).expanduser().resolve()
    scratch = out_path.parent / f".{out_path.name}.{name}.blockwise"
    if overwrite and scratch.exists():
        shutil.rmtree(scratch)
    output = create_output(out_path, shape, dtype, chunks=chunks, name=name,
                           overwrite=overwrite, resume=not overwrite, params=run_record)
    if tuple(output.chunks) != tuple(min(c, n) for c, n in zip(chunks, shape)):
        _check_chunks_fit(tuple(output.chunks), block_size, shape)
    array_path = output.path
    result_kw = dict(n_blocks=n_blocks, grid=grid, block_size=block_size, halo=halo)
    if is_complete(output):
        return BlockwiseResult(output=_final(output, temporary), counts={},
                               already_complete=True, **result_kw)
    scratch.mkdir(parents=True, exist_ok=True)

    value_range = None
    mode_norm = params.normalize
    if not (mode_norm == "dtype" or (mode_norm == "auto" and np.dtype(array.dtype) == np.uint8)):
        value_range = intensity_range(array, mode="percentile")

    own_cluster = None
    if client is None or isinstance(client, str):
        client, own_cluster = connect_client(client, n_workers=n_workers)
    try:
        threads = torch_threads
        if threads is None and own_cluster is not None and not str(device).startswith("cuda"):
            workers = max(1, len(client.scheduler_info().get("workers", {})))
            threads = max(1, (os.cpu_count() or 1) // workers)
        token = _token({**run_record, "out": str(out_path), "name": name,
                        "input": _fingerprint(kind, source, array)})
        model_ref = Path(config.source).resolve() if config.source is not None else \
            config.to_yaml(scratch / f"{config.name}.yaml")
        job = {
            "token": token, "model": str(model_ref), "params": params, "device": device,
            "quantized": bool(quantized), "mode": mode, "axis": _PLANES[plane],
            "value_range": value_range, "source": (kind, source),
            "output": (str(out_path), array_path), "scratch": str(scratch),
            "grid": grid, "shape": shape, "block_size": block_size, "halo": halo,
            "dtype": dtype.str, "stride": stride, "label_divisor": div,
            "thing_classes": thing_classes, "min_size": params.min_size,
            "min_extent": params.min_extent, "skip_below": skip_below,
            "stitch_threshold": float(stitch_threshold), "torch_threads": threads,
        }
        # the job is small and goes with every task: nothing a lost worker could take along
        job_future = job
        steps = [0]
        total = 3 * n_blocks

        def advance(k=1):
            steps[0] += k
            if progress is not None:
                progress(steps[0], total)

        stage_seconds = {}
        # stage 1: segment
        t0 = time.perf_counter()
        todo = [b for b in range(n_blocks) if not is_done(output, b)]
        advance(n_blocks - len(todo))
        stitched = is_done(output, _STITCHED)
        if stitched:
            todo = []
            steps[0] = 2 * n_blocks

        def submit_segment(b):
            task_key = f"empanada-segment-{token}-{b}"
            if kind == "dask":
                data = client.compute(array[regions[b]])
                return client.submit(_segment_block, job_future, b, data, key=task_key)
            if kind == "memory":
                data = np.ascontiguousarray(array[regions[b]])
                return client.submit(_segment_block, job_future, b, data, key=task_key)
            return client.submit(_segment_block, job_future, b, key=task_key)

        infos = []

        def segment_done(b, info):
            mark_done(output, b)
            infos.append(info)
            advance()

        _run_windowed(client, todo, submit_segment, segment_done, should_stop,
                      InferenceCancelled)
        stage_seconds["segment"] = time.perf_counter() - t0

        # stage 2: match faces, stitch on the client, save the numbering
        stitch_file = scratch / "stitch.npz"
        if stitched:
            with np.load(stitch_file) as f:
                face_ids, face_final, offsets = f["face_ids"], f["face_final"], f["offsets"]
                counts = json.loads(str(f["counts"]))
        else:
            t0 = time.perf_counter()
            tables = [None] * n_blocks

            def submit_match(b):
                return client.submit(_match_block, job_future, b,
                                     key=f"empanada-match-{token}-{b}")

            def match_done(b, table):
                tables[b] = table
                advance()

            _run_windowed(client, list(range(n_blocks)), submit_match, match_done,
                          should_stop, InferenceCancelled)
            stage_seconds["match"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            face_ids, face_final, offsets, counts = _stitch(tables, job)
            del tables
            _save_npz(stitch_file, face_ids=face_ids, face_final=face_final, offsets=offsets,
                      counts=np.array(json.dumps(counts)))
            mark_done(output, _STITCHED)
            stage_seconds["stitch"] = time.perf_counter() - t0

        # stage 3: relabel
        t0 = time.perf_counter()
        block_of = face_ids // stride - 1
        order = np.argsort(block_of, kind="stable")
        bounds = np.searchsorted(block_of[order], np.arange(n_blocks + 1))
        relabel = [b for b in range(n_blocks) if not is_done(output, n_blocks + b)]
        advance(n_blocks - len(relabel))

        def submit_relabel(b):
            members = order[bounds[b]:bounds[b + 1]]
            return client.submit(_relabel_block, job_future, b, face_ids[members],
                                 face_final[members], offsets[b],
                                 key=f"empanada-relabel-{token}-{b}")

        def relabel_done(b, _):
            mark_done(output, n_blocks + b)
            advance()

        _run_windowed(client, relabel, submit_relabel, relabel_done, should_stop,
                      InferenceCancelled)
        stage_seconds["relabel"] = time.perf_counter() - t0
        mark_complete(output)
        services = client.scheduler_info().get("services", {})
        dashboard = client.dashboard_link if "dashboard" in services else None
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    if not keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    peaks = {}
    for info in infos:
        peaks[info["worker"]] = max(peaks.get(info["worker"], 0), info["peak_rss"])
    stage_seconds["total"] = time.perf_counter() - t_start
    return BlockwiseResult(
        output=_final(output, temporary), counts={int(k): v for k, v in counts.items()},
        segmented=sum(not i["skipped"] for i in infos), skipped=sum(i["skipped"] for i in infos),
        block_seconds=[i["seconds"] for i in infos if not i["skipped"]],
        stage_seconds=stage_seconds, worker_peak_rss=peaks, dashboard_link=dashboard,
        **result_kw)


def _final(output, temporary):
    if temporary is None:
        return output
    labels = np.asarray(output[...])
    shutil.rmtree(temporary, ignore_errors=True)
    return labels


def _regular_chunks(array):
    """A dask array's chunk shape when its chunks are regular (all but the last equal)."""
    size = []
    for axis_chunks in array.chunks:
        if len(set(axis_chunks[:-1])) > 1 or (len(axis_chunks) > 1
                                              and axis_chunks[-1] > axis_chunks[0]):
            return None
        size.append(int(axis_chunks[0]))
    return tuple(size)


def _run_windowed(client, items, submit, on_done, should_stop, cancelled):
    """Submit ``submit(item)`` for every item, a bounded number in flight, in order.

    ``on_done(item, result)`` runs on this thread as each task finishes (any
    order). A failed task's error is raised; ``should_stop`` is polled. Task
    keys are deterministic, so a task resubmitted right after an earlier call
    cancelled the same key can come back cancelled: it is submitted again (a
    few times at most).
    """
    from distributed import wait

    items = list(items)
    pending = {}
    position = 0
    resubmitted = {}

    def window():
        threads = sum(client.nthreads().values()) if hasattr(client, "nthreads") else 1
        return max(4, 2 * threads + 2)

    try:
        while position < len(items) or pending:
            while position < len(items) and len(pending) < window():
                future = submit(items[position])
                pending[future] = items[position]
                position += 1
            if should_stop is not None and should_stop():
                raise cancelled("the blockwise run was cancelled")
            try:
                wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished yet: poll should_stop again
                continue
            except Exception:  # noqa: BLE001 - a cancelled future: handled below
                pass
            for future in [f for f in pending if f.status != "pending"]:
                item = pending.pop(future)
                if future.status == "cancelled" and resubmitted.get(item, 0) < 3:
                    resubmitted[item] = resubmitted.get(item, 0) + 1
                    time.sleep(0.1)
                    pending[submit(item)] = item
                    continue
                on_done(item, future.result())
    finally:
        if pending:
            client.cancel(list(pending))

