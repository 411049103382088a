"""Thin adapters around the ORIGINAL empanada implementation (empanada-napari 1.2.4).

These functions only *call* the original library (``empanada`` as vendored by
``empanada-napari==1.2.4`` and ``empanada_napari.inference``); no logic of the
original is reproduced here, only the glue needed to go from dense numpy arrays
to the original's data structures and back.

The original is normally installed in a throwaway virtualenv (see
``benchmarks/README.md``, section "Comparing with the original").  This module
can be imported anywhere: the original is imported lazily, on the first call of
an adapter, and a missing install raises :class:`OriginalNotInstalled` with the
install instructions.

Adapters and return conventions
-------------------------------
``original_postprocess_2d(sem_prob, ctr_hmp, offsets, ...) -> (H, W) int32``
    Panoptic ids ``class * label_divisor + k``; with ``force_connected`` (the
    default, as in ``Engine2d``) ``k`` are raster-order connected-component
    numbers per thing class.
``original_assemble_stack(pan_slices, *, axis, shape, ...) -> {class_id: 3D int32}``
    One dense instance volume per class (ids 1..N in the original's tracker
    order, with gaps where the size/extent filters removed objects).  Stuff
    classes (in ``class_ids`` but not in ``thing_list``) get their own volume
    too, as in ``stack_postprocessing``.
``original_ortho_consensus(xy, xz, yz, ...) -> 3D int32``
    Consensus instance ids 1..M (gaps where filters removed objects).
``original_median_stack(probs, size) -> list of (C, H, W) float32``
    The sequence the original median queue emits, in emission order.

Full engines (model included), for end-to-end runs on CPU:

``original_engine2d(image, model_config, ...) -> (H, W) int32``
    ``Engine2d.infer`` (normalise, pad, TorchScript forward, postprocess,
    ``force_connected``).
``original_engine3d(volume, axis, model_config, ...) -> {class_id: 3D int32}``
    ``Engine3d.infer_on_axis`` (with its forward-matching process) followed by
    ``stack_postprocessing``, as the napari 3D widget's stack mode.
``original_engine_ortho(volume, model_config, ...) -> {class_id: 3D int32}``
    ``infer_on_axis`` along xy, xz and yz, then ``tracker_consensus``, as the
    widget's ortho-plane mode.

``make_original_engine2d`` / ``make_original_engine3d`` build the engine (and
load the model) once, so that runs can be timed without the model loading.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import queue as _queue
import sys
import time
import types
from types import SimpleNamespace

import numpy as np

__all__ = [
    "OriginalNotInstalled",
    "available",
    "original_postprocess_2d",
    "original_assemble_stack",
    "original_ortho_consensus",
    "original_median_stack",
    "original_model_config",
    "make_original_engine2d",
    "make_original_engine3d",
    "original_engine2d",
    "original_engine3d",
    "original_engine_ortho",
    "original_stacks_from_trackers",
    "AXIS_NAMES",
]

AXIS_NAMES = ("xy", "xz", "yz")

INSTALL_HINT = (
    "the original empanada is not importable in this interpreter. Create the "
    "comparison venv as described in benchmarks/README.md ('Comparing with the "
    "original'):\n"
    "  python3 -m venv /work/orig-venv\n"
    "  /work/orig-venv/bin/pip install torch==2.13.0\n"
    "  /work/orig-venv/bin/pip install --no-deps empanada-napari==1.2.4\n"
    "  /work/orig-venv/bin/pip install numpy scipy scikit-image numba "
    "opencv-python-headless cztile zarr pyyaml dask joblib tqdm requests tifffile\n"
    "and run with /work/orig-venv/bin/python."
)


class OriginalNotInstalled(ImportError):
    """Raised when the original ``empanada`` library cannot be imported."""


_MODS: SimpleNamespace | None = None


def _import_napari_inference():
    """Import ``empanada_napari.inference`` without napari / Qt.

    ``empanada_napari/__init__.py`` imports every napari widget, so the package
    ``__init__`` is bypassed by registering a bare package module whose
    ``__path__`` points at the installed directory.  If napari itself is not
    installed, ``napari.qt.threading.thread_worker`` is stubbed with an identity
    decorator for the duration of the import (the decorated functions then stay
    plain generators).  If napari is installed, the real decorator is used and
    the undecorated function is recovered through ``__wrapped__``.
    """
    spec = importlib.util.find_spec("empanada_napari")
    if spec is None or not spec.submodule_search_locations:
        raise OriginalNotInstalled(INSTALL_HINT)

    added = []
    if "empanada_napari" not in sys.modules:
        pkg = types.ModuleType("empanada_napari")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        sys.modules["empanada_napari"] = pkg
        added.append("empanada_napari")

    if importlib.util.find_spec("napari") is None:
        for name in ("napari", "napari.qt", "napari.qt.threading"):
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        sys.modules["napari.qt.threading"].thread_worker = lambda fn=None, **kw: fn

    try:
        mod = importlib.import_module("empanada_napari.inference")
    finally:
        # drop the napari stubs again (keep the bare empanada_napari package and
        # its imported submodules; they are harmless)
        for name in added:
            if name.startswith("napari"):
                sys.modules.pop(name, None)
    return mod


def _load() -> SimpleNamespace:
    global _MODS
    if _MODS is not None:
        return _MODS
    try:
        import torch  # noqa: F401
        from empanada import array_utils, consensus
        from empanada.inference import (
            engines,
            filters,
            matcher,
            patterns,
            postprocess,
            rle,
            tracker,
        )
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OriginalNotInstalled(f"{INSTALL_HINT}\n(import error: {exc})") from exc
    napari_inference = _import_napari_inference()

    def unwrap(fn):
        return getattr(fn, "__wrapped__", fn)

    _MODS = SimpleNamespace(
        torch=torch,
        array_utils=array_utils,
        consensus=consensus,
        engines=engines,
        filters=filters,
        matcher=matcher,
        patterns=patterns,
        postprocess=postprocess,
        rle=rle,
        tracker=tracker,
        napari_inference=napari_inference,
        stack_postprocessing=unwrap(napari_inference.stack_postprocessing),
        tracker_consensus=unwrap(napari_inference.tracker_consensus),
        instance_relabel=napari_inference.instance_relabel,
        Engine2d=napari_inference.Engine2d,
    )
    return _MODS


def available() -> bool:
    """True when the original library can be imported here."""
    try:
        _load()
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# 2D panoptic postprocessing
# --------------------------------------------------------------------------


def original_postprocess_2d(
    sem_prob,
    ctr_hmp,
    offsets,
    *,
    thing_list=(1,),
    label_divisor=1000,
    confidence_thr=0.5,
    center_thr=0.1,
    nms_kernel=3,
    stuff_area=64,
    upsampling=1,
    coarse_boundaries=True,
    force_connected=True,
    size=None,
):
    """Run the original's render-engine postprocessing on given network outputs.

    Args:
        sem_prob: (C, H, W) float32 probabilities at output resolution
            (sigmoid for C == 1, softmax for C > 1).
        ctr_hmp: (h, w) raw centre heatmap on the centre grid
            (h = H / (4 * upsampling) with coarse boundaries, H / upsampling otherwise).
        offsets: (2, h, w) (dy, dx) offsets in downsampled-input pixel units.
        size: optional (H0, W0) crop applied after the merge (the original's
            pre-padding image size); default: no crop.

    Returns:
        (H, W) int32 panoptic ids. Steps (all original code, on CPU tensors):
        ``PanopticDeepLabRenderEngine.get_instance_cells`` (find_instance_center,
        group_pixels with step 4/1, nearest upsample by step * upsampling),
        ``PanopticDeepLabRenderEngine.postprocess`` (_harden_seg: >= thr for C == 1,
        argmax for C > 1; merge_semantic_and_instance), the crop, and, when
        ``force_connected``, ``Engine2d.force_connected`` (per thing class
        connected components + class * label_divisor).
    """
    m = _load()
    torch = m.torch
    sem_prob = np.asarray(sem_prob, dtype=np.float32)
    ctr_hmp = np.asarray(ctr_hmp, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.float32)
    if sem_prob.ndim != 3:
        raise ValueError(f"sem_prob must be (C, H, W), got {sem_prob.shape}")
    if ctr_hmp.ndim != 2 or offsets.shape != (2,) + ctr_hmp.shape:
        raise ValueError(
            f"ctr_hmp must be (h, w) and offsets (2, h, w); got {ctr_hmp.shape}, {offsets.shape}"
        )
    factor = (4 if coarse_boundaries else 1) * int(upsampling)
    expected = (ctr_hmp.shape[0] * factor, ctr_hmp.shape[1] * factor)
    if sem_prob.shape[1:] != expected:
        raise ValueError(
            f"sem_prob spatial shape {sem_prob.shape[1:]} must equal the centre grid "
            f"{ctr_hmp.shape} times {factor} = {expected}"
        )

    engine = m.engines.PanopticDeepLabRenderEngine(
        torch.nn.Module(),  # no model is run; only the postprocessing methods are used
        thing_list=list(thing_list),
        label_divisor=int(label_divisor),
        stuff_area=int(stuff_area),
        void_label=0,
        nms_threshold=float(center_thr),
        nms_kernel=int(nms_kernel),
        confidence_thr=float(confidence_thr),
        padding_factor=1,
        coarse_boundaries=bool(coarse_boundaries),
    )
    sem = torch.from_numpy(np.ascontiguousarray(sem_prob))[None]  # (1, C, H, W)
    ctr = torch.from_numpy(np.ascontiguousarray(ctr_hmp))[None, None]  # (1, 1, h, w)
    off = torch.from_numpy(np.ascontiguousarray(offsets))[None]  # (1, 2, h, w)
    with torch.no_grad():
        cells = engine.get_instance_cells(ctr, off, int(upsampling))
        pan = engine.postprocess(sem, cells)
    if size is not None:
        pan = pan[..., : int(size[0]), : int(size[1])]
    pan = pan.squeeze().cpu().numpy().astype(np.int32)
    if pan.ndim != 2:  # squeeze of a 1-pixel-high/wide image
        pan = pan.reshape(sem_prob.shape[1:] if size is None else tuple(size))
    if force_connected:
        fake_engine2d = SimpleNamespace(
            engine=SimpleNamespace(thing_list=list(thing_list)),
            label_divisor=int(label_divisor),
        )
        pan = m.Engine2d.force_connected(fake_engine2d, pan)
    return pan


# --------------------------------------------------------------------------
# 3D stack assembly
# --------------------------------------------------------------------------


class _CapturePipe:
    """Stands in for the mp.Pipe end that forward_matching sends its result to."""

    def __init__(self):
        self.payload = None

    def send(self, obj):
        self.payload = obj

    def close(self):
        pass


def original_assemble_stack(
    pan_slices,
    *,
    axis=0,
    shape,
    label_divisor=1000,
    thing_list=(1,),
    class_ids=None,
    min_size=500,
    min_extent=4,
    merge_iou_thr=0.25,
    merge_ioa_thr=0.25,
    return_trackers=False,
):
    """Assemble per-slice 2D panoptic images into 3D instances with the original.

    Reproduces ``Engine3d.infer_on_axis`` after the model (everything in-process,
    no multiprocessing) followed by ``stack_postprocessing``:

    1. ``patterns.forward_matching`` (``pan_seg_to_rle_seg`` with forced
       connectivity + ``RLEMatcher`` forward pass) fed from an in-process queue;
    2. ``patterns.backward_matching`` + ``update_trackers`` into one
       ``InstanceTracker`` per class for ``axis``; ``finish_tracking``;
    3. ``filters.remove_small_objects`` / ``remove_pancakes`` on every class
       tracker (as ``infer_on_axis`` does);
    4. ``empanada_napari.inference.stack_postprocessing`` (``instance_relabel``,
       the filters again for thing classes, ``fill_volume`` into a numpy
       ``int32`` volume -- ``Engine3d.dtype``).

    Args:
        pan_slices: sequence of 2D int panoptic images along ``axis`` (xy: (H, W),
            xz: (D, W), yz: (D, H)); cast to int64 as the engine produces.
        axis: 0/1/2 or 'xy'/'xz'/'yz'.
        shape: the 3D volume shape (D, H, W).
        class_ids: all classes to encode (the model config's ``labels``);
            default ``thing_list``.

    Returns:
        dict {class_id: (D, H, W) int32 volume}; with ``return_trackers`` a tuple
        (that dict, {class_id: instances dict after relabelling and filtering}).
    """
    m = _load()
    axis_name = AXIS_NAMES[axis] if not isinstance(axis, str) else axis
    axis_idx = AXIS_NAMES.index(axis_name)
    shape = tuple(int(s) for s in shape)
    if len(pan_slices) != shape[axis_idx]:
        raise ValueError(f"got {len(pan_slices)} slices but shape[{axis_idx}] = {shape[axis_idx]}")
    thing_list = [int(c) for c in thing_list]
    labels = [int(c) for c in (class_ids if class_ids is not None else thing_list)]
    div = int(label_divisor)

    matchers = m.patterns.create_matchers(thing_list, div, merge_iou_thr, merge_ioa_thr)
    q = _queue.Queue()
    for sl in pan_slices:
        q.put(np.asarray(sl).astype(np.int64))
    q.put("finish")
    pipe = _CapturePipe()
    m.patterns.forward_matching(matchers, q, [], pipe, labels, div, thing_list)
    rle_stack = pipe.payload[0]

    trackers = [m.tracker.InstanceTracker(c, div, shape, axis_name) for c in labels]
    for index, rle_seg in m.patterns.backward_matching(rle_stack, matchers, shape[axis_idx]):
        m.patterns.update_trackers(rle_seg, index, trackers)
    m.patterns.finish_tracking(trackers)
    for tr in trackers:
        m.filters.remove_small_objects(tr, min_size=min_size)
        m.filters.remove_pancakes(tr, min_span=min_extent)

    model_config = {
        "labels": labels,
        "thing_list": thing_list,
        "class_names": {c: str(c) for c in labels},
    }
    volumes, instances = {}, {}
    with contextlib.redirect_stdout(io.StringIO()):  # the original prints progress
        results = list(
            m.stack_postprocessing(
                {axis_name: trackers},
                None,
                model_config,
                label_divisor=div,
                min_size=min_size,
                min_extent=min_extent,
                dtype=np.int32,
            )
        )
    for vol, class_name, inst in results:
        volumes[int(class_name)] = vol
        instances[int(class_name)] = inst
    if return_trackers:
        return volumes, instances
    return volumes


# --------------------------------------------------------------------------
# Ortho-plane consensus
# --------------------------------------------------------------------------


def _dense_to_instances(volume, m):
    """{id: {'box', 'starts', 'runs'}} for a dense 3D label volume.

    Order: ascending id. Box: half-open (z0, y0, x0, z1, y1, x1). Starts/runs:
    the original's ``array_utils.rle_encode`` of the ascending C-order flat
    indices of the voxels of each id (3D flat indices, as trackers hold after
    ``finish()``).
    """
    flat = np.ascontiguousarray(volume).reshape(-1)
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        return {}
    vals = flat[nz]
    order = np.argsort(vals, kind="stable")  # stable: indices stay ascending per id
    vals = vals[order]
    idx = nz[order]
    ids, first = np.unique(vals, return_index=True)
    bounds = np.append(first, vals.size)
    coords = np.unravel_index(idx, volume.shape)
    out = {}
    for k, lab in enumerate(ids):
        a, b = bounds[k], bounds[k + 1]
        seg = idx[a:b]
        starts, runs = m.array_utils.rle_encode(seg)
        lo = [int(c[a:b].min()) for c in coords]
        hi = [int(c[a:b].max()) + 1 for c in coords]
        out[int(lab)] = {
            "box": tuple(lo + hi),
            "starts": np.asarray(starts, dtype=np.int64),
            "runs": np.asarray(runs, dtype=np.int64),
        }
    return out


def original_ortho_consensus(
    xy,
    xz,
    yz,
    *,
    vote_thr=2,
    cluster_iou_thr=0.75,
    allow_one_view=False,
    min_size=0,
    min_extent=0,
    class_id=1,
    label_divisor=1000,
    return_instances=False,
):
    """Ortho-plane consensus of three dense instance volumes of one class.

    Each view's volume becomes a finished ``InstanceTracker`` (axis 'xy', 'xz',
    'yz') whose ``instances`` are built by :func:`_dense_to_instances` (ascending
    id order, 3D box, sorted 3D RLE). Then
    ``empanada_napari.inference.tracker_consensus`` runs on them:
    ``create_instance_consensus`` (``consensus.merge_objects_from_trackers``),
    ``remove_small_objects(min_size)``, ``remove_pancakes(min_extent)`` and
    ``fill_volume`` into an int32 numpy volume.

    Returns:
        (D, H, W) int32 consensus ids 1..M (possibly with gaps after filtering);
        with ``return_instances`` also the consensus instances dict.
    """
    m = _load()
    vols = [np.asarray(v) for v in (xy, xz, yz)]
    shape = vols[0].shape
    if any(v.shape != shape for v in vols) or len(shape) != 3:
        raise ValueError(f"views must be 3D with one shape, got {[v.shape for v in vols]}")
    shape = tuple(int(s) for s in shape)
    trackers = {}
    for axis_name, vol in zip(AXIS_NAMES, vols):
        tr = m.tracker.InstanceTracker(int(class_id), int(label_divisor), shape, axis_name)
        tr.instances = _dense_to_instances(vol, m)
        tr.finished = True
        trackers[axis_name] = [tr]
    model_config = {
        "labels": [int(class_id)],
        "thing_list": [int(class_id)],
        "class_names": {int(class_id): str(class_id)},
    }
    with contextlib.redirect_stdout(io.StringIO()):  # the original prints progress
        results = list(
            m.tracker_consensus(
                trackers,
                None,
                model_config,
                label_divisor=int(label_divisor),
                pixel_vote_thr=vote_thr,
                cluster_iou_thr=cluster_iou_thr,
                allow_one_view=allow_one_view,
                min_size=min_size,
                min_extent=min_extent,
                dtype=np.int32,
            )
        )
    ((vol, _name, instances),) = results
    if return_instances:
        return vol, instances
    return vol


# --------------------------------------------------------------------------
# Median queue
# --------------------------------------------------------------------------


def original_median_stack(probs, size):
    """Run the original ``engines._MedianQueue`` over a sequence of probabilities.

    Each item is enqueued as ``{'sem': tensor (1, C, H, W)}``; after each enqueue
    ``get_next(['sem'])`` is called and non-None results are emitted; at the end
    the items of ``end()`` are emitted (unfiltered), as ``Engine3d`` does.

    Args:
        probs: sequence of (C, H, W) float arrays.
        size: odd median kernel size.

    Returns:
        list of (C, H, W) float32 arrays in emission order (can be shorter than
        the input for short stacks -- the original's behaviour).
    """
    m = _load()
    torch = m.torch
    mq = m.engines._MedianQueue(int(size))
    emitted = []
    with torch.no_grad():
        for p in probs:
            t = torch.from_numpy(np.array(p, dtype=np.float32, copy=True))[None]
            mq.enqueue({"sem": t})
            out = mq.get_next(keys=["sem"])
            if out is not None:
                # copy: the original keeps (and may later modify) the dict it returns
                emitted.append(out["sem"][0].cpu().numpy().copy())
        for out in mq.end():
            emitted.append(out["sem"][0].cpu().numpy().copy())
    return emitted


# --------------------------------------------------------------------------
# Full engines: Engine2d / Engine3d with a TorchScript model, on the CPU
# --------------------------------------------------------------------------


def original_model_config(config, model_path=None):
    """A model config dict as the original engines read it.

    Args:
        config: a registry-style ``.yaml`` file (the schema of the original's
            ``empanada_napari/configs/*.yaml``) or a mapping with its keys.
        model_path: TorchScript file to load instead of ``config['model']``.

    Returns:
        dict with ``model`` an absolute path (a relative one is resolved
        against the yaml's folder), ``norms``, ``padding_factor``,
        ``thing_list``, ``labels`` and ``class_names``.
    """
    import yaml

    base = None
    if isinstance(config, (str, os.PathLike)):
        base = os.path.dirname(os.path.abspath(os.fspath(config)))
        with open(config, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    cfg = dict(config)
    if model_path is not None:
        cfg["model"] = os.fspath(model_path)
    model = os.fspath(cfg["model"])
    if base is not None and "://" not in model and not os.path.isabs(model):
        model = os.path.join(base, model)
    cfg["model"] = model
    return cfg


@contextlib.contextmanager
def _quiet():
    """The engines print progress and tqdm bars; keep them off the terminal."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def make_original_engine2d(
    model_config,
    *,
    model_path=None,
    confidence_thr=0.5,
    center_thr=0.1,
    nms_kernel=3,
    label_divisor=10000,
    downsampling=1,
    fine_boundaries=False,
    semantic_only=False,
    tile_size=0,
):
    """``empanada_napari.inference.Engine2d`` on the CPU (loads the model).

    ``model_config`` as for :func:`original_model_config`. Defaults are the
    napari 2D widget's (confidence 0.5, max objects 10000).
    """
    m = _load()
    cfg = original_model_config(model_config, model_path)
    with _quiet():
        return m.Engine2d(
            cfg,
            inference_scale=int(downsampling),
            label_divisor=int(label_divisor),
            nms_threshold=float(center_thr),
            nms_kernel=int(nms_kernel),
            confidence_thr=float(confidence_thr),
            semantic_only=bool(semantic_only),
            fine_boundaries=bool(fine_boundaries),
            tile_size=int(tile_size),
            use_gpu=False,
            use_quantized=False,
        )


def original_engine2d(image, model_config=None, *, engine=None, model_path=None, **params):
    """Segment one 2D image with the original ``Engine2d.infer``.

    Args:
        image: (H, W) integer image (the original rejects float images).
        model_config, model_path, params: see :func:`make_original_engine2d`;
            ignored when ``engine`` (from that function) is given.

    Returns:
        (H, W) int32 panoptic ids ``class * label_divisor + k`` (``k`` are
        raster-order connected components, ``Engine2d.force_connected``).
    """
    if engine is None:
        engine = make_original_engine2d(model_config, model_path=model_path, **params)
    m = _load()
    with _quiet(), m.torch.no_grad():
        return engine.infer(np.asarray(image))


def make_original_engine3d(
    model_config,
    *,
    model_path=None,
    confidence_thr=0.5,
    center_thr=0.1,
    nms_kernel=3,
    label_divisor=10000,
    median_size=3,
    min_size=500,
    min_extent=5,
    downsampling=1,
    fine_boundaries=False,
    semantic_only=False,
):
    """``empanada_napari.inference.Engine3d`` on the CPU (loads the model).

    Defaults are the napari 3D widget's (confidence 0.5, median 3, max
    objects 10000, min size 500, min extent 5), not ``Engine3d``'s own.
    """
    m = _load()
    cfg = original_model_config(model_config, model_path)
    with _quiet():
        return m.napari_inference.Engine3d(
            cfg,
            inference_scale=int(downsampling),
            label_divisor=int(label_divisor),
            median_kernel_size=int(median_size),
            nms_threshold=float(center_thr),
            nms_kernel=int(nms_kernel),
            confidence_thr=float(confidence_thr),
            min_size=int(min_size),
            min_extent=int(min_extent),
            fine_boundaries=bool(fine_boundaries),
            semantic_only=bool(semantic_only),
            use_gpu=False,
            use_quantized=False,
        )


def _class_volumes(results, engine):
    ids = {str(name): int(c) for c, name in engine.class_names.items()}
    return {ids[str(name)]: vol for vol, name, _instances in results}


def original_engine3d(volume, axis="xy", model_config=None, *, engine=None, model_path=None,
                      timings=None, **params):
    """Stack inference with the original: ``Engine3d.infer_on_axis`` + ``stack_postprocessing``.

    Args:
        volume: (D, H, W) integer volume (numpy).
        axis: 'xy', 'xz' or 'yz' (or 0, 1, 2).
        model_config, model_path, params: see :func:`make_original_engine3d`;
            ignored when ``engine`` is given.
        timings: optional dict; receives the seconds spent in ``infer_on_axis``
            and in ``stack_postprocessing``.

    Returns:
        {class_id: (D, H, W) int32 volume with ids 1..N} (gaps where the second
        filter pass removed objects), as the widget shows them.
    """
    if engine is None:
        engine = make_original_engine3d(model_config, model_path=model_path, **params)
    m = _load()
    axis_name = AXIS_NAMES[axis] if not isinstance(axis, str) else axis
    with _quiet():
        t0 = time.perf_counter()
        _stack, trackers = engine.infer_on_axis(volume, axis_name)
        t1 = time.perf_counter()
        results = list(
            m.stack_postprocessing(
                {axis_name: trackers}, None, engine.model_config,
                label_divisor=engine.label_divisor, min_size=engine.min_size,
                min_extent=engine.min_extent, dtype=engine.dtype,
            )
        )
        t2 = time.perf_counter()
    if timings is not None:
        timings["infer_on_axis"] = timings.get("infer_on_axis", 0.0) + t1 - t0
        timings["stack_postprocessing"] = timings.get("stack_postprocessing", 0.0) + t2 - t1
    return _class_volumes(results, engine)


def original_engine_ortho(volume, model_config=None, *, engine=None, model_path=None,
                          vote_thr=2, cluster_iou_thr=0.75, allow_one_view=False,
                          timings=None, return_trackers=False, **params):
    """Ortho-plane inference with the original, as the 3D widget runs it.

    ``Engine3d.infer_on_axis`` along 'xy', 'xz' and 'yz' (each one filters its
    trackers by size and extent), then ``tracker_consensus`` (voting, the
    filters again, ``fill_volume``).

    Args:
        timings: optional dict; receives the seconds spent in ``infer_on_axis``
            (the three axes) and in ``tracker_consensus``.
        return_trackers: also return ``{axis_name: [InstanceTracker per class]}``
            (see :func:`original_stacks_from_trackers`).

    Returns:
        {class_id: (D, H, W) int32 consensus volume}; with ``return_trackers`` a
        tuple (that dict, the trackers).
    """
    if engine is None:
        engine = make_original_engine3d(model_config, model_path=model_path, **params)
    m = _load()
    trackers = {}
    with _quiet():
        t0 = time.perf_counter()
        for axis_name in AXIS_NAMES:
            _stack, trackers[axis_name] = engine.infer_on_axis(volume, axis_name)
        t1 = time.perf_counter()
        results = list(
            m.tracker_consensus(
                trackers, None, engine.model_config, label_divisor=engine.label_divisor,
                pixel_vote_thr=int(vote_thr), cluster_iou_thr=float(cluster_iou_thr),
                allow_one_view=bool(allow_one_view), min_size=engine.min_size,
                min_extent=engine.min_extent, dtype=engine.dtype,
            )
        )
        t2 = time.perf_counter()
    if timings is not None:
        timings["infer_on_axis"] = timings.get("infer_on_axis", 0.0) + t1 - t0
        timings["tracker_consensus"] = timings.get("tracker_consensus", 0.0) + t2 - t1
    volumes = _class_volumes(results, engine)
    return (volumes, trackers) if return_trackers else volumes


def original_stacks_from_trackers(trackers, engine):
    """The per-axis stack volumes of an ortho-plane run (``stack_postprocessing`` per axis).

    Args:
        trackers: ``{axis_name: trackers}`` from
            ``original_engine_ortho(..., return_trackers=True)``.
        engine: the ``Engine3d`` that produced them.

    Returns:
        {axis_name: {class_id: (D, H, W) int32 volume}}, as the stack mode would
        have returned for that axis.
    """
    m = _load()
    out = {}
    with _quiet():
        for axis_name, axis_trackers in trackers.items():
            results = list(
                m.stack_postprocessing(
                    {axis_name: axis_trackers}, None, engine.model_config,
                    label_divisor=engine.label_divisor, min_size=engine.min_size,
                    min_extent=engine.min_extent, dtype=engine.dtype,
                )
            )
            out[axis_name] = _class_volumes(results, engine)
    return out
