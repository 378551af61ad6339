"""Probability map -> building footprints: the one cut that selection, report and predict share.

`FootprintSettings` (threshold, post-processing, minimum area) is built once at a stage's entry from
its config and validated there; `cut_footprints` applies it to a map. Trackers (sn7.inference.
tracking) call it on each month or on the temporal mean map, so the footprints evaluate scores, the
ones it chose its threshold with and the ones predict writes come from the same function and the
same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from sn7.errors import ConfigError
from sn7.inference.postprocess import clean_mask
from sn7.inference.separation import separate_buildings
from sn7.inference.vectorize import Components, vectorize, vectorize_labels


@dataclass(frozen=True)
class PostSettings:
    """conf/post: clean-up of a thresholded mask, and splitting of touching buildings."""

    opening: int = 0  # iterations of a 3x3-cross binary opening (0 = off)
    fill_holes: bool = False
    separate: bool = False  # split touching buildings (seeded watershed) before vectorising
    seed_threshold: float = 0.6  # cores of buildings: the watershed's markers
    min_distance: int = 2  # core erosion (px): necks up to 2 * min_distance wide split

    @classmethod
    def from_config(cls, node: Mapping | None) -> PostSettings:
        values = dict(node or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"post: unknown keys {unknown}; known: {sorted(known)}")
        post = cls(**values)
        if int(post.opening) < 0 or int(post.min_distance) < 0:
            raise ConfigError(
                f"post.opening={post.opening}, post.min_distance={post.min_distance}: must be >= 0"
            )
        if not 0 < float(post.seed_threshold) < 1:
            raise ConfigError(f"post.seed_threshold={post.seed_threshold} must be in (0, 1)")
        return replace(
            post,
            opening=int(post.opening),
            fill_holes=bool(post.fill_holes),
            separate=bool(post.separate),
            seed_threshold=float(post.seed_threshold),
            min_distance=int(post.min_distance),
        )

    def as_dict(self) -> dict:
        return asdict(self)

    def clean(self, mask: np.ndarray) -> np.ndarray:
        return clean_mask(mask, opening=self.opening, fill_holes=self.fill_holes)


@dataclass(frozen=True)
class FootprintSettings:
    """How one probability map becomes footprints."""

    threshold: float  # a pixel is building where prob >= threshold
    post: PostSettings
    min_area: float  # footprints under this many pixels are dropped

    def __post_init__(self) -> None:
        if not 0 < float(self.threshold) < 1:
            raise ConfigError(f"building threshold {self.threshold} must be in (0, 1)")
        if float(self.min_area) < 0:
            raise ConfigError(f"min_area={self.min_area} must be >= 0")

    def at(self, threshold: float) -> FootprintSettings:
        return replace(self, threshold=float(threshold))

    def as_dict(self) -> dict:
        return {
            "threshold": float(self.threshold),
            "post": self.post.as_dict(),
            "min_area": float(self.min_area),
        }


def cut_footprints(
    prob: np.ndarray,
    valid: np.ndarray | None,
    settings: FootprintSettings,
    separate: bool | None = None,
) -> Components:
    """Footprints of one map: (prob >= threshold) & valid, cleaned, touching buildings split when
    `separate` (default: settings.post.separate), vectorised, small ones dropped."""
    post = settings.post
    mask = np.asarray(prob) >= settings.threshold
    if valid is not None:
        mask &= np.asarray(valid, bool)
    mask = post.clean(mask)
    if post.separate if separate is None else separate:
        labels = separate_buildings(prob, mask, post.seed_threshold, post.min_distance)
        return vectorize_labels(labels, settings.min_area)
    return vectorize(mask, settings.min_area)
