"""Input checks shared by every package.

Each check raises ``TypeError`` for a wrong kind of input (dtype, ndim) and
``ValueError`` for wrong values, and names the argument and what it received,
so that the message tells the caller what to change. The other packages
(models, infer, train, proofread, napari) use these instead of their own.

Examples
--------
>>> from empanada_core.validation import check_int, check_float
>>> check_int(3, "iterations")
3
>>> check_float(0.5, "threshold", low=0, high=1)
0.5
>>> check_int(0, "iterations")
Traceback (most recent call last):
    ...
ValueError: `iterations` must be >= 1; got 0
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_int",
    "check_int_list",
    "check_float",
    "check_choice",
    "check_ndim",
    "check_same_shape",
    "check_finite",
    "check_label_image",
    "check_positive_int",
    "check_odd_window",
    "check_probability",
    "check_label_divisor",
    "check_grid_factor",
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
            f"`{arg_name}` must hold integer ids; got dtype {labels.dtype}. Round and cast "
            f"label images explicitly (for example `.astype(np.uint32)`)"
        )
    if (check_negative and np.issubdtype(labels.dtype, np.signedinteger) and labels.size
            and labels.min() < 0):
        raise ValueError(f"`{arg_name}` contains negative ids (min {labels.min()})")
    return labels


def check_int(value, arg_name, minimum=1, maximum=None):
    """Return ``value`` as an int if it is an integer in [``minimum``, ``maximum``].

    Parameters
    ----------
    value : object
        The value to check; bools are refused (``True`` is not a count).
    arg_name : str
        The name shown in the error message (a keyword, or a CLI flag such as
        ``--iterations``).
    minimum, maximum : int or None, optional
        Inclusive bounds; None for no bound. Default: at least 1.

    Raises
    ------
    TypeError
        ``value`` is not an integer.
    ValueError
        ``value`` is out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{arg_name}` must be an integer; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{arg_name}` must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{arg_name}` must be <= {maximum}; got {value}")
    return int(value)


#: Historical name of :func:`check_int` with the default ``minimum=1``.
check_positive_int = check_int


def check_int_list(values, arg_name, minimum=None, *, allow_empty=True):
    """Return ``values`` (a sequence of integers) as a list of ints.

    Each item is checked with :func:`check_int` (``minimum`` applies to every
    item); strings are refused even though they are sequences.
    """
    if isinstance(values, (str, bytes)) or np.ndim(values) > 1:
        raise TypeError(f"`{arg_name}` must be a sequence of integers; got {values!r}")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"`{arg_name}` must be a sequence of integers; got {values!r}") from None
    if not items and not allow_empty:
        raise ValueError(f"`{arg_name}` must not be empty")
    return [check_int(v, f"{arg_name}[{i}]", minimum) for i, v in enumerate(items)]


def check_float(value, arg_name, low=None, high=None, *, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a finite real number within the bounds.

    Parameters
    ----------
    value : object
        The value to check; bools are refused.
    arg_name : str
        The name shown in the error message.
    low, high : float or None, optional
        Bounds; None for no bound.
    low_open, high_open : bool, optional
        Exclude the bound itself (``low < value`` rather than ``low <= value``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{arg_name}` must be a number; got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{arg_name}` must be finite; got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"`{arg_name}` must be in {left}{lo}, {hi}{right}; got {value:g}")
    return value


def check_choice(value, arg_name, choices):
    """Return ``value`` if it is one of ``choices``; the error lists them."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{arg_name}` must be one of {listed}; got {value!r}")
    return value


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


def check_grid_factor(full_shape, grid_shape):
    """The integer factor between a full-resolution grid and a coarser one.

    Raises ``ValueError`` unless both axes of ``full_shape`` are the same
    integer multiple of ``grid_shape`` (the semantic image and the centre
    heatmap of a Panoptic-DeepLab output).
    """
    fy, ry = divmod(full_shape[0], grid_shape[0])
    fx, rx = divmod(full_shape[1], grid_shape[1])
    if ry or rx or fy != fx or fy < 1:
        raise ValueError(
            f"the semantic image (shape {tuple(full_shape)}) must be the centre heatmap "
            f"(shape {tuple(grid_shape)}) scaled by one integer factor in both axes"
        )
    return fy


def check_label_divisor(label_divisor, class_ids=()):
    """Validate ``label_divisor`` against the class ids it must encode."""
    label_divisor = check_positive_int(label_divisor, "label_divisor", minimum=2)
    for c in class_ids:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
            raise ValueError(f"class ids must be non-negative integers; got {c!r}")
    if class_ids and max(class_ids) * label_divisor + label_divisor - 1 > np.iinfo(np.uint64).max:
        raise ValueError("`label_divisor` times the largest class id overflows uint64")
    return label_divisor
