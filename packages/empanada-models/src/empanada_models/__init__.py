"""empanada-models: Model architectures (Panoptic-DeepLab / Panoptic-BiFPN with PointRend), TorchScript and int8 export, and the model registry.

Skeleton package: it installs and imports; the implementation follows in #3.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
