"""A deterministic, class-balanced subset of the manifest for quick experiments.

Within each AOI, months are ranked by building fraction and split at the median into building-rich
and building-poor halves; picks alternate between the halves (in seeded random order) so even a
small subset shows both. Caps keep every AOI: `max_images` takes picks round-robin over AOIs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def balanced_subset(
    manifest: pd.DataFrame, per_aoi: int | None = None, max_images: int | None = None, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ranked = []
    for _, group in manifest.groupby("aoi", sort=True):
        group = group.sort_values(["building_frac", "stem"], ascending=[False, True])
        half = (len(group) + 1) // 2
        richness = np.where(np.arange(len(group)) < half, "rich", "poor")
        # pick order: rich and poor interleave (rich 0, poor 0, rich 1, ...), shuffled within each
        slot = np.empty(len(group), int)
        slot[:half] = 2 * rng.permutation(half)
        slot[half:] = 2 * rng.permutation(len(group) - half) + 1
        ranked.append(group.assign(richness=richness, pick=slot.argsort().argsort()))
    if not ranked:
        return manifest.assign(richness=pd.Series(dtype=str))
    subset = pd.concat(ranked)
    if per_aoi is not None:
        subset = subset[subset["pick"] < max(1, per_aoi)]
    if max_images is not None:
        n_keep = max(max_images, subset["aoi"].nunique())
        subset = subset.sort_values(["pick", "aoi"]).head(n_keep)
    return subset.drop(columns="pick").sort_values(["aoi", "stem"]).reset_index(drop=True)
