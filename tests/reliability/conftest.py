"""Shared set-up of the reliability matrix: a small model and images in a temp folder."""

import numpy as np
import pytest

pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from empanada_models.cli import main  # noqa: E402
from empanada_models.testing import write_test_model  # noqa: E402

#: CLI flags that make the blob test model find the two discs of `blob_volume`
SMALL = ["--model", "Blob.yaml", "--min-size", "10", "--min-extent", "2", "--quiet"]


def blob_volume(depth=12, shift=1):
    """Two dark discs moving across `depth` slices of 80 x 100 (uint8)."""
    yy, xx = np.mgrid[:80, :100]
    vol = np.full((depth, 80, 100), 200, np.uint8)
    for z in range(depth):
        vol[z][(yy - 25) ** 2 + (xx - 20 - shift * z) ** 2 <= 81] = 40
        vol[z][(yy - 55) ** 2 + (xx - 70 + shift * z) ** 2 <= 81] = 40
    return vol


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_test_model(tmp_path, "Blob")
    vol = blob_volume()
    tifffile.imwrite(tmp_path / "vol.tif", vol)
    tifffile.imwrite(tmp_path / "img.tif", vol[0])
    return tmp_path


@pytest.fixture
def cli(capsys):
    """Run ``empanada ...``; returns (exit code, stdout, stderr)."""

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def small():
    """CLI flags for the blob test model (see SMALL)."""
    return list(SMALL)


@pytest.fixture
def volume_of_blobs():
    """The `blob_volume` maker."""
    return blob_volume
