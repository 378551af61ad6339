"""AOI (tile-location) splits: an AOI is in train or in val, never both.

Months of one AOI are near-duplicates of each other, so a split by image would leak; the split is
always by AOI. Three ways to choose val AOIs, in order of precedence: an explicit list, k-fold
(`folds`, `fold`), or a fraction. All are deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sn7.errors import ConfigError

SPLITS = ("train", "val")


def split_aois(
    aois: Sequence[str],
    val_aois: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    folds: int | None = None,
    fold: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """DataFrame (aoi, split) with split in {"train", "val"}."""
    aois = sorted(set(aois))
    if val_aois:
        unknown = sorted(set(val_aois) - set(aois))
        if unknown:
            raise ConfigError(f"split.val_aois names AOIs that are not in the data: {unknown}")
        val = set(val_aois)
    elif folds:
        if not 2 <= folds <= len(aois):
            raise ConfigError(
                f"split.folds={folds} needs 2 <= folds <= number of AOIs ({len(aois)})"
            )
        if not 0 <= fold < folds:
            raise ConfigError(f"split.fold={fold} must be in 0..{folds - 1}")
        order = np.random.default_rng(seed).permutation(len(aois))
        val = {aois[i] for i in np.array_split(order, folds)[fold]}
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"split.val_fraction={val_fraction} must be in [0, 1)")
        n_val = round(len(aois) * val_fraction)
        if val_fraction > 0 and len(aois) >= 2:
            n_val = min(max(n_val, 1), len(aois) - 1)
        order = np.random.default_rng(seed).permutation(len(aois))
        val = {aois[i] for i in order[:n_val]}
    return pd.DataFrame({"aoi": aois, "split": ["val" if a in val else "train" for a in aois]})
