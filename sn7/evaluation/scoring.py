"""Scoring a split of full tiles, one AOI at a time, in bounded memory.

Tiles are predicted by the sliding window and scored as they come: per-tile pixel counts for a whole
threshold grid, then, once an AOI's months are all in, its tracked footprints (sn7.inference.
tracking.track_aoi, the function predict writes buildings with) at each candidate building
threshold: building matches, SCOT's id bookkeeping and the footprints' pixel counts. Only the months
of the AOI being scored are held, so memory does not grow with the number of tiles. The same pass
serves the selection split (every candidate threshold, to choose one) and the report split (the
chosen one); callbacks let the caller draw pictures without this module knowing about them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from sn7.constants import IGNORE
from sn7.data.footprints import load_footprints
from sn7.data.layout import ImageFiles, id_labels
from sn7.data.raster_io import RasterInfo, read_png
from sn7.inference.footprints import FootprintSettings
from sn7.inference.tiles import TileInput, read_tile
from sn7.inference.tracking import TrackedMonths, TrackSettings, month_masks, track_aoi
from sn7.inference.vectorize import vectorize
from sn7.metrics.buildings import BuildingCounts, match_buildings
from sn7.metrics.matching import SPACENET_IOU
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
    # per candidate building threshold: tracked footprints vs truth, and their pixel counts (4,)
    buildings: dict[float, BuildingCounts] = field(default_factory=dict)
    tracked_counts: dict[float, np.ndarray] = field(default_factory=dict)


@dataclass
class TrackedScore:
    """The tracked footprints of a split at one building threshold, summed over AOIs."""

    buildings: BuildingCounts = field(default_factory=BuildingCounts)
    tracked_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    scot: dict[str, ScotResult] = field(default_factory=dict)


@dataclass
class SplitScore:
    thresholds: list[float]
    pixel_counts: np.ndarray  # (T, 4) summed over tiles
    tracked: dict[float, TrackedScore] = field(default_factory=dict)  # per building threshold
    no_ids: list[str] = field(default_factory=list)  # AOIs whose labels carry no persistent ids
    n_tiles: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class FootprintSweep:
    """The tracked footprints to score: `track` over each AOI's months, cut with `footprint` at
    each of `thresholds` (the selection pass: every candidate; the report pass: the chosen one)."""

    track: TrackSettings
    footprint: FootprintSettings
    thresholds: tuple[float, ...]
    iou_match: float = SPACENET_IOU  # the SpaceNet building rule beside SN7's IoU > 0.25


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


def score_split(
    rows: pd.DataFrame,
    files: Mapping[str, ImageFiles],
    spec,
    predictor: Callable[[np.ndarray], np.ndarray],
    thresholds: Sequence[float],
    *,
    footprints: FootprintSweep | None = None,
    min_truth_area: float = 0.0,
    on_month: Callable[[MonthScore], None] | None = None,
    on_aoi: Callable[[str, list[MonthScore], dict[float, TrackedMonths], list[Truth]], None]
    | None = None,
    on_tile_done: Callable[[], None] | None = None,
) -> SplitScore:
    """Score `rows` (manifest rows) AOI by AOI, months in date order: pixel counts on the
    `thresholds` grid, and the tracked `footprints` when given."""
    thresholds = list(thresholds)
    score = SplitScore(thresholds, np.zeros((len(thresholds), 4), np.int64))
    if footprints is not None:
        score.tracked = {float(t): TrackedScore() for t in footprints.thresholds}
    start = time.perf_counter()
    for aoi, group in rows.sort_values(["aoi", "date", "stem"]).groupby("aoi", sort=True):
        months, truths = [], []
        for row in group.itertuples():
            tile = read_tile(row.image, spec)
            prob = predictor(tile.model_input)
            mask = read_png(row.mask)
            month = MonthScore(row, tile, prob, mask, tile_counts(prob, mask, thresholds))
            score.pixel_counts += month.pixel_counts
            months.append(month)
            truths.append(truth_of(files[row.stem], tile.info, min_truth_area))
            if on_tile_done:
                on_tile_done()
        score.n_tiles += len(months)
        tracked = {}
        if footprints is not None:
            tracked = _score_tracked(aoi, months, truths, footprints, score)
        for month in months:
            if on_month:
                on_month(month)
        if on_aoi:
            on_aoi(aoi, months, tracked, truths)
        del months, truths, tracked  # the next AOI starts from an empty buffer
    score.seconds = time.perf_counter() - start
    return score


def _score_tracked(
    aoi: str,
    months: list[MonthScore],
    truths: list[Truth],
    sweep: FootprintSweep,
    score: SplitScore,
) -> dict[float, TrackedMonths]:
    """Track the AOI's footprints at every threshold of the sweep and score them month by month
    (buildings at both rules, SCOT, the footprints as a pixel mask). The tracker sees what predict
    sees, the image's valid pixels (alpha); the truth's ignored area (alpha = 0, UDM clouds) only
    decides what is scored."""
    valids = [m.tile.valid for m in months]
    ignored = [
        ignored_area(m.mask) if t.geoms else None for m, t in zip(months, truths, strict=True)
    ]
    has_ids = all(t.ids is not None for t in truths)
    if not has_ids:
        score.no_ids.append(aoi)
    out = {}
    for threshold, total in score.tracked.items():
        tracked = track_aoi(
            sweep.track, [m.prob for m in months], valids, sweep.footprint.at(threshold)
        )
        masks = month_masks(tracked, months[0].prob.shape, np.stack(valids))
        scot = ScotAccumulator() if has_ids and len(months) >= 2 else None
        for i, (month, truth) in enumerate(zip(months, truths, strict=True)):
            preds, pred_ids, kept = scored_buildings(
                tracked.polygons(i), truth, month.mask, tracked.ids(i), ignored=ignored[i]
            )
            counts = match_buildings(preds, kept.geoms, sweep.iou_match)
            month.buildings[threshold] = counts
            total.buildings += counts
            if scot is not None:
                scot.add_month(kept.ids, kept.geoms, pred_ids, preds)
            pixels = tile_counts(masks[i].astype(np.float32), month.mask, [0.5])[0]
            month.tracked_counts[threshold] = pixels
            total.tracked_counts += pixels
        if scot is not None:
            total.scot[aoi] = scot.result()
        out[threshold] = tracked
    return out
