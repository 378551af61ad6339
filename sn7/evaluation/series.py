"""One AOI through the series harness: truth -> degraded maps -> tracker -> SCOT month by month.

The truth polygons and their persistent ids are what SCOT scores against, whatever the tracker
was shown; the id rasters (cached, sn7.data.truth_rasters) are what the degradation starts from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sn7.data.label_series import LabelSeries
from sn7.data.truth_rasters import TruthMonth, truth_month
from sn7.evaluation.degrade import Degradation
from sn7.inference.footprints import FootprintSettings
from sn7.inference.tracking import TrackedMonths, TrackSettings, track_aoi
from sn7.metrics.scot import ScotAccumulator, ScotResult


@dataclass
class AoiRun:
    """What a series run found on one AOI, for metrics.json and its change map."""

    aoi: str
    months: list[str]
    missing_months: list[str]
    scot: ScotResult
    false_new: list[frozenset]  # per month: predicted ids booked as change FPs
    missed_new: list[frozenset]  # per month: true ids booked as change FNs
    truth: TrackedMonths
    tracked: TrackedMonths
    shape: tuple[int, int]
    seconds: dict[str, float]

    @property
    def n_new(self) -> int:
        """True ids first seen after the first month: what the change term asks to find."""
        return sum(t > 0 for t in self.truth.first_seen.values())

    def as_dict(self) -> dict:
        r = self.scot
        return {
            "scot": r.scot,
            "tracking": r.track_score,
            "change": r.change_score,
            "mismatches": r.mismatches,
            "change_tp": r.change_tp,
            "change_fp": r.change_fp,
            "change_fn": r.change_fn,
            "n_new": self.n_new,
            "n_months": len(self.months),
            "months": self.months,
            "missing_months": self.missing_months,
            "seconds": sum(self.seconds.values()),
            "seconds_by_step": self.seconds,
            "per_month": [
                {"month": m, "change_tp": tp, "change_fp": fp, "change_fn": fn, "f1": f1}
                for m, tp, fp, fn, f1 in zip(
                    self.months,
                    r.month_change_tp,
                    r.month_change_fp,
                    r.month_change_fn,
                    r.month_f1,
                    strict=True,
                )
            ],
            "counts": r.as_dict(),
        }


def id_rasters(truths: list[TruthMonth]) -> tuple[np.ndarray, list]:
    """(T, H, W) uint32 rasters of AOI-wide indices 1..N, and the true `Id` of each index - 1,
    so a building has the same value in every month (what missed / flicker choose from)."""
    index: dict = {}
    for truth in truths:
        for building_id in truth.ids:
            index.setdefault(building_id, len(index) + 1)
    out = np.empty((len(truths), *truths[0].raster.shape), np.uint32)
    for t, truth in enumerate(truths):
        lut = np.array([0, *(index[i] for i in truth.ids)], np.uint32)
        out[t] = lut[truth.raster]
    return out, list(index)


def degraded_series(
    series: LabelSeries, degradation: Degradation, seed: int, cache_dir: str | Path
) -> tuple[list[TruthMonth], np.ndarray, dict[str, float]]:
    """(truth months, (T, H, W) degraded maps, seconds per step) of one AOI: what every tracker
    tried on it is fed, made once."""
    seconds = {}
    start = time.perf_counter()
    truths = [truth_month(m.path, series.info, Path(cache_dir)) for m in series.months]
    ids, _ = id_rasters(truths)
    seconds["truth"] = time.perf_counter() - start
    start = time.perf_counter()
    _, probs = degradation.apply(ids, seed, series.aoi)
    seconds["degrade"] = time.perf_counter() - start
    return truths, probs, seconds


def scot_of(truths: list[TruthMonth], tracked: TrackedMonths) -> ScotAccumulator:
    """SCOT of tracked buildings against the true ids, month by month."""
    acc = ScotAccumulator()
    for t, truth in enumerate(truths):
        acc.add_month(truth.ids, truth.geoms, tracked.ids(t), tracked.polygons(t))
    return acc


def run_aoi(
    series: LabelSeries,
    degradation: Degradation,
    track: TrackSettings,
    footprint: FootprintSettings,
    seed: int,
    cache_dir: str | Path,
) -> AoiRun:
    """Score the tracker on `series` fed its degraded truth; seconds per step are kept."""
    truths, probs, seconds = degraded_series(series, degradation, seed, cache_dir)
    start = time.perf_counter()
    tracked = track_aoi(track, probs, None, footprint)
    del probs
    seconds["track"] = time.perf_counter() - start
    start = time.perf_counter()
    acc = scot_of(truths, tracked)
    seconds["score"] = time.perf_counter() - start
    return AoiRun(
        aoi=series.aoi,
        months=[m.date for m in series.months],
        missing_months=series.missing_months(),
        scot=acc.result(),
        false_new=acc.false_new,
        missed_new=acc.missed_new,
        truth=TrackedMonths.of_truth(truths),
        tracked=tracked,
        shape=series.shape,
        seconds=seconds,
    )
