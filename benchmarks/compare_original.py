#!/usr/bin/env python
"""Run the ORIGINAL empanada postprocessing on reference inputs and save its outputs.

Run with the interpreter of the comparison venv (see benchmarks/README.md):

    /work/orig-venv/bin/python benchmarks/compare_original.py [--out PATH] [--full]

Small synthetic cases (2D 512x512, stack 20 x 256 x 256, ortho 96^3, median
queue) always run; real-data cases run when /work/shared/data exists (or
--data DIR) unless --no-real. ``--full`` additionally times the original on the
full-size inputs (2D 2048^2 ~200 objects, stack 100 x 1024^2 ~50 objects per slice,
ortho 256^3 ~100 objects, median over 100 slices of 1024^2); ``--save-full``
also stores those outputs (large).

Output: one compressed .npz (default /tmp/original_outputs.npz). Keys are
``<case>__<name>``; ``meta`` holds a JSON string with, per case, the kind, the
generator call that rebuilds its inputs and the parameters passed to the
original, the original's wall time, and summaries. Arrays per kind:

* ``pp2d``:   sem_prob, ctr_hmp, offsets (inputs; omitted for real data), gt, out
* ``stack``:  slices (N, h, w) int32 (omitted for real data), gt (synthetic only), out
* ``ortho``:  xy, xz, yz, gt (synthetic only), out
* ``median``: probs (N, C, H, W), out (M, C, H, W) -- M may be < N (original quirk)

This script needs only numpy and the original; it does not import empanada_core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _synthetic as syn  # noqa: E402
from _compare import same_partition  # noqa: E402
from _original import (  # noqa: E402
    available,
    original_assemble_stack,
    original_median_stack,
    original_ortho_consensus,
    original_postprocess_2d,
)

DEFAULT_DATA = "/work/shared/data"


def n_ids(a):
    u = np.unique(a)
    return int((u != 0).sum())


class Recorder:
    def __init__(self):
        self.arrays = {}
        self.meta = {}

    def add(self, case, meta, **arrays):
        self.meta[case] = meta
        for k, v in arrays.items():
            if v is not None:
                self.arrays[f"{case}__{k}"] = np.asarray(v)

    def save(self, path):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        np.savez_compressed(path, meta=np.array(json.dumps(self.meta, indent=1)), **self.arrays)


REPEAT = 1  # set by --repeat; timings report the minimum over repeats
LAST_TIMES: list = []


def timed(fn, *args, **kwargs):
    LAST_TIMES.clear()
    for _ in range(max(1, REPEAT)):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        LAST_TIMES.append(round(time.perf_counter() - t0, 3))
    return out, min(LAST_TIMES)


def report(case, meta):
    if len(LAST_TIMES) > 1:
        meta["all_seconds"] = list(LAST_TIMES)
    keys = [
        k
        for k in ("seconds", "all_seconds", "n_gt", "n_out", "n_in", "equal_gt", "disagree_gt")
        if k in meta
    ]
    print(f"{case:28s} " + "  ".join(f"{k}={meta[k]}" for k in keys), flush=True)


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------


def case_pp2d(
    rec,
    case,
    gen_kwargs,
    pp_kwargs,
    outputs=None,
    save_inputs=True,
    gen_name="make_network_outputs_2d",
):
    if outputs is None:
        outputs = syn.make_network_outputs_2d(**gen_kwargs)
    out, dt = timed(
        original_postprocess_2d, outputs.sem_prob, outputs.ctr_hmp, outputs.offsets, **pp_kwargs
    )
    gt = outputs.gt
    things = [int(c) for c in pp_kwargs.get("thing_list", (1,))]
    div = int(pp_kwargs.get("label_divisor", 1000))
    thing_out = np.where(np.isin(out // div, things), out, 0)  # drop stuff ids
    eq, dis = same_partition(thing_out, gt)
    meta = dict(
        kind="pp2d",
        generator=gen_name,
        gen_kwargs=gen_kwargs,
        params=pp_kwargs,
        seconds=round(dt, 3),
        n_gt=n_ids(gt),
        n_out=n_ids(out),
        out_ids=len(np.unique(out)),
        equal_gt=eq,
        disagree_gt=round(dis, 6),
    )
    arrays = dict(gt=gt, out=out)
    if save_inputs:
        arrays.update(sem_prob=outputs.sem_prob, ctr_hmp=outputs.ctr_hmp, offsets=outputs.offsets)
    rec.add(case, meta, **arrays)
    report(case, meta)
    return out


def multiclass_outputs(base):
    """4-channel probabilities from a 1-channel case: bg, thing 1 (odd ids),
    thing 2 (even ids), stuff 3 (a band along the left border, 24 px wide)."""
    p = base.sem_prob[0]
    gt = base.gt
    H, W = gt.shape
    stuff = np.zeros((H, W), bool)
    stuff[:, :24] = True
    stuff &= gt == 0
    odd = (gt % 2 == 1) & (gt > 0)
    even = (gt % 2 == 0) & (gt > 0)
    probs = np.zeros((4, H, W), np.float32)
    probs[1] = np.where(odd, p, 0.02)
    probs[2] = np.where(even, p, 0.02)
    probs[3] = np.where(stuff, 0.8, 0.02)
    probs[0] = np.clip(1.0 - probs[1:].sum(0), 0.0, 1.0)
    return syn.NetworkOutputs2D(probs, base.ctr_hmp, base.offsets, gt, base.centres)


def case_stack(rec, case, slices, shape, params, gt=None, gen=None, save_slices=True):
    vols, dt = timed(original_assemble_stack, slices, shape=shape, **params)
    out = vols[params.get("thing_list", (1,))[0]]
    meta = dict(
        kind="stack",
        generator=gen,
        params=_jsonable(params),
        shape=list(shape),
        seconds=round(dt, 3),
        n_in=int(max(n_ids(s) for s in slices)),
        n_out=n_ids(out),
    )
    if gt is not None and tuple(gt.shape) == tuple(out.shape):
        eq, dis = same_partition(out, gt)
        meta.update(n_gt=n_ids(gt), equal_gt=eq, disagree_gt=round(dis, 6))
    rec.add(case, meta, slices=np.stack(slices) if save_slices else None, gt=gt, out=out)
    report(case, meta)
    return out


def case_ortho(rec, case, views, params, gen=None, save_inputs=True):
    out, dt = timed(original_ortho_consensus, views.xy, views.xz, views.yz, **params)
    eq, dis = same_partition(out, views.gt)
    meta = dict(
        kind="ortho",
        generator=gen,
        params=params,
        seconds=round(dt, 3),
        n_in=[n_ids(views.xy), n_ids(views.xz), n_ids(views.yz)],
        n_gt=n_ids(views.gt),
        n_out=n_ids(out),
        equal_gt=eq,
        disagree_gt=round(dis, 6),
    )
    arrays = dict(out=out)
    if save_inputs:
        arrays.update(xy=views.xy, xz=views.xz, yz=views.yz, gt=views.gt)
    rec.add(case, meta, **arrays)
    report(case, meta)
    return out


def case_median(rec, case, probs, size, gen=None, save=True):
    out, dt = timed(original_median_stack, probs, size)
    meta = dict(
        kind="median",
        generator=gen,
        params=dict(size=size),
        seconds=round(dt, 3),
        n_in=len(probs),
        n_out=len(out),
    )
    rec.add(
        case,
        meta,
        probs=np.stack(probs) if save else None,
        out=np.stack(out) if (save and out) else None,
    )
    report(case, meta)
    return out


def _jsonable(d):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------


def run_small(rec):
    print("== small synthetic cases ==")
    g = dict(size=512, n_objects=40, seed=0, coarse=True)
    case_pp2d(rec, "pp2d_coarse", g, dict(coarse_boundaries=True))
    g = dict(size=512, n_objects=40, seed=0, coarse=False)
    case_pp2d(rec, "pp2d_fine", g, dict(coarse_boundaries=False))
    g = dict(size=512, n_objects=40, seed=1, coarse=True, upsampling=2)
    case_pp2d(rec, "pp2d_up2", g, dict(coarse_boundaries=True, upsampling=2))
    g = dict(size=512, n_objects=40, seed=2, coarse=True)
    case_pp2d(
        rec,
        "pp2d_kernel7_conf03",
        g,
        dict(coarse_boundaries=True, nms_kernel=7, confidence_thr=0.3, label_divisor=10000),
    )
    g = dict(size=512, n_objects=40, seed=3, coarse=True)
    case_pp2d(
        rec, "pp2d_no_force_connected", g, dict(coarse_boundaries=True, force_connected=False)
    )
    g = dict(size=512, n_objects=40, seed=4, coarse=True)
    mc = multiclass_outputs(syn.make_network_outputs_2d(**g))
    case_pp2d(
        rec,
        "pp2d_multiclass",
        g,
        dict(thing_list=(1, 2), coarse_boundaries=True),
        outputs=mc,
        gen_name="make_network_outputs_2d+multiclass_outputs",
    )

    gk = dict(n_slices=20, size=256, n_objects=12, seed=0)
    st = syn.make_panoptic_stack(**gk)
    gen = dict(name="make_panoptic_stack", kwargs=gk)
    case_stack(
        rec,
        "stack",
        st.slices,
        st.gt.shape,
        dict(axis=0, min_size=500, min_extent=4),
        gt=st.gt,
        gen=gen,
    )
    case_stack(
        rec,
        "stack_nofilter",
        st.slices,
        st.gt.shape,
        dict(axis=0, min_size=0, min_extent=0),
        gt=st.gt,
        gen=gen,
    )
    n, s = len(st.slices), st.slices[0].shape[0]
    # the same slices read as xz / yz planes (exercises the axis mapping of the tracker)
    case_stack(
        rec,
        "stack_xz",
        st.slices,
        (s, n, s),
        dict(axis=1, min_size=0, min_extent=0),
        gen=gen,
        save_slices=False,
    )
    case_stack(
        rec,
        "stack_yz",
        st.slices,
        (s, s, n),
        dict(axis=2, min_size=0, min_extent=0),
        gen=gen,
        save_slices=False,
    )

    # full-width band: its per-slice RLE is one run wrapping across image rows, which
    # the original's xz tracker maps to the wrong voxels (known bug, kept on purpose)
    band = np.zeros((16, 16), np.int32)
    band[4:8, :] = 1001
    band[10:12, 3:9] = 1002
    wrap = [band.copy() for _ in range(6)]
    gen = "16x16 slices: rows 4-7 full width = 1001, rows 10-11 cols 3-8 = 1002; x6"
    case_stack(
        rec, "stack_xz_wrap", wrap, (16, 6, 16), dict(axis=1, min_size=0, min_extent=0), gen=gen
    )
    case_stack(
        rec, "stack_yz_wrap", wrap, (16, 16, 6), dict(axis=2, min_size=0, min_extent=0), gen=gen
    )

    gk = dict(size=96, n_objects=15, seed=0)
    ov = syn.make_ortho_views(**gk)
    gen = dict(name="make_ortho_views", kwargs=gk)
    case_ortho(rec, "ortho", ov, dict(), gen=gen)
    case_ortho(rec, "ortho_vote1", ov, dict(vote_thr=1), gen=gen, save_inputs=False)
    case_ortho(rec, "ortho_vote3", ov, dict(vote_thr=3), gen=gen, save_inputs=False)
    case_ortho(
        rec,
        "ortho_vote1_oneview",
        ov,
        dict(vote_thr=1, allow_one_view=True),
        gen=gen,
        save_inputs=False,
    )
    case_ortho(
        rec, "ortho_filtered", ov, dict(min_size=500, min_extent=5), gen=gen, save_inputs=False
    )

    rng = np.random.default_rng(0)
    probs = [rng.random((1, 16, 16)).astype(np.float32) for _ in range(9)]
    gen = "np.random.default_rng(0).random((1,16,16)) x 9 (float32)"
    case_median(rec, "median_k3", probs, 3, gen=gen)
    case_median(rec, "median_k5", probs, 5, gen=gen)
    case_median(rec, "median_k5_n4", probs[:4], 5, gen=gen + ", first 4")
    case_median(rec, "median_k3_n2", probs[:2], 3, gen=gen + ", first 2")
    series = [np.full((1, 1, 1), v, np.float32) for v in (0, 9, 0, 9, 0, 9, 0, 0, 0)]
    case_median(rec, "median_series", series, 3, gen="0,9,0,9,0,9,0,0,0")


def run_real(rec, data):
    import tifffile

    print("== real-data cases ==")
    fa = os.path.join(data, "fafb_mito_sstem", "mito_instances_2d.tif")
    if os.path.exists(fa):
        lab = tifffile.imread(fa)[0]
        outs = syn.network_outputs_from_labels(lab, coarse=True, seed=0)
        gk = dict(labels=f"{fa}[0]", coarse=True, seed=0)
        case_pp2d(
            rec,
            "real_pp2d_fafb0",
            gk,
            dict(coarse_boundaries=True),
            outputs=outs,
            save_inputs=False,
            gen_name="network_outputs_from_labels",
        )
    for name, sub in (
        ("drosophila", "drosophila_vnc_sstem"),
        ("lucchi", "lucchi_epfl_hippocampus"),
    ):
        p2 = os.path.join(data, sub, "mito_instances_2d.tif")
        p3 = os.path.join(data, sub, "mito_instances_3d.tif")
        if not os.path.exists(p2):
            continue
        lab2 = tifffile.imread(p2).astype(np.int32)
        slices = [np.where(s > 0, 1000 + s, 0).astype(np.int32) for s in lab2]
        gt = tifffile.imread(p3).astype(np.int32) if os.path.exists(p3) else None
        gen = dict(name="1000 + mito_instances_2d (0 stays 0)", path=p2)
        case_stack(
            rec,
            f"real_stack_{name}",
            slices,
            lab2.shape,
            dict(axis=0, min_size=500, min_extent=4),
            gt=gt,
            gen=gen,
            save_slices=False,
        )
    p3 = os.path.join(data, "lucchi_epfl_hippocampus", "mito_instances_3d.tif")
    if os.path.exists(p3):
        gt = tifffile.imread(p3)
        ov = syn.perturb_views_from_labels(gt, seed=0)
        gen = dict(name="perturb_views_from_labels", path=p3, seed=0)
        case_ortho(rec, "real_ortho_lucchi", ov, dict(), gen=gen, save_inputs=False)
    p = os.path.join(data, "drosophila_vnc_sstem", "mito_semantic.tif")
    if os.path.exists(p):
        sem = tifffile.imread(p)[:, :256, :256].astype(np.float32)
        probs = [(0.05 + 0.85 * s)[None] for s in sem]
        case_median(
            rec,
            "real_median_drosophila_k5",
            probs,
            5,
            gen=f"0.05 + 0.85 * {p}[:, :256, :256]",
            save=False,
        )


def run_full(rec, save):
    print("== full-size timings ==")
    # warm up numba-jitted functions of the original so the timings exclude compilation
    w = syn.make_panoptic_stack(n_slices=6, size=64, n_objects=4, seed=0)
    original_assemble_stack(w.slices, shape=w.gt.shape, min_size=0, min_extent=0)
    w = syn.make_ortho_views(size=48, n_objects=4, seed=0)
    original_ortho_consensus(w.xy, w.xz, w.yz)
    timings = {}
    for coarse in (True, False):
        g = dict(size=2048, n_objects=200, seed=0, coarse=coarse)
        o = syn.make_network_outputs_2d(**g)
        case = f"full_pp2d_{'coarse' if coarse else 'fine'}"
        case_pp2d(rec, case, g, dict(coarse_boundaries=coarse), outputs=o, save_inputs=False)
        timings[case] = rec.meta[case]["seconds"]
        if not save:
            rec.arrays.pop(f"{case}__out"), rec.arrays.pop(f"{case}__gt")

    # 75 3D objects give ~50 2D objects per slice (not every object spans the stack)
    gk = dict(n_slices=100, size=1024, n_objects=75, seed=0)
    st = syn.make_panoptic_stack(**gk)
    print("   mean 2D objects per slice:", np.mean([n_ids(s) for s in st.slices]), flush=True)
    case_stack(
        rec,
        "full_stack",
        st.slices,
        st.gt.shape,
        dict(axis=0, min_size=500, min_extent=4),
        gt=st.gt,
        gen=dict(name="make_panoptic_stack", kwargs=gk),
        save_slices=False,
    )
    timings["full_stack"] = rec.meta["full_stack"]["seconds"]
    if not save:
        rec.arrays.pop("full_stack__out"), rec.arrays.pop("full_stack__gt")
    del st

    gk = dict(size=256, n_objects=100, seed=0)
    ov = syn.make_ortho_views(**gk)
    case_ortho(
        rec,
        "full_ortho",
        ov,
        dict(),
        gen=dict(name="make_ortho_views", kwargs=gk),
        save_inputs=False,
    )
    timings["full_ortho"] = rec.meta["full_ortho"]["seconds"]
    if not save:
        rec.arrays.pop("full_ortho__out")
    del ov

    o = syn.make_network_outputs_2d(size=1024, n_objects=50, seed=0)
    probs = [np.roll(o.sem_prob, i, axis=2) for i in range(100)]
    case_median(
        rec,
        "full_median_k5",
        probs,
        5,
        gen="make_network_outputs_2d(1024, 50).sem_prob rolled by i px",
        save=False,
    )
    timings["full_median_k5"] = rec.meta["full_median_k5"]["seconds"]
    print("timings (s):", json.dumps(timings))
    return timings


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="/tmp/original_outputs.npz")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--no-real", action="store_true", help="skip the real-data cases")
    ap.add_argument("--no-small", action="store_true", help="skip the small synthetic cases")
    ap.add_argument("--full", action="store_true", help="also time full-size inputs")
    ap.add_argument("--save-full", action="store_true", help="store full-size outputs too")
    ap.add_argument(
        "--repeat", type=int, default=1, help="repeat each timed call N times (report the min)"
    )
    args = ap.parse_args(argv)
    global REPEAT
    REPEAT = args.repeat

    if not available():
        from _original import INSTALL_HINT

        print("ERROR:", INSTALL_HINT, file=sys.stderr)
        return 2
    rec = Recorder()
    if not args.no_small:
        run_small(rec)
    if not args.no_real and os.path.isdir(args.data):
        run_real(rec, args.data)
    if args.full:
        run_full(rec, args.save_full)
    rec.save(args.out)
    print(f"saved {len(rec.arrays)} arrays for {len(rec.meta)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
