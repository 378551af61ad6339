"""Prediction gallery: a figure per tile (image | truth | probability | errors) + contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sn7.viz.panels import error_rgb, mask_rgb, prediction_panel, prob_rgb
from sn7.viz.plots import contact_sheet, save_figure, tile_figure

INDEX_NAME = "index.png"  # the contact sheet of every tile drawn


class Gallery:
    """Collects tiles, writes gallery/<stem>.png as it goes and gallery/index.png at the end."""

    def __init__(self, folder: str | Path, thumb: int = 256):
        self.folder = Path(folder)
        self.thumb = thumb
        self.rows: list[np.ndarray] = []
        self.labels: list[str] = []

    def add(
        self,
        stem: str,
        rgb: np.ndarray,
        prob: np.ndarray,
        threshold: float,
        truth=None,
        iou: float | None = None,
    ) -> Path:
        """`iou`: the tile's pixel IoU at `threshold`, as the caller's metrics counted it (the
        gallery shows numbers, it does not measure them)."""
        pred = prob >= threshold
        if truth is not None:
            panels = [rgb, mask_rgb(truth), prob_rgb(prob), error_rgb(pred, truth, rgb)]
            titles = ["image", "truth", "probability", "TP white, FP red, FN cyan"]
            label = stem if iou is None else f"{stem}  IoU {iou:.3f} @ {threshold:.2f}"
        else:
            panels = [rgb, prob_rgb(prob), mask_rgb(pred.astype(np.uint8))]
            titles = ["image", "probability", f"mask (p >= {threshold:.2f})"]
            label = f"{stem}  (no truth found)"
        path = self.folder / f"{stem}.png"
        save_figure(tile_figure(panels, titles, label), path)
        step = max(1, rgb.shape[0] // self.thumb)
        self.rows.append(prediction_panel(rgb, truth, prob, threshold)[::step, ::step])
        self.labels.append(label)
        return path

    def finish(self) -> Path | None:
        if not self.rows:
            return None
        path = self.folder / INDEX_NAME
        save_figure(contact_sheet(self.rows, self.labels), path)
        return path
