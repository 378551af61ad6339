"""The three split roles (sn7.data.split): train, val = selection, test = report."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sn7.data.split import describe, selection_kind, split_aois, split_images
from sn7.errors import ConfigError


def images(months: dict[str, int]) -> pd.DataFrame:
    rows = [
        {"aoi": aoi, "stem": f"{aoi}_{m}", "date": f"2018_{m + 1:02d}"}
        for aoi, n in months.items()
        for m in range(n)
    ]
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(
    n_aois=st.integers(2, 10),
    n_months=st.integers(1, 4),
    folds=st.one_of(st.none(), st.integers(2, 10)),
    fold=st.integers(0, 9),
    seed=st.integers(0, 5),
    test_fraction=st.sampled_from([0.1, 0.2, 0.5]),
    val_fraction=st.sampled_from([0.0, 0.2, 0.4]),
)
def test_roles_never_overlap(n_aois, n_months, folds, fold, seed, test_fraction, val_fraction):
    if folds is not None and folds > n_aois:
        folds = n_aois
    if folds is not None:
        fold = fold % folds
    aois = [f"AOI_{i}" for i in range(n_aois)]
    aoi_split = split_aois(
        aois,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        folds=folds,
        fold=fold,
        seed=seed,
    )
    per_image = split_images(images(dict.fromkeys(aois, n_months)), aoi_split)
    test_aois = set(per_image.loc[per_image["split"] == "test", "aoi"])
    other_aois = set(per_image.loc[per_image["split"] != "test", "aoi"])
    assert test_aois and other_aois  # something to report on and something to train on
    assert not test_aois & other_aois  # the report split is whole AOIs nobody else sees
    assert per_image["stem"].is_unique  # every image has exactly one role
    val = per_image[per_image["split"] == "val"]
    train = per_image[per_image["split"] == "train"]
    assert not train.empty
    assert not set(zip(val["aoi"], val["date"], strict=True)) & set(
        zip(train["aoi"], train["date"], strict=True)
    )
    if n_months >= 2 or selection_kind(per_image) == "aoi":
        assert not val.empty  # a selection split whenever one can exist


def test_two_aois_two_folds_select_on_the_last_month_of_the_training_aoi():
    aoi_split = split_aois(["A", "B"], folds=2, fold=0, seed=42)
    per_image = split_images(images({"A": 4, "B": 4}), aoi_split, val_months=1)
    test_aoi = aoi_split.loc[aoi_split["split"] == "test", "aoi"].item()
    train_aoi = ({"A", "B"} - {test_aoi}).pop()
    val = per_image[per_image["split"] == "val"]
    assert set(val["aoi"]) == {train_aoi} and list(val["date"]) == ["2018_04"]
    assert selection_kind(per_image) == "time"
    assert describe(per_image, "val")["kind"] == "time"
    assert describe(per_image, "test")["aois"] == [test_aoi]
    # the two fold directions swap the report AOI
    other = split_aois(["A", "B"], folds=2, fold=1, seed=42)
    assert set(other.loc[other["split"] == "test", "aoi"]) == {train_aoi}


def test_three_folds_select_on_the_next_fold():
    aois = [f"AOI_{i}" for i in range(6)]
    tests, vals = [], []
    for fold in range(3):
        s = split_aois(aois, folds=3, fold=fold, seed=1)
        tests.append(set(s.loc[s["split"] == "test", "aoi"]))
        vals.append(set(s.loc[s["split"] == "val", "aoi"]))
    assert all(len(t) == 2 for t in tests) and set().union(*tests) == set(aois)
    assert vals == [tests[1], tests[2], tests[0]]


def test_explicit_lists_and_overlap_refused():
    s = split_aois(["A", "B", "C", "D"], test_aois=["A"], val_aois=["B"])
    assert dict(zip(s["aoi"], s["split"], strict=True)) == {
        "A": "test",
        "B": "val",
        "C": "train",
        "D": "train",
    }
    with pytest.raises(ConfigError, match="overlap"):
        split_aois(["A", "B", "C"], test_aois=["A"], val_aois=["A"])
    with pytest.raises(ConfigError, match="not in the data"):
        split_aois(["A", "B"], val_aois=["Z"])


def test_folds_keep_the_earlier_report_aoi():
    """fold i's report AOI is the old val AOI of fold i, so earlier results stay comparable."""
    import numpy as np

    aois = [f"AOI_{i:02d}" for i in range(7)]
    for fold in range(3):
        order = np.random.default_rng(5).permutation(len(aois))
        old = {aois[i] for i in np.array_split(order, 3)[fold]}
        s = split_aois(aois, folds=3, fold=fold, seed=5)
        assert set(s.loc[s["split"] == "test", "aoi"]) == old
