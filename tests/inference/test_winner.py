"""The SN7 winners' temporal rules (track=winner) on small hand-made series whose outcome is worked
out by hand in each docstring. Probabilities: 0.05 background, 0.9 building unless said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from sn7.errors import ConfigError
from sn7.inference.footprints import FootprintSettings, PostSettings
from sn7.inference.tracking import TrackSettings, calibrated, track_aggregate, track_aoi
from sn7.inference.winner import change_start, collapse, track_winner

BG, ON = 0.05, 0.9
CONF = Path(__file__).resolve().parents[2] / "conf" / "track" / "winner.yaml"


def series(n_months: int, *buildings, size: int = 48) -> np.ndarray:
    """(T, size, size) maps; each building is (r0, c0, r1, c1, {month: probability})."""
    probs = np.full((n_months, size, size), BG, np.float32)
    for r0, c0, r1, c1, months in buildings:
        for t, p in months.items():
            probs[t, r0:r1, c0:c1] = p
    return probs


def always(n: int, p: float = ON) -> dict:
    return dict.fromkeys(range(n), p)


def from_month(start: int, n: int, p: float = ON) -> dict:
    return dict.fromkeys(range(start, n), p)


def winner(probs, valids=None, threshold: float = 0.4, min_area: float = 4.0, **options):
    return track_winner(probs, valids, FootprintSettings(threshold, PostSettings(), min_area),
                        **options)  # fmt: skip


def test_collapse_averages_only_the_months_above_the_floor():
    """Months 1 and 2 at 0.9, months 0 and 3 at 0.05 (under the 0.1 floor): mean 0.9, where the
    plain mean is 0.475; a pixel never above the floor collapses to 0."""
    probs = series(4, (0, 0, 2, 2, {1: ON, 2: ON}))
    mean = collapse(probs, None)
    assert mean[0, 0] == pytest.approx(0.9) and mean[10, 10] == 0.0
    valids = np.ones(probs.shape, bool)
    valids[2] = False  # month 2 clouded: only month 1 counts
    probs[2] = 0.0
    assert collapse(probs, valids)[0, 0] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("scores", "evidence", "expected"),
    [
        ([0.05, 0.05, 0.9, 0.9], [1, 1, 1, 1], 2),  # rise 0.85; first month above 0.45 * 0.9
        ([0.35, 0.35, 0.6, 0.6], [1, 1, 1, 1], None),  # rise 0.25 <= 0.5: not a change
        ([0.4, 0.05, 0.95, 0.95], [1, 1, 1, 1], 0),  # a change (rise 0.725) whose month 0 > 0.3
        ([0.05, 0.0, 0.9, 0.9], [1, 0, 1, 1], 2),  # month 1 has no evidence: skipped
        ([0.9], [1], None),  # one month cannot show a change
    ],
)
def test_change_start(scores, evidence, expected):
    assert change_start(np.array(scores), np.array(evidence, bool)) == expected


def test_a_standing_and_a_new_building_get_their_months():
    """A stands in all 4 months, B from month 2: A is stable (no rise), id 1 from month 0; B is a
    change starting in month 2, id 2."""
    probs = series(4, (5, 5, 12, 12, always(4)), (25, 25, 32, 32, from_month(2, 4)))
    tracked = winner(probs)
    assert tracked.first_seen == {1: 0, 2: 2}
    assert [tracked.ids(t) for t in range(4)] == [[1], [1], [1, 2], [1, 2]]
    assert tracked.polygons(3)[1].area == 49


def test_a_building_of_the_last_month_is_found_where_the_mean_map_loses_it():
    """B stands only in the last of 4 months: its plain mean (3 * 0.05 + 0.9) / 4 = 0.26 is under
    0.4, so aggregate loses it; collapsed it is 0.9 and its rise 0.85 makes it new in month 3."""
    probs = series(4, (5, 5, 12, 12, always(4)), (25, 25, 32, 32, {3: ON}))
    footprint = FootprintSettings(0.4, PostSettings(), 4.0)
    assert track_aggregate(probs, None, footprint).first_seen == {1: 0}
    assert winner(probs).first_seen == {1: 0, 2: 3}


def test_one_bright_month_is_neither_a_change_nor_a_building():
    """A blob at 0.95 in month 1 only: collapsed 0.95, so it is cut; its scores 0.05 0.95 0.05 0.05
    rise by at most 0.3 (change needs > 0.5) and average 0.275 (stable needs > 0.4): dropped."""
    probs = series(4, (5, 5, 12, 12, always(4)), (25, 25, 32, 32, {1: 0.95}))
    assert winner(probs).first_seen == {1: 0}


def test_the_stable_pass_skips_footprints_that_overlap_a_change():
    """B (6x6, 0.05 then 0.9 from month 2) sits inside a 2 px ring at 0.38 standing all along.
    The change pass (mask >= 0.4) cuts B alone; the stable pass (mask >= 0.35) cuts B + ring as
    one footprint (B's seed floods the ring) whose mean score 0.64 * 0.38 + 0.36 * 0.475 = 0.41
    > 0.4 would stand from month 0 on top of B: it overlaps B, so it is skipped."""
    b = {0: BG, 1: BG, 2: ON, 3: ON}
    probs = series(4, (20, 20, 30, 30, always(4, 0.38)), (22, 22, 28, 28, b))
    tracked = winner(probs)
    assert tracked.first_seen == {1: 2}
    assert tracked.polygons(3)[0].area == 36


def test_confirm_months_refuses_a_new_id_that_does_not_last():
    """B: 0.05 0.95 0.05 0.95 0.95 0.95 is a change from month 1 (rise 0.72), but in month 2 it
    scores 0.05 < 0.45 * 0.95: with confirm_months=3 it is not a new id; the stable pass takes it
    (mean 0.64 > 0.4), standing from month 0. With confirm_months=0 it is new in month 1."""
    b = {0: BG, 1: 0.95, 2: BG, 3: 0.95, 4: 0.95, 5: 0.95}
    probs = series(6, (5, 5, 12, 12, always(6)), (25, 25, 32, 32, b))
    assert winner(probs).first_seen == {1: 0, 2: 1}
    assert winner(probs, confirm_months=3).first_seen == {1: 0, 2: 0}


def test_a_new_building_among_many_earlier_ones_is_dropped_by_the_crowd_rule():
    """Five 3x3 buildings stand with their centres 6-8.5 px from a sixth that appears in month 2.
    crowd_count=5 drops it, crowd_count=6 (or 0, off) keeps it."""
    corners = [(18, 18), (18, 30), (30, 18), (30, 30), (18, 24)]
    old = [(r, c, r + 3, c + 3, always(4)) for r, c in corners]
    probs = series(4, *old, (24, 24, 27, 27, from_month(2, 4)))
    assert sorted(winner(probs).first_seen.values()) == [0, 0, 0, 0, 0, 2]
    assert sorted(winner(probs, crowd_count=6).first_seen.values()) == [0, 0, 0, 0, 0, 2]
    assert sorted(winner(probs, crowd_count=5).first_seen.values()) == [0, 0, 0, 0, 0]


def test_a_small_new_building_must_stand_in_most_later_months():
    """A 3x3 B: 0.05 0.05 0.95 0.05 0.95 is a change from month 2 (rise 0.6) scoring above its
    start level in 2 of the 3 months from then (67 % < 80 %): not a new id when small_area is 20
    px (the stable pass takes it: mean 0.41 > 0.4, from month 0); new when small_area is 0 (off)
    or 9 (B is not smaller than 9)."""
    b = {0: BG, 1: BG, 2: 0.95, 3: BG, 4: 0.95}
    probs = series(5, (5, 5, 12, 12, always(5)), (25, 25, 28, 28, b))
    assert winner(probs).first_seen == {1: 0, 2: 2}
    assert winner(probs, small_area=9).first_seen == {1: 0, 2: 2}
    assert winner(probs, small_area=20).first_seen == {1: 0, 2: 0}


def test_a_clouded_month_neither_starts_nor_ends_a_building():
    """B is built in month 1 and clouded (alpha = 0, zeros) in month 2: it stands in months 1-3."""
    probs = series(4, (25, 25, 32, 32, from_month(1, 4)))
    probs[2, 25:32, 25:32] = 0.0
    valids = np.ones(probs.shape, bool)
    valids[2, 25:32, 25:32] = False
    tracked = winner(probs, valids)
    assert tracked.first_seen == {1: 1}
    assert [tracked.ids(t) for t in range(4)] == [[], [1], [1], [1]]


def test_refine_blends_each_month_with_the_temporal_mean():
    """A building at 0.9 but 0.45 in month 2: cut alone at 0.5, month 2 misses it; refined,
    0.25 * (3 * 0.9 + 0.45) / 4 + 0.75 * 0.45 = 0.53 >= 0.5 keeps it there."""
    probs = series(4, (5, 5, 12, 12, {0: ON, 1: ON, 2: 0.45, 3: ON}))
    footprint = FootprintSettings(0.5, PostSettings(), 4.0)
    plain = track_aoi(TrackSettings.from_config({"mode": "match"}), probs, None, footprint)
    assert [len(plain.ids(t)) for t in range(4)] == [1, 1, 0, 1]
    refined = TrackSettings.from_config({"mode": "match", "refine": 0.25})
    tracked = track_aoi(refined, probs, None, footprint)
    assert [tracked.ids(t) for t in range(4)] == [[1]] * 4


def test_the_shipped_config_is_the_functions_defaults():
    settings = TrackSettings.from_config(OmegaConf.load(CONF))
    probs = series(4, (5, 5, 12, 12, always(4)), (25, 25, 32, 32, from_month(2, 4)))
    footprint = FootprintSettings(0.4, PostSettings(), 4.0)
    assert track_aoi(settings, probs, None, footprint).first_seen == winner(probs).first_seen
    import inspect

    defaults = {
        k: p.default
        for k, p in inspect.signature(track_winner).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert settings.options == defaults


def test_new_min_area_refuses_a_new_id_to_a_sliver():
    """A 3x3 (9 px) building new in month 2 is a new id; with new_min_area=10 it is not, and the
    stable pass takes it (mean score (2 * 0.05 + 2 * 0.9) / 4 = 0.475 > 0.4) from month 0."""
    probs = series(4, (5, 5, 12, 12, always(4)), (25, 25, 28, 28, from_month(2, 4)))
    assert winner(probs).first_seen == {1: 0, 2: 2}
    assert winner(probs, new_min_area=9).first_seen == {1: 0, 2: 2}  # 9 px is not below 9
    assert winner(probs, new_min_area=10).first_seen == {1: 0, 2: 0}


def test_a_stable_building_touching_a_new_one_is_kept():
    """A (0.9 all along) and B (0.9 from month 2) share a 2-px seam at 0.5: one mask, two seeds,
    so the watershed cuts two footprints that touch along the seam. Touching is not overlapping:
    A stays (stable, month 0) beside B (new in month 2)."""
    b = {0: BG, 1: BG, 2: ON, 3: ON}
    probs = series(4, (10, 10, 20, 20, always(4)), (10, 22, 20, 32, b),
                   (10, 20, 20, 22, always(4, 0.5)))  # fmt: skip
    tracked = winner(probs)
    assert sorted(tracked.first_seen.values()) == [0, 2]
    left, right = sorted(tracked.polygons(3), key=lambda p: p.centroid.x)
    assert left.touches(right) and left.intersection(right).area == 0


def test_calibrate_lets_the_rules_read_an_under_confident_model():
    """Buildings at 0.3, background 0.01, building threshold 0.2 (a model like cpu_best). Plain:
    A's mean score 0.3 is under stable_mean 0.4 and B's rise 0.29 under change_jump 0.5, so
    nothing stands. Calibrated (0.2 -> 0.5): buildings 0.5625, background 0.025; A is stable
    (mean 0.56 > 0.4), B rises by 0.54 > 0.5 and starts in month 2."""
    probs = series(4, (5, 5, 12, 12, always(4, 0.3)), (25, 25, 32, 32, from_month(2, 4, 0.3)))
    probs[probs == np.float32(BG)] = 0.01
    footprint = FootprintSettings(0.2, PostSettings(), 4.0)
    plain = TrackSettings.from_config({"mode": "winner"})
    assert track_aoi(plain, probs, None, footprint).first_seen == {}
    on = TrackSettings.from_config({"mode": "winner", "calibrate": True})
    assert track_aoi(on, probs, None, footprint).first_seen == {1: 0, 2: 2}


def test_calibrate_keeps_what_lies_above_the_threshold():
    probs = np.linspace(0, 1, 101, dtype=np.float32)
    for t in (0.1, 0.25, 0.6):
        out = calibrated(probs, t)
        assert np.all(np.diff(out) > 0) and out[0] == 0 and out[-1] == pytest.approx(1)
        assert np.array_equal(out > 0.5, probs > t)
    match = {"mode": "match"}
    maps = series(3, (5, 5, 12, 12, always(3, 0.3)), (25, 25, 32, 32, from_month(1, 3, 0.22)))
    footprint = FootprintSettings(0.2, PostSettings(), 4.0)
    a = track_aoi(TrackSettings.from_config(match), maps, None, footprint)
    b = track_aoi(TrackSettings.from_config({**match, "calibrate": True}), maps, None, footprint)
    assert a.first_seen == b.first_seen == {1: 0, 2: 1}


def test_calibrate_is_stored_only_when_on():
    assert "calibrate" not in TrackSettings.from_config({"mode": "winner"}).options
    off = TrackSettings.from_config({"mode": "winner", "calibrate": False})
    assert "calibrate" not in off.options
    assert TrackSettings.from_config({"mode": "aggregate", "calibrate": True}).options["calibrate"]
    with pytest.raises(ConfigError, match="calibrate"):
        TrackSettings.from_config({"mode": "winner", "calibrate": "yes"})


def test_month_norm_undoes_darker_first_months():
    """A stands in all 4 months at 0.9, B from month 2, but months 0 and 1 are seen x0.3 (A
    scores 0.27, 0.27, 0.9, 0.9). Plain winner: A's rise 0.63 > 0.5 makes it a change, month 0
    under 0.3, so it "appears" in month 2 with B. Normalised at the 0.9 quantile (in buildings
    in every month: A and B cover > 10 % of the map), every month's level is the median 0.585:
    A scores 0.585 throughout (stable, mean > 0.4), B rises 0.03 -> 0.585 (> 0.5) in month 2."""
    probs = series(4, (5, 5, 25, 25, always(4)), (28, 28, 44, 44, from_month(2, 4)))
    probs[:2] *= 0.3
    assert winner(probs).first_seen == {1: 2, 2: 2}
    settings = TrackSettings.from_config({"mode": "winner", "month_norm": 0.9})
    footprint = FootprintSettings(0.4, PostSettings(), 4.0)
    assert track_aoi(settings, probs, None, footprint).first_seen == {1: 0, 2: 2}


def test_month_normalised_levels_and_bad_quantiles():
    from sn7.inference.temporal import month_normalised

    probs = np.stack([np.full((4, 4), v, np.float32) for v in (0.2, 0.4, 0.4)])
    out = month_normalised(probs, None, 0.9)
    assert np.allclose(out, 0.4)
    with pytest.raises(ConfigError, match="month_norm"):
        TrackSettings.from_config({"mode": "match", "month_norm": 1.5})
