"""Segmentation metrics: contingency, one-to-one matching, F1/AP, PQ and IoU.

Everything starts from one sparse contingency table (pixel counts shared by
each ground-truth and predicted object), computed in a single pass after the
ids are compressed, so that the cost depends on the number of pixels and
overlapping pairs, never on the id values. Matching runs the Hungarian
algorithm only on the small set of pairs that could match.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components as _graph_components

from ._labels import _check_labels, _class_ids, _index_labels, _present_ids
from .validation import check_label_divisor, check_same_shape

__all__ = [
    "Contingency",
    "Matching",
    "contingency_table",
    "match_instances",
    "instance_metrics",
    "panoptic_quality",
    "semantic_iou",
    "evaluate_segmentation",
]

# largest dense block handed to one linear_sum_assignment call; bigger
# conflict graphs are solved per connected component
_MAX_DENSE_CELLS = 1_000_000


# ---------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Contingency:
    """Pixel overlaps between the objects of two label images.

    Attributes
    ----------
    gt_ids : (G,) ndarray
        Sorted nonzero ids of the ground truth.
    pred_ids : (P,) ndarray
        Sorted nonzero ids of the prediction.
    intersections : (G, P) scipy.sparse.csr_array of int64
        ``intersections[i, j]`` pixels hold ``gt_ids[i]`` in the ground truth
        and ``pred_ids[j]`` in the prediction; only overlapping pairs are stored.
    gt_areas : (G,) ndarray of int64
        Pixel count of each ground-truth object.
    pred_areas : (P,) ndarray of int64
        Pixel count of each predicted object.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    intersections: sparse.csr_array
    gt_areas: np.ndarray
    pred_areas: np.ndarray

    @property
    def n_gt(self) -> int:
        """Number of ground-truth objects."""
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return int(self.pred_ids.size)

    @cached_property
    def iou(self) -> sparse.csr_array:
        """(G, P) csr_array of float64: IoU of every overlapping pair."""
        inter = self.intersections
        rows = np.repeat(np.arange(self.n_gt), np.diff(inter.indptr))
        counts = inter.data.astype(np.float64)
        union = self.gt_areas[rows] + self.pred_areas[inter.indices] - counts
        return sparse.csr_array(
            (counts / union, inter.indices.copy(), inter.indptr.copy()), shape=inter.shape
        )


@dataclass(frozen=True, eq=False)
class Matching:
    """One-to-one matches between ground-truth and predicted objects.

    Attributes
    ----------
    gt_ids, pred_ids : (T,) ndarray
        Matched pairs ``(gt_ids[k], pred_ids[k])``, sorted by ground-truth id.
    ious : (T,) ndarray of float64
        IoU of each matched pair (all ``>= iou_threshold``).
    unmatched_gt : (G - T,) ndarray
        Ground-truth ids without a match (false negatives), sorted.
    unmatched_pred : (P - T,) ndarray
        Predicted ids without a match (false positives), sorted.
    iou_threshold : float
        Smallest IoU a match may have.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    ious: np.ndarray
    unmatched_gt: np.ndarray
    unmatched_pred: np.ndarray
    iou_threshold: float

    @property
    def tp(self) -> int:
        """Number of matches (true positives)."""
        return int(self.ious.size)

    @property
    def fp(self) -> int:
        """Number of unmatched predictions (false positives)."""
        return int(self.unmatched_pred.size)

    @property
    def fn(self) -> int:
        """Number of unmatched ground-truth objects (false negatives)."""
        return int(self.unmatched_gt.size)


# ---------------------------------------------------------------------------
# private helpers
# ---------------------------------------------------------------------------


def _check_pair(gt, pred):
    gt = _check_labels(gt, "gt")
    pred = _check_labels(pred, "pred")
    check_same_shape(gt, pred, "gt", "pred")
    return gt, pred


def _check_threshold(value, arg_name="iou_threshold"):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{arg_name}` must be a number in (0, 1]; got {value!r}")
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"`{arg_name}` must be in (0, 1]; got {value}")
    return value


def _check_thresholds(values):
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = (values,)
    try:
        values = list(values)
    except TypeError:
        raise TypeError(
            f"`iou_thresholds` must be a number or a sequence of numbers in (0, 1]; got {values!r}"
        ) from None
    if not values:
        raise ValueError("`iou_thresholds` must hold at least one threshold; got none")
    checked = [_check_threshold(v, "iou_thresholds") for v in values]
    return tuple(dict.fromkeys(checked))  # drop repeats, keep order


@dataclass(frozen=True, eq=False)
class _Foreground:
    """The foreground pixels of a label image, with compressed ids."""

    ids: np.ndarray  # (K,) sorted nonzero ids
    pos: np.ndarray  # (F,) sorted flat (C-order) positions of the nonzero pixels
    idx: np.ndarray  # (F,) position of each pixel's id in ``ids``
    areas: np.ndarray  # (K,) pixel count of each id


def _foreground(labels):
    flat = labels.reshape(-1)
    pos = np.flatnonzero(flat)
    ids, idx, areas = _index_labels(flat[pos])
    return _Foreground(ids, pos, idx, areas)


def _overlap(g, p):
    """Indices into ``g.pos`` and ``p.pos`` of the pixels in both foregrounds."""
    if g.pos.size == 0 or p.pos.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    j = np.minimum(np.searchsorted(p.pos, g.pos), p.pos.size - 1)
    hit = p.pos[j] == g.pos
    return np.flatnonzero(hit), j[hit]


def _count_pairs(rows, cols, n_rows, n_cols):
    """Sparse (n_rows, n_cols) counts of the (row, col) pairs."""
    counts = sparse.coo_array(
        (np.ones(rows.size, dtype=np.int64), (rows, cols)), shape=(n_rows, n_cols)
    ).tocsr()
    counts.sum_duplicates()
    return counts


def _contingency(g, p, gi, pj):
    counts = _count_pairs(g.idx[gi], p.idx[pj], g.ids.size, p.ids.size)
    return Contingency(g.ids, p.ids, counts, g.areas, p.areas)


def _as_contingency(gt, pred):
    if isinstance(gt, Contingency):
        if pred is not None:
            raise ValueError(
                "pass either a Contingency as `gt` (and no `pred`) or two label images"
            )
        return gt
    if pred is None:
        raise TypeError("`pred` is required unless `gt` is a Contingency from contingency_table")
    return contingency_table(gt, pred)


def _assign(rows, cols, weights, *, split=True):
    """Maximum-weight one-to-one matching on a sparse bipartite graph (positions)."""
    u_rows, r = np.unique(rows, return_inverse=True)
    u_cols, c = np.unique(cols, return_inverse=True)
    if not split or u_rows.size * u_cols.size <= _MAX_DENSE_CELLS:
        dense = np.zeros((u_rows.size, u_cols.size))
        dense[r, c] = weights
        a, b = linear_sum_assignment(dense, maximize=True)
        keep = dense[a, b] > 0
        return u_rows[a[keep]], u_cols[b[keep]], dense[a[keep], b[keep]]
    # large conflict graph: solve each connected component on its own
    n_r = u_rows.size
    graph = sparse.coo_array((np.ones(r.size), (r, c + n_r)), shape=(n_r + u_cols.size,) * 2)
    _, comp = _graph_components(graph, directed=False)
    edge_comp = comp[r]
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    out_r, out_c, out_w = [], [], []
    for edges in np.split(order, bounds):
        sub_r, sub_c, sub_w = _assign(rows[edges], cols[edges], weights[edges], split=False)
        out_r.append(sub_r)
        out_c.append(sub_c)
        out_w.append(sub_w)
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_w)


def _match_positions(cont, iou_threshold):
    """Matched (gt position, pred position, IoU) arrays, sorted by gt position."""
    iou = cont.iou
    rows = np.repeat(np.arange(cont.n_gt), np.diff(iou.indptr))
    candidate = iou.data >= iou_threshold
    r, c, w = rows[candidate], iou.indices[candidate], iou.data[candidate]
    if r.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    # pairs whose two objects have no other candidate need no assignment;
    # above IoU 0.5 every candidate pair is such a pair
    alone = (np.bincount(r, minlength=cont.n_gt)[r] == 1) & (
        np.bincount(c, minlength=cont.n_pred)[c] == 1
    )
    if not alone.all():
        ar, ac, aw = _assign(r[~alone], c[~alone], w[~alone])
        r = np.concatenate([r[alone], ar])
        c = np.concatenate([c[alone], ac])
        w = np.concatenate([w[alone], aw])
    order = np.argsort(r, kind="stable")
    return r[order].astype(np.intp), c[order].astype(np.intp), w[order]


def _ratio(num, den, empty):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    return np.where(empty, 1.0, out)


def _scores(tp, fp, fn, iou_sum):
    """Instance and panoptic scores from (arrays of) counts; see instance_metrics."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    empty = (tp + fp + fn) == 0
    f1 = _ratio(tp, tp + 0.5 * fp + 0.5 * fn, empty)
    sq = _ratio(iou_sum, tp, empty)
    return {
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
        "f1": f1,
        "ap": _ratio(tp, tp + fp + fn, empty),
        "mean_matched_iou": sq,
        "pq": sq * f1,
        "sq": sq,
        "rq": f1,
    }


_INSTANCE_KEYS = ("precision", "recall", "f1", "ap", "mean_matched_iou")
_PANOPTIC_KEYS = ("pq", "sq", "rq")


def _instance_record(tp, fp, fn, iou_sum):
    s = _scores(tp, fp, fn, iou_sum)
    record = {"tp": int(tp), "fp": int(fp), "fn": int(fn)}
    record.update({k: float(s[k]) for k in _INSTANCE_KEYS})
    return record


def _threshold_key(threshold):
    return repr(float(threshold))


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def contingency_table(gt, pred):
    """Count the pixels shared by every ground-truth and predicted object.

    Parameters
    ----------
    gt, pred : (M[, N[, ...]]) ndarray of int
        Label images of equal shape; 0 is background. Any integer dtype, ids up
        to ``2**64 - 1``.

    Returns
    -------
    contingency : Contingency
        ``gt_ids``, ``pred_ids`` (sorted nonzero ids), ``intersections`` (sparse
        (G, P) counts), ``gt_areas``, ``pred_areas``, and the sparse IoU of the
        overlapping pairs as ``contingency.iou``.

    Raises
    ------
    TypeError
        If either image is boolean, not integer or 0-dimensional.
    ValueError
        If either holds negative ids, or the shapes differ.

    Notes
    -----
    One pass: the ids of each image are compressed (``bincount`` lookup or
    ``np.unique``), then the foreground pixel pairs are summed into a sparse
    matrix. Memory is linear in the number of pixels; the original's napari
    widget built a dense histogram sized by the largest ids instead.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0], [0, 2, 2]])
    >>> pred = np.array([[5, 5, 5], [0, 0, 9]])
    >>> c = contingency_table(gt, pred)
    >>> c.gt_ids, c.pred_ids
    (array([1, 2]), array([5, 9]))
    >>> c.intersections.toarray()
    array([[2, 0],
           [0, 1]])
    >>> c.iou.toarray()
    array([[0.66666667, 0.        ],
           [0.        , 0.5       ]])
    """
    gt, pred = _check_pair(gt, pred)
    g, p = _foreground(gt), _foreground(pred)
    return _contingency(g, p, *_overlap(g, p))


def match_instances(gt, pred=None, *, iou_threshold=0.5):
    """Match ground-truth and predicted objects one to one by IoU.

    Parameters
    ----------
    gt : (M[, N[, ...]]) ndarray of int, or Contingency
        Ground-truth label image, or a table from :func:`contingency_table`
        (then leave ``pred`` out) to reuse it.
    pred : (M[, N[, ...]]) ndarray of int, optional
        Predicted label image of the same shape as ``gt``.
    iou_threshold : float, optional
        Smallest IoU of a match, in (0, 1].

    Returns
    -------
    matching : Matching
        Matched ``gt_ids``, ``pred_ids`` and ``ious``, ``unmatched_gt``,
        ``unmatched_pred``, and ``tp``/``fp``/``fn`` counts.

    Raises
    ------
    TypeError
        If an image is boolean, not integer or 0-dimensional, ``pred`` is
        missing, or ``iou_threshold`` is not a number.
    ValueError
        If an image holds negative ids, the shapes differ, ``pred`` is given
        with a Contingency, or ``iou_threshold`` is outside (0, 1].

    Notes
    -----
    The candidates are the pairs with ``IoU >= iou_threshold``. Among them the
    Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) picks the
    one-to-one set with the largest total IoU; it runs only on candidates that
    compete for an object, which above 0.5 never happens. The original ran
    the assignment on all overlapping pairs and dropped matches below the
    threshold afterwards, which can lose a match that the restricted problem
    keeps (never at thresholds above 0.5).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[7, 7, 7, 0, 8]])
    >>> m = match_instances(gt, pred)
    >>> m.gt_ids, m.pred_ids, m.ious
    (array([1, 2]), array([7, 8]), array([0.66666667, 0.5       ]))
    >>> match_instances(gt, pred, iou_threshold=0.6).unmatched_gt
    array([2])
    """
    iou_threshold = _check_threshold(iou_threshold)
    cont = _as_contingency(gt, pred)
    r, c, w = _match_positions(cont, iou_threshold)
    return Matching(
        gt_ids=cont.gt_ids[r],
        pred_ids=cont.pred_ids[c],
        ious=w,
        unmatched_gt=np.delete(cont.gt_ids, r),
        unmatched_pred=np.delete(cont.pred_ids, c),
        iou_threshold=iou_threshold,
    )


def instance_metrics(gt, pred=None, *, iou_thresholds=(0.5, 0.75)):
    """Object detection scores at one or more IoU thresholds.

    Parameters
    ----------
    gt : (M[, N[, ...]]) ndarray of int, or Contingency
        Ground-truth label image, or a table from :func:`contingency_table`
        (then leave ``pred`` out).
    pred : (M[, N[, ...]]) ndarray of int, optional
        Predicted label image of the same shape as ``gt``.
    iou_thresholds : float or sequence of float, optional
        Thresholds in (0, 1]; repeats are dropped.

    Returns
    -------
    metrics : dict of float to dict
        For each threshold: ``tp``, ``fp``, ``fn`` (int) and ``precision``
        ``TP/(TP+FP)``, ``recall`` ``TP/(TP+FN)``, ``f1``
        ``TP/(TP+FP/2+FN/2)``, ``ap`` ``TP/(TP+FP+FN)`` and
        ``mean_matched_iou`` (float).

    Raises
    ------
    TypeError
        If an image is boolean, not integer or 0-dimensional, ``pred`` is
        missing, or a threshold is not a number.
    ValueError
        If an image holds negative ids, the shapes differ, or a threshold is
        outside (0, 1] or none is given.

    Notes
    -----
    Matching is :func:`match_instances`; the contingency table is computed once
    for all thresholds. ``ap`` is the "average precision at one IoU" of the
    DSB 2018 / StarDist benchmarks that the original evaluator calls ``ap``,
    not COCO AP.

    When both images hold no object every score is 1.0. Otherwise a ratio
    with a zero denominator is 0.0: precision is 0 when there are no
    predictions, recall is 0 when there is no ground truth, and
    ``mean_matched_iou`` is 0 without matches. The original added 1e-5 to some
    denominators; these are exact.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[7, 7, 7, 0, 8]])
    >>> m = instance_metrics(gt, pred, iou_thresholds=0.5)[0.5]
    >>> m["tp"], m["fp"], m["fn"], m["f1"]
    (2, 0, 0, 1.0)
    """
    thresholds = _check_thresholds(iou_thresholds)
    cont = _as_contingency(gt, pred)
    out = {}
    for threshold in thresholds:
        _, _, w = _match_positions(cont, threshold)
        tp = w.size
        out[threshold] = _instance_record(tp, cont.n_pred - tp, cont.n_gt - tp, w.sum())
    return out


def panoptic_quality(gt, pred=None, *, iou_threshold=0.5):
    """Panoptic quality PQ = SQ * RQ of one class.

    Parameters
    ----------
    gt : (M[, N[, ...]]) ndarray of int, or Contingency
        Ground-truth label image, or a table from :func:`contingency_table`
        (then leave ``pred`` out).
    pred : (M[, N[, ...]]) ndarray of int, optional
        Predicted label image of the same shape as ``gt``.
    iou_threshold : float, optional
        Smallest IoU of a match (true positive), in (0, 1].

    Returns
    -------
    metrics : dict
        ``pq``, ``sq`` (mean IoU of the matches), ``rq``
        (``TP/(TP+FP/2+FN/2)``), all float, and ``tp``, ``fp``, ``fn`` (int).

    Raises
    ------
    TypeError
        If an image is boolean, not integer or 0-dimensional, ``pred`` is
        missing, or ``iou_threshold`` is not a number.
    ValueError
        If an image holds negative ids, the shapes differ, or
        ``iou_threshold`` is outside (0, 1].

    Notes
    -----
    Matches use ``IoU >= iou_threshold`` as the original does (Kirillov et
    al.'s definition uses ``> 0.5``; the two differ only for pairs at exactly
    0.5). Every score is 1.0 when both images are empty; ``sq`` and ``pq`` are
    0.0 without matches otherwise. No 1e-5 is added to the denominator.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[7, 7, 7, 0, 0]])
    >>> pq = panoptic_quality(gt, pred)
    >>> pq["tp"], pq["fn"], round(pq["sq"], 3), round(pq["rq"], 3), round(pq["pq"], 3)
    (1, 1, 0.667, 0.667, 0.444)
    """
    iou_threshold = _check_threshold(iou_threshold)
    cont = _as_contingency(gt, pred)
    _, _, w = _match_positions(cont, iou_threshold)
    tp = w.size
    fp, fn = cont.n_pred - tp, cont.n_gt - tp
    s = _scores(tp, fp, fn, w.sum())
    return {
        "pq": float(s["pq"]),
        "sq": float(s["sq"]),
        "rq": float(s["rq"]),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
    }


def semantic_iou(gt, pred):
    """IoU of the foreground (nonzero) masks of two label images.

    Parameters
    ----------
    gt, pred : (M[, N[, ...]]) ndarray of int
        Label images of equal shape; any nonzero id is foreground.

    Returns
    -------
    iou : float
        ``|gt & pred| / |gt | pred|``; 1.0 when both are empty.

    Raises
    ------
    TypeError
        If either image is boolean, not integer or 0-dimensional.
    ValueError
        If either holds negative ids, or the shapes differ.

    Notes
    -----
    Exact, with no 1e-5 smoothing (the training metric added 1e-5 to both
    terms), and correct for a single predicted object (the original 3D
    evaluator returned a sentinel run there).

    Examples
    --------
    >>> semantic_iou(np.array([[1, 1, 0, 0]]), np.array([[0, 3, 3, 0]]))
    0.3333333333333333
    """
    gt, pred = _check_pair(gt, pred)
    g, p = gt != 0, pred != 0
    union = int(np.count_nonzero(g | p))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(g & p)) / union


def _slice_objects(fg, plane):
    """Split the objects into per-slice pieces (slices along axis 0).

    Returns the slice of every foreground pixel, a ``_Foreground`` whose ids
    are the pieces, and the slice of every piece.
    """
    n = max(fg.ids.size, 1)
    pixel_slice = fg.pos // plane
    pieces, piece_idx, piece_areas = _index_labels(pixel_slice * n + fg.idx + 1)
    piece_fg = _Foreground(np.arange(pieces.size), fg.pos, piece_idx, piece_areas)
    return pixel_slice, piece_fg, (pieces - 1) // n


def _per_slice_block(shape, g, p, gi, pj, thresholds):
    """Pooled and mean 2D scores of the slices of a stack along axis 0."""
    n_slices = shape[0]
    plane = max(int(np.prod(shape[1:], dtype=np.int64)), 1)
    g_px_slice, g_pieces, g_slice = _slice_objects(g, plane)
    p_px_slice, p_pieces, p_slice = _slice_objects(p, plane)
    cont = _contingency(g_pieces, p_pieces, gi, pj)
    n_gt_z = np.bincount(g_slice, minlength=n_slices)
    n_pred_z = np.bincount(p_slice, minlength=n_slices)
    scored = (n_gt_z + n_pred_z) > 0  # slices with no object on either side score 1.0

    def mean(values):
        return float(values[scored].mean()) if scored.any() else 1.0

    inter_z = np.bincount(g_px_slice[gi], minlength=n_slices)
    union_z = (
        np.bincount(g_px_slice, minlength=n_slices)
        + np.bincount(p_px_slice, minlength=n_slices)
        - inter_z
    )
    sem_z = _ratio(inter_z, union_z, union_z == 0)
    inter, union = inter_z.sum(), union_z.sum()
    pooled = {"semantic_iou": float(_ratio(inter, union, union == 0)), "instance": {}}
    means = {"semantic_iou": mean(sem_z), "instance": {}}

    for threshold in thresholds if 0.5 in thresholds else (*thresholds, 0.5):
        r, _, w = _match_positions(cont, threshold)
        tp_z = np.bincount(g_slice[r], minlength=n_slices)
        iou_z = np.bincount(g_slice[r], weights=w, minlength=n_slices)
        fp_z, fn_z = n_pred_z - tp_z, n_gt_z - tp_z
        per_z = _scores(tp_z, fp_z, fn_z, iou_z)
        if threshold in thresholds:
            key = _threshold_key(threshold)
            pooled["instance"][key] = _instance_record(
                tp_z.sum(), fp_z.sum(), fn_z.sum(), iou_z.sum()
            )
            means["instance"][key] = {
                "tp": mean(tp_z) if scored.any() else 0.0,
                "fp": mean(fp_z) if scored.any() else 0.0,
                "fn": mean(fn_z) if scored.any() else 0.0,
                **{k: mean(per_z[k]) for k in _INSTANCE_KEYS},
            }
        if threshold == 0.5:
            tot = _scores(tp_z.sum(), fp_z.sum(), fn_z.sum(), iou_z.sum())
            pooled["panoptic"] = {k: float(tot[k]) for k in _PANOPTIC_KEYS}
            means["panoptic"] = {k: mean(per_z[k]) for k in _PANOPTIC_KEYS}
    return {
        "n_slices": int(n_slices),
        "n_scored_slices": int(scored.sum()),
        "pooled": pooled,
        "mean": means,
    }


def _evaluate_block(gt, pred, thresholds, per_slice):
    g, p = _foreground(gt), _foreground(pred)
    gi, pj = _overlap(g, p)
    cont = _contingency(g, p, gi, pj)
    instance = instance_metrics(cont, iou_thresholds=thresholds)
    panoptic = panoptic_quality(cont, iou_threshold=0.5)
    union = g.pos.size + p.pos.size - gi.size
    block = {
        "n_gt": cont.n_gt,
        "n_pred": cont.n_pred,
        "semantic_iou": 1.0 if union == 0 else gi.size / union,
        "instance": {_threshold_key(t): v for t, v in instance.items()},
        "panoptic": {k: panoptic[k] for k in _PANOPTIC_KEYS},
    }
    if per_slice:
        block["per_slice"] = _per_slice_block(gt.shape, g, p, gi, pj, thresholds)
    return block


def evaluate_segmentation(
    gt, pred, *, iou_thresholds=(0.5, 0.75), label_divisor=None, per_slice=False
):
    """Semantic, instance and panoptic scores of a prediction, as plain JSON data.

    Parameters
    ----------
    gt, pred : (M[, N[, ...]]) ndarray of int
        Ground-truth and predicted label images of equal shape; 0 is
        background.
    iou_thresholds : float or sequence of float, optional
        Thresholds for the instance scores, in (0, 1].
    label_divisor : int, optional
        If given, ids are panoptic (``class_id * label_divisor + instance``)
        and every class present in either image is also scored on its own.
    per_slice : bool, optional
        Also score each slice along axis 0 as a 2D image (needs
        ``gt.ndim >= 3``).

    Returns
    -------
    report : dict
        JSON-serialisable (str keys, int/float values)::

            {"n_gt": int, "n_pred": int, "semantic_iou": float,
             "instance": {"0.5": {tp, fp, fn, precision, recall, f1, ap,
                                  mean_matched_iou}, "0.75": {...}},
             "panoptic": {"pq": float, "sq": float, "rq": float},
             "per_slice": {"n_slices", "n_scored_slices",
                           "pooled": {semantic_iou, instance, panoptic},
                           "mean": {semantic_iou, instance, panoptic}},
             "classes": {"1": {the same block, per_slice included}, ...}}

        ``per_slice`` appears only with ``per_slice=True`` and ``classes``
        only with ``label_divisor``.

    Raises
    ------
    TypeError
        If an image is boolean, not integer or 0-dimensional, a threshold or
        ``label_divisor`` is not a number, or ``per_slice=True`` with fewer
        than 3 dimensions.
    ValueError
        If an image holds negative ids, the shapes differ, a threshold is
        outside (0, 1], or ``label_divisor < 2``.

    Notes
    -----
    The top-level scores ignore classes: the raw ids are matched, so with
    ``label_divisor`` an object may match one of another class. Per class
    ``c``, only the pixels with ``id // label_divisor == c`` are kept (class 0
    is background); a stuff class (ids ``c * label_divisor``) counts as one
    object. The panoptic block always uses IoU >= 0.5.

    ``per_slice`` pools the slices by summing ``tp``, ``fp``, ``fn`` (and the
    matched IoUs, and the semantic intersections and unions) before the
    ratios, and ``mean`` averages each slice's scores over the slices holding
    at least one object in either image (1.0 when none does). All slices are
    matched in one pass: each object is split into its per-slice pieces, which
    never overlap across slices.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[7, 7, 7, 0, 0]])
    >>> report = evaluate_segmentation(gt, pred, iou_thresholds=0.5)
    >>> report["semantic_iou"], report["instance"]["0.5"]["recall"]
    (0.4, 0.5)
    """
    gt, pred = _check_pair(gt, pred)
    thresholds = _check_thresholds(iou_thresholds)
    if per_slice and gt.ndim < 3:
        raise TypeError(
            "`per_slice=True` scores the slices along axis 0 and needs 3D (or higher) "
            f"images; got `gt` with shape {tuple(gt.shape)}"
        )
    if label_divisor is not None:
        label_divisor = check_label_divisor(label_divisor)
    report = _evaluate_block(gt, pred, thresholds, per_slice)
    if label_divisor is not None:
        g_cls = _class_ids(gt, label_divisor)
        p_cls = _class_ids(pred, label_divisor)
        g_classes, p_classes = _present_ids(g_cls), _present_ids(p_cls)
        classes = sorted({int(c) for c in g_classes} | {int(c) for c in p_classes})
        zero_g, zero_p = np.zeros((), gt.dtype), np.zeros((), pred.dtype)
        report["classes"] = {
            str(c): _evaluate_block(
                np.where(g_cls == c, gt, zero_g),
                np.where(p_cls == c, pred, zero_p),
                thresholds,
                per_slice,
            )
            for c in classes
        }
    return report
