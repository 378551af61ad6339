"""Building ids that persist across the monthly mosaics of one AOI, as SN7's SCOT scores them.

Three modes (Hydra group conf/track/, key `mode`):
- none: each month alone, ids 1..N per month (ids carry no meaning from month to month);
- match: each month thresholded alone, then chained to earlier months by optimal one-to-one IoU
  matching (sn7.metrics.matching), so a building keeps its id while its footprint wobbles;
- aggregate: the SN7 winner's "temporal collapse": footprints are cut once from the mean of all
  months' probabilities, and each footprint's monthly scores decide the month it appears.

Polygons are in pixel coordinates (x = column, y = row), as sn7.inference.vectorize makes them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio import features
from shapely.geometry.base import BaseGeometry

from sn7.errors import ConfigError
from sn7.inference.footprints import FootprintSettings, cut_footprints
from sn7.inference.temporal import (
    month_normalised,
    monthly_scores,
    split_means,
    suffix_max_mean,
    temporal_mean,
)
from sn7.inference.track_choice import TrackChoice, read_choice
from sn7.inference.tracks import Building, TrackedMonths
from sn7.inference.winner import track_winner
from sn7.metrics.matching import SN7_IOU, iou_pairs, optimal_matches

__all__ = [  # TrackedMonths and the temporal maps are re-exported: callers import them from here
    "Building",
    "TrackSettings",
    "TrackedMonths",
    "monthly_scores",
    "suffix_max_mean",
    "temporal_mean",
    "track_aoi",
]


def track_none(month_polygons: Sequence[Sequence[BaseGeometry]]) -> TrackedMonths:
    """No tracking: ids 1..N in each month, nothing carried over (the baseline SCOT compares)."""
    return TrackedMonths([list(enumerate(polys, start=1)) for polys in month_polygons])


def track_match(
    month_polygons: Sequence[Sequence[BaseGeometry]],
    min_iou: float = SN7_IOU,
    max_missing: int | None = 3,
) -> TrackedMonths:
    """Chain the months by optimal one-to-one IoU matching (IoU > 0.25, as SCOT matches).

    Month t is matched first to month t-1's footprints; its still unmatched footprints are then
    matched to the last known footprint of every track not matched in month t that was seen at
    most `max_missing` months ago (None: any), so a building hidden by a cloud or missed for a
    month gets its old id back. What stays unmatched gets a new id.
    """
    months: list[list[Building]] = []
    last: dict[int, tuple[BaseGeometry, int]] = {}  # id -> (latest footprint, month)
    previous: list[Building] = []
    next_id = 1
    for t, polys in enumerate(month_polygons):
        polys = list(polys)
        assigned = [0] * len(polys)
        for a, b, _ in optimal_matches(iou_pairs(polys, [p for _, p in previous]), min_iou):
            assigned[int(a)] = previous[int(b)][0]
        taken = set(assigned)
        lost = [
            (i, p)
            for i, (p, seen) in last.items()
            if i not in taken and (max_missing is None or t - seen - 1 <= max_missing)
        ]
        free = [k for k, i in enumerate(assigned) if i == 0]
        free_polys = [polys[k] for k in free]
        for a, b, _ in optimal_matches(iou_pairs(free_polys, [p for _, p in lost]), min_iou):
            assigned[free[int(a)]] = lost[int(b)][0]
        for k, i in enumerate(assigned):
            if i == 0:
                assigned[k], next_id = next_id, next_id + 1
        previous = list(zip(assigned, polys, strict=True))
        last.update((i, (p, t)) for i, p in previous)
        months.append(previous)
    return TrackedMonths(months)


def first_appearance(
    scores: np.ndarray,
    evidence: np.ndarray,
    presence_threshold: float = 0.4,
    min_jump: float = 0.0,
) -> int | None:
    """The month a footprint appears, from its (T,) monthly scores, or None if it never does.

    Only months with evidence count. Over them, the change point is the split maximising
    mean(after) - mean(before) (the earliest on ties). If the months before it look empty
    (mean < presence_threshold) and the months after look built (mean >= presence_threshold),
    the building appears at the first evidence month after the split: a month without evidence
    keeps the previous decision (absent). `min_jump` also asks the mean to rise by at least that
    much across the split, so a building the model merely sees a little better later (season,
    haze) is not reported as new. Otherwise a footprint whose evidence months average
    >= presence_threshold stood from month 0 (months before its first evidence included, as
    SN7 buildings are not demolished), and any other is dropped.
    """
    months = np.flatnonzero(evidence)
    s = np.asarray(scores, np.float64)[months]
    if len(s) == 0:
        return None
    if len(s) >= 2:
        before, after = split_means(s)
        best = int(np.argmax(after - before))
        jump = after[best] - before[best]
        if before[best] < presence_threshold <= after[best] and jump >= min_jump:
            return int(months[best + 1])
    return 0 if s.mean() >= presence_threshold else None


def track_aggregate(
    probs: np.ndarray,
    valids: np.ndarray | None,
    footprint: FootprintSettings,
    presence_threshold: float = 0.4,
    min_valid: float = 0.5,
    temporal: str = "mean",
    min_run: int = 2,
    min_jump: float = 0.0,
) -> TrackedMonths:
    """Footprints cut once from the temporal mean map, each present from its first appearance.

    `temporal`: "mean" (the mean over all months) or "suffix_max" (`suffix_max_mean`: the best mean
    over any final run of at least `min_run` months, which keeps late buildings).

    The mean map is cut by `cut_footprints` with `footprint` (the building threshold chosen on the
    selection split, post-processing, min_area), always splitting touching buildings (a mean map
    blurs the gaps between neighbours). A building standing for the last 40% of the months
    averages about 0.05 + 0.4 * 0.85 = 0.39 with typical absent/present probabilities 0.05/0.9,
    so the chosen threshold is usually lower than a single month's. Then `first_appearance` on each
    footprint's monthly scores decides the month it appears (dropping footprints that never do).
    Ids are 1..N in order of appearance. Known limit: a building standing only in the last few
    months of a long stack averages below the threshold and is missed.
    """
    probs = np.asarray(probs, np.float32)
    if temporal == "mean":
        mean = temporal_mean(probs, valids)
    elif temporal == "suffix_max":
        mean = suffix_max_mean(probs, valids, min_run)
    else:
        raise ConfigError(f"track.temporal={temporal!r} must be mean or suffix_max")
    anywhere = None if valids is None else np.asarray(valids, bool).any(axis=0)
    components = cut_footprints(mean, anywhere, footprint, separate=True)
    scores, evidence = monthly_scores(components.labels, components.ids, probs, valids, min_valid)
    appear = [
        first_appearance(scores[:, j], evidence[:, j], presence_threshold, min_jump)
        for j in range(len(components.ids))
    ]
    kept = sorted((t, j) for j, t in enumerate(appear) if t is not None)
    ids = {j: i for i, (_, j) in enumerate(kept, start=1)}
    return TrackedMonths(
        [[(ids[j], components.polygons[j]) for t0, j in kept if t0 <= t] for t in range(len(probs))]
    )


TRACKERS: dict[str, Callable] = {
    "none": track_none,
    "match": track_match,
    "aggregate": track_aggregate,
    "winner": track_winner,
}
_GIVEN = {"month_polygons", "probs", "valids", "footprint"}  # passed by track_aoi, not the config
DEFAULT_CHOICE = Path(__file__).resolve().parents[2] / "results" / "series" / "track_network.json"
PER_MONTH = ("none", "match")  # modes that cut each month's map alone, then chain the months
_RANGES = {
    "refine": (0.0, 1.0),
    "collapse_floor": (0.0, 1.0),
    "seed_high": (0.0, 1.0),
    "change_jump": (0.0, 1.0),
    "start_first": (0.0, 1.0),
    "start_ratio": (0.0, 1.0),
    "stable_margin": (0.0, 1.0),
    "stable_mean": (0.0, 1.0),
    "small_share": (0.0, 1.0),
    "peak_distance": (1, float("inf")),
    "confirm_months": (0, float("inf")),
    "crowd_count": (0, float("inf")),
    "crowd_radius": (0.0, float("inf")),
    "small_area": (0.0, float("inf")),
    "new_min_area": (0.0, float("inf")),
    "presence_threshold": (0.0, 1.0),
    "min_valid": (0.0, 1.0),
    "min_jump": (0.0, 1.0),
    "min_iou": (0.0, 1.0),
    "min_run": (1, float("inf")),
    "max_missing": (0, float("inf")),
}


@dataclass(frozen=True)
class TrackSettings:
    """conf/track: the tracking mode and its options, checked once when a stage starts (a typo
    in a key is a one-line error naming it, not a TypeError deep in a run). `track=auto` reads
    the settings chosen on a selection series (sn7.inference.track_choice); `chosen` keeps where."""

    mode: str
    options: dict = field(default_factory=dict)
    chosen: TrackChoice | None = field(default=None, compare=False)

    @classmethod
    def from_config(cls, node: Mapping | None) -> TrackSettings:
        params = dict(node or {})
        mode = params.pop("mode", None)
        if mode == "auto":
            choice = read_choice(params.pop("file", DEFAULT_CHOICE))
            if choice.track.get("mode") == "auto":
                raise ConfigError("track=auto: the stored choice is itself auto")
            return replace(cls.from_config(choice.track), chosen=choice)
        if mode not in TRACKERS:
            raise ConfigError(f"track.mode must be one of {sorted(TRACKERS)}; got {mode!r}")
        accepted = set(inspect.signature(TRACKERS[mode]).parameters) - _GIVEN
        accepted |= {"calibrate", "month_norm"}
        if mode in PER_MONTH:
            accepted.add("refine")
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ConfigError(
                f"track: unknown keys {unknown} for mode {mode}; known: {sorted(accepted)}"
            )
        for key, (low, high) in _RANGES.items():
            if params.get(key) is not None and not low <= float(params[key]) <= high:
                raise ConfigError(f"track.{key}={params[key]} must be in [{low}, {high}]")
        if params.get("temporal", "mean") not in ("mean", "suffix_max"):
            raise ConfigError(f"track.temporal={params['temporal']!r} must be mean or suffix_max")
        # every option explicit (the tracker's defaults filled in), so what is stored with a
        # choice or a threshold says exactly what ran, whatever the defaults become later
        defaults = {
            name: p.default
            for name, p in inspect.signature(TRACKERS[mode]).parameters.items()
            if name not in _GIVEN and p.default is not inspect.Parameter.empty
        }
        if "calibrate" in params and not isinstance(params["calibrate"], bool):
            raise ConfigError(f"track.calibrate={params['calibrate']!r} must be true or false")
        norm = params.get("month_norm")
        if norm is not None and not (isinstance(norm, int | float) and 0.5 <= norm < 1):
            raise ConfigError(f"track.month_norm={norm!r} must be null or a quantile in [0.5, 1)")
        if not params.get("calibrate", False):
            params.pop("calibrate", None)  # stored only when on: older choices stay comparable
        if norm is None:
            params.pop("month_norm", None)
        return cls(mode, {**defaults, **params})

    def as_dict(self) -> dict:
        return {"mode": self.mode, **self.options}

    def describe(self) -> str:
        """`mode (options)`, and where it was chosen for track=auto."""
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        text = f"{self.mode}{f' ({options})' if options else ''}"
        return text if self.chosen is None else f"auto: {text}, {self.chosen.where()}"


CALIBRATED = 0.5  # where a calibrated map puts the building threshold


def calibrated(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Maps moved so the building threshold lands on 0.5: linear on [0, threshold] -> [0, 0.5]
    and [threshold, 1] -> [0.5, 1]. The winners' constants (seed 0.6, stable mean 0.4, start 0.3,
    jump 0.5) were set for their own models' probabilities; a model whose buildings score 0.3
    (threshold 0.25 on its selection split) never reaches them, calibrated it does. Monotone:
    what lies above the threshold before lies above 0.5 after."""
    t = float(threshold)
    if not 0 < t < 1:
        raise ConfigError(f"track.calibrate needs a building threshold in (0, 1); got {t}")
    low = probs * (CALIBRATED / t)
    high = CALIBRATED + (probs - t) * ((1 - CALIBRATED) / (1 - t))
    return np.where(probs <= t, low, high).astype(np.float32)


def track_aoi(
    track: TrackSettings,
    probs: Sequence[np.ndarray] | np.ndarray,
    valids: Sequence[np.ndarray] | np.ndarray | None,
    footprint: FootprintSettings,
) -> TrackedMonths:
    """Buildings with ids of one AOI from its monthly probabilities (months in date order), as
    evaluate scores them, chooses their threshold with, and predict writes them: none/match cut
    each month with `footprint`, aggregate cuts the temporal mean map with it."""
    probs = np.stack([np.asarray(p, np.float32) for p in probs])
    valids = None if valids is None else np.stack([np.asarray(v, bool) for v in valids])
    options = dict(track.options)
    norm = options.pop("month_norm", None)
    if norm is not None:  # every month brought to the series' level first
        probs = month_normalised(probs, valids, float(norm))
    if options.pop("calibrate", False):  # the rules' constants then hold for any model
        probs = calibrated(probs, footprint.threshold)
        footprint = footprint.at(CALIBRATED)
    if track.mode not in PER_MONTH:
        return TRACKERS[track.mode](probs, valids, footprint, **options)
    refine = float(options.pop("refine", 0.0))
    if refine > 0:  # 4th place: each month's map blended with the temporal mean
        probs = refine * temporal_mean(probs, valids) + (1 - refine) * probs
    month_polygons = [
        cut_footprints(prob, None if valids is None else valids[t], footprint).polygons
        for t, prob in enumerate(probs)
    ]
    return TRACKERS[track.mode](month_polygons, **options)


def month_masks(
    tracked: TrackedMonths, shape: tuple[int, int], valids: np.ndarray | None = None
) -> np.ndarray:
    """(T, H, W) bool: each month's buildings rasterised (pixel-centre rule, which gives a mask
    back exactly from sn7.inference.vectorize's pixel-edge polygons), cut to `valids` if given,
    for the pixel metrics."""
    out = np.zeros((len(tracked), *shape), bool)
    for t in range(len(tracked)):
        polygons = tracked.polygons(t)
        if polygons:
            out[t] = features.rasterize(
                [(p, 1) for p in polygons], out_shape=shape, transform=Affine.identity()
            ).astype(bool)
    if valids is not None:
        out &= np.asarray(valids, bool)
    return out
