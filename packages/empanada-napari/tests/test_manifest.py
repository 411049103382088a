"""The npe2 manifest: valid, every widget and sample loads, napari start-up stays light."""

import subprocess
import sys

import pytest

npe2 = pytest.importorskip("npe2")

WIDGETS = ["2D Inference (Parameter Testing)", "3D Inference", "Export Segmentations",
           "Merge Labels", "Delete Labels", "Split Labels", "Morph Labels", "Filter Labels",
           "Count Labels", "Jump to label", "Find next available label",
           "Pick finetune/training patches", "Save finetune/training patches",
           "Finetune a model", "Train a model", "Register a model", "Get model info", "Export a model", "Import a model",
           "Archive a model"]


def manifest():
    return npe2.PluginManifest.from_distribution("empanada-napari")


def test_manifest_is_valid_and_lists_the_spec_widgets():
    m = manifest()
    assert m.name == "empanada-napari"
    assert [w.display_name for w in m.contributions.widgets] == WIDGETS
    # every command resolves to an importable object
    for cmd in m.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr)), cmd.python_name


def test_importing_the_plugin_and_reading_the_manifest_does_not_import_torch_or_qt():
    code = ("import sys, npe2, empanada_napari; "
            "npe2.PluginManifest.from_distribution('empanada-napari'); "
            "bad = [m for m in ('torch', 'qtpy', 'napari._qt') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_sample_is_real_em(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("empanada-napari", "vnc_sstem")
    layer = viewer.layers[-1]
    assert layer.data.shape == (20, 256, 256)
    assert layer.data.dtype.name == "uint8"
    assert tuple(layer.scale) == (50.0, 4.6, 4.6)
    assert layer.data.std() > 10  # an image, not a blank


def test_lucchi_sample_reads_the_shared_data(make_napari_viewer, lucchi):
    viewer = make_napari_viewer()
    viewer.open_sample("empanada-napari", "lucchi_fibsem")
    assert viewer.layers[-1].data.shape == (32, 384, 384)
