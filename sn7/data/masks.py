"""Rasterizing one tile's labels into a mask: 0 background, 1 building, 255 ignore.

Ignore (255) marks pixels that carry no information: alpha == 0 (outside the mosaic) and unusable
data (UDM polygons or UDM_masks rasters). They are excluded from every loss and metric, never
counted as background.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio import features

from sn7.constants import BUILDING, IGNORE
from sn7.data.footprints import Footprints, load_footprints
from sn7.data.layout import ImageFiles
from sn7.data.raster_io import info_of, open_raster, read_raster, read_valid
from sn7.errors import DataError

# What loading the building labels had to do (sn7.data.footprints.Footprints), shown by prepare.
LABEL_REPAIRS = ("n_null", "n_repaired", "n_outside")


@dataclass(frozen=True)
class RasterizeSettings:
    """Everything besides the source files that changes a mask; part of the cache key."""

    alpha_band: int | None = 4
    all_touched: bool = False

    def as_dict(self) -> dict:
        return {"alpha_band": self.alpha_band, "all_touched": self.all_touched}


@dataclass
class TileMask:
    mask: np.ndarray  # (H, W) uint8
    n_buildings: int
    building_frac: float  # building pixels / valid pixels
    valid_frac: float  # valid pixels / all pixels
    label_repairs: dict[str, int] = field(default_factory=dict)  # see LABEL_REPAIRS


def burn(geoms, shape: tuple[int, int], all_touched: bool = False) -> np.ndarray:
    """Rasterize pixel-space polygons to a 0/1 uint8 array of `shape` (H, W)."""
    if len(geoms) == 0:
        return np.zeros(shape, np.uint8)
    # GeoJSON dicts built by GEOS in one call rasterize 2x faster than shapely objects, whose
    # __geo_interface__ rasterio would otherwise walk coordinate by coordinate in Python.
    shapes = json.loads("[" + ",".join(shapely.to_geojson(np.asarray(geoms, dtype=object))) + "]")
    return features.rasterize(
        ((g, 1) for g in shapes),
        out_shape=shape,
        transform=Affine.identity(),
        fill=0,
        dtype=np.uint8,
        all_touched=all_touched,
    )


def valid_pixels(tile: ImageFiles, alpha_band: int | None, src=None) -> np.ndarray:
    """(H, W) bool: True where the image has data (alpha > 0) and no UDM raster flags it."""
    valid = read_valid(tile.image, alpha_band, src=src)
    if tile.udm_raster is not None:
        udm = read_raster(tile.udm_raster, [1])[0]
        if udm.shape != valid.shape:
            raise DataError(
                f"UDM raster is {udm.shape[::-1]} but the image is {valid.shape[::-1]} (w x h)",
                tile.udm_raster,
            )
        valid &= udm == 0
    return valid


def rasterize_tile(tile: ImageFiles, settings: RasterizeSettings) -> TileMask:
    """Build the mask of one tile from its image (size, CRS, alpha) and label files."""
    with open_raster(tile.image) as src:
        info = info_of(src, tile.image)
        valid = valid_pixels(tile, settings.alpha_band, src=src)
    shape = (info.height, info.width)
    buildings: Footprints = load_footprints(tile.labels, tile.label_space, info)
    mask = burn(buildings.geoms, shape, settings.all_touched)
    if tile.udm_vectors is not None:
        udm = load_footprints(tile.udm_vectors, "geo", info, require_overlap=False)
        valid &= burn(udm.geoms, shape, all_touched=True) == 0
    mask[~valid] = IGNORE
    n_valid = int(valid.sum())
    n_building = int((mask == BUILDING).sum())
    return TileMask(
        mask=mask,
        n_buildings=len(buildings.geoms),
        building_frac=n_building / n_valid if n_valid else 0.0,
        valid_frac=n_valid / valid.size,
        label_repairs={k: getattr(buildings, k) for k in LABEL_REPAIRS},
    )
