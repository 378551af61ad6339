"""The balanced subset (sn7.data.subset) and the AOI split (sn7.data.split)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sn7.data.manifest import COLUMNS
from sn7.data.split import split_aois
from sn7.data.subset import balanced_subset
from sn7.errors import ConfigError

AOIS = [f"AOI_{i:02d}" for i in range(10)]


def make_manifest(months_per_aoi: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """A manifest with the real columns and random building fractions."""
    rng = np.random.default_rng(seed)
    rows = []
    for aoi, n in months_per_aoi.items():
        for m in range(n):
            stem = f"global_monthly_{2018 + m // 12}_{m % 12 + 1:02d}_mosaic_{aoi}"
            rows.append(
                {
                    "aoi": aoi,
                    "date": f"{2018 + m // 12}-{m % 12 + 1:02d}",
                    "stem": stem,
                    "image": f"/data/train/{aoi}/images/{stem}.tif",
                    "mask": f"/work/masks/{aoi}/{stem}.png",
                    "height": 1024,
                    "width": 1024,
                    "n_buildings": int(rng.integers(0, 3000)),
                    "building_frac": float(rng.random() * 0.1),
                    "valid_frac": 1.0,
                    "label_source": "labels",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


# --- split ------------------------------------------------------------------------------------


def assert_partition(split: pd.DataFrame, aois):
    assert sorted(split["aoi"]) == sorted(set(aois))  # every AOI exactly once
    assert split["aoi"].is_unique
    assert set(split["split"]) <= {"train", "val", "test"}


def val_of(split: pd.DataFrame) -> set[str]:
    return set(split.loc[split["split"] == "test", "aoi"])


def test_explicit_test_aois():
    split = split_aois(AOIS, test_aois=["AOI_03", "AOI_07"])
    assert_partition(split, AOIS)
    assert val_of(split) == {"AOI_03", "AOI_07"}


@pytest.mark.parametrize(
    ("n_aois", "fraction", "n_val"),
    [
        (10, 0.2, 2),
        (10, 0.25, 2),
        (10, 0.35, 4),
        (2, 0.2, 1),
        (2, 0.9, 1),
        (10, 0.0, 0),
        (1, 0.2, 0),
    ],
)
def test_test_fraction(n_aois, fraction, n_val):
    aois = AOIS[:n_aois]
    split = split_aois(aois, test_fraction=fraction, seed=3)
    assert_partition(split, aois)
    assert len(val_of(split)) == n_val


@pytest.mark.parametrize("folds", [2, 3, 10])
def test_folds_partition_the_aois(folds):
    vals = []
    for fold in range(folds):
        split = split_aois(AOIS, folds=folds, fold=fold, seed=5)
        assert_partition(split, AOIS)
        vals.append(val_of(split))
    assert set().union(*vals) == set(AOIS)
    assert sum(len(v) for v in vals) == len(AOIS)  # disjoint
    assert max(map(len, vals)) - min(map(len, vals)) <= 1


def test_precedence_test_aois_then_folds_then_fraction():
    split = split_aois(AOIS, test_aois=["AOI_01"], folds=2, test_fraction=0.5)
    assert val_of(split) == {"AOI_01"}
    assert val_of(split_aois(AOIS, folds=5, test_fraction=0.5)) == val_of(split_aois(AOIS, folds=5))


def test_split_is_deterministic_for_a_seed_and_varies_with_it():
    for kwargs in ({"test_fraction": 0.3}, {"folds": 3, "fold": 1}):
        first = split_aois(AOIS, seed=11, **kwargs)
        pd.testing.assert_frame_equal(first, split_aois(AOIS, seed=11, **kwargs))
        # the input order and duplicates (one row per month in a manifest) do not matter
        shuffled = list(reversed(AOIS)) * 3
        pd.testing.assert_frame_equal(first, split_aois(shuffled, seed=11, **kwargs))
        others = {frozenset(val_of(split_aois(AOIS, seed=s, **kwargs))) for s in range(10)}
        assert len(others) > 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_aois": ["AOI_99"]}, "not in the data"),
        ({"folds": 1}, "folds=1"),
        ({"folds": 11}, "folds=11"),
        ({"folds": 3, "fold": 3}, "fold=3"),
        ({"folds": 3, "fold": -1}, "fold=-1"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
    ],
)
def test_bad_split_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        split_aois(AOIS, **kwargs)


# --- subset -----------------------------------------------------------------------------------


@pytest.fixture
def manifest():
    return make_manifest({aoi: 6 + i % 3 for i, aoi in enumerate(AOIS[:5])})


def test_no_caps_keeps_every_row(manifest):
    subset = balanced_subset(manifest, seed=1)
    assert len(subset) == len(manifest)
    assert list(subset.columns) == [*COLUMNS, "richness"]
    assert list(subset["stem"]) == list(manifest.sort_values(["aoi", "stem"])["stem"])
    # untouched values: the subset only selects rows
    merged = subset.merge(manifest, on="stem", suffixes=("", "_m"))
    assert (merged["building_frac"] == merged["building_frac_m"]).all()


def test_subset_is_deterministic_for_a_seed(manifest):
    for caps in ({"per_aoi": 3}, {"max_images": 7}, {"per_aoi": 4, "max_images": 9}):
        first = balanced_subset(manifest, seed=4, **caps)
        pd.testing.assert_frame_equal(
            first, balanced_subset(manifest.sample(frac=1, random_state=0), seed=4, **caps)
        )
        picks = {tuple(balanced_subset(manifest, seed=s, **caps)["stem"]) for s in range(10)}
        assert len(picks) > 1


def test_richness_splits_each_aoi_at_its_median(manifest):
    subset = balanced_subset(manifest, seed=0)
    for _, group in subset.groupby("aoi"):
        rich = group.loc[group["richness"] == "rich", "building_frac"]
        poor = group.loc[group["richness"] == "poor", "building_frac"]
        assert len(rich) == (len(group) + 1) // 2 and len(poor) == len(group) // 2
        assert rich.min() >= poor.max()


@pytest.mark.parametrize("per_aoi", [0, 1, 2, 3, 7, 100])
def test_per_aoi_cap_keeps_every_aoi(manifest, per_aoi):
    subset = balanced_subset(manifest, per_aoi=per_aoi, seed=2)
    sizes = manifest.groupby("aoi").size()
    counts = subset.groupby("aoi").size()
    assert list(counts.index) == list(sizes.index)
    for aoi, n in sizes.items():
        assert counts[aoi] == min(max(per_aoi, 1), n)
    if per_aoi >= 2:  # even two picks show both a building-rich and a building-poor month
        for _, group in subset.groupby("aoi"):
            assert set(group["richness"]) == {"rich", "poor"}


@pytest.mark.parametrize("max_images", [1, 5, 7, 12, 1000])
def test_max_images_takes_round_robin_over_aois(manifest, max_images):
    subset = balanced_subset(manifest, max_images=max_images, seed=2)
    n_aois = manifest["aoi"].nunique()
    assert len(subset) == min(max(max_images, n_aois), len(manifest))
    counts = subset.groupby("aoi").size()
    assert len(counts) == n_aois
    if max_images <= 6 * n_aois:  # while every AOI still has months left
        assert counts.max() - counts.min() <= 1


def test_max_images_with_uneven_aois_keeps_every_aoi():
    manifest = make_manifest({"A": 1, "B": 10, "C": 2})
    subset = balanced_subset(manifest, max_images=6, seed=0)
    assert subset.groupby("aoi").size().to_dict() == {"A": 1, "B": 3, "C": 2}


def test_empty_manifest():
    subset = balanced_subset(make_manifest({}), per_aoi=2, max_images=3)
    assert subset.empty and "richness" in subset.columns
