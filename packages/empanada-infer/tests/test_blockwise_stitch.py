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


@pytest.mark.parametrize(("bad", "error"), [((0, 2, 2), ValueError), ((2, 2), TypeError),
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
        assert sa == (a == i).sum()
        assert sb == (b == j).sum()
    assert len(set(zip(ids_a.tolist(), ids_b.tolist()))) == len(counts)


def test_overlap_counts_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        overlap_counts(np.zeros((2, 2)), np.zeros((2, 3)))


def test_link_overlaps_uses_the_smaller_object():
    linked = link_overlaps(np.array([1, 1]), np.array([5, 6]), np.array([40, 3]),
                           np.array([100, 100]), np.array([50, 90]), threshold=0.5)
    assert linked.tolist() == [True, False]


def test_link_overlaps_never_joins_what_the_trusted_side_keeps_apart():
    # b's object 9 covers a's objects 1 and 2: it links to one of them only
    linked = link_overlaps(np.array([1, 2]), np.array([9, 9]), np.array([30, 20]),
                           np.array([30, 20]), np.array([50, 50]))
    assert linked.tolist() == [True, False]
    # b split a's object 1 into 8 and 9: both link to it
    linked = link_overlaps(np.array([1, 1]), np.array([8, 9]), np.array([30, 20]),
                           np.array([50, 50]), np.array([30, 20]))
    assert linked.tolist() == [True, True]
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


# ---- the three stages in this process, with connected components as the "engine" -------

def separated_balls(shape, n, rng, gap=2):
    """Label volume of ``n`` balls (radius 2-6) that neither touch nor overlap."""
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.int64)
    for k in range(1, n + 1):
        for _ in range(20):
            c = [rng.integers(0, s) for s in shape]
            r = rng.integers(2, 7)
            dist = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
            if not truth[dist <= (r + gap) ** 2].any():
                truth[dist <= r ** 2] = k
                break
    return truth


def run_stages(tmp_path, truth, block_size, halo, min_size, min_extent, token):
    """segment_blockwise's three stages, in order, without a cluster."""
    import math

    from scipy import ndimage

    import empanada_infer._blockwise as bw
    from empanada_infer import create_output

    div = 10000
    shape = truth.shape
    grid, _ = block_grid(shape, block_size)
    n = math.prod(grid)
    out = create_output(tmp_path / f"{token}.zarr", shape, np.uint32, chunks=block_size)
    scratch = tmp_path / f"{token}.scratch"
    scratch.mkdir()
    job = {"token": token, "output": (str(tmp_path / f"{token}.zarr"), out.path),
           "scratch": str(scratch), "grid": grid, "shape": shape, "block_size": block_size,
           "halo": halo, "dtype": "<u4", "stride": 2 * div, "label_divisor": div,
           "thing_classes": (1,), "min_size": min_size, "min_extent": min_extent,
           "skip_below": None, "stitch_threshold": 0.5}

    def engine(job, data):  # each block: its own connected components, ids 10001, ...
        labels, _ = ndimage.label(data > 0)
        return np.where(labels > 0, labels + div, 0).astype(np.uint32)

    original = bw._run_engine
    bw._run_engine = engine
    try:
        for b in range(n):
            region = bw._region(job, b)
            bw._segment_block(job, b, data=(truth[region] > 0).astype(np.uint8) * 255)
    finally:
        bw._run_engine = original
    tables = [bw._match_block(job, b) for b in range(n)]
    face_ids, face_final, offsets, counts = bw._stitch(tables, job)
    block_of = face_ids // job["stride"] - 1
    for b in range(n):
        members = block_of == b
        bw._relabel_block(job, b, face_ids[members], face_final[members], offsets[b])
    return np.asarray(out[...]), counts


@given(seed=st.integers(0, 2**16), block=st.tuples(st.integers(4, 12), st.integers(6, 16),
                                                    st.integers(6, 16)),
       halo=st.integers(0, 4), min_size=st.sampled_from([0, 60, 200]))
@settings(max_examples=15, deadline=None)
def test_stitched_blocks_equal_whole_volume_components(tmp_path_factory, seed, block, halo,
                                                       min_size):
    """Blocks of connected components, stitched and filtered, are the components of the
    whole volume, filtered whole: for any grid, halo and size filter."""
    from scipy import ndimage

    import empanada_core as ec
    from empanada_core.testing import assert_same_partition

    tmp = tmp_path_factory.mktemp("stages")
    truth = separated_balls((16, 24, 24), 6, np.random.default_rng(seed))
    expected, _ = ndimage.label(truth > 0)
    expected = ec.remove_small_objects(expected, min_size)
    expected = ec.remove_pancakes(expected, 2)
    labels, counts = run_stages(tmp, truth, block, (halo,) * 3, min_size, 2, f"t{seed}")
    assert_same_partition(expected, labels)
    n = len(np.unique(expected)) - 1
    assert counts == {1: n}
    np.testing.assert_array_equal(np.unique(labels)[1:], 10001 + np.arange(n))
