"""Input checks shared by every public function.

Each check raises ``TypeError`` for a wrong kind of input (dtype, ndim) and
``ValueError`` for wrong values, and names the argument and what it received,
so that the message tells the caller what to change.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_ndim",
    "check_same_shape",
    "check_finite",
    "check_label_image",
    "check_positive_int",
    "check_odd_window",
    "check_probability",
    "check_label_divisor",
    "is_torch_tensor",
]


def is_torch_tensor(x) -> bool:
    """True when ``x`` is a torch tensor, without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def check_ndim(array, ndim, arg_name="image"):
    """Raise ``TypeError`` unless ``array.ndim`` is ``ndim`` (an int or a tuple of ints)."""
    allowed = (ndim,) if isinstance(ndim, numbers.Integral) else tuple(ndim)
    if array.ndim not in allowed:
        want = " or ".join(f"{n}D" for n in allowed)
        raise TypeError(
            f"`{arg_name}` must be {want}; got a {array.ndim}D array with shape "
            f"{tuple(array.shape)}"
        )


def check_same_shape(a, b, a_name, b_name):
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"`{b_name}` (shape {tuple(b.shape)}) must have the same shape as "
            f"`{a_name}` (shape {tuple(a.shape)})"
        )


def check_finite(array, arg_name):
    """Raise ``ValueError`` if a floating array holds NaN or infinity."""
    if is_torch_tensor(array):
        import torch

        if array.is_floating_point() and not bool(torch.isfinite(array).all()):
            raise ValueError(f"`{arg_name}` contains NaN or infinite values")
        return
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"`{arg_name}` contains NaN or infinite values")


def check_label_image(labels, arg_name="labels", ndim=None, check_negative=True):
    """Return ``labels`` as an integer ndarray, or raise a clear error.

    Booleans are refused (they are masks, not labels) and negative ids too
    (unless ``check_negative`` is off, for callers that check the ids they
    meet in their own pass over the data).
    """
    labels = np.asarray(labels)
    if ndim is not None:
        check_ndim(labels, ndim, arg_name)
    if labels.dtype == bool:
        raise TypeError(
            f"`{arg_name}` is a boolean mask, not a label image; label it first "
            "(e.g. skimage.measure.label) or use `.astype(np.uint8)` for a single object"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"`{arg_name}` must hold integer ids; got dtype {labels.dtype}"
        )
    if (check_negative and np.issubdtype(labels.dtype, np.signedinteger) and labels.size
            and labels.min() < 0):
        raise ValueError(f"`{arg_name}` contains negative ids (min {labels.min()})")
    return labels


def check_positive_int(value, arg_name, minimum=1):
    """Return ``value`` as an int if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{arg_name}` must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"`{arg_name}` must be >= {minimum}; got {value}")
    return int(value)


def check_odd_window(size, arg_name="size"):
    """Return ``size`` if it is a positive odd integer."""
    size = check_positive_int(size, arg_name)
    if size % 2 == 0:
        raise ValueError(f"`{arg_name}` must be odd (1, 3, 5, ...); got {size}")
    return size


def check_probability(value, arg_name):
    """Return ``value`` as a float in [0, 1]."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"`{arg_name}` must be a number in [0, 1]; got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{arg_name}` must be in [0, 1]; got {value}")
    return float(value)


def check_label_divisor(label_divisor, class_ids=()):
    """Validate ``label_divisor`` against the class ids it must encode."""
    label_divisor = check_positive_int(label_divisor, "label_divisor", minimum=2)
    for c in class_ids:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
            raise ValueError(f"class ids must be non-negative integers; got {c!r}")
    if class_ids and max(class_ids) * label_divisor + label_divisor - 1 > np.iinfo(np.uint64).max:
        raise ValueError("`label_divisor` times the largest class id overflows uint64")
    return label_divisor
