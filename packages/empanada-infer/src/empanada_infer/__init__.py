"""empanada-infer: 2D, stack and ortho-plane inference, image I/O and the CLI.

Public names load their module on first use (torch is imported only by the
engines).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    # reading and checking images
    "open_image": "_readers",
    "open_batch": "_readers",
    "iter_batch": "_readers",
    "check_image": "_readers",
    "UnreadableImageError": "_readers",
    "image_fingerprint": "_readers",
    "batch_output_names": "_readers",
    # normalisation
    "intensity_range": "_normalize",
    "normalize": "_normalize",
    "warn_if_narrow_dtype_range": "_normalize",
    # writing results
    "write_tiff": "_writers",
    "create_output": "_writers",
    "mark_done": "_writers",
    "is_done": "_writers",
    "done_keys": "_writers",
    "mark_complete": "_writers",
    "is_complete": "_writers",
    "output_lock": "_writers",
    "OutputLockedError": "_writers",
    # engines
    "SegmentationParams": "_engine",
    "Segmenter": "_engine",
    "InferenceCancelled": "_engine",
    "segment_image": "_engine",
    "segment_stack": "_engine",
    "segment_orthoplanes": "_engine",
    "ortho_merge": "_engine",
    "segment_stack_distributed": "_distributed",
    # blockwise inference on a Dask cluster
    "segment_blockwise": "_blockwise",
    "BlockwiseResult": "_blockwise",
    "connect_client": "_blockwise",
    "default_block_size": "_blockwise",
    "default_halo": "_blockwise",
    "PLANES": "_engine",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'empanada_infer' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
