"""Building / UDM polygons from SN7 GeoJSON, brought into the image's pixel space (col, row).

Pixel space is the one frame every label source shares: geo labels are reprojected to the image CRS
(geopandas) and mapped through the inverse affine transform; `labels_match_pix` files are already in
pixels and are never reprojected, whatever CRS they declare. Invalid polygons are repaired with
`make_valid`, non-polygonal parts dropped, and everything clipped to the tile.

SCOT needs the persistent building `Id` of labels_match / labels_match_pix (in labels/ every
feature has Id 0), so `load_footprints(..., with_ids=True)` also returns the ids, aligned with the
geometries through every drop and repair.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from sn7.data.raster_io import RasterInfo
from sn7.data.vector_io import apply_affine
from sn7.errors import DataError

_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass
class Footprints:
    """Polygonal geometries in pixel coordinates of one image, plus what was done to get them."""

    geoms: list[BaseGeometry] = field(default_factory=list)
    ids: list[int | str] | None = None  # parallel to geoms, with_ids=True only
    n_features: int = 0
    n_null: int = 0
    n_repaired: int = 0
    n_outside: int = 0


def read_feature_collection(path: str | Path) -> tuple[list[BaseGeometry | None], str | None]:
    """Parse a GeoJSON FeatureCollection: (geometries, None where null; declared CRS name)."""
    geoms, crs_name, _ = _read_collection(Path(path))
    return geoms, crs_name


def _read_collection(path: Path) -> tuple[list[BaseGeometry | None], str | None, list]:
    if not path.is_file():
        raise DataError("label file not found", path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(
            "label file is empty (0 bytes); an image without buildings needs an empty "
            'FeatureCollection: {"type": "FeatureCollection", "features": []}',
            path,
        )
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise DataError(f"not valid JSON{where}: {getattr(exc, 'msg', exc)}", path) from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"expected a GeoJSON FeatureCollection, found {kind!r}", path)
    features = doc.get("features")
    if not isinstance(features, list):
        raise DataError("FeatureCollection has no 'features' list", path)
    crs = doc.get("crs")
    crs_name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    return _parse_geometries(path, raw, features), crs_name, features


def _feature_ids(path: Path, features: list) -> np.ndarray:
    """The persistent `Id` of every feature, which must be there and unique within the file."""
    ids = []
    for i, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        value = props.get("Id") if isinstance(props, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise DataError(
                f"feature {i} has no integer or string 'Id' property (found {value!r}); "
                "building ids come from labels_match or labels_match_pix",
                path,
            )
        ids.append(value)
    counts = Counter(ids)
    repeated = [i for i in ids if counts[i] > 1]
    if repeated:
        raise DataError(
            f"Id {repeated[0]!r} is used by {counts[repeated[0]]} features, so it identifies no "
            "building; persistent ids come from labels_match or labels_match_pix, not labels",
            path,
        )
    return np.asarray(ids, dtype=object)


def _parse_geometries(path: Path, raw: bytes, features: list) -> list[BaseGeometry | None]:
    # Fast path: GEOS parses the whole collection in C (3x faster than shapely.shape per feature),
    # but it cannot represent null geometries, so those files take the per-feature path.
    if all(isinstance(f, dict) and f.get("geometry") for f in features):
        try:
            parts = shapely.get_parts(shapely.from_geojson(raw.decode("utf-8")))
        except (shapely.errors.GEOSException, ValueError):
            parts = None
        if parts is not None and len(parts) == len(features):
            return list(parts)
    geoms: list[BaseGeometry | None] = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            kind = type(feature).__name__
            raise DataError(f"feature {i} is not a GeoJSON Feature object (found {kind})", path)
        geometry = feature.get("geometry")
        if geometry is None:
            geoms.append(None)
            continue
        try:
            geoms.append(shape(geometry))
        except Exception as exc:  # shapely raises several types for malformed coordinates
            raise DataError(f"feature {i} has a malformed geometry ({exc})", path) from exc
    return geoms


def _source_crs(path: Path, crs_name: str | None, geoms: list[BaseGeometry]) -> CRS:
    if crs_name is None:
        # RFC 7946: GeoJSON without a "crs" member is longitude/latitude (WGS84).
        xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
        if xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90:
            raise DataError(
                "declares no CRS and its coordinates are not longitude/latitude "
                f"(bounds {xmin:.1f}, {ymin:.1f}, {xmax:.1f}, {ymax:.1f}); add a 'crs' member "
                "or choose data.label_source=labels_match_pix for pixel coordinates",
                path,
            )
        return CRS.from_user_input("OGC:CRS84")
    try:
        return CRS.from_user_input(crs_name)
    except CRSError as exc:
        raise DataError(f"declares an unknown CRS {crs_name!r}", path) from exc


def _to_pixels(path: Path, geoms: np.ndarray, crs_name, info: RasterInfo) -> np.ndarray:
    if info.crs is None:
        raise DataError(
            f"image {info.path.name} has no CRS, so geographic labels cannot be placed on it; "
            "use data.label_source=labels_match_pix",
            path,
        )
    src_crs = _source_crs(path, crs_name, geoms)
    projected = gpd.GeoSeries(geoms, crs=src_crs).to_crs(info.crs).to_numpy()
    return apply_affine(projected, ~info.transform)


def polygonal_part(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygon(s) of a geometry, or None; lines and points left by make_valid are dropped."""
    if geom.is_empty:
        return None
    if geom.geom_type in _POLYGONAL:
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [p for p in geom.geoms if p.geom_type in _POLYGONAL and not p.is_empty]
        return shapely.union_all(parts) if parts else None
    return None


def load_footprints(
    path: str | Path,
    space: str,
    info: RasterInfo,
    *,
    require_overlap: bool = True,
    with_ids: bool = False,
) -> Footprints:
    """Footprints of `path` in pixel space of the image described by `info`, clipped to it.

    `require_overlap`: building labels of which not one polygon touches the image almost always mean
    a wrong CRS or label source, so that is an error rather than a silently empty mask.
    `with_ids`: also return each footprint's `Id` property (`Footprints.ids`).
    """
    path = Path(path)
    raw, crs_name, features = _read_collection(path)
    out = Footprints(n_features=len(raw), ids=[] if with_ids else None)
    ids = _feature_ids(path, features) if with_ids else np.full(len(raw), None)
    present = np.array([g is not None and not g.is_empty for g in raw], dtype=bool)
    geoms = [g for g, keep in zip(raw, present, strict=True) if keep]
    ids = ids[present]
    out.n_null = len(raw) - len(geoms)
    if not geoms:
        return out
    geoms = np.asarray(geoms, dtype=object)
    if space == "geo":
        geoms = _to_pixels(path, geoms, crs_name, info)
    invalid = ~shapely.is_valid(geoms)
    out.n_repaired = int(invalid.sum())
    geoms[invalid] = shapely.make_valid(geoms[invalid])
    tile = box(0, 0, info.width, info.height)
    inside = shapely.contains(tile, geoms)
    touching = shapely.intersects(tile, geoms)
    geoms[touching & ~inside] = shapely.intersection(geoms[touching & ~inside], tile)
    out.n_outside = int((~touching).sum())
    for geom, building_id in zip(geoms[touching], ids[touching], strict=True):
        geom = polygonal_part(geom)
        if geom is None:
            out.n_null += 1
            continue
        out.geoms.append(geom)
        if with_ids:
            out.ids.append(building_id)
    if require_overlap and not out.geoms and out.n_outside:
        bounds = np.round(shapely.total_bounds(geoms), 1).tolist()
        raise DataError(
            f"none of its {out.n_outside} polygons overlaps the {info.width}x{info.height} image "
            f"(label bounds in pixels: {bounds}); wrong CRS or data.label_source?",
            path,
        )
    return out
