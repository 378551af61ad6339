"""Pixel metrics over a grid of thresholds, from one pass over the data.

torchmetrics' BinaryPrecisionRecallCurve with fixed thresholds keeps a (T, 2, 2) confusion matrix
per threshold (`confmat[t, target, pred]`); IoU, precision, recall and F1 for every threshold follow
from its counts. Training (val PR curve, best-threshold IoU) and evaluation (full-tile sweep) share
this code, so their numbers mean the same thing. A prediction is positive when p >= threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.classification import BinaryPrecisionRecallCurve

from sn7.constants import IGNORE


def threshold_grid(start: float = 0.05, stop: float = 0.95, step: float = 0.05) -> list[float]:
    n = round((stop - start) / step) + 1
    return [round(start + i * step, 6) for i in range(n)]


def sweep_metric(thresholds: list[float]) -> BinaryPrecisionRecallCurve:
    return BinaryPrecisionRecallCurve(
        thresholds=torch.tensor(thresholds, dtype=torch.float32), ignore_index=IGNORE
    )


def counts_from(metric: BinaryPrecisionRecallCurve) -> np.ndarray:
    """(T, 4) int64 array of TP, FP, FN, TN per threshold, summed over all processes."""
    with metric.sync_context(should_unsync=True):
        confmat = metric.confmat.detach().cpu().numpy().astype(np.int64)
    return np.stack([confmat[:, 1, 1], confmat[:, 0, 1], confmat[:, 1, 0], confmat[:, 0, 0]], 1)


def tile_counts(prob: np.ndarray, mask: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """(T, 4) TP, FP, FN, TN of one probability map against its 0/1/255 mask."""
    metric = sweep_metric(thresholds)
    metric.update(torch.from_numpy(prob).flatten(), torch.from_numpy(mask).flatten().long())
    return counts_from(metric)


def scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """IoU, precision, recall, F1. With nothing predicted and nothing true every score is 1
    (perfect agreement), never a division by zero; otherwise a ratio whose denominator is 0
    (precision with nothing predicted, recall with nothing true) is 0, as are IoU and F1."""
    if tp + fp + fn == 0:
        return {"iou": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "iou": tp / (tp + fp + fn),
        "precision": precision,
        "recall": recall,
        "f1": 2 * tp / (2 * tp + fp + fn),
    }


def sweep_rows(thresholds: list[float], counts: np.ndarray) -> list[dict]:
    """One dict per threshold (counts: (T, >=3) TP, FP, FN[, TN]): threshold, scores, counts."""
    rows = []
    for t, (tp, fp, fn) in zip(thresholds, counts[:, :3].tolist(), strict=True):
        rows.append({"threshold": t, **scores(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn})
    return rows


def best_row(rows: list[dict], key: str = "iou") -> dict:
    """The row with the highest `key`; ties go to the lower threshold."""
    return max(rows, key=lambda r: (r[key], -r["threshold"]))
