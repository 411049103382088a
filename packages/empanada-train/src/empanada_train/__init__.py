"""empanada-train: Patch picking, dataset storage, targets, losses, training and finetuning.

Skeleton package: it installs and imports; the implementation follows in #5.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
