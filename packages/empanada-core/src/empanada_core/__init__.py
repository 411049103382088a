"""empanada-core: from network outputs to 2D and 3D panoptic segmentations.

Pure functions over numpy arrays (and, for 2D postprocessing, torch tensors).
Importing this package imports neither torch nor napari; public names load
their module on first use.

Panoptic ids follow the original empanada convention:
``class_id * label_divisor + instance_id`` (stuff classes: ``class_id * label_divisor``).
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> private module that defines it
_EXPORTS = {
    # 2D panoptic postprocessing
    "logits_to_probabilities": "_panoptic",
    "harden_semantic": "_panoptic",
    "find_instance_centers": "_panoptic",
    "group_pixels": "_panoptic",
    "merge_semantic_and_instance": "_panoptic",
    "split_connected_instances": "_panoptic",
    "panoptic_postprocess": "_panoptic",
    # streaming median of semantic probabilities
    "MedianFilter": "_median",
    "median_filter_stack": "_median",
    # slices -> 3D objects
    "StackAssembler": "_stack",
    "assemble_stack": "_stack",
    "AssemblyResult": "_stack",
    # 3D filters
    "remove_small_objects": "_filters",
    "remove_pancakes": "_filters",
    "object_stats": "_filters",
    "ObjectStats": "_filters",
    # ortho-plane consensus
    "ortho_consensus": "_consensus",
    "semantic_consensus": "_consensus",
    # metrics
    "contingency_table": "_metrics",
    "Contingency": "_metrics",
    "Matching": "_metrics",
    "match_instances": "_metrics",
    "instance_metrics": "_metrics",
    "panoptic_quality": "_metrics",
    "semantic_iou": "_metrics",
    "evaluate_segmentation": "_metrics",
    # label utilities
    "relabel_sequential": "_labels",
    "label_dtype": "_labels",
    "label_ids": "_labels",
    "connected_components_per_label": "_labels",
    "fill_holes_per_label": "_labels",
    "erode_labels": "_labels",
    "dilate_labels": "_labels",
    "split_panoptic": "_labels",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'empanada_core' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
