"""Training throughput of empanada-train: iterations per second per architecture.

Each row times full optimisation steps (forward in training mode, the
PanopticLoss with PointRend points, backward, gradient clipping, an AdamW
step) on a fixed synthetic batch, after warm-up steps, on CPU and, when one is
present, on a CUDA GPU (bf16 autocast, as ``empanada train`` uses there). The
data loader is left out on purpose: it runs in worker processes on a GPU and is
not the bottleneck there. The baseline row, measured in the same run, is
MitoNet_v1's architecture (Panoptic-DeepLab + PointRend on ResNet-50); the
ratio column is its time per iteration over the row's.

Usage::

    python benchmarks/train.py                       # CPU (+ GPU when available)
    python benchmarks/train.py --quick               # smaller batch, fewer steps
    python benchmarks/train.py --threads 2 --batch 8 --patch 256
"""

from __future__ import annotations

import argparse
import time

import torch

from empanada_models import build_model, count_parameters, mitonet_v1
from empanada_train._loop import make_optimizer
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


def synthetic_batch(batch, patch, device):
    """A batch of images and targets with a few discs as objects."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, patch, patch, generator=g)
    yy, xx = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    sem = ((yy - patch // 2) ** 2 + (xx - patch // 3) ** 2 < (patch // 6) ** 2).long()
    sem = sem.expand(batch, -1, -1).clone()
    heat = torch.exp(-(((yy - patch // 2) ** 2 + (xx - patch // 3) ** 2) / 72.0))
    target = {"sem": sem, "ctr_hmp": heat.expand(batch, 1, -1, -1).clone(),
              "offsets": torch.zeros(batch, 2, patch, patch)}
    return x.to(device), {k: v.to(device) for k, v in target.items()}


def time_steps(arch, kwargs, *, batch, patch, device, steps, warmup):
    model = mitonet_v1() if arch == "mitonet_v1" else build_model(arch, **kwargs)
    model = model.to(device).train()
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.1)
    criterion = PanopticLoss()
    x, target = synthetic_batch(batch, patch, device)
    amp = device.type == "cuda"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x, 2, True)
        loss, _ = criterion(out, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, count_parameters(model)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, patch 128, 2 steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--only", nargs="*", default=None,
                        help="row numbers to run (0 = baseline, always run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.patch, args.steps = 2, 128, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows = ARCHITECTURES
    if args.only is not None:
        keep = {0, *map(int, args.only)}
        rows = [r for i, r in enumerate(ARCHITECTURES) if i in keep]
    print(f"batch {args.batch} x {args.patch}^2, {args.steps} timed steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        print(f"\n{name}")
        print(f"{'architecture':34s} {'params':>8s} {'s/iter':>8s} {'iter/s':>8s} "
              f"{'img/s':>7s} {'vs base':>8s}")
        base = None
        for label, arch, kwargs in rows:
            sec, n = time_steps(arch, kwargs, batch=args.batch, patch=args.patch,
                                device=device, steps=args.steps, warmup=1)
            base = base or sec
            print(f"{label:34s} {n / 1e6:7.1f}M {sec:8.3f} {1 / sec:8.2f} "
                  f"{args.batch / sec:7.1f} {base / sec:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
