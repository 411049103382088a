"""empanada-proofread: Merge, split, delete and jump: label edits on arrays for proofreading.

Skeleton package: it installs and imports; the implementation follows in a later issue.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
