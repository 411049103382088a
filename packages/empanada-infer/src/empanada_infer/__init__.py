"""empanada-infer: 2D, stack and ortho-plane inference, image I/O and the CLI.

Public names load their module on first use (torch is imported only by the
engines).
"""

import lazy_loader

__version__ = "0.1.0"

# private module -> the public names it defines; each module loads on first use
__getattr__, __dir__, _public = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_image_io": [  # defined in empanada_core, shared with training
            "open_image", "open_batch", "iter_batch", "list_batch", "check_image",
            "UnreadableImageError", "image_fingerprint", "batch_output_names",
            "intensity_range", "normalize", "warn_if_narrow_dtype_range",
        ],
        "_writers": [
            "write_tiff", "create_output", "mark_done", "is_done", "done_keys",
            "mark_complete", "is_complete", "output_lock", "OutputLockedError",
        ],
        "_params": [
            "SegmentationParams", "InferenceCancelled", "PLANES",
        ],
        "_precision": [
            "cpu_has_bf16_matrix_units",
        ],
        "_segmenter": [
            "Segmenter", "segment_image", "segment_stack", "segment_orthoplanes",
        ],
        "_ortho": [
            "ortho_merge",
        ],
        "_distributed": [
            "segment_stack_distributed",
        ],
        "_blockwise": [
            "segment_blockwise", "BlockwiseResult", "connect_client", "default_block_size",
            "default_halo",
        ],
    },
)
__all__ = ["__version__", *_public]
