"""``empanada segment`` and ``empanada evaluate``: the command-line main job.

Registered into the ``empanada`` command (installed by empanada-models) through
the ``empanada.commands`` entry-point group. Errors in the input or arguments
exit with 2, runtime failures with 1 (see :func:`empanada_models.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["register_segment", "register_evaluate", "run_segment", "run_evaluate"]

_MODES = ("auto", "2d", "batch", "stack", "ortho")
_ZARR_SUFFIXES = (".zarr",)
_TIFF_SUFFIXES = (".tif", ".tiff")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def _triple_arg(text):
    """``N`` or ``Z,Y,X`` (ints >= 0) for --block-size and --halo."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N or Z,Y,X integers; got {text}") from None
    if len(values) not in (1, 3) or min(values) < 0:
        raise argparse.ArgumentTypeError(f"must be N or Z,Y,X integers >= 0; got {text}")
    return tuple(values * 3 if len(values) == 1 else values)


def _fraction(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]; got {text}")
    return value


def _help_formatter():
    from empanada_models.cli import HelpFormatter

    return HelpFormatter


def register_segment(subparsers):
    """Add ``empanada segment`` to the ``empanada`` command."""
    p = subparsers.add_parser(
        "segment",
        help="segment organelles in a 2D image, a folder of images or a 3D volume",
        description=(
            "Segment an EM image or volume with a registered model and write a label "
            "image: ids are class_id * max_objects + instance (e.g. 10001, 10002, ... "
            "for mitochondria with the default max objects)."
        ),
        formatter_class=_help_formatter(),
    )
    p.add_argument("input", help="image or volume (.tif, .npy, .zarr, .ome.zarr), or a folder "
                   "of 2D images (batch mode)")
    p.add_argument("-o", "--output", required=True,
                   help="output .tif / .zarr / .ome.zarr (zarr runs can resume); a folder for "
                   "batch mode on a folder of images")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="registered model name or config .yaml (default: the registry default)")
    g.add_argument("--quantized", action="store_true", help="int8 model (CPU only)")
    g = p.add_argument_group("what to run")
    g.add_argument("--mode", choices=_MODES, default="auto",
                   help="auto: 2d for 2D input, stack for 3D input, batch for a folder; batch "
                   "on a 3D input (multi-page TIFF, .npy, zarr) segments each slice as an "
                   "unrelated 2D image into a label stack")
    g.add_argument("--plane", choices=("xy", "xz", "yz"), default="xy",
                   help="slicing plane of stack mode")
    g.add_argument("--key", default=None, help="array inside a zarr group")
    g.add_argument("--level", type=int, default=None,
                   help="resolution level of an OME-Zarr multiscale image")
    g = p.add_argument_group("2D parameters (as the 2D Inference widget)")
    g.add_argument("--downsampling", type=_positive_int, default=1,
                   help="shrink the image by this power of two before the network")
    g.add_argument("--confidence-thr", type=_fraction, default=0.5,
                   help="segmentation confidence")
    g.add_argument("--center-thr", type=_fraction, default=0.1, help="center confidence")
    g.add_argument("--min-distance", type=_positive_int, default=3,
                   help="centers min distance (heatmap pixels)")
    g.add_argument("--fine-boundaries", action="store_true",
                   help="group pixels at full resolution")
    g.add_argument("--semantic-only", action="store_true", help="no instances")
    g.add_argument("--max-objects", type=_positive_int, default=10000,
                   help="max objects per class (the label divisor)")
    g.add_argument("--tile-size", type=_non_negative_int, default=0,
                   help="run 2D images larger than this in overlapping tiles (0: never)")
    g = p.add_argument_group("3D parameters (as the 3D Inference widget)")
    g.add_argument("--median-size", type=_positive_int, default=3,
                   help="median filter window along the stack (odd)")
    g.add_argument("--min-size", type=_non_negative_int, default=500,
                   help="remove 3D objects smaller than this many voxels")
    g.add_argument("--min-extent", type=_non_negative_int, default=5,
                   help="remove 3D objects thinner than this along any axis")
    g.add_argument("--vote-thr", type=int, choices=(1, 2, 3), default=2,
                   help="ortho-plane: views that must agree on a voxel")
    g.add_argument("--allow-one-view", action="store_true",
                   help="ortho-plane: keep objects found in one view only")
    g.add_argument("--return-stacks", action="store_true",
                   help="ortho-plane: also write the xy, xz and yz stacks (zarr output)")
    g = p.add_argument_group("execution")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--gpus", type=_positive_int, default=1,
                   help="number of GPUs (one process each)")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="network precision: auto = bf16 on CUDA GPUs that support it and on "
                   "CPUs with bf16 matrix units (Intel AMX), fp32 elsewhere; fp32 = the "
                   "original's precision")
    g.add_argument("--batch-size", type=_positive_int, default=1, help="slices per forward")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="run the network in the contiguous memory format (the original's) "
                   "instead of channels-last, which is faster on CPUs and GPUs")
    g.add_argument("--normalize", choices=("auto", "percentile", "dtype"), default="auto",
                   help="auto: divide uint8 by 255 as the original, percentile-rescale others")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")
    g = p.add_argument_group("scale-out (Dask distributed; pip install empanada-infer[distributed])")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="segment 3D volumes block by block on a local Dask cluster of N worker "
                   "processes (zarr output; see docs/scale-out.md)")
    g.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="segment block by block on a running Dask scheduler")
    g.add_argument("--block-size", type=_triple_arg, default=None, metavar="Z,Y,X",
                   help="core block of --workers/--scheduler runs, Z,Y,X or N (default: 64 "
                   "slices of 512 x 512 for stack, 128^3 for ortho)")
    g.add_argument("--halo", type=_triple_arg, default=None, metavar="Z,Y,X",
                   help="context around each block, Z,Y,X or N (default: 32 in-plane, half "
                   "the median window + 2 along the stack)")
    g = p.add_argument_group("reporting")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_segment, cli_aliases={
        "label_divisor": "--max-objects", "model_quantized": "model_quantized in its config"})


def register_evaluate(subparsers):
    """Add ``empanada evaluate`` to the ``empanada`` command."""
    p = subparsers.add_parser(
        "evaluate", help="compare a segmentation with ground truth (IoU, F1, PQ, AP)",
        description="Score predicted labels against ground-truth labels of the same shape. "
                    "Two folders of 2D label images (e.g. a batch-mode output and its ground "
                    "truth) are paired by file name ('img.tif' with 'img.tif' or "
                    "'img_labels.tif'), each pair is scored as a 2D image and the counts are "
                    "pooled over all pairs.",
        formatter_class=_help_formatter(),
    )
    p.add_argument("pred", help="predicted labels (.tif, .npy, .zarr), or a folder of 2D label "
                                "images")
    p.add_argument("gt", help="ground-truth labels, or a folder of 2D label images")
    p.add_argument("--iou", type=_fraction, nargs="+", default=[0.5, 0.75],
                   help="IoU thresholds for matching")
    p.add_argument("--label-divisor", type=_positive_int, default=None,
                   help="also score each class (ids class * divisor + instance)")
    p.add_argument("--per-slice", action="store_true",
                   help="3D input: also score each z-slice as a 2D image")
    p.add_argument("--pred-key", default=None, help="array inside a zarr group (pred)")
    p.add_argument("--gt-key", default=None, help="array inside a zarr group (gt)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_evaluate, cli_aliases={"key": "--pred-key/--gt-key",
                                                   "per_slice": "--per-slice"})


# ------------------------------------------------------------------------ segment


class _Bar:
    """tqdm progress bar on stderr, or nothing when quiet."""

    def __init__(self, quiet, desc):
        self.bar = None
        self.quiet = quiet
        self.desc = desc

    def __call__(self, done, total):
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="slice", file=sys.stderr,
                            leave=False)
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _params(args):
    from ._params import SegmentationParams

    return SegmentationParams(
        downsampling=args.downsampling, confidence_thr=args.confidence_thr,
        center_thr=args.center_thr, min_distance=args.min_distance,
        fine_boundaries=args.fine_boundaries, semantic_only=args.semantic_only,
        label_divisor=args.max_objects, median_size=args.median_size, min_size=args.min_size,
        min_extent=args.min_extent, vote_thr=args.vote_thr, allow_one_view=args.allow_one_view,
        batch_size=args.batch_size, precision=args.precision, normalize=args.normalize,
        tile_size=args.tile_size, channels_last=None if args.channels_last else False,
    )


def _summary(labels, divisor, class_names):
    import empanada_core as ec

    ids = ec.label_ids(labels)  # slab by slab: a zarr output is not loaded whole
    counts = {}
    for class_id, name in class_names.items():
        in_class = ids[ids // divisor == class_id]
        counts[name] = int((in_class % divisor > 0).sum()) or int(len(in_class) > 0)
    return counts


def _is_zarr(path):
    return str(path).rstrip("/").endswith(_ZARR_SUFFIXES)


def _same_place(a, b):
    """True if two paths name the same file or folder (links and hard links too)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_writable(path):
    """Fail before any work if the output cannot be created (named, not a temp file)."""
    folder = path if path.is_dir() else path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        # a real write: os.access says yes to root on a read-only file system
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".empanada-probe-"):
            pass
    except OSError as err:
        raise PermissionError(
            f"cannot write {path}: {existing} is not writable ({err.strerror or err})"
        ) from None


def _check_output(path, mode, overwrite, source):
    if _same_place(path, source):
        raise ValueError(
            f"the output {path} is the input {source}: it would be replaced by its labels; "
            "choose another -o/--output"
        )
    if mode == "batch":
        if path.exists() and not path.is_dir():
            raise ValueError(f"batch mode on a folder writes one file per image: -o {path} "
                             "must be a folder")
        if _is_zarr(path) or str(path).lower().endswith(_TIFF_SUFFIXES):
            raise ValueError(
                f"batch mode on a folder writes one label file per image (the images may "
                f"differ in shape), so -o must name a folder, not {path.name}; to get one "
                f"label stack, give a multi-page TIFF (or a 3D .npy / zarr) as input"
            )
        _check_writable(path)
        return
    if not (_is_zarr(path) or str(path).lower().endswith(_TIFF_SUFFIXES)):
        raise ValueError(f"output {path} must end in .tif, .tiff, .zarr or .ome.zarr")
    if path.exists() and not overwrite and not _is_zarr(path):
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    _check_writable(path)


# Flags that only some modes read: (dest, the modes that read it).
_MODE_FLAGS = (
    ("plane", ("stack",)),
    ("median_size", ("stack", "ortho")),
    ("min_size", ("stack", "ortho")),
    ("min_extent", ("stack", "ortho")),
    ("vote_thr", ("ortho",)),
    ("allow_one_view", ("ortho",)),
    ("return_stacks", ("ortho",)),
    ("tile_size", ("2d", "batch", "batch-stack")),
)
_MODE_NAMES = {"2d": "2d", "batch": "batch", "batch-stack": "batch", "stack": "stack",
               "ortho": "ortho"}


def _given(args, dest):
    """The flag's value if it differs from its default, else None."""
    parser = getattr(args, "cli_parser", None)
    default = parser.get_default(dest) if parser is not None else None
    value = getattr(args, dest, default)
    return None if value == default else value


def _flag(dest):
    return "--" + dest.replace("_", "-")


def _check_mode_flags(args, mode):
    """Refuse flags the chosen mode would silently ignore, or warn about them.

    Flags of another mode are an error when ``--mode`` was given, a warning when
    the input chose the mode (``--mode auto``: one command line may serve 2D and
    3D inputs). The check compares with the parser's defaults, so it runs only
    for the ``empanada`` command (where the namespace knows its parser).
    """
    if getattr(args, "cli_parser", None) is None:
        return
    unused = [dest for dest, modes in _MODE_FLAGS
              if mode not in modes and _given(args, dest) is not None]
    if unused:
        modes = dict(_MODE_FLAGS)
        which = "; ".join(
            f"{_flag(d)}: {' and '.join(m for m in modes[d] if m != 'batch-stack')} mode"
            for d in unused)
        text = (f"{', '.join(_flag(d) for d in unused)} not used in {_MODE_NAMES[mode]} "
                f"mode ({which})")
        if args.mode != "auto":  # the mode was chosen: the flags are a mistake
            raise ValueError(f"{text}; drop {'it' if len(unused) == 1 else 'them'} or "
                             "choose the mode that reads it with --mode")
        import warnings  # the input chose the mode: one command line for mixed inputs

        warnings.warn(f"{text}; ignored for this input", UserWarning, stacklevel=2)
    if args.gpus > 1:
        if mode not in ("stack", "ortho"):
            raise ValueError(f"--gpus {args.gpus} splits 3D volumes (stack or ortho mode); "
                             f"got {_MODE_NAMES[mode]} mode")
        _check_gpus(args)
    if (args.block_size is not None or args.halo is not None) and \
            args.workers is None and args.scheduler is None:
        raise ValueError("--block-size and --halo apply to blockwise runs; add --workers N "
                         "or --scheduler ADDRESS, or drop them")
    if args.batch_size > 1 and mode in ("2d", "batch", "batch-stack"):
        import warnings

        warnings.warn(f"--batch-size {args.batch_size} is not used in "
                      f"{_MODE_NAMES[mode]} mode (2D images run one at a time)", UserWarning,
                      stacklevel=2)


def _check_gpus(args):
    """``--gpus N`` needs N CUDA devices; on the CPU it only runs N processes."""
    device = str(args.device)
    if device.startswith("cpu"):
        import warnings

        warnings.warn(f"--gpus {args.gpus} with --device cpu runs {args.gpus} CPU processes "
                      "that share this machine's cores (no faster than one, usually)",
                      UserWarning, stacklevel=3)
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < args.gpus:
        found = f"only {available} CUDA GPU(s) found" if available else "no CUDA GPU found"
        raise ValueError(f"--gpus {args.gpus}: {found}; use --gpus {max(available, 1)}"
                         f"{'' if available else ', or --device cpu to split the work over CPU processes anyway'}")


def _run_params_record(args, config, image):
    """What a resumed run must share with the run that started the output.

    Besides the settings: the input's fingerprint (file size and time, sampled
    content) and the weights' digest, so a changed input or model behind the
    same names restarts instead of keeping stale labels.
    """
    import empanada_models as em

    from ._image_io import image_fingerprint

    keep = ("mode", "plane", "downsampling", "confidence_thr", "center_thr", "min_distance",
            "fine_boundaries", "semantic_only", "max_objects", "median_size", "min_size",
            "min_extent", "vote_thr", "allow_one_view", "normalize", "quantized")
    record = {k: getattr(args, k) for k in keep}
    record["model"] = config.name
    record["input"] = str(Path(args.input).resolve())
    if image is not None:
        record["input_fingerprint"] = image_fingerprint(image, args.input)
    weights = em.fetch_model_file(config, quantized=args.quantized)
    record["model_sha256"] = em.file_sha256(weights)
    return record


def run_segment(args):
    """Handler of ``empanada segment`` (returns the exit code)."""
    from ._image_io import open_image
    from ._writers import output_lock

    start = time.perf_counter()
    params = _params(args)
    source = Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"input {source} does not exist")
    out_path = Path(args.output)
    mode = args.mode
    image = None
    if mode == "auto":
        if source.is_dir() and not _is_zarr(source):
            mode = "batch"
        else:
            image = open_image(source, key=args.key, level=args.level)
            mode = "2d" if image.ndim == 2 else "stack"
    if mode == "batch" and not (source.is_dir() and not _is_zarr(source)):
        mode = "batch-stack"  # a 3D array of unrelated 2D images
    _check_output(out_path, mode, args.overwrite, source)
    _check_mode_flags(args, mode)
    with output_lock(out_path):
        return _segment_locked(args, source, out_path, mode, image, params, start)


def _segment_locked(args, source, out_path, mode, image, params, start):
    from empanada_models import resolve_model_config

    from ._image_io import check_image, open_image, warn_if_narrow_dtype_range
    from ._segmenter import Segmenter
    from ._writers import create_output, is_complete, mark_complete, write_tiff

    if args.gpus > 1 and mode not in ("stack", "ortho"):
        raise ValueError(f"--gpus {args.gpus} splits 3D volumes (stack or ortho mode); got "
                         f"{_MODE_NAMES.get(mode, mode)} mode")

    config = resolve_model_config(args.model)
    class_names = dict(config.class_names)
    div = params.label_divisor
    if args.workers is not None or args.scheduler is not None:
        return _run_blockwise(args, source, out_path, mode, config, params, start)
    out = None
    checkpoints = None
    if mode != "batch":
        if image is None:
            image = open_image(source, key=args.key, level=args.level)
        if mode == "batch-stack" and image.ndim == 2:
            image = image[None]  # one image: a stack of one
        # a stack of unrelated images: each slice's values are checked on its own
        image = check_image(image, ndim=2 if mode == "2d" else 3, arg_name=str(source),
                            check_values=mode != "batch-stack")
        warn_if_narrow_dtype_range(image, mode=args.normalize, arg_name=str(source))
        if _is_zarr(out_path):
            record = _run_params_record(args, config, image)
            out = create_output(out_path, image.shape, np.uint32, overwrite=args.overwrite,
                                resume=not args.overwrite, params=record,
                                slice_axis=(_AXES[args.plane] if mode == "stack" else
                                            0 if mode == "batch-stack" else None))
            if is_complete(out):
                # a finished run: report it without loading the model
                _report(args, source, str(out_path), mode, config.name,
                        _summary(out, div, class_names), time.perf_counter() - start,
                        already_complete=True)
                return 0
            if mode in ("stack", "ortho") and args.gpus == 1:
                checkpoints = _checkpoints(out_path, image.shape, mode, args, record)

    seg = Segmenter.from_registry(config, params, device=args.device,
                                  quantized=args.quantized)
    seg.source = source
    written = []
    bar = _Bar(args.quiet, desc=f"{mode} {args.plane if mode == 'stack' else ''}".strip())
    failed = []
    try:
        if mode == "batch":
            counts, failed = _run_batch(seg, source, out_path, args, config, class_names,
                                        written, bar)
        elif mode == "batch-stack":
            counts, failed = _run_batch_stack(seg, image, out, out_path, args, class_names,
                                              bar)
            written.append(str(out_path))
        else:
            if out is not None:
                labels = _segment_into(seg, image, mode, args, out, bar, out_path, checkpoints)
                mark_complete(out)
                if checkpoints:  # the labels are complete: the per-slice results can go
                    shutil.rmtree(_checkpoint_path(out_path), ignore_errors=True)
            else:
                labels = _segment_into(seg, image, mode, args, None, bar, out_path)
                write_tiff(out_path, labels, overwrite=args.overwrite)
            written.append(str(out_path))
            counts = _summary(labels, div, class_names)
    finally:
        bar.close()

    output = written if mode == "batch" else written[0]
    shown_mode = "batch" if mode == "batch-stack" else mode
    _report(args, source, output, shown_mode, config.name, counts,
            time.perf_counter() - start, shown=out_path if mode == "batch" else output)
    if failed:
        from empanada_models.cli import cli_message

        parser, aliases = getattr(args, "cli_parser", None), getattr(args, "cli_aliases", None)
        shown = "; ".join(f"{name}: {cli_message(reason, parser, aliases)}"
                          for name, reason in failed[:10])
        more = f"; and {len(failed) - 10} more" if len(failed) > 10 else ""
        what = "image(s)" if mode == "batch" else "slice(s)"
        left = " (left empty in the output)" if mode == "batch-stack" else ""
        print(f"empanada: error: {len(failed)} {what} of {source} could not be segmented "
              f"and were skipped{left}: {shown}{more}", file=sys.stderr)
        return 2
    return 0


def _run_batch_stack(seg, image, out, out_path, args, class_names, bar):
    """Batch mode on a 3D array: each slice is an unrelated 2D image (the spec's 2D batch).

    Ids restart in every slice. A zarr output records each finished slice, so an
    interrupted run resumes; a slice that cannot be segmented is reported, left
    empty and the others are still written.
    """
    from ._writers import is_done, mark_done, write_tiff

    div = seg.params.label_divisor
    n = image.shape[0]
    labels = out if out is not None else np.zeros(image.shape, np.uint32)
    totals = dict.fromkeys(class_names.values(), 0)
    failed = []
    for z in range(n):
        if out is not None and is_done(out, z):
            result = np.asarray(out[z])
        else:
            try:
                result = seg.segment_image(np.asarray(image[z]))
            except (ValueError, TypeError) as err:
                failed.append((f"slice {z}", str(err)))
                continue
            labels[z] = result
            if out is not None:
                mark_done(out, z)
        for k, v in _summary(result, div, class_names).items():
            totals[k] += v
        bar(z + 1, n)
    if out is None:
        write_tiff(out_path, labels, overwrite=args.overwrite)
    elif not failed:
        from ._writers import mark_complete

        mark_complete(out)
    return totals, failed


_BATCH_RECORD = ".empanada-batch.json"


def _run_batch(seg, source, out_path, args, config, class_names, written, bar):
    """Segment every 2D image of a folder; one bad image is reported, not fatal.

    Each result is written atomically and recorded in ``<out>/.empanada-batch.json``
    with its input's fingerprint and the run's settings, so an interrupted batch run
    resumes: images whose result is recorded for the same input and settings are
    skipped, results of changed inputs are redone, and a file the record does not
    know (another run's, someone's) is replaced only with --overwrite.
    """
    from ._image_io import (
        batch_output_names,
        check_image,
        image_fingerprint,
        list_batch,
        open_image,
        warn_if_narrow_dtype_range,
    )
    from ._writers import write_tiff

    files = list_batch(source)
    targets = [out_path / t for t in batch_output_names([f.name for f in files])]
    settings = _run_params_record(args, config, None)
    record_path = out_path / _BATCH_RECORD
    record = _read_batch_record(record_path)
    if record.get("settings") != settings:
        record = {"settings": settings, "done": {}}
    div = seg.params.label_divisor
    totals = dict.fromkeys(class_names.values(), 0)
    plan, skipped, failed = [], 0, []
    for path, target in zip(files, targets):
        try:
            image = check_image(open_image(path), ndim=2, arg_name=str(path))
            warn_if_narrow_dtype_range(image, mode=args.normalize, arg_name=path.name)
            fingerprint = image_fingerprint(image, path)
        except (ValueError, TypeError, OSError) as err:
            failed.append((path.name, str(err)))
            continue
        if target.exists() and record["done"].get(target.name) == fingerprint:
            skipped += 1
            written.append(str(target))
            continue
        plan.append((path, image, fingerprint, target))
    # results this run's settings made from an earlier version of their input are
    # replaced; files the record does not know are someone else's
    clash = [t.name for _, _, _, t in plan if t.exists() and t.name not in record["done"]]
    if clash and not args.overwrite:
        raise FileExistsError(
            f"{out_path} already holds {', '.join(clash[:5])}"
            f"{' and more' if len(clash) > 5 else ''}, not from this input with these "
            "settings; pass --overwrite to replace them, or choose another -o/--output"
        )
    out_path.mkdir(parents=True, exist_ok=True)
    for i, (path, image, fingerprint, target) in enumerate(plan):
        try:
            labels = seg.segment_image(image)
        except (ValueError, TypeError) as err:
            failed.append((path.name, str(err)))
            continue
        write_tiff(target, labels, overwrite=True)
        record["done"][target.name] = fingerprint
        _write_batch_record(record_path, record)
        written.append(str(target))
        for k, v in _summary(labels, div, class_names).items():
            totals[k] += v
        bar(skipped + i + 1, skipped + len(plan))
    if skipped:
        print(f"{skipped} image(s) already segmented with these settings were skipped",
              file=sys.stderr)
    return totals, failed


def _read_batch_record(path):
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("done"), dict) else {}


def _write_batch_record(path, record):
    from empanada_models import atomic_output

    with atomic_output(path) as f:
        f.write(json.dumps(record, indent=1).encode())


def _report(args, source, output, mode, model, counts, elapsed, *, shown=None,
            already_complete=False):
    """The final one-line summary (JSON with ``--json``)."""
    summary = {"input": str(source), "output": output, "mode": mode, "model": model,
               "objects": counts, "seconds": round(elapsed, 3)}
    if already_complete:
        summary["already_complete"] = True
    if args.json:
        print(json.dumps(summary))
        return
    objects = ", ".join(f"{n} {name}" for name, n in counts.items())
    if already_complete:
        print(f"{output} is already complete ({objects}); nothing to do, pass --overwrite "
              "to run again")
    else:
        print(f"segmented {source} ({mode}) with {model} in {elapsed:.1f} s: {objects} "
              f"-> {shown}")


_AXES = {"xy": 0, "xz": 1, "yz": 2}


def _checkpoint_path(out_path):
    """Where a zarr run keeps each finished slice until its labels are complete."""
    return out_path.with_name(f"{out_path.name.rstrip('/')}.slices.zarr")


def _checkpoints(out_path, shape, mode, args, record):
    """Per-plane arrays of finished 2D slices, so a killed run resumes where it was."""
    from ._writers import create_output

    planes = [args.plane] if mode == "stack" else list(_AXES)
    return {plane: create_output(_checkpoint_path(out_path), shape, np.uint32, name=plane,
                                 slice_axis=_AXES[plane], overwrite=args.overwrite,
                                 resume=not args.overwrite, params=record)
            for plane in planes}


def _run_blockwise(args, source, out_path, mode, config, params, start):
    """``--workers`` / ``--scheduler``: blockwise inference on a Dask cluster."""
    from ._blockwise import connect_client, segment_blockwise
    from ._image_io import open_image

    if args.workers is not None and args.scheduler is not None:
        raise ValueError("give --workers (a local cluster) or --scheduler (a running one), "
                         "not both")
    if mode not in ("stack", "ortho"):
        raise ValueError(f"--workers/--scheduler segment 3D volumes (stack or ortho mode); "
                         f"got mode {mode}")
    if not _is_zarr(out_path):
        raise ValueError(f"--workers/--scheduler write a chunked zarr store: {out_path} must "
                         "end in .zarr or .ome.zarr")
    if args.gpus > 1 or args.return_stacks:
        raise ValueError("--gpus and --return-stacks do not combine with --workers/--scheduler")
    client, cluster = connect_client(args.scheduler, n_workers=args.workers)
    if "dashboard" in client.scheduler_info().get("services", {}) and not args.quiet:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    bar = _Bar(args.quiet, desc=f"{mode} blocks (segment, match, relabel)")
    try:
        result = segment_blockwise(
            str(source), out_path, model=config, params=params, mode=mode, plane=args.plane,
            block_size=args.block_size, halo=args.halo, client=client, device=args.device,
            quantized=args.quantized, key=args.key, level=args.level, overwrite=args.overwrite,
            progress=bar, record=_run_params_record(
                args, config, open_image(source, key=args.key, level=args.level)),
            torch_threads=_local_torch_threads(args),
        )
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    names = dict(config.class_names)
    if result.already_complete:
        counts = _summary(result.output, params.label_divisor, names)
    else:
        counts = {name: result.counts.get(c, 0) for c, name in names.items()}
    _report(args, source, str(out_path), mode, config.name, counts,
            time.perf_counter() - start, shown=str(out_path),
            already_complete=result.already_complete)
    return 0


def _local_torch_threads(args):
    """CPU workers of a local cluster share this machine's cores."""
    if args.workers is None or str(args.device).startswith("cuda"):
        return None
    return max(1, (os.cpu_count() or 1) // args.workers)


def _segment_into(seg, image, mode, args, out, bar, out_path, checkpoints=None):
    if args.gpus > 1:
        return _segment_distributed(seg, image, mode, args, out, out_path)
    checkpoints = checkpoints or {}
    if mode == "2d":
        labels = seg.segment_image(image)
        if out is not None:
            out[...] = labels
        bar(1, 1)
        return labels if out is None else out
    if mode == "stack":
        return seg.segment_stack(image, out, axis=args.plane, progress=bar,
                                 checkpoint=checkpoints.get(args.plane))
    if mode == "ortho":
        if args.return_stacks:
            consensus, stacks = seg.segment_orthoplanes(image, out, return_stacks=True,
                                                        progress=bar, checkpoints=checkpoints)
            _write_stacks(stacks, out_path, args.overwrite)
            return consensus
        return seg.segment_orthoplanes(image, out, progress=bar, checkpoints=checkpoints)
    raise ValueError(f"unknown mode {mode!r}; choose from {_MODES}")


def _segment_distributed(seg, image, mode, args, out, out_path):
    """Stack or ortho mode with one process per GPU (gloo processes on CPU devices)."""
    from ._distributed import segment_stack_distributed
    from ._ortho import ortho_merge

    backend = "gloo" if str(args.device).startswith("cpu") else None
    source = seg.source if args.key is None and args.level is None else image
    run = dict(world_size=args.gpus, backend=backend, quantized=args.quantized, key=args.key)
    if mode == "stack":
        return segment_stack_distributed(source, seg.config, seg.params, out, axis=args.plane,
                                         **run)
    stacks = {name: segment_stack_distributed(source, seg.config, seg.params, axis=name, **run)
              for name in ("xy", "xz", "yz")}
    if args.return_stacks:
        _write_stacks(stacks, out_path, args.overwrite)
    return ortho_merge(stacks, seg.params, seg.config, out=out, thing_list=seg.thing_list)


def _write_stacks(stacks, out_path, overwrite):
    from ._writers import create_output, write_tiff

    for name, vol in stacks.items():
        if _is_zarr(out_path):
            arr = create_output(out_path, vol.shape, np.uint32, name=f"stack_{name}",
                                overwrite=True)
            arr[...] = vol
        else:
            target = out_path.with_name(f"{out_path.stem}_{name}{out_path.suffix}")
            write_tiff(target, vol, overwrite=overwrite)


# ------------------------------------------------------------------------ evaluate


def run_evaluate(args):
    """Handler of ``empanada evaluate`` (returns the exit code)."""
    import empanada_core as ec

    from ._image_io import open_image

    folders = [Path(args.pred).is_dir() and not _is_zarr(Path(args.pred)),
               Path(args.gt).is_dir() and not _is_zarr(Path(args.gt))]
    if any(folders):
        if not all(folders):
            raise ValueError("give two folders of 2D label images, or two label files; got "
                             f"{args.pred} and {args.gt}")
        pred, gt, names = _paired_label_folders(Path(args.pred), Path(args.gt))
        args.per_slice = True
    else:
        pred = np.asarray(open_image(args.pred, key=args.pred_key))
        gt = np.asarray(open_image(args.gt, key=args.gt_key))
        names = None
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape} but gt has {gt.shape}; they must match")
    for name, arr in (("pred", pred), ("gt", gt)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must hold integer labels; got dtype {arr.dtype}")
    report = ec.evaluate_segmentation(
        gt, pred, iou_thresholds=tuple(args.iou), label_divisor=args.label_divisor,
        per_slice=args.per_slice and gt.ndim == 3,
    )
    if names is not None:
        # pairs of unrelated 2D images: the pooled per-image counts are the result
        report = {"images": names, **report["per_slice"]["pooled"],
                  "n_images": report["per_slice"]["n_slices"]}
        if args.json:
            print(json.dumps(report))
            return 0
        print(f"{report['n_images']} image pairs, scored one by one and pooled")
        _print_scores(report)
        return 0
    if args.json:
        print(json.dumps(report))
        return 0
    _print_scores(report)
    if "per_slice" in report:
        pooled = report["per_slice"]["pooled"]
        print("per slice (pooled): " + ", ".join(
            f"F1@{thr} {m['f1']:.4f}" for thr, m in pooled["instance"].items())
            + f", PQ {pooled['panoptic']['pq']:.4f}")
    return 0


def _print_scores(block):
    if "n_gt" in block:
        print(f"objects: {block['n_gt']} in gt, {block['n_pred']} predicted")
    print(f"semantic IoU: {block['semantic_iou']:.4f}")
    for thr, m in block["instance"].items():
        print(f"IoU >= {thr}: F1 {m['f1']:.4f}  AP {m['ap']:.4f}  precision "
              f"{m['precision']:.4f}  recall {m['recall']:.4f}  (TP {m['tp']}, FP {m['fp']}, "
              f"FN {m['fn']})")
    pq = block["panoptic"]
    print(f"PQ {pq['pq']:.4f}  (SQ {pq['sq']:.4f}, RQ {pq['rq']:.4f})")


def _paired_label_folders(pred_dir, gt_dir):
    """Read two folders of 2D label images paired by name, zero-padded into two stacks.

    A prediction named ``<stem>_labels.*`` (what batch mode writes) pairs with
    the ground truth ``<stem>.*``. Zero padding is background in both, so it
    changes no score.
    """
    from ._image_io import list_batch, open_image

    gt_files = {f.stem: f for f in list_batch(gt_dir)}
    pairs, unmatched = [], []
    for f in list_batch(pred_dir):
        stem = f.stem
        if stem not in gt_files and stem.endswith("_labels") and stem[:-7] in gt_files:
            stem = stem[:-7]
        if stem in gt_files:
            pairs.append((stem, f, gt_files.pop(stem)))
        else:
            unmatched.append(f.name)
    if unmatched or gt_files:
        raise ValueError(
            f"the folders do not pair up by name: predictions without ground truth: "
            f"{unmatched[:5] or 'none'}; ground truth without prediction: "
            f"{sorted(gt_files)[:5] or 'none'}"
        )
    preds, gts = [], []
    for _stem, fp, fg in pairs:
        a, b = np.asarray(open_image(fp)), np.asarray(open_image(fg))
        if a.ndim != 2 or a.shape != b.shape:
            raise ValueError(f"{fp.name} and {fg.name} must be 2D images of the same shape; "
                             f"got {a.shape} and {b.shape}")
        preds.append(a)
        gts.append(b)
    h = max(a.shape[0] for a in preds)
    w = max(a.shape[1] for a in preds)

    def stack(images):
        dtype = np.result_type(*[im.dtype for im in images])
        out = np.zeros((len(images), h, w), dtype=dtype)
        for i, im in enumerate(images):
            out[i, :im.shape[0], :im.shape[1]] = im
        return out

    return stack(preds), stack(gts), [stem for stem, _, _ in pairs]
