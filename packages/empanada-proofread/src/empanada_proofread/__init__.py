"""empanada-proofread: proofreading edits on numpy and zarr label arrays.

Merge, delete, split, morph, filter, count and locate labels, in place, each
inside the bounding boxes of the objects it touches (a label index keeps the
boxes and voxel counts up to date), every edit all-or-nothing and undoable
from a sparse diff. Needs only empanada-core (numpy, scipy, scikit-image);
zarr arrays are edited chunk by chunk when zarr is installed.

Points are ``(n, labels.ndim)`` integer voxel coordinates. 3D labels are
edited as whole objects (``in_3d=True``) or per slice along ``axis``
(``in_3d=False``, for stacks of 2D results); 4D flipbooks (N x slices x H x W)
per (patch, slice) plane.
"""

from ._arrays import LabelsError
from ._editor import LabelEditor
from ._filters import LabelTable, count_labels, remove_boundary_labels, remove_small_labels
from ._index import LabelIndex, forget_index, label_index
from ._ops import (
    Location,
    NothingToSplitError,
    delete_labels,
    locate_label,
    merge_labels,
    morph_labels,
    next_available_label,
    split_label,
)
from ._record import Edit, EditRecord

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "merge_labels",
    "delete_labels",
    "split_label",
    "morph_labels",
    "remove_small_labels",
    "remove_boundary_labels",
    "locate_label",
    "next_available_label",
    "count_labels",
    "LabelEditor",
    "LabelIndex",
    "label_index",
    "forget_index",
    "Edit",
    "EditRecord",
    "Location",
    "LabelTable",
    "LabelsError",
    "NothingToSplitError",
]
