"""The pictures evaluate and predict draw while months stream by: gallery tiles (image | truth |
probability | errors) and one change map per AOI (buildings coloured by the month they appear)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sn7.inference.tracking import TrackedMonths
from sn7.viz.change_map import change_map
from sn7.viz.gallery import Gallery
from sn7.viz.panels import rgb_preview


class Pictures:
    """`n_gallery` tiles into out_dir/gallery (None: every tile), change maps into
    out_dir/change_maps."""

    def __init__(self, out_dir: Path, rgb_channels: Sequence[int], n_gallery: int | None = None):
        self.gallery = Gallery(Path(out_dir) / "gallery")
        self.change_dir = Path(out_dir) / "change_maps"
        self.rgb_channels = rgb_channels
        self.n_gallery = n_gallery
        self.n_drawn = 0
        self.change_maps: list[Path] = []

    def add_month(
        self,
        stem: str,
        pixels: np.ndarray,
        prob: np.ndarray,
        threshold: float,
        truth: np.ndarray | None = None,
        iou: float | None = None,
    ) -> None:
        if self.n_gallery is not None and self.n_drawn >= self.n_gallery:
            return
        rgb = rgb_preview(pixels, self.rgb_channels)
        self.gallery.add(stem, rgb, prob, threshold, truth, iou)
        self.n_drawn += 1

    def add_aoi(
        self,
        name: str,
        tracked: TrackedMonths,
        truth: TrackedMonths | None,
        month_names: Sequence[str],
        shape: tuple[int, int],
    ) -> Path | None:
        """The AOI's change map (prediction, and truth beside it when given); none for one month."""
        if len(tracked) < 2:
            return None
        path = change_map(tracked, truth, month_names, shape, self.change_dir / f"{name}.png",
                          title=name)  # fmt: skip
        self.change_maps.append(path)
        return path

    def finish(self) -> None:
        self.gallery.finish()
