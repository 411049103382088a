"""The EM-modality augmentations of v2: gamma and section artefacts, and the full pipeline."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empanada_train._augment import RandomGamma, SectionArtefacts, default_train_augmentations
from empanada_train._config import TrainConfig, TrainConfigError

V2 = dict(invert_p=0.2, blur_p=0.2, noise_p=0.2, gamma=0.4, artefact_p=0.2, scale_p=0.6)


def _ramp(h=32, w=40):
    return np.tile(np.linspace(0.05, 0.95, w, dtype=np.float32), (h, 1))


def test_gamma_is_monotone_keeps_the_range_and_the_mask():
    image, mask = _ramp(), np.arange(32 * 40, dtype=np.uint16).reshape(32, 40)
    out, out_mask = RandomGamma(limit=0.5, p=1.0)(image, mask, np.random.default_rng(1))
    assert out.dtype == np.float32
    assert out.shape == image.shape
    assert np.all(np.diff(out, axis=1) > 0)  # order of intensities kept
    assert 0 <= out.min()
    assert out.max() <= 1
    assert not np.allclose(out, image)
    assert out_mask is mask
    same, _ = RandomGamma(limit=0.5, p=0.0)(image, mask, np.random.default_rng(1))
    assert same is image


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(2, 40), w=st.integers(2, 40))
def test_section_artefacts_are_whole_lines(seed, h, w):
    rng = np.random.default_rng(seed)
    image = rng.random((h, w), dtype=np.float32)
    mask = rng.integers(0, 5, (h, w)).astype(np.uint8)
    out, out_mask = SectionArtefacts(max_bands=3, max_width=4, p=1.0)(image, mask, rng)
    assert out.shape == image.shape
    assert out.dtype == image.dtype
    assert out_mask is mask  # labels stay: the model learns to bridge the gap
    changed = out != image
    assert changed.any() or h * w < 9  # tiny images may draw a line equal to itself
    # every change lies in whole rows or whole columns, each constant (missing) or a
    # copy of another input line (duplicated)
    rows, cols = np.where(changed.any(1))[0], np.where(changed.any(0))[0]
    along_rows = all(np.allclose(out[r], out[r][0]) or
                     any(np.array_equal(out[r], image[k]) for k in range(h) if k != r)
                     for r in rows)
    along_cols = all(np.allclose(out[:, c], out[:, c][0]) or
                     any(np.array_equal(out[:, c], image[:, k]) for k in range(w) if k != c)
                     for c in cols)
    assert along_rows or along_cols


def test_section_artefacts_fill_missing_lines_with_the_mean():
    image = _ramp(64, 64).T.copy()  # rows differ
    seen_fill = seen_copy = False
    for seed in range(30):
        out, _ = SectionArtefacts(max_bands=1, max_width=2, p=1.0)(
            image, np.zeros((64, 64), np.uint8), np.random.default_rng(seed))
        diff_rows = np.where((out != image).any(1))[0]
        diff_cols = np.where((out != image).any(0))[0]
        lines = out[diff_rows] if len(diff_cols) == 64 else out[:, diff_cols].T
        seen_fill |= bool(np.allclose(lines, image.mean(), atol=1e-6))
        seen_copy |= bool(len(lines) and not np.allclose(lines, image.mean(), atol=1e-6))
    assert seen_fill
    assert seen_copy


def test_v2_pipeline_shapes_ids_and_range():
    aug = default_train_augmentations(64, **V2)
    rng = np.random.default_rng(0)
    image = rng.random((100, 90), dtype=np.float32)
    mask = np.zeros((100, 90), np.uint16)
    mask[20:50, 30:60] = 7
    for seed in range(20):
        out, out_mask = aug(image, mask, rng=seed)
        assert out.shape == (64, 64)
        assert out_mask.shape == (64, 64)
        assert set(np.unique(out_mask)) <= {0, 7}
        assert np.isfinite(out).all()
    names = [type(t).__name__ for t in aug.transforms]
    assert names.index("RandomGamma") > names.index("RandomBrightnessContrast")
    assert names.index("SectionArtefacts") > names.index("RandomRotate")  # lines stay on axes


def test_new_augmentation_keys_in_configs():
    cfg = TrainConfig.from_dict({"TRAIN": {"augmentations": {"gamma": 0.3, "artefact_p": 0.1,
                                                              "scale_p": 0.7}}})
    aug = cfg.train["augmentations"]
    assert (aug["gamma"], aug["artefact_p"], aug["scale_p"]) == (0.3, 0.1, 0.7)
    assert TrainConfig.from_dict({}).train["augmentations"]["artefact_p"] == 0.0  # off: as v1
    with pytest.raises(TrainConfigError, match="artefact_p"):
        TrainConfig.from_dict({"TRAIN": {"augmentations": {"artefact_p": 1.5}}})
    with pytest.raises(TrainConfigError, match="gamma"):
        TrainConfig.from_dict({"TRAIN": {"augmentations": {"gamma": -1}}})


def test_argument_errors():
    with pytest.raises(ValueError, match="limit"):
        RandomGamma(limit=-0.1)
    with pytest.raises(TypeError, match="max_bands"):
        SectionArtefacts(max_bands=1.5)
    with pytest.raises(ValueError, match="p"):
        SectionArtefacts(p=2)
    with pytest.raises(TypeError, match="float image"):
        RandomGamma(p=1.0)(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8),
                           np.random.default_rng(0))
