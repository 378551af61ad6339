"""Monthly label series of a data root: which AOIs have labels_match files, and their pixel grid.

Two kinds of root hold them. An SN7 root (<root>/train/<AOI>/images/*.tif + labels_match/) gives
the grid from an image; a label-only root (<root>/<AOI>/labels_match/ + grid.json, as
../shared/sn7_label_series) gives it in grid.json: {"crs", "width", "height", "transform": six
affine numbers a, b, c, d, e, f}. The series harness needs only the labels and the grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from sn7.data.layout import IMAGE_DIRS, date_of
from sn7.data.raster_io import RasterInfo, raster_info
from sn7.errors import DataError

LABEL_DIR = "labels_match"
SUFFIX = "_Buildings.geojson"
GRID_FILE = "grid.json"


@dataclass(frozen=True)
class LabelMonth:
    stem: str  # global_monthly_YYYY_MM_mosaic_<AOI>
    date: str  # YYYY-MM
    path: Path


@dataclass(frozen=True)
class LabelSeries:
    """One AOI's months in date order, with the grid its labels are rasterised on."""

    aoi: str
    info: RasterInfo
    months: tuple[LabelMonth, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.info.height, self.info.width

    def missing_months(self) -> list[str]:
        """Calendar months between the first and the last that have no labels (the dataset's
        gaps): the tracker sees the series without them, as it would see the images."""
        have = {m.date for m in self.months}
        (y0, m0), (y1, m1) = (map(int, d.split("-")) for d in (self.months[0].date,
                                                               self.months[-1].date))  # fmt: skip
        every = [f"{k // 12:04d}-{k % 12 + 1:02d}" for k in range(y0 * 12 + m0 - 1, y1 * 12 + m1)]
        return [d for d in every if d not in have]


def grid_info(path: str | Path) -> RasterInfo:
    """The pixel grid written in a grid.json, as the RasterInfo labels are projected with."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if len(doc["transform"]) < 6:
            raise ValueError("transform needs six numbers a, b, c, d, e, f")
        transform = Affine(*(float(v) for v in doc["transform"][:6]))
        width, height = int(doc["width"]), int(doc["height"])
        crs = CRS.from_user_input(doc["crs"])
    except (OSError, ValueError, TypeError, KeyError, CRSError) as exc:
        raise DataError(
            f"not a usable grid (needs crs, width, height, transform of six numbers): {exc!r}",
            path,
        ) from exc
    if width <= 0 or height <= 0:
        raise DataError(f"grid size {width}x{height} must be positive", path)
    return RasterInfo(path, width, height, 0, "", crs, transform, {})


def _grid_of(aoi_dir: Path) -> RasterInfo:
    if (aoi_dir / GRID_FILE).is_file():
        return grid_info(aoi_dir / GRID_FILE)
    for image_dir in IMAGE_DIRS:
        images = sorted((aoi_dir / image_dir).glob("*.tif"))
        if images:
            return raster_info(images[0])
    raise DataError(f"no {GRID_FILE} and no images/*.tif to take the pixel grid from", aoi_dir)


def _months(label_dir: Path) -> tuple[LabelMonth, ...]:
    months = []
    for path in sorted(label_dir.glob(f"*{SUFFIX}")):
        stem = path.name[: -len(SUFFIX)]
        date = date_of(stem)
        if not date:
            raise DataError("file name carries no global_monthly_YYYY_MM date", path)
        months.append(LabelMonth(stem, date, path))
    return tuple(sorted(months, key=lambda m: m.date))


def discover_label_series(root: str | Path) -> list[LabelSeries]:
    """Every AOI of `root` (or `root`/train) with monthly labels_match files, sorted by name."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("data root does not exist (set data.root=...)", root)
    for base in (root / "train", root):
        folders = sorted(p for p in base.glob(f"*/{LABEL_DIR}") if any(p.glob(f"*{SUFFIX}")))
        if folders:
            return [LabelSeries(f.parent.name, _grid_of(f.parent), _months(f)) for f in folders]
    raise DataError(
        f"no AOI folder with monthly {LABEL_DIR}/*{SUFFIX} files (looked in <root>/train/<AOI>/ "
        "and <root>/<AOI>/); the series harness needs SN7's persistent building ids",
        root,
    )
