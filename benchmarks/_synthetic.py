"""Deterministic synthetic inputs for postprocessing benchmarks and differential tests.

numpy only. Every generator takes a ``seed`` and returns the same arrays for the
same arguments on every platform (``np.random.default_rng``; no threading).

* :func:`make_network_outputs_2d` -- "network outputs" (semantic probabilities,
  centre heatmap, offsets) for elliptical mitochondria-like blobs.
* :func:`network_outputs_from_labels` -- the same kind of outputs derived from
  any 2D instance label image (e.g. real ground truth).
* :func:`make_panoptic_stack` -- per-slice 2D panoptic images of drifting,
  appearing, disappearing, splitting and merging tubes, plus 3D ground truth.
* :func:`make_ortho_views` -- three perturbed per-view instance volumes of
  ellipsoids, plus 3D ground truth.
* :func:`perturb_views_from_labels` -- three perturbed views of any 3D instance
  volume (e.g. real ground truth).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "NetworkOutputs2D",
    "PanopticStack",
    "OrthoViews",
    "make_network_outputs_2d",
    "network_outputs_from_labels",
    "make_panoptic_stack",
    "make_ortho_views",
    "perturb_views_from_labels",
]


class NetworkOutputs2D(NamedTuple):
    sem_prob: np.ndarray  # (1, H, W) float32 probabilities
    ctr_hmp: np.ndarray  # (h, w) float32 centre heatmap on the centre grid
    offsets: np.ndarray  # (2, h, w) float32 (dy, dx), downsampled-input pixel units
    gt: np.ndarray  # (H, W) int32 instance ids 1..N (0 = background)
    centres: np.ndarray  # (N, 2) float64 (y, x) object centres in output pixels


class PanopticStack(NamedTuple):
    slices: list  # n_slices x (size, size) int32 panoptic ids (div + k per slice)
    gt: np.ndarray  # (n_slices, size, size) int32 3D instance ids 1..N


class OrthoViews(NamedTuple):
    xy: np.ndarray  # (D, H, W) int32, view-specific ids
    xz: np.ndarray
    yz: np.ndarray
    gt: np.ndarray  # (D, H, W) int32 ground truth ids 1..N


# ----------------------------------------------------------------------------
# small numpy helpers
# ----------------------------------------------------------------------------


def _box_blur_1d(a, radius, axis):
    """Mean filter of width 2*radius+1 along ``axis`` with edge replication."""
    if radius <= 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius + 1, radius)
    p = np.pad(a, pad, mode="edge")
    c = np.cumsum(p, axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * radius + 1)).astype(np.float32)


def _smooth(mask, radius=2, passes=2):
    """Approximately Gaussian smoothing of a 2D float image (repeated box blur)."""
    out = mask.astype(np.float32)
    for _ in range(passes):
        out = _box_blur_1d(out, radius, 0)
        out = _box_blur_1d(out, radius, 1)
    return out


def _prob_from_mask(mask, rng, inside=0.9, outside=0.05, noise=0.02):
    """Smooth probabilities (~inside in the mask, ~outside elsewhere)."""
    soft = _smooth(mask.astype(np.float32))
    # steepen around 0.5 so that the hardened mask (>= 0.5) reproduces the mask
    # except at sharp corners: pixels next to an edge get ~0.6 / ~0.4 from the blur
    soft = 1.0 / (1.0 + np.exp(-10.0 * (soft - 0.5)))
    prob = outside + (inside - outside) * soft
    prob += rng.uniform(-noise, noise, size=prob.shape).astype(np.float32)
    return np.clip(prob, 0.0, 1.0).astype(np.float32)


def _centres_of_labels(labels):
    """Centroids (y, x) of ids 1..max(labels); NaN for absent ids."""
    n = int(labels.max()) if labels.size else 0
    flat = labels.ravel()
    yy, xx = np.divmod(np.arange(flat.size), labels.shape[1])
    cnt = np.bincount(flat, minlength=n + 1).astype(np.float64)
    sy = np.bincount(flat, weights=yy, minlength=n + 1)
    sx = np.bincount(flat, weights=xx, minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([sy / cnt, sx / cnt], axis=1)[1:]


def _block_mode(labels, F):
    """Most frequent non-zero label of every F x F block (0 if none; ties: smaller)."""
    if F == 1:
        return labels
    H, W = labels.shape
    blk = labels.reshape(H // F, F, W // F, F).transpose(0, 2, 1, 3).reshape(H // F, W // F, F * F)
    best = np.zeros(blk.shape[:2], labels.dtype)
    best_n = np.zeros(blk.shape[:2], np.int32)
    for p in range(F * F):
        cand = blk[..., p]
        n = (blk == cand[..., None]).sum(-1)
        n[cand == 0] = 0
        better = (n > best_n) | ((n == best_n) & (n > 0) & (cand < best))
        best = np.where(better, cand, best)
        best_n = np.where(better, n, best_n)
    return best


def _heatmap_and_offsets(labels, centres, step, upsampling, sigma_px=6.0):
    """Centre heatmap and offsets on the centre grid for given instances.

    Grid cell (i, j) represents output pixel (i*F, j*F), F = step*upsampling
    (the pixel the original's nearest upsampling maps the cell to first, and the
    coordinate group_pixels gives it: step*(i, j) downsampled-input pixels).
    """
    H, W = labels.shape
    F = step * upsampling
    if H % F or W % F:
        raise ValueError(f"image size {labels.shape} must be divisible by {F}")
    h, w = H // F, W // F
    sig = sigma_px / F
    hmp = np.zeros((h, w), np.float32)
    rad = int(np.ceil(4 * sig)) + 1
    for cy, cx in centres:
        if not np.isfinite(cy):
            continue
        gy, gx = cy / F, cx / F
        y0, y1 = max(0, int(gy) - rad), min(h, int(gy) + rad + 2)
        x0, x1 = max(0, int(gx) - rad), min(w, int(gx) + rad + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1)[:, None]
        xx = np.arange(x0, x1)[None, :]
        g = np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * sig * sig))
        g = (g / g.max()).astype(np.float32)  # peak normalised to 1 on the grid
        np.maximum(hmp[y0:y1, x0:x1], g, out=hmp[y0:y1, x0:x1])
    sample = _block_mode(labels, F)  # object covering most of each cell's block
    gy, gx = np.meshgrid(np.arange(h) * step, np.arange(w) * step, indexing="ij")
    ctr = np.zeros((len(centres) + 1, 2))
    ctr[1:] = np.nan_to_num(np.asarray(centres, dtype=np.float64)) / upsampling
    inside = sample > 0
    offsets = np.zeros((2, h, w), np.float32)
    offsets[0][inside] = (ctr[sample[inside], 0] - gy[inside]).astype(np.float32)
    offsets[1][inside] = (ctr[sample[inside], 1] - gx[inside]).astype(np.float32)
    return hmp, offsets


# ----------------------------------------------------------------------------
# 2D network outputs
# ----------------------------------------------------------------------------


def _draw_ellipses(size, n_objects, rng, max_overlap=0.05):
    labels = np.zeros((size, size), np.int32)
    centres = []
    tries = 0
    while len(centres) < n_objects and tries < 50 * max(n_objects, 1):
        tries += 1
        a = rng.uniform(10, 45)  # semi-major (px)
        b = rng.uniform(6, min(18, a))  # semi-minor
        th = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, size, 2)
        r = int(np.ceil(a)) + 1
        y0, y1 = max(0, int(cy) - r), min(size, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(size, int(cx) + r + 1)
        yy = np.arange(y0, y1)[:, None] - cy
        xx = np.arange(x0, x1)[None, :] - cx
        u = xx * np.cos(th) + yy * np.sin(th)
        v = -xx * np.sin(th) + yy * np.cos(th)
        m = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        area = m.sum()
        if area < 20:
            continue
        crop = labels[y0:y1, x0:x1]
        if (crop[m] > 0).sum() > max_overlap * area:
            continue
        k = len(centres) + 1
        crop[m & (crop == 0)] = k
        centres.append((cy, cx))
    return labels, np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def network_outputs_from_labels(labels, *, coarse=True, upsampling=1, seed=0, sigma_px=6.0):
    """Synthetic network outputs whose ideal postprocessing recovers ``labels``.

    Args:
        labels: (H, W) int instance ids (0 = background); H and W must be
            divisible by 4*upsampling (coarse) or upsampling (fine).

    Returns:
        :class:`NetworkOutputs2D` (gt = labels relabelled to consecutive 1..N).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    ids, inv = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inv = inv + 1
    gt = inv.reshape(labels.shape).astype(np.int32)
    centres = _centres_of_labels(gt)
    sem = _prob_from_mask(gt > 0, rng)[None]
    step = 4 if coarse else 1
    hmp, off = _heatmap_and_offsets(gt, centres, step, upsampling, sigma_px)
    return NetworkOutputs2D(sem, hmp, off, gt, centres)


def make_network_outputs_2d(size=2048, n_objects=200, seed=0, coarse=True, upsampling=1):
    """Elliptical "mitochondria" and matching network outputs.

    Returns a :class:`NetworkOutputs2D` namedtuple ``(sem_prob, ctr_hmp, offsets,
    gt, centres)``: sem_prob (1, H, W) float32 (~0.9 inside, ~0.05 outside,
    smooth edges, +-0.02 noise); ctr_hmp (h, w) with a Gaussian peak
    (sigma 6 output px) normalised to 1 per object; offsets (2, h, w) =
    centre - grid coordinate in downsampled-input pixels inside objects, 0
    outside; h = H / (4*upsampling) if coarse else H / upsampling.
    Objects: semi-axes 10-45 x 6-18 px, random orientation, <= 5 % overlap
    (overlap pixels keep the first object); fewer than ``n_objects`` if they
    do not fit.
    """
    rng = np.random.default_rng(seed)
    labels, centres = _draw_ellipses(int(size), int(n_objects), rng)
    sem = _prob_from_mask(labels > 0, rng)[None]
    step = 4 if coarse else 1
    hmp, off = _heatmap_and_offsets(labels, centres, step, upsampling)
    return NetworkOutputs2D(sem, hmp, off, labels, centres)


# ----------------------------------------------------------------------------
# panoptic stack
# ----------------------------------------------------------------------------


def _ellipse_mask(cy, cx, a, b, th, size):
    r = int(np.ceil(max(a, b))) + 1
    y0, y1 = max(0, int(cy) - r), min(size, int(cy) + r + 1)
    x0, x1 = max(0, int(cx) - r), min(size, int(cx) + r + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy = np.arange(y0, y1)[:, None] - cy
    xx = np.arange(x0, x1)[None, :] - cx
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    m = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if not m.any():
        return None
    return (slice(y0, y1), slice(x0, x1)), m


def _tube(rng, z0, z1, p0, v, a, b, th, size):
    """Per-slice (cy, cx, a, b, th) of a drifting tube over z in [z0, z1)."""
    n = z1 - z0
    walk = np.cumsum(rng.normal(0, 0.3, (n, 2)), axis=0)
    t = np.arange(n)[:, None]
    pos = p0[None, :] + v[None, :] * t + walk
    pos = np.clip(pos, 0, size - 1)
    wob = 1 + 0.12 * np.sin(rng.uniform(0, 2 * np.pi) + t[:, 0] * rng.uniform(0.1, 0.4))
    taper = np.sqrt(np.minimum(1.0, np.minimum(t[:, 0] + 1, n - t[:, 0]) / 2.5))
    s = wob * taper
    ths = th + np.cumsum(rng.normal(0, 0.03, n))
    return [
        (pos[i, 0], pos[i, 1], max(1.5, a * s[i]), max(1.2, b * s[i]), ths[i]) for i in range(n)
    ]


def _find(parent, i):
    """Union-find root with path halving."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def make_panoptic_stack(n_slices=100, size=1024, n_objects=50, label_divisor=1000, seed=0):
    """2D panoptic slices of tube-like objects and their 3D ground truth.

    ``n_objects`` 3D objects; each spans a random z range (about a third of them
    the whole stack, others appear and/or disappear inside it), drifts
    (constant velocity + random walk), wobbles in radius and tapers at its ends.
    About 15 % split into two branches going up the stack and 15 % are formed
    by two branches that merge (Y shapes, one 3D object each). Per slice each
    connected group of branches of one object gets one 2D id; the 2D ids of a
    slice are a random permutation of 1..m plus ``label_divisor`` (class 1), so
    they are not consistent across slices, like the 2D postprocessing output.
    Pixels claimed by two objects keep the first-drawn object in both the
    slices and the ground truth.

    Returns:
        :class:`PanopticStack` (slices: list of (size, size) int32, gt: (n_slices,
        size, size) int32 with ids 1..n_objects; an id is absent if it was
        never drawn).
    """
    rng = np.random.default_rng(seed)
    n, size = int(n_slices), int(size)
    objects = []  # list of branches: (obj_id, z0, params list)
    for k in range(1, int(n_objects) + 1):
        if rng.random() < 0.35:
            z0, z1 = 0, n
        else:
            length = int(rng.integers(max(3, n // 5), n + 1))
            z0 = int(rng.integers(-length // 3, n - 2))
            z1 = min(n, z0 + length)
            z0 = max(0, z0)
            if z1 - z0 < 3:
                z1 = min(n, z0 + 3)
        a = rng.uniform(8, 22)
        b = rng.uniform(0.5 * a, a)
        th = rng.uniform(0, np.pi)
        p0 = rng.uniform(0.05 * size, 0.95 * size, 2)
        v = rng.normal(0, 0.5, 2)
        main = _tube(rng, z0, z1, p0, v, a, b, th, size)
        branches = [(k, z0, main)]
        kind = rng.random()
        if z1 - z0 >= 8 and kind < 0.3:
            zs = int(rng.integers(z0 + 2, z1 - 3))
            ang = rng.uniform(0, 2 * np.pi)
            dv = rng.uniform(1.5, 2.5) * np.array([np.sin(ang), np.cos(ang)])
            i = zs - z0
            start = np.array(main[i][:2])
            if kind < 0.15:  # split: second branch from zs upward
                sub = _tube(rng, zs, z1, start, v + dv, 0.7 * a, 0.7 * b, th + 0.5, size)
                branches.append((k, zs, sub))
            else:  # merge: second branch up to zs, converging on the main tube
                zb = z0
                p_start = start - (v + dv) * (zs - zb)
                sub = _tube(rng, zb, zs + 1, p_start, v + dv, 0.7 * a, 0.7 * b, th + 0.5, size)
                branches.append((k, zb, sub))
        objects.extend(branches)

    gt = np.zeros((n, size, size), np.int32)
    slices = []
    for z in range(n):
        gslice = gt[z]
        owner = np.zeros((size, size), np.int32)  # branch index + 1
        parent = list(range(len(objects) + 1))
        drawn = []
        for bi, (k, bz0, params) in enumerate(objects, start=1):
            t = z - bz0
            if t < 0 or t >= len(params):
                continue
            em = _ellipse_mask(*params[t], size)
            if em is None:
                continue
            sl, m = em
            g = gslice[sl]
            ow = owner[sl]
            same = m & (g == k)
            for other in np.unique(ow[same]):
                if other:
                    ra, rb = _find(parent, int(other)), _find(parent, bi)
                    if ra != rb:
                        parent[rb] = ra
            free = m & (g == 0)
            g[free] = k
            ow[free] = bi
            drawn.append(bi)
        roots = np.zeros(len(objects) + 1, np.int64)
        for bi in drawn:
            roots[bi] = _find(parent, bi)
        owned = np.unique(owner)
        owned = owned[owned > 0]
        present = np.unique(roots[owned])
        perm = rng.permutation(len(present)) + 1
        lut_root = np.zeros(len(objects) + 1, np.int32)
        lut_root[present] = perm + int(label_divisor)
        lut = lut_root[roots]
        lut[0] = 0
        slices.append(lut[owner].astype(np.int32))
    return PanopticStack(slices, gt)


# ----------------------------------------------------------------------------
# ortho views
# ----------------------------------------------------------------------------


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid(shape, centre, radii, rot, slice_noise=None, axis=None, margin=0.0):
    """Voxel mask of an ellipsoid inside its clipped bounding box.

    slice_noise: per-index additive radius noise (voxels) along ``axis``.
    Returns (slices, mask) or None.
    """
    rmax = float(np.max(radii)) + margin + 2.0
    if slice_noise is not None:
        rmax += float(np.abs(slice_noise).max())
    lo = [max(0, int(np.floor(c - rmax))) for c in centre]
    hi = [min(s, int(np.ceil(c + rmax)) + 1) for c, s in zip(centre, shape)]
    if any(a >= b for a, b in zip(lo, hi)):
        return None
    grids = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
    d = np.stack(grids, axis=-1) @ rot  # coordinates in the ellipsoid frame
    q = np.sqrt(((d / (np.asarray(radii) + margin)) ** 2).sum(-1))
    if slice_noise is not None:
        mean_r = float(np.mean(radii)) + margin
        s = 1.0 + slice_noise[lo[axis] : hi[axis]] / mean_r
        bshape = [1, 1, 1]
        bshape[axis] = -1
        m = q <= s.reshape(bshape)
    else:
        m = q <= 1.0
    if not m.any():
        return None
    return tuple(slice(a, b) for a, b in zip(lo, hi)), m


def _place_ellipsoids(shape, n_objects, rng, rmin=5, rmax=14, gap=1.5):
    canvas = np.zeros(shape, np.int32)
    objs = []
    tries = 0
    while len(objs) < n_objects and tries < 50 * max(n_objects, 1):
        tries += 1
        radii = rng.uniform(rmin, rmax, 3)
        centre = rng.uniform(0, 1, 3) * np.asarray(shape)
        rot = _random_rotation(rng)
        big = _ellipsoid(shape, centre, radii, rot, margin=gap)
        if big is None:
            continue
        sl, m = big
        if (canvas[sl][m] > 0).any():
            continue
        em = _ellipsoid(shape, centre, radii, rot)
        if em is None or em[1].sum() < 30:
            continue
        k = len(objs) + 1
        sl2, m2 = em
        canvas[sl2][m2] = k
        objs.append((centre, radii, rot))
    return canvas, objs


def make_ortho_views(size=256, n_objects=100, seed=0):
    """Three per-view segmentations of random ellipsoids plus the ground truth.

    Ground truth: ``n_objects`` randomly rotated ellipsoids (semi-axes 5-14
    voxels) with at least ~1.5 voxels between them (fewer if they don't fit).
    Each view (xy: slicing axis 0, xz: 1, yz: 2) independently:

    * misses an object with probability 0.03;
    * changes every semi-axis by U(-1.5, 1.5) voxels (erosion/dilation) and
      moves its centre by N(0, 0.5) voxels;
    * adds per-slice radius noise N(0, 0.4) voxels along its own slicing axis;
    * with probability 0.08 splits the object into two ids at a plane normal to
      its slicing axis (a tracking break);
    * adds ~3 % extra small ellipsoids (semi-axes 2-4) in free space;
    * numbers its objects with a random permutation (ids unrelated across views).

    Returns:
        :class:`OrthoViews` (xy, xz, yz, gt), each (size, size, size) int32.
    """
    rng = np.random.default_rng(seed)
    shape = (int(size),) * 3
    gt, objs = _place_ellipsoids(shape, int(n_objects), rng)
    views = []
    for axis in range(3):
        vol = np.zeros(shape, np.int32)
        k = 0
        for centre, radii, rot in objs:
            if rng.random() < 0.03:
                continue
            r = np.maximum(1.5, radii + rng.uniform(-1.5, 1.5, 3))
            c = centre + rng.normal(0, 0.5, 3)
            noise = rng.normal(0, 0.4, shape[axis])
            em = _ellipsoid(shape, c, r, rot, slice_noise=noise, axis=axis)
            if em is None:
                continue
            sl, m = em
            sub = vol[sl]
            m = m & (sub == 0)
            if not m.any():
                continue
            k += 1
            sub[m] = k
            if rng.random() < 0.08:
                idx = np.nonzero(m.any(axis=tuple(a for a in range(3) if a != axis)))[0]
                if idx.size >= 4:
                    cut = int(idx[int(rng.integers(idx.size // 4, 3 * idx.size // 4 + 1))])
                    sel = [slice(None)] * 3
                    sel[axis] = slice(cut, None)
                    part = np.zeros_like(m)
                    part[tuple(sel)] = True
                    k += 1
                    sub[m & part] = k
        n_extra = int(rng.binomial(max(1, len(objs)), 0.03))
        for _ in range(n_extra):
            em = _ellipsoid(
                shape,
                rng.uniform(0, 1, 3) * np.asarray(shape),
                rng.uniform(2, 4, 3),
                _random_rotation(rng),
            )
            if em is None:
                continue
            sl, m = em
            sub = vol[sl]
            if (sub[m] > 0).any():
                continue
            k += 1
            sub[m] = k
        perm = np.concatenate([[0], rng.permutation(k) + 1]).astype(np.int32)
        views.append(perm[vol])
    return OrthoViews(views[0], views[1], views[2], gt)


def _erode_labels(vol):
    """Keep a voxel only if its 6 neighbours (inside the volume) share its id."""
    keep = vol > 0
    for ax in range(3):
        for sh in (1, -1):
            nb = np.roll(vol, sh, axis=ax)
            edge = [slice(None)] * 3
            edge[ax] = 0 if sh == 1 else -1
            nb[tuple(edge)] = vol[tuple(edge)]
            keep &= nb == vol
    return np.where(keep, vol, 0)


def _dilate_labels(vol):
    """Background voxels take the max id among their 6 neighbours."""
    out = vol.copy()
    for ax in range(3):
        for sh in (1, -1):
            nb = np.roll(vol, sh, axis=ax)
            edge = [slice(None)] * 3
            edge[ax] = 0 if sh == 1 else -1
            nb[tuple(edge)] = 0
            fill = (out == 0) & (nb > 0)
            out[fill] = nb[fill]
    return out


def perturb_views_from_labels(gt, seed=0, p_erode=0.25, p_dilate=0.25, p_split=0.08, p_miss=0.03):
    """Three perturbed "views" of a 3D instance volume (for real ground truth).

    Per view and object: erosion (p_erode) or dilation (p_dilate) by one voxel
    (6-connectivity), a split at a plane normal to the view's slicing axis
    (p_split), or removal (p_miss); ids are randomly permuted per view.

    Returns:
        :class:`OrthoViews` (xy, xz, yz, gt) int32 (gt relabelled to 1..N).
    """
    rng = np.random.default_rng(seed)
    gt = np.asarray(gt)
    ids, inv = np.unique(gt, return_inverse=True)
    if ids[0] != 0:
        inv = inv + 1
        ids = np.concatenate([[0], ids])
    gt = inv.reshape(gt.shape).astype(np.int32)
    n = len(ids) - 1
    ero, dil = _erode_labels(gt), _dilate_labels(gt)
    views = []
    for axis in range(3):
        u = rng.random(n + 1)
        choice = np.where(u < p_erode, 1, np.where(u < p_erode + p_dilate, 2, 0))
        choice[0] = 0
        vol = np.where(choice[gt] == 1, ero, gt)
        grow = (vol == 0) & (dil > 0) & (choice[dil] == 2)
        vol[grow] = dil[grow]
        miss = rng.random(n + 1) < p_miss
        miss[0] = False
        vol[miss[vol]] = 0
        # splits: ids whose voxels at or beyond a cut plane get a new id
        k = n
        split = np.nonzero(rng.random(n + 1) < p_split)[0]
        split = split[split > 0]
        if split.size:
            coord = np.arange(gt.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
            for lab in split:
                m = vol == lab
                if not m.any():
                    continue
                idx = np.nonzero(m.any(axis=tuple(a for a in range(3) if a != axis)))[0]
                if idx.size < 4:
                    continue
                cut = int(idx[idx.size // 2])
                k += 1
                vol[m & (coord >= cut)] = k
        used = np.unique(vol)
        used = used[used > 0]
        lut = np.zeros(k + 1, np.int32)
        lut[used] = rng.permutation(used.size) + 1
        views.append(lut[vol])
    return OrthoViews(views[0], views[1], views[2], gt)
