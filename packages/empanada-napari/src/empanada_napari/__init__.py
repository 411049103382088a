"""empanada-napari: the napari plugin of empanada (npe2 manifest ``napari.yaml``).

Widgets (Plugins > empanada): 2D Inference (Parameter Testing), 3D Inference,
Export Segmentations, Register / Get info / Export / Import / Archive a model.
They collect parameters, call the engines of ``empanada_infer`` and
``empanada_models`` in napari thread workers and put the results into layers.
Importing this package imports neither torch nor Qt; napari loads each widget
module when its menu entry is first used.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
