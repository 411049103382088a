"""empanada-napari: The napari plugin (npe2 manifest, magicgui widgets).

Skeleton package: it installs and imports; the implementation follows in a later issue.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
