"""Pixel metrics (sn7.metrics.pixel): the one-pass threshold sweep and its score arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sn7.constants import IGNORE
from sn7.metrics.pixel import (
    best_row,
    counts_from,
    scores,
    sweep_metric,
    sweep_rows,
    threshold_grid,
    tile_counts,
)


def test_default_grid_is_19_round_thresholds():
    grid = threshold_grid()
    assert len(grid) == 19
    assert grid == [round(0.05 * k, 2) for k in range(1, 20)]  # 0.3 is 0.3, not 0.30000000000000004
    assert threshold_grid(0.3, 0.5, 0.1) == [0.3, 0.4, 0.5]


def test_scores_on_hand_made_counts():
    s = scores(tp=6, fp=2, fn=4)
    assert s["iou"] == pytest.approx(6 / 12)
    assert s["precision"] == pytest.approx(6 / 8)
    assert s["recall"] == pytest.approx(6 / 10)
    assert s["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        # nothing true, nothing predicted: perfect agreement (documented), not 0/0
        (0, 0, 0, {"iou": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}),
        # nothing true, something predicted: every prediction is wrong
        (0, 5, 0, {"iou": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}),
        # something true, nothing predicted: every building missed
        (0, 0, 7, {"iou": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}),
    ],
)
def test_scores_with_empty_truth_or_prediction(tp, fp, fn, expected):
    assert scores(tp, fp, fn) == expected


def test_f1_and_iou_agree():
    rng = np.random.default_rng(0)
    for tp, fp, fn in rng.integers(0, 1000, size=(50, 3)).tolist():
        s = scores(tp, fp, fn)
        assert s["f1"] == pytest.approx(2 * s["iou"] / (1 + s["iou"]))


def test_sweep_rows_carry_threshold_scores_and_counts():
    counts = np.array([[10, 5, 0, 85], [8, 2, 2, 88], [3, 0, 7, 90]])
    rows = sweep_rows([0.25, 0.5, 0.75], counts)
    assert [r["threshold"] for r in rows] == [0.25, 0.5, 0.75]
    assert rows[1] == {"threshold": 0.5, **scores(8, 2, 2), "tp": 8, "fp": 2, "fn": 2}
    assert rows[0]["recall"] == 1.0 and rows[2]["precision"] == 1.0
    # TN is optional: (T, 3) counts give the same rows
    assert sweep_rows([0.25, 0.5, 0.75], counts[:, :3]) == rows
    with pytest.raises(ValueError):
        sweep_rows([0.25, 0.5], counts)  # one threshold per row of counts


def test_best_row_takes_the_highest_score_and_the_lower_threshold_on_a_tie():
    rows = sweep_rows(
        [0.3, 0.4, 0.5, 0.6],
        np.array([[5, 5, 0], [6, 2, 2], [6, 2, 2], [4, 0, 6]]),
    )
    assert best_row(rows)["threshold"] == 0.4  # 0.4 and 0.5 tie on IoU 0.6
    assert best_row(rows, "precision")["threshold"] == 0.6
    assert best_row(rows, "recall")["threshold"] == 0.3


def test_counts_from_counts_p_at_the_threshold_as_positive_and_skips_ignore():
    metric = sweep_metric([0.25, 0.5, 0.75])
    metric.update(
        torch.tensor([0.25, 0.5, 0.75, 0.9, 0.1, 0.6]), torch.tensor([1, 1, 0, IGNORE, 0, 1])
    )
    #                        TP FP FN TN
    expected = np.array([[3, 1, 0, 1], [2, 1, 1, 1], [0, 1, 3, 1]])
    np.testing.assert_array_equal(counts_from(metric), expected)
    assert counts_from(metric).dtype == np.int64


def test_one_pass_sweep_equals_one_threshold_at_a_time():
    """What `eval.threshold=X` relies on: the row of a sweep equals a run at X alone."""
    rng = np.random.default_rng(1)
    probs = rng.random((3, 40, 50)).astype(np.float32)
    target = (rng.random((3, 40, 50)) < 0.3).astype(np.int64)
    target[:, :5] = IGNORE
    grid = threshold_grid()
    sweep = sweep_metric(grid)
    for p, t in zip(probs, target, strict=True):  # accumulated over several updates
        sweep.update(torch.from_numpy(p).flatten(), torch.from_numpy(t).flatten())
    rows = sweep_rows(grid, counts_from(sweep))
    valid = target != IGNORE
    for t, row in zip(grid, rows, strict=True):
        single = sweep_metric([t])
        single.update(torch.from_numpy(probs).flatten(), torch.from_numpy(target).flatten())
        assert sweep_rows([t], counts_from(single))[0] == row
        pred = probs >= np.float32(t)
        tp = int((pred & (target == 1) & valid).sum())
        fp = int((pred & (target == 0) & valid).sum())
        fn = int((~pred & (target == 1) & valid).sum())
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)


def test_tile_counts_of_one_probability_map():
    prob = np.array([[0.9, 0.2], [0.6, 0.1]], np.float32)
    mask = np.array([[1, 0], [IGNORE, 1]], np.uint8)
    #                                      TP FP FN TN: the ignored 0.6 counts nowhere
    np.testing.assert_array_equal(tile_counts(prob, mask, [0.5]), [[1, 0, 1, 1]])
