"""Forward time per slice of the empanada-models architectures, and int8 agreement.

For each model (MitoNet_v1 = Panoptic-DeepLab + PointRend on ResNet-50, MitoNet_v1_mini
= Panoptic-BiFPN + PointRend on ResNet-50, and a small Panoptic-DeepLab + PointRend on
ResNet-18) it times one full forward pass, ``model(x, 2, True)`` (PointRend rendering
and upsampled instance outputs included), on a ``--size`` x ``--size`` slice:

* CPU, batch 1: fp32, channels_last, bf16 autocast and int8 (eager-mode static PTQ,
  'x86' backend);
* CUDA, when available: fp32, channels_last, bf16 autocast, and fp32 / bf16 autocast
  at batch 4 (time per slice).

Every model is the eager module with BatchNorm folded (the layout of the exported
TorchScript files); times are the median of ``--repeat`` runs after ``--warmup`` runs,
with torch's default number of threads. Speed-ups are against the fp32 row of the same
model and device, measured in the same run.

int8 agreement: with the Lucchi FIB-SEM volume in ``../shared/data`` (or
``$EMPANADA_DATA_DIR``), each model is calibrated on ``--calibration-batches``
batches of 4 crops (256 x 256) of slices 32-47 and compared with its float version on
the whole of slice 56 (768 x 1024): IoU of the hardened semantic masks
(``sigmoid(sem_logits) > 0.5``) and relative RMS error (``rms(int8 - float) /
std(float)``) of each output. Without the data, int8 is calibrated on Gaussian noise
and only timed.

No trained weights exist yet, and the as-built random init is no use here: its heads
(conv weights with std 0.001) give nearly constant logits, so int8 and fp32 agree
trivially. The models are therefore "data-shaped" first: BatchNorm statistics
re-estimated on Lucchi crops (slices 0-31), the semantic head's last conv fitted to the
mitochondria masks by least squares, random unit-variance projections for the centre
and offsets heads, and PointRend passing the coarse logit through (the procedure of
``realistic`` in ``packages/empanada-models/tests/test_quantize.py``). The encoder is
still random, and random deep networks amplify int8 rounding layer by layer, so the
figures bound a trained model's agreement from below rather than predict it.

Usage::

    python benchmarks/models.py                          # 1024 x 1024, all models
    python benchmarks/models.py --size 512 --repeat 2 --models PDL-PR_resnet18
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from empanada_core.testing import find_data_dir
from empanada_models._builders import (
    count_parameters,
    mitonet_v1,
    mitonet_v1_mini,
    panoptic_deeplab_pr,
)
from empanada_models._export import fuse_model
from empanada_models._quantize import calibration_batches_from_images, quantize_model

MEAN, STD = 0.57571, 0.12765  # MitoNet's norms

MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "MitoNet_v1": (mitonet_v1, "PDL-PR ResNet-50"),
    "MitoNet_v1_mini": (mitonet_v1_mini, "BiFPN-PR ResNet-50"),
    "PDL-PR_resnet18": (
        lambda: panoptic_deeplab_pr(
            encoder="resnet18", low_level_stages=[1], low_level_channels_project=[32],
            ins_decoder=True, aspp_dropout=0.5,
        ),
        "PDL-PR ResNet-18",
    ),
}


def median_time(fn, repeat, warmup, sync):
    """Median wall time of ``repeat`` calls of ``fn`` after ``warmup`` calls."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
            sync()
        times = []
        for _ in range(repeat):
            gc.collect()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def quiet_run(model, x):
    with warnings.catch_warnings():
        # running an int8 model quantizes its input, which warns about quantized tensors
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return model(x, 2, True)


# --------------------------------------------------------------------------------------
# real data and the data-shaped model


def load_lucchi():
    base = find_data_dir()
    folder = None if base is None else base / "lucchi_epfl_hippocampus"
    if folder is None or not folder.is_dir():
        return None
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile.imread(folder / "images.tif"), tifffile.imread(folder / "mito_semantic.tif")


def normalise(x):
    return (x.astype(np.float32) / 255 - MEAN) / STD


def shaping_crops(volume, masks, n=24, size=256, seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        z = int(rng.integers(0, 32))
        r, c = (int(rng.integers(s - size + 1)) for s in volume.shape[1:])
        xs.append(normalise(volume[z, r : r + size, c : c + size]))
        ys.append(masks[z, r : r + size, c : c + size] > 0)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None]).float()


def data_shaped(model, images, masks):
    """Re-estimate BatchNorm on real crops, fit the semantic head, make PointRend pass-through.

    The same procedure as ``realistic`` in ``tests/test_quantize.py``; see the module
    docstring for what it does and does not make realistic.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # the decoders' and heads' N(0, 0.001) init would leave their BatchNorm inputs
        # below BatchNorm's eps; give them the gain of trained convs instead
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("encoder."):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=generator)
    # batch statistics in BatchNorm only: dropout stays off (it would shift the
    # variance that later layers are normalised with)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            m.train()
    with torch.no_grad():
        for batch in images.split(4):
            model(batch, 0, False)
    model.eval()
    features = []
    hook = model.semantic_head.head[1].register_forward_hook(
        lambda mod, args, out: features.append(args[0]))
    with torch.no_grad():
        for batch in images.split(4):
            model(batch, 0, False)
    hook.remove()
    f = torch.cat(features).permute(0, 2, 3, 1).reshape(-1, features[0].shape[1])
    a = torch.cat([f, torch.ones(len(f), 1)], 1).double()
    target = (F.avg_pool2d(masks, 4).reshape(-1, 1) > 0.5).double()
    positive = float(target.mean())
    weight = torch.where(target > 0, 0.5 / positive, 0.5 / (1 - positive)).sqrt()
    solution = torch.linalg.lstsq(a * weight, (8 * target - 4) * weight).solution.float()
    with torch.no_grad():
        conv = model.semantic_head.head[1]
        conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape))
        conv.bias.copy_(solution[-1])
        for head in (model.ins_center, model.ins_xy):
            conv = head.head[1]
            conv.weight.normal_(0, conv.in_channels**-0.5, generator=generator)
            conv.bias.zero_()
        predictor = model.semantic_pr.point_head.predictor
        predictor.weight.zero_()
        predictor.bias.zero_()
        predictor.weight[:, -1, 0] = 1.0
    return model


def relative_error(ref, out):
    """rms(out - ref) / std(ref)."""
    return float((out - ref).pow(2).mean().sqrt() / ref.std().clamp_min(1e-12))


def agreement(model, int8, image):
    """Mask IoU, fp32 foreground, output errors and the error after each encoder stage."""
    stages = []

    def keep(module, args, out):
        stages.append([t.dequantize() if t.is_quantized else t for t in out])

    with torch.no_grad():
        hook = model.encoder.register_forward_hook(keep)
        ref = model(image, 2, True)
        hook.remove()
        hook = int8.encoder.register_forward_hook(keep)
        out = quiet_run(int8, image)
        hook.remove()
    a, b = ref["sem_logits"] > 0, out["sem_logits"] > 0
    iou = float((a & b).sum()) / max(1.0, float((a | b).sum()))
    rel = {k: relative_error(v, out[k]) for k, v in ref.items()}
    rel["stages"] = [relative_error(r, o) for r, o in zip(*stages)]
    return iou, float(a.float().mean()), rel


# --------------------------------------------------------------------------------------
# timing


def cpu_rows(name, model, int8, size, repeat, warmup):
    x = torch.randn(1, 1, size, size)
    rows = []

    def add(variant, fn):
        seconds = median_time(fn, repeat, warmup, lambda: None)
        rows.append((name, "cpu", variant, 1, seconds))
        print(f"  cpu  {variant:<22} {seconds:8.3f} s", flush=True)

    add("fp32", lambda: model(x, 2, True))
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    add("fp32 channels_last", lambda: last(x_last, 2, True))

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x, 2, True)

    add("bf16 autocast", bf16)
    if int8 is not None:
        add("int8 (x86)", lambda: quiet_run(int8, x))
    return rows


def cuda_rows(name, model, size, repeat, warmup):
    device = torch.device("cuda")
    gpu = copy.deepcopy(model).to(device)
    rows = []

    def add(variant, fn, batch):
        seconds = median_time(fn, repeat, warmup, torch.cuda.synchronize) / batch
        rows.append((name, "cuda", variant, batch, seconds))
        print(f"  cuda {variant:<22} {seconds:8.4f} s/slice (batch {batch})", flush=True)

    x1 = torch.randn(1, 1, size, size, device=device)
    x4 = torch.randn(4, 1, size, size, device=device)

    def bf16(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return gpu(x, 2, True)

    add("fp32", lambda: gpu(x1, 2, True), 1)
    last = copy.deepcopy(gpu).to(memory_format=torch.channels_last)
    x1_last = x1.contiguous(memory_format=torch.channels_last)
    add("fp32 channels_last", lambda: last(x1_last, 2, True), 1)
    add("bf16 autocast", lambda: bf16(x1), 1)
    add("fp32", lambda: gpu(x4, 2, True), 4)
    add("bf16 autocast", lambda: bf16(x4), 4)
    torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024,
                        help="slice height and width (a multiple of 128; default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="models to run (default all)")
    parser.add_argument("--calibration-batches", type=int, default=4,
                        help="int8 calibration batches of 4 crops of 256 x 256 (default 4; "
                        "the original used 32)")
    parser.add_argument("--no-agreement", action="store_true",
                        help="skip the int8-vs-fp32 agreement on real data")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.size % 128:
        parser.error("--size must be a positive multiple of 128 (the BiFPN padding factor)")
    if args.repeat < 1 or args.warmup < 0 or args.calibration_batches < 1:
        parser.error("--repeat and --calibration-batches must be >= 1, --warmup >= 0")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"quantized engines {torch.backends.quantized.supported_engines}, "
          f"cuda {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}")
    data = load_lucchi()
    if data is None:
        print("Lucchi data not found: int8 calibrated on Gaussian noise, no agreement measured")
    else:
        volume, masks = data
        calibration = calibration_batches_from_images(
            volume[32:48], mean=MEAN, std=STD, patch_size=256,
            n_batches=args.calibration_batches, batch_size=4)
        test_slice = torch.from_numpy(normalise(volume[56])[None, None])
        shape_x, shape_y = shaping_crops(volume, masks)
    if data is None:
        generator = torch.Generator().manual_seed(0)
        calibration = [torch.randn(4, 1, 256, 256, generator=generator)
                       for _ in range(args.calibration_batches)]

    rows, agreements = [], []
    for name in args.models:
        build, description = MODELS[name]
        torch.manual_seed(0)
        model = build().eval()
        print(f"{name} ({description}, {count_parameters(model):,} parameters)", flush=True)
        if data is not None and not args.no_agreement:
            model = data_shaped(model, shape_x, shape_y)
        model = fuse_model(model, inplace=True)
        start = time.perf_counter()
        int8 = quantize_model(model, calibration, backend="x86")
        print(f"  quantized in {time.perf_counter() - start:.1f} s "
              f"({len(calibration)} calibration batches)", flush=True)
        rows += cpu_rows(name, model, int8, args.size, args.repeat, args.warmup)
        if torch.cuda.is_available():
            rows += cuda_rows(name, model, args.size, args.repeat, args.warmup)
        if data is not None and not args.no_agreement:
            agreements.append((name, *agreement(model, int8, test_slice)))
        del model, int8
        gc.collect()

    print()
    print(f"Forward time per {args.size} x {args.size} slice, model(x, 2, True), median of "
          f"{args.repeat} after {args.warmup} warm-up")
    print()
    print("| model | device | variant | batch | s / slice | speed-up vs fp32 |")
    print("|---|---|---|---:|---:|---:|")
    base = {(r[0], r[1]): r[4] for r in rows if r[2] == "fp32" and r[3] == 1}
    for model_name, device, variant, batch, seconds in rows:
        ratio = base[(model_name, device)] / seconds
        digits = 3 if device == "cpu" else 4
        print(f"| {model_name} | {device} | {variant} | {batch} | {seconds:.{digits}f} | "
              f"{ratio:.2f}x |")
    if agreements:
        print()
        print(f"int8 (x86) vs fp32 on Lucchi slice 56 (768 x 1024), calibrated on "
              f"{len(calibration)} x 4 crops of slices 32-47.")
        print("UNTRAINED weights (no trained model exists yet): random init made "
              "'data-shaped' (BatchNorm re-estimated")
        print("on Lucchi, least-squares semantic head; see the docstring). As built, the "
              "random heads give constant")
        print("logits and agreement is trivially perfect. These figures do NOT predict a "
              "trained model's agreement.")
        print()
        print("| model | mask IoU | fp32 foreground | rel. RMS error sem_logits "
              "| ctr_hmp | offsets | after stem / stages 1-4 |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for model_name, iou, fg, rel in agreements:
            stages = " / ".join(f"{e:.2f}" for e in rel["stages"])
            print(f"| {model_name} | {iou:.3f} | {fg:.1%} | {rel['sem_logits']:.3f} "
                  f"| {rel['ctr_hmp']:.3f} | {rel['offsets']:.3f} | {stages} |")
        print()
        print("The error grows block by block through the random encoder (ResNet-50 has 16 "
              "bottleneck blocks,")
        print("ResNet-18 8 basic blocks); trained networks usually keep int8 errors at a "
              "few per cent.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
