"""Benchmark empanada-core's postprocessing, against the original when it is importable.

Times three stages on synthetic inputs of realistic size (``benchmarks/_synthetic.py``):

* 2D postprocessing: 2048 x 2048 network outputs, about 200 objects;
* stack assembly: 100 slices of 1024 x 1024, about 50 objects each (75 3D objects);
* ortho-plane consensus: three 256^3 instance volumes, about 100 objects each;

and the peak memory of stack assembly for growing stack lengths. When
``empanada-napari==1.2.4`` is importable (a throwaway virtualenv, see
``benchmarks/README.md``) it runs the original on the same inputs, prints the
speed-up and checks that the label images are equal up to a renaming of ids.

Usage::

    python benchmarks/core.py            # full sizes
    python benchmarks/core.py --quick    # small sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _original  # noqa: E402
import _synthetic  # noqa: E402

import empanada_core as ec  # noqa: E402
from empanada_core.testing import partition_disagreement  # noqa: E402

DIV = 1000


def best_time(fn, repeat):
    """Best wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def stage_2d(size, n_objects, repeat):
    net = _synthetic.make_network_outputs_2d(size=size, n_objects=n_objects, seed=0)
    kw = dict(thing_list=(1,), label_divisor=DIV, confidence_thr=0.5, center_thr=0.1,
              nms_kernel=3, stuff_area=64)
    ours_t, ours = best_time(
        lambda: ec.panoptic_postprocess(net.sem_prob, net.ctr_hmp, net.offsets, center_stride=4,
                                        **kw),
        repeat,
    )
    row = {"stage": f"2D postprocess {size}^2", "objects": len(np.unique(ours)) - 1,
           "ours": ours_t}
    if _original.available():
        orig_t, orig = best_time(
            lambda: _original.original_postprocess_2d(net.sem_prob, net.ctr_hmp, net.offsets, **kw),
            repeat,
        )
        row.update(original=orig_t, disagreement=partition_disagreement(ours, orig))
    return row


def stage_stack(n_slices, size, n_objects, repeat):
    stack = _synthetic.make_panoptic_stack(n_slices=n_slices, size=size, n_objects=n_objects,
                                           label_divisor=DIV, seed=0)
    shape = (n_slices, size, size)
    kw = dict(label_divisor=DIV, thing_list=(1,), min_size=500, min_extent=4)
    ours_t, ours = best_time(lambda: ec.assemble_stack(stack.slices, shape=shape, **kw), repeat)
    per_slice = np.mean([len(np.unique(s)) - 1 for s in stack.slices])
    row = {"stage": f"stack {n_slices}x{size}^2, {per_slice:.0f}/slice",
           "objects": len(np.unique(ours)) - 1,
           "ours": ours_t}
    if _original.available():
        orig_t, orig = best_time(
            lambda: _original.original_assemble_stack(stack.slices, shape=shape, **kw)[1], repeat
        )
        row.update(original=orig_t, disagreement=partition_disagreement(ours, orig))
    return row


def stage_consensus(size, n_objects, repeat):
    views = _synthetic.make_ortho_views(size=size, n_objects=n_objects, seed=0)
    kw = dict(vote_thr=2, cluster_iou_thr=0.75, allow_one_view=False)
    ours_t, ours = best_time(lambda: ec.ortho_consensus(views.xy, views.xz, views.yz, **kw), repeat)
    fg = np.mean(views.xy > 0)
    row = {"stage": f"ortho {size}^3, {100 * fg:.0f}% fg", "objects": len(np.unique(ours)) - 1,
           "ours": ours_t}
    if _original.available():
        orig_t, orig = best_time(
            lambda: _original.original_ortho_consensus(views.xy, views.xz, views.yz, **kw), repeat
        )
        row.update(original=orig_t, disagreement=partition_disagreement(ours, orig))
    return row


def stack_memory(lengths, size, n_objects):
    """Peak memory of stack assembly beyond its input slices and output array."""
    rows = []
    for n in lengths:
        stack = _synthetic.make_panoptic_stack(n_slices=n, size=size, n_objects=n_objects,
                                               label_divisor=DIV, seed=0)
        out = np.zeros((n, size, size), np.uint32)
        gc.collect()
        tracemalloc.start()
        ec.assemble_stack(stack.slices, out=out, label_divisor=DIV, min_size=500, min_extent=4)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append((n, peak / 2**20, out.nbytes / 2**20))
    return rows


def print_table(rows):
    header = f"{'stage':32s} {'objects':>8s} {'ours (s)':>10s} {'original (s)':>13s} " \
             f"{'speed-up':>9s} {'differ':>8s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        orig = r.get("original")
        line = f"{r['stage']:32s} {r['objects']:8d} {r['ours']:10.3f} "
        if orig is None:
            line += f"{'-':>13s} {'-':>9s} {'-':>8s}"
        else:
            line += f"{orig:13.3f} {orig / r['ours']:8.1f}x {100 * r['disagreement']:7.3f}%"
        print(line)
    print("differ: share of foreground voxels where the two partitions disagree "
          "(0% = identical up to renaming ids)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    parser.add_argument("--skip-original", action="store_true", help="do not run the original")
    parser.add_argument("--stages", default="2d,stack,ortho,memory",
                        help="comma-separated subset of 2d,stack,ortho,memory (default all)")
    args = parser.parse_args(argv)
    stages = set(args.stages.split(","))
    if args.skip_original:
        _original.available = lambda: False

    if args.quick:
        sizes = dict(d2=[(512, 40)], stack=[(20, 256, 15)], ortho=[(96, 20)],
                     mem=((10, 20, 40), 256, 15))
    else:
        # the sizes, then denser scenes (more objects per slice / volume)
        sizes = dict(d2=[(2048, 200), (2048, 600)], stack=[(100, 1024, 75), (100, 1024, 300)],
                     ortho=[(256, 100), (256, 400)], mem=((25, 50, 100), 1024, 75))
    print(f"empanada-core {ec.__version__}; original importable: {_original.available()}; "
          f"numpy {np.__version__}")
    rows = [stage_2d(*a, args.repeat) for a in sizes["d2"]] if "2d" in stages else []
    rows += [stage_stack(*a, args.repeat) for a in sizes["stack"]] if "stack" in stages else []
    rows += [stage_consensus(*a, args.repeat) for a in sizes["ortho"]] if "ortho" in stages else []
    print()
    print_table(rows)
    print()
    if "memory" not in stages:
        return
    lengths, size, n_obj = sizes["mem"]
    print(f"stack assembly peak memory beyond the output, {size}^2 slices:")
    print(f"{'slices':>8s} {'peak (MiB)':>11s} {'output (MiB)':>13s}")
    for n, peak, out in stack_memory(lengths, size, n_obj):
        print(f"{n:8d} {peak:11.1f} {out:13.1f}")


if __name__ == "__main__":
    main()
