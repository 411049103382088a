"""Training throughput of empanada-train: precision and memory format, the loader, architectures.

Three tables, all measured in the same run:

1. **Step modes** (MitoLite_v1's architecture): full optimisation steps
   (forward in training mode, PanopticLoss with PointRend points in fp32,
   backward, gradient clipping, an AdamW step on fp32 weights) on a fixed
   synthetic batch, after a warm-up step, as ``empanada train`` runs them:
   fp32 with contiguous tensors (the baseline, what the engine did before
   v2), fp32 channels_last, and bf16 autocast + channels_last (the default
   where the CPU has native bf16, and on GPUs). Median and minimum seconds per
   step; the ratio is the baseline's median over the row's. On a CUDA machine
   the same rows run on the GPU too.
2. **Loader**: samples/s of the training DataLoader alone (the real dataset
   reader with the v2 augmentations, on the tiles in ``--data`` or on
   synthetic tiles), against the samples/s the fastest step mode consumes.
3. **Loss curve** (``--loss-steps N``): N steps of fp32 and of bf16 from the
   same weights on the same batches; the largest relative difference of the
   loss shows bf16 trains like fp32.

``--architectures`` adds the older table of architectures (MitoNet_v1's
ResNet-50 as baseline). ``--json PATH`` also writes every figure as JSON.

Usage::

    python benchmarks/train.py --threads 2                 # CPU (+ GPU when available)
    python benchmarks/train.py --quick                     # batch 2 x 128^2, 2 steps
    python benchmarks/train.py --data mitolite_data/train --loss-steps 20 --json train.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from empanada_models import build_model, count_parameters, mitonet_v1
from empanada_train._loop import _float_outputs, make_optimizer
from empanada_train._losses import PanopticLoss

#: (row name, builder name, builder keyword arguments); the first row is the baseline.
#: "mitonet_v1" is empanada_models.mitonet_v1() (55.2 M parameters, as the original).
MITOLITE = dict(encoder="resnet18", num_classes=1, stage4_stride=16, decoder_channels=128,
                low_level_stages=[1], low_level_channels_project=[32], atrous_rates=[2, 4, 6],
                aspp_dropout=0.5, ins_decoder=True, ins_ratio=0.5)
ARCHITECTURES = [
    ("MitoNet_v1 (PDL-PR, ResNet-50)", "mitonet_v1", {}),
    ("MitoLite_v1 (PDL-PR, ResNet-18)", "PanopticDeepLabPR", MITOLITE),
    ("PDL-PR, RegNetY-800MF", "PanopticDeepLabPR",
     dict(MITOLITE, encoder="regnety_800mf")),
    ("PDL-PR, RegNetY-200MF", "PanopticDeepLabPR",
     dict(MITOLITE, encoder="regnety_200mf", decoder_channels=64)),
    ("BiFPN-PR, RegNetY-800MF", "PanopticBiFPNPR",
     dict(encoder="regnety_800mf", num_classes=1)),
]
#: (row name, precision, channels_last); the first row is the baseline.
STEP_MODES = [
    ("fp32, contiguous (baseline)", "fp32", False),
    ("fp32, channels_last", "fp32", True),
    ("bf16 autocast, channels_last", "bf16", True),
]
#: The v2 training augmentations (configs/train_mitolite_v2.yaml).
V2_AUGMENTATIONS = dict(scale_range=(0.5, 2.0), rotate_limit=180.0, brightness=0.3,
                        contrast=0.3, invert_p=0.2, blur_p=0.2, noise_p=0.2, gamma=0.4,
                        artefact_p=0.2, scale_p=0.6)


def synthetic_batch(batch, patch, device, seed=0):
    """A batch of images and targets with a disc as object."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, patch, patch, generator=g)
    yy, xx = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    sem = ((yy - patch // 2) ** 2 + (xx - patch // 3) ** 2 < (patch // 6) ** 2).long()
    sem = sem.expand(batch, -1, -1).clone()
    heat = torch.exp(-(((yy - patch // 2) ** 2 + (xx - patch // 3) ** 2) / 72.0))
    target = {"sem": sem, "ctr_hmp": heat.expand(batch, 1, -1, -1).clone(),
              "offsets": torch.zeros(batch, 2, patch, patch)}
    return x.to(device), {k: v.to(device) for k, v in target.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model, device, precision, channels_last):
    """One training step as the engine runs it; returns ``step(x, target) -> loss``."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.1)
    criterion = PanopticLoss()
    amp = precision == "bf16"

    def step(x, target):
        x = x.contiguous(memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x, 2, True)
        loss, parts = criterion(_float_outputs(out), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return parts["total_loss"]
    return step


def time_mode(precision, channels_last, *, batch, patch, device, steps, arch="PanopticDeepLabPR",
              kwargs=MITOLITE):
    """Median and minimum seconds per training step of one mode."""
    torch.manual_seed(0)
    model = mitonet_v1() if arch == "mitonet_v1" else build_model(arch, **kwargs)
    n_params = count_parameters(model)
    step = make_step(model, device, precision, channels_last)
    x, target = synthetic_batch(batch, patch, device)
    step(x, target)  # warm-up (oneDNN primitive creation, cuDNN autotuning)
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step(x, target)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), n_params


def loss_curve(steps, *, batch, patch, device, seed=0):
    """Losses of ``steps`` fp32 and bf16 steps from the same weights on the same batches."""
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(seed)
        model = build_model("PanopticDeepLabPR", **MITOLITE)
        step = make_step(model, device, precision, True)
        losses = []
        for i in range(steps):
            torch.manual_seed(seed + 1000 + i)  # same PointRend points in both runs
            x, target = synthetic_batch(batch, patch, device, seed=i)
            losses.append(float(step(x, target)))
        curves[precision] = losses
    fp32, bf16 = np.array(curves["fp32"]), np.array(curves["bf16"])
    return {"fp32": curves["fp32"], "bf16": curves["bf16"],
            "max_rel_diff": float(np.max(np.abs(bf16 - fp32) / np.abs(fp32))),
            "first": [float(fp32[0]), float(bf16[0])], "last": [float(fp32[-1]), float(bf16[-1])]}


def _synthetic_tiles(folder, n=12, size=512):
    """Tiles of dark discs on a noisy background, in the empanada dataset layout."""
    import tifffile

    rng = np.random.default_rng(0)
    for i in range(n):
        yy, xx = np.mgrid[:size, :size]
        mask = np.zeros((size, size), np.uint16)
        for k in range(1, 15):
            cy, cx, r = rng.integers(20, size - 20, 2).tolist() + [int(rng.integers(8, 25))]
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        image = np.clip(170 - 70 * (mask > 0) + rng.normal(0, 12, mask.shape), 0, 255)
        for sub, arr in (("images", image.astype(np.uint8)), ("masks", mask)):
            (folder / "synthetic" / sub).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(folder / "synthetic" / sub / f"tile{i:02d}.tiff", arr)
    return folder


def loader_rate(data, *, batch, patch, workers, batches):
    """Samples/s of the training DataLoader alone (reading, augmenting, targets)."""
    from empanada_train import SampleStream, SingleClassInstanceDataset, load_dataset
    from empanada_train._augment import default_train_augmentations

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(data) if data else _synthetic_tiles(Path(tmp))
        items = load_dataset(folder)
        dataset = SingleClassInstanceDataset(
            items, default_train_augmentations(patch, **V2_AUGMENTATIONS), weight_gamma=1.0)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=SampleStream(dataset, batch, seed=0, stop=batches + 1),
            num_workers=workers)
        it = iter(loader)
        next(it)  # worker start-up
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        seconds = time.perf_counter() - t0
        del it
    return batch * batches / seconds, "synthetic tiles" if not data else str(data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, patch 128, 2 steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per mode (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--data", default=None,
                        help="a training folder (empanada layout) for the loader row")
    parser.add_argument("--workers", type=int, default=1, help="loader workers")
    parser.add_argument("--loader-batches", type=int, default=4)
    parser.add_argument("--loss-steps", type=int, default=0,
                        help="also compare the fp32 and bf16 loss over N steps")
    parser.add_argument("--architectures", action="store_true",
                        help="also time every architecture (fp32 contiguous vs channels_last)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.patch, args.steps = 2, 128, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    report = {"batch": args.batch, "patch": args.patch, "steps": args.steps,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "devices": {}}
    print(f"batch {args.batch} x {args.patch}^2, median of {args.steps} timed steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        entry = report["devices"][device.type] = {"name": name, "modes": []}
        print(f"\n{name}: MitoLite_v1 architecture, full training steps")
        print(f"{'mode':32s} {'s/step':>8s} {'min':>8s} {'img/s':>7s} {'vs fp32 contiguous':>19s}")
        base = None
        for label, precision, channels_last in STEP_MODES:
            if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                continue
            med, low, _ = time_mode(precision, channels_last, batch=args.batch,
                                    patch=args.patch, device=device, steps=args.steps)
            base = base or med
            entry["modes"].append({"mode": label, "precision": precision,
                                   "channels_last": channels_last, "median_s": med,
                                   "min_s": low, "speedup": base / med})
            print(f"{label:32s} {med:8.3f} {low:8.3f} {args.batch / med:7.1f} "
                  f"{base / med:18.2f}x", flush=True)
        fastest = min(m["median_s"] for m in entry["modes"])
        if device.type == "cpu":
            rate, source = loader_rate(args.data, batch=args.batch, patch=args.patch,
                                       workers=args.workers, batches=args.loader_batches)
            need = args.batch / fastest
            entry["loader"] = {"samples_per_s": rate, "step_samples_per_s": need,
                               "workers": args.workers, "source": source}
            print(f"\nloader alone ({source}, {args.workers} worker(s), v2 augmentations): "
                  f"{rate:.1f} samples/s; the fastest step consumes {need:.1f} samples/s "
                  f"({rate / need:.1f}x headroom)")
        if args.loss_steps:
            curve = loss_curve(args.loss_steps, batch=args.batch, patch=args.patch, device=device)
            entry["loss_curve"] = curve
            print(f"\nloss over {args.loss_steps} steps, fp32 vs bf16 (channels_last, same "
                  f"weights and batches): first {curve['first'][0]:.4f} / "
                  f"{curve['first'][1]:.4f}, last {curve['last'][0]:.4f} / "
                  f"{curve['last'][1]:.4f}, largest relative difference "
                  f"{curve['max_rel_diff']:.3%}")
        if args.architectures:
            print(f"\n{name}: architectures, fp32 contiguous / channels_last")
            print(f"{'architecture':34s} {'params':>8s} {'s/iter':>8s} {'CL s/iter':>10s} "
                  f"{'vs base':>8s}")
            arch_base = None
            entry["architectures"] = []
            for label, arch, kwargs in ARCHITECTURES:
                sec, _, n = time_mode("fp32", False, batch=args.batch, patch=args.patch,
                                      device=device, steps=args.steps, arch=arch, kwargs=kwargs)
                cl, _, _ = time_mode("fp32", True, batch=args.batch, patch=args.patch,
                                     device=device, steps=args.steps, arch=arch, kwargs=kwargs)
                arch_base = arch_base or sec
                entry["architectures"].append({"architecture": label, "params": n,
                                               "contiguous_s": sec, "channels_last_s": cl})
                print(f"{label:34s} {n / 1e6:7.1f}M {sec:8.3f} {cl:10.3f} "
                      f"{arch_base / sec:7.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
