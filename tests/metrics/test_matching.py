"""Optimal one-to-one matching (sn7.metrics.matching): thresholds, count then IoU, vs greedy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from shapely.geometry import box

from sn7.metrics.matching import SN7_IOU, SPACENET_IOU, admissible, iou_pairs, optimal_matches

TRUTH = box(0, 0, 10, 10)  # area 100


def matched(preds, truths, min_iou) -> set[tuple[int, int]]:
    return {(int(p), int(t)) for p, t, _ in optimal_matches(iou_pairs(preds, truths), min_iou)}


def test_iou_exactly_at_the_threshold():
    # box(0, 0, 10, 2.5) lies inside TRUTH: IoU = 25 / 100 = 0.25 exactly (no rounding)
    quarter, half = box(0, 0, 10, 2.5), box(0, 0, 10, 5)  # IoU 0.25 and 50 / 100 = 0.5
    np.testing.assert_array_equal(iou_pairs([quarter, half], [TRUTH]), [[0, 0, 0.25], [1, 0, 0.5]])
    assert matched([quarter], [TRUTH], SN7_IOU) == set()  # SN7: IoU > 0.25
    assert matched([box(0, 0, 10, 2.6)], [TRUTH], SN7_IOU) == {(0, 0)}  # 0.26
    assert matched([half], [TRUTH], SPACENET_IOU) == {(0, 0)}  # SpaceNet: IoU >= 0.5
    assert matched([box(0, 0, 10, 4.9)], [TRUTH], SPACENET_IOU) == set()  # 0.49


def test_admissible_rule_switches_at_0_25():
    pairs = np.array([[0, 0, 0.25], [1, 0, 0.3], [2, 0, 0.5], [3, 0, 0.4]])
    assert admissible(pairs, 0.25)[:, 0].tolist() == [1, 2, 3]  # strict
    assert admissible(pairs, 0.5)[:, 0].tolist() == [2]  # inclusive
    assert admissible(pairs, 0.4)[:, 0].tolist() == [2, 3]  # inclusive above 0.25


def test_optimal_beats_greedy():
    """T1 = [-1, 3] x [0, 10] (area 40), T2 = [3, 10] x [0, 10] (70); A = [0, 10] x [0, 10] (100),
    B = [3, 10] x [0, 4] (28). By hand: A-T1 = 30 / (100 + 40 - 30) = 3/11 = 0.273,
    A-T2 = 70 / 100 = 0.7, B-T2 = 28 / 70 = 0.4, B-T1 touch along x = 3 (IoU 0).
    Greedy takes A-T2 (0.7) first and then has nothing left for B: 1 match. The optimal assignment
    takes A-T1 and B-T2: 2 matches (both > 0.25), which is what SN7 scores."""
    t1, t2 = box(-1, 0, 3, 10), box(3, 0, 10, 10)
    a, b = box(0, 0, 10, 10), box(3, 0, 10, 4)
    pairs = iou_pairs([a, b], [t1, t2])
    np.testing.assert_allclose(
        sorted(pairs.tolist()), [[0, 0, 3 / 11], [0, 1, 0.7], [1, 0, 0.0], [1, 1, 0.4]]
    )
    assert matched([a, b], [t1, t2], SN7_IOU) == {(0, 0), (1, 1)}
    assert matched([b, a], [t2, t1], SN7_IOU) == {(1, 1), (0, 0)}  # order does not matter
    # at IoU >= 0.5 only A-T2 is admissible
    assert matched([a, b], [t1, t2], SPACENET_IOU) == {(0, 1)}


def test_equal_counts_are_decided_by_summed_iou():
    # two full assignments: P0-T0 + P1-T1 = 0.9 + 0.3 = 1.2 beats P0-T1 + P1-T0 = 0.5 + 0.6 = 1.1
    pairs = np.array([[0, 0, 0.9], [0, 1, 0.5], [1, 0, 0.6], [1, 1, 0.3]])
    result = optimal_matches(pairs, SN7_IOU)
    assert sorted(map(tuple, result.tolist())) == [(0, 0, 0.9), (1, 1, 0.3)]
    # ... but one more match beats any IoU: P1-T1 at 0.26 instead of 0.3 still gives 2 matches,
    # and with P1-T1 gone (0.2 is not admissible) the best is P0-T1 + P1-T0 (0.5 + 0.6)
    pairs[3, 2] = 0.2
    result = optimal_matches(pairs, SN7_IOU)
    assert sorted(map(tuple, result.tolist())) == [(0, 1, 0.5), (1, 0, 0.6)]


def test_separate_clusters_are_all_matched():
    # cluster 1 is the greedy trap above; cluster 2 (far away) an isolated perfect pair
    t1, t2, a, b = box(-1, 0, 3, 10), box(3, 0, 10, 10), box(0, 0, 10, 10), box(3, 0, 10, 4)
    far = box(100, 100, 110, 110)
    assert matched([a, far, b], [far, t1, t2], SN7_IOU) == {(0, 1), (1, 0), (2, 2)}


def test_no_pairs():
    assert iou_pairs([], [TRUTH]).shape == (0, 3)
    assert iou_pairs([box(20, 20, 30, 30)], [TRUTH]).shape == (0, 3)
    assert optimal_matches(np.zeros((0, 3))).shape == (0, 3)


def _best_by_enumeration(iou: np.ndarray, min_iou: float) -> tuple[int, float]:
    """(most matches, largest IoU sum among those), over every one-to-one assignment."""
    n_p, n_t = iou.shape
    best = (0, 0.0)
    for k in range(1, min(n_p, n_t) + 1):
        for ps in itertools.combinations(range(n_p), k):
            for ts in itertools.permutations(range(n_t), k):
                values = iou[list(ps), list(ts)]
                if (values > min_iou).all():
                    best = max(best, (k, float(values.sum())))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_optimal_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    truths = [box(x, 0, x + 6, 6) for x in rng.uniform(0, 14, size=4)]
    preds = [box(x, y, x + w, y + 6) for x, y, w in rng.uniform((0, -2, 3), (14, 2, 9), (4, 3))]
    pairs = iou_pairs(preds, truths)
    iou = np.zeros((len(preds), len(truths)))
    iou[pairs[:, 0].astype(int), pairs[:, 1].astype(int)] = pairs[:, 2]
    result = optimal_matches(pairs, SN7_IOU)
    assert len(set(result[:, 0])) == len(set(result[:, 1])) == len(result)  # one-to-one
    count, total = _best_by_enumeration(iou, SN7_IOU)
    assert len(result) == count
    assert result[:, 2].sum() == pytest.approx(total)
