"""Faults: a full disk mid-write, two runs on one output, several runs sharing the model home."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

# `empanada segment` in a child whose file-size limit is `limit` bytes (a full disk):
# writes past it fail with EFBIG (SIGXFSZ ignored, as a shell's `ulimit -f` user sees).
_LIMITED_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from empanada_models.cli import main

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(sys.argv[2:]))
""")

# `empanada segment` whose network is slow, so that it holds its output for a while.
_SLOW_CHILD = textwrap.dedent("""
    import sys, time
    import empanada_infer as ei
    from empanada_models.cli import main

    real = ei.Segmenter.forward
    ei.Segmenter.forward = lambda self, images: time.sleep(0.5) or real(self, images)
    sys.exit(main(sys.argv[1:]))
""")


def _child(workdir, script, *argv, wait=True):
    run = subprocess.run if wait else subprocess.Popen
    kwargs = dict(cwd=workdir, env=dict(os.environ), text=True, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    if wait:
        kwargs["timeout"] = 300
    return run([sys.executable, "-c", script, *map(str, argv)], **kwargs)


def test_full_disk_during_a_tiff_write_keeps_the_previous_output(workdir, cli, small):
    big = np.tile(tifffile.imread(workdir / "vol.tif"), (1, 4, 4))  # 12 x 320 x 400
    tifffile.imwrite(workdir / "big.tif", big)
    (workdir / "out.tif").write_bytes(b"previous result")
    child = _child(workdir, _LIMITED_CHILD, 20_000, "segment", "big.tif", "-o", "out.tif",
                   "--overwrite", *small)
    assert child.returncode == 1, child.stderr
    assert "File too large" in child.stderr
    assert "Traceback" not in child.stderr
    assert (workdir / "out.tif").read_bytes() == b"previous result"
    assert [p.name for p in workdir.glob("*partial*")] == []
    assert [p.name for p in workdir.glob(".*.tmp")] == []


def _many_discs(depth=6, height=480, width=640, per_slice=60):
    """Slices with more and more discs: their label chunks grow from ~2 to ~12 KB, so a
    per-file size limit between fails part-way through the stack."""
    rng = np.random.default_rng(1)
    vol = np.full((depth, height, width), 200, np.uint8)
    yy, xx = np.mgrid[-6:7, -6:7]
    disc = yy**2 + xx**2 <= 36
    centres = rng.integers(10, min(height, width) - 10, (depth * per_slice, 2))
    for z in range(depth):
        for cy, cx in centres[: (z + 1) * per_slice]:
            vol[z, cy - 6:cy + 7, cx - 6:cx + 7][disc] = 40
    return vol


def test_full_disk_during_a_zarr_run_then_resume(workdir, cli, small):
    import empanada_infer as ei

    tifffile.imwrite(workdir / "discs.tif", _many_discs())
    child = _child(workdir, _LIMITED_CHILD, 6_000, "segment", "discs.tif", "-o", "out.zarr",
                   *small)
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    assert "File too large" in child.stderr
    # it failed part-way: some slices were finished and are kept for the rerun
    progress = zarr.open_group(workdir / "out.zarr.slices.zarr", mode="r")["xy"]
    assert 0 < len(ei.done_keys(progress)) < 6
    code, _, err = cli("segment", "discs.tif", "-o", "out.zarr", *small)
    assert code == 0, err
    assert cli("segment", "discs.tif", "-o", "ref.tif", *small)[0] == 0
    np.testing.assert_array_equal(zarr.open_group(workdir / "out.zarr", mode="r")["labels"][:],
                                  tifffile.imread(workdir / "ref.tif"))


def test_second_run_on_the_same_output_refuses(workdir, cli, small):
    first = _child(workdir, _SLOW_CHILD, "segment", "vol.tif", "-o", "out.zarr", *small,
                   wait=False)
    try:
        lock = workdir / ".out.zarr.lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the first run never took the lock: {first.stderr.read()}")
        code, _, err = cli("segment", "vol.tif", "-o", "out.zarr", *small)
        assert code == 1
        assert f"another empanada run (pid {first.pid}) is writing" in err
        first.send_signal(signal.SIGKILL)  # the lock goes with its holder
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        first.stdout.close()
        first.stderr.close()
    code, _, err = cli("segment", "vol.tif", "-o", "out.zarr", *small)
    assert code == 0, err


def test_runs_sharing_the_model_home_at_once(workdir, small):
    from empanada_models.testing import write_test_model

    jobs = []
    for i in range(3):
        write_test_model(workdir / f"m{i}", f"Net{i}")
        register = (f"from empanada_models.cli import main; import sys; "
                    f"sys.exit(main(['models', 'register', 'Net{i}', 'm{i}/Net{i}.yaml']) or "
                    f"main(['segment', 'vol.tif', '-o', 'out{i}.zarr', '--model', 'Net{i}', "
                    f"'--min-size', '10', '--min-extent', '2', '--quiet']))")
        jobs.append(subprocess.Popen([sys.executable, "-c", register], cwd=workdir,
                                     env=dict(os.environ), stderr=subprocess.PIPE, text=True))
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
    import empanada_models as em

    assert {"Net0", "Net1", "Net2"} <= set(em.list_models())
    first = zarr.open_group(workdir / "out0.zarr", mode="r")["labels"][:]
    for i in (1, 2):
        np.testing.assert_array_equal(
            zarr.open_group(workdir / f"out{i}.zarr", mode="r")["labels"][:], first)
