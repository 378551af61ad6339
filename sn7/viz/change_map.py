"""Change map of one AOI: every building coloured by the month it first appears, prediction beside
truth, so one picture shows whether new construction is found in the right month (SCOT's change
term) and whether old buildings wrongly "appear" later (ids lost by the tracker).

Buildings standing in the first month are grey, later months run through a colour ramp, and a
newer building is drawn over an older one. `change_errors_map` draws the errors of the change
term instead: new buildings found in their month, missed new ones, and false new ones. The PNG
has an exact pixel size (no tight bounding box): each panel is the raster scaled by an integer
factor to about PANEL_PX, plus fixed margins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


# change_errors_map's classes, drawn in this order (a later class lies on top)
ERROR_CLASSES = (
    ("standing from the first month", (200, 200, 200)),
    ("new, found in its month", (40, 160, 70)),
    ("missed new (truth)", (30, 110, 230)),
    ("false new (prediction)", (220, 40, 40)),
)


def change_errors_raster(
    truth: TrackedMonths,
    tracked: TrackedMonths,
    false_new: Iterable[Iterable],
    missed_new: Iterable[Iterable],
    shape: tuple[int, int],
) -> np.ndarray:
    """(H, W) uint8: 0 background, else 1 + the index of the ERROR_CLASSES class on top there.

    A true building new after month 0 is "found" unless SCOT booked it as a missed new one in its
    month; false and missed new ones are drawn with their latest footprint.
    """
    missed = set().union(*map(set, missed_new))
    false = set().union(*map(set, false_new))
    truth_fp, pred_fp = truth.footprints(), tracked.footprints()
    new = {i for i, t in truth.first_seen.items() if t > 0}
    shapes = (
        [(g, 1) for i, g in truth_fp.items() if i not in new]
        + [(truth_fp[i], 2) for i in new - missed]
        + [(truth_fp[i], 3) for i in missed if i in truth_fp]
        + [(pred_fp[i], 4) for i in false if i in pred_fp]
    )
    if not shapes:
        return np.zeros(shape, np.uint8)
    return features.rasterize(shapes, out_shape=shape, transform=Affine.identity(), dtype="uint8")


def change_errors_map(
    truth: TrackedMonths,
    tracked: TrackedMonths,
    false_new: Sequence[Iterable],
    missed_new: Sequence[Iterable],
    shape: tuple[int, int],
    path: str | Path,
    title: str = "",
) -> Path:
    """Write the PNG of `change_errors_raster` (one panel and a legend with each class's count)."""
    classes = change_errors_raster(truth, tracked, false_new, missed_new, shape)
    palette = np.array([BACKGROUND, *(c for _, c in ERROR_CLASSES)], np.uint8)
    scale = max(1, PANEL_PX // max(shape))
    width, height = figure_size(shape, 1)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes(
        (MARGIN / width, MARGIN / height, shape[1] * scale / width, shape[0] * scale / height)
    )
    ax.imshow(palette[classes].repeat(scale, axis=0).repeat(scale, axis=1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    n_false = sum(len(set(ids)) for ids in false_new)
    n_missed = sum(len(set(ids)) for ids in missed_new)
    n_new = sum(t > 0 for t in truth.first_seen.values())
    counts = [len(truth.first_seen) - n_new, n_new - len(set().union(*map(set, missed_new))),
              n_missed, n_false]  # fmt: skip
    fig.legend(
        [Patch(color=np.asarray(c) / 255) for _, c in ERROR_CLASSES],
        [f"{name}: {n}" for (name, _), n in zip(ERROR_CLASSES, counts, strict=True)],
        loc="upper left",
        bbox_to_anchor=((width - LEGEND_PX + MARGIN) / width, 1 - TITLE_PX / height),
        frameon=False,
        fontsize=7,
    )
    fig.text(MARGIN / width, 1 - 12 / height, title or "change errors", fontsize=10, va="top")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path
