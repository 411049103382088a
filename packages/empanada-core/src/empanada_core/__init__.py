"""empanada-core: from network outputs to 2D and 3D panoptic segmentations.

Pure functions over numpy arrays (and, for 2D postprocessing, torch tensors).
Importing this package imports neither torch nor napari; public names load
their module on first use.

Panoptic ids follow the original empanada convention:
``class_id * label_divisor + instance_id`` (stuff classes: ``class_id * label_divisor``).
"""

import lazy_loader

__version__ = "0.1.0"

# private module -> the public names it defines; each module loads on first use
__getattr__, __dir__, _public = lazy_loader.attach(
    __name__,
    submodules=["io", "validation"],
    submod_attrs={
        "_panoptic": [
            "logits_to_probabilities", "harden_semantic", "find_instance_centers",
            "group_pixels", "merge_semantic_and_instance", "split_connected_instances",
            "panoptic_postprocess",
        ],
        "_median": [
            "MedianFilter", "median_filter_stack",
        ],
        "_stack": [
            "StackAssembler", "assemble_stack", "AssemblyResult",
        ],
        "_filters": [
            "remove_small_objects", "remove_pancakes", "object_stats", "ObjectStats",
        ],
        "_consensus": [
            "ortho_consensus", "semantic_consensus",
        ],
        "_metrics": [
            "contingency_table", "Contingency", "Matching", "match_instances",
            "instance_metrics", "panoptic_quality", "semantic_iou", "evaluate_segmentation",
        ],
        "_readers": [
            "open_image", "open_batch", "iter_batch", "list_batch", "check_image",
            "UnreadableImageError", "image_fingerprint", "batch_output_names",
        ],
        "_normalize": [
            "intensity_range", "normalize", "warn_if_narrow_dtype_range",
        ],
        "_labels": [
            "relabel_sequential", "label_dtype", "label_ids", "connected_components_per_label",
            "fill_holes_per_label", "erode_labels", "dilate_labels", "split_panoptic",
        ],
    },
)
__all__ = ["__version__", *_public]
