"""Augmentations of (image, mask) training pairs, in numpy.

Every transform is a callable ``(image, mask, rng) -> (image, mask)`` over a 2D
float image and a 2D integer mask of the same shape. Geometric transforms move
both alike; the mask is only ever resampled with nearest neighbours, so its ids
stay a subset of the input ids (plus 0 where padding or rotation brings in new
pixels). Intensity transforms expect the image scaled to [0, 1], which is what
the datasets pass (they normalise with ``(x - mean) / std`` after augmenting).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage as ndi

from empanada_core.validation import check_int

__all__ = [
    "Compose",
    "RandomScale",
    "PadIfNeeded",
    "RandomCrop",
    "RandomRotate",
    "HorizontalFlip",
    "VerticalFlip",
    "RandomBrightnessContrast",
    "GaussianBlur",
    "GaussianNoise",
    "RandomInvert",
    "RandomGamma",
    "SectionArtefacts",
    "FactorPad",
    "default_train_augmentations",
    "eval_transform",
    "ORIGINAL_SCALE_RANGE",
]

#: The original's ``RandomScale(scale_limit=(-0.9, 1))``: factors U(0.1, 2.0).
ORIGINAL_SCALE_RANGE = (0.1, 2.0)


# --------------------------------------------------------------------- checks


def _check_prob(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"`p` must be a number in [0, 1]; got {p!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"`p` must be in [0, 1]; got {p!r}")
    return float(p)


def _check_range(value, arg_name, minimum=0.0, strict=False):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"`{arg_name}` must be two numbers (low, high); got {value!r}") from None
    low_ok = lo > minimum if strict else lo >= minimum
    if not (math.isfinite(lo) and math.isfinite(hi) and low_ok and lo <= hi):
        bound = "<" if strict else "<="
        raise ValueError(
            f"`{arg_name}` must be finite with {minimum:g} {bound} low <= high; got {value!r}"
        )
    return lo, hi


def _check_nonneg(value, arg_name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{arg_name}` must be a number; got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{arg_name}` must be a finite number >= 0; got {value!r}")
    return float(value)


def _check_pair(image, mask):
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise TypeError(f"`image` must be 2D; got shape {image.shape}")
    if mask.shape != image.shape:
        raise ValueError(
            f"`mask` (shape {mask.shape}) must have the same shape as `image` "
            f"(shape {image.shape})"
        )
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise TypeError(f"`mask` must hold integer ids; got dtype {mask.dtype}")
    return image, mask


def _check_float_image(image, what):
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"{what} needs a float image scaled to [0, 1]; got dtype {image.dtype}. "
            f"Scale it first, e.g. `image / 255` for uint8, or use the datasets, which "
            f"scale before augmenting"
        )


def _as_rng(rng):
    """A ``numpy.random.Generator`` from a Generator, an int seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"`rng` must be a numpy Generator, an int seed or None; got {rng!r}")


# ------------------------------------------------------------------ resampling


def _linear_indices(n_in, n_out):
    """Half-pixel-centred source positions for resizing ``n_in`` to ``n_out``."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize_linear(image, shape):
    """Bilinear resize of a 2D image with half-pixel centres (like ``cv2.INTER_LINEAR``)."""
    image = np.asarray(image, dtype=np.float32)
    y0, y1, wy = _linear_indices(image.shape[0], shape[0])
    x0, x1, wx = _linear_indices(image.shape[1], shape[1])
    rows = image[y0] * (1 - wy)[:, None] + image[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _resize_nearest(mask, shape):
    """Nearest-neighbour resize of a 2D label image (pixel centres), ids unchanged."""
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * (mask.shape[0] / shape[0])).astype(np.intp),
                    mask.shape[0] - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * (mask.shape[1] / shape[1])).astype(np.intp),
                    mask.shape[1] - 1)
    return mask[ys[:, None], xs[None, :]]


def _rotate_pair(image, mask, angle_deg):
    """Rotate both about the image centre, keeping the shape; zero fill outside."""
    h, w = image.shape
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy = (np.arange(h, dtype=np.float64) - cy)[:, None]
    dx = (np.arange(w, dtype=np.float64) - cx)[None, :]
    # inverse map: where each output pixel comes from
    sy = cos * dy - sin * dx + cy
    sx = sin * dy + cos * dx + cx

    # image: bilinear, neighbours outside the image contribute 0
    y0 = np.floor(sy).astype(np.intp)
    x0 = np.floor(sx).astype(np.intp)
    wy = (sy - y0).astype(np.float32)
    wx = (sx - x0).astype(np.float32)
    out = np.zeros((h, w), np.float32)
    src = image.astype(np.float32, copy=False)
    for oy, ox, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                           (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        out += np.where(inside, src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0) * weight

    # mask: nearest, 0 outside
    ry = np.floor(sy + 0.5).astype(np.intp)
    rx = np.floor(sx + 0.5).astype(np.intp)
    inside = (ry >= 0) & (ry < h) & (rx >= 0) & (rx < w)
    new_mask = np.where(inside, mask[np.clip(ry, 0, h - 1), np.clip(rx, 0, w - 1)], 0)
    return _cast_like(out, image.dtype), new_mask.astype(mask.dtype, copy=False)


def _cast_like(values, dtype):
    """Cast interpolated float values back to ``dtype`` (rounded for integers)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


# ------------------------------------------------------------------ transforms


class Compose:
    """Apply transforms in order to an (image, mask) pair.

    Parameters
    ----------
    transforms : sequence of callables
        Each is called as ``transform(image, mask, rng)`` and returns
        ``(image, mask)``.

    Examples
    --------
    >>> aug = Compose([HorizontalFlip(p=1.0)])
    >>> image = np.array([[0.0, 1.0]], np.float32)
    >>> mask = np.array([[0, 5]], np.uint8)
    >>> aug(image, mask, rng=0)
    (array([[1., 0.]], dtype=float32), array([[5, 0]], dtype=uint8))
    """

    def __init__(self, transforms):
        transforms = list(transforms)
        for t in transforms:
            if not callable(t):
                raise TypeError(f"`transforms` must hold callables; got {t!r}")
        self.transforms = transforms

    def __call__(self, image, mask, rng=None):
        """Transform ``(image, mask)``; ``rng`` is a Generator, an int seed or None."""
        rng = _as_rng(rng)
        image, mask = _check_pair(image, mask)
        for transform in self.transforms:
            image, mask = transform(image, mask, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def __repr__(self):
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class _Transform:
    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class RandomScale(_Transform):
    """Rescale by a random factor (image bilinear, mask nearest).

    Parameters
    ----------
    scale_range : (float, float), optional
        The factor is drawn uniformly from this range. The original used
        ``(0.1, 2.0)`` (:data:`ORIGINAL_SCALE_RANGE`); the default ``(0.5, 2.0)``
        keeps the effective pixel size within a factor 2 of the data's.
    p : float, optional
        Probability of applying it.
    """

    def __init__(self, scale_range=(0.5, 2.0), p=0.5):
        self.scale_range = _check_range(scale_range, "scale_range", strict=True)
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        if rng.random() >= self.p:
            return image, mask
        factor = rng.uniform(*self.scale_range)
        shape = tuple(max(1, round(n * factor)) for n in image.shape)
        if shape == image.shape:
            return image, mask
        out = _cast_like(_resize_linear(image, shape), image.dtype)
        return out, _resize_nearest(mask, shape)


class PadIfNeeded(_Transform):
    """Zero-pad (image and mask) to at least ``min_size`` x ``min_size``, centred."""

    def __init__(self, min_size=256):
        self.min_size = check_int(min_size, "min_size")

    def __call__(self, image, mask, rng):
        need = [max(0, self.min_size - n) for n in image.shape]
        if not any(need):
            return image, mask
        pad = [(n // 2, n - n // 2) for n in need]
        return np.pad(image, pad), np.pad(mask, pad)


class RandomCrop(_Transform):
    """Crop a random ``size`` x ``size`` window (image and mask alike)."""

    def __init__(self, size=256):
        self.size = check_int(size, "size")

    def __call__(self, image, mask, rng):
        h, w = image.shape
        if h < self.size or w < self.size:
            raise ValueError(
                f"cannot crop {self.size}x{self.size} from an image of shape {image.shape}; "
                f"put PadIfNeeded({self.size}) before RandomCrop"
            )
        y = int(rng.integers(0, h - self.size + 1))
        x = int(rng.integers(0, w - self.size + 1))
        window = (slice(y, y + self.size), slice(x, x + self.size))
        return image[window], mask[window]


class RandomRotate(_Transform):
    """Rotate by an angle drawn from U(-limit, limit) degrees about the centre.

    The shape is kept (corners are cut, new pixels are 0 in image and mask);
    the image is interpolated bilinearly, the mask with nearest neighbours.
    """

    def __init__(self, limit=180.0, p=0.5):
        self.limit = _check_nonneg(limit, "limit")
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        if rng.random() >= self.p:
            return image, mask
        angle = rng.uniform(-self.limit, self.limit)
        return _rotate_pair(image, mask, angle)


class HorizontalFlip(_Transform):
    """Mirror left-right with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        if rng.random() >= self.p:
            return image, mask
        return image[:, ::-1], mask[:, ::-1]


class VerticalFlip(_Transform):
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        if rng.random() >= self.p:
            return image, mask
        return image[::-1], mask[::-1]


class RandomBrightnessContrast(_Transform):
    """``clip(alpha * x + beta, 0, 1)``, alpha ~ 1 + U(-contrast, contrast), beta ~ U(-brightness, brightness)."""

    def __init__(self, brightness=0.3, contrast=0.3, p=0.5):
        self.brightness = _check_nonneg(brightness, "brightness")
        self.contrast = _check_nonneg(contrast, "contrast")
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        _check_float_image(image, "RandomBrightnessContrast")
        if rng.random() >= self.p:
            return image, mask
        alpha = 1.0 + rng.uniform(-self.contrast, self.contrast)
        beta = rng.uniform(-self.brightness, self.brightness)
        out = image * image.dtype.type(alpha) + image.dtype.type(beta)
        return np.clip(out, 0, 1, out=out), mask


class GaussianBlur(_Transform):
    """Blur the image (not the mask) with a sigma drawn from ``sigma_range`` pixels."""

    def __init__(self, sigma_range=(0.5, 1.5), p=0.5):
        self.sigma_range = _check_range(sigma_range, "sigma_range", strict=True)
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        _check_float_image(image, "GaussianBlur")
        if rng.random() >= self.p:
            return image, mask
        sigma = rng.uniform(*self.sigma_range)
        return ndi.gaussian_filter(image, sigma, mode="reflect"), mask


class GaussianNoise(_Transform):
    """Add N(0, s) noise, s drawn from ``std_range`` (in [0, 1] image units), then clip."""

    def __init__(self, std_range=(0.01, 0.05), p=0.5):
        self.std_range = _check_range(std_range, "std_range")
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        _check_float_image(image, "GaussianNoise")
        if rng.random() >= self.p:
            return image, mask
        std = rng.uniform(*self.std_range)
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
        out = image + noise.astype(image.dtype, copy=False)
        return np.clip(out, 0, 1, out=out), mask


class RandomInvert(_Transform):
    """``1 - x`` with probability ``p``: both contrast polarities (TEM and SEM-like)."""

    def __init__(self, p=0.5):
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        _check_float_image(image, "RandomInvert")
        if rng.random() >= self.p:
            return image, mask
        return 1 - image, mask


class RandomGamma(_Transform):
    """``x ** g`` with ``log(g)`` ~ U(-limit, limit): a non-linear contrast (detector) response.

    Parameters
    ----------
    limit : float, optional
        Half-width of the log-gamma range; 0.4 gives gammas 0.67-1.49.
    p : float, optional
        Probability of applying it.
    """

    def __init__(self, limit=0.4, p=0.5):
        self.limit = _check_nonneg(limit, "limit")
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        _check_float_image(image, "RandomGamma")
        if rng.random() >= self.p:
            return image, mask
        gamma = math.exp(rng.uniform(-self.limit, self.limit))
        out = np.clip(image, 0, 1)
        return np.power(out, image.dtype.type(gamma), out=out), mask


class SectionArtefacts(_Transform):
    """Missing and duplicated lines, as serial sectioning and scanning leave them.

    Draws 1 to ``max_bands`` bands of rows (or columns, at random) of
    1 to ``max_width`` pixels. Each band is either *missing* (filled with
    the image's mean intensity, a dropped scan line or a section gap) or
    *duplicated* (a copy of the line just before it, a stalled scan or a
    repeated section strip). The mask is kept: the model learns to bridge
    the gap.

    Parameters
    ----------
    max_bands : int, optional
        Most bands per image.
    max_width : int, optional
        Widest band, in pixels.
    p : float, optional
        Probability of applying it.
    """

    def __init__(self, max_bands=3, max_width=4, p=0.5):
        self.max_bands = check_int(max_bands, "max_bands")
        self.max_width = check_int(max_width, "max_width")
        self.p = _check_prob(p)

    def __call__(self, image, mask, rng):
        _check_float_image(image, "SectionArtefacts")
        if rng.random() >= self.p:
            return image, mask
        transpose = bool(rng.random() < 0.5)
        out = np.array(image.T if transpose else image, copy=True)
        n = out.shape[0]
        fill = out.dtype.type(out.mean()) if out.size else out.dtype.type(0)
        for _ in range(int(rng.integers(1, self.max_bands + 1))):
            width = int(rng.integers(1, min(self.max_width, n) + 1))
            start = int(rng.integers(0, n - width + 1))
            if start > 0 and rng.random() < 0.5:
                out[start:start + width] = out[start - 1]
            else:
                out[start:start + width] = fill
        return (out.T if transpose else out), mask


class FactorPad(_Transform):
    """Zero-pad image and mask at the bottom and right to a multiple of ``factor``."""

    def __init__(self, factor=128):
        self.factor = check_int(factor, "factor")

    def __call__(self, image, mask, rng=None):
        pad = [(0, -n % self.factor) for n in image.shape]
        if not any(after for _, after in pad):
            return image, mask
        return np.pad(image, pad), np.pad(mask, pad)


# --------------------------------------------------------------------- presets


def default_train_augmentations(patch_size=256, *, scale_range=(0.5, 2.0), rotate_limit=180.0,
                                brightness=0.3, contrast=0.3, invert_p=0.0, blur_p=0.0,
                                noise_p=0.0, gamma=0.0, artefact_p=0.0, scale_p=0.5):
    """The training augmentations: the original's pipeline with a milder scale range.

    Parameters
    ----------
    patch_size : int, optional
        Output size (square), as the crop size of the original.
    scale_range : (float, float), optional
        Range of the random scale factor (p=0.5). Pass
        :data:`ORIGINAL_SCALE_RANGE` ``(0.1, 2.0)`` to reproduce the original.
    rotate_limit : float, optional
        Rotation angles are drawn from U(-limit, limit) degrees (p=0.5).
    brightness, contrast : float, optional
        Limits of the brightness/contrast change (p=0.5).
    invert_p, blur_p, noise_p : float, optional
        Probabilities of the optional intensity inversion (applied first, so
        zero padding stays 0), Gaussian blur and Gaussian noise (applied last).
        0 (off) by default, as in the original.
    gamma : float, optional
        Limit of :class:`RandomGamma` (p=0.5); 0 (off) by default.
    artefact_p : float, optional
        Probability of :class:`SectionArtefacts` (missing or duplicated
        lines); 0 (off) by default.
    scale_p : float, optional
        Probability of the random rescale (pixel size change).

    Returns
    -------
    Compose
        Invert (optional) -> RandomScale -> PadIfNeeded -> RandomCrop ->
        RandomRotate -> RandomBrightnessContrast -> RandomGamma (optional) ->
        HorizontalFlip -> VerticalFlip -> SectionArtefacts (optional; after
        the rotation, so lines stay along the image axes) -> GaussianBlur
        (optional) -> GaussianNoise (optional).

    Notes
    -----
    The original scaled by U(0.1, 2.0): at 0.1 a 256-pixel patch shrinks to 26
    pixels, so the crop is mostly padding, and a 5 nm image is seen at 50 nm,
    outside the 3-15 nm range EM is usually segmented at. U(0.5, 2.0) keeps the
    effective pixel size within a factor of two of the data.

    Examples
    --------
    >>> aug = default_train_augmentations(64)
    >>> image, mask = aug(np.zeros((100, 80), np.float32), np.zeros((100, 80), np.uint16), rng=1)
    >>> image.shape, mask.shape, mask.dtype
    ((64, 64), (64, 64), dtype('uint16'))
    """
    patch_size = check_int(patch_size, "patch_size")
    transforms = []
    if invert_p:
        transforms.append(RandomInvert(p=invert_p))
    transforms += [
        RandomScale(scale_range, p=scale_p),
        PadIfNeeded(patch_size),
        RandomCrop(patch_size),
        RandomRotate(rotate_limit, p=0.5),
        RandomBrightnessContrast(brightness, contrast, p=0.5),
    ]
    if gamma:
        transforms.append(RandomGamma(gamma, p=0.5))
    transforms += [HorizontalFlip(p=0.5), VerticalFlip(p=0.5)]
    if artefact_p:
        transforms.append(SectionArtefacts(p=artefact_p))
    if blur_p:
        transforms.append(GaussianBlur(p=blur_p))
    if noise_p:
        transforms.append(GaussianNoise(p=noise_p))
    return Compose(transforms)


def eval_transform(padding_factor=128):
    """Evaluation transform: zero-pad bottom/right to a multiple of ``padding_factor``.

    Examples
    --------
    >>> image, mask = eval_transform(16)(np.ones((20, 33), np.float32), np.ones((20, 33), np.uint8))
    >>> image.shape, int(mask.sum())
    ((32, 48), 660)
    """
    return Compose([FactorPad(padding_factor)])
