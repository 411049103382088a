"""Blockwise inference on a Dask LocalCluster against the single-process stack run.

Segments the real Lucchi FIB-SEM volume (``../shared/data/lucchi_epfl_hippocampus``,
64 x 768 x 1024 uint8, read from a zarr copy with 64 x 256 x 256 chunks) with
the default model (MitoLite_v1, default settings) twice in the same run:

* **single**: ``Segmenter.segment_stack`` in this process (torch on all cores);
* **blockwise**: ``segment_blockwise`` on a ``distributed.LocalCluster`` of 1
  and of N worker processes (one thread each, the cores shared among them),
  for each ``--blocks`` shape (core blocks; halo ``--halo`` or the default).

For every blockwise run it prints the wall time and its ratio to the single
run (the overhead; model loading on the workers included, cluster start-up
excluded), the worker seconds per block, each worker's peak memory, and how
far the labels agree with the single run: voxel agreement up to a renaming of
ids (``1 - partition_disagreement``), F1@0.5 of both against the 3D ground
truth (``mito_instances_3d.tif``), and the number of objects of the single run
that the blockwise run splits into two ids (each covering at least 5 % of the
object and 50 voxels), with how many of them cross a block seam.

Usage::

    .venv/bin/python benchmarks/distributed.py                       # 64x384x512 blocks, 1 and 2 workers
    .venv/bin/python benchmarks/distributed.py --blocks 64,384,512 32,384,512 --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# this file is named like the `distributed` package: keep its folder off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _triple(text):
    values = [int(v) for v in text.split(",")]
    return tuple(values * 3 if len(values) == 1 else values)


def seam_splits(single, blockwise, block_size, min_fraction=0.05, min_voxels=50):
    """Objects of ``single`` split into >= 2 substantial ids of ``blockwise``; and how
    many of those cross a block seam."""
    import empanada_core as ec

    a = single.ravel().astype(np.int64)
    b = blockwise.ravel().astype(np.int64)
    fg = (a > 0) & (b > 0)
    pairs, counts = np.unique(np.stack([a[fg], b[fg]]), axis=1, return_counts=True)
    stats = ec.object_stats(single)
    size = dict(zip(stats.ids.tolist(), stats.sizes.tolist()))
    big = counts >= np.maximum(min_voxels, min_fraction * np.array([size[i] for i in pairs[0]]))
    ids, n_parts = np.unique(pairs[0][big], return_counts=True)
    split = set(ids[n_parts >= 2].tolist())
    box = {i: (lo, hi) for i, lo, hi in zip(stats.ids.tolist(), stats.bbox_min, stats.bbox_max)}
    at_seam = 0
    for i in split:
        lo, hi = box[i]
        # a seam at k * block along an axis lies inside the box when lo < k * block < hi
        if any((hi[d] - 1) // block_size[d] != lo[d] // block_size[d] for d in range(3)):
            at_seam += 1
    return len(split), at_seam


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="Lucchi folder (default ../shared/data)")
    parser.add_argument("--blocks", type=_triple, nargs="+", default=[(64, 384, 512)])
    parser.add_argument("--halo", type=_triple, default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory-check", action="store_true",
                        help="also run the blocks on a quarter of the volume (1 worker) and "
                        "compare the worker's peak memory")
    parser.add_argument("--crop", type=_triple, default=None,
                        help="use only the first Z,Y,X voxels (a quick check of the script)")
    args = parser.parse_args(argv)

    import distributed
    import tifffile
    import zarr

    import empanada_core as ec
    import empanada_infer as ei
    from empanada_core.testing import find_data_dir, partition_disagreement

    base = Path(args.data) if args.data else (find_data_dir() or Path("missing"))
    folder = base if (base / "images.tif").exists() else base / "lucchi_epfl_hippocampus"
    if not (folder / "images.tif").exists():
        sys.exit(f"Lucchi data not found under {base}")
    image = tifffile.imread(folder / "images.tif")
    truth = tifffile.imread(folder / "mito_instances_3d.tif")
    if args.crop:
        crop = tuple(slice(0, n) for n in args.crop)
        image, truth = image[crop], truth[crop]
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="empanada-bench-dist-"))
    volume = zarr.create_array(tmp / "images.zarr", shape=image.shape, dtype=image.dtype,
                               chunks=(64, 256, 256))
    volume[...] = image
    print(f"input: Lucchi {image.shape} {image.dtype} (zarr, chunks 64x256x256); "
          f"{cores} cores; model MitoLite_v1, default settings")

    params = ei.SegmentationParams()
    t0 = time.perf_counter()
    seg = ei.Segmenter.from_registry(None, params, device="cpu")
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = seg.segment_stack(volume)
    single_s = time.perf_counter() - t0
    single_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del seg
    f1 = ec.evaluate_segmentation(truth, single)["instance"]["0.5"]["f1"]
    print(f"single process: {single_s:.1f} s (+{load:.1f} s model load), peak RSS "
          f"{single_rss / 2**20:.0f} MiB, {len(np.unique(single)) - 1} objects, F1@0.5 {f1:.4f}")

    rows = []
    for n_workers in args.workers:
        threads = max(1, cores // n_workers)
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                      processes=True, dashboard_address=":0",
                                      silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            for block in args.blocks:
                out = tmp / f"out_{n_workers}_{'x'.join(map(str, block))}.zarr"
                t0 = time.perf_counter()
                result = ei.segment_blockwise(volume, out, params=params, block_size=block,
                                              halo=args.halo, client=client, device="cpu",
                                              torch_threads=threads)
                wall = time.perf_counter() - t0
                labels = np.asarray(result.output[...])
                fg_union = int(((single > 0) | (labels > 0)).sum())
                wrong = partition_disagreement(single, labels) * fg_union
                agree = 1.0 - wrong / single.size  # over all voxels
                agree_fg = 1.0 - wrong / max(fg_union, 1)  # over the foreground of either
                f1_b = ec.evaluate_segmentation(truth, labels)["instance"]["0.5"]["f1"]
                splits, at_seam = seam_splits(single, labels, result.block_size)
                per_block = np.array(result.block_seconds)
                rows.append({
                    "workers": n_workers, "block": "x".join(map(str, block)),
                    "halo": "x".join(map(str, result.halo)), "blocks": result.n_blocks,
                    "wall": wall, "ratio": wall / single_s,
                    "block_s": float(np.median(per_block)),
                    "stages": result.stage_seconds,
                    "rss": max(result.worker_peak_rss.values()) / 2**20,
                    "agree": agree, "agree_fg": agree_fg, "f1": f1_b, "df1": f1_b - f1, "splits": splits,
                    "at_seam": at_seam, "objects": len(np.unique(labels)) - 1,
                })
                print(f"  {n_workers} workers, blocks {block}: {wall:.1f} s", flush=True)

    if args.memory_check:
        # the same blocks on a quarter of the volume: a worker's peak should not change
        half = tmp / "quarter.zarr"
        quarter = zarr.create_array(half, shape=(image.shape[0], image.shape[1] // 2,
                                                 image.shape[2] // 2),
                                    dtype=image.dtype, chunks=(64, 256, 256))
        quarter[...] = image[:, : image.shape[1] // 2, : image.shape[2] // 2]
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            for vol, what in ((quarter, "quarter"), (volume, "whole")):
                res = ei.segment_blockwise(vol, tmp / f"mem_{what}.zarr", params=params,
                                           block_size=args.blocks[0], halo=args.halo,
                                           client=client, device="cpu", torch_threads=cores)
                peak = max(res.worker_peak_rss.values()) / 2**20
                print(f"memory: 1 worker, blocks {args.blocks[0]}, {what} volume "
                      f"{tuple(vol.shape)} ({res.n_blocks} blocks): worker peak {peak:.0f} MiB")

    print()
    print(f"single-process stack run: {single_s:.1f} s, F1@0.5 {f1:.4f}, "
          f"{len(np.unique(single)) - 1} objects")
    header = (f"{'workers':>7} {'block':>12} {'halo':>9} {'blocks':>6} {'wall s':>7} "
              f"{'/single':>7} {'s/block':>7} {'stitch s':>8} {'peak MiB':>8} "
              f"{'agree':>7} {'fg agr':>7} {'F1@0.5':>7} {'dF1':>7} {'split':>5} {'@seam':>5} {'objs':>5}")
    print(header)
    print("-" * len(header))
    for r in rows:
        stitch = r["stages"].get("match", 0) + r["stages"].get("stitch", 0) + \
            r["stages"].get("relabel", 0)
        print(f"{r['workers']:>7} {r['block']:>12} {r['halo']:>9} {r['blocks']:>6} "
              f"{r['wall']:>7.1f} {r['ratio']:>7.2f} {r['block_s']:>7.1f} {stitch:>8.2f} "
              f"{r['rss']:>8.0f} {r['agree']:>7.4f} {r['agree_fg']:>7.4f} {r['f1']:>7.4f} {r['df1']:>+7.4f} "
              f"{r['splits']:>5} {r['at_seam']:>5} {r['objects']:>5}")
    print("\nwall: whole blockwise call (workers load the model once each; cluster start-up "
          "excluded); s/block: median worker seconds per block; stitch s: match + stitch + "
          "relabel stages; peak MiB: largest worker peak RSS; agree: voxel agreement with "
          "the single run up to id renaming, over all voxels (fg agr: over the voxels that "
          "either run calls foreground); dF1: F1@0.5 minus the single run's; split: single-run objects split into two ids "
          "(@seam: of them, crossing a block seam)")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
