"""Ortho-plane consensus: one 3D segmentation from the xy, xz and yz stack results.

The algorithm follows the original empanada ``consensus.merge_objects_from_trackers``
(objects graph -> clusters -> greedy cluster merging -> voxel voting -> merging of
overlapping results), with two bugs of its merge loop fixed, but works on dense label
volumes instead of run-length encodings:

* every cross-view overlap comes from one histogram of the *id triples* met in the
  volume ("signatures": the ids that xy, xz and yz give a voxel), built slab by slab
  along axis 0 from the runs of constant triple along the flattened slab (one
  vectorised comparison per view finds them; everything after works on runs);
* sizes, intersections, votes and the sizes of the voted objects are then all sums
  over that small table, never masks of single objects;
* the output is written from the kept foreground runs and the table row of each
  (for very large foregrounds, past a memory budget, by a second slab sweep
  through per-view lookup tables instead).

Only the cluster-merging graph logic loops in Python, over clusters (never voxels).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from ._filters import _axis0_slabs, _expand_ranges, _scan_objects
from .validation import check_label_image, check_ndim, check_probability, check_same_shape

__all__ = ["ortho_consensus", "semantic_consensus"]

_VIEW_NAMES = ("xy", "xz", "yz")
_INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _check_views(views, *, allow_bool=False, check_negative=True):
    checked = []
    for name, view in zip(_VIEW_NAMES, views):
        arr = np.asarray(view)
        if allow_bool and arr.dtype == bool:
            check_ndim(arr, 3, name)
        else:
            arr = check_label_image(arr, name, ndim=3, check_negative=check_negative)
        checked.append(arr)
    check_same_shape(checked[0], checked[1], "xy", "xz")
    check_same_shape(checked[0], checked[2], "xy", "yz")
    return checked


def _check_vote_thr(vote_thr):
    if isinstance(vote_thr, bool) or not isinstance(vote_thr, numbers.Integral):
        raise TypeError(f"`vote_thr` must be an integer (1, 2 or 3); got {vote_thr!r}")
    if vote_thr not in (1, 2, 3):
        raise ValueError(
            "`vote_thr` is the number of the three views that must agree on a voxel, so "
            f"it must be 1, 2 or 3; got {vote_thr}"
        )
    return int(vote_thr)


def _check_non_negative(value, arg_name, *, integer):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise TypeError(f"`{arg_name}` must be {what} >= 0; got {value!r}")
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"`{arg_name}` must be >= 0; got {value}")
    return int(value) if integer else float(value)


# ---------------------------------------------------------------------------
# grouping helpers
# ---------------------------------------------------------------------------


def _group_rows(cols, radices):
    """Group equal rows of non-negative integer columns.

    ``cols[k]`` holds values in ``[0, radices[k])``. Returns ``inverse`` (the group
    of each row), the number of groups, and ``first`` (the first row of each
    group), using one ``np.unique`` on a mixed-radix int64 key.
    """
    key = np.asarray(cols[0], dtype=np.int64)
    span = int(radices[0])
    for col, radix in zip(cols[1:], radices[1:]):
        radix = int(radix)
        if span * radix >= 1 << 62:  # keep the key inside int64: compress it first
            _, key = np.unique(key, return_inverse=True)
            key = key.reshape(-1).astype(np.int64)
            span = int(key.max()) + 1
        key = key * radix + col
        span *= radix
    uniq, inverse = _compress(key, span)
    first = np.full(uniq.size, _INT64_MAX, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(inverse.size, dtype=np.int64))
    return inverse, uniq.size, first


# Up to this many possible values, grouping counts with bincount instead of sorting.
_DIRECT_SPAN = 1 << 24


def _compress(values, span=None):
    """Sorted distinct values and the position of each value among them.

    Equivalent to ``np.unique(values, return_inverse=True)``; when the values
    lie in a small range it uses a presence table instead of a sort.
    """
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return values[:0], np.zeros(0, dtype=np.int64)
    if span is None:
        span = int(values.max()) + 1 if values.min() >= 0 else _DIRECT_SPAN + 1
    if span <= max(_DIRECT_SPAN, 0):
        present = np.bincount(values, minlength=span) > 0
        rank = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(values.dtype), rank[values]
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _sum_by(groups, weights, n):
    """Integer sums of ``weights`` per group (``np.add.at``, exact in int64)."""
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, groups, weights)
    return out


# ---------------------------------------------------------------------------
# pass 1: the signature table
# ---------------------------------------------------------------------------


# Slabs of this many voxels bound the per-slab temporaries.
_TABLE_SLAB_VOXELS = 1 << 20
# Foreground runs kept from pass 1 for writing the output (24 bytes each); past
# this many the output is written by a second sweep over the views instead.
_KEPT_RUNS = 1 << 23


def _signature_runs(slabs):
    """Runs of constant id triple along the flattened slabs, background runs dropped.

    Returns the flat start of each run, its length and the three ids.
    """
    flats = [s.reshape(-1) for s in slabs]
    change = flats[0][1:] != flats[0][:-1]
    change |= flats[1][1:] != flats[1][:-1]
    change |= flats[2][1:] != flats[2][:-1]
    bounds = np.flatnonzero(change) + 1
    starts = np.concatenate([np.zeros(1, np.int64), bounds])
    lengths = np.diff(np.concatenate([starts, np.array([flats[0].size], np.int64)]))
    values = [f[starts] for f in flats]
    fg = values[0] != 0
    fg |= values[1] != 0
    fg |= values[2] != 0
    return starts[fg], lengths[fg], [v[fg] for v in values]


def _signature_table(views, keep_runs=None):
    """Histogram of the id triples (xy, xz, yz) over the foreground voxels.

    Returns ``None`` for all-background volumes, else ``(ids, g, counts, first,
    runs)``: ``ids[k]`` are the sorted nonzero ids of view ``k``; each row ``r``
    of the table is the triple ``(g[0][r], g[1][r], g[2][r])`` of 1-based
    positions in ``ids`` (0 = background in that view), seen in ``counts[r]``
    voxels, first at C-order flat index ``first[r]``. ``runs`` is ``(flat
    starts, lengths, table rows)`` of the foreground runs when there are at
    most ``keep_runs`` of them, else ``None``.
    """
    keep_runs = _KEPT_RUNS if keep_runs is None else keep_runs
    shape = views[0].shape
    plane = shape[1] * shape[2]
    raw, counts, firsts = ([], [], []), [], []
    kept, n_kept, n_rows = [], 0, 0
    for sl in _axis0_slabs(shape, _TABLE_SLAB_VOXELS):
        slabs = [np.ascontiguousarray(v[sl]) for v in views]
        starts, lengths, values = _signature_runs(slabs)
        if starts.size == 0:
            continue
        uniqs, invs = [], []
        for vals in values:
            uniq, inv = _compress(vals)
            uniqs.append(uniq)
            invs.append(inv)
        inv, n, first = _group_rows(invs, [u.size for u in uniqs])
        counts.append(np.bincount(inv, weights=lengths, minlength=n).astype(np.int64))
        starts += sl.start * plane
        firsts.append(starts[first])  # runs are in raster order
        for k in range(3):
            raw[k].append(uniqs[k][invs[k][first]])
        n_kept += starts.size
        if n_kept <= keep_runs:
            kept.append((starts, lengths, inv + n_rows))
        n_rows += n
    if not counts:
        return None

    ids, g = [], []
    for name, parts in zip(_VIEW_NAMES, raw):
        values = np.concatenate(parts)  # every id of the view starts some run
        if np.issubdtype(values.dtype, np.signedinteger) and values.min() < 0:
            raise ValueError(f"`{name}` contains negative ids (min {values.min()})")
        nonzero = values != 0
        ids_k = np.unique(values[nonzero])
        g_k = np.zeros(values.size, dtype=np.int64)
        g_k[nonzero] = np.searchsorted(ids_k, values[nonzero]) + 1
        ids.append(ids_k)
        g.append(g_k)
    counts = np.concatenate(counts)
    first = np.concatenate(firsts)
    row_of = None
    if len(firsts) > 1:  # one triple can appear in several slabs: merge its rows
        row_of, n, rep = _group_rows(g, [i.size + 1 for i in ids])
        counts = _sum_by(row_of, counts, n)
        merged_first = np.full(n, _INT64_MAX, dtype=np.int64)
        np.minimum.at(merged_first, row_of, first)
        first = merged_first
        g = [g_k[rep] for g_k in g]
    runs = None
    if n_kept <= keep_runs:
        starts, lengths, rows = (np.concatenate(a) for a in zip(*kept))
        runs = (starts, lengths, rows if row_of is None else row_of[rows])
    return ids, g, counts, first, runs


def _write_runs(out, starts, lengths, values):
    """``out.flat[start : start + length] = value`` for every run (C-contiguous ``out``)."""
    keep = values != 0
    run, voxel = _expand_ranges(starts[keep], lengths[keep])
    out.reshape(-1)[voxel] = values[keep][run]


# ---------------------------------------------------------------------------
# graph of objects -> clusters -> greedy merge
# ---------------------------------------------------------------------------


def _components(n, rows, cols):
    """Connected-component label of each of ``n`` nodes, given undirected edges."""
    graph = sparse.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _greedy_merge(adjacency, size):
    """The merge loop of one component of the cluster graph, with the bugs fixed.

    ``adjacency`` is ``{cluster: {neighbour: mean_iou}}`` (symmetric, keys in
    ascending order) and ``size`` the number of detections of each cluster; both
    are consumed. Returns ``{cluster: parent}`` for every cluster that gave its
    detections to another one.
    """
    parent = {}
    while True:
        # the most connected cluster; ties go to the first in order
        mc, degree = None, 0
        for c, nbrs in adjacency.items():
            if len(nbrs) > degree:
                mc, degree = c, len(nbrs)
        if mc is None:
            return parent
        nbrs = sorted(adjacency[mc], key=lambda c: (-size[c], c))
        if size[nbrs[0]] > size[mc]:
            # Rejected: a neighbour is bigger. Its detections go to ONE neighbour,
            # the one it overlaps most (fix: the original copied them into all).
            target = min(nbrs, key=lambda c: (-adjacency[mc][c], -size[c], c))
            size[target] += size.pop(mc)
            parent[mc] = target
            for c in adjacency.pop(mc):
                del adjacency[c][mc]
        else:
            # Accepted: absorb every neighbour, and inherit the neighbours' other
            # edges (fix: the original's "secondary neighbour" code was a no-op).
            for n in nbrs:
                n_edges = adjacency.pop(n)
                size[mc] += size.pop(n)
                parent[n] = mc
                for sn, iou in n_edges.items():
                    del adjacency[sn][n]
                    if sn != mc and sn not in adjacency[mc]:
                        adjacency[mc][sn] = iou
                        adjacency[sn][mc] = iou


def _merge_cluster_graph(size, rows, cols, iou):
    """Run the greedy merge on every component of the cluster graph.

    ``size`` (C,) holds detections per cluster; ``rows``/``cols``/``iou`` are the
    cluster-graph edges. Returns ``owner`` (C,): the cluster that finally holds
    the detections of each cluster (itself when it survives).
    """
    n = size.size
    owner = np.arange(n)
    if rows.size == 0:
        return owner
    comp = _components(n, rows, cols)
    order = np.argsort(comp[rows], kind="stable")
    bounds = np.flatnonzero(np.diff(comp[rows][order])) + 1
    for edge_ids in np.split(order, bounds):
        members = np.unique(np.concatenate([rows[edge_ids], cols[edge_ids]]))
        adjacency = {int(c): {} for c in members}
        edges = zip(rows[edge_ids].tolist(), cols[edge_ids].tolist(), iou[edge_ids].tolist())
        for r, c, w in edges:
            adjacency[r][c] = w
            adjacency[c][r] = w
        parent = _greedy_merge(adjacency, {c: int(size[c]) for c in adjacency})
        for c in parent:
            root = c
            while root in parent:
                root = parent[root]
            owner[c] = root
    return owner


def _assign_clusters(ids, g, counts, *, min_cluster, cluster_iou_thr, min_iou, min_overlap):
    """Per-view lookup tables (1-based object position -> cluster id, 0 = none)."""
    n_view = [i.size for i in ids]
    offset = np.concatenate([[0], np.cumsum(n_view)])
    n_nodes = int(offset[-1])
    node_size = np.concatenate([_sum_by(g[k], counts, n_view[k] + 1)[1:] for k in range(3)])

    # object graph: one edge per pair of overlapping objects from different views
    rows, cols, inter = [], [], []
    for p, q in ((0, 1), (0, 2), (1, 2)):
        both = (g[p] > 0) & (g[q] > 0)
        rows.append(offset[p] + g[p][both] - 1)
        cols.append(offset[q] + g[q][both] - 1)
        inter.append(counts[both])
    rows, cols, inter = (np.concatenate(a) for a in (rows, cols, inter))
    if rows.size:
        inv, n_edges, first = _group_rows([rows, cols], [n_nodes, n_nodes])
        inter = _sum_by(inv, inter, n_edges)
        rows, cols = rows[first], cols[first]
    iou = inter / (node_size[rows] + node_size[cols] - inter)

    # components with too few detections are dropped
    comp = _components(n_nodes, rows, cols)
    node_ok = np.bincount(comp)[comp] >= min_cluster

    # clusters: components of the strong edges
    strong = iou > cluster_iou_thr
    cluster = _components(n_nodes, rows[strong], cols[strong])
    n_clusters = int(cluster.max()) + 1
    detections = np.bincount(cluster, minlength=n_clusters)

    # cluster graph: mean pairwise IoU / overlap over all member pairs (missing = 0)
    ca, cb = cluster[rows], cluster[cols]
    cross = (ca != cb) & node_ok[rows]
    lo, hi = np.minimum(ca, cb)[cross], np.maximum(ca, cb)[cross]
    e_rows = e_cols = np.zeros(0, dtype=np.int64)
    e_iou = np.zeros(0)
    if lo.size:
        inv, n_pairs, first = _group_rows([lo, hi], [n_clusters, n_clusters])
        lo, hi = lo[first], hi[first]
        n_member_pairs = detections[lo] * detections[hi]
        mean_iou = np.bincount(inv, weights=iou[cross], minlength=n_pairs) / n_member_pairs
        mean_overlap = _sum_by(inv, inter[cross], n_pairs) / n_member_pairs
        keep = (mean_iou > min_iou) | (mean_overlap > min_overlap)
        e_rows, e_cols, e_iou = lo[keep], hi[keep], mean_iou[keep]

    owner = _merge_cluster_graph(detections, e_rows, e_cols, e_iou)

    # surviving clusters with enough detections get ids 1..K
    final_size = np.bincount(owner, weights=detections, minlength=n_clusters)
    cluster_ok = np.zeros(n_clusters, dtype=bool)
    cluster_ok[cluster[node_ok]] = True
    survives = cluster_ok & (owner == np.arange(n_clusters)) & (final_size >= min_cluster)
    vote_id = np.zeros(n_clusters, dtype=np.int64)
    vote_id[survives] = np.arange(1, int(survives.sum()) + 1)
    node_cluster = np.where(node_ok, vote_id[owner[cluster]], 0)
    luts = [
        np.concatenate([[0], node_cluster[offset[k] : offset[k + 1]]]).astype(np.int64)
        for k in range(3)
    ]
    return luts, int(survives.sum())


# ---------------------------------------------------------------------------
# voting
# ---------------------------------------------------------------------------


def _votes(c, k):
    """How many of the three views carry the value ``c[k]``, per element (int8)."""
    return (c[k] == c[0]).astype(np.int8) + (c[k] == c[1]) + (c[k] == c[2])


def _pick_objects(c, vote_thr, object_of_cluster):
    """Object of each voxel (or table row) from the clusters its three views give.

    A cluster wins a voxel when at least ``vote_thr`` views give it; among the
    winners (several only when ``vote_thr == 1``) the object given by the most
    views is chosen, ties going to the first view (xy, then xz, then yz).
    """
    obj = [object_of_cluster[ck] for ck in c]
    best = np.zeros(c[0].shape, dtype=object_of_cluster.dtype)
    best_votes = np.zeros(c[0].shape, dtype=np.int8)
    for k in range(3):
        obj_votes = _votes(obj, k)
        take = (c[k] != 0) & (_votes(c, k) >= vote_thr) & (obj_votes > best_votes)
        best[take] = obj[k][take]
        best_votes[take] = obj_votes[take]
    return best


def _merge_overlapping(c, counts, n_clusters, vote_thr, *, min_iou, min_overlap):
    """Object id of each cluster after merging clusters whose voted masks overlap.

    Returns ``object_of_cluster`` (n_clusters + 1,), 0 -> 0. Voted masks can only
    overlap when ``vote_thr == 1`` (with 2 or 3 of three views, one cluster at most
    wins a voxel), so otherwise every cluster is its own object.
    """
    identity = np.arange(n_clusters + 1, dtype=np.int64)
    if vote_thr > 1 or n_clusters < 2:
        return identity
    voted = []
    for k in range(3):
        new = c[k] != 0
        for prev in range(k):
            new &= c[k] != c[prev]  # count each cluster once per voxel
        voted.append(new)
    voted_size = np.zeros(n_clusters + 1, dtype=np.int64)
    for k in range(3):
        np.add.at(voted_size, c[k][voted[k]], counts[voted[k]])
    lo, hi, inter = [], [], []
    for p, q in ((0, 1), (0, 2), (1, 2)):
        both = voted[p] & voted[q]
        lo.append(np.minimum(c[p], c[q])[both])
        hi.append(np.maximum(c[p], c[q])[both])
        inter.append(counts[both])
    lo, hi, inter = (np.concatenate(a) for a in (lo, hi, inter))
    if lo.size == 0:
        return identity
    inv, n_pairs, first = _group_rows([lo, hi], [n_clusters + 1, n_clusters + 1])
    lo, hi = lo[first], hi[first]
    inter = _sum_by(inv, inter, n_pairs)
    iou = inter / (voted_size[lo] + voted_size[hi] - inter)
    merge = (iou > min_iou) | (inter > min_overlap)
    objects = _components(n_clusters, lo[merge] - 1, hi[merge] - 1) + 1  # cluster 0: none
    return np.concatenate([[0], objects]).astype(np.int64)


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def ortho_consensus(
    xy,
    xz,
    yz,
    *,
    vote_thr=2,
    cluster_iou_thr=0.75,
    allow_one_view=False,
    min_overlap=100,
    min_iou=0.01,
    min_size=0,
    min_extent=0,
):
    """Combine the xy, xz and yz instance segmentations of one class into one volume.

    Each input is the 3D result of segmenting the volume slice by slice along
    one axis and linking the slices (a "stack"). Objects of different views
    that overlap are grouped, and the voxels that enough views agree on form
    the consensus object.

    Parameters
    ----------
    xy, xz, yz : (Z, Y, X) ndarray of int
        Instance label volumes of one class, all in the same (Z, Y, X) frame
        (not transposed). 0 is background; ids are arbitrary and independent
        between views (``uint64`` is fine).
    vote_thr : {1, 2, 3}, optional
        How many of the three views must cover a voxel for it to belong to an
        object (see Notes). Default 2: majority.
    cluster_iou_thr : float in [0, 1], optional
        Objects of different views whose IoU is **above** this are taken as the
        same detection from the start (default 0.75). Forced to 0 when
        ``vote_thr`` is 1 and ``allow_one_view`` is off.
    allow_one_view : bool, optional
        Keep objects that only one view found (default False). This matters
        only with ``vote_thr=1``: with 2 or 3 a voxel seen by one view never
        gets enough votes.
    min_overlap : float, optional
        Two groups of detections are linked when their mean pairwise
        intersection is above this many voxels (default 100), or ...
    min_iou : float in [0, 1], optional
        ... when their mean pairwise IoU is above this (default 0.01). The same
        two thresholds decide which voted objects overlap enough to be merged.
    min_size : int, optional
        Remove consensus objects with fewer voxels (default 0: keep all).
    min_extent : int, optional
        Remove consensus objects whose bounding box spans fewer than this many
        voxels along z, y **or** x (default 0: keep all).

    Returns
    -------
    consensus : (Z, Y, X) ndarray of uint32 (uint64 when needed)
        Objects numbered 1..M in the order of their first voxel in C (raster)
        order; 0 is background. Each voxel belongs to one object.

    Raises
    ------
    TypeError
        If a view is not a 3D integer array (float, bool, wrong ndim), or an
        option has the wrong type.
    ValueError
        If the views differ in shape, hold negative ids, ``vote_thr`` is not 1,
        2 or 3, or an option is out of range.

    See Also
    --------
    semantic_consensus : the same vote for a semantic (stuff) class.

    Notes
    -----
    **Choosing ``vote_thr`` and ``allow_one_view``.** Each view sees the
    organelles well in its own slicing plane and less well across it; the
    vote keeps what the views agree on.

    * ``vote_thr=1`` (union): a voxel counts if any view marked it, so objects
      come out largest and most complete, with the most false positives.
      Objects must still be found by at least two views, unless
      ``allow_one_view=True``, which also keeps objects only one view found.
    * ``vote_thr=2`` (majority, the default): a voxel counts if at least two
      views marked it. Good default: it removes one-view noise and smooths the
      boundary errors of each slicing direction.
    * ``vote_thr=3`` (unanimous): only voxels all three views marked; the
      most conservative, objects come out smallest.

    **Algorithm** (original ``merge_objects_from_trackers``). Objects of the
    three views are nodes of a graph; objects of different views that share
    voxels are linked (with their IoU and intersection). Components with fewer
    detections than ``min_cluster`` (2, or 1 with ``allow_one_view``) are
    dropped. Inside a component, detections linked by IoU above
    ``cluster_iou_thr`` form clusters; two clusters are linked when their mean
    pairwise IoU (missing pairs count 0) exceeds ``min_iou`` or their mean
    intersection exceeds ``min_overlap``. A greedy loop then takes the most
    connected cluster: if a neighbour holds more detections it is rejected,
    otherwise it absorbs its neighbours. Every remaining cluster with at least
    ``min_cluster`` detections keeps the voxels covered by at least
    ``vote_thr`` of its detections (one view's objects never overlap, so this
    is the number of views), clusters whose voted voxels overlap (IoU above
    ``min_iou`` or more than ``min_overlap`` voxels) are merged, and the size
    filters run last.

    **Differences from the original.**

    * Fixed: when the greedy loop accepts a cluster, it now really inherits the
      other edges of the neighbours it absorbs (the original's code meant to do
      so added the wrong edge and was a no-op), so a chain of linked clusters
      ends as one object.
    * Fixed: a rejected cluster's detections go to one neighbour, the one with
      the highest mean IoU to it (ties: the bigger, then the first), instead of
      being copied into every neighbour, where they voted several times.
    * Where two final objects share a few voxels (only possible with
      ``vote_thr=1``), each voxel goes to the object most views give it (ties:
      xy, then xz, then yz); the original wrote them in id order, the last won.
    * ``min_extent`` measures the box of the voted voxels; the original used the
      union of the member boxes, which is looser.
    * Ids follow the first voxel in raster order (the original followed
      networkx component order), so the numbering does not depend on the input
      ids (tie-breaks in the merge loop follow the order of the ids, as in the
      original). The output is ``uint32``, not ``int32``.
    * ``min_overlap`` and ``min_iou`` are parameters (constants in the
      original); ``min_size``/``min_extent`` are applied here, not by the caller.

    Cost: one sweep over the three views in slabs along axis 0 (a comparison
    of neighbouring voxels per view), then work on the runs of constant ids;
    memory is the output, slab-sized temporaries and 24 bytes per foreground
    run (a second sweep replaces the kept runs past 2**23 of them).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 4, 4), dtype=np.int32)
    >>> a[1:3, 1:3, 1:3] = 5
    >>> b = np.zeros_like(a)
    >>> b[1:3, 1:3, 1:4] = 9    # one voxel column wider
    >>> out = ortho_consensus(a, b, b)
    >>> out.dtype, int(out.max()), int((out == 1).sum())
    (dtype('uint32'), 1, 12)
    >>> int(ortho_consensus(a, b, b, vote_thr=3).sum())
    8
    >>> int(ortho_consensus(a, np.zeros_like(a), np.zeros_like(a)).max())
    0
    """
    views = _check_views((xy, xz, yz), check_negative=False)  # checked by the table pass
    vote_thr = _check_vote_thr(vote_thr)
    cluster_iou_thr = check_probability(cluster_iou_thr, "cluster_iou_thr")
    if not isinstance(allow_one_view, (bool, np.bool_)):
        raise TypeError(f"`allow_one_view` must be True or False; got {allow_one_view!r}")
    min_overlap = _check_non_negative(min_overlap, "min_overlap", integer=False)
    min_iou = check_probability(min_iou, "min_iou")
    min_size = _check_non_negative(min_size, "min_size", integer=True)
    min_extent = _check_non_negative(min_extent, "min_extent", integer=True)

    shape = views[0].shape
    table = _signature_table(views)
    if table is None:
        return np.zeros(shape, dtype=np.uint32)
    ids, g, counts, first, runs = table

    min_cluster = 1 if allow_one_view else 2  # majority of three views
    if vote_thr < min_cluster:
        cluster_iou_thr = 0.0
    luts, n_clusters = _assign_clusters(
        ids,
        g,
        counts,
        min_cluster=min_cluster,
        cluster_iou_thr=cluster_iou_thr,
        min_iou=min_iou,
        min_overlap=min_overlap,
    )

    # vote on the table: object of each signature, object sizes and first voxels
    c = [luts[k][g[k]] for k in range(3)]
    object_of_cluster = _merge_overlapping(
        c, counts, n_clusters, vote_thr, min_iou=min_iou, min_overlap=min_overlap
    )
    n_objects = int(object_of_cluster.max()) + 1
    label = _pick_objects(c, vote_thr, object_of_cluster)
    size = _sum_by(label, counts, n_objects)
    first_voxel = np.full(n_objects, _INT64_MAX, dtype=np.int64)
    np.minimum.at(first_voxel, label, first)
    keep = size >= max(min_size, 1)
    keep[0] = False
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(first_voxel[kept], kind="stable")]
    out_dtype = np.uint32 if kept.size <= np.iinfo(np.uint32).max else np.uint64
    final_id = np.zeros(n_objects, dtype=out_dtype)
    final_id[kept] = np.arange(1, kept.size + 1)

    out = np.zeros(shape, dtype=out_dtype)
    if kept.size == 0:
        return out
    if runs is not None:
        # every foreground run's table row is known: write its object at once
        _write_runs(out, runs[0], runs[1], final_id[label][runs[2]])
    for sl in _axis0_slabs(shape) if runs is None else ():
        # second sweep (very large foregrounds): write the voted objects
        slabs = [v[sl] for v in views]
        n_views = (slabs[0] != 0).view(np.uint8) + (slabs[1] != 0) + (slabs[2] != 0)
        candidate = n_views >= vote_thr
        if not candidate.any():
            continue
        cv = []
        for k, slab in enumerate(slabs):
            uniq, inv = _compress(slab[candidate])
            pos = np.searchsorted(ids[k], uniq) + 1
            pos[uniq == 0] = 0
            cv.append(luts[k][pos][inv])
        out[sl][candidate] = final_id[_pick_objects(cv, vote_thr, object_of_cluster)]

    if min_extent > 0:
        stats = _scan_objects(out, bbox=True)  # ids are exactly 1..M
        thin = (stats.extents < min_extent).any(axis=1)
        if thin.any():
            relabel = np.zeros(kept.size + 1, dtype=out_dtype)
            relabel[stats.ids[~thin]] = np.arange(1, int((~thin).sum()) + 1)
            np.take(relabel, out, out=out)
    return out


def semantic_consensus(xy, xz, yz, *, vote_thr=2):
    """Voxels that at least ``vote_thr`` of the three views mark as foreground.

    Parameters
    ----------
    xy, xz, yz : (Z, Y, X) ndarray of bool or int
        Semantic masks (or label volumes; any nonzero value is foreground) of
        one class from the xy, xz and yz stacks, in the same frame. Any of them
        may be empty (all zero).
    vote_thr : {1, 2, 3}, optional
        1: union, 2: majority (default), 3: intersection.

    Returns
    -------
    mask : (Z, Y, X) ndarray of bool

    Raises
    ------
    TypeError
        If a view is float or not 3D, or ``vote_thr`` is not an integer.
    ValueError
        If the views differ in shape, hold negative values, or ``vote_thr`` is
        not 1, 2 or 3.

    Notes
    -----
    Same vote as the original ``merge_semantic_from_trackers``, which raised
    ``IndexError`` when fewer than ``vote_thr`` views contained the class; here
    that case simply gives an empty (or smaller) mask. The result is a boolean
    mask rather than a volume labelled 1.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((1, 1, 4), dtype=bool)
    >>> a[..., :3] = True
    >>> b = np.zeros_like(a)
    >>> b[..., 1:] = True
    >>> semantic_consensus(a, b, np.zeros_like(a)).astype(int)
    array([[[0, 1, 1, 0]]])
    >>> bool(semantic_consensus(a, b, np.zeros_like(a), vote_thr=3).any())
    False
    """
    views = _check_views((xy, xz, yz), allow_bool=True)
    vote_thr = _check_vote_thr(vote_thr)
    votes = np.zeros(views[0].shape, dtype=np.uint8)
    for view in views:
        votes += view != 0
    return votes >= vote_thr
