"""Building-level (object) metrics, SpaceNet style: predicted footprints are matched one-to-one to
true footprints by polygon IoU; a match at IoU >= 0.5 is a true positive (SpaceNet F1). The count
of one-to-one matches at IoU > 0.25 (the SN7 SCOT matching rule) is reported too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from sn7.metrics.pixel import scores


def candidate_pairs(preds: Sequence[BaseGeometry], truths: Sequence[BaseGeometry]) -> np.ndarray:
    """(K, 3) array of (pred index, truth index, IoU) for every pair that overlaps."""
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


def greedy_matches(pairs: np.ndarray, min_iou: float, strict: bool = False) -> int:
    """Number of one-to-one matches, taking pairs by descending IoU (as SpaceNet's scorer does).

    `strict` uses IoU > min_iou (SCOT's rule), otherwise IoU >= min_iou (SpaceNet F1).
    """
    keep = pairs[:, 2] > min_iou if strict else pairs[:, 2] >= min_iou
    pairs = pairs[keep]
    used_p, used_t, n = set(), set(), 0
    for p, t, _ in pairs[np.argsort(-pairs[:, 2], kind="stable")]:
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            n += 1
    return n


@dataclass
class BuildingCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    matched_iou_0_25: int = 0

    def __iadd__(self, other: BuildingCounts) -> BuildingCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.matched_iou_0_25 += other.matched_iou_0_25
        return self

    def as_dict(self) -> dict:
        s = scores(self.tp, self.fp, self.fn)
        return {**asdict(self), "precision": s["precision"], "recall": s["recall"], "f1": s["f1"]}


def match_buildings(
    preds: Sequence[BaseGeometry], truths: Sequence[BaseGeometry], iou_match: float = 0.5
) -> BuildingCounts:
    pairs = candidate_pairs(preds, truths)
    tp = greedy_matches(pairs, iou_match)
    return BuildingCounts(
        tp=tp,
        fp=len(preds) - tp,
        fn=len(truths) - tp,
        matched_iou_0_25=greedy_matches(pairs, 0.25, strict=True),
    )
