"""The SN7 winners' temporal post-processing, as one tracker (`track=winner`).

Read from SpaceNetChallenge/SpaceNet7_Multi-Temporal_Solutions (1-lxastro0/code/postprocess.py for
the 1st place; the 2nd (cannab) and 4th (motokimura) write-ups for the filters) and written here
on sn7's parts; each rule has a key in conf/track/winner.yaml:

1. collapse (1st): each pixel's mean probability over the valid months where it exceeds
   `collapse_floor` (0.1), so months without the building do not dilute it;
2. footprints (1st, 4th): a seeded watershed of the collapsed map, seeds at local maxima (at least
   `peak_distance` px apart) and wherever it exceeds `seed_high`, flooded over the mask above the
   building threshold (the footprint settings'), footprints under min_area dropped;
3. change pass (1st): a footprint is *changed* when the mean of its monthly scores after some month
   exceeds the mean before by more than `change_jump` (0.5); it stands from month 0 if that month
   scores above `start_first` (0.3), else from the first month scoring above `start_ratio` (0.45)
   times its best month;
4. stable pass (1st): footprints cut again at a lower mask threshold (building threshold minus
   `stable_margin`) that overlap no changed footprint stand in every month when their mean score
   exceeds `stable_mean` (0.4);
5. new-id filters: a changed footprint appearing after month 0 must score above its start level
   in the next `confirm_months` months that have evidence (4th: 3; 0 = off), and one under
   `small_area` px in at least `small_share` of the months from its start (2nd: 80 %; 0 = off),
   and be at least `new_min_area` px (0 = off: slivers of redrawn outlines are not new buildings);
   one that fails is no new id, and the stable pass decides whether it stood all along. A new
   building is dropped when `crowd_count` earlier footprints have their centre within
   `crowd_radius` px of its own (4th: 5 within 12 px; 0 = off).

Months without evidence (clouds, alpha = 0: less than `min_valid` of the footprint valid) neither
start nor stop a building; a building stands in every month from its start (gaps filled, 3rd and
4th), as SN7 buildings are not demolished.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage
from skimage.segmentation import watershed

from sn7.inference.footprints import FootprintSettings
from sn7.inference.temporal import monthly_scores, split_means, temporal_mean
from sn7.inference.tracks import TrackedMonths
from sn7.inference.vectorize import Components, vectorize_labels


def collapse(probs: np.ndarray, valids: np.ndarray | None, floor: float = 0.1) -> np.ndarray:
    """(H, W) mean of each pixel over the valid months where its probability exceeds `floor`
    (0 where none does)."""
    above = np.asarray(probs) > floor
    return temporal_mean(probs, above if valids is None else above & np.asarray(valids, bool))


def watershed_footprints(
    mean: np.ndarray, low: float, high: float, peak_distance: int, min_area: float
) -> Components:
    """Footprints of a collapsed map: seeds at local maxima (the maximum of their (2d + 1)^2
    neighbourhood, d = `peak_distance`) and wherever mean > high, flooded (on -mean) over
    mean >= low; one footprint per connected seed region.

    The maxima are a maximum filter's, as 1st place's `peak_local_max(indices=False)` of its day
    returned them: every pixel of a plateau counts (skimage's peak_local_max now thins plateaus to
    spaced points, which took ~30 s per 1024^2 map of flat truth-like probabilities)."""
    mask = mean >= low
    size = 2 * max(int(peak_distance), 1) + 1
    seeds = (mean > high) | (mean == ndimage.maximum_filter(mean, size=size))
    markers, _ = ndimage.label(seeds & mask)
    labels = watershed(-mean, markers, mask=mask)
    return vectorize_labels(labels, min_area)


def change_start(
    scores: np.ndarray,
    evidence: np.ndarray,
    change_jump: float = 0.5,
    start_first: float = 0.3,
    start_ratio: float = 0.45,
) -> int | None:
    """The month a *changed* footprint starts standing (1st place's rule), or None when its scores
    show no rise above `change_jump` (it is not a change)."""
    months = np.flatnonzero(evidence)
    s = np.asarray(scores, np.float64)[months]
    if len(s) < 2:
        return None
    before, after = split_means(s)
    if (after - before).max() <= change_jump:
        return None
    if s[0] > start_first and months[0] == 0:
        return 0
    return int(months[np.argmax(s > start_ratio * s.max())])


def confirmed(
    scores: np.ndarray, evidence: np.ndarray, start: int, level: float, n_months: int
) -> bool:
    """Does the footprint score above `level` in the next `n_months` evidence months after
    `start` (all of them there are, near the end of the series)?"""
    later = [t for t in np.flatnonzero(evidence) if t > start][:n_months]
    return all(scores[t] > level for t in later)


def share_above(scores: np.ndarray, evidence: np.ndarray, start: int, level: float) -> float:
    """Share of the evidence months from `start` on in which the footprint scores above `level`."""
    months = [t for t in np.flatnonzero(evidence) if t >= start]
    return float(np.mean([scores[t] > level for t in months])) if months else 0.0


def crowded(center, earlier_centers: np.ndarray, radius: float, count: int) -> bool:
    if count <= 0 or len(earlier_centers) == 0:
        return False
    distance = np.hypot(*(np.asarray(earlier_centers) - np.asarray(center)).T)
    return int((distance <= radius).sum()) >= count


def track_winner(
    probs: np.ndarray,
    valids: np.ndarray | None,
    footprint: FootprintSettings,
    collapse_floor: float = 0.1,
    seed_high: float = 0.6,
    peak_distance: int = 2,
    change_jump: float = 0.5,
    start_first: float = 0.3,
    start_ratio: float = 0.45,
    stable_margin: float = 0.05,
    stable_mean: float = 0.4,
    min_valid: float = 0.5,
    new_min_area: float = 0.0,
    confirm_months: int = 0,
    crowd_radius: float = 12.0,
    crowd_count: int = 0,
    small_area: float = 0.0,
    small_share: float = 0.8,
) -> TrackedMonths:
    """Buildings of one AOI by the SN7 winners' rules (module docstring); ids 1..N in order of
    appearance, changed footprints before stable ones within a month."""
    probs = np.asarray(probs, np.float32)
    mean = collapse(probs, valids, collapse_floor)
    low = footprint.threshold
    changed = watershed_footprints(mean, low, seed_high, peak_distance, footprint.min_area)
    scores, evidence = monthly_scores(changed.labels, changed.ids, probs, valids, min_valid)
    starts: list[tuple[int, object]] = []
    for j, polygon in enumerate(changed.polygons):
        s, e = scores[:, j], evidence[:, j]
        start = change_start(s, e, change_jump, start_first, start_ratio)
        if start is None:
            continue
        level = start_ratio * s[e].max()
        if start > 0 and polygon.area < new_min_area:
            continue
        if start > 0 and confirm_months and not confirmed(s, e, start, level, confirm_months):
            continue
        if (
            start > 0
            and polygon.area < small_area
            and share_above(s, e, start, level) < small_share
        ):
            continue
        starts.append((start, polygon))
    stable = watershed_footprints(
        mean, max(low - stable_margin, 1e-6), seed_high, peak_distance, footprint.min_area
    )
    overlaps = _overlap_test([p for _, p in starts])
    keep = [j for j, p in enumerate(stable.polygons) if not overlaps(p)]
    stable_scores, stable_evidence = monthly_scores(
        stable.labels, stable.ids, probs, valids, min_valid
    )
    standing = [
        (0, stable.polygons[j])
        for j in keep
        if stable_evidence[:, j].any()
        and stable_scores[stable_evidence[:, j], j].mean() > stable_mean
    ]
    buildings = sorted(standing + starts, key=lambda item: item[0])  # stable: order kept
    buildings = _without_crowded(buildings, crowd_radius, crowd_count)
    return TrackedMonths(
        [
            [(i, p) for i, (t0, p) in enumerate(buildings, start=1) if t0 <= t]
            for t in range(len(probs))
        ]
    )


def _overlap_test(changed: list):
    """polygon -> does it share area with one of `changed`? (Touching along an edge, as
    watershed neighbours do, is not overlapping; 1st place skips a footprint only on area.)"""
    tree = shapely.STRtree(changed)

    def overlaps(polygon) -> bool:
        hits = tree.query(polygon, "intersects") if changed else []
        return any(polygon.intersection(changed[k]).area > 0 for k in hits)

    return overlaps


def _without_crowded(buildings: list, radius: float, count: int) -> list:
    """Drops new buildings (start > 0) with `count` earlier-standing centres within `radius`."""
    if count <= 0:
        return buildings
    centers = np.array([[p.centroid.x, p.centroid.y] for _, p in buildings]).reshape(-1, 2)
    starts = np.array([t for t, _ in buildings])
    kept = []
    for k, (t0, polygon) in enumerate(buildings):
        if t0 > 0 and crowded(centers[k], centers[starts < t0], radius, count):
            continue
        kept.append((t0, polygon))
    return kept
