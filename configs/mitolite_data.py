"""Build MitoLite_v1's training and validation data from the three shared EM datasets.

Every dataset is split in space, not in z: one block of every slice is held out
for validation and the model never sees any part of it, so neighbouring
sections cannot leak into the validation score.

=============================  =====================  ==============================
dataset                        training part          held-out validation part
=============================  =====================  ==============================
Lucchi FIB-SEM (64x768x1024)   x < 768                x >= 768 (64 x 768 x 256)
Drosophila VNC ssTEM (20x1024^2) y < 768              y >= 768 (20 x 256 x 1024)
FAFB ssTEM (4x1736^2)          y < 1302               y >= 1302 (4 x 434 x 1736)
=============================  =====================  ==============================

Writes, under OUT (default ``./mitolite_data``):

* ``train/<dataset>/{images,masks}/*.tiff``: 512 x 512 tiles of the training
  parts (every second Lucchi slice: neighbouring 5 nm slices are near copies),
  the empanada training-dataset layout, one source per dataset;
* ``eval/<dataset>/{images,masks}/*.tiff``: two held-out images per dataset,
  scored during training to keep the best weights;
* ``val/<dataset>/{images,masks}/*.tif``: every held-out slice as a 2D image
  and its 2D instance labels, for::

      empanada segment val/<dataset>/images -o pred/<dataset> --model MitoLite_v1
      empanada evaluate pred/<dataset> val/<dataset>/masks

``--every-slice`` (MitoLite_v2) tiles every Lucchi slice, so all labelled
training data is used; the held-out parts are the same.

Usage::

    python configs/mitolite_data.py [--data ../shared/data] [--out mitolite_data] [--every-slice]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

#: name -> (folder in the shared data, axis of the split, first held-out index, z step)
SPLITS = {
    "lucchi": ("lucchi_epfl_hippocampus", 2, 768, 2),
    "drosophila": ("drosophila_vnc_sstem", 1, 768, 1),
    "fafb": ("fafb_mito_sstem", 1, 1302, 1),
}
TILE = 512


def tile_starts(n, tile):
    """Tile origins covering 0..n with as little overlap as needed."""
    if n <= tile:
        return [0]
    count = -(-n // tile)
    return [round(i * (n - tile) / (count - 1)) for i in range(count)]


def split(volume, axis, first_val):
    index = [slice(None)] * 3
    index[axis] = slice(None, first_val)
    train = volume[tuple(index)]
    index[axis] = slice(first_val, None)
    return train, volume[tuple(index)]


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, compression="zlib" if array.dtype != np.uint8 else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        type=Path, help="the shared data folder")
    parser.add_argument("--out", default=Path("mitolite_data"), type=Path)
    parser.add_argument("--every-slice", action="store_true",
                        help="tile every training slice (MitoLite_v2), not every 2nd Lucchi one")
    args = parser.parse_args(argv)
    for name, (folder, axis, first_val, z_step) in SPLITS.items():
        z_step = 1 if args.every_slice else z_step
        images = tifffile.imread(args.data / folder / "images.tif")
        labels = tifffile.imread(args.data / folder / "mito_instances_2d.tif").astype(np.uint16)
        train_img, val_img = split(images, axis, first_val)
        train_lab, val_lab = split(labels, axis, first_val)
        n_tiles = 0
        for z in range(0, train_img.shape[0], z_step):
            for y in tile_starts(train_img.shape[1], TILE):
                for x in tile_starts(train_img.shape[2], TILE):
                    window = (z, slice(y, y + TILE), slice(x, x + TILE))
                    stem = f"{name}_z{z:03d}_y{y:04d}_x{x:04d}"
                    base = args.out / "train" / name
                    write(base / "images" / f"{stem}.tiff", train_img[window])
                    write(base / "masks" / f"{stem}.tiff", train_lab[window])
                    n_tiles += 1
        n = val_img.shape[0]
        for z in (n // 4, (3 * n) // 4):
            base = args.out / "eval" / name
            write(base / "images" / f"{name}_val_z{z:03d}.tiff", val_img[z])
            write(base / "masks" / f"{name}_val_z{z:03d}.tiff", val_lab[z])
        for z in range(n):
            write(args.out / "val" / name / "images" / f"{name}_val_z{z:03d}.tif", val_img[z])
            write(args.out / "val" / name / "masks" / f"{name}_val_z{z:03d}.tif", val_lab[z])
        print(f"{name}: {n_tiles} training tiles of {TILE}^2 from {train_img.shape}, "
              f"held out {val_img.shape}")


if __name__ == "__main__":
    main()
