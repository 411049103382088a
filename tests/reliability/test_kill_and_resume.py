"""kill -9 a zarr run after some slices; the same command resumes and equals an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

# Runs `empanada segment` in a child that SIGKILLs itself right after its `kill_after`-th
# slice is recorded as finished: a real kill -9, at a known point of the run.
_KILLED_CHILD = textwrap.dedent("""
    import os, signal, sys
    import empanada_infer._writers as writers
    from empanada_models.cli import main

    kill_after = int(sys.argv[1])
    real = writers.mark_done
    calls = []

    def mark_done_then_die(array, key):
        real(array, key)
        calls.append(key)
        if len(calls) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    writers.mark_done = mark_done_then_die
    sys.exit(main(sys.argv[2:]))
""")


def _labels(path):
    return zarr.open_group(path, mode="r")["labels"][:]


@pytest.mark.parametrize(("mode", "kill_after"), [("stack", 5), ("ortho", 60)])
def test_killed_zarr_run_resumes_bitwise(workdir, cli, small, mode, kill_after, monkeypatch):
    import empanada_infer as ei

    args = ["segment", "vol.tif", "--mode", mode, *small]
    assert cli(*args, "-o", "whole.zarr")[0] == 0

    env = {**os.environ, "EMPANADA_HOME": os.environ["EMPANADA_HOME"]}
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(kill_after), *args,
                            "-o", "killed.zarr"], cwd=workdir, env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    out = zarr.open_group(workdir / "killed.zarr", mode="r")["labels"]
    assert not ei.is_complete(out)
    assert (workdir / "killed.zarr.slices.zarr").is_dir()

    forwards = []
    real_forward = ei.Segmenter.forward
    monkeypatch.setattr(ei.Segmenter, "forward",
                        lambda self, images: forwards.append(len(images))
                        or real_forward(self, images))
    code, _, err = cli(*args, "-o", "killed.zarr")
    assert code == 0, err
    total = sum(tifffile.imread(workdir / "vol.tif").shape) if mode == "ortho" else 12
    # the finished slices were read back, not recomputed: the median window redoes one
    # slice per plane, and the engine's parallel-forward probe may add a few
    assert sum(forwards) <= total - kill_after + 8
    np.testing.assert_array_equal(_labels(workdir / "killed.zarr"), _labels(workdir / "whole.zarr"))
    assert ei.is_complete(zarr.open_group(workdir / "killed.zarr", mode="r")["labels"])
    assert not (workdir / "killed.zarr.slices.zarr").exists()


def test_cancelled_api_run_resumes_from_its_checkpoint(workdir, volume_of_blobs):
    import empanada_infer as ei
    import empanada_models as em

    config = em.ModelConfig.from_yaml(workdir / "Blob.yaml")
    seg = ei.Segmenter(em.load_model(config), config,
                       ei.SegmentationParams(min_size=10, min_extent=2), device="cpu")
    vol = volume_of_blobs(12)
    whole = seg.segment_stack(vol, axis="xz")
    ckpt = ei.create_output(workdir / "c.zarr", vol.shape, np.uint32, slice_axis=1)
    calls = []
    with pytest.raises(ei.InferenceCancelled):
        seg.segment_stack(vol, axis="xz", checkpoint=ckpt,
                          should_stop=lambda: calls.append(1) or len(calls) > 30)
    assert ei.done_keys(ckpt) == list(range(30))
    resumed = seg.segment_stack(vol, axis="xz", checkpoint=ckpt)
    np.testing.assert_array_equal(resumed, whole)
