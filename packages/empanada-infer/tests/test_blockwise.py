"""Blockwise inference on a real Dask LocalCluster (2 worker processes, one per module)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import empanada_infer as ei  # noqa: E402
from empanada_core.testing import assert_same_partition, partition_disagreement  # noqa: E402
from empanada_models.cli import main  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402

SHAPE = (20, 64, 64)
BLOCK = (10, 32, 32)  # 2 x 2 x 2 blocks: seams on every axis
HALO = (4, 16, 16)
PARAMS = ei.SegmentationParams(min_size=40, min_extent=3)


def balls(shape, n, seed, radii=(5, 9), bg=200, fg=40):
    """Dark balls on a bright background, some of them across block seams."""
    rng = np.random.default_rng(seed)
    vol = np.full(shape, bg, np.uint8)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(n):
        c = [rng.integers(0, s) for s in shape]
        r = rng.integers(*radii)
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r ** 2] = fg
    return vol


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=40) as local:
        with distributed.Client(local) as client:
            yield client


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    return str(write_test_model(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def volume():
    return balls(SHAPE, 14, seed=3)


@pytest.fixture(scope="module")
def single_run(blob, volume):
    seg = ei.Segmenter.from_registry(blob, PARAMS, device="cpu")
    return seg.segment_stack(volume)


def run(volume, out, blob, client, **options):
    options = {"params": PARAMS, "block_size": BLOCK, "halo": HALO, **options}
    return ei.segment_blockwise(volume, out, model=blob, client=client, device="cpu",
                                **options)


@pytest.fixture(scope="module")
def reference(cluster, blob, volume, tmp_path_factory):
    """One complete blockwise run, the result the other runs must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    result = run(volume, out, blob, cluster)
    return result, np.asarray(result.output[...])


def test_seams_equal_the_single_process_run(reference, single_run):
    result, labels = reference
    assert result.n_blocks == 8
    assert result.segmented == 8
    assert len(np.unique(single_run)) > 8  # objects, several of them across seams
    assert_same_partition(single_run, labels)
    # ids follow the panoptic convention, numbered 1..n
    ids = np.unique(labels)[1:]
    np.testing.assert_array_equal(ids, 10001 + np.arange(len(ids)))
    assert result.counts == {1: len(ids)}
    assert labels.dtype == np.uint32


def separated_balls(shape, n, seed, gap=3):
    """Dark balls (radius 4-7) that neither touch nor overlap."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    vol = np.full(shape, 200, np.uint8)
    for _ in range(n):
        for _ in range(50):
            c = [rng.integers(0, s) for s in shape]
            r = rng.integers(4, 8)
            dist = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
            if (vol[dist <= (r + gap) ** 2] == 200).all():
                vol[dist <= r ** 2] = 40
                break
    return vol


def test_ortho_mode_and_no_halo(cluster, blob):
    # Touching balls can differ: a block that gives a few voxels of one ball to its
    # touching neighbour joins the two at the seam (the owner of a face region decides).
    volume = separated_balls(SHAPE, 12, seed=2)
    seg = ei.Segmenter.from_registry(blob, PARAMS, device="cpu")
    ortho = run(volume, None, blob, cluster, mode="ortho").output
    single = seg.segment_orthoplanes(volume)
    assert len(np.unique(single)) > 6
    assert len(np.unique(ortho)) == len(np.unique(single))
    assert partition_disagreement(single, ortho) < 0.01  # a few boundary voxels
    # without a halo the touching layers are matched: still one id per ball
    touching = run(volume, None, blob, cluster, halo=0).output
    ref = seg.segment_stack(volume)
    assert len(np.unique(touching)) == len(np.unique(ref))


def test_filters_judge_stitched_objects_whole(cluster, blob):
    vol = np.full(SHAPE, 200, np.uint8)
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    big = ((yy - 16) ** 2 + (xx - 32) ** 2 <= 11 ** 2) & (zz >= 2) & (zz < 8)  # cut by x seam
    small = ((yy - 48) ** 2 + (xx - 12) ** 2 <= 6 ** 2) & (zz >= 12) & (zz < 17)
    vol[big | small] = 40
    params = PARAMS.with_options(min_size=int(big.sum() * 0.7))
    labels = run(vol, None, blob, cluster, params=params).output
    # each half of the big disc is below min_size, the whole is above: it is kept, once
    assert len(np.unique(labels[big])) == 1
    assert labels[big].min() == 10001
    assert (labels[big] > 0).mean() > 0.9
    assert not labels[small].any()


def test_input_kinds_give_the_same_labels(cluster, blob, volume, reference, tmp_path):
    import dask.array as da

    _, expected = reference
    source = zarr.create_array(tmp_path / "in.zarr", shape=SHAPE, chunks=(10, 32, 32),
                               dtype=np.uint8)
    source[...] = volume
    np.save(tmp_path / "vol.npy", volume)
    for kind, vol in [("zarr", source), ("dask", da.from_array(volume, chunks=BLOCK)),
                      ("path", tmp_path / "vol.npy")]:
        options = {"block_size": None} if kind == "dask" else {}  # dask: its chunks
        out = tmp_path / f"{kind}.ome.zarr"
        labels = run(vol, out, blob, cluster, **options).output
        np.testing.assert_array_equal(labels[...], expected, err_msg=kind)
    # OME-Zarr output: an NGFF image-label group that reads back
    attrs = zarr.open_group(tmp_path / "path.ome.zarr" / "labels").attrs.asdict()
    assert "image-label" in attrs["ome"]
    np.testing.assert_array_equal(np.asarray(ei.open_image(tmp_path / "path.ome.zarr",
                                                           key="labels")), expected)


def test_empty_blocks_are_skipped(cluster, blob, tmp_path):
    vol = balls(SHAPE, 6, seed=5)
    vol[:, :, 32 - HALO[2]:] = 0  # the x >= 32 blocks (and their halo) hold no signal
    result = run(vol, tmp_path / "o.zarr", blob, cluster)
    assert result.skipped == 4
    assert result.segmented == 4
    assert not np.asarray(result.output[:, :, 32:]).any()
    # a foreground threshold: dim noise counts as empty too
    noisy = vol.copy()
    noisy[:, :, 32 - HALO[2]:] = np.random.default_rng(0).integers(0, 10, noisy[:, :, 16:].shape)
    again = run(noisy, None, blob, cluster, skip_below=10)
    assert again.skipped == 4
    assert not again.output[:, :, 32:].any()


def test_cancel_then_resume_is_bitwise_the_same(cluster, blob, volume, reference, tmp_path):
    _, expected = reference
    out = tmp_path / "o.zarr"
    steps = []
    n = 8
    # cancel in the relabel stage: some blocks final, the others still provisional
    with pytest.raises(ei.InferenceCancelled):
        run(volume, out, blob, cluster, progress=lambda done, total: steps.append(done),
            should_stop=lambda: bool(steps) and steps[-1] >= 2 * n + 2)
    assert not ei.is_complete(zarr.open_array(out / "labels"))
    result = run(volume, out, blob, cluster)
    assert result.segmented == 0  # every block was segmented before the cancel
    np.testing.assert_array_equal(result.output[...], expected)
    # complete: a third call does nothing
    assert run(volume, out, blob, cluster).already_complete


_KILLED_RUN = textwrap.dedent("""
    import sys, time
    import distributed, empanada_infer as ei
    address, volume, out, model = sys.argv[1:5]
    params = ei.SegmentationParams(min_size=40, min_extent=3)
    with distributed.Client(address) as client:
        ei.segment_blockwise(volume, out, model=model, params=params, client=client,
                             device="cpu", block_size=(10, 32, 32), halo=(4, 16, 16),
                             progress=lambda done, total: time.sleep(0.3))
""")


def _done_blocks(out):
    try:
        record = json.loads((out / "labels" / "zarr.json").read_text())["attributes"]
    except (FileNotFoundError, KeyError, ValueError):
        return 0
    ranges = record["empanada_progress"]["done_slices"]
    return sum(hi - lo for lo, hi in ranges)


def test_resume_after_a_killed_run_is_bitwise_the_same(cluster, blob, volume, reference,
                                                       tmp_path):
    _, expected = reference
    np.save(tmp_path / "vol.npy", volume)
    out = tmp_path / "o.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, cluster.scheduler.address,
                             str(tmp_path / "vol.npy"), str(out), blob])
    try:
        deadline = time.monotonic() + 120
        while _done_blocks(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _done_blocks(out)
    assert 2 <= done < 8 + 8
    result = run(tmp_path / "vol.npy", out, blob, cluster)
    assert result.segmented <= 8 - min(done, 8)  # done blocks are not segmented again
    np.testing.assert_array_equal(result.output[...], expected)


def test_a_lost_worker_is_retried_with_the_same_result(cluster, blob, volume, reference):
    _, expected = reference
    pids = cluster.run(os.getpid)
    killed = []

    def kill_a_busy_worker(done, total):
        if killed or done < 1:
            return
        busy = [addr for addr, keys in cluster.processing().items() if keys and addr in pids]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])

    result = run(volume, None, blob, cluster, progress=kill_a_busy_worker)
    assert killed, "no worker was busy to be killed"
    np.testing.assert_array_equal(result.output, expected)
    cluster.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize(("volume_", "error", "match"), [
    (np.zeros((8, 8), np.uint8), TypeError, "3D"),
    (np.zeros((2, 4, 8, 8), np.uint8), TypeError, "3D"),
    (np.zeros((4, 8, 8), bool), TypeError, "bool"),
])
def test_bad_volumes(volume_, error, match, blob):
    with pytest.raises(error, match=match):
        ei.segment_blockwise(volume_, None, model=blob, client="tcp://127.0.0.1:9")


@pytest.mark.parametrize(("options", "match"), [
    ({"chunks": (4, 32, 32)}, "do not fit the blocks"),
    ({"block_size": (0, 8, 8)}, "block_size"),
    ({"halo": -1}, "halo"),
    ({"mode": "2d"}, "mode"),
    ({"plane": "zz"}, "plane"),
    ({"stitch_threshold": 0}, "stitch_threshold"),
])
def test_bad_settings(options, match, blob, volume, tmp_path):
    options = {"block_size": BLOCK, "halo": HALO, **options}
    with pytest.raises(ValueError, match=match):
        ei.segment_blockwise(volume, tmp_path / "o.zarr", model=blob,
                             client="tcp://127.0.0.1:9", **options)


def test_resume_with_other_settings_is_refused(cluster, blob, volume, reference, tmp_path):
    out = tmp_path / "o.zarr"
    run(volume, out, blob, cluster, halo=(2, 8, 8))
    with pytest.raises(ValueError, match="cannot resume"):
        run(volume, out, blob, cluster)
    assert run(volume, out, blob, cluster, overwrite=True).segmented == 8


def test_unreachable_scheduler_fails_fast():
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="could not reach the Dask scheduler"):
        ei.connect_client("tcp://127.0.0.1:9", timeout=2)
    assert time.monotonic() - start < 30


def test_cli_on_a_running_scheduler_and_a_local_cluster(cluster, blob, volume, reference,
                                                        tmp_path, capsys):
    _, expected = reference
    np.save(tmp_path / "vol.npy", volume)
    common = ["segment", str(tmp_path / "vol.npy"), "--model", blob, "--min-size", "40",
              "--min-extent", "3", "--block-size", "10,32,32", "--halo", "4,16,16",
              "--device", "cpu", "--json", "--quiet"]
    assert main([*common, "-o", str(tmp_path / "a.zarr"), "--scheduler",
                 cluster.scheduler.address]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["objects"] == {"blob": len(np.unique(expected)) - 1}
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr" / "labels")[...],
                                  expected)
    assert main([*common, "-o", str(tmp_path / "b.zarr"), "--workers", "1"]) == 0
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "b.zarr" / "labels")[...],
                                  expected)
    capsys.readouterr()
    # usage errors exit with 2 and say what is wrong
    assert main([*common, "-o", str(tmp_path / "c.tif"), "--workers", "2"]) == 2
    assert "zarr" in capsys.readouterr().err
    assert main([*common, "-o", str(tmp_path / "d.zarr"), "--scheduler",
                 "tcp://127.0.0.1:9", "--workers", "2"]) == 2
