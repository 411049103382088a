"""``empanada train``, ``empanada finetune`` and ``empanada patches``.

Registered into the ``empanada`` command (installed by empanada-models) through
the ``empanada.commands`` entry-point group. Errors in the input or arguments
exit with 2, runtime failures with 1 (see :func:`empanada_models.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

__all__ = ["register_train", "register_finetune", "register_patches"]

_LAYERS = ("none", "stage1", "stage2", "stage3", "stage4", "all")


def _architectures():
    from empanada_models import ARCHITECTURES

    return list(ARCHITECTURES)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {text}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def _label_divisor(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2; got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be >= 2 (and above the largest instance number of any class); got {text}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text}")
    return value


def _abs(path):
    return None if path is None else os.fspath(Path(path).expanduser().absolute())


def _read_label_spec(text):
    """A label spec file, or the spec itself (lines separated by ';')."""
    from ._config import parse_label_spec

    path = Path(text).expanduser()
    if path.is_file():
        return parse_label_spec(path.read_text(encoding="utf-8"))
    if "," in text:
        return parse_label_spec(text)
    raise FileNotFoundError(f"--labels: no such file {text!r} (give a file with lines like "
                            f"'1,mito,instance', or the lines themselves separated by ';')")


# ----------------------------------------------------------------------- progress


class _Progress:
    """tqdm bar on stderr; validation results as lines above it."""

    def __init__(self, quiet, desc):
        self.bar = None
        self.quiet = quiet
        self.desc = desc

    def __call__(self, info):
        if self.quiet:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with empanada-infer
                self.quiet = True
                return
            self.bar = tqdm(total=info["total"], initial=info["iteration"], desc=self.desc,
                            unit="it", file=sys.stderr, dynamic_ncols=True)
        if info["phase"] == "start":
            return
        if info["phase"] == "train":
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info['loss']['total_loss']:.4f}", lr=f"{info['lr']:.2e}")
        else:
            m = info["metrics"]
            shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("semantic_iou", "f1_50", "pq",
                                                          "eval_loss") if m.get(k) is not None)
            self.bar.write(f"iteration {info['iteration']}: {shown}", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _StopOnInterrupt:
    """First Ctrl-C: finish the iteration, write a checkpoint and stop; second: abort."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nempanada: stopping after this iteration and writing a checkpoint "
              "(Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGINT, self._previous)
        return False

    def __call__(self):
        return self.requested


def _warn_if_useless(result):
    """A registered model whose validation PQ is 0 segments nothing useful: say so."""
    metrics = result.metrics or {}
    if result.registered is None or metrics.get("pq") is None or metrics["pq"] > 0:
        return None
    import warnings

    text = (f"{result.model_name!r} scored PQ 0 on its validation data after "
            f"{result.iterations} iterations; it is registered, but will likely find "
            f"nothing: train longer (--iterations), check the labels, or remove it from "
            f"the registry")
    warnings.warn(text, UserWarning, stacklevel=2)
    return text


def _report(result, args):
    warning = _warn_if_useless(result)
    summary = {
        "model_name": result.model_name,
        "model_dir": str(result.model_dir),
        "model": None if result.model_path is None else str(result.model_path),
        "config": None if result.config_path is None else str(result.config_path),
        "quantized": None if result.quantized_path is None else str(result.quantized_path),
        "checkpoint": str(result.checkpoint_path),
        "log": str(result.log_path),
        "plot": None if result.plot_path is None else str(result.plot_path),
        "iterations": result.iterations,
        "total_iterations": result.total_iterations,
        "final_loss": result.history[-1].get("total_loss") if result.history else None,
        "best": result.best,
        "metrics": result.metrics,
        "exported_from": result.exported_from,
        "registered": None if result.registered is None else result.registered.name,
        "stopped": result.stopped,
        "seconds": round(result.seconds, 2),
        "notes": list(result.notes) + ([warning] if warning else []),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 130 if result.stopped else 0
    if result.stopped:
        print(f"stopped at iteration {result.iterations} of {result.total_iterations}; "
              f"resume with --resume {result.checkpoint_path}")
        return 130
    print(f"trained {result.model_name!r} for {result.iterations} iterations in "
          f"{result.seconds:.0f} s")
    if result.best:
        print(f"best validation {result.best['metric']}: {result.best['value']:.4f} "
              f"(iteration {result.best['iteration']})")
    print(f"model:  {result.model_path}")
    print(f"config: {result.config_path}")
    if result.quantized_path:
        print(f"int8:   {result.quantized_path}")
    print(f"log:    {result.log_path}")
    for note in result.notes:
        print(f"note: {note}")
    if result.registered is not None:
        print(f"registered {result.model_name!r}: segment with "
              f"`empanada segment IMAGE -o OUT --model {result.model_name}`")
    return 0


# -------------------------------------------------------------------------- train


# Config keys that errors name, and the flags that set them.
_CONFIG_FLAGS = {
    "model_name": "--name", "description": "--description", "TRAIN.train_dir": "--train-dir",
    "EVAL.eval_dir": "--eval-dir", "TRAIN.model_dir": "--model-dir",
    "TRAIN.iterations": "--iterations", "TRAIN.batch_size": "--batch-size",
    "TRAIN.patch_size": "--patch-size", "TRAIN.schedule_params.max_lr": "--lr",
    "DATASET.label_divisor": "--label-divisor", "MODEL.arch": "--arch",
    "MODEL.encoder": "--encoder", "TRAIN.encoder_pretraining": "--pretrained",
    "TRAIN.finetune_layer": "--layers", "finetunable_layers": "--layers",
    "TRAIN.device": "--device", "TRAIN.workers": "--workers", "TRAIN.seed": "--seed",
    "TRAIN.amp": "--amp", "TRAIN.quantize": "--quantize",
}
_CLI_ALIASES = {key: f"{flag} ({key} in the config)" if "." in key or key == "model_name"
                else flag for key, flag in _CONFIG_FLAGS.items()}
_PICK_ALIASES = {"n_patches": "--n", "patch_size": "--size", "pick_all_points": "--all-points",
                 "labels_key": "--labels-key"}


def _set_threads(args):
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def _cmd_train(args):
    from ._train import train

    _set_threads(args)
    overrides = {}
    if args.train_dir:
        overrides["TRAIN.train_dir"] = _abs(args.train_dir[0])
        if len(args.train_dir) > 1:
            overrides["TRAIN.additional_train_dirs"] = [_abs(d) for d in args.train_dir[1:]]
    simple = {
        "EVAL.eval_dir": _abs(args.eval_dir), "TRAIN.model_dir": _abs(args.model_dir),
        "model_name": args.name, "description": args.description,
        "TRAIN.iterations": args.iterations, "TRAIN.batch_size": args.batch_size,
        "TRAIN.patch_size": args.patch_size, "TRAIN.schedule_params.max_lr": args.lr,
        "DATASET.label_divisor": args.label_divisor, "MODEL.arch": args.arch,
        "MODEL.encoder": args.encoder, "TRAIN.finetune_layer": args.layers,
        "TRAIN.device": args.device, "TRAIN.workers": args.workers, "TRAIN.seed": args.seed,
        "TRAIN.amp": args.amp, "TRAIN.quantize": args.quantize or None,
    }
    overrides.update({k: v for k, v in simple.items() if v is not None})
    if args.pretrained is not None:
        pretrained = args.pretrained
        if not pretrained.startswith(("http://", "https://")) and \
                pretrained.lower() not in ("cem", "cem1.5m", "none"):
            pretrained = _abs(pretrained)
        overrides["TRAIN.encoder_pretraining"] = None if pretrained.lower() == "none" \
            else pretrained
    if args.labels is not None:
        spec = _read_label_spec(args.labels)
        overrides["DATASET.labels"] = list(spec.labels)
        overrides["DATASET.class_names"] = dict(spec.class_names)
        overrides["DATASET.thing_list"] = list(spec.thing_list)
        overrides["MODEL.num_classes"] = None
    if args.config is None:
        config = None
    else:
        config = Path(args.config).expanduser()
        if not config.is_file():
            raise FileNotFoundError(f"training config not found: {config}")
    from ._config import TrainConfig

    cfg = TrainConfig.load(config, overrides=overrides)
    progress = _Progress(args.quiet or args.json, "train")
    try:
        with _StopOnInterrupt() as stop:
            result = train(cfg, resume=_abs(args.resume), progress=progress, should_stop=stop,
                           register=args.register, overwrite=args.overwrite)
    finally:
        progress.close()
    return _report(result, args)


def _common_run_options(p):
    g = p.add_argument_group("execution")
    g.add_argument("--device", default=None,
                   help="auto, cpu, cuda or cuda:N (default: the config's, auto)")
    g.add_argument("--workers", type=_non_negative_int, default=None,
                   help="data loading processes (default: 0 on CPU, up to 8 on GPU)")
    g.add_argument("--seed", type=_non_negative_int, default=None, help="random seed")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads of torch (default: torch's choice; on shared or "
                   "oversubscribed CPUs 1 can be much faster)")
    g.add_argument("--resume", metavar="CKPT", default=None,
                   help="continue an interrupted run from its <name>_checkpoint.pth.tar")
    g = p.add_argument_group("output")
    g.add_argument("--quantize", action="store_true",
                   help="also write an int8 CPU model (<name>_quantized.pth)")
    g.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                   help="register the model so `empanada segment --model NAME` finds it")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a registered model of the same name")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print a JSON summary")


def register_train(subparsers):
    """Add ``empanada train`` to the ``empanada`` command."""
    p = subparsers.add_parser(
        "train",
        help="train a panoptic segmentation model from scratch",
        description=(
            "Train a model from scratch on a dataset written by `empanada patches store`, "
            "export it as TorchScript with its config, and register it. Settings come from "
            "CONFIG (the original empanada training YAML; see configs/train_mitolite.yaml), "
            "then from the options below, which override it."
        ),
    )
    p.add_argument("config", nargs="?", metavar="CONFIG",
                   help="training config .yaml (default: built-in defaults, PDL-PR ResNet-50)")
    g = p.add_argument_group("data")
    g.add_argument("--train-dir", action="append", metavar="D",
                   help="training dataset folder; repeat to add more datasets")
    g.add_argument("--eval-dir", metavar="D",
                   help="validation dataset folder (may be the training one)")
    g.add_argument("--labels", metavar="FILE",
                   help="label spec: a file with one line per class <id>,<name>,"
                   "<semantic|instance> (e.g. '2,mito,instance'), or the lines separated by ';'")
    g.add_argument("--label-divisor", type=_label_divisor, metavar="N",
                   help="label divisor of panoptic masks (class_id * N + instance); default 1000")
    g = p.add_argument_group("model")
    g.add_argument("--name", help="model name (registry name and file prefix)")
    g.add_argument("--description", help="free text stored in the model config")
    g.add_argument("--model-dir", metavar="D",
                   help="output folder (default: ./<name>)")
    g.add_argument("--arch", choices=_architectures(), help="architecture")
    g.add_argument("--encoder", metavar="E",
                   help="encoder: resnet18/34/50/101, regnety_200mf, ... "
                   "(`python -c 'import empanada_models as m; print(m.list_encoders())'`)")
    g.add_argument("--pretrained", metavar="W",
                   help="encoder weights: 'cem' (CEM1.5M ResNet-50), a URL or a checkpoint "
                   "path; 'none' for random initialisation")
    g.add_argument("--layers", choices=_LAYERS,
                   help="encoder layers that train with pretrained weights (stageN: stages "
                   "N..4; default all)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--iterations", type=_positive_int, metavar="N",
                   help="training iterations (default 500)")
    g.add_argument("--batch-size", type=_positive_int, metavar="N", help="default 16")
    g.add_argument("--patch-size", type=_positive_int, metavar="P",
                   help="crop size; a multiple of 16 (Panoptic-DeepLab) or 128 (BiFPN); "
                   "default 256")
    g.add_argument("--lr", type=_positive_float, metavar="F",
                   help="peak learning rate of the one-cycle schedule (default 0.003)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 mixed precision on GPUs (default on)")
    _common_run_options(p)
    p.set_defaults(func=_cmd_train, cli_aliases=_CLI_ALIASES)


# ----------------------------------------------------------------------- finetune


def _cmd_finetune(args):
    from ._finetune import finetune

    _set_threads(args)
    config = None
    if args.config is not None:
        config = Path(args.config).expanduser()
        if not config.is_file():
            raise FileNotFoundError(f"finetuning config not found: {config}")
    train_dir = Path(args.train_dir).expanduser()
    if not train_dir.is_dir():
        raise FileNotFoundError(f"TRAIN_DIR not found: {train_dir}")
    overrides = {k: v for k, v in {"TRAIN.device": args.device, "TRAIN.workers": args.workers,
                                   "TRAIN.seed": args.seed,
                                   "TRAIN.schedule_params.max_lr": args.lr}.items()
                 if v is not None}
    progress = _Progress(args.quiet or args.json, "finetune")
    try:
        with _StopOnInterrupt() as stop:
            result = finetune(
                args.model, _abs(train_dir), name=args.name, config=config,
                eval_dir=_abs(args.eval_dir), model_dir=_abs(args.model_dir),
                finetunable_layers=args.layers, iterations=args.iterations,
                batch_size=args.batch_size, patch_size=args.patch_size, overrides=overrides,
                description=args.description, quantize=args.quantize or None,
                resume=_abs(args.resume), progress=progress, should_stop=stop,
                register=args.register, overwrite=args.overwrite,
            )
    finally:
        progress.close()
    return _report(result, args)


def register_finetune(subparsers):
    """Add ``empanada finetune`` to the ``empanada`` command."""
    p = subparsers.add_parser(
        "finetune",
        help="finetune a registered model on new annotations",
        description=(
            "Finetune a registered model (`empanada models list`) on a dataset written by "
            "`empanada patches store`, then export and register the result. The model keeps "
            "its classes; see `empanada models info MODEL` for the patch size and labels it "
            "needs."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="registered model name or model config .yaml")
    p.add_argument("train_dir", metavar="TRAIN_DIR", help="training dataset folder")
    g = p.add_argument_group("data")
    g.add_argument("--eval-dir", metavar="D",
                   help="validation dataset folder (may be TRAIN_DIR)")
    g = p.add_argument_group("model")
    g.add_argument("--name", help="name of the finetuned model (default: MODEL_finetuned)")
    g.add_argument("--description", help="free text stored in the model config")
    g.add_argument("--model-dir", metavar="D", help="output folder (default: ./<name>)")
    g.add_argument("--layers", choices=_LAYERS,
                   help="encoder layers to train: none (decoders and heads only), stageN "
                   "(encoder stages N..4 too) or all (default none)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--config", metavar="YAML",
                   help="custom finetuning config (TRAIN and EVAL blocks; see "
                   "configs/finetune_example.yaml)")
    g.add_argument("--iterations", type=_positive_int, metavar="N", help="default 100")
    g.add_argument("--batch-size", type=_positive_int, metavar="N", help="default 16")
    g.add_argument("--patch-size", type=_positive_int, metavar="P",
                   help="crop size; a multiple of the model's padding factor (default 256)")
    g.add_argument("--lr", type=_positive_float, metavar="F",
                   help="peak learning rate of the one-cycle schedule (default 0.003)")
    _common_run_options(p)
    p.set_defaults(func=_cmd_finetune, cli_aliases=_CLI_ALIASES)


# ------------------------------------------------------------------------ patches


def _cmd_pick(args):
    import numpy as np
    import tifffile

    from ._patches import pick_patches_from_file

    image = Path(args.image).expanduser()
    if not image.exists():
        raise FileNotFoundError(f"image not found: {image}")
    try:
        patches = pick_patches_from_file(
            image, labels=args.labels, points=args.points, key=args.key,
            labels_key=args.labels_key, source=_source_name(image, args.source),
            patch_size=args.size,
            n_patches=args.n, pick_all_points=args.all_points, mode=args.mode,
            isotropic=args.isotropic, level=args.level, seed=args.seed,
        )
    except (TypeError, ValueError) as err:
        # the library names its arguments (`image`, `labels`); the user needs the file
        text = str(err)
        named = {"`image`": image.name, "`labels`": Path(args.labels or "").name}
        for arg, name in named.items():
            text = text.replace(arg, f"`{name}` ({arg.strip('`')})", 1) if name else text
        raise type(err)(text) from None
    out = Path(args.output).expanduser()
    files = [out / "images" / f"{p.stem}.tiff" for p in patches]
    if args.labels is not None:
        files += [out / "masks" / f"{p.stem}.tiff" for p in patches]
    existing = [str(f) for f in files if f.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{len(existing)} patch files exist already, e.g. {existing[0]}; "
                              f"pass --overwrite or another -o folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    if args.labels is not None:
        (out / "masks").mkdir(parents=True, exist_ok=True)
    for p in patches:
        tifffile.imwrite(out / "images" / f"{p.stem}.tiff", np.ascontiguousarray(p.image),
                         photometric="minisblack")
        if p.labels is not None:
            tifffile.imwrite(out / "masks" / f"{p.stem}.tiff",
                             np.ascontiguousarray(p.labels).astype(np.uint32),
                             photometric="minisblack", compression="zlib")
    kind = "flipbooks (annotate slice 2 of each)" if patches and patches[0].is_flipbook \
        else "patches"
    print(f"wrote {len(patches)} {kind} to {out / 'images'}")
    if args.labels is None:
        print(f"annotate them and save each mask as {out / 'masks'}/<same name>.tiff, then run "
              f"`empanada patches store {out} DATASET_DIR NAME`")
    return 0


# File stems that name what a file holds, not where it comes from: datasets are often
# folders of images.tif / labels.tif (as the shared EM data sets are).
_GENERIC_STEMS = frozenset({"image", "images", "raw", "volume", "data", "stack", "masks",
                            "labels"})


def _source_name(image, given):
    """Source name of picked patches: ``--source``, the file's stem, or its folder's name.

    A generic stem (``images.tif``) would give every dataset the same source, and a
    source named ``images`` or ``masks`` nests folders of those names in the stored
    dataset (``NAME/images/images/...``): the folder name says where it comes from.
    """
    if given is not None:
        return given
    stem = image.name.split(".")[0] if not image.name.startswith(".") else image.name
    if stem.lower() in _GENERIC_STEMS:
        folder = image.expanduser().absolute().parent.name
        if folder:
            import re

            return re.sub(r"[^A-Za-z0-9_.-]+", "_", folder).lstrip(".") or None
    return None


def _patch_from_file(path, masks_dir, source):
    import numpy as np

    from empanada_core import open_image

    from ._patches import _NAME_RE, FLIPBOOK_MIDDLE, Patch, parse_patch_name

    stem = path.name[: path.name.rfind(".")]
    match = _NAME_RE.search(stem)
    if match is None:
        raise ValueError(f"{path.name} has no patch location in its name (e.g. "
                         f"'cells-s0-LOC-2d_0-256_0-256.tiff'); was it written by "
                         f"`empanada patches pick`?")
    info = parse_patch_name(stem)
    image = np.asarray(open_image(path))
    flipbook = info["axis"] is not None
    if image.ndim != (3 if flipbook else 2):
        raise ValueError(f"{path} has shape {image.shape}; its name says a "
                         f"{'(5, P, P) flipbook' if flipbook else '2D patch'}")
    h, w = info["valid_shape"]
    ranges = info["ranges"]
    if flipbook:
        origin = tuple(r[0] for r in ranges)
    else:
        origin = (info["plane"] or 0, ranges[0][0], ranges[1][0])
    patch = Patch(image=image, origin=origin, valid=(slice(0, h), slice(0, w)),
                  axis=info["axis"], level=info["level"],
                  source=source or stem[: match.start()].rstrip("-") or "image",
                  name=stem[match.start():])
    candidates = [masks_dir / f"{stem}{ext}" for ext in (".tiff", ".tif", ".png", ".npy")]
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise FileNotFoundError(f"no mask for {path.name} in {masks_dir} (expected "
                                f"{stem}.tiff)")
    mask = np.asarray(open_image(found[0]))
    if flipbook and mask.ndim == 2 and mask.shape == image.shape[1:]:
        pass  # the annotated (middle) plane only
    elif flipbook and mask.ndim == 3 and mask.shape[0] != image.shape[0]:
        raise ValueError(f"mask {found[0]} has {mask.shape[0]} slices; expected 5 or 1 "
                         f"(slice {FLIPBOOK_MIDDLE} is stored)")
    return patch, mask


def _cmd_store(args):
    from ._store import store_patches

    folder = Path(args.patches).expanduser()
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"no images/ folder in {folder} (written by "
                                f"`empanada patches pick -o {folder}`)")
    masks_dir = Path(args.masks).expanduser() if args.masks else folder / "masks"
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"masks folder not found: {masks_dir}")
    files = sorted(p for p in images_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in (".tif", ".tiff", ".png", ".npy"))
    if not files:
        raise ValueError(f"no patch images in {images_dir}")
    pairs = [_patch_from_file(f, masks_dir, args.source) for f in files]
    written = store_patches([p for p, _ in pairs], [m for _, m in pairs], args.dataset_dir,
                            args.name, overwrite=args.overwrite)
    print(f"stored {len(written)} annotated patches in "
          f"{Path(args.dataset_dir).expanduser() / args.name}")
    return 0


def register_patches(subparsers):
    """Add ``empanada patches pick|store`` to the ``empanada`` command."""
    p = subparsers.add_parser(
        "patches", help="pick patches to annotate and store annotated ones as a dataset",
        description="Pick training patches from an image and store annotated patches as a "
                    "training dataset (the Pick training patches and Store training dataset "
                    "modules).",
    )
    p.set_defaults(func=lambda args: _help(p))
    sub = p.add_subparsers(dest="patches_command", metavar="ACTION")

    q = sub.add_parser(
        "pick", help="pick patches (2D) or flipbooks (3D) to annotate",
        description="Write random patches (or patches centred on points) of IMAGE as TIFF "
                    "files to OUT/images (and the matching crops of --labels to OUT/masks). "
                    "Flipbooks are 5 consecutive slices; annotate the middle one.",
    )
    q.add_argument("image", metavar="IMAGE", help="image or volume (.tif, .npy, .zarr, ...)")
    q.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    q.add_argument("--n", type=_positive_int, default=16, help="number of patches (default 16)")
    q.add_argument("--size", type=_positive_int, default=256, help="patch size (default 256)")
    q.add_argument("--mode", choices=("auto", "2d", "stack", "3d"), default="auto",
                   help="2d image, stack of unrelated 2D images, or 3d volume (flipbooks); "
                   "auto: 2d for 2D input, 3d for 3D input")
    q.add_argument("--points", metavar="FILE",
                   help="points to centre patches on: .npy or napari points .csv, (y, x) or "
                   "(z, y, x)")
    q.add_argument("--all-points", action="store_true", help="one patch per point")
    q.add_argument("--isotropic", action="store_true",
                   help="flipbooks along a random axis (xy, xz or yz)")
    q.add_argument("--level", type=_non_negative_int, default=0,
                   help="resolution level (pyramid level or 2**level downsampling)")
    q.add_argument("--labels", metavar="LABELS",
                   help="label image of the same shape: also write its crops (paired patches)")
    q.add_argument("--key", help="array inside a zarr group")
    q.add_argument("--labels-key", help="array of --labels inside a zarr group")
    q.add_argument("--source", help="source name (default: the image file name, or its "
                   "folder's name for generic names such as images.tif)")
    q.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    q.add_argument("--overwrite", action="store_true", help="replace existing patch files")
    q.set_defaults(func=_cmd_pick, cli_aliases=_PICK_ALIASES)

    q = sub.add_parser(
        "store", help="store annotated patches as a training dataset",
        description="Store the patches in PATCHES/images with their masks (PATCHES/masks, "
                    "same file names) as DATASET_DIR/NAME/<source>/images|masks; an "
                    "existing dataset is appended to.",
    )
    q.add_argument("patches", metavar="PATCHES", help="folder written by `patches pick`")
    q.add_argument("dataset_dir", metavar="DATASET_DIR", help="folder holding datasets")
    q.add_argument("name", metavar="NAME", help="dataset name")
    q.add_argument("--masks", metavar="D", help="masks folder (default PATCHES/masks)")
    q.add_argument("--source", help="source name for all patches (default: from file names)")
    q.add_argument("--overwrite", action="store_true", help="replace files that exist")
    q.set_defaults(func=_cmd_store)


def _help(parser):
    parser.print_help(sys.stderr)
    return 2
