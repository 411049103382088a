"""The helpers of empanada_core.testing: partition comparison and real-data lookup."""

import numpy as np
import pytest

from empanada_core.testing import assert_same_partition, data_path, partition_disagreement


def test_renamed_ids_agree():
    a = np.array([[0, 1, 1], [2, 2, 0]])
    assert partition_disagreement(a, a * 7 + 3 * (a > 0)) == 0.0
    assert_same_partition(a, np.where(a == 1, 9, np.where(a == 2, 4, 0)))


def test_empty_images_agree():
    assert partition_disagreement(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0


def test_foregrounds_that_never_overlap_disagree_fully():
    a = np.array([1, 1, 0, 0])
    b = np.array([0, 0, 2, 2])
    assert partition_disagreement(a, b) == 1.0
    with pytest.raises(AssertionError, match="foregrounds differ"):
        assert_same_partition(a, b)


def test_one_side_empty_disagrees_fully():
    assert partition_disagreement(np.array([0, 3, 3]), np.zeros(3, int)) == 1.0


def test_split_object_counts_the_smaller_part():
    a = np.array([1, 1, 1, 1])
    b = np.array([5, 5, 5, 6])
    assert partition_disagreement(a, b) == pytest.approx(0.25)
    with pytest.raises(AssertionError, match="partitions differ"):
        assert_same_partition(a, b)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        partition_disagreement(np.zeros(3), np.zeros(4))


# ------------------------------------------------------------------ real-data lookup


@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_absent_data_skips_outside_ci(tmp_path, monkeypatch, capsys, ci):
    monkeypatch.setenv("EMPANADA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="'lucchi' not found"):
        data_path("lucchi")
    assert "skipping: real EM data 'lucchi' not found" in capsys.readouterr().out


@pytest.mark.parametrize("ci", ["true", "1", "True"])
def test_absent_data_fails_under_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setenv("EMPANADA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true, where the data must be present"):
        data_path("lucchi")


def test_a_dataset_without_its_files_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "lucchi").mkdir()
    (tmp_path / "lucchi" / "images.tif").write_bytes(b"")
    assert data_path("lucchi", "images.tif") == tmp_path / "lucchi"
    with pytest.raises(pytest.fail.Exception, match="lacks labels.tif"):
        data_path("lucchi", "images.tif", "labels.tif")
