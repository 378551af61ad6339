"""SCOT (sn7.metrics.scot) on hand-made time series of squares; every expectation is worked out
by hand from the definition (module docstring) in the comments beside it.

Building k is the 10 x 10 square at x = 20 k (squares never touch); a prediction on building k is
the same square, so it matches with IoU 1. Truth ids are "g<k>", prediction ids "p<k>" (or
others, to make a tracker swap ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from sn7.data.footprints import load_footprints
from sn7.data.raster_io import raster_info
from sn7.metrics.matching import iou_pairs, optimal_matches
from sn7.metrics.scot import ScotAccumulator, combine, scot_aoi, scot_mean


def square(k: int):
    return box(20 * k, 0, 20 * k + 10, 10)


def month(**on) -> tuple[list[str], list]:
    """month(g1=1, g2=2): ids g1, g2 on buildings 1 and 2."""
    return list(on), [square(k) for k in on.values()]


def test_perfect_tracking_and_change_score_one():
    # g1, g2 from the first month; g3 appears in month 2, g4 in month 3; all found on time.
    truth = [month(g1=1, g2=2), month(g1=1, g2=2, g3=3), month(g1=1, g2=2, g3=3, g4=4)]
    pred = [month(a=1, b=2), month(a=1, b=2, c=3), month(a=1, b=2, c=3, d=4)]
    r = scot_aoi(truth, pred)
    # tracking: 2 + 3 + 4 = 9 matches, no fp/fn, no mismatch -> 9 / 9 = 1
    assert (r.tp, r.fp, r.fn, r.mismatches) == (9, 0, 0, 0)
    # change: g3 / c (month 2) and g4 / d (month 3) are new truths matched by new preds -> 2 TP
    assert (r.change_tp, r.change_fp, r.change_fn) == (2, 0, 0)
    assert (r.track_score, r.change_score, r.scot) == (1.0, 1.0, 1.0)
    assert r.n_months == 3
    assert r.month_f1 == (1.0, 1.0, 1.0)


def test_an_id_switch_is_a_mismatch():
    # months 1-3: g1 and g2; g3 appears in month 2. The tracker swaps p1 and p2 in month 2 and
    # keeps the swapped ids in month 3.
    truth = [month(g1=1, g2=2), month(g1=1, g2=2, g3=3), month(g1=1, g2=2, g3=3)]
    pred = [month(p1=1, p2=2), month(p2=1, p1=2, p3=3), month(p2=1, p1=2, p3=3)]
    r = scot_aoi(truth, pred)
    # matches: 2 + 3 + 3 = 8, no fp/fn.
    # month 2: (g1, p2): g1 last matched p1 -> mismatch; (g2, p1): g2 last matched p2 -> mismatch.
    # month 3: (g1, p2), (g2, p1) agree with their most recent match (month 2): no mismatch.
    # track: TP 8 - 2 = 6, FP 0 + 2, FN 0 + 2 -> 6 / (6 + (2 + 2) / 2) = 6 / 8 = 0.75
    assert (r.tp, r.fp, r.fn, r.mismatches) == (8, 0, 0, 2)
    assert (r.track_tp, r.track_fp, r.track_fn) == (6, 2, 2)
    assert r.track_score == 0.75
    # change: g3 / p3 new and new in month 2 -> TP 1; the swap creates no new id -> 1.0
    assert (r.change_tp, r.change_fp, r.change_fn, r.change_score) == (1, 0, 0, 1.0)
    # SCOT = (1 + 4) * 1 * 0.75 / (4 * 1 + 0.75) = 3.75 / 4.75 = 15 / 19
    assert r.scot == pytest.approx(15 / 19)
    assert combine(1.0, 0.75) == pytest.approx(15 / 19)


def test_a_new_prediction_id_on_a_tracked_building_is_a_mismatch():
    # g1 is matched by p1 in month 1 and by p9 in month 2: g1's most recent match was p1 -> 1
    # mismatch. track: TP 2 - 1 = 1, FP 1, FN 1 -> 1 / (1 + 1) = 0.5.
    # change (month 2): (g1, p9) is an old truth with a new prediction -> change FP 1 -> 0.
    r = scot_aoi([month(g1=1), month(g1=1)], [month(p1=1), month(p9=1)])
    assert (r.mismatches, r.track_score) == (1, 0.5)
    assert (r.change_tp, r.change_fp, r.change_fn, r.change_score, r.scot) == (0, 1, 0, 0.0, 0.0)


def test_mismatch_looks_at_the_most_recent_match_not_the_previous_month():
    # g1 matched by p1 in month 1, missed in month 2, matched by p1 again in month 3: no mismatch.
    # track: TP 2, FP 0, FN 1 -> 2 / (2 + 0.5) = 0.8. No new id after month 1: change 0 -> SCOT 0.
    r = scot_aoi([month(g1=1)] * 3, [month(p1=1), month(), month(p1=1)])
    assert (r.tp, r.fp, r.fn, r.mismatches) == (2, 0, 1, 0)
    assert r.track_score == 0.8
    assert (r.change_tp, r.change_fp, r.change_fn) == (0, 0, 0)
    assert (r.change_score, r.scot) == (0.0, 0.0)  # 0 / 0 is scored 0, as the organisers do
    assert r.month_f1 == (1.0, 0.0, 1.0)


def test_found_late_is_a_change_fn_and_then_a_change_fp():
    # g1 from month 1 (found throughout); g2 and g3 appear in month 2. g3 is found in month 2 (on
    # time); g2 only in month 3 (one month late).
    truth = [month(g1=1), month(g1=1, g2=2, g3=3), month(g1=1, g2=2, g3=3)]
    pred = [month(p1=1), month(p1=1, p3=3), month(p1=1, p2=2, p3=3)]
    r = scot_aoi(truth, pred)
    # change, month 2: (g3, p3) new/new -> TP; g2 new and unmatched -> FN.
    # change, month 3: (g2, p2): g2 is not new any more (month 2 had it), p2 is -> FP.
    # So a building found one month late costs one change FN and one change FP.
    # change = 1 / (1 + (1 + 1) / 2) = 0.5
    assert (r.change_tp, r.change_fp, r.change_fn, r.change_score) == (1, 1, 1, 0.5)
    # tracking: matches 1 + 2 + 3 = 6, FN 1 (g2 in month 2), no mismatch -> 6 / 6.5 = 12 / 13
    assert (r.tp, r.fp, r.fn, r.mismatches) == (6, 0, 1, 0)
    assert r.track_score == pytest.approx(12 / 13)
    # SCOT = 5 * 0.5 * (12/13) / (4 * 0.5 + 12/13) = (30/13) / (38/13) = 15 / 19
    assert r.scot == pytest.approx(15 / 19)


def test_a_building_of_the_first_month_is_never_a_change():
    # g1 exists from month 1 and is never found: tracking FN in each month, but no change FN.
    r = scot_aoi([month(g1=1)] * 3, [month()] * 3)
    assert (r.tp, r.fp, r.fn) == (0, 0, 3)
    assert (r.change_tp, r.change_fp, r.change_fn) == (0, 0, 0)
    # found for the first time in month 2 (new id p1 on the old g1): a change FP, never a TP
    r = scot_aoi([month(g1=1)] * 3, [month(), month(p1=1), month(p1=1)])
    assert (r.change_tp, r.change_fp, r.change_fn) == (0, 1, 0)
    # found from month 1: no change count at all
    r = scot_aoi([month(g1=1)] * 3, [month(p1=1)] * 3)
    assert (r.change_tp, r.change_fp, r.change_fn) == (0, 0, 0)


def test_unmatched_new_predictions_are_change_fps_only_after_the_first_month():
    # p7 on empty ground (building 7 has no truth) from month 1: a tracking FP each month, not a
    # change FP. p8 on empty ground from month 2: change FP once (month 2; in month 3 it is old).
    # g1 / p1 matched throughout; g2 appears in month 3 and is found -> change TP.
    truth = [month(g1=1), month(g1=1), month(g1=1, g2=2)]
    pred = [month(p1=1, p7=7), month(p1=1, p7=7, p8=8), month(p1=1, p2=2, p7=7, p8=8)]
    r = scot_aoi(truth, pred)
    # tracking: TP 1 + 1 + 2 = 4, FP 1 + 2 + 2 = 5 -> 4 / (4 + 2.5) = 8 / 13
    assert (r.tp, r.fp, r.fn, r.mismatches) == (4, 5, 0, 0)
    assert r.track_score == pytest.approx(8 / 13)
    # change: TP 1 (g2 / p2), FP 1 (p8 in month 2) -> 1 / 1.5 = 2 / 3
    assert (r.change_tp, r.change_fp, r.change_fn) == (1, 1, 0)
    assert r.change_score == pytest.approx(2 / 3)
    # month F1: 2 * 1 / (2 + 1) = 2/3, 2 / (2 + 2) = 1/2, 4 / (4 + 2) = 2/3
    assert r.month_f1 == pytest.approx((2 / 3, 1 / 2, 2 / 3))


def test_iou_exactly_0_25_does_not_match():
    truth = [(["g"], [box(0, 0, 10, 10)])]
    # IoU = 25 / 100 = 0.25 exactly: no match -> 1 FP, 1 FN
    r = scot_aoi(truth, [(["p"], [box(0, 0, 10, 2.5)])])
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)
    # IoU = 26 / 100 = 0.26: a match
    r = scot_aoi(truth, [(["p"], [box(0, 0, 10, 2.6)])])
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)


def test_accumulator_scores_month_by_month():
    acc = ScotAccumulator()
    assert acc.add_month(*month(g1=1), *month(p1=1)) == 1.0
    # month 2: g1 / p1, g2 missed: F1 = 2 * 1 / (2 + 0 + 1) = 2/3
    assert acc.add_month(*month(g1=1, g2=2), *month(p1=1)) == pytest.approx(2 / 3)
    r = acc.result()
    assert (r.n_months, r.tp, r.fn, r.change_fn) == (2, 2, 1, 1)
    assert r.as_dict()["month_f1"] == [1.0, pytest.approx(2 / 3)]


def test_empty_aoi_scores_zero():
    r = scot_aoi([month(), month()], [month(), month()])
    assert (r.track_score, r.change_score, r.scot) == (0.0, 0.0, 0.0)
    assert r.month_f1 == (1.0, 1.0)  # nothing true, nothing predicted: perfect month


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="2 months of truth but 1 of predictions"):
        scot_aoi([month(), month()], [month()])
    with pytest.raises(ValueError, match="truth id 'g' appears twice"):
        scot_aoi([(["g", "g"], [square(1), square(2)])], [month()])
    with pytest.raises(ValueError, match="1 prediction ids for 2 prediction footprints"):
        scot_aoi([month()], [(["p"], [square(1), square(2)])])


def test_mean_over_aois():
    perfect = scot_aoi([month(g1=1), month(g1=1, g2=2)], [month(p1=1), month(p1=1, p2=2)])
    late = scot_aoi([month(g1=1), month(g1=1, g2=2)], [month(p1=1), month(p1=1)])
    # late: change TP 0, FN 1 -> 0 -> SCOT 0; track TP 2, FN 1 -> 2 / 2.5 = 0.8
    assert (late.scot, late.track_score) == (0.0, 0.8)
    mean = scot_mean({"b": late, "a": perfect})
    assert mean["scot"] == 0.5  # (1 + 0) / 2
    assert mean["track_score"] == pytest.approx(0.9)  # (1 + 0.8) / 2
    assert mean["change_score"] == 0.5
    assert mean["n_aois"] == 2
    assert mean["per_aoi"] == {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="at least one AOI"):
        scot_mean({})


# --- the real sample: truth against itself ----------------------------------------------------


def real_months(aoi: Path) -> list[tuple[list, list]]:
    months = []
    for labels in sorted((aoi / "labels_match_pix").glob("*_Buildings.geojson")):
        image = aoi / "images" / labels.name.replace("_Buildings.geojson", ".tif")
        found = load_footprints(labels, "pixel", raster_info(image), with_ids=True)
        months.append((found.ids, found.geoms))
    return months


def test_real_truth_against_itself(shared_sample):
    months = real_months(shared_sample / "train" / "L15-0357E-1223N_1429_3296_13")
    assert len(months) == 4
    r = scot_aoi(months, months)
    assert (r.scot, r.track_score, r.change_score) == (1.0, 1.0, 1.0)
    assert r.mismatches == r.fp == r.fn == r.change_fp == r.change_fn == 0

    # The same footprints with ids renumbered every month ("<month>-<id>"): every prediction id
    # is new each month. Expected counts from the id sets alone: after month 1, a truth id that
    # was in an earlier month is a mismatch (its earlier match had another prediction id) and a
    # change FP (old truth, new prediction); a truth id new that month is a change TP.
    renumbered = [([f"{m}-{i}" for i in ids], geoms) for m, (ids, geoms) in enumerate(months)]
    seen, old, new = set(months[0][0]), 0, 0
    for ids, _ in months[1:]:
        old += len(set(ids) & seen)
        new += len(set(ids) - seen)
        seen |= set(ids)
    n = sum(len(ids) for ids, _ in months)
    r = scot_aoi(months, renumbered)
    assert (r.tp, r.fp, r.fn, r.mismatches) == (n, 0, 0, old)
    assert (r.change_tp, r.change_fp, r.change_fn) == (new, old, 0)
    assert r.track_score == pytest.approx((n - old) / (n - old + old))
    assert r.change_score == pytest.approx(new / (new + old / 2))
    assert 0 < r.change_score < r.track_score < 1


# --- the streaming bookkeeping against the definition, on random series -----------------------


def _by_definition(truth, pred) -> tuple[int, int, int, int]:
    """(mismatches, change TP, FP, FN), keeping every month's matches and scanning back through
    them, as the definition reads (no running state)."""
    history = []  # per month: list of (truth id, pred id) matches
    for (t_ids, t_geoms), (p_ids, p_geoms) in zip(truth, pred, strict=True):
        m = optimal_matches(iou_pairs(p_geoms, t_geoms))
        history.append([(t_ids[int(t)], p_ids[int(p)]) for p, t, _ in m])
    mm = 0
    for i, pairs in enumerate(history):
        earlier = [pair for month_pairs in history[:i] for pair in month_pairs]  # oldest first
        for g, p in pairs:
            last_p = [q for h, q in earlier if h == g][-1:]
            last_g = [h for h, q in earlier if q == p][-1:]
            mm += last_p not in ([], [p]) or last_g not in ([], [g])
    ctp = cfp = cfn = 0
    for i in range(1, len(truth)):
        old_g = {g for ids, _ in truth[:i] for g in ids}
        old_p = {p for ids, _ in pred[:i] for p in ids}
        matched_g = {g for g, _ in history[i]}
        matched_p = {p for _, p in history[i]}
        for g, p in history[i]:
            ctp += g not in old_g and p not in old_p
            cfp += p not in old_p and g in old_g
            cfn += g not in old_g and p in old_p
        cfp += len(set(pred[i][0]) - matched_p - old_p)
        cfn += len(set(truth[i][0]) - matched_g - old_g)
    return mm, ctp, cfp, cfn


@pytest.mark.parametrize("seed", range(4))
def test_accumulator_equals_the_definition_on_random_series(seed):
    rng = np.random.default_rng(seed)
    n_sites, n_months = 30, 6
    born = rng.integers(0, n_months, n_sites)  # month each building appears
    gone = born + rng.integers(1, n_months + 1, n_sites)  # some disappear again
    pred_id = {k: f"p{k}" for k in range(n_sites)}
    truth, pred = [], []
    for m in range(n_months):
        sites = [k for k in range(n_sites) if born[k] <= m < gone[k]]
        truth.append(([f"g{k}" for k in sites], [square(k) for k in sites]))
        for k in sites:  # the tracker sometimes starts a new id or swaps two buildings' ids
            if rng.random() < 0.1:
                pred_id[k] = f"p{k}-{m}"
        if rng.random() < 0.5:
            a, b = rng.choice(n_sites, 2, replace=False)
            pred_id[a], pred_id[b] = pred_id[b], pred_id[a]
        found = [k for k in sites if rng.random() < 0.8]
        ghosts = [n_sites + int(g) for g in rng.choice(5, int(rng.integers(0, 3)), replace=False)]
        pred.append(
            (
                [pred_id[k] for k in found] + [f"ghost{g}" for g in ghosts],
                [square(k) for k in found] + [square(g) for g in ghosts],
            )
        )
    r = scot_aoi(truth, pred)
    assert (r.mismatches, r.change_tp, r.change_fp, r.change_fn) == _by_definition(truth, pred)
    assert r.mismatches > 0 and r.change_tp > 0 and r.change_fp > 0 and r.change_fn > 0


def test_change_counts_and_ids_per_month():
    # g2 appears in month 2 and is found one month late (p2 new in month 3 on an old truth); p9 is
    # a new prediction on nothing in month 2. Month 2: TP 0, FP 1 (p9), FN 1 (g2); month 3: FP 1.
    truth = [month(g1=1), month(g1=1, g2=2), month(g1=1, g2=2)]
    pred = [month(p1=1), month(p1=1, p9=5), month(p1=1, p2=2)]
    acc = ScotAccumulator()
    for (t_ids, t_geoms), (p_ids, p_geoms) in zip(truth, pred, strict=True):
        acc.add_month(t_ids, t_geoms, p_ids, p_geoms)
    r = acc.result()
    assert r.month_change_tp == (0, 0, 0)
    assert r.month_change_fp == (0, 1, 1)
    assert r.month_change_fn == (0, 1, 0)
    assert (sum(r.month_change_fp), sum(r.month_change_fn)) == (r.change_fp, r.change_fn)
    assert acc.false_new == [frozenset(), {"p9"}, {"p2"}]
    assert acc.missed_new == [frozenset(), {"g2"}, frozenset()]
    assert r.as_dict()["month_change_fp"] == [0, 1, 1]
