"""Choosing tracker settings on a selection series: a grid of candidates (mode, rule options,
building threshold), each scored by its mean SCOT over the selection AOIs under several
degradations of their truth. Each (AOI, degradation) is rendered once and every candidate is
tracked on the same maps; no network runs. The best is stored as a TrackChoice (track.json)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sn7.data.label_series import LabelSeries
from sn7.errors import ConfigError
from sn7.evaluation.degrade import Degradation
from sn7.evaluation.series import degraded_series, scot_of
from sn7.inference.footprints import FootprintSettings, PostSettings
from sn7.inference.track_choice import TrackChoice
from sn7.inference.tracking import TrackSettings, track_aoi
from sn7.utils.console import console


@dataclass(frozen=True)
class Candidate:
    track: TrackSettings
    threshold: float


def candidates_of(tracks: Sequence[dict], thresholds: Sequence[float]) -> list[Candidate]:
    """Every track config at every threshold, checked before any AOI is read."""
    if not tracks or not thresholds:
        raise ConfigError("search: needs at least one candidate track and one threshold")
    out = []
    for node in tracks:
        track = TrackSettings.from_config(node)
        if track.chosen is not None:
            raise ConfigError("search: a candidate cannot be track=auto")
        out += [Candidate(track, float(t)) for t in thresholds]
    return out


def search(
    chosen: Sequence[LabelSeries],
    degradations: Sequence[Degradation],
    candidates: Sequence[Candidate],
    post: PostSettings,
    min_area: float,
    seed: int,
    cache_dir: Path,
    data_root: Path,
) -> TrackChoice:
    """The candidate with the best mean SCOT over AOIs x degradations (ties: the earlier one)."""
    references = {d.reference_threshold for d in degradations}
    if len(references) > 1:
        raise ConfigError(
            "search: the degradations imitate models of different pixel thresholds "
            f"({sorted(references, key=str)}); choose on one kind at a time"
        )
    scores: dict[int, list[float]] = {k: [] for k in range(len(candidates))}
    detail: dict[int, dict[str, float]] = {k: {} for k in range(len(candidates))}
    for s in chosen:
        for degradation in degradations:
            start = time.perf_counter()
            truths, probs, _ = degraded_series(s, degradation, seed, cache_dir / s.aoi)
            for k, c in enumerate(candidates):
                footprint = FootprintSettings(c.threshold, post, min_area)
                result = scot_of(truths, track_aoi(c.track, probs, None, footprint)).result()
                scores[k].append(result.scot)
                detail[k][f"{s.aoi}/{degradation.name}"] = round(result.scot, 4)
            console.print(
                f"search: {s.aoi} / {degradation.name}: {len(candidates)} candidates in "
                f"{time.perf_counter() - start:.0f} s"
            )
    means = {k: sum(v) / len(v) for k, v in scores.items()}
    best = max(means, key=lambda k: (means[k], -k))
    winner = candidates[best]
    return TrackChoice(
        track=winner.track.as_dict(),
        threshold=winner.threshold,
        selected_on={
            "data_root": str(data_root.resolve()),
            "aois": [s.aoi for s in chosen],
            "months": {s.aoi: [m.date for m in s.months] for s in chosen},
            "degradations": [d.name for d in degradations],
            "degradation_steps": {d.name: d.as_dict()["steps"] for d in degradations},
            "seed": seed,
            "post": post.as_dict(),
            "min_area": min_area,
        },
        score=means[best],
        reference_threshold=references.pop(),
        candidates=[
            {
                "track": c.track.as_dict(),
                "threshold": c.threshold,
                "mean_scot": round(means[k], 4),
                "scot": detail[k],
            }
            for k, c in enumerate(candidates)
        ],
    )
