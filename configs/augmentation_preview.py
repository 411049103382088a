"""Draw augmented training patches: each EM-modality augmentation alone, then the full v2 pipeline.

Row 1 shows one tile per augmentation, each applied alone at probability 1
(with its strongest setting, so it is visible); rows 2-4 show the full
MitoLite_v2 pipeline (``configs/finetune_mitolite_v2.yaml``) on tiles of each
source. Mask outlines are drawn in colour: after geometric transforms they
must still sit on the mitochondria.

Usage::

    python configs/augmentation_preview.py mitolite_data_v2/train -o docs/images/augmentations_v2.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
import yaml
from scipy import ndimage as ndi

from empanada_train import load_dataset
from empanada_train._augment import (
    GaussianBlur,
    GaussianNoise,
    HorizontalFlip,
    RandomBrightnessContrast,
    RandomGamma,
    RandomInvert,
    RandomRotate,
    RandomScale,
    SectionArtefacts,
    default_train_augmentations,
)

HERE = Path(__file__).resolve().parent

#: (title, transform applied alone at p=1)
SINGLE = [
    ("original", None),
    ("rescale x0.5", RandomScale((0.5, 0.5), p=1.0)),
    ("rescale x2", RandomScale((2.0, 2.0), p=1.0)),
    ("contrast", RandomBrightnessContrast(0.0, 0.6, p=1.0)),
    ("brightness", RandomBrightnessContrast(0.3, 0.0, p=1.0)),
    ("gamma", RandomGamma(0.6, p=1.0)),
    ("inverted", RandomInvert(p=1.0)),
    ("blur", GaussianBlur((1.5, 1.5), p=1.0)),
    ("noise", GaussianNoise((0.1, 0.1), p=1.0)),
    ("lines missing / duplicated", SectionArtefacts(max_bands=6, max_width=10, p=1.0)),
    ("rotation", RandomRotate(180, p=1.0)),
    ("flip", HorizontalFlip(p=1.0)),
]


def _outline(mask):
    return mask ^ ndi.binary_erosion(mask, iterations=2)


def _crop(image, mask, size):
    y = (image.shape[0] - size) // 2
    x = (image.shape[1] - size) // 2
    if y < 0 or x < 0:
        pad = [(max(0, -y), max(0, -y)), (max(0, -x), max(0, -x))]
        image, mask = np.pad(image, pad), np.pad(mask, pad)
        y, x = max(0, y), max(0, x)
    return image[y:y + size, x:x + size], mask[y:y + size, x:x + size]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("augmentations_v2.jpg"))
    parser.add_argument("--config", type=Path, default=HERE / "finetune_mitolite_v2.yaml")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = load_dataset(args.train_dir)
    by_source = {}
    for image, mask, source in items:
        by_source.setdefault(source, []).append((image, mask))
    aug_cfg = yaml.safe_load(args.config.read_text())["TRAIN"]["augmentations"]
    aug_cfg["scale_range"] = tuple(aug_cfg["scale_range"])
    pipeline = default_train_augmentations(args.size, **aug_cfg)
    rng = np.random.default_rng(args.seed)
    cols = len(SINGLE)
    fig = Figure(figsize=(cols * 1.6, (1 + len(by_source)) * 1.75), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(by_source), cols)

    def show(ax, image, mask, title=None):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        edge = np.ma.masked_where(~_outline(mask > 0), np.ones(mask.shape))
        ax.imshow(edge, cmap="autumn", alpha=0.8, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=7)

    first_source = sorted(by_source)[0]
    image_path, mask_path = by_source[first_source][len(by_source[first_source]) // 3]
    base = tifffile.imread(image_path).astype(np.float32) / 255
    base_mask = tifffile.imread(mask_path)
    base, base_mask = _crop(base, base_mask, args.size)
    for ax, (title, transform) in zip(axes[0], SINGLE):
        image, mask = base, base_mask
        if transform is not None:
            for seed in range(args.seed + 1, args.seed + 100):
                out, out_mask = transform(image.copy(), mask.copy(), np.random.default_rng(seed))
                # the artefacts draw 1..max_bands thin bands: show a draw with several
                if not isinstance(transform, SectionArtefacts) or \
                        min((out != image).any(0).sum(), (out != image).any(1).sum()) >= 12:
                    break
            image, mask = out, out_mask
        show(ax, *_crop(image, mask, args.size), title)
    for row, source in zip(axes[1:], sorted(by_source)):
        pairs = by_source[source]
        for i, ax in enumerate(row):
            image_path, mask_path = pairs[int(rng.integers(len(pairs)))]
            image = tifffile.imread(image_path).astype(np.float32) / 255
            image, mask = pipeline(image, tifffile.imread(mask_path), rng=rng)
            show(ax, image, mask, f"{source}: v2 pipeline" if i == 0 else None)
    fig.suptitle("MitoLite_v2 training augmentations (mask outlines in colour)", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    jpeg = args.out.suffix.lower() in (".jpg", ".jpeg")  # EM noise makes PNGs large
    fig.savefig(args.out, **({"pil_kwargs": {"quality": 85}} if jpeg else {}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
