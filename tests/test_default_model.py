"""The built-in default model (MitoLite_v1) on real EM it never saw in training.

MitoLite_v1 was trained on the training parts of the three shared datasets; these
tests run it on their held-out parts (configs/mitolite_data.py: Lucchi x >= 768,
Drosophila y >= 768, FAFB y >= 1302), through the public inference API, as the
README's main job does. The bars are below the scores in docs/models.md (measured on
every held-out slice), so they catch a broken model or pipeline, not small drifts.
"""

import numpy as np
import pytest

pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

import empanada_core as ec  # noqa: E402
import empanada_infer as ei  # noqa: E402
from empanada_core.testing import data_path  # noqa: E402

pytestmark = pytest.mark.realdata

#: dataset folder, held-out window (z, y, x) of a few slices, pooled F1@0.5 bar
HELD_OUT = {
    "lucchi": ("lucchi_epfl_hippocampus", (slice(8, 64, 14), slice(None), slice(768, None)),
               0.6),
    "drosophila": ("drosophila_vnc_sstem", (slice(2, 20, 5), slice(768, None), slice(None)),
                   0.5),
    "fafb": ("fafb_mito_sstem", (slice(0, 2), slice(1302, None), slice(None)), 0.65),
}


@pytest.fixture(scope="module")
def segmenter():
    return ei.Segmenter.from_registry(None, device="cpu")


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_held_out_2d_scores(segmenter, name):
    folder, window, bar = HELD_OUT[name]
    images = tifffile.imread(data_path(folder) / "images.tif")[window]
    truth = tifffile.imread(data_path(folder) / "mito_instances_2d.tif")[window]
    assert segmenter.config.name == "MitoLite_v1"
    preds = np.stack([segmenter.segment_image(image) for image in images])
    assert preds.dtype == np.uint32
    assert set(np.unique(preds[preds > 0]) // 10000) == {1}
    pooled = ec.evaluate_segmentation(truth, preds, iou_thresholds=(0.5,),
                                      per_slice=True)["per_slice"]["pooled"]
    assert pooled["instance"]["0.5"]["f1"] >= bar, (name, pooled["instance"]["0.5"])
    assert pooled["semantic_iou"] >= bar, (name, pooled["semantic_iou"])


def test_held_out_stack_gives_3d_objects(segmenter):
    folder, _, _ = HELD_OUT["lucchi"]
    vol = tifffile.imread(data_path(folder) / "images.tif")[20:36, 256:512, 768:]
    truth = tifffile.imread(data_path(folder) / "mito_instances_3d.tif")[20:36, 256:512, 768:]
    pred = segmenter.segment_stack(vol)
    assert pred.shape == vol.shape
    assert ec.semantic_iou(truth, pred) >= 0.6
    assert 0 < len(np.unique(pred)) - 1 <= 3 * (len(np.unique(truth)) - 1) + 3
