"""Pictures of predictions as uint8 RGB arrays: image | truth | probability | errors.

Shared by the TensorBoard panels during training and the prediction gallery, so both show the same
colours: errors panel TP white, FP red, FN cyan, ignore grey.
"""

from __future__ import annotations

import numpy as np

from sn7.constants import BUILDING, IGNORE

TP_COLOR = (255, 255, 255)
FP_COLOR = (230, 40, 40)
FN_COLOR = (0, 200, 230)
IGNORE_COLOR = (90, 90, 90)


def rgb_preview(image: np.ndarray, rgb_channels=(0, 1, 2)) -> np.ndarray:
    """(C, H, W) array -> (H, W, 3) uint8 with a 2-98 percentile stretch per band."""
    bands = [image[min(c, image.shape[0] - 1)].astype(np.float32) for c in rgb_channels]
    out = []
    for band in bands:
        lo, hi = np.percentile(band, (2, 98))
        out.append(np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1))
    return (np.stack(out, axis=-1) * 255).astype(np.uint8)


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[mask == BUILDING] = 255
    out[mask == IGNORE] = IGNORE_COLOR
    return out


def prob_rgb(prob: np.ndarray) -> np.ndarray:
    gray = (np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def error_rgb(pred: np.ndarray, truth: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
    """TP/FP/FN colours of a boolean prediction against a 0/1/255 truth mask, drawn over a dimmed
    copy of `rgb` when given (an overlay), else over black."""
    out = (rgb * 0.35).astype(np.uint8) if rgb is not None else np.zeros((*pred.shape, 3), np.uint8)
    positive = truth == BUILDING
    valid = truth != IGNORE
    out[pred & positive] = TP_COLOR
    out[pred & ~positive & valid] = FP_COLOR
    out[~pred & positive] = FN_COLOR
    out[~valid] = IGNORE_COLOR
    return out


def prediction_panel(
    rgb: np.ndarray, truth: np.ndarray | None, prob: np.ndarray, threshold: float, gap: int = 4
) -> np.ndarray:
    """(H, k*W + gaps, 3) uint8: image | truth | probability | errors (truth panels need truth)."""
    pred = prob >= threshold
    panels = [rgb]
    if truth is not None:
        panels += [mask_rgb(truth), prob_rgb(prob), error_rgb(pred, truth, rgb)]
    else:
        panels += [prob_rgb(prob), mask_rgb(pred.astype(np.uint8))]
    spacer = np.full((rgb.shape[0], gap, 3), 255, np.uint8)
    row = []
    for i, p in enumerate(panels):
        row += [p] if i == 0 else [spacer, p]
    return np.concatenate(row, axis=1)
