"""One-to-one matching of predicted and true footprints by polygon IoU, as SpaceNet scores them.

The SN7 rule (SCOT, arXiv 2102.11958): a pair can match when IoU > 0.25, and the assignment is the
optimal one, not a greedy one: it maximises the number of matches first and their summed IoU
second (the organisers' scorer gives each admissible pair a reward of 100 + IoU). The assignment
problem splits into the connected components of the "may match" graph, which are tiny for
footprints, so each is solved exactly with `scipy.optimize.linear_sum_assignment`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

SN7_IOU = 0.25  # SCOT and SN7 building F1: IoU strictly greater than this
SPACENET_IOU = 0.5  # SpaceNet building F1: IoU of at least this
_REWARD = 100.0  # >> any IoU sum of one component: count first, IoU second


def iou_pairs(preds: Sequence[BaseGeometry], truths: Sequence[BaseGeometry]) -> np.ndarray:
    """(K, 3) float array of (pred index, truth index, IoU) for every pair that overlaps."""
    if not len(preds) or not len(truths):
        return np.zeros((0, 3))
    preds_arr = np.asarray(preds, dtype=object)
    truths_arr = np.asarray(truths, dtype=object)
    p_idx, t_idx = STRtree(truths_arr).query(preds_arr, predicate="intersects")
    if p_idx.size == 0:
        return np.zeros((0, 3))
    inter = shapely.area(shapely.intersection(preds_arr[p_idx], truths_arr[t_idx]))
    union = shapely.area(preds_arr[p_idx]) + shapely.area(truths_arr[t_idx]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.stack([p_idx, t_idx, iou], axis=1)


def admissible(pairs: np.ndarray, min_iou: float) -> np.ndarray:
    """The pairs that may match: IoU > min_iou for the SN7 rule (0.25), IoU >= min_iou otherwise
    (SpaceNet's 0.5)."""
    iou = pairs[:, 2]
    keep = iou > min_iou if min_iou <= SN7_IOU else iou >= min_iou
    return pairs[keep]


def optimal_matches(pairs: np.ndarray, min_iou: float = SN7_IOU) -> np.ndarray:
    """(M, 3) array of matched (pred index, truth index, IoU): one-to-one, the most matches,
    then the largest summed IoU. `pairs` as from `iou_pairs`; indices come back as floats."""
    pairs = admissible(pairs, min_iou)
    if len(pairs) == 0:
        return np.zeros((0, 3))
    preds, p_node = np.unique(pairs[:, 0].astype(np.int64), return_inverse=True)
    truths, t_node = np.unique(pairs[:, 1].astype(np.int64), return_inverse=True)
    n_p = len(preds)
    graph = coo_matrix(
        (np.ones(len(pairs)), (p_node, n_p + t_node)), shape=(n_p + len(truths),) * 2
    )
    _, component = connected_components(graph, directed=False)
    pair_component = component[p_node]
    single = np.bincount(pair_component)[pair_component] == 1
    matched = [pairs[single]]  # the common case: an isolated pair, matched as it is
    multi = np.flatnonzero(~single)
    multi = multi[np.argsort(pair_component[multi], kind="stable")]
    for sel in np.split(multi, np.flatnonzero(np.diff(pair_component[multi])) + 1):
        if not sel.size:
            continue
        rows, row_of = np.unique(p_node[sel], return_inverse=True)
        cols, col_of = np.unique(t_node[sel], return_inverse=True)
        iou = np.zeros((len(rows), len(cols)))
        allowed = np.zeros(iou.shape, dtype=bool)
        iou[row_of, col_of], allowed[row_of, col_of] = pairs[sel, 2], True
        r, k = linear_sum_assignment(np.where(allowed, _REWARD + iou, 0.0), maximize=True)
        hit = allowed[r, k]
        r, k = r[hit], k[hit]
        matched.append(np.stack([preds[rows[r]], truths[cols[k]], iou[r, k]], axis=1))
    return np.concatenate(matched)
