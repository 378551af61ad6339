"""Building ids across the months of an AOI (sn7.inference.tracking), on hand-made 4-month stacks.

Probability stacks are 64x64 with background 0.05 and buildings as squares at 0.9, so every mean
below is a hand sum: e.g. a building standing in months 2 and 3 of 4 averages
(0.05 + 0.05 + 0.9 + 0.9) / 4 = 0.475.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from shapely.geometry import box

from sn7.errors import ConfigError
from sn7.inference.footprints import FootprintSettings, PostSettings, cut_footprints
from sn7.inference.tracking import (
    TrackedMonths,
    TrackSettings,
    first_appearance,
    month_masks,
    temporal_mean,
    track_aggregate,
    track_aoi,
    track_match,
    track_none,
)
from sn7.inference.vectorize import vectorize

TRACK_CONF = Path(__file__).resolve().parents[2] / "conf" / "track"
T, H, W = 4, 64, 64
BG, ON = 0.05, 0.9


def footprint(threshold: float = 0.4, min_area: float = 4.0, **post) -> FootprintSettings:
    """The settings track_aggregate used to default to: mean-map threshold 0.4, 4 px."""
    return FootprintSettings(threshold, PostSettings(**post), min_area)


def aggregate(probs, valids=None, threshold: float = 0.4, min_area: float = 4.0, **options):
    return track_aggregate(probs, valids, footprint(threshold, min_area), **options)


def stack(*buildings) -> np.ndarray:
    """(T, H, W) probabilities; each building is (row0, col0, row1, col1, months)."""
    probs = np.full((T, H, W), BG, np.float32)
    for r0, c0, r1, c1, months in buildings:
        for t in months:
            probs[t, r0:r1, c0:c1] = ON
    return probs


def rect(r0, c0, r1, c1):
    """A pixel-edge footprint in vectorize's coordinates (x = column, y = row)."""
    return box(c0, r0, c1, r1)


def same(a, b) -> bool:
    return a.symmetric_difference(b).area == 0


# --- track_none -------------------------------------------------------------------------------


def test_track_none_numbers_each_month_from_one():
    months = [[rect(0, 0, 5, 5), rect(10, 10, 15, 15)], [rect(30, 30, 35, 35)], []]
    months.append([rect(0, 0, 5, 5), rect(10, 10, 15, 15), rect(30, 30, 35, 35)])
    tracked = track_none(months)
    assert [tracked.ids(t) for t in range(4)] == [[1, 2], [1], [], [1, 2, 3]]
    # what SCOT would read from such ids: id 3 is new in month 3, the others were "seen" before
    assert tracked.first_seen == {1: 0, 2: 0, 3: 3}
    assert tracked.is_new(3) == [False, False, True]
    assert tracked.is_new(0) == [False, False]  # month 0 has nothing new, by definition
    assert same(tracked.polygons(1)[0], rect(30, 30, 35, 35))


# --- track_match ------------------------------------------------------------------------------


def test_track_match_keeps_the_id_of_a_building_that_moves_a_pixel_or_two():
    months = [
        [rect(10, 10, 20, 20)],
        [rect(11, 10, 21, 20)],  # down 1 px: IoU 9/11
        [rect(12, 12, 22, 22)],  # down 1, right 2: IoU 72/128 with month 1
        [rect(12, 11, 22, 21)],
    ]
    tracked = track_match(months)
    assert [tracked.ids(t) for t in range(4)] == [[1], [1], [1], [1]]
    assert tracked.first_seen == {1: 0}
    assert same(tracked.polygons(2)[0], rect(12, 12, 22, 22))


def test_a_building_appearing_in_month_three_gets_a_new_id_first_seen_2():
    old = rect(10, 10, 20, 20)
    new = rect(40, 40, 50, 50)
    tracked = track_match([[old], [old], [new, old], [old, new]])
    assert tracked.ids(2) == [2, 1] and tracked.ids(3) == [1, 2]
    assert tracked.first_seen == {1: 0, 2: 2}
    assert tracked.is_new(2) == [True, False]
    assert tracked.is_new(3) == [False, False]


def test_two_neighbours_do_not_swap_ids():
    # A = cols 10-20, B = cols 20-30 (touching). Next month both sit 5 px to the right: A' overlaps
    # A and B equally (IoU 5/15 each), B' only B. Taking A'-B would leave B' unmatched; the
    # optimal assignment keeps both ids.
    a, b = rect(0, 10, 10, 20), rect(0, 20, 10, 30)
    a2, b2 = rect(0, 15, 10, 25), rect(0, 25, 10, 35)
    tracked = track_match([[a, b], [b2, a2]])
    assert tracked.ids(0) == [1, 2]
    assert tracked.ids(1) == [2, 1]  # b2 keeps B's id, a2 keeps A's
    assert tracked.first_seen == {1: 0, 2: 0}


def test_a_building_missed_for_a_month_gets_its_id_back_within_max_missing():
    a, other = rect(10, 10, 20, 20), rect(40, 40, 50, 50)
    months = [[a, other], [other], [other], [other, a]]  # a missing in months 1 and 2
    assert track_match(months, max_missing=2).ids(3) == [2, 1]
    assert track_match(months, max_missing=1).ids(3) == [2, 3]  # gone too long: a new id
    assert track_match(months, max_missing=None).ids(3) == [2, 1]


def test_a_poor_overlap_is_not_a_match():
    # IoU exactly 0.25 (4x10 overlap of 10x10 squares: 40 / 160) does not pass SCOT's > 0.25
    tracked = track_match([[rect(0, 0, 10, 10)], [rect(0, 6, 10, 16)]])
    assert tracked.ids(1) == [2]


# --- aggregate building blocks ----------------------------------------------------------------


def test_temporal_mean_ignores_invalid_months():
    probs = stack((10, 10, 20, 20, range(4)))
    probs[1:, 10:20, 10:20] = 0.0  # alpha = 0 over the building in months 1-3: zeros, invalid
    valids = np.ones(probs.shape, bool)
    valids[1:, 10:20, 10:20] = False
    mean = temporal_mean(probs, valids)
    np.testing.assert_allclose(mean[10:20, 10:20], ON)  # not (0.9 + 0 + 0 + 0) / 4
    np.testing.assert_allclose(mean[0, 0], BG)
    valids[:, 0, 0] = False
    assert temporal_mean(probs, valids)[0, 0] == 0  # never valid: no evidence at all


@pytest.mark.parametrize(
    ("scores", "evidence", "expected"),
    [
        ([0.1, 0.1, 0.9, 0.9], [1, 1, 1, 1], 2),
        ([0.9, 0.9, 0.9, 0.9], [1, 1, 1, 1], 0),
        ([0.6, 0.6, 0.95, 0.95], [1, 1, 1, 1], 0),  # brighter later, but standing all along
        ([0.1, 0.9, 0.1, 0.1], [1, 1, 1, 1], None),  # one bright month: noise
        ([0.9, 0.1, 0.1, 0.1], [1, 1, 1, 1], None),
        ([0.9, 0.1, 0.1, 0.9], [1, 1, 1, 1], 3),  # split 3: after 0.9 - before 0.367 is largest
        ([0.1, 0.0, 0.9, 0.9], [1, 0, 1, 1], 2),  # month 1 has no evidence: absent carried on
        ([0.1, 0.0, 0.0, 0.9], [1, 0, 0, 1], 3),
        ([0.0, 0.0, 0.9, 0.9], [0, 0, 1, 1], 0),  # clouded at first: standing from month 0
        ([0.9, 0.9, 0.9, 0.9], [0, 0, 0, 0], None),  # never seen
    ],
)
def test_first_appearance(scores, evidence, expected):
    assert first_appearance(np.array(scores), np.array(evidence, bool), 0.4) == expected


# --- track_aggregate --------------------------------------------------------------------------


def test_aggregate_finds_a_building_appearing_in_month_three_exactly_then():
    probs = stack((10, 10, 20, 20, range(4)), (40, 30, 50, 42, [2, 3]))  # mean 0.9 and 0.475
    tracked = aggregate(probs)
    assert tracked.first_seen == {1: 0, 2: 2}  # ids in order of appearance
    assert [tracked.ids(t) for t in range(4)] == [[1], [1], [1, 2], [1, 2]]
    assert same(tracked.polygons(0)[0], rect(10, 10, 20, 20))
    assert same(tracked.polygons(3)[1], rect(40, 30, 50, 42))
    assert tracked.is_new(2) == [False, True]


def test_aggregate_drops_noise_of_one_month():
    # one bright month in four: mean 0.05 * 3/4 + 0.95/4 = 0.275 < 0.4, wherever the month is
    probs = stack((10, 10, 20, 20, range(4)))
    probs[1, 40:50, 40:50] = 0.95
    probs[3, 30:36, 5:11] = 0.95
    tracked = aggregate(probs)
    assert [tracked.ids(t) for t in range(4)] == [[1]] * 4
    assert same(tracked.polygons(3)[0], rect(10, 10, 20, 20))


def test_aggregate_splits_touching_buildings_that_connected_components_merge():
    # two 10x10 squares sharing an edge, the two seam columns weaker (0.5) in every month: above
    # the 0.4 threshold, so the mask is one rectangle, but below the 0.6 seed threshold
    probs = stack((20, 10, 30, 30, range(4)))
    probs[:, 20:30, 19:21] = 0.5
    assert len(vectorize(temporal_mean(probs) >= 0.4).polygons) == 1
    tracked = aggregate(probs)
    left, right = sorted(tracked.polygons(0), key=lambda p: p.centroid.x)
    assert len(tracked.polygons(0)) == 2
    assert same(left.union(right), rect(20, 10, 30, 30))
    # each seam column goes to one side or the other: the cores are cols 10-19 and 21-30
    assert left.contains(rect(20, 10, 30, 19)) and right.contains(rect(20, 21, 30, 30))
    assert 90 <= left.area <= 110 and left.area + right.area == 200


def test_aggregate_reads_no_evidence_from_invalid_months():
    # the building is visible only in month 0 (months 1-3: alpha = 0, zeros). Unmasked, its mean
    # would be 0.9 / 4 = 0.225 and it would vanish; masked, it stands in all four months.
    probs = stack((10, 10, 20, 20, [0]))
    probs[1:, 10:20, 10:20] = 0.0
    valids = np.ones(probs.shape, bool)
    valids[1:, 10:20, 10:20] = False
    assert aggregate(probs).first_seen == {}
    tracked = aggregate(probs, valids)
    assert [tracked.ids(t) for t in range(4)] == [[1]] * 4
    assert tracked.first_seen == {1: 0}


def test_aggregate_carries_a_new_building_through_clouded_months():
    # built in month 1, clouded (alpha = 0, zeros) in months 2 and 3. Unmasked, the mean would be
    # (0.05 + 0.9 + 0 + 0) / 4 = 0.24: lost. Masked: (0.05 + 0.9) / 2 = 0.475, evidence in months
    # 0 and 1 only (0.05, 0.9): it appears in month 1 and is carried through months 2 and 3.
    probs = stack((10, 10, 20, 20, [1]))
    probs[2:, 10:20, 10:20] = 0.0
    valids = np.ones(probs.shape, bool)
    valids[2:, 10:20, 10:20] = False
    assert aggregate(probs).first_seen == {}
    tracked = aggregate(probs, valids)
    assert tracked.first_seen == {1: 1}
    assert [tracked.ids(t) for t in range(4)] == [[], [1], [1], [1]]


def test_min_area_drops_small_footprints():
    probs = stack((10, 10, 20, 20, range(4)), (40, 40, 42, 41, range(4)))  # 2 px
    assert len(aggregate(probs, min_area=4).polygons(0)) == 1
    assert len(aggregate(probs, min_area=0).polygons(0)) == 2


# --- dispatcher, configs, masks ---------------------------------------------------------------


def _config(name: str) -> TrackSettings:
    return TrackSettings.from_config(OmegaConf.load(TRACK_CONF / f"{name}.yaml"))


def test_track_aoi_with_each_config():
    probs = stack((10, 10, 20, 20, range(4)), (40, 30, 50, 42, [2, 3]))
    probs[1, 11:21, 10:20] = ON  # the old building wobbles by a pixel in month 1
    probs[1, 10, 10:20] = BG
    valids = np.ones(probs.shape, bool)
    at_half = footprint(0.5, 4)
    none = track_aoi(_config("none"), probs, valids, at_half)
    assert [none.ids(t) for t in range(4)] == [[1], [1], [1, 2], [1, 2]]
    assert none.first_seen == {1: 0, 2: 2}  # by luck of the order; ids are not persistent
    match = track_aoi(_config("match"), probs, valids, at_half)
    assert match.first_seen == {1: 0, 2: 2}
    assert same(match.polygons(1)[0], rect(11, 10, 21, 20))
    # the mean map of a building standing 2 of 4 months is ~0.5: cut lower than a month's map
    aggregate = track_aoi(_config("aggregate"), list(probs), list(valids), footprint(0.4, 4))
    assert aggregate.first_seen == {1: 0, 2: 2}
    assert len(track_aoi(_config("aggregate"), probs, valids, footprint(0.4, 200)).first_seen) == 0


def test_aggregate_cuts_the_mean_map_at_the_building_threshold():
    """The building threshold is the one the mean map is cut at: a building standing in the last
    2 of 4 months averages (0.05 * 2 + 0.95 * 2) / 4 = 0.5, kept at 0.45 and lost at 0.55."""
    probs = stack((10, 10, 20, 20, [2, 3]))
    track = _config("aggregate")
    assert len(track_aoi(track, probs, None, footprint(0.45)).footprints()) == 1
    assert track_aoi(track, probs, None, footprint(0.55)).footprints() == {}


def test_track_settings_name_bad_configs():
    with pytest.raises(ConfigError, match=r"track\.mode"):
        TrackSettings.from_config({"mode": "hungarian"})
    with pytest.raises(ConfigError, match="min_iuo"):
        TrackSettings.from_config({"mode": "match", "min_iuo": 0.3})
    with pytest.raises(ConfigError, match="treshold"):
        TrackSettings.from_config({"mode": "aggregate", "treshold": 0.3})
    with pytest.raises(ConfigError, match="footprint"):  # given by track_aoi, not a config key
        TrackSettings.from_config({"mode": "aggregate", "footprint": 0.3})


@pytest.mark.parametrize("name", ["none", "match", "aggregate"])
def test_shipped_track_configs_are_valid(name):
    settings = _config(name)
    assert settings.mode == name
    shipped = OmegaConf.to_container(OmegaConf.load(TRACK_CONF / f"{name}.yaml"))
    for key, off in (("calibrate", False), ("month_norm", None)):
        if key in shipped and shipped[key] is off:
            del shipped[key]  # stored only when on
    assert settings.as_dict() == shipped


def test_cut_footprints_separates_only_when_asked():
    prob = np.full((H, W), BG, np.float32)
    prob[20:30, 10:30] = ON
    prob[20:30, 19:21] = 0.5
    valid = np.ones((H, W), bool)
    assert len(cut_footprints(prob, valid, footprint(0.4, 0)).polygons) == 1
    assert len(cut_footprints(prob, valid, footprint(0.4, 0, separate=True)).polygons) == 2
    valid[:, 20:] = False  # invalid pixels are never building
    only = cut_footprints(prob, valid, footprint(0.4, 0)).polygons
    assert len(only) == 1 and same(only[0], rect(20, 10, 30, 20))


def test_month_masks_rasterise_each_month():
    probs = stack((10, 10, 20, 20, range(4)), (40, 30, 50, 42, [2, 3]))
    tracked = aggregate(probs)
    masks = month_masks(tracked, (H, W))
    expected = probs >= 0.5
    np.testing.assert_array_equal(masks, expected)
    valids = np.ones(probs.shape, bool)
    valids[3, :, :15] = False
    cut = month_masks(tracked, (H, W), valids)
    assert cut[3].sum() == expected[3].sum() - 50 and cut[2].sum() == expected[2].sum()
    empty = month_masks(TrackedMonths([[], []]), (4, 5))
    assert empty.shape == (2, 4, 5) and not empty.any()


def test_suffix_max_keeps_a_late_building_that_the_mean_dilutes():
    """A building standing in the last 2 of 6 months (p 0.9, else 0.05) averages 0.33 over all
    months, below the aggregate threshold 0.4; the best final run (the last 2) averages 0.9."""
    from sn7.inference.tracking import suffix_max_mean, temporal_mean

    probs = np.full((6, 32, 32), 0.05, np.float32)
    probs[4:, 10:18, 10:18] = 0.9
    probs[5, 24:30, 2:8] = 0.9  # a one-month blip at the end: no final run of 2 months
    assert temporal_mean(probs)[12, 12] == pytest.approx((4 * 0.05 + 2 * 0.9) / 6)
    best = suffix_max_mean(probs, min_run=2)
    assert best[12, 12] == pytest.approx(0.9)
    assert best[26, 4] == pytest.approx((0.05 + 0.9) / 2)  # the blip's best run: 0.475
    assert best[0, 0] == pytest.approx(0.05)
    assert aggregate(probs).footprints() == {}  # the mean map loses it
    tracked = aggregate(probs, temporal="suffix_max", threshold=0.5)
    assert len(tracked.footprints()) == 1  # the blip (0.475) stays under 0.5
    (building,) = tracked.footprints()
    assert tracked.first_seen[building] == 4
    assert tracked.footprints()[building].area == 64


def test_suffix_max_ignores_invalid_months():
    from sn7.inference.tracking import suffix_max_mean

    probs = np.full((4, 8, 8), 0.9, np.float32)
    probs[3] = 0.0  # a clouded last month reads 0
    valids = np.ones(probs.shape, bool)
    valids[3] = False
    assert suffix_max_mean(probs, valids, min_run=2)[0, 0] == pytest.approx(0.9)


def test_min_jump_keeps_a_building_that_merely_brightens_as_old():
    """Scores 0.35, 0.35, 0.6, 0.6: before 0.35 < 0.4 <= after 0.6, a rise of 0.25. With
    min_jump 0 it appears in month 2; with min_jump 0.3 the rise is too small, so it stood all
    along (mean 0.475 >= 0.4): month 0. A real new building (0.05 -> 0.9, rise 0.85) is new
    either way."""
    from sn7.inference.tracking import first_appearance

    evidence = np.ones(4, bool)
    brightens = np.array([0.35, 0.35, 0.6, 0.6])
    assert first_appearance(brightens, evidence, 0.4, min_jump=0.0) == 2
    assert first_appearance(brightens, evidence, 0.4, min_jump=0.3) == 0
    built = np.array([0.05, 0.05, 0.9, 0.9])
    assert first_appearance(built, evidence, 0.4, min_jump=0.3) == 2
