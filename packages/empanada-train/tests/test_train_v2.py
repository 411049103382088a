"""Training engine v2: exact resume, time-based checkpoints, channels_last, bf16, sample stream."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from empanada_train import SampleStream, SingleClassInstanceDataset, example_weights
from empanada_train._config import TrainConfig, TrainConfigError
from empanada_train._loop import _float_outputs, load_checkpoint
from empanada_train._setup import cpu_has_native_bf16, resolve_precision
from empanada_train._train import train

TINY_MODEL = {
    "arch": "PanopticDeepLabPR", "encoder": "regnety_200mf", "stage4_stride": 32,
    "decoder_channels": 32, "low_level_channels_project": [16], "train_num_points": 128,
    "subdivision_num_points": 512,
}


def tiny_config(train_dir, model_dir, **train_keys):
    return {
        "model_name": "TinyNet",
        "MODEL": dict(TINY_MODEL),
        "TRAIN": {"train_dir": str(train_dir), "model_dir": str(model_dir), "batch_size": 4,
                  "patch_size": 64, "iterations": 4, **train_keys},
    }


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Dark blobs on a bright noisy background, as <root>/src/images|masks."""
    import tifffile

    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    (root / "src" / "images").mkdir(parents=True)
    (root / "src" / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:64, :64]
    for i in range(6):
        image = rng.normal(190, 10, (64, 64))
        mask = np.zeros((64, 64), np.uint32)
        for k in range(3):
            cy, cx = rng.integers(14, 50, 2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(25, 80)
            mask[blob & (mask == 0)] = k + 1
            image[blob] -= 110
        tifffile.imwrite(root / "src" / "images" / f"im{i}.tif",
                         np.clip(image, 0, 255).astype(np.uint8))
        tifffile.imwrite(root / "src" / "masks" / f"im{i}.tif", mask)
    return root


def _weights(path):
    return load_checkpoint(path)["model"]


# ------------------------------------------------------------------ SampleStream


def test_sample_stream_depends_only_on_seed_and_iteration():
    weights = example_weights(["a"] * 5 + ["b"] * 2, gamma=1.0)
    whole = list(SampleStream(weights, 3, seed=7, stop=10))
    resumed = list(SampleStream(weights, 3, seed=7, start=6, stop=10))
    assert len(whole) == 10
    assert all(len(b) == 3 for b in whole)
    assert resumed == whole[6:]
    assert list(SampleStream(weights, 3, seed=8, stop=10)) != whole
    # endless by default, and each pair is (example index, augmentation seed)
    stream = iter(SampleStream(weights, 2, seed=0))
    first = [next(stream) for _ in range(50)]
    assert all(0 <= i < 7 and 0 <= s < 2**62 for batch in first for i, s in batch)


def test_sample_stream_balances_the_sources():
    sources = ["big"] * 90 + ["small"] * 10
    stream = SampleStream(example_weights(sources, gamma=1.0), 50, seed=1, stop=40)
    picks = np.array([i for batch in stream for i, _ in batch])
    share_small = np.mean(picks >= 90)
    assert abs(share_small - 0.5) < 0.05  # each source about half, not 10 %


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), batch=st.integers(1, 6), seed=st.integers(0, 2**31),
       start=st.integers(0, 50))
def test_sample_stream_batches_are_reproducible(n, batch, seed, start):
    weights = np.linspace(0.1, 1.0, n)
    stream = SampleStream(weights, batch, seed=seed)
    again = SampleStream(weights, batch, seed=seed, start=start, stop=start + 2)
    assert list(again) == [stream.batch(start), stream.batch(start + 1)]
    assert all(0 <= i < n for i, _ in stream.batch(start))


def test_sample_stream_rejects_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        SampleStream([], 2)
    with pytest.raises(ValueError, match="not all zero"):
        SampleStream([0.0, 0.0], 2)
    with pytest.raises(TypeError, match="batch_size"):
        SampleStream([1.0], 2.5)
    with pytest.raises(ValueError, match="batch_size"):
        SampleStream([1.0], 0)
    with pytest.raises(TypeError, match="endless"):
        len(SampleStream([1.0], 1))


def test_dataset_items_with_an_explicit_seed_are_reproducible(blobs):
    from empanada_train import load_dataset
    from empanada_train._augment import default_train_augmentations

    ds = SingleClassInstanceDataset(load_dataset(blobs), default_train_augmentations(
        48, invert_p=0.5, gamma=0.4, artefact_p=0.5, noise_p=0.5))
    a, b, c = ds[(2, 123)], ds[(2, 123)], ds[(2, 124)]
    assert torch.equal(a["image"], b["image"])
    assert torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


# ------------------------------------------------------------- precision, memory


def test_precision_on_cpu_follows_amp_cpu(blobs, tmp_path):
    cpu = torch.device("cpu")

    def precision(**train_keys):
        cfg = TrainConfig.from_dict(tiny_config(blobs, tmp_path, **train_keys))
        return resolve_precision(cfg, cpu)

    assert precision(amp_cpu=True) == "bf16"
    assert precision(amp_cpu=False) == "fp32"
    assert precision(amp=False, amp_cpu=True) == "fp32"
    assert precision() == ("bf16" if cpu_has_native_bf16() else "fp32")  # 'auto'
    with pytest.raises(TrainConfigError, match="amp_cpu"):
        precision(amp_cpu="yes")


def test_outputs_are_cast_to_fp32_for_the_loss():
    out = {"sem_logits": torch.ones(1, 1, 2, 2, dtype=torch.bfloat16),
           "point_coords": torch.zeros(1, 3, 2, dtype=torch.bfloat16),
           "ids": torch.arange(3)}
    cast = _float_outputs(out)
    assert cast["sem_logits"].dtype == torch.float32
    assert cast["point_coords"].dtype == torch.float32
    assert cast["ids"].dtype == torch.int64


@pytest.mark.parametrize("amp_cpu", [False, True])
def test_channels_last_training_matches_contiguous(blobs, tmp_path, amp_cpu):
    """Same data, same init: the memory format changes speed, not what is learned."""
    losses = {}
    for channels_last in (False, True):
        cfg = tiny_config(blobs, tmp_path / f"cl{channels_last}", iterations=3,
                          channels_last=channels_last, amp_cpu=amp_cpu)
        result = train(cfg, register=False)
        losses[channels_last] = [row["total_loss"] for row in result.history]
        exported = torch.jit.load(str(result.model_path))
        assert all(p.is_contiguous() for p in exported.parameters())  # exported as before
    np.testing.assert_allclose(losses[True], losses[False], rtol=0.05 if amp_cpu else 0.01)


# ------------------------------------------------------------------------ resume


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_the_exact_schedule(blobs, tmp_path, workers):
    """Stopped at 3 of 6 and resumed: the same losses, learning rates and weights."""
    keys = dict(iterations=6, save_every=100, workers=workers,
                augmentations={"invert_p": 0.3, "gamma": 0.3, "artefact_p": 0.3,
                               "noise_p": 0.3})
    whole = train(tiny_config(blobs, tmp_path / "whole", **keys), register=False)
    calls = []
    stopped = train(tiny_config(blobs, tmp_path / "parts", **keys), register=False,
                    should_stop=lambda: len(calls) >= 3,
                    progress=lambda info: calls.append(1) if info["phase"] == "train" else None)
    assert stopped.stopped
    assert stopped.iterations == 3
    resumed = train(tiny_config(blobs, tmp_path / "parts", **keys), register=False,
                    resume=stopped.checkpoint_path)
    assert resumed.iterations == 6
    for key in ("total_loss", "lr"):
        assert [r[key] for r in resumed.history] == [r[key] for r in whole.history]
    a, b = _weights(whole.checkpoint_path), _weights(resumed.checkpoint_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_also_written_every_few_minutes(blobs, tmp_path):
    seen = {}

    def progress(info):
        path = tmp_path / "out" / "TinyNet_checkpoint.pth.tar"
        if info["phase"] == "train" and info["iteration"] == 2:
            seen["iteration"] = load_checkpoint(path)["iteration"] if path.exists() else None

    # save_every is far away: only the time cadence (a tiny one here) writes iteration 1
    cfg = tiny_config(blobs, tmp_path / "out", iterations=3, save_every=1000,
                      save_every_minutes=1e-6)
    train(cfg, register=False, progress=progress)
    assert seen["iteration"] == 1
    with pytest.raises(TrainConfigError, match="save_every_minutes"):
        TrainConfig.from_dict(tiny_config(blobs, tmp_path, save_every_minutes=0))
