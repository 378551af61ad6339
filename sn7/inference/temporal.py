"""Per-pixel and per-footprint summaries of an AOI's (T, H, W) monthly probabilities over their
valid months: the temporal maps footprints are cut from and the monthly scores that decide when
a footprint stands."""

from __future__ import annotations

import numpy as np


def temporal_mean(probs: np.ndarray, valids: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 mean of the (T, H, W) probabilities over the months where each pixel is
    valid, so a cloud or an alpha=0 month cannot pull a building's mean down (0 where never
    valid)."""
    probs = np.asarray(probs, np.float32)
    if valids is None:
        return probs.mean(axis=0)
    valids = np.asarray(valids, bool)
    count = valids.sum(axis=0)
    total = np.where(valids, probs, 0.0).sum(axis=0)
    return np.divide(total, count, out=np.zeros(count.shape, np.float32), where=count > 0)


def month_normalised(probs: np.ndarray, valids: np.ndarray | None, quantile: float) -> np.ndarray:
    """Each month's map times (the series' median q-quantile) / (its own q-quantile), over valid
    pixels, clipped to [0, 1]: a month the model sees darker or brighter (season, haze, another
    sensor: round 3's baseline scores its July months at a fifth of its January ones) no longer
    reads as buildings vanishing or appearing. A month without valid pixels is left as it is."""
    probs = np.asarray(probs, np.float32)
    levels = np.array([
        np.quantile(p if valids is None else p[np.asarray(v, bool)], quantile)
        if (valids is None or np.asarray(v, bool).any()) else np.nan
        for p, v in zip(probs, probs if valids is None else valids, strict=True)
    ])  # fmt: skip
    target = np.nanmedian(levels) if np.isfinite(levels).any() else np.nan
    factors = np.where(np.isfinite(levels) & (levels > 0), target / np.maximum(levels, 1e-6), 1.0)
    return np.clip(probs * factors[:, None, None].astype(np.float32), 0.0, 1.0)


def suffix_max_mean(
    probs: np.ndarray, valids: np.ndarray | None = None, min_run: int = 2
) -> np.ndarray:
    """(H, W) float32: for each pixel the highest mean probability over any final run of months
    (month t to the last, t <= T - min_run; valid months only). A building that stands from month t
    on scores its mean over the months it stands, not diluted by the months before it was built, so
    a late building is not lost; a blip in one month must last `min_run` months to count.
    With T <= min_run this is the plain temporal mean."""
    probs = np.asarray(probs, np.float32)
    valids = np.ones(probs.shape, bool) if valids is None else np.asarray(valids, bool)
    weights = valids.astype(np.float32)
    total = np.cumsum((probs * weights)[::-1], axis=0)[::-1]  # sum over months t..T-1
    count = np.cumsum(weights[::-1], axis=0)[::-1]
    best = temporal_mean(probs, valids)
    for t in range(1, max(len(probs) - min_run + 1, 1)):
        mean = np.divide(total[t], count[t], out=np.zeros_like(best), where=count[t] > 0)
        enough = count[t] >= min_run  # a final run of at least min_run valid months
        best = np.where(enough & (mean > best), mean, best)
    return best


def split_means(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every split of a (n,) score series (n >= 2) into months [0, k) and [k, n), k = 1..n-1:
    the (n - 1,) means before and after it (the change point is where after - before peaks)."""
    s = np.asarray(scores, np.float64)
    csum = np.cumsum(s)
    k = np.arange(1, len(s))
    return csum[:-1] / k, (csum[-1] - csum[:-1]) / (len(s) - k)


def monthly_scores(
    labels: np.ndarray,
    ids: np.ndarray,
    probs: np.ndarray,
    valids: np.ndarray | None = None,
    min_valid: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) mean probability of each footprint `ids` of `labels` in each month over its valid
    pixels, and (T, N) evidence: is at least `min_valid` of the footprint valid that month?"""
    n_labels = int(labels.max()) + 1
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n_labels)[ids].astype(np.float64)
    scores = np.zeros((len(probs), len(ids)), np.float32)
    evidence = np.zeros((len(probs), len(ids)), bool)
    for t, prob in enumerate(probs):
        valid = np.ones(flat.shape, bool) if valids is None else np.asarray(valids[t]).ravel()
        n_valid = np.bincount(flat, weights=valid, minlength=n_labels)[ids]
        total = np.bincount(flat, weights=np.where(valid, prob.ravel(), 0), minlength=n_labels)
        scores[t] = np.divide(total[ids], n_valid, out=np.zeros(len(ids)), where=n_valid > 0)
        evidence[t] = n_valid >= min_valid * area
    return scores, evidence
