"""Image reading and normalisation, re-exported from empanada-core.

They live in :mod:`empanada_core` because training reads images too and must not
depend on the inference package for it; ``empanada_infer.open_image`` and the
other names stay importable from here.
"""

from empanada_core import (
    UnreadableImageError,
    batch_output_names,
    check_image,
    image_fingerprint,
    intensity_range,
    iter_batch,
    list_batch,
    normalize,
    open_batch,
    open_image,
    warn_if_narrow_dtype_range,
)
from empanada_core._normalize import (  # noqa: F401  (private helpers used by infer)
    _check_numeric_dtype,
    _sample_values,
)
from empanada_core._readers import _as_path  # noqa: F401

__all__ = [
    "UnreadableImageError", "batch_output_names", "check_image", "image_fingerprint",
    "intensity_range", "iter_batch", "list_batch", "normalize", "open_batch", "open_image",
    "warn_if_narrow_dtype_range",
]
