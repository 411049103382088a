"""Training targets of Panoptic-DeepLab style models: centre heatmap and offsets.

One vectorised pass over the instance mask (``np.unique`` plus ``bincount``
centroids and lookup tables), one separable Gaussian blur: no per-instance loop.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage as ndi

from empanada_core.validation import check_label_image

__all__ = ["heatmap_and_offsets", "gaussian_kernel_size"]


def gaussian_kernel_size(sigma):
    """Number of taps OpenCV uses for a float Gaussian blur with ``sigma``.

    ``cv2.GaussianBlur(..., ksize=(0, 0), sigmaX=sigma)`` on float32 images uses
    ``round(8 * sigma + 1) | 1`` taps (4 sigma each side), which the original
    heatmap targets inherit.

    Parameters
    ----------
    sigma : float
        Standard deviation of the Gaussian, in pixels (> 0).

    Returns
    -------
    size : int
        Odd kernel size; the kernel radius is ``size // 2``.

    Examples
    --------
    >>> gaussian_kernel_size(6)
    49
    """
    sigma = _check_sigma(sigma)
    return int(round(8 * sigma + 1)) | 1


def _check_sigma(sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"`sigma` must be a number; got {sigma!r}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"`sigma` must be a positive finite number; got {sigma!r}")
    return float(sigma)


def _check_instance_mask(mask, arg_name="instance_mask"):
    if mask.ndim != 2:
        raise TypeError(f"`{arg_name}` must be a 2D label image; got shape {mask.shape}")
    check_label_image(mask, arg_name)


def heatmap_and_offsets(instance_mask, sigma=6):
    """Centre heatmap and offset targets of an instance mask.

    Parameters
    ----------
    instance_mask : (H, W) ndarray or torch.Tensor of int
        Instance ids; 0 is background, every positive id is one instance.
    sigma : float, optional
        Standard deviation of the Gaussian placed on each centre, in pixels.

    Returns
    -------
    heatmap : (1, H, W) ndarray of float32
        Sum of one Gaussian per instance, centred on the pixel
        ``(int(cy), int(cx))`` of its centroid, divided by the global maximum
        (so an isolated peak is 1). All zeros when there is no instance.
    offsets : (2, H, W) ndarray of float32
        ``(cy - row, cx - col)`` of the instance each pixel belongs to (channel
        0 is dy, channel 1 is dx, in pixels); 0 on the background.

    Both are torch tensors when ``instance_mask`` is one.

    Raises
    ------
    TypeError
        If the mask is not 2D or not integer (a boolean mask is refused with a
        hint to label it first), or ``sigma`` is not a number.
    ValueError
        If the mask has negative ids or ``sigma`` is not positive.

    Notes
    -----
    As the original (``empanada.data.utils.heatmap_and_offsets``): centroids are
    float means of the pixel coordinates, the peaks are blurred with a Gaussian
    of :func:`gaussian_kernel_size` taps (49 for sigma 6) and a zero (constant)
    border, overlapping Gaussians add up, and the sum is normalised by its
    global maximum. Instances sharing a peak pixel put a single 1 there, as in
    the original.

    Examples
    --------
    >>> mask = np.zeros((5, 5), np.uint8)
    >>> mask[1:4, 1:4] = 7
    >>> heat, off = heatmap_and_offsets(mask, sigma=1)
    >>> heat.shape, off.shape, float(heat[0, 2, 2])
    ((1, 5, 5), (2, 5, 5), 1.0)
    >>> off[0, 1:4, 2].tolist(), off[1, 2, 1:4].tolist()
    ([1.0, 0.0, -1.0], [1.0, 0.0, -1.0])
    """
    is_tensor = type(instance_mask).__module__.startswith("torch")
    if is_tensor:
        import torch

        device = instance_mask.device
        mask = instance_mask.detach().cpu().numpy()
    else:
        mask = np.asarray(instance_mask)
    _check_instance_mask(mask)
    sigma = _check_sigma(sigma)
    heat, offsets = _heatmap_and_offsets(mask, sigma)
    if is_tensor:
        return torch.from_numpy(heat).to(device), torch.from_numpy(offsets).to(device)
    return heat, offsets


# dense lookup tables are used when the largest id is below this (else np.unique)
_DENSE_IDS = 1 << 22
# above this many distinct peaks the blur is a full-image filter instead of a matmul
_MATMUL_PEAKS = 512


def _gaussian_kernel(sigma):
    """The normalised 1D kernel of :func:`gaussian_kernel_size` taps (as scipy and OpenCV)."""
    radius = gaussian_kernel_size(sigma) // 2
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _blurred_peaks(shape, py, px, sigma):
    """Zero-border Gaussian blur of an image that is 1 at (py, px) and 0 elsewhere.

    A blurred delta is the outer product of two 1D kernels, so the sum over K
    peaks is one (H, K) @ (K, W) product: exact, and much cheaper than filtering
    the whole image when K is small.
    """
    h, w = shape
    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    if len(py) > _MATMUL_PEAKS:
        heat = np.zeros(shape, np.float64)
        heat[py, px] = 1.0
        return ndi.gaussian_filter(heat, sigma, mode="constant", cval=0.0, radius=radius)

    def profiles(peaks, n):
        d = np.arange(n)[None, :] - peaks[:, None]
        return np.where(np.abs(d) <= radius, kernel[np.clip(d + radius, 0, 2 * radius)], 0.0)

    return profiles(py, h).T @ profiles(px, w)


def _heatmap_and_offsets(mask, sigma):
    h, w = mask.shape
    heat = np.zeros((h, w), np.float32)
    offsets = np.zeros((2, h, w), np.float32)
    flat = mask.ravel()
    top = int(flat.max()) if flat.size else 0
    if top == 0:
        return heat[None], offsets
    if top < _DENSE_IDS:
        labels = flat.astype(np.intp, copy=False)
        ids = np.arange(top + 1)
    else:  # huge ids: compact them first
        ids, labels = np.unique(flat, return_inverse=True)
        labels = labels.reshape(-1)
    n = len(ids)
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    counts = np.bincount(labels, minlength=n)
    present = (counts > 0) & (ids > 0)
    safe = np.maximum(counts, 1)
    cy = np.where(present, np.bincount(labels, weights=rows, minlength=n) / safe, 0.0)
    cx = np.where(present, np.bincount(labels, weights=cols, minlength=n) / safe, 0.0)

    # one peak per distinct centre pixel (instances sharing one put a single 1 there)
    peaks = np.unique(cy[present].astype(np.intp) * w + cx[present].astype(np.intp))
    blurred = _blurred_peaks((h, w), peaks // w, peaks % w, sigma)
    peak = blurred.max()
    if peak > 0:
        heat[:] = blurred / peak

    inside = present[labels]
    offsets[0] = np.where(inside, cy[labels] - rows, 0.0).reshape(h, w)
    offsets[1] = np.where(inside, cx[labels] - cols, 0.0).reshape(h, w)
    return heat[None], offsets
