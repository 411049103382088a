"""empanada-infer: 2D, stack, ortho-plane and multi-GPU inference, zarr I/O and the `empanada segment` command.

Skeleton package: it installs and imports; the implementation follows in #4.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
