"""Benchmark empanada-proofread's edits against the naive whole-array numpy way.

Uses the real Lucchi 3D mitochondria labels (``../shared/data/lucchi_epfl_hippocampus/
mito_instances_3d.tif``, 64 x 768 x 1024, 32 objects) as uint32, and the same volume
tiled 4 x 4 in (y, x) (64 x 3072 x 4096, 512 objects, 16x the voxels). For each size it
times our operation on a numpy array and on a zarr array (chunks 16 x 128 x 128), and the
naive whole-array numpy way on the in-memory numpy array of the same size, in the same run:

Single-object edits use the object closest to the median object size and (merge, split)
its nearest neighbour.

* delete: ``labels[labels == i] = 0``
* merge: ``labels[labels == j] = i``
* split (points as markers): watershed of the object's mask over the whole volume
* dilate one label: ``binary_dilation(labels == i, ball(1)) & (labels == 0)`` over the volume
* locate (jump to label): ``regionprops(labels)`` and pick the label
* next available id: ``np.unique(labels)`` and the first gap
* count labels: ``regionprops(labels)`` (voxel counts and boxes)
* remove small labels: ``skimage.morphology.remove_small_objects``
* remove boundary labels: ``skimage.segmentation.clear_border``

For the zarr rows the naive time adds what the naive way must pay on zarr: loading the
whole array (``z[...]``) and, for edits, storing it again (``z[...] = labels``), measured
once per size. Edits are undone between repeats (untimed).
The one-time label-index sweep is reported on its own.

Usage::

    python benchmarks/proofread.py           # 1x and 16x (needs ~8 GB of RAM)
    python benchmarks/proofread.py --quick   # 1x only
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import empanada_proofread as ep
from empanada_core.testing import find_data_dir

CHUNKS = (16, 128, 128)


def best(fn, repeat, reset=None):
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if reset is not None:
            reset(out)
    return min(times)


def tile(labels, ny, nx):
    n = int(labels.max())
    out = np.zeros((labels.shape[0], labels.shape[1] * ny, labels.shape[2] * nx), np.uint32)
    for k, (ty, tx) in enumerate(np.ndindex(ny, nx)):
        block = labels.astype(np.uint32)
        block[block > 0] += k * n
        out[:, ty * labels.shape[1]:(ty + 1) * labels.shape[1],
            tx * labels.shape[2]:(tx + 1) * labels.shape[2]] = block
    return out


def to_zarr(array, folder):
    import zarr

    z = zarr.create_array(store=str(folder), shape=array.shape, chunks=CHUNKS,
                          dtype=array.dtype, fill_value=0, overwrite=True)
    for z0 in range(0, array.shape[0], CHUNKS[0]):
        z[z0:z0 + CHUNKS[0]] = array[z0:z0 + CHUNKS[0]]
    return zarr.open_array(str(folder), mode="r+")


def inner_point(labels, label_id):
    from scipy import ndimage as ndi

    box = ndi.find_objects((labels[:, :768, :1024] == label_id).astype(np.uint8))[0]
    mask = np.pad(labels[box] == label_id, 1)
    local = np.unravel_index(np.argmax(ndi.distance_transform_edt(mask)), mask.shape)
    return np.array([c - 1 + s.start for c, s in zip(local, box)])


def pick_objects(labels):
    """The object of the first tile closest to the median object size, and its nearest
    neighbour (closest bounding-box centre): what one merges when fixing a split."""
    first = labels[:, :768, :1024]
    index = ep.LabelIndex.build(first)
    ids, sizes = index.ids, index.sizes
    i = int(np.argmin(np.abs(sizes - np.median(sizes))))
    centres = (index.bbox_min + index.bbox_max) / 2
    dist = np.linalg.norm(centres - centres[i], axis=1)
    dist[i] = np.inf
    return int(ids[i]), int(ids[np.argmin(dist)])


# ---- the naive way --------------------------------------------------------------------


def naive_delete(labels, i):
    labels[labels == i] = 0


def naive_merge(labels, i, j):
    labels[labels == j] = i


def naive_split(labels, i, pts, new):
    from skimage.segmentation import watershed

    mask = labels == i
    markers = np.zeros(labels.shape, np.int32)
    markers[tuple(pts.T)] = [1, 2]
    pieces = watershed(np.zeros(labels.shape, np.uint8), markers, mask=mask)
    labels[pieces == 2] = new


def naive_dilate(labels, i):
    from scipy import ndimage as ndi
    from skimage.morphology import ball

    grow = ndi.binary_dilation(labels == i, ball(1)) & (labels == 0)
    labels[grow] = i


def naive_locate(labels, i):
    from skimage.measure import regionprops

    prop = next(p for p in regionprops(labels) if p.label == i)
    return prop.bbox


def naive_next(labels):
    ids = np.unique(labels)
    ids = ids[ids > 0]
    gaps = np.flatnonzero(ids != np.arange(1, ids.size + 1))
    return int(gaps[0] + 1) if gaps.size else int(ids.size + 1)


def naive_count(labels):
    from skimage.measure import regionprops

    return [(p.label, p.area, p.bbox) for p in regionprops(labels)]


def naive_small(labels, min_size):
    from skimage.morphology import remove_small_objects

    return remove_small_objects(labels, max_size=min_size - 1)


def naive_boundary(labels):
    from skimage.segmentation import clear_border

    return clear_border(labels)


# ---- ours ------------------------------------------------------------------------------

MIN_SIZE = 2000


def our_operations(target, i, pi, pj):
    """name -> (timed call, untimed reset) for our side on ``target``."""
    def restore(edit):
        edit.record.undo(target)

    ops = {
        "delete one label": (lambda: ep.delete_labels(target, [pi]), restore),
        "merge two labels": (lambda: ep.merge_labels(target, [pi, pj]), restore),
        "dilate one label": (lambda: ep.morph_labels(target, [i], operation="dilate"), restore),
        "locate (jump to label)": (lambda: ep.locate_label(target, i), None),
        "next available id": (lambda: ep.next_available_label(target), None),
        "count labels": (lambda: ep.count_labels(target), None),
        "remove small labels": (lambda: ep.remove_small_labels(target, MIN_SIZE), restore),
        "remove boundary labels": (lambda: ep.remove_boundary_labels(target), restore),
    }

    return ops


# ---- one volume -------------------------------------------------------------------------


def bench_volume(name, dense, zarr_arr, repeat, naive_repeat, run_naive, naive_split_ok):
    i, j = pick_objects(dense)
    pi, pj = inner_point(dense, i), inner_point(dense, j)
    rows = []

    for kind, target in (("numpy", dense), ("zarr", zarr_arr)):
        t0 = time.perf_counter()
        ep.label_index(target, rebuild=True)
        rows.append((name, kind, "label index (one sweep)", time.perf_counter() - t0, None))
        for op, (fn, reset) in our_operations(target, i, pi, pj).items():
            rows.append((name, kind, op, best(fn, repeat, reset), None))
            print(f"  {name} {kind} {op}: {rows[-1][3] * 1e3:.2f} ms", file=sys.stderr,
                  flush=True)
        merged = ep.merge_labels(target, [pi, pj])  # split the merged pair (untimed merge)
        split_time = best(lambda t=target: ep.split_label(t, [pi, pj], points_as_markers=True),
                          repeat, lambda edit, t=target: edit.record.undo(t))
        rows.append((name, kind, "split (points as markers)", split_time, None))
        merged.record.undo(target)

    if run_naive:
        # our edits were all undone, so ``dense`` is the original again; the naive edits
        # are reset from the (unchanged) zarr copy, untimed, to hold one volume in memory
        lab = dense
        new = int(lab.max()) + 1

        def undo_from(source):
            def reset(_):
                for z0 in range(0, lab.shape[0], CHUNKS[0]):
                    lab[z0:z0 + CHUNKS[0]] = source[z0:z0 + CHUNKS[0]]
            return reset

        snapshot = zarr_arr
        naive = {
            "delete one label": (lambda: naive_delete(lab, i), undo_from(snapshot)),
            "merge two labels": (lambda: naive_merge(lab, i, j), undo_from(snapshot)),
            "dilate one label": (lambda: naive_dilate(lab, i), undo_from(snapshot)),
            "locate (jump to label)": (lambda: naive_locate(lab, i), None),
            "next available id": (lambda: naive_next(lab), None),
            "count labels": (lambda: naive_count(lab), None),
            "remove small labels": (lambda: naive_small(lab, MIN_SIZE), None),
            "remove boundary labels": (lambda: naive_boundary(lab), None),
        }
        naive_times = {}
        for op, (fn, reset) in naive.items():
            naive_times[op] = best(fn, naive_repeat, reset)
            print(f"  {name} naive {op}: {naive_times[op] * 1e3:.1f} ms", file=sys.stderr,
                  flush=True)
        if naive_split_ok:
            def remerge(_):
                undo_from(snapshot)(None)
                naive_merge(lab, i, j)

            remerge(None)
            naive_times["split (points as markers)"] = best(
                lambda: naive_split(lab, i, np.array([pi, pj]), new), naive_repeat, remerge)
            undo_from(snapshot)(None)
        # the naive way on zarr also loads the whole array (and stores it after an edit)
        t0 = time.perf_counter()
        loaded = np.asarray(zarr_arr[...])
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        zarr_arr[...] = loaded
        t_write = time.perf_counter() - t0
        del loaded
        queries = ("locate (jump to label)", "next available id", "count labels")

        def naive_for(kind, op):
            t = naive_times.get(op)
            if t is None or kind == "numpy":
                return t
            return t + t_read + (0.0 if op in queries else t_write)

        rows = [(n, k, op, t, naive_for(k, op)) for n, k, op, t, _ in rows]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1x volume only")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    import tifffile

    base = find_data_dir()
    path = None if base is None else base / "lucchi_epfl_hippocampus" / "mito_instances_3d.tif"
    if path is None or not path.exists():
        sys.exit("the Lucchi labels were not found: set EMPANADA_DATA_DIR or place them in "
                 "../shared/data")
    lucchi = tifffile.imread(path).astype(np.uint32)
    i, j = pick_objects(lucchi)
    print(f"objects: {i} ({int((lucchi == i).sum())} voxels, the median size) and its "
          f"nearest neighbour {j} ({int((lucchi == j).sum())} voxels); "
          f"remove small labels: min_size {MIN_SIZE}\n")
    sizes = [("1x", 1, 1)] + ([] if args.quick else [("16x", 4, 4)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, ny, nx in sizes:
            dense = tile(lucchi, ny, nx)
            z = to_zarr(dense, Path(tmp) / f"{name}.zarr")
            rows += bench_volume(f"{name} {dense.shape}", dense, z, args.repeat,
                                 3 if name == "1x" else 1, True, name == "1x")
            del dense, z
            gc.collect()

    print("| volume | array | operation | ours (ms) | naive (ms) | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    for name, kind, op, ours, naive in rows:
        naive_s = f"{naive * 1e3:.1f}" if naive else "-"
        ratio = "-" if not naive else (f"{naive / ours:.1f}x" if naive / ours < 10
                                       else f"{naive / ours:.0f}x")
        print(f"| {name} | {kind} | {op} | {ours * 1e3:.2f} | {naive_s} | {ratio} |")
    # size independence: 16x / 1x for each of our operations
    if not args.quick:
        print("\n| array | operation | 16x / 1x time |")
        print("|---|---|---:|")
        by = {(k, op, n.split()[0]): t for n, k, op, t, _ in rows}
        for kind in ("numpy", "zarr"):
            for op in dict.fromkeys(op for _, k, op, _, _ in rows if k == kind):
                print(f"| {kind} | {op} | {by[(kind, op, '16x')] / by[(kind, op, '1x')]:.2f} |")


if __name__ == "__main__":
    main()
