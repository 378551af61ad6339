"""Building metrics (sn7.metrics.buildings): optimal one-to-one matching by polygon IoU, counted at
the SpaceNet rule (IoU >= 0.5) and the SN7 rule (IoU > 0.25) side by side."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from shapely.geometry import Polygon, box

from sn7.metrics.buildings import BuildingCounts, match_buildings
from sn7.metrics.matching import iou_pairs

TRUTH = box(0, 0, 10, 10)  # area 100


def counts(preds, truths, iou_match=0.5) -> tuple[int, int, int, int]:
    """(tp, fp, fn) at iou_match and tp at the SN7 rule."""
    c = match_buildings(preds, truths, iou_match)
    assert (c.fp_sn7, c.fn_sn7) == (len(preds) - c.tp_sn7, len(truths) - c.tp_sn7)
    return c.tp, c.fp, c.fn, c.tp_sn7


def test_perfect_prediction_scores_one():
    truths = [box(20 * i, 0, 20 * i + 8, 6) for i in range(5)]
    result = match_buildings(list(truths), truths)
    assert (result.tp, result.fp, result.fn, result.tp_sn7) == (5, 0, 0, 5)
    assert result.as_dict()["f1"] == result.as_dict()["f1_sn7"] == 1.0


def test_two_predictions_over_one_truth_are_one_tp_and_one_fp():
    preds = [box(0, 0, 10, 10), box(0, 0, 10, 9)]  # IoU 1.0 and 0.9
    assert counts(preds, [TRUTH]) == (1, 1, 0, 1)
    assert counts(preds[::-1], [TRUTH]) == (1, 1, 0, 1)


def test_one_prediction_over_two_truths_is_one_tp_and_one_fn():
    truths = [box(0, 0, 10, 10), box(10, 0, 12, 10)]  # side by side
    assert counts([box(0, 0, 12, 10)], truths) == (1, 0, 1, 1)


@pytest.mark.parametrize(
    ("pred", "iou", "expected"),
    [
        (box(0, 0, 10, 5), 0.5, (1, 0, 0, 1)),  # exactly 0.5 matches (IoU >= 0.5)
        (box(0, 0, 10, 4.9), 0.49, (0, 1, 1, 1)),  # below 0.5: FP + FN, yet a SCOT match
        (box(0, 0, 10, 2.6), 0.26, (0, 1, 1, 1)),
        (box(0, 0, 10, 2.5), 0.25, (0, 1, 1, 0)),  # SCOT needs IoU > 0.25
        (box(5, 5, 15, 15), 25 / 175, (0, 1, 1, 0)),
        (box(10, 0, 20, 10), 0.0, (0, 1, 1, 0)),  # touching along an edge is no overlap
    ],
)
def test_iou_boundaries(pred, iou, expected):
    pairs = iou_pairs([pred], [TRUTH])
    if iou:
        assert pairs[:, 2] == pytest.approx([iou])
    assert counts([pred], [TRUTH]) == expected


def test_matches_at_iou_0_25_are_one_to_one_too():
    # two predictions each overlapping the truth at IoU 0.3: one SCOT match, not two
    preds = [box(0, 0, 10, 3), box(0, 7, 10, 10)]
    assert counts(preds, [TRUTH]) == (0, 2, 1, 1)


def test_assignment_is_optimal_not_greedy():
    """A greedy matcher takes A's best pair (T2, IoU 0.7) first and leaves nothing for B. The
    optimal SN7 assignment is A-T1 (30/110 = 0.27) + B-T2 (28/70 = 0.4): 2 matches, no FP/FN.
    At IoU >= 0.5 only A-T2 qualifies: 1 TP, B an FP, T1 an FN."""
    t1, t2 = box(-1, 0, 3, 10), box(3, 0, 10, 10)
    a, b = box(0, 0, 10, 10), box(3, 0, 10, 4)
    np.testing.assert_allclose(
        sorted(iou_pairs([a, b], [t1, t2]).tolist()),
        [[0, 0, 30 / 110], [0, 1, 0.7], [1, 0, 0.0], [1, 1, 0.4]],  # B touches T1: IoU 0
    )
    assert counts([a, b], [t1, t2]) == (1, 1, 1, 2)
    assert counts([b, a], [t2, t1]) == (1, 1, 1, 2)
    d = match_buildings([a, b], [t1, t2]).as_dict()
    assert (d["f1"], d["f1_sn7"]) == (pytest.approx(0.5), 1.0)  # 2*1 / (2*1 + 1 + 1)


def test_iou_of_non_rectangular_polygons():
    ell = Polygon([(0, 0), (10, 0), (10, 5), (5, 5), (5, 10), (0, 10)])  # area 75
    pairs = iou_pairs([ell], [TRUTH])
    np.testing.assert_allclose(pairs, [[0, 0, 0.75]])


@pytest.mark.parametrize(
    ("n_preds", "n_truths", "expected"),
    [
        (0, 0, {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}),
        (0, 3, {"tp": 0, "fp": 0, "fn": 3, "precision": 0.0, "recall": 0.0, "f1": 0.0}),
        (2, 0, {"tp": 0, "fp": 2, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}),
    ],
)
def test_empty_truth_or_prediction(n_preds, n_truths, expected):
    preds = [box(20 * i, 0, 20 * i + 5, 5) for i in range(n_preds)]
    truths = [box(20 * i, 50, 20 * i + 5, 55) for i in range(n_truths)]
    assert iou_pairs(preds, truths).shape == (0, 3)
    result = match_buildings(preds, truths).as_dict()
    assert {k: result[k] for k in expected} == expected
    assert {f"{k}_sn7": result[f"{k}_sn7"] for k in expected} == {
        f"{k}_sn7": v for k, v in expected.items()
    }


def test_counts_add_up_over_tiles():
    total = BuildingCounts()
    total += BuildingCounts(tp=3, fp=1, fn=2, tp_sn7=4, fp_sn7=0, fn_sn7=1)
    total += BuildingCounts(tp=1, fp=0, fn=1, tp_sn7=1, fp_sn7=0, fn_sn7=1)
    assert total == BuildingCounts(tp=4, fp=1, fn=3, tp_sn7=5, fp_sn7=0, fn_sn7=2)
    d = total.as_dict()
    assert set(d) == {
        *("tp", "fp", "fn", "precision", "recall", "f1"),
        *("tp_sn7", "fp_sn7", "fn_sn7", "precision_sn7", "recall_sn7", "f1_sn7"),
    }
    assert d["precision"] == pytest.approx(4 / 5)
    assert d["recall"] == pytest.approx(4 / 7)
    assert d["f1"] == pytest.approx(8 / 12)
    assert (d["precision_sn7"], d["recall_sn7"]) == (1.0, pytest.approx(5 / 7))
    assert d["f1_sn7"] == pytest.approx(10 / 12)  # 2*5 / (2*5 + 0 + 2)


def _brute_force(preds, truths, min_iou, strict):
    """Matches of one assignment over the whole IoU matrix (every pair, no spatial index, no
    split into components), rewarding 100 + IoU per admissible pair as the SN7 scorer does."""
    iou = np.zeros((len(preds), len(truths)))
    for (i, p), (j, t) in itertools.product(enumerate(preds), enumerate(truths)):
        union = p.union(t).area
        iou[i, j] = p.intersection(t).area / union if union else 0.0
    allowed = iou > min_iou if strict else iou >= min_iou
    rows, cols = linear_sum_assignment(np.where(allowed, 100 + iou, 0), maximize=True)
    return int(allowed[rows, cols].sum())


def test_spatial_index_matching_equals_brute_force():
    rng = np.random.default_rng(7)
    truths, preds = [], []
    for cell in range(60):
        x, y = (cell % 10) * 12.0, (cell // 10) * 12.0
        truths.append(box(x, y, x + 8, y + 8))
        for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 predictions per building
            dx, dy, grow = rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(0.6, 1.4)
            preds.append(box(x + dx, y + dy, x + dx + 8 * grow, y + dy + 8 * grow))
    result = match_buildings(preds, truths)
    assert result.tp == _brute_force(preds, truths, 0.5, strict=False)
    assert result.tp_sn7 == _brute_force(preds, truths, 0.25, strict=True)
    assert (result.fp, result.fn) == (len(preds) - result.tp, len(truths) - result.tp)
    assert 0 < result.tp < result.tp_sn7  # the random cases cover both rules
