"""Block grids and the stitching of label blocks into one label volume (numpy/scipy only).

A volume is cut into a regular grid of *core* blocks; each block is segmented
with a *halo* of context around its core, and writes only its core. Objects
cut by a block boundary get one id per block; they are stitched by comparing,
in the overlap between two neighbouring blocks, what each block predicted
there: pairs of ids that overlap enough are linked, and the connected
components of the link graph (:func:`scipy.sparse.csgraph.connected_components`)
become one object each. Only the ids on block faces take part, so the cost of
stitching grows with the number of objects on faces, not with the volume.
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "block_grid",
    "padded_region",
    "face_depth",
    "overlap_counts",
    "link_overlaps",
    "connected_groups",
]


def _triple(value, name, minimum):
    """``value`` (an int or three ints) as a tuple of three ints >= ``minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * 3
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an int or three ints (z, y, x); got {value!r}") \
            from None
    if len(value) != 3 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                              for v in value):
        raise TypeError(f"`{name}` must be an int or three ints (z, y, x); got {value!r}")
    if any(v < minimum for v in value):
        raise ValueError(f"`{name}` must hold ints >= {minimum}; got {value!r}")
    return tuple(int(v) for v in value)


def block_grid(shape, block_size):
    """The core blocks of a regular grid over ``shape``, in C order.

    Parameters
    ----------
    shape : (3,) tuple of int
        Volume shape (z, y, x).
    block_size : int or (3,) tuple of int
        Core block shape; the last block along an axis may be shorter.

    Returns
    -------
    grid : (3,) tuple of int
        Number of blocks along each axis.
    cores : list of tuple of slice
        ``grid[0] * grid[1] * grid[2]`` core regions; block ``b`` has grid
        position ``np.unravel_index(b, grid)``.

    Examples
    --------
    >>> grid, cores = block_grid((5, 4, 4), (4, 4, 2))
    >>> grid, cores[-1]
    ((2, 1, 2), (slice(4, 5, None), slice(0, 4, None), slice(2, 4, None)))
    """
    shape = _triple(shape, "shape", 1)
    block_size = _triple(block_size, "block_size", 1)
    grid = tuple(math.ceil(n / b) for n, b in zip(shape, block_size))
    starts = [range(0, n, b) for n, b in zip(shape, block_size)]
    cores = [tuple(slice(s, min(s + b, n)) for s, b, n in zip(corner, block_size, shape))
             for corner in itertools.product(*starts)]
    return grid, cores


def padded_region(core, halo, shape):
    """``core`` grown by ``halo`` on every side, clipped to ``shape``.

    Examples
    --------
    >>> padded_region((slice(0, 4), slice(4, 8), slice(0, 8)), (1, 2, 2), (8, 8, 8))
    (slice(0, 5, None), slice(2, 8, None), slice(0, 8, None))
    """
    halo = _triple(halo, "halo", 0)
    return tuple(slice(max(0, s.start - h), min(n, s.stop + h))
                 for s, h, n in zip(core, halo, shape))


def face_depth(halo, len_a, len_b):
    """Thickness of the slabs compared on the face between two blocks along one axis.

    With a halo, each block predicted ``halo`` voxels into its neighbour's
    core; the half nearest the face (at least one voxel, at most either core's
    length) is compared, where the prediction had the most context. Without a
    halo (0) nothing overlaps and the faces' touching layers are compared
    instead (depth 1, see :func:`empanada_infer.segment_blockwise`).
    """
    if halo <= 0:
        return 1
    return max(1, min(max(1, halo // 2), halo, len_a, len_b))


def overlap_counts(a, b):
    """Voxel counts of every pair of nonzero ids that share voxels in ``a`` and ``b``.

    Parameters
    ----------
    a, b : ndarray of int, same shape
        Two labellings of one region.

    Returns
    -------
    ids_a, ids_b : (P,) ndarray
        The overlapping pairs (sorted by ``ids_a``, then ``ids_b``).
    counts : (P,) int64 ndarray
        Shared voxels of each pair.
    area_a, area_b : (P,) int64 ndarray
        Voxels of ``ids_a[i]`` in ``a`` and of ``ids_b[i]`` in ``b`` (in this region).

    Examples
    --------
    >>> a = np.array([[1, 1, 0], [2, 2, 2]])
    >>> b = np.array([[5, 5, 5], [5, 0, 7]])
    >>> [x.tolist() for x in overlap_counts(a, b)]
    [[1, 2, 2], [5, 5, 7], [2, 1, 1], [2, 3, 3], [4, 4, 1]]
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have one shape; got {a.shape} and {b.shape}")
    empty = np.zeros(0, np.int64)
    ua, inv_a, cnt_a = np.unique(a.ravel(), return_inverse=True, return_counts=True)
    ub, inv_b, cnt_b = np.unique(b.ravel(), return_inverse=True, return_counts=True)
    both = (a.ravel() != 0) & (b.ravel() != 0)
    if not both.any():
        return (ua[:0], ub[:0], empty, empty, empty)
    key = inv_a.ravel()[both].astype(np.int64) * len(ub) + inv_b.ravel()[both]
    pair, counts = np.unique(key, return_counts=True)
    ia, ib = np.divmod(pair, len(ub))
    return ua[ia], ub[ib], counts.astype(np.int64), cnt_a[ia].astype(np.int64), \
        cnt_b[ib].astype(np.int64)


def link_overlaps(ids_a, ids_b, counts, area_a, area_b, threshold=0.5):
    """The pairs of :func:`overlap_counts` that are one object seen twice.

    ``a`` is the labelling trusted in the region (the block whose core it is),
    ``b`` a neighbour's prediction from its halo. Each id of ``b`` links to the
    id of ``a`` it shares most voxels with, when those are at least
    ``threshold`` of the smaller of the two (within the region). So an object
    predicted a little differently by two blocks still links, two objects that
    merely touch do not, and two objects that ``a`` keeps apart are never
    joined because ``b`` merged them; pieces that ``b`` split and ``a`` sees as
    one are joined.

    Returns
    -------
    linked : (P,) bool ndarray

    Examples
    --------
    >>> link_overlaps(np.array([1, 2, 3]), np.array([7, 7, 8]), np.array([50, 30, 1]),
    ...               np.array([60, 40, 100]), np.array([90, 90, 3]))
    array([ True, False, False])
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must be in (0, 1]; got {threshold!r}")
    counts = np.asarray(counts)
    smaller = np.minimum(area_a, area_b)
    linked = counts >= float(threshold) * smaller
    if counts.size:
        ids_b = np.asarray(ids_b)
        order = np.lexsort((-counts, ids_b))  # per id of b, its largest overlap first
        first = np.r_[True, ids_b[order][1:] != ids_b[order][:-1]]
        best = np.zeros(counts.size, bool)
        best[order[first]] = True
        linked &= best
    return linked


def connected_groups(nodes, edges_a, edges_b):
    """Group ``nodes`` into the connected components of the graph of ``edges``.

    Parameters
    ----------
    nodes : (N,) ndarray of int
        Distinct ids (any order).
    edges_a, edges_b : (E,) ndarray of int
        Linked pairs of ids; ids that are not in ``nodes`` are an error.

    Returns
    -------
    group : (N,) int64 ndarray
        Component number of each node (0 .. n_groups - 1), numbered in the
        order of each component's smallest id.

    Examples
    --------
    >>> connected_groups(np.array([10, 20, 30, 40]), np.array([40]), np.array([10]))
    array([0, 1, 2, 0])
    """
    nodes = np.asarray(nodes)
    order = np.argsort(nodes, kind="stable")
    sorted_nodes = nodes[order]
    if len(np.unique(sorted_nodes)) != len(nodes):
        raise ValueError("`nodes` must be distinct")
    n = len(nodes)
    if n == 0:
        return np.zeros(0, np.int64)

    def index(ids):
        ids = np.asarray(ids)
        pos = np.searchsorted(sorted_nodes, ids)
        pos = np.minimum(pos, n - 1)
        if ids.size and not (sorted_nodes[pos] == ids).all():
            raise ValueError("an edge names an id that is not in `nodes`")
        return order[pos]

    ea, eb = index(edges_a), index(edges_b)
    graph = coo_matrix((np.ones(len(ea), np.int8), (ea, eb)), shape=(n, n)).tocsr()
    _, comp = connected_components(graph, directed=False)
    # renumber components by their smallest id, so the result does not depend on order
    smallest = np.full(comp.max() + 1, n, np.int64)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    np.minimum.at(smallest, comp, rank)
    renumber = np.empty_like(smallest)
    renumber[np.argsort(smallest, kind="stable")] = np.arange(len(smallest))
    return renumber[comp].astype(np.int64)
