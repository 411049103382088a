"""bf16 against fp32 on the CPU: labels, scores and time per slice of the default model.

`--precision auto` picks bf16 only on CPUs with bf16 matrix units (Intel AMX,
`amx_bf16` in /proc/cpuinfo); elsewhere fp32. This script forces both on the
machine it runs on and compares them on crops of the three real data sets in
``../shared/data`` (or ``$EMPANADA_DATA_DIR``): MitoLite_v1 (the registry default),
each slice segmented as a 2D image, scored against the 2D instance ground truth
(pooled over the slices), and timed (best of ``--repeat`` warm passes per slice set,
in this process, torch threads as torch chooses).

Run: ``python benchmarks/precision_cpu.py [--slices 4] [--size 512] [--repeat 2]``.
Prints one table per data set with bf16 / fp32 ratios, and the CPU flags that
decide ``auto``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# dataset folder, a z range and a crop origin inside its held-out part (docs/models.md)
DATASETS = {
    "Lucchi FIB-SEM": ("lucchi_epfl_hippocampus", 8, (0, 768)),
    "Drosophila VNC ssTEM": ("drosophila_vnc_sstem", 2, (768, 0)),
    "FAFB ssTEM": ("fafb_mito_sstem", 0, (1302, 0)),
}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    shown = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(shown) or "no avx512 / amx"


def crop(folder, z0, origin, n, size):
    import tifffile

    from empanada_core.testing import find_data_dir

    base = find_data_dir()
    if base is None:
        raise SystemExit("../shared/data not found (set EMPANADA_DATA_DIR)")
    y0, x0 = origin
    window = (slice(z0, z0 + n), slice(y0, y0 + size), slice(x0, x0 + size))
    images = tifffile.imread(base / folder / "images.tif")[window]
    truth = tifffile.imread(base / folder / "mito_instances_2d.tif")[window]
    return images, truth


def run(seg, images, repeat):
    """Labels of each slice (as 2D images) and the best wall time per slice."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        labels = np.stack([seg.segment_image(image) for image in images])
        best = min(best, (time.perf_counter() - start) / len(images))
    return labels, best


def scores(truth, labels):
    import empanada_core as ec

    report = ec.evaluate_segmentation(truth, labels, per_slice=True)["per_slice"]["pooled"]
    return report["instance"]["0.5"]["f1"], report["panoptic"]["pq"], report["semantic_iou"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=4, help="slices per data set")
    parser.add_argument("--size", type=int, default=512, help="crop height and width")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes (best kept)")
    args = parser.parse_args(argv)

    import empanada_core as ec
    import empanada_infer as ei
    from empanada_core.testing import partition_disagreement
    from empanada_infer import cpu_has_bf16_matrix_units

    print(f"CPU flags: {cpu_flags()}; bf16 matrix units (auto -> bf16): "
          f"{cpu_has_bf16_matrix_units()}")
    segs = {p: ei.Segmenter.from_registry(None, ei.SegmentationParams(precision=p),
                                          device="cpu") for p in ("fp32", "bf16")}
    for seg in segs.values():  # warm up (TorchScript profiling runs, oneDNN kernels)
        seg.segment_image(np.full((256, 256), 128, np.uint8) + np.eye(256, dtype=np.uint8))
    header = ("| data set (crop) | precision | s / slice | objects | F1@0.5 | PQ | "
              "semantic IoU |")
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (folder, z0, origin) in DATASETS.items():
        images, truth = crop(folder, z0, origin, args.slices, args.size)
        out = {}
        for precision, seg in segs.items():
            labels, per_slice = run(seg, images, args.repeat)
            n_objects = sum(len(ec.label_ids(s)) - (0 in ec.label_ids(s)) for s in labels)
            out[precision] = (labels, per_slice, n_objects, *scores(truth, labels))
        shape = "x".join(str(n) for n in images.shape)
        for precision in ("fp32", "bf16"):
            _, t, n, f1, pq, iou = out[precision]
            print(f"| {name} ({shape}) | {precision} | {t:.3f} | {n} | {f1:.4f} | {pq:.4f} | "
                  f"{iou:.4f} |")
        a, b = out["fp32"][0], out["bf16"][0]
        fg = ((a > 0) | (b > 0)).sum()
        differ = ((a > 0) != (b > 0)).sum() / max(fg, 1)
        print(f"| | bf16 / fp32 | {out['bf16'][1] / out['fp32'][1]:.2f}x | "
              f"{out['bf16'][2] - out['fp32'][2]:+d} | {out['bf16'][3] - out['fp32'][3]:+.4f} | "
              f"{out['bf16'][4] - out['fp32'][4]:+.4f} | {out['bf16'][5] - out['fp32'][5]:+.4f} "
              f"| foreground differs {100 * differ:.2f} %, partitions "
              f"{100 * partition_disagreement(a, b):.2f} % |")


if __name__ == "__main__":
    main()
