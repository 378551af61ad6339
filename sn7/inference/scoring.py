"""Scoring a split of full tiles, one AOI at a time, in bounded memory.

Tiles are predicted by the sliding window and scored as they come: per-tile pixel counts for a whole
threshold grid, building matches, and SCOT's id bookkeeping. Only the months of the AOI being scored
are held (tracking needs them all), so memory does not grow with the number of tiles. The same pass
serves the selection split (sweeps to choose thresholds on) and the report split (tracked
footprints at the chosen settings, SCOT, per-tile table); callbacks let the caller draw pictures
without this module knowing about them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from sn7.constants import BUILDING, IGNORE
from sn7.data.footprints import load_footprints
from sn7.data.layout import ImageFiles, id_labels
from sn7.data.raster_io import RasterInfo, read_png
from sn7.inference.postprocess import clean_mask
from sn7.inference.tiles import TileInput, read_tile
from sn7.inference.tracking import month_masks, track_aoi
from sn7.inference.vectorize import vectorize
from sn7.metrics.buildings import BuildingCounts, match_buildings
from sn7.metrics.pixel import tile_counts
from sn7.metrics.scot import ScotAccumulator, ScotResult


@dataclass
class Truth:
    """True footprints of one month (pixel space) with their persistent ids (None: no ids)."""

    geoms: list
    ids: list | None


@dataclass
class MonthScore:
    """What one scored month leaves behind for the caller (table row, pictures)."""

    row: object  # the manifest row (aoi, date, stem, image, mask, ...)
    tile: TileInput
    prob: np.ndarray
    mask: np.ndarray  # cached truth raster: 0, 1, IGNORE
    pixel_counts: np.ndarray  # (T, 4) on the threshold grid
    buildings: BuildingCounts | None = None  # tracked footprints vs truth (report pass)
    tracked_counts: np.ndarray | None = None  # (4,) pixel counts of the tracked footprint mask


@dataclass
class SplitScore:
    thresholds: list[float]
    pixel_counts: np.ndarray  # (T, 4) summed over tiles
    building_sweep: dict[float, BuildingCounts] = field(default_factory=dict)
    buildings: BuildingCounts = field(default_factory=BuildingCounts)
    tracked_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    scot: dict[str, ScotResult] = field(default_factory=dict)
    no_ids: list[str] = field(default_factory=list)  # AOIs whose labels carry no persistent ids
    n_tiles: int = 0
    seconds: float = 0.0


@dataclass
class ReportSettings:
    """How the report pass turns probabilities into tracked footprints."""

    track: Mapping  # conf/track/<mode>.yaml
    building_threshold: float
    post: Mapping
    min_area: float


def truth_of(files: ImageFiles, info: RasterInfo, min_area: float) -> Truth:
    """True buildings of at least `min_area` pixels, with persistent ids when SN7's matched labels
    (labels_match, labels_match_pix) are there."""
    source = id_labels(files)
    if source is None:
        geoms, ids = load_footprints(files.labels, files.label_space, info).geoms, None
    else:
        found = load_footprints(*source, info, with_ids=True)
        geoms, ids = found.geoms, list(found.ids)
    keep = [i for i, g in enumerate(geoms) if g.area >= min_area]
    return Truth([geoms[i] for i in keep], None if ids is None else [ids[i] for i in keep])


def ignored_area(mask: np.ndarray):
    """The ignored pixels (alpha = 0, UDM) of a month as one geometry; None when there are none.
    Vectorised once per month, whatever the number of thresholds scored on it."""
    if not (mask == IGNORE).any():
        return None
    return shapely.union_all(vectorize(mask == IGNORE).polygons)


_WORK_IT_OUT = object()  # `ignored` not given: scored_buildings vectorises it from the mask


def scored_buildings(
    preds: Sequence,
    truth: Truth,
    mask: np.ndarray,
    pred_ids: Sequence | None = None,
    ignored: object = _WORK_IT_OUT,
) -> tuple[list, list, Truth]:
    """The predicted and true buildings that building metrics compare, on valid pixels only:
    (pred geoms, pred ids, truth).

    A true building counts when at most half of it is ignored (alpha = 0, UDM), and only its
    valid part: predictions are made on valid pixels, so a perfect one matches it with IoU 1.
    A prediction lying mostly on a true building that does not count is not scored either,
    else the visible sliver of a clouded building would be a false positive.
    """
    pred_ids = list(pred_ids) if pred_ids is not None else list(range(len(preds)))
    if ignored is _WORK_IT_OUT:  # callers scoring many thresholds pass it, vectorised once
        ignored = ignored_area(mask) if truth.geoms else None
    if not truth.geoms or ignored is None:
        return list(preds), pred_ids, truth
    kept, kept_ids, dropped = [], [], []
    for i, g in enumerate(truth.geoms):
        hidden = g.intersection(ignored).area
        if hidden > 0.5 * g.area:
            dropped.append(g)
        else:
            kept.append(g.difference(ignored) if hidden > 0 else g)
            kept_ids.append(None if truth.ids is None else truth.ids[i])
    preds, pred_ids = list(preds), pred_ids
    if dropped:
        off = shapely.union_all(dropped)
        keep = [i for i, p in enumerate(preds) if p.intersection(off).area <= 0.5 * p.area]
        preds, pred_ids = [preds[i] for i in keep], [pred_ids[i] for i in keep]
    return preds, pred_ids, Truth(kept, None if truth.ids is None else kept_ids)


def month_footprints(prob, valid, threshold: float, post: Mapping, min_area: float) -> list:
    """Footprints of one month on its own (no tracking): threshold, clean, vectorise."""
    return vectorize(clean_mask((prob >= threshold) & valid, **post), min_area).polygons


def score_split(
    rows: pd.DataFrame,
    files: Mapping[str, ImageFiles],
    spec,
    predictor: Callable[[np.ndarray], np.ndarray],
    thresholds: Sequence[float],
    *,
    min_truth_area: float = 0.0,
    sweep_buildings: Sequence[float] = (),
    sweep_post: Mapping | None = None,
    sweep_min_area: float = 4.0,
    report: ReportSettings | None = None,
    on_month: Callable[[MonthScore], None] | None = None,
    on_aoi: Callable[[str, list[MonthScore], object, list[Truth]], None] | None = None,
    on_tile_done: Callable[[], None] | None = None,
) -> SplitScore:
    """Score `rows` (manifest rows) AOI by AOI, months in date order.

    `sweep_buildings`: building thresholds to sweep with per-month footprints (the selection
    pass). `report`: track and score footprints at the chosen settings (the report pass).
    """
    thresholds = list(thresholds)
    score = SplitScore(thresholds, np.zeros((len(thresholds), 4), np.int64))
    score.building_sweep = {float(t): BuildingCounts() for t in sweep_buildings}
    start = time.perf_counter()
    for aoi, group in rows.sort_values(["aoi", "date", "stem"]).groupby("aoi", sort=True):
        months, truths = [], []
        for row in group.itertuples():
            tile = read_tile(row.image, spec)
            prob = predictor(tile.model_input)
            mask = read_png(row.mask)
            month = MonthScore(row, tile, prob, mask, tile_counts(prob, mask, thresholds))
            score.pixel_counts += month.pixel_counts
            truth = truth_of(files[row.stem], tile.info, min_truth_area)
            ignored = ignored_area(mask) if truth.geoms and score.building_sweep else None
            for t, total in score.building_sweep.items():
                preds = month_footprints(prob, mask != IGNORE, t, sweep_post or {}, sweep_min_area)
                pred, _, kept = scored_buildings(preds, truth, mask, ignored=ignored)
                total += match_buildings(pred, kept.geoms)
            months.append(month)
            truths.append(truth)
            if on_tile_done:
                on_tile_done()
        score.n_tiles += len(months)
        tracked = None
        if report is not None:
            tracked = _score_tracked(aoi, months, truths, report, score)
        for month in months:
            if on_month:
                on_month(month)
        if on_aoi:
            on_aoi(aoi, months, tracked, truths)
        del months, truths  # the next AOI starts from an empty buffer
    score.seconds = time.perf_counter() - start
    return score


def _score_tracked(
    aoi: str, months: list[MonthScore], truths: list[Truth], report: ReportSettings, score
) -> object:
    """Track the AOI's footprints and score them month by month (buildings, SCOT, tracked mask)."""
    probs = np.stack([m.prob for m in months])
    valids = np.stack([m.mask != IGNORE for m in months])
    tracked = track_aoi(
        report.track, probs, valids, report.building_threshold, report.post, report.min_area
    )
    masks = month_masks(tracked, probs.shape[1:], valids)
    del probs
    has_ids = all(t.ids is not None for t in truths)
    scot = ScotAccumulator() if has_ids and len(months) >= 2 else None
    if not has_ids:
        score.no_ids.append(aoi)
    for i, (month, truth) in enumerate(zip(months, truths, strict=True)):
        ids, geoms = tracked.ids(i), tracked.polygons(i)
        preds, pred_ids, kept = scored_buildings(geoms, truth, month.mask, ids)
        month.buildings = match_buildings(preds, kept.geoms)
        score.buildings += month.buildings
        if scot is not None:
            scot.add_month(kept.ids, kept.geoms, pred_ids, preds)
        valid = month.mask != IGNORE
        pred, true = masks[i].astype(bool) & valid, (month.mask == BUILDING) & valid
        tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
        month.tracked_counts = np.array([tp, fp, fn, int(valid.sum()) - tp - fp - fn], np.int64)
        score.tracked_counts += month.tracked_counts
    if scot is not None:
        score.scot[aoi] = scot.result()
    return tracked
