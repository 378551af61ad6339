"""Writing building polygons as GeoJSON that opens correctly in QGIS and geopandas."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from sn7.utils.atomic import atomic_path

logging.getLogger("pyogrio").setLevel(logging.WARNING)  # "Created N records" on every write


def apply_affine(geoms, transform: Affine) -> np.ndarray:
    """Map geometries through an affine transform, all coordinates in one numpy product: a
    raster's transform takes pixel (col, row) to its CRS, its inverse (`~transform`) back.

    (shapely.affinity.affine_transform does the same one geometry at a time.)"""
    matrix = np.array([[transform.a, transform.d], [transform.b, transform.e]])
    offset = np.array([transform.c, transform.f])
    return shapely.transform(np.asarray(geoms, dtype=object), lambda xy: xy @ matrix + offset)


def area_m2(geoms: gpd.GeoSeries) -> np.ndarray:
    """True ground area: Web Mercator "metres" inflate areas by 1/cos^2(latitude), so measure in
    the local UTM zone instead (any projected CRS with metre units)."""
    if len(geoms) == 0 or geoms.crs is None:
        return np.zeros(len(geoms))
    return geoms.to_crs(geoms.estimate_utm_crs()).area.to_numpy()


def write_geojson(path: str | Path, frame: gpd.GeoDataFrame) -> None:
    """Write atomically; the layer is named after the file, not the temp file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()  # the GeoJSON driver refuses to overwrite
        frame.to_file(tmp, driver="GeoJSON", layer=path.stem)
