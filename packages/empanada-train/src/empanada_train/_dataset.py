"""Torch datasets of (image, mask) training pairs with Panoptic-DeepLab targets.

Each item is read, scaled to [0, 1], augmented, normalised with ``(x - mean) /
std`` and turned into targets (semantic map, centre heatmap, offsets).
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch

from empanada_core.validation import check_int_list

from ._targets import _check_sigma, heatmap_and_offsets

__all__ = [
    "SingleClassInstanceDataset",
    "PanopticDataset",
    "example_weights",
    "weighted_sampler",
    "SampleStream",
    "compute_norms",
    "DEFAULT_NORMS",
]

#: MitoNet's (and the CEM pretrained encoder's) normalisation constants.
DEFAULT_NORMS = (0.57571, 0.12765)
_INTENSITY_MODES = ("auto", "dtype", "percentile")


# ------------------------------------------------------------------ weights


def example_weights(sources, gamma=0.3):
    """Per-example sampling weights that balance the sources of a dataset.

    Parameters
    ----------
    sources : sequence of hashable
        The source (folder) of each example.
    gamma : float, optional
        0 gives every example the same weight; 1 gives every source the same
        total weight; values in between interpolate.

    Returns
    -------
    weights : (N,) ndarray of float64
        ``w_s = (1 / n_s) ** gamma``, normalised so that the distinct sources'
        ``w_s`` sum to 1; each example gets its source's ``w_s`` (as the
        original; :class:`torch.utils.data.WeightedRandomSampler` needs no
        further normalisation).

    Raises
    ------
    TypeError
        If ``gamma`` is not a number.
    ValueError
        If ``gamma`` is negative or ``sources`` is empty.

    Examples
    --------
    >>> example_weights(["a", "a", "a", "b"], gamma=1).tolist()
    [0.25, 0.25, 0.25, 0.75]
    >>> example_weights(["a", "a", "a", "b"], gamma=0).tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"`gamma` must be a number; got {gamma!r}")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"`gamma` must be a finite number >= 0; got {gamma!r}")
    sources = list(sources)
    if not sources:
        raise ValueError("`sources` is empty")
    names, inverse, counts = np.unique(
        np.array([str(s) for s in sources]), return_inverse=True, return_counts=True)
    per_source = (1.0 / counts) ** float(gamma)
    per_source /= per_source.sum()
    return per_source[inverse.reshape(-1)]


def weighted_sampler(weights, *, num_samples=None, generator=None):
    """A :class:`torch.utils.data.WeightedRandomSampler` (with replacement).

    Parameters
    ----------
    weights : dataset with a ``weights`` attribute, or (N,) array-like
        A dataset of this module, or per-example weights
        (:func:`example_weights`).
    num_samples : int, optional
        Draws per epoch; default the number of examples.
    generator : torch.Generator, optional
        Generator for reproducible draws.

    Returns
    -------
    torch.utils.data.WeightedRandomSampler

    Examples
    --------
    >>> sampler = weighted_sampler([0.5, 0.5, 1.0], generator=torch.Generator().manual_seed(0))
    >>> len(list(sampler))
    3
    """
    if hasattr(weights, "weights") and not isinstance(weights, (np.ndarray, torch.Tensor)):
        weights = weights.weights
    weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"`weights` must be a non-empty 1D sequence; got shape {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("`weights` must be finite, >= 0 and not all zero")
    if num_samples is None:
        num_samples = int(weights.numel())
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral):
        raise TypeError(f"`num_samples` must be an integer; got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1; got {num_samples}")
    return torch.utils.data.WeightedRandomSampler(
        weights, num_samples=int(num_samples), replacement=True, generator=generator)


class SampleStream(torch.utils.data.Sampler):
    """Batches of ``(example index, augmentation seed)`` that depend only on the seed and the iteration.

    Batch ``i`` is drawn from a generator seeded with ``(seed, i)``: which
    examples (weighted, with replacement) and the seed of each example's
    augmentations. So the stream from iteration ``k`` on is the same whether
    the run started at 0 or was resumed at ``k``, and the same with any number
    of DataLoader workers. Use it as a DataLoader's ``batch_sampler``.

    Parameters
    ----------
    weights : dataset with a ``weights`` attribute, or (N,) array-like
        Per-example sampling weights (:func:`example_weights`).
    batch_size : int
        Examples per batch.
    seed : int, optional
        Seed of the whole stream.
    start : int, optional
        First iteration (batch) to yield.
    stop : int or None, optional
        Iteration to stop before; None: endless.

    Examples
    --------
    >>> run = list(SampleStream([1.0, 1.0, 2.0], 2, seed=3, stop=4))
    >>> resumed = list(SampleStream([1.0, 1.0, 2.0], 2, seed=3, start=2, stop=4))
    >>> resumed == run[2:]
    True
    """

    def __init__(self, weights, batch_size, *, seed=0, start=0, stop=None):
        if hasattr(weights, "weights") and not isinstance(weights, (np.ndarray, torch.Tensor)):
            weights = weights.weights
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"`weights` must be a non-empty 1D sequence; got shape {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("`weights` must be finite, >= 0 and not all zero")
        for value, arg_name in ((batch_size, "batch_size"), (seed, "seed"), (start, "start")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"`{arg_name}` must be an integer; got {value!r}")
        if batch_size < 1 or seed < 0 or start < 0:
            raise ValueError(f"`batch_size` must be >= 1, `seed` and `start` >= 0; got "
                             f"{batch_size}, {seed}, {start}")
        self.cumulative = np.cumsum(weights / weights.sum())
        self.batch_size, self.seed, self.start, self.stop = int(batch_size), int(seed), int(start), stop

    def batch(self, iteration):
        """The ``(index, seed)`` pairs of batch ``iteration``."""
        rng = np.random.default_rng((self.seed, int(iteration)))
        picks = np.searchsorted(self.cumulative, rng.random(self.batch_size), side="right")
        picks = np.minimum(picks, self.cumulative.size - 1)
        seeds = rng.integers(0, 2**62, self.batch_size)
        return [(int(i), int(s)) for i, s in zip(picks, seeds)]

    def __iter__(self):
        iteration = self.start
        while self.stop is None or iteration < self.stop:
            yield self.batch(iteration)
            iteration += 1

    def __len__(self):
        if self.stop is None:
            raise TypeError("an endless SampleStream has no length")
        return max(0, self.stop - self.start)


# ------------------------------------------------------------------- reading


def _describe(item):
    return str(item) if isinstance(item, (str, os.PathLike)) else "array"


def _read_2d(item, what):
    if isinstance(item, (str, os.PathLike)):
        from empanada_core import open_image

        array = np.asarray(open_image(Path(os.fspath(item))))
        name = str(item)
    else:
        array = np.asarray(item)
        name = f"in-memory {what}"
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise TypeError(
            f"{what} {name} is a colour image (shape {array.shape}); save it as greyscale"
        )
    if array.ndim != 2:
        raise TypeError(f"{what} {name} must be a 2D image; got shape {array.shape}")
    return array


def _read_mask(item):
    mask = _read_2d(item, "mask")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"mask {_describe(item)} has dtype {mask.dtype}; masks hold integer ids")
    if mask.size and np.issubdtype(mask.dtype, np.signedinteger) and mask.min() < 0:
        raise ValueError(f"mask {_describe(item)} has negative ids (min {mask.min()})")
    return mask


def _check_items(items):
    if isinstance(items, (str, os.PathLike)):
        from ._store import load_dataset

        items = load_dataset(items)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError(
                f"`items` must hold (image, mask) or (image, mask, source) tuples, as "
                f"load_dataset returns; item {i} is {item!r:.80}"
            )
        image, mask = item[0], item[1]
        source = str(item[2]) if len(item) == 3 else "default"
        out.append((image, mask, source))
    if not out:
        raise ValueError("`items` is empty")
    return out


def _check_norms(norms):
    if hasattr(norms, "mean") and hasattr(norms, "std") and not isinstance(norms, (tuple, list)):
        norms = (norms.mean, norms.std)
    try:
        mean, std = (float(v) for v in norms)
    except (TypeError, ValueError):
        raise TypeError(f"`norms` must be (mean, std); got {norms!r}") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"`norms` must be finite with std > 0; got {norms!r}")
    return mean, std


def _scale01(image, mode):
    """The image scaled to [0, 1] as float32, as inference does (empanada_core.normalize)."""
    from empanada_core import normalize

    return normalize(image, mean=0.0, std=1.0, mode=mode)


def compute_norms(items, *, intensity_mode="auto"):
    """Normalisation constants of a dataset (for training without pretrained norms).

    Parameters
    ----------
    items : sequence of (image, mask[, source]) or a dataset path
        As for the datasets (:func:`load_dataset` output).
    intensity_mode : {'auto', 'dtype', 'percentile'}, optional
        How images are scaled to [0, 1] (see :func:`empanada_core.normalize`).

    Returns
    -------
    mean, std : float
        The mean of the per-image means and of the per-image standard
        deviations of the scaled images (the original's recipe).
    """
    items = _check_items(items)
    stats = np.array([(x.mean(), x.std()) for x in
                      (_scale01(_read_2d(image, "image"), intensity_mode)
                       for image, _, _ in items)], np.float64)
    return float(stats[:, 0].mean()), float(stats[:, 1].mean())


# ------------------------------------------------------------------ datasets


class _PatchDataset(torch.utils.data.Dataset):
    def __init__(self, items, transforms, heatmap_sigma, weight_gamma, norms, intensity_mode):
        self.items = _check_items(items)
        if transforms is not None and not callable(transforms):
            raise TypeError(f"`transforms` must be callable (image, mask, rng); got {transforms!r}")
        self.transforms = transforms
        self.heatmap_sigma = _check_sigma(heatmap_sigma)
        self.weight_gamma = weight_gamma
        self.weights = example_weights([s for _, _, s in self.items], weight_gamma)
        self.norms = _check_norms(norms)
        if intensity_mode not in _INTENSITY_MODES:
            raise ValueError(
                f"`intensity_mode` must be one of {_INTENSITY_MODES}; got {intensity_mode!r}")
        self.intensity_mode = intensity_mode

    def __len__(self):
        return len(self.items)

    @property
    def sources(self):
        """Source name of each example."""
        return [s for _, _, s in self.items]

    def _load(self, index):
        if isinstance(index, tuple):  # (example index, augmentation seed): a SampleStream item
            index, seed = index
        else:
            seed = None
        index = int(index)
        image_item, mask_item, _ = self.items[index]
        image = _read_2d(image_item, "image")
        mask = _read_mask(mask_item)
        if image.shape != mask.shape:
            raise ValueError(
                f"image {_describe(image_item)} (shape {image.shape}) and mask "
                f"{_describe(mask_item)} (shape {mask.shape}) differ in shape"
            )
        self._check_mask(mask, mask_item)
        x = _scale01(image, self.intensity_mode)
        if self.transforms is not None:
            if seed is None:
                # drawn from torch's generator: reproducible with torch.manual_seed and
                # different in each DataLoader worker and epoch
                seed = int(torch.randint(0, 2**62, (1,)).item())
            x, mask = self.transforms(x, mask, np.random.default_rng(seed))
        mean, std = self.norms
        x = (np.asarray(x, np.float32) - np.float32(mean)) * np.float32(1.0 / std)
        fname = str(image_item) if isinstance(image_item, (str, os.PathLike)) else f"item{index}"
        return np.ascontiguousarray(x), np.ascontiguousarray(mask), fname

    def _check_mask(self, mask, mask_item):
        pass

    def validate(self):
        """Read every mask once and raise the first error (before training starts)."""
        for _, mask_item, _ in self.items:
            self._check_mask(_read_mask(mask_item), mask_item)


class SingleClassInstanceDataset(_PatchDataset):
    """Patches of one instance class (every positive id is an object).

    Parameters
    ----------
    items : sequence of (image, mask[, source]), or a dataset path
        :func:`load_dataset` output (paths), or in-memory arrays.
    transforms : callable, optional
        ``(image, mask, rng) -> (image, mask)``, e.g.
        :func:`default_train_augmentations`; receives the image scaled to [0, 1].
    heatmap_sigma : float, optional
        Sigma of the centre Gaussians.
    weight_gamma : float, optional
        Source balancing of :attr:`weights` (see :func:`example_weights`).
    norms : (float, float) or Norms, optional
        ``(mean, std)`` in [0, 1] units (default: MitoNet's).
    intensity_mode : {'auto', 'dtype', 'percentile'}, optional
        Scaling to [0, 1] as :func:`empanada_core.normalize`: uint8 by 255,
        other dtypes between their 0.5 and 99.5 percentiles (per image) in
        'auto' mode.

    Notes
    -----
    Items are dicts: ``image`` (1, H, W) float32, ``sem`` (H, W) float32
    (mask > 0), ``ctr_hmp`` (1, H, W) float32, ``offsets`` (2, H, W) float32,
    ``mask`` (H, W) int64 and ``fname`` (str).

    Examples
    --------
    >>> mask = np.zeros((8, 8), np.uint16)
    >>> mask[2:5, 2:5] = 3
    >>> ds = SingleClassInstanceDataset([(np.full((8, 8), 128, np.uint8), mask, "a")])
    >>> item = ds[0]
    >>> tuple(item["image"].shape), tuple(item["offsets"].shape), float(item["sem"].sum())
    ((1, 8, 8), (2, 8, 8), 9.0)
    """

    def __init__(self, items, transforms=None, heatmap_sigma=6, weight_gamma=0.3, *,
                 norms=DEFAULT_NORMS, intensity_mode="auto"):
        super().__init__(items, transforms, heatmap_sigma, weight_gamma, norms, intensity_mode)

    def __getitem__(self, index):
        image, mask, fname = self._load(index)
        heat, offsets = heatmap_and_offsets(mask, self.heatmap_sigma)
        return {
            "image": torch.from_numpy(image[None]),
            "sem": torch.from_numpy((mask > 0).astype(np.float32)),
            "ctr_hmp": torch.from_numpy(heat),
            "offsets": torch.from_numpy(offsets),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "fname": fname,
        }


class PanopticDataset(_PatchDataset):
    """Patches with several classes, labelled ``class_id * label_divisor + instance_id``.

    Parameters
    ----------
    items : sequence of (image, mask[, source]), or a dataset path
        As :class:`SingleClassInstanceDataset`.
    labels : sequence of int
        The class ids, exactly 1..n (the index of each class's logit channel;
        0 is background).
    thing_list : sequence of int
        The instance classes among ``labels``; the others are semantic (stuff).
    label_divisor : int
        Must exceed every instance id within a class.
    transforms, heatmap_sigma, weight_gamma, norms, intensity_mode
        As :class:`SingleClassInstanceDataset`.

    Notes
    -----
    ``sem`` is the class id of each pixel (int64); the heatmap and offsets are
    made from the thing classes' instances only. A mask value below
    ``label_divisor`` (class 0) or of an unknown class raises ``ValueError``
    naming the file.

    Examples
    --------
    >>> mask = np.zeros((8, 8), np.uint16)
    >>> mask[:2] = 1000
    >>> mask[3:6, 3:6] = 2001
    >>> ds = PanopticDataset([(np.zeros((8, 8), np.uint8), mask)], [1, 2], [2], 1000)
    >>> item = ds[0]
    >>> sorted(item["sem"].unique().tolist()), float(item["ctr_hmp"].max())
    ([0, 1, 2], 1.0)
    """

    def __init__(self, items, labels, thing_list, label_divisor, transforms=None,
                 heatmap_sigma=6, weight_gamma=0.3, *, norms=DEFAULT_NORMS,
                 intensity_mode="auto"):
        self.labels, self.thing_list, self.label_divisor = _check_classes(
            labels, thing_list, label_divisor)
        super().__init__(items, transforms, heatmap_sigma, weight_gamma, norms, intensity_mode)

    def _check_mask(self, mask, mask_item):
        if not mask.size:
            return
        values = np.unique(mask)
        values = values[values > 0]
        classes = values // self.label_divisor
        if (classes == 0).any():
            bad = values[classes == 0]
            raise ValueError(
                f"mask {_describe(mask_item)} has ids {bad[:5].tolist()} below label_divisor "
                f"{self.label_divisor}, i.e. class 0; panoptic masks hold "
                f"class_id * {self.label_divisor} + instance_id"
            )
        unknown = np.setdiff1d(classes, self.labels)
        if unknown.size:
            raise ValueError(
                f"mask {_describe(mask_item)} has classes {unknown.tolist()} (ids "
                f"{values[np.isin(classes, unknown)][:5].tolist()}...) that are not in `labels` "
                f"{list(self.labels)}"
            )

    def __getitem__(self, index):
        image, mask, fname = self._load(index)
        classes = mask // self.label_divisor
        is_thing = np.isin(classes, self.thing_list) & (mask > 0)
        thing_seg = np.where(is_thing, mask, 0)
        heat, offsets = heatmap_and_offsets(thing_seg, self.heatmap_sigma)
        return {
            "image": torch.from_numpy(image[None]),
            "sem": torch.from_numpy(classes.astype(np.int64)),
            "ctr_hmp": torch.from_numpy(heat),
            "offsets": torch.from_numpy(offsets),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "fname": fname,
        }


def _check_classes(labels, thing_list, label_divisor):
    labels = check_int_list(labels, "labels")
    thing_list = check_int_list(thing_list, "thing_list")
    if sorted(labels) != list(range(1, len(labels) + 1)):
        raise ValueError(
            f"`labels` must be the class ids 1..n (each is the index of a logit channel; 0 is "
            f"background); got {labels}"
        )
    extra = sorted(set(thing_list) - set(labels))
    if extra:
        raise ValueError(f"`thing_list` has classes {extra} that are not in `labels` {labels}")
    if isinstance(label_divisor, bool) or not isinstance(label_divisor, numbers.Integral):
        raise TypeError(f"`label_divisor` must be an int; got {label_divisor!r}")
    if label_divisor < 2:
        raise ValueError(f"`label_divisor` must be >= 2; got {label_divisor}")
    return tuple(sorted(labels)), tuple(sorted(set(thing_list))), int(label_divisor)
