"""Block grids and stitching helpers (numpy/scipy only, no cluster)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from empanada_infer._stitch import (
    block_grid,
    connected_groups,
    face_depth,
    link_overlaps,
    overlap_counts,
    padded_region,
)


@given(shape=st.tuples(*[st.integers(1, 20)] * 3), block=st.tuples(*[st.integers(1, 8)] * 3))
@settings(max_examples=60, deadline=None)
def test_block_grid_tiles_the_volume_once(shape, block):
    grid, cores = block_grid(shape, block)
    assert len(cores) == int(np.prod(grid))
    cover = np.zeros(shape, np.int64)
    for b, core in enumerate(cores):
        cover[core] += 1
        pos = np.unravel_index(b, grid)
        assert all(s.start == p * k for s, p, k in zip(core, pos, block))
    assert (cover == 1).all()


def test_padded_region_is_clipped():
    core = (slice(0, 4), slice(4, 8), slice(6, 8))
    assert padded_region(core, (2, 1, 3), (8, 8, 8)) == (slice(0, 6), slice(3, 8), slice(3, 8))


@pytest.mark.parametrize("bad, error", [((0, 2, 2), ValueError), ((2, 2), TypeError),
                                        ((2.0, 2, 2), TypeError), ("abc", TypeError)])
def test_block_grid_rejects_bad_sizes(bad, error):
    with pytest.raises(error, match="block_size"):
        block_grid((4, 4, 4), bad)


def test_face_depth():
    assert face_depth(0, 8, 8) == 1
    assert face_depth(8, 16, 16) == 4
    assert face_depth(8, 16, 2) == 2
    assert face_depth(1, 16, 16) == 1


@given(arrays(np.uint16, (4, 6), elements=st.integers(0, 4)),
       arrays(np.uint16, (4, 6), elements=st.integers(0, 4)))
@settings(max_examples=80, deadline=None)
def test_overlap_counts_agree_with_counting(a, b):
    ids_a, ids_b, counts, area_a, area_b = overlap_counts(a, b)
    assert counts.sum() == ((a > 0) & (b > 0)).sum()
    for i, j, c, sa, sb in zip(ids_a, ids_b, counts, area_a, area_b):
        assert c == ((a == i) & (b == j)).sum() > 0
        assert sa == (a == i).sum() and sb == (b == j).sum()
    assert len(set(zip(ids_a.tolist(), ids_b.tolist()))) == len(counts)


def test_overlap_counts_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        overlap_counts(np.zeros((2, 2)), np.zeros((2, 3)))


def test_link_overlaps_uses_the_smaller_object():
    linked = link_overlaps(np.array([1, 1]), np.array([5, 6]), np.array([40, 3]),
                           np.array([100, 100]), np.array([50, 90]), threshold=0.5)
    assert linked.tolist() == [True, False]
    with pytest.raises(ValueError, match="threshold"):
        link_overlaps([], [], [], [], [], threshold=0)


@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=20),
       st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_connected_groups_do_not_depend_on_order(edges, rnd):
    nodes = np.arange(16) * 7 + 3
    ea = np.array([nodes[i] for i, _ in edges], np.int64)
    eb = np.array([nodes[j] for _, j in edges], np.int64)
    group = connected_groups(nodes, ea, eb)
    perm = list(range(16))
    rnd.shuffle(perm)
    again = connected_groups(nodes[perm], eb, ea)
    np.testing.assert_array_equal(again, group[perm])
    for i, j in edges:
        assert group[i] == group[j]
    # groups are numbered by their smallest id
    firsts = [np.flatnonzero(group == g).min() for g in range(group.max() + 1)]
    assert firsts == sorted(firsts)


def test_connected_groups_errors():
    with pytest.raises(ValueError, match="distinct"):
        connected_groups(np.array([1, 1]), np.array([]), np.array([]))
    with pytest.raises(ValueError, match="not in `nodes`"):
        connected_groups(np.array([1, 2]), np.array([1]), np.array([3]))
    assert connected_groups(np.array([], np.int64), [], []).size == 0
