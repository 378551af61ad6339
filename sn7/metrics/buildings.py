"""Building-level (object) metrics: predicted footprints matched one-to-one to true footprints by
polygon IoU, with the optimal assignment of `sn7.metrics.matching`, under two rules side by side:

- SpaceNet building F1: a match needs IoU >= `iou_match` (0.5 by default): tp / fp / fn;
- SN7 (the SCOT matching rule): a match needs IoU > 0.25: tp_sn7 / fp_sn7 / fn_sn7.

Both are solved on the same candidate pairs, so the second rule costs one more assignment only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from shapely.geometry.base import BaseGeometry

from sn7.metrics.matching import SN7_IOU, SPACENET_IOU, iou_pairs, optimal_matches
from sn7.metrics.pixel import scores


@dataclass
class BuildingCounts:
    """Counts of one tile or a sum of tiles; `+=` adds them up."""

    tp: int = 0  # at iou_match (SpaceNet: IoU >= 0.5)
    fp: int = 0
    fn: int = 0
    tp_sn7: int = 0  # at IoU > 0.25 (SN7 / SCOT)
    fp_sn7: int = 0
    fn_sn7: int = 0

    def __iadd__(self, other: BuildingCounts) -> BuildingCounts:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict:
        """Counts plus precision / recall / F1 for both rules ("f1" SpaceNet, "f1_sn7" SN7)."""
        spacenet = scores(self.tp, self.fp, self.fn)
        sn7 = scores(self.tp_sn7, self.fp_sn7, self.fn_sn7)
        return {
            **asdict(self),
            **{k: spacenet[k] for k in ("precision", "recall", "f1")},
            **{f"{k}_sn7": sn7[k] for k in ("precision", "recall", "f1")},
        }


def match_buildings(
    preds: Sequence[BaseGeometry], truths: Sequence[BaseGeometry], iou_match: float = SPACENET_IOU
) -> BuildingCounts:
    """Optimal one-to-one matching of `preds` to `truths` at `iou_match` and at the SN7 rule."""
    pairs = iou_pairs(preds, truths)
    tp = len(optimal_matches(pairs, iou_match))
    tp_sn7 = len(optimal_matches(pairs, SN7_IOU))
    n_p, n_t = len(preds), len(truths)
    return BuildingCounts(tp, n_p - tp, n_t - tp, tp_sn7, n_p - tp_sn7, n_t - tp_sn7)
