"""End-to-end inference benchmark: empanada-infer against the original empanada-napari.

Runs 2D, stack and ortho-plane segmentation on the CPU with our engine
(``empanada_infer.Segmenter``) and with the original (``Engine2d`` /
``Engine3d`` of ``empanada-napari==1.2.4``, see ``benchmarks/README.md``) on the
SAME TorchScript model and the SAME input, and prints, per case, the time of
each, the speed-up (original / ours), the peak memory (ours / original) and
how far the label images agree.

Models. A real-architecture network exported with
``empanada_models.export_torchscript``: ``panoptic_deeplab_pr(encoder="resnet18")``
by default, the full MitoNet_v1 architecture with ``--arch mitonet``, or the
trained built-in MitoLite_v1 with ``--arch mitolite``. The first two have weights that
are random (fixed seed), so the outputs are meaningless but deterministic --
fine for speed and equality, not for accuracy. As built, an untrained network
outputs constants (no objects at all), so :func:`randomize_network` re-draws
the convolutions and calibrates BatchNorm statistics and output biases on the
data, which gives noise blobs to postprocess at the network's unchanged cost.
Its registry-style config (norms 0.57571/0.12765, padding factor 16, one class
'mito') is read by both tools. The second model is the threshold ``BlobModel``
of ``empanada_models.testing.write_test_model`` (same contract and config),
run on a Gaussian-blurred input and given one unused parameter (the original
takes the device from the model's first parameter): almost free to run, with
object-like outputs, so its rows show the share of the time that is not the
network. Its stack and ortho cases also run with median 1, where the two
median filters (which differ on purpose) are out of the way.

Input. Real FIB-SEM (``/work/shared/data/lucchi_epfl_hippocampus/images.tif``,
uint8, 64 x 768 x 1024): 2D = slice 32; stack = slices 0-31 cropped to 512 x 512
(``--full``: the whole volume); ortho = a 64 x 256 x 256 crop.

Settings (both tools): confidence 0.5, centre confidence 0.1, centres min
distance 3, max objects per class 10000, median filter 3 (``--median-size``),
min size 500, min extent 5, vote threshold 2, intensity normalised by the dtype
range (``normalize="dtype"``, which for uint8 is the original's
normalisation), batch size 1, coarse boundaries, no downsampling. Network
precision: the original runs fp32 on the CPU; ours runs its default
(``--precision auto``: bf16 on CPUs with Intel AMX, else fp32), or what
``--precision`` says (``fp32`` for a same-arithmetic comparison).

Measurement. Every (tool, case) runs in a fresh Python process, which loads
the model, reads the input, warms up (one run on a small crop through the same
entry point, then two forwards per slice shape), and then times ``--repeat``
runs (best of N, model loading excluded). Memory is read from ``/proc``: the
peak resident set (VmHWM, reset just before the timed runs) and, as "+run",
that peak minus the resident set right before the runs (imports, model and
input excluded). The original also forks one matcher process per axis; its
peak is reported separately. "PSS" is the peak proportional set size of the
worker and all its children together, sampled every 50 ms during the timed
runs: it counts the original's matcher process, whose own RSS would count
the pages it shares with its parent twice.

Usage::

    /work/orig-venv/bin/python benchmarks/infer.py                  # default sizes
    /work/orig-venv/bin/python benchmarks/infer.py --median-size 1  # median filters out
    /work/orig-venv/bin/python benchmarks/infer.py --arch mitonet --modes stack
    /work/venv/bin/python benchmarks/infer.py --skip-original       # ours only
    /work/venv/bin/python benchmarks/infer.py --profile --skip-original --models blob
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DATA = Path("/work/shared/data/lucchi_epfl_hippocampus/images.tif")
NORMS = {"mean": 0.57571, "std": 0.12765}
# The "blob" model: write_test_model()'s threshold BlobModel, on an input blurred with a
# Gaussian of BLOB_SIGMA pixels (raw EM thresholded pixel by pixel gives thousands of
# speckles), threshold in normalised units (blob norms 0.5 / 0.25: raw uint8 < 89).
BLOB_THRESHOLD = -0.6
BLOB_SIGMA = 4.0
SEED = 0

# parameters shared by both tools, in our names (SegmentationParams)
COMMON = dict(confidence_thr=0.5, center_thr=0.1, min_distance=3, label_divisor=10000,
              median_size=3, min_size=500, min_extent=5, vote_thr=2)

MODES = ("2d", "stack", "ortho")

# calibration targets of the random network (see randomize_network)
FG_SHARE = 0.15
CENTRE_SHARE = 0.005


# ---------------------------------------------------------------------------------------
# inputs


def crops(full):
    """{mode: (z, y, x) slices into the data volume, and a small warm-up crop}."""
    stack = (slice(0, 64), slice(0, 768), slice(0, 1024)) if full else \
        (slice(0, 32), slice(128, 640), slice(256, 768))
    return {
        "2d": {"index": (32, slice(0, 768), slice(0, 1024)),
               "warmup": (32, slice(0, 128), slice(0, 128))},
        "stack": {"index": stack, "warmup": (slice(0, 8), slice(0, 256), slice(0, 256))},
        "ortho": {"index": (slice(0, 64), slice(256, 512), slice(384, 640)),
                  "warmup": (slice(0, 32), slice(0, 128), slice(0, 128))},
    }


def read_crop(path, index):
    """uint8 crop of the data volume; reads only the pages it needs."""
    import tifffile

    z = index[0]
    pages = z if isinstance(z, int) else range(z.start, z.stop, z.step or 1)
    data = tifffile.imread(path, key=pages)
    return np.ascontiguousarray(data[(slice(None),) * (data.ndim - 2) + tuple(index[1:])])


def describe(mode, index):
    shape = [len(range(s.start, s.stop, s.step or 1)) for s in index if isinstance(s, slice)]
    return f"{mode} {'x'.join(map(str, shape))}"


def slice_shapes(shape, mode):
    if mode == "2d":
        return [tuple(shape)]
    d, h, w = shape
    return [(h, w)] if mode == "stack" else [(h, w), (d, w), (d, h)]


# ---------------------------------------------------------------------------------------
# memory


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")


def _trim():
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _pss_mib(pid):
    """Proportional set size of one process (shared pages split among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the process ended meanwhile
        pass
    return 0.0


def _descendants(root):
    """Pids of every live descendant of ``root`` (a scan of /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # the command name is in brackets and may hold spaces: ppid follows ')'
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


class TreePeak:
    """Peak summed PSS of this process and its children (the original forks a matcher
    process per run; its RSS double-counts the pages it shares with the parent, its PSS
    does not), sampled every ``interval`` seconds on a daemon thread."""

    def __init__(self, interval=0.05):
        import threading

        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        me = os.getpid()
        return _pss_mib(me) + sum(_pss_mib(pid) for pid in _descendants(me))

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


# ---------------------------------------------------------------------------------------
# worker: one tool, one case, in a fresh process


class Stages:
    """Accumulates the seconds spent in wrapped callables (thread-safe enough: appends)."""

    def __init__(self):
        self.items = []

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.items.append((name, time.perf_counter() - t0))
        return timed

    def add(self, name, seconds):
        self.items.append((name, seconds))

    def totals(self):
        out = {}
        for name, t in self.items:
            out[name] = out.get(name, 0.0) + t
        return out

    def reset(self):
        self.items = []


def _ours_runner(spec, stages):
    import empanada_infer as ei
    import empanada_infer._segmenter as engine_module  # where Segmenter looks up ortho_merge
    import empanada_models as em

    config = em.ModelConfig.from_yaml(spec["config"])
    params = ei.SegmentationParams(normalize="dtype", batch_size=spec["batch_size"],
                                   precision=spec.get("precision", "auto"), **spec["params"])
    seg = ei.Segmenter(em.load_model(config, device="cpu"), config, params, device="cpu")
    seg.forward = stages.wrap("network", seg.forward)
    seg.postprocess = stages.wrap("2D postprocess", seg.postprocess)
    merge = engine_module.ortho_merge
    engine_module.ortho_merge = stages.wrap("ortho consensus", merge)
    mode = spec["mode"]
    if mode == "2d":
        run = seg.segment_image
    elif mode == "stack":
        def run(volume):
            return seg.segment_stack(volume, axis=0)
    else:
        def run(volume):
            return seg.segment_orthoplanes(volume, return_stacks=True)  # no extra cost

    def warm(shape):
        seg.forward([np.zeros(shape, np.float32)])

    def finish(out):
        spec["resolved_precision"] = seg.precision
        if mode == "ortho":
            consensus, stacks = out
            return consensus, stacks
        return out, {}

    return run, warm, finish


def _original_runner(spec, stages):
    import _original as orig

    p = spec["params"]
    kw = dict(confidence_thr=p["confidence_thr"], center_thr=p["center_thr"],
              nms_kernel=p["min_distance"], label_divisor=p["label_divisor"])
    mode = spec["mode"]
    div = p["label_divisor"]
    if mode == "2d":
        engine = orig.make_original_engine2d(spec["config"], **kw)

        def run(image):
            return orig.original_engine2d(image, engine=engine)
    else:
        engine = orig.make_original_engine3d(
            spec["config"], median_size=p["median_size"], min_size=p["min_size"],
            min_extent=p["min_extent"], **kw)

        def run(volume):
            timings = {}
            if mode == "stack":
                out = orig.original_engine3d(volume, "xy", engine=engine, timings=timings)
            else:
                out = orig.original_engine_ortho(volume, engine=engine, vote_thr=p["vote_thr"],
                                                 timings=timings, return_trackers=True)
            for name in ("stack_postprocessing", "tracker_consensus"):
                if name in timings:
                    stages.add(name, timings[name])
            return out

    render = engine.engine
    render.infer = stages.wrap("network", render.infer)
    render.get_instance_cells = stages.wrap("2D postprocess", render.get_instance_cells)
    render.postprocess = stages.wrap("2D postprocess", render.postprocess)
    torch = orig._load().torch

    def warm(shape):
        with torch.no_grad():
            render.infer(torch.zeros((1, 1) + tuple(shape)), 2)

    def to_panoptic(volumes):
        pan = None
        for class_id, vol in volumes.items():
            if pan is None:
                pan = np.zeros(vol.shape, np.int64)
            pan[vol > 0] = class_id * div + vol[vol > 0]
        return pan

    def finish(out):
        if mode == "2d":
            return out, {}
        if mode == "stack":
            return to_panoptic(out), {}
        volumes, trackers = out  # ortho: the per-axis stacks too (after the measurement)
        stacks = orig.original_stacks_from_trackers(trackers, engine)
        return to_panoptic(volumes), {k: to_panoptic(v) for k, v in stacks.items()}

    return run, warm, finish


def _smoothed_blob_model(blob, sigma):
    """``blob`` behind a Gaussian blur of its input, with one unused parameter.

    The parameter is needed by the original, whose engines take the device from
    ``next(model.parameters())`` (``BlobModel`` has buffers only).
    """
    import torch
    import torch.nn.functional as F

    class SmoothedBlob(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blob = blob
            radius = int(3 * sigma)
            t = torch.arange(-radius, radius + 1, dtype=torch.float32)
            k = torch.exp(-0.5 * (t / sigma) ** 2)
            self.register_buffer("kernel", (k / k.sum()).reshape(1, 1, 1, -1))
            self.radius = radius
            self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, x: torch.Tensor, render_steps: int = 2,
                    interpolate_ins: bool = True) -> dict[str, torch.Tensor]:
            r = self.radius
            x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.kernel)
            x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.kernel.transpose(2, 3))
            return self.blob(x, render_steps, interpolate_ins)

    return SmoothedBlob().eval()


def _pad(n, factor=16):
    return n + (-n) % factor


def worker(spec_path):
    """Run one (tool, case) as described by the JSON spec; write the result JSON."""
    with open(spec_path) as f:
        spec = json.load(f)
    stages = Stages()
    make = _ours_runner if spec["tool"] == "ours" else _original_runner
    run, warm, finish = make(spec, stages)

    data = read_crop(spec["data"], _index(spec["index"]))
    # warm-up: TorchScript profiling runs, numba compilation (original), lazy imports
    run(read_crop(spec["data"], _index(spec["warmup"])))
    for shape in slice_shapes(data.shape, spec["mode"]):
        for _ in range(2):
            warm(tuple(_pad(s) for s in shape))
    stages.reset()

    _trim()
    baseline = _status("VmRSS")
    tree = TreePeak()
    tree_baseline = tree.sample()
    peak_reset = _reset_peak()
    profile = None
    times, breakdowns, out = [], [], None
    tree.__enter__()
    for _ in range(spec["repeat"]):
        out = None
        _trim()
        stages.reset()
        if spec.get("profile"):
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            out = run(data)
            prof.disable()
            times.append(time.perf_counter() - t0)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
            profile = text.getvalue()
        else:
            t0 = time.perf_counter()
            out = run(data)
            times.append(time.perf_counter() - t0)
        breakdowns.append(stages.totals())
    tree.__exit__(None, None, None)
    peak = _status("VmHWM")
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    labels, extras = finish(out)
    del out
    labels = np.asarray(labels)
    np.save(spec["labels"], labels)
    for name, array in extras.items():
        np.save(spec["labels"].replace(".npy", f"-{name}.npy"), np.asarray(array))
    best = int(np.argmin(times))
    result = {
        "times": times, "time": times[best], "stages": breakdowns[best],
        "baseline_mib": baseline, "peak_mib": peak if peak_reset else self_peak,
        "peak_reset": peak_reset, "process_peak_mib": self_peak, "child_peak_mib": child_peak,
        "objects": int(len(np.unique(labels)) - (labels.min() == 0)),
        "shape": list(data.shape), "profile": profile, "extras": sorted(extras),
        "precision": spec.get("resolved_precision", "fp32"),
        "tree_pss_mib": tree.peak, "tree_pss_baseline_mib": tree_baseline,
    }
    with open(spec["result"], "w") as f:
        json.dump(result, f)


# ---------------------------------------------------------------------------------------
# parent


def randomize_network(net, data):
    """Make a random-weight network give non-constant, object-like (noise) outputs.

    The builders initialise decoders and heads with tiny weights (the original's
    training init), so an untrained network outputs constants: no foreground, no
    centres, nothing to postprocess. Here every convolution is re-drawn
    (Kaiming-normal, seeded), PointRend's point predictor passes the coarse logit
    through, the BatchNorm statistics are measured on four data slices, and the
    output biases are shifted so that ``FG_SHARE`` of the pixels are foreground
    and ``CENTRE_SHARE`` of the heatmap pixels exceed the centre threshold. The
    network's cost is unchanged. Deterministic for a given seed and data.

    Returns the foreground and centre shares reached on the calibration slices.
    """
    import torch

    convs = (torch.nn.Conv1d, torch.nn.Conv2d)
    for mod in net.modules():
        if isinstance(mod, convs):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                torch.nn.init.zeros_(mod.bias)
    def last_conv(module):
        return [m for m in module.modules() if isinstance(m, convs)][-1]

    # PointRend's point predictor passes the coarse logit through (its last input channel):
    # a random predictor would sprinkle speckles over the rendered mask
    with torch.no_grad():
        predictor = last_conv(net.semantic_pr)
        predictor.weight.zero_()
        predictor.weight[:, -1] = 1.0
    images = read_crop(data, (slice(0, 64, 16), slice(0, 384), slice(0, 384)))
    x = (images.astype(np.float32) / 255 - NORMS["mean"]) / NORMS["std"]
    x = torch.from_numpy(x)[:, None]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    net.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: the statistics of the calibration batch
        bn.train()
    with torch.no_grad():
        net(x, 2, False)
        net.eval()
        out = net(x, 2, False)
        shift = -float(np.quantile(out["sem_logits"].numpy(), 1 - FG_SHARE))
        last_conv(net.semantic_head).bias += shift
        shift = COMMON["center_thr"] - float(np.quantile(out["ctr_hmp"].numpy(), 1 - CENTRE_SHARE))
        last_conv(net.ins_center).bias += shift
        out = net(x, 2, False)
    fg = float((out["sem_logits"] >= 0).float().mean())
    centres = float((out["ctr_hmp"] > COMMON["center_thr"]).float().mean())
    return fg, centres


def export_models(workdir, arch, models, data):
    """{name: (yaml path, description)} of the models to benchmark."""
    out = {}
    if "net" in models:
        import torch

        import empanada_models as em

        if arch == "mitolite":
            # the trained default model, as shipped (a copy of its config with an
            # absolute weights path, which the original needs)
            shipped = em.get_model_config("MitoLite_v1")
            folder = workdir / "net"
            folder.mkdir()
            config = em.ModelConfig.from_dict(
                {"model": str((Path(shipped.base_dir) / shipped.model).resolve()), "norms": NORMS,
                 "padding_factor": 16, "thing_list": [1], "labels": [1],
                 "class_names": {1: "mito"}, "description": "MitoLite_v1 (benchmark copy)"},
                name="bench_mitolite")
            out[arch] = (config.to_yaml(folder / "model.yaml"),
                         "MitoLite_v1, the trained built-in default (PDL-PR ResNet-18, decoder "
                         "128), TorchScript")
        else:
            torch.manual_seed(SEED)
            if arch == "mitonet":
                net = em.mitonet_v1()
                what = "mitonet_v1() (MitoNet_v1 architecture, ResNet-50)"
            else:
                net = em.panoptic_deeplab_pr(encoder="resnet18")
                what = 'panoptic_deeplab_pr(encoder="resnet18")'
            fg, centres = randomize_network(net, data)
            folder = workdir / "net"
            folder.mkdir()
            em.export_torchscript(net, folder / "model.pth")
            config = em.ModelConfig.from_dict(
                {"model": str(folder / "model.pth"), "norms": NORMS, "padding_factor": 16,
                 "thing_list": [1], "labels": [1], "class_names": {1: "mito"},
                 "description": f"benchmark: {what}, random weights (seed {SEED})"},
                name=f"bench_{arch}",
            )
            out[arch] = (config.to_yaml(folder / "model.yaml"),
                         f"{what}, random weights (torch seed {SEED}, Kaiming-normal convs, "
                         f"BatchNorm statistics and output biases calibrated on the data: "
                         f"{100 * fg:.0f}% foreground, {100 * centres:.1f}% of heatmap pixels "
                         f"above the centre threshold), TorchScript")
    if "blob" in models:
        import torch

        from empanada_models.testing import BlobModel, write_test_model

        path = write_test_model(workdir / "blob", threshold=BLOB_THRESHOLD)
        # replace its weights file (same contract and config) by the smoothed, anchored variant
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.", category=DeprecationWarning)
            wrapped = _smoothed_blob_model(BlobModel(threshold=BLOB_THRESHOLD), BLOB_SIGMA)
            torch.jit.save(torch.jit.script(wrapped), str(path.with_suffix(".pth")))
        out["blob"] = (path, "write_test_model()'s BlobModel (threshold "
                             f"{BLOB_THRESHOLD}) on a Gaussian-blurred input (sigma "
                             f"{BLOB_SIGMA:g}), TorchScript")
    return out


def run_worker(spec, workdir, timeout):
    name = f"{spec['model']}-{spec['mode']}-m{spec['params']['median_size']}-{spec['tool']}"
    if spec.get("profile"):
        name += "-profile"
    spec = dict(spec, result=str(workdir / f"{name}.json"), labels=str(workdir / f"{name}.npy"))
    spec_path = workdir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           str(spec_path)], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        print(f"  [{name}] FAILED (exit {proc.returncode}):\n    " + "\n    ".join(tail),
              file=sys.stderr)
        return None
    with open(spec["result"]) as f:
        result = json.load(f)
    result["labels"] = spec["labels"]
    print(f"  [{name}] best {result['time']:.2f} s of {len(result['times'])} "
          f"({', '.join(f'{t:.1f}' for t in result['times'])}); process wall {wall:.0f} s",
          file=sys.stderr, flush=True)
    return result


def disagreement(a, b):
    """``partition_disagreement``, also where the two foregrounds do not overlap at all."""
    from empanada_core.testing import partition_disagreement

    a, b = np.asarray(a), np.asarray(b)
    if ((a > 0) | (b > 0)).any() and not ((a > 0) & (b > 0)).any():
        return 1.0  # (partition_disagreement raises IndexError here)
    return partition_disagreement(a, b)


def merges_and_splits(a, b, share=0.05):
    """(# objects of ``a`` covering >= 2 objects of ``b``, # objects of ``b`` covering >= 2
    of ``a``), counting an overlap when it holds ``share`` of the covering object."""
    fg = (a > 0) & (b > 0)
    if not fg.any():
        return 0, 0
    pairs, counts = np.unique(np.stack([a[fg].astype(np.int64), b[fg].astype(np.int64)]),
                              axis=1, return_counts=True)
    result = []
    for side, labels in ((0, a), (1, b)):
        ids, sizes = np.unique(labels[labels > 0], return_counts=True)
        size = dict(zip(ids.tolist(), sizes.tolist()))
        big = counts >= share * np.array([size[i] for i in pairs[side].tolist()])
        covering, n = np.unique(pairs[side][big], return_counts=True)
        result.append(int((n >= 2).sum()))
    return tuple(result)


def compare(ours, orig, params):
    """Agreement of the two label volumes; for ortho runs also per axis and of the consensus."""
    import empanada_core as ec

    a = np.load(ours["labels"])
    b = np.load(orig["labels"])
    fa, fb = a > 0, b > 0
    union = int((fa | fb).sum())
    out = {
        "differ": disagreement(a, b),
        "fg_differ": float((fa != fb).sum() / union) if union else 0.0,
    }
    out["merged"], out["split"] = merges_and_splits(a, b)
    if ours.get("extras") and orig.get("extras"):
        div = params["label_divisor"]

        def load(result, axis):
            return np.load(result["labels"].replace(".npy", f"-{axis}.npy"))

        views = {}
        per_axis = {}
        for axis in ("xy", "xz", "yz"):
            views[axis] = load(orig, axis)
            per_axis[axis] = disagreement(load(ours, axis), views[axis])
        out["per_axis"] = per_axis
        # our consensus on the original's three stacks, against the original's consensus
        ids = [np.where(v > 0, v % div, 0) for v in views.values()]
        ours_on_orig = ec.ortho_consensus(
            *ids, vote_thr=params["vote_thr"], allow_one_view=False,
            min_size=params["min_size"], min_extent=params["min_extent"])
        out["consensus_only"] = disagreement(ours_on_orig, b)
    return out


def same_net_ratio(ours, orig):
    """orig/ours with both network times replaced by the smaller of the two.

    Both tools run the same TorchScript model on the same slices, so their network
    time differs only by noise (other jobs on the machine); this ratio keeps the
    rest of each run as measured.
    """
    net_o = ours["stages"].get("network", 0.0)
    net_g = orig["stages"].get("network", 0.0)
    ref = min(net_o, net_g)
    ours_t = max(ours["time"] - net_o, 0.0) + ref
    orig_t = max(orig["time"] - net_g, 0.0) + ref
    return orig_t / ours_t if ours_t > 0 else float("nan")


def pss_ratio(o, g):
    """'ours/orig MiB (ratio)' of the peak PSS of each run's process tree."""
    if not (o.get("tree_pss_mib") and g.get("tree_pss_mib")):
        return "n/a"
    return (f"{o['tree_pss_mib']:.0f}/{g['tree_pss_mib']:.0f} "
            f"({o['tree_pss_mib'] / g['tree_pss_mib']:.2f})")


def fmt_mem(r):
    return f"{r['peak_mib']:.0f} (+{r['peak_mib'] - r['baseline_mib']:.0f})"


def print_tables(rows, with_original):
    print()
    if not with_original:
        head = (f"{'case':24s} {'model':8s} {'med':>3s} {'ours s':>8s} {'network s':>10s} "
                f"{'ours MiB (+run)':>16s} {'objects':>8s}")
        print(head)
        print("-" * len(head))
        for r in rows:
            o = r["ours"]
            line = f"{r['case']:24s} {r['model']:8s} {r['median']:3d} "
            if o:
                line += (f"{o['time']:8.2f} {o['stages'].get('network', 0.0):10.2f} "
                         f"{fmt_mem(o):>16s} {o['objects']:8d}")
            else:
                line += f"{'failed':>8s}"
            print(line)
    else:
        head = (f"{'case':24s} {'model':8s} {'med':>3s} {'ours s':>8s} {'orig s':>8s} "
                f"{'orig/ours':>9s} {'same-net':>8s} {'ours MiB (+run)':>16s} "
                f"{'orig MiB (+run)':>16s} {'mem ours/orig':>14s} {'PSS ours/orig':>18s} "
                f"{'objects':>11s} "
                f"{'differ':>8s} {'fg diff':>8s}")
        print(head)
        print("-" * len(head))
        for r in rows:
            o, g = r["ours"], r.get("orig")
            line = f"{r['case']:24s} {r['model']:8s} {r['median']:3d} "
            line += f"{o['time']:8.2f} " if o else f"{'failed':>8s} "
            line += f"{g['time']:8.2f} " if g else f"{'failed':>8s} "
            if o and g:
                run_o = o["peak_mib"] - o["baseline_mib"]
                run_g = g["peak_mib"] - g["baseline_mib"]
                mem = f"{o['peak_mib'] / g['peak_mib']:.2f} ({run_o / max(run_g, 1e-9):.2f})"
                line += (f"{g['time'] / o['time']:8.2f}x {same_net_ratio(o, g):7.2f}x "
                         f"{fmt_mem(o):>16s} {fmt_mem(g):>16s} "
                         f"{mem:>14s} {pss_ratio(o, g):>18s} "
                         f"{o['objects']:5d}/{g['objects']:<5d} "
                         f"{100 * r['differ']:7.3f}% {100 * r['fg_differ']:7.3f}%")
            print(line)
    print()
    for line in (
        "time: best of N warm runs of the whole call (numpy uint8 in, labels out; model load "
        "excluded).",
        "orig/ours: speed-up. same-net: the speed-up with both tools' network time set to the "
        "smaller of",
        "  the two (same model, same slices: the difference is noise from other jobs on the "
        "machine).",
        "MiB: peak resident set of the run's process (imports, model and input included) and, "
        "in brackets,",
        "  the peak above the resident set right before the run. mem ours/orig: ratio of the "
        "peaks (of the",
        "  '+run' parts). PSS: peak proportional set size of the run's process and its "
        "children together",
        "  (sampled every 50 ms; counts the original's matcher process, sharing its pages "
        "once). objects: ours/original.",
        "differ: share of the foreground voxels where the two label partitions disagree (0% = "
        "identical up",
        "  to renaming ids); fg diff: share of the foreground union that only one tool has.",
    ):
        print(line)

    print()
    print("where the time goes (seconds of the best run; 'network' = model forward + sigmoid, "
          "'2D postprocess'\n= centres, grouping, panoptic merge; on GPUs ours runs the network "
          "on a background thread,\nso there its stages overlap and can sum to more than the "
          "total):")
    for r in rows:
        for tool in ("ours", "orig"):
            res = r.get(tool)
            if not res:
                continue
            st = ", ".join(f"{k} {v:.2f}" for k, v in res["stages"].items())
            rest = res["time"] - sum(v for k, v in res["stages"].items())
            extra = ""
            if tool == "orig" and res["child_peak_mib"] > 0:
                extra = f"; matcher process peak RSS {res['child_peak_mib']:.0f} MiB"
            runs = "/".join(f"{t:.1f}" for t in res["times"])
            if tool == "ours":
                extra += f"; network precision {res.get('precision', 'fp32')}"
            print(f"  {r['case']:17s} {r['model']:8s} med {r['median']} {tool:4s} best "
                  f"{res['time']:6.2f} (runs {runs}): {st}; other {rest:.2f}{extra}")


MEDIAN_NOTE = ("the median filter: ours is a true median of the network's slices with a "
               "window that shrinks\n    at the stack ends; the original's is recursive "
               "(filtered slices feed the next windows)\n    and leaves the end slices "
               "unfiltered (docs/compat.md, 'Median filter'); --median-size 1\n    removes it")
CHANNELS_LAST_NOTE = ("channels-last network runs (our default on the CPU): the same "
                      "weights, float sums in\n    another order (outputs within ~1e-6), so "
                      "pixels on a threshold can flip (docs/compat.md,\n    'Inference')")
BF16_NOTE = ("bf16 network runs (our default on CPUs with AMX and on GPUs, --precision auto): "
             "outputs\n    within ~1e-2 of fp32, so pixels near a threshold flip (the random "
             "net's noise blobs have\n    many), and a bf16 run keeps one centre per flat "
             "heatmap maximum; on trained models the\n    scores barely change "
             "(docs/models.md); --precision fp32 gives the original's arithmetic\n    "
             "(docs/compat.md, 'Inference')")
CONSENSUS_NOTE = ("the ortho-plane consensus, by documented deliberate differences "
                  "(docs/compat.md, 'Ortho-plane\n    consensus'): a chain of linked "
                  "clusters ends as one object where the original left several,\n    a "
                  "rejected cluster's detections go to one neighbour, one owner per voxel, "
                  "min_extent on the\n    voted box")
XZ_NOTE = ("the original's xz stacks: slice runs that wrap from one image row to the next "
           "are put on the\n    wrong voxels (docs/compat.md, 'Stack assembly')")


def notes(rows, with_original):
    print()
    print("notes:")
    models = {r["model"] for r in rows}
    if models & {"resnet18", "mitonet"}:
        print("- The random network's outputs are meaningless noise blobs (deterministic: seed "
              "and data fixed):\n  its rows measure speed and equality, not accuracy.")
    if "mitolite" in models:
        print("- MitoLite_v1 is the trained built-in model: its rows show speed and "
              "agreement on real mitochondria.")
    if "blob" in models:
        print("- The blob model's outputs are object-like and it costs almost nothing to run, "
              "so its rows show\n  the postprocessing (and I/O) share.")
    if not with_original:
        return
    for r in rows:
        if r.get("ours") and r.get("orig") and r["ours"]["objects"] == r["orig"]["objects"] == 0:
            print(f"- {r['case']}, {r['model']}, median {r['median']}: no object survives in "
                  "either tool, so its equality\n  check says nothing (the timing still holds).")
        if not (r.get("ours") and r.get("orig")) or r["differ"] == 0:
            continue
        kind = r["case"].split()[0]
        causes = []
        per_axis = r.get("per_axis")
        if kind != "2d" and r["median"] > 1 and (per_axis is None or
                                                 any(v > 0 for v in per_axis.values())):
            causes.append(MEDIAN_NOTE)
        if per_axis is not None and per_axis["xz"] > 0:
            causes.append(XZ_NOTE)
        if per_axis is not None and r["consensus_only"] > 0:
            causes.append(CONSENSUS_NOTE)
        if r["ours"].get("precision") == "bf16":
            causes.append(BF16_NOTE)
        elif r["model"] != "blob":
            causes.append(CHANNELS_LAST_NOTE)
        print(f"- {r['case']}, {r['model']}, median {r['median']}: {100 * r['differ']:.3f}% of "
              f"the foreground differs ({100 * r['fg_differ']:.3f}% is foreground in one tool "
              f"only);\n  {r['merged']} of our objects cover two or more of the original's, "
              f"{r['split']} of the original's cover two or more of ours.")
        if per_axis is not None:
            axes = ", ".join(f"{k} {100 * v:.3f}%" for k, v in per_axis.items())
            print(f"  Per-axis stacks differ by {axes}; our consensus run on the original's "
                  f"three stacks differs\n  from the original's consensus by "
                  f"{100 * r['consensus_only']:.3f}%.")
        print("  Cause(s):\n    " + ";\n    ".join(causes or ["none documented: investigate"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--arch", choices=("resnet18", "mitonet", "mitolite"),
                        default="resnet18",
                        help="the 'net' model: panoptic_deeplab_pr(encoder='resnet18') with "
                             "random weights (default), mitonet_v1() with random weights, or "
                             "the trained built-in MitoLite_v1")
    parser.add_argument("--models", default="net,blob",
                        help="comma list of 'net' (the --arch network) and 'blob' "
                             "(default: both)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma list of 2d, stack, ortho (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="stack over the whole 64 x 768 x 1024 volume")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per case (best of N)")
    parser.add_argument("--median-size", type=int, default=3,
                        help="median filter of both tools (1: off, for an apples-to-apples "
                             "equality check)")
    parser.add_argument("--blob-median-1", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the blob model's stack and ortho cases with median 1 "
                             "(default: on)")
    parser.add_argument("--batch-size", type=int, default=1, help="our batch size (default 1)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="our network precision (default auto: bf16 on CPUs with AMX); "
                             "the original always runs fp32 on the CPU")
    parser.add_argument("--skip-original", action="store_true", help="run ours only")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one run of our stack case with cProfile (main "
                             "thread) and print it")
    parser.add_argument("--data", type=Path, default=DATA, help="uint8 (Z, Y, X) tif")
    parser.add_argument("--workdir", type=Path, help="keep models and outputs here")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per process")
    args = parser.parse_args(argv)
    if args.worker:
        try:
            worker(args.worker)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            # skip interpreter shutdown: it would join the original's matcher process,
            # which waits forever for slices when the engine failed
            os._exit(1)
        return

    import _original

    with_original = not args.skip_original and _original.available()
    if not args.skip_original and not with_original:
        print("the original is not importable here: running ours only "
              "(see benchmarks/README.md)", file=sys.stderr)
    if not args.data.is_file():
        sys.exit(f"input not found: {args.data}")
    modes = [m for m in args.modes.split(",") if m]
    models = [m for m in args.models.split(",") if m]
    if set(modes) - set(MODES) or set(models) - {"net", "blob"}:
        parser.error("unknown --modes or --models entry")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="empanada-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    import torch

    import empanada_infer

    print(f"empanada-infer {empanada_infer.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; numpy {np.__version__}; "
          f"{os.cpu_count()} CPUs; original importable: {with_original}")
    t_start = time.perf_counter()
    try:
        exported = export_models(workdir, args.arch, models, args.data)
        for name, (path, what) in exported.items():
            print(f"model {name}: {what}; config {path.name}")
        cases = crops(args.full)
        rows = []
        plan = [(m, mode, args.median_size) for m in exported for mode in modes]
        if "blob" in exported and args.blob_median_1 and args.median_size != 1 and with_original:
            plan += [("blob", mode, 1) for mode in modes if mode != "2d"]
        for model, mode, median in plan:
            if mode == "2d" and median != args.median_size:
                continue
            params = dict(COMMON, median_size=median)
            spec = {"model": model, "mode": mode, "config": str(exported[model][0]),
                    "data": str(args.data), "index": None, "warmup": None,
                    "params": params, "repeat": args.repeat, "batch_size": args.batch_size,
                    "precision": args.precision}
            index = cases[mode]["index"]
            spec["index"] = _jsonable(index)
            spec["warmup"] = _jsonable(cases[mode]["warmup"])
            row = {"case": describe(mode, index), "model": model, "median": median}
            print(f"{row['case']}, {model}, median {median}:", file=sys.stderr, flush=True)
            row["ours"] = run_worker(dict(spec, tool="ours"), workdir, args.timeout)
            if with_original:
                row["orig"] = run_worker(dict(spec, tool="orig"), workdir, args.timeout)
                if row["ours"] and row["orig"]:
                    row.update(compare(row["ours"], row["orig"], params))
            rows.append(row)
        print_tables(rows, with_original)
        notes(rows, with_original)
        total_orig = sum(sum(r["orig"]["times"]) for r in rows if r.get("orig"))
        print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s (timed runs of the "
              f"original: {total_orig:.0f} s)")
        if args.profile:
            model = "blob" if "blob" in exported else next(iter(exported))
            index = cases["stack"]["index"]
            spec = {"model": model, "mode": "stack", "config": str(exported[model][0]),
                    "data": str(args.data), "index": _jsonable(index),
                    "warmup": _jsonable(cases["stack"]["warmup"]),
                    "params": dict(COMMON, median_size=args.median_size), "repeat": 1,
                    "batch_size": args.batch_size, "precision": args.precision,
                    "profile": True}
            print("\nprofile:", file=sys.stderr)
            res = run_worker(dict(spec, tool="ours"), workdir, args.timeout)
            if res:
                print(f"\ncProfile of ours, {describe('stack', index)}, {model} model, "
                      f"{res['time']:.2f} s (main thread only; the network runs on the "
                      "'empanada-forward' thread\nand shows here as waiting in "
                      "lock.acquire):")
                print(res["profile"])
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _jsonable(index):
    return [i if isinstance(i, int) else [i.start, i.stop, i.step] for i in index]


def _index(spec_index):
    return tuple(i if isinstance(i, int) else slice(*i) for i in spec_index)


if __name__ == "__main__":
    main()
