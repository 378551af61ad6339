"""Change map of one AOI: every building coloured by the month it first appears, prediction beside
truth, so one picture shows whether new construction is found in the right month (SCOT's change
term) and whether old buildings wrongly "appear" later (ids lost by the tracker).

Buildings standing in the first month are grey, later months run through a colour ramp, and a
newer building is drawn over an older one. The PNG has an exact pixel size (no tight bounding box):
each panel is the raster scaled by an integer factor to about PANEL_PX, plus fixed margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
from affine import Affine
from matplotlib.patches import Patch
from rasterio import features

from sn7.utils.atomic import atomic_path

if TYPE_CHECKING:  # type only: viz reads TrackedMonths' fields, never calls inference
    from sn7.inference.tracking import TrackedMonths

PANEL_PX = 512  # small rasters are enlarged by an integer factor up to about this
MARGIN, TITLE_PX, LEGEND_PX, DPI = 10, 50, 190, 100
BACKGROUND = (255, 255, 255)
STANDING = (150, 150, 150)  # buildings of the first month


def month_colors(n_months: int) -> np.ndarray:
    """(n_months, 3) uint8: grey for month 0, then a ramp from blue (early) to red (late)."""
    ramp = plt.get_cmap("turbo")(np.linspace(0.1, 0.95, max(n_months - 1, 1)))[:, :3]
    colors = np.vstack([np.asarray(STANDING) / 255, ramp[: n_months - 1]])
    return (colors * 255).round().astype(np.uint8)


def first_seen_raster(tracked: TrackedMonths, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32: the first month of the building covering each pixel (its latest footprint),
    -1 where there is none; later buildings are burnt last, so they lie on top."""
    footprints = tracked.footprints()
    order = sorted(footprints, key=lambda i: (tracked.first_seen[i], i))
    if not order:
        return np.full(shape, -1, np.int32)
    burnt = features.rasterize(
        [(footprints[i], tracked.first_seen[i] + 1) for i in order],
        out_shape=shape,
        transform=Affine.identity(),
        dtype="int32",
    )
    return burnt - 1


def _counts(tracked: TrackedMonths, n_months: int) -> np.ndarray:
    return np.bincount(list(tracked.first_seen.values()), minlength=n_months)[:n_months]


def figure_size(shape: tuple[int, int], n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that `change_map` writes."""
    scale = max(1, PANEL_PX // max(shape))
    width = MARGIN + n_panels * (shape[1] * scale + MARGIN) + LEGEND_PX
    return width, TITLE_PX + shape[0] * scale + MARGIN


def change_map(
    tracked_pred: TrackedMonths,
    tracked_truth: TrackedMonths | None,
    month_names: Sequence[str],
    shape: tuple[int, int],
    path: str | Path,
    title: str = "",
) -> Path:
    """Write the change map PNG of one AOI (prediction, and truth if given) to `path`."""
    n_months = len(month_names)
    for tracked in (tracked_pred, tracked_truth):
        if tracked is not None and len(tracked) != n_months:
            raise ValueError(f"{len(tracked)} tracked months but {n_months} month names")
    colors = month_colors(n_months)
    panels = [("prediction", tracked_pred)]
    if tracked_truth is not None:
        panels.append(("truth", tracked_truth))
    scale = max(1, PANEL_PX // max(shape))
    width, height = figure_size(shape, len(panels))
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for k, (name, tracked) in enumerate(panels):
        first = first_seen_raster(tracked, shape)
        rgb = np.where((first >= 0)[..., None], colors[np.clip(first, 0, None)], BACKGROUND)
        rgb = rgb.astype(np.uint8).repeat(scale, axis=0).repeat(scale, axis=1)
        left = MARGIN + k * (shape[1] * scale + MARGIN)
        ax = fig.add_axes(
            (left / width, MARGIN / height, shape[1] * scale / width, shape[0] * scale / height)
        )
        ax.imshow(rgb, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        n_new = int(_counts(tracked, n_months)[1:].sum())
        ax.set_title(f"{name}: {len(tracked.first_seen)} buildings, {n_new} new", fontsize=9)
    counts = [_counts(tracked, n_months) for _, tracked in panels]
    labels = [
        f"{month}  " + " / ".join(str(c[t]) for c in counts) for t, month in enumerate(month_names)
    ]
    header = "first month  " + " / ".join(name for name, _ in panels)
    fig.legend(
        [Patch(color=np.asarray(c) / 255) for c in colors],
        labels,
        title=header,
        loc="upper left",
        bbox_to_anchor=((width - LEGEND_PX + MARGIN) / width, 1 - TITLE_PX / height),
        frameon=False,
        fontsize=7,
        title_fontsize=8,
    )
    fig.text(
        MARGIN / width,
        1 - 12 / height,
        title or "buildings by month of first appearance",
        fontsize=10,
        va="top",
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")  # no bbox_inches="tight": the size is exact
    plt.close(fig)
    return path
