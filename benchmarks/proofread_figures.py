"""Before/after pictures of every proofreading operation on the real Lucchi data.

Writes ``docs/images/proofread_*.png``: each operation run with empanada-proofread on
the Lucchi 3D mitochondria labels (over the FIB-SEM image), shown in one slice.

Usage::

    python benchmarks/proofread_figures.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import empanada_proofread as ep
from empanada_core.testing import find_data_dir

Z = 32  # the slice shown
ORANGE, BLUE, MAGENTA, CYAN = (1.0, 0.55, 0.0), (0.2, 0.45, 1.0), (1.0, 0.2, 0.8), (0.0, 0.9, 0.9)


def colours(labels):
    """A fixed colour per id (same id, same colour in every panel)."""
    rng = np.random.default_rng(7)
    # muted greens / greys for the labels not being edited
    table = rng.uniform(0.35, 0.75, size=(int(labels.max()) + 64, 3)) * [0.6, 1.0, 0.6]
    return table


def overlay(ax, image, labels, table, title, points=None, box=None):
    ax.imshow(image, cmap="gray", interpolation="nearest")
    rgba = np.zeros(labels.shape + (4,))
    fg = labels > 0
    rgba[fg, :3] = table[labels[fg]]
    rgba[fg, 3] = 0.55
    ax.imshow(rgba, interpolation="nearest")
    # outlines keep touching labels apart
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    rgba = np.zeros(labels.shape + (4,))
    rgba[edge & fg] = (1, 1, 1, 0.9)
    ax.imshow(rgba, interpolation="nearest")
    if points is not None:
        pts = np.asarray(points)
        ax.plot(pts[:, 1], pts[:, 0], "x", color="red", markersize=9, markeredgewidth=2.5)
    if box is not None:
        (y0, x0), (y1, x1) = box
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Rectangle"]).Rectangle(
            (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", linewidth=2))
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def save(panels, path, crop):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (y0, y1), (x0, x1) = crop
    height = 3.4 * (y1 - y0) / (x1 - x0) + 0.35
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), height), dpi=80)
    for ax, (image, labels, table, title, points, box) in zip(np.atleast_1d(axes), panels):
        labels = labels if labels.ndim == 2 else labels[Z]
        pts = None if points is None else np.asarray(points)[:, -2:] - [y0, x0]
        bx = None if box is None else ((box[0][0] - y0, box[0][1] - x0),
                                       (box[1][0] - y0, box[1][1] - x0))
        overlay(ax, image[y0:y1, x0:x1], labels[y0:y1, x0:x1], table, title, pts, bx)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print("wrote", path)


def nearest_pair(labels2d):
    """The two labels of a slice whose centroids are closest."""
    from skimage.measure import regionprops

    props = [p for p in regionprops(labels2d) if p.area > 800]
    best = None
    for a in range(len(props)):
        for b in range(a + 1, len(props)):
            d = np.hypot(*np.subtract(props[a].centroid, props[b].centroid))
            if best is None or d < best[0]:
                best = (d, props[a], props[b])
    return best[1], best[2]


def window(points, shape, half=110):
    cy, cx = np.mean(np.asarray(points)[:, -2:], axis=0).astype(int)
    y0 = int(np.clip(cy - half, 0, shape[0] - 2 * half))
    x0 = int(np.clip(cx - half, 0, shape[1] - 2 * half))
    return (y0, y0 + 2 * half), (x0, x0 + 2 * half)


def inner(labels, label_id, z):
    from scipy import ndimage as ndi

    d = ndi.distance_transform_edt(np.pad(labels[z] == label_id, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(d), d.shape)
    return (z, int(y), int(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" /
                                             "images"))
    args = parser.parse_args(argv)
    import tifffile

    base = find_data_dir()
    folder = None if base is None else base / "lucchi_epfl_hippocampus"
    if folder is None or not folder.is_dir():
        sys.exit("the Lucchi data was not found: set EMPANADA_DATA_DIR or place it in "
                 "../shared/data")
    image = tifffile.imread(folder / "images.tif")[Z]
    original = tifffile.imread(folder / "mito_instances_3d.tif").astype(np.uint32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = colours(original)

    a, b = nearest_pair(original[Z])
    table[a.label], table[b.label] = ORANGE, BLUE
    pa, pb = inner(original, a.label, Z), inner(original, b.label, Z)
    crop = window([pa, pb], image.shape)

    # merge
    labels = original.copy()
    edit = ep.merge_labels(labels, [pa, pb])
    save([(image, original[Z], table, f"before: labels {a.label} and {b.label}", [pa, pb], None),
          (image, labels[Z], table, f"merge_labels: one label {edit.new_ids[0]}", None, None)],
         out / "proofread_merge.png", crop)

    # split the merged pair again, from the two points
    merged = labels.copy()
    edit = ep.split_label(labels, [pa, pb], points_as_markers=True)
    table[list(edit.new_ids)] = MAGENTA
    save([(image, merged[Z], table, "before: merged label", [pa, pb], None),
          (image, labels[Z], table, f"split_label (points as markers): new {edit.new_ids[0]}",
           None, None)], out / "proofread_split.png", crop)

    # split one real object by distance peaks
    from skimage.measure import regionprops

    big = max(regionprops(original[Z]), key=lambda p: p.axis_major_length)
    pc = inner(original, big.label, Z)
    labels = original.copy()
    table[big.label] = ORANGE
    edit = ep.split_label(labels, [pc], min_distance=5, in_3d=False)
    table[list(edit.new_ids)] = [MAGENTA, CYAN, BLUE][: len(edit.new_ids)]
    crop_c = window([pc], image.shape, half=130)
    save([(image, original[Z], table, f"before: label {big.label}", [pc], None),
          (image, labels[Z], table, f"split_label(min_distance=5, in_3d=False): "
           f"{len(edit.new_ids) + 1} pieces", None, None)],
         out / "proofread_split_peaks.png", crop_c)

    # delete in one slice only
    labels = original.copy()
    ep.delete_labels(labels, [pa], in_3d=False)
    save([(image, original[Z], table, f"before: label {a.label}", [pa], None),
          (image, labels[Z], table, "delete_labels(in_3d=False)", None, None)],
         out / "proofread_delete.png", crop)

    # morphology of one label
    panels = [(image, original[Z], table, f"before: label {a.label}", [pa], None)]
    for op, kw in (("dilate", {"radius": 4}), ("erode", {"radius": 4})):
        labels = original.copy()
        ep.morph_labels(labels, [a.label], operation=op, **kw)
        panels.append((image, labels[Z], table, f"morph_labels({op!r}, radius=4)", None, None))
    labels = original.copy()
    ep.morph_labels(labels, [b.label], operation="dilate", radius=14)
    panels.append((image, labels[Z], table, f"dilate {b.label} by 14: stops at {a.label}", None,
                   None))
    save(panels, out / "proofread_morph.png", crop)

    # filters on one 2D image (the per-slice instances of slice Z)
    full = ((0, image.shape[0]), (0, image.shape[1]))
    image2d = tifffile.imread(folder / "mito_instances_2d.tif")[Z].astype(np.uint32)
    table2d = colours(image2d)
    labels = image2d.copy()
    small = ep.remove_small_labels(labels, 1000)
    boundary = image2d.copy()
    edge = ep.remove_boundary_labels(boundary)
    for ids, colour in ((small.ids, MAGENTA), (edge.ids, CYAN)):
        table2d[list(ids)] = colour
    save([(image, image2d, table2d, f"before: {len(np.unique(image2d)) - 1} labels (2D)", None,
           None),
          (image, labels, table2d, f"remove_small_labels(1000): -{len(small.ids)} (magenta)",
           None, None),
          (image, boundary, table2d, f"remove_boundary_labels: -{len(edge.ids)} (cyan)", None,
           None)], out / "proofread_filters.png", full)

    # locate (jump to label)
    loc = ep.locate_label(original, a.label)
    first = original[loc.first_slice]
    image_first = tifffile.imread(folder / "images.tif")[loc.first_slice]
    box = (loc.bbox_min[1:], loc.bbox_max[1:])
    save([(image_first, first, table, f"locate_label({a.label}): slice {loc.first_slice}",
           [loc.point], box)], out / "proofread_locate.png", window([loc.point], image.shape))


if __name__ == "__main__":
    main()
