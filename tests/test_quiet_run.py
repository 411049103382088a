"""The README's main job prints no deprecation warning (a small real crop, a real process)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from empanada_core.testing import data_path  # noqa: E402

pytestmark = pytest.mark.realdata


def test_the_main_job_runs_without_deprecation_warnings(tmp_path):
    volume = tifffile.imread(data_path("lucchi_epfl_hippocampus", "images.tif")
                             / "images.tif")[:6, 256:512, 256:512]
    tifffile.imwrite(tmp_path / "crop.tif", volume, photometric="minisblack")
    env = {**os.environ, "EMPANADA_HOME": str(tmp_path / "home")}
    # as the README runs it (`empanada segment IMAGE -o OUT.zarr`, default model); any
    # DeprecationWarning or FutureWarning that reaches the user becomes an error
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning",
         "-m", "empanada_models.cli", "segment", "crop.tif", "-o", "out.zarr"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Deprecat" not in result.stderr
    assert "FutureWarning" not in result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    assert "segmented crop.tif (stack) with MitoLite_v1" in result.stdout
