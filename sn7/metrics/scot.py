"""SCOT, the SpaceNet 7 score (SpaceNet Change and Object Tracking, arXiv 2102.11958).

Per AOI, months in order, every month's predicted footprints are matched one-to-one to the true
ones at IoU > 0.25 (`sn7.metrics.matching`). Footprints carry persistent ids (truth: `Id` of
labels_match; predictions: the tracker's ids), and two scores follow from the matches:

- tracking: tp / fp / fn summed over months, where a match (g, p) is a *mismatch* when g's most
  recent earlier match was another prediction or p's another truth; each mismatch turns a TP into
  an FP and an FN. track = F1 of the result.
- change (every month after the first): a footprint is new when its id was in no earlier month.
  A match of a new truth with a new prediction is a TP, a new prediction on an old truth an FP, an
  old prediction on a new truth an FN; unmatched new predictions are FPs, unmatched new truths FNs.
  change = F1 of those.

SCOT = F-beta(change, track) with beta = 2 (change weighs more); an AOI's score is 0 where a
denominator is 0, as in the organisers' scorer (solaris.eval.scot). The dataset score is the mean
over AOIs. `ScotAccumulator` keeps only id bookkeeping between months, so a caller can score one
month at a time and drop its geometry.

Where this differs from solaris.eval.scot (the scores agree otherwise): the months are the ones the
caller adds (solaris takes them from the truth only); duplicate ids within a month are an error
(solaris silently mis-indexes them); the assignment is solved per connected component, which gives
the same number of matches and IoU sum but may break exact ties differently; `month_f1` of an
empty month is 1, not 0 (solaris only prints it); an AOI the caller leaves out of `scot_mean` is
not scored (solaris scores every truth AOI, 0 without predictions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

from shapely.geometry.base import BaseGeometry

from sn7.metrics.matching import SN7_IOU, iou_pairs, optimal_matches
from sn7.metrics.pixel import scores

BETA = 2.0
MonthFootprints = tuple[Sequence[Hashable], Sequence[BaseGeometry]]  # (ids, geoms), parallel


def f1_or_zero(tp: int, fp: int, fn: int) -> float:
    """TP / (TP + (FP + FN) / 2), or 0 when that is 0 / 0 (SCOT's convention, not pixel.scores')."""
    denominator = tp + (fp + fn) / 2
    return tp / denominator if denominator > 0 else 0.0


def combine(change: float, track: float, beta: float = BETA) -> float:
    """F-beta of the change and tracking scores: beta > 1 weighs change more."""
    b2 = beta * beta
    denominator = b2 * change + track
    return (1 + b2) * change * track / denominator if denominator > 0 else 0.0


@dataclass(frozen=True)
class ScotResult:
    """SCOT of one AOI with the counts behind it."""

    n_months: int
    tp: int  # one-to-one matches at IoU > 0.25, summed over months
    fp: int
    fn: int
    mismatches: int
    track_tp: int  # tp - mismatches
    track_fp: int  # fp + mismatches
    track_fn: int  # fn + mismatches
    change_tp: int
    change_fp: int
    change_fn: int
    track_score: float
    change_score: float
    scot: float
    month_f1: tuple[float, ...]  # F1 at IoU > 0.25 of each month (1.0 for an empty-empty month)
    # change counts of each month (0, 0, 0 for the first): where in time change is won or lost
    month_change_tp: tuple[int, ...] = ()
    month_change_fp: tuple[int, ...] = ()
    month_change_fn: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        out = asdict(self)
        return out | {k: list(v) for k, v in out.items() if isinstance(v, tuple)}


def _check_month(ids: Sequence[Hashable], geoms: Sequence[BaseGeometry], what: str) -> list:
    ids = list(ids)
    if len(ids) != len(geoms):
        raise ValueError(f"{len(ids)} {what} ids for {len(geoms)} {what} footprints")
    repeated = [i for i, count in Counter(ids).items() if count > 1]
    if repeated:
        raise ValueError(f"{what} id {repeated[0]!r} appears twice in one month")
    return ids


class ScotAccumulator:
    """SCOT of one AOI, fed one month at a time in chronological order."""

    def __init__(self, beta: float = BETA, min_iou: float = SN7_IOU):
        self.beta = beta
        self.min_iou = min_iou
        self._seen_truth: set = set()  # every truth id of the months so far (for change)
        self._seen_pred: set = set()
        self._partner_of_truth: dict = {}  # truth id -> pred id of its most recent match
        self._partner_of_pred: dict = {}
        self._month_f1: list[float] = []
        self._n = dict.fromkeys(("tp", "fp", "fn", "mm", "ctp", "cfp", "cfn"), 0)
        self._month_change: list[tuple[int, int, int]] = []
        # per month: prediction ids booked as change FPs, truth ids booked as change FNs
        self.false_new: list[frozenset] = []
        self.missed_new: list[frozenset] = []

    def add_month(
        self,
        truth_ids: Sequence[Hashable],
        truth_geoms: Sequence[BaseGeometry],
        pred_ids: Sequence[Hashable],
        pred_geoms: Sequence[BaseGeometry],
    ) -> float:
        """Match one month (the next in time) and book it; returns its F1 at IoU > min_iou."""
        truth_ids = _check_month(truth_ids, truth_geoms, "truth")
        pred_ids = _check_month(pred_ids, pred_geoms, "prediction")
        matched = optimal_matches(iou_pairs(pred_geoms, truth_geoms), self.min_iou)
        pairs = [(truth_ids[int(t)], pred_ids[int(p)]) for p, t, _ in matched]
        n = self._n
        tp = len(pairs)
        fp, fn = len(pred_ids) - tp, len(truth_ids) - tp
        n["tp"] += tp
        n["fp"] += fp
        n["fn"] += fn
        for g, p in pairs:
            earlier_p = self._partner_of_truth.get(g, p)
            earlier_g = self._partner_of_pred.get(p, g)
            n["mm"] += earlier_p != p or earlier_g != g
        false_new: set = set()
        missed_new: set = set()
        change_tp = 0
        if self._month_f1:  # change is scored from the second month on
            for g, p in pairs:
                new_g, new_p = g not in self._seen_truth, p not in self._seen_pred
                change_tp += new_g and new_p
                if new_p and not new_g:
                    false_new.add(p)
                if new_g and not new_p:
                    missed_new.add(g)
            matched_g = {g for g, _ in pairs}
            matched_p = {p for _, p in pairs}
            false_new |= set(pred_ids) - matched_p - self._seen_pred
            missed_new |= set(truth_ids) - matched_g - self._seen_truth
        n["ctp"] += change_tp
        n["cfp"] += len(false_new)
        n["cfn"] += len(missed_new)
        self._month_change.append((change_tp, len(false_new), len(missed_new)))
        self.false_new.append(frozenset(false_new))
        self.missed_new.append(frozenset(missed_new))
        for g, p in pairs:
            self._partner_of_truth[g] = p
            self._partner_of_pred[p] = g
        self._seen_truth.update(truth_ids)
        self._seen_pred.update(pred_ids)
        f1 = scores(tp, fp, fn)["f1"]
        self._month_f1.append(f1)
        return f1

    def result(self) -> ScotResult:
        n = self._n
        track_tp, track_fp, track_fn = n["tp"] - n["mm"], n["fp"] + n["mm"], n["fn"] + n["mm"]
        track = f1_or_zero(track_tp, track_fp, track_fn)
        change = f1_or_zero(n["ctp"], n["cfp"], n["cfn"])
        return ScotResult(
            n_months=len(self._month_f1),
            tp=n["tp"],
            fp=n["fp"],
            fn=n["fn"],
            mismatches=n["mm"],
            track_tp=track_tp,
            track_fp=track_fp,
            track_fn=track_fn,
            change_tp=n["ctp"],
            change_fp=n["cfp"],
            change_fn=n["cfn"],
            track_score=track,
            change_score=change,
            scot=combine(change, track, self.beta),
            month_f1=tuple(self._month_f1),
            month_change_tp=tuple(c[0] for c in self._month_change),
            month_change_fp=tuple(c[1] for c in self._month_change),
            month_change_fn=tuple(c[2] for c in self._month_change),
        )


def scot_aoi(
    truth: Sequence[MonthFootprints],
    pred: Sequence[MonthFootprints],
    beta: float = BETA,
    min_iou: float = SN7_IOU,
) -> ScotResult:
    """SCOT of one AOI from its months in chronological order: truth[i] and pred[i] are month i's
    (ids, geoms). A month without predictions is ([], [])."""
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} months of truth but {len(pred)} of predictions")
    acc = ScotAccumulator(beta, min_iou)
    for (t_ids, t_geoms), (p_ids, p_geoms) in zip(truth, pred, strict=True):
        acc.add_month(t_ids, t_geoms, p_ids, p_geoms)
    return acc.result()


def scot_mean(results: Mapping[str, ScotResult]) -> dict:
    """The dataset score: SCOT, track and change scores averaged over AOIs (each AOI weighs the
    same, whatever its number of buildings), plus the number of AOIs and the per-AOI SCOT."""
    if not results:
        raise ValueError("SCOT needs at least one AOI")
    n = len(results)
    return {
        "scot": sum(r.scot for r in results.values()) / n,
        "track_score": sum(r.track_score for r in results.values()) / n,
        "change_score": sum(r.change_score for r in results.values()) / n,
        "n_aois": n,
        "per_aoi": {aoi: r.scot for aoi, r in sorted(results.items())},
    }
