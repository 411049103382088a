"""The comparison helpers of empanada_core.testing."""

import numpy as np
import pytest

from empanada_core.testing import assert_same_partition, partition_disagreement


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
