import sys
from pathlib import Path

import numpy as np
import pytest

# the tests import their helpers (napari_helpers.py) from this folder
sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("napari")
pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from empanada_core.testing import data_path  # noqa: E402


@pytest.fixture(autouse=True)
def empanada_home(tmp_path, monkeypatch):
    """Every test gets its own registry folder (user models, archive) and model cache."""
    from empanada_napari import _models

    home = tmp_path / "empanada_home"
    monkeypatch.setenv("EMPANADA_HOME", str(home))
    yield home
    _models.clear_cache()


@pytest.fixture(scope="session")
def lucchi():
    path = data_path("lucchi_epfl_hippocampus") / "images.tif"
    with tifffile.TiffFile(path) as tif:
        return tif.asarray(key=range(20, 30))


@pytest.fixture(scope="session")
def lucchi_2d(lucchi):
    """A 256 x 256 real FIB-SEM image with several mitochondria."""
    return np.ascontiguousarray(lucchi[5, 256:512, 768:1024])


@pytest.fixture(scope="session")
def lucchi_3d(lucchi):
    """10 x 160 x 160 real FIB-SEM sub-volume (5 nm voxels)."""
    return np.ascontiguousarray(lucchi[:, 300:460, 800:960])


@pytest.fixture
def blob_model(tmp_path, empanada_home):
    """The fast threshold test model, registered as BlobNet_test."""
    import empanada_models as em
    from empanada_models.testing import write_test_model

    em.register_model("BlobNet_test", write_test_model(tmp_path / "blob"))
    return "BlobNet_test"


@pytest.fixture
def notes():
    """``notes()``: messages of the napari notifications shown since the test began."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


LUCCHI_BOX = (slice(16, 48), slice(128, 384), slice(768, 1024))  # 6 mitochondria


@pytest.fixture(scope="session")
def lucchi_labels_3d():
    """32 x 256 x 256 crop of the real Lucchi 3D mitochondria instances (uint16, 6 objects)."""
    path = data_path("lucchi_epfl_hippocampus") / "mito_instances_3d.tif"
    if not path.is_file():
        pytest.skip(f"{path} not found (the Lucchi labels of the shared data)")
    return np.ascontiguousarray(tifffile.imread(path)[LUCCHI_BOX])


@pytest.fixture(scope="session")
def lucchi_image_3d():
    """The EM under :func:`lucchi_labels_3d` (32 x 256 x 256 uint8)."""
    path = data_path("lucchi_epfl_hippocampus") / "images.tif"
    with tifffile.TiffFile(path) as tif:
        return np.ascontiguousarray(tif.asarray(key=range(16, 48))[:, 128:384, 768:1024])
