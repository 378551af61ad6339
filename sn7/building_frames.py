"""Buildings as a GeoDataFrame in map coordinates: what predict writes per month as GeoJSON (ids,
first month, area, mean probability), for whole tiles and windowed scenes alike."""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np

from sn7.data.layout import date_of
from sn7.data.vector_io import apply_affine, area_m2
from sn7.errors import DataError
from sn7.inference.vectorize import mean_inside

log = logging.getLogger("sn7.predict")


def month_label(stem: str, index: int) -> str:
    """YYYY_MM of an SN7 mosaic, else the month's position in its group."""
    date = date_of(stem)
    return date.replace("-", "_") if date else f"month_{index}"


def buildings_frame(
    polygons, ids, prob, info, out_crs: str, first_seen: list[str], is_new: list[bool],
    means: np.ndarray | None = None,
) -> gpd.GeoDataFrame:  # fmt: skip
    """`means`: each polygon's mean probability if known (a windowed scene has no whole map)."""
    if means is None:
        means = mean_inside(polygons, prob)
    geoms = gpd.GeoSeries(apply_affine(polygons, info.transform), crs=info.crs)
    geoms = geoms.make_valid()
    frame = gpd.GeoDataFrame(
        {
            "building_id": np.asarray(ids, dtype=np.int64),
            "first_seen": first_seen,
            "is_new": np.asarray(is_new, dtype=bool),
            "area_m2": np.round(area_m2(geoms), 2),
            "area_px": [round(p.area) for p in polygons],
            "mean_prob": np.round(np.asarray(means, np.float32), 4),
        },
        geometry=geoms,
        crs=info.crs,
    )
    if info.crs is None:
        if out_crs != "image":
            raise DataError(f"has no CRS, so buildings cannot be given in {out_crs}", info.path)
        log.warning("%s has no CRS: building polygons are in pixel coordinates", info.path)
    elif out_crs != "image":
        frame = frame.to_crs(out_crs)
    return frame
