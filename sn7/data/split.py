"""Splits with three roles: train, val (the *selection* split) and test (the *report* split).

Nothing is chosen on the report split: the checkpoint monitor, the pixel and building thresholds and
any post-processing choice read the selection split only, so a number reported on `test` is
held-out. Months of one AOI are near-duplicates, so the report split is always by AOI. The
selection split is by AOI when there are AOIs to spare (three groups or more); with fewer (the
2-AOI shared sample) it is a *time split* inside the training AOIs: their last `val_months`
months. Never the report AOI.

Order of precedence for the report AOIs: `test_aois`, then folds (`folds`, `fold`: fold i
reports), then `test_fraction`; the selection AOIs: `val_aois`, then the next fold (folds >= 3),
then `val_fraction` of what is left (at least 2 left), else the time split. All seeded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sn7.errors import ConfigError

SPLITS = ("train", "val", "test")
ROLE = {"train": "training", "val": "selection", "test": "report"}


def split_aois(
    aois: Sequence[str],
    test_aois: Sequence[str] | None = None,
    val_aois: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    folds: int | None = None,
    fold: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """DataFrame (aoi, split): each AOI in "train", "val" or "test". An empty "val" means the
    selection split is a time split of the train AOIs (see `split_images`)."""
    aois = sorted(set(aois))
    _check_named(aois, test_aois, "test_aois")
    _check_named(aois, val_aois, "val_aois")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"split.{name}={value} must be in [0, 1)")
    order = [aois[i] for i in np.random.default_rng(seed).permutation(len(aois))]
    groups = _folds(order, folds, fold) if folds else None
    if test_aois:
        test = set(test_aois)
    elif groups:
        test = set(groups[fold])
    else:
        test = set(order[: _count(len(aois), test_fraction, keep=1)])
    rest = [a for a in order if a not in test]
    if val_aois:
        val = set(val_aois)
        if val & test:
            raise ConfigError(
                f"split.val_aois and the report AOIs overlap: {sorted(val & test)}; the selection "
                "split must never be the report split"
            )
    elif groups and len(groups) >= 3:
        val = set(groups[(fold + 1) % len(groups)])
    elif len(rest) >= 2 and val_fraction > 0:
        val = set(rest[: min(max(round(len(aois) * val_fraction), 1), len(rest) - 1)])
    else:
        val = set()
    roles = ["test" if a in test else "val" if a in val else "train" for a in aois]
    return pd.DataFrame({"aoi": aois, "split": roles})


def split_images(
    images: pd.DataFrame, aoi_split: pd.DataFrame, val_months: int = 1
) -> pd.DataFrame:
    """Per image (aoi, stem, date, split). Without selection AOIs, the last `val_months` months of
    each train AOI that has more than that become the selection split (a time split)."""
    split_of = dict(zip(aoi_split["aoi"], aoi_split["split"], strict=True))
    out = images[["aoi", "stem", "date"]].copy()
    out["split"] = out["aoi"].map(split_of).fillna("train")
    if (out["split"] == "val").any() or val_months <= 0:
        return out.sort_values(["aoi", "date", "stem"]).reset_index(drop=True)
    for _, group in out[out["split"] == "train"].groupby("aoi"):
        dates = sorted(group["date"].unique())
        if len(dates) > val_months:
            late = group.index[group["date"].isin(dates[-val_months:])]
            out.loc[late, "split"] = "val"
    return out.sort_values(["aoi", "date", "stem"]).reset_index(drop=True)


def selection_kind(image_split: pd.DataFrame) -> str:
    """'aoi' when the selection split holds whole AOIs of its own, 'time' when it is the late
    months of training AOIs, 'none' when there is no selection split."""
    val_aois = set(image_split.loc[image_split["split"] == "val", "aoi"])
    if not val_aois:
        return "none"
    train_aois = set(image_split.loc[image_split["split"] == "train", "aoi"])
    return "time" if val_aois & train_aois else "aoi"


def describe(image_split: pd.DataFrame, split: str) -> dict:
    """What a split holds, for metrics.json and threshold provenance: AOIs and months."""
    rows = image_split[image_split["split"] == split] if split != "all" else image_split
    return {
        "split": split,
        "role": ROLE.get(split, "all images"),
        "kind": selection_kind(image_split) if split == "val" else "aoi",
        "aois": sorted(rows["aoi"].unique().tolist()),
        "months": sorted(rows["date"].astype(str).unique().tolist()),
        "n_images": len(rows),
    }


def _check_named(aois: list[str], named: Sequence[str] | None, key: str) -> None:
    unknown = sorted(set(named or ()) - set(aois))
    if unknown:
        raise ConfigError(f"split.{key} names AOIs that are not in the data: {unknown}")


def _folds(order: list[str], folds: int, fold: int) -> list[list[str]]:
    if not 2 <= folds <= len(order):
        raise ConfigError(f"split.folds={folds} needs 2 <= folds <= number of AOIs ({len(order)})")
    if not 0 <= fold < folds:
        raise ConfigError(f"split.fold={fold} must be in 0..{folds - 1}")
    return [list(part) for part in np.array_split(np.array(order, dtype=object), folds)]


def _count(n: int, fraction: float, keep: int) -> int:
    """round(n * fraction), at least 1 when fraction > 0, leaving `keep` AOIs for training."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(round(n * fraction), 1), n - keep)
