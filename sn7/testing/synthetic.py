"""Synthetic SN7-format datasets with exact ground truth, for tests and benchmarks.

`make_sn7_root` writes the SpaceNet 7 folder layout (see `sn7.data.layout`) with every label
variant, and returns what the masks must be. The choices that make the ground truth exact:

- Each AOI is a zoom-13 web-mercator tile, like the real ones (`L15-0331E-1257N_1327_3160_13` is
  tile x=1327, y=3160), so the transform is the real one: EPSG:3857, ~4.777 m per pixel, origin at
  the tile's corner. Tiles smaller than 1024 px keep that pixel size and cover less ground.
- Buildings are rectangles and L-shapes with their vertices on pixel edges, so a pixel is building
  iff its centre is inside, however the lon/lat round trip rounds: the expected mask is a numpy fill
  of the rectangles, independent of rasterio. Buildings are drawn brighter than the background.
- UDM (cloud) polygons are inset by a quarter pixel, so `all_touched=True` (how UDMs are burned) and
  the centre rule cover exactly the same pixels.

Usage: `python -m sn7.testing.synthetic DIR` writes the default dataset to DIR.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.enums import ColorInterp
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"
EPSG3857 = "urn:ogc:def:crs:EPSG::3857"
_HALF_WORLD = 20037508.342789244  # web-mercator half circumference, m
_TILE_M = 2 * _HALF_WORLD / 2**13  # zoom-13 tile edge: 4891.97 m over 1024 px
PIXEL_SIZE = _TILE_M / 1024
_FIRST_TILE = (1327, 3160)  # the first real sample AOI (California, UTM zone 10)
_AOI_TILE = re.compile(r"_(\d+)_(\d+)_13$")
_CELL = 16  # one building per CELL x CELL block, so buildings never touch

Rect = tuple[int, int, int, int]  # row0, col0, row1, col1 (end-exclusive), pixels


@dataclass(frozen=True)
class SyntheticTile:
    """Ground truth of one generated image."""

    aoi: str
    stem: str
    month: str  # YYYY_MM
    image: Path
    transform: Affine
    buildings: tuple[BaseGeometry, ...]  # pixel space (col, row), as written to the labels
    mask: np.ndarray  # expected (H, W) uint8: 0 background, 1 building, 255 ignore

    @property
    def key(self) -> str:  # same as sn7.data.layout.ImageFiles.key
        return f"{self.aoi}/{self.stem}"


@dataclass(frozen=True)
class SyntheticRoot:
    root: Path
    tiles: dict[str, SyntheticTile]  # by key "AOI/stem", sorted like discover_images

    @property
    def aois(self) -> list[str]:
        return sorted({t.aoi for t in self.tiles.values()})


def aoi_name(x: int, y: int) -> str:
    """The SN7 name of zoom-13 tile (x, y): L15-<x/4>E-<(8191-y)/4>N_<x>_<y>_13."""
    return f"L15-{x // 4:04d}E-{(8191 - y) // 4:04d}N_{x}_{y}_13"


def tile_transform(x: int, y: int) -> Affine:
    """Pixel -> EPSG:3857 transform of zoom-13 tile (x, y), as in the real data."""
    return Affine(
        PIXEL_SIZE, 0.0, -_HALF_WORLD + x * _TILE_M, 0.0, -PIXEL_SIZE, _HALF_WORLD - y * _TILE_M
    )


def pixels_to_crs(geoms: Iterable[BaseGeometry], transform: Affine, crs: str) -> list:
    """Pixel-space geometries -> coordinates in `crs` (via the image's EPSG:3857 transform).

    Works on invalid geometries too (a bow-tie stays a bow-tie), so tests can write broken labels.
    """
    to_crs = Transformer.from_crs("EPSG:3857", crs, always_xy=True)

    def convert(xy: np.ndarray) -> np.ndarray:
        t = transform
        mx, my = t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f
        return np.column_stack(to_crs.transform(mx, my))

    return [None if g is None else shapely.transform(g, convert) for g in geoms]


def write_feature_collection(
    path: str | Path,
    geoms: Sequence[BaseGeometry | dict | None],
    crs: str | None = CRS84,
    properties: Sequence[dict] | None = None,
) -> Path:
    """Write a GeoJSON FeatureCollection the way SN7 does (a `crs` member unless `crs` is None).

    A geometry may be a shapely object, a raw GeoJSON dict (for malformed input), or None (null).
    """
    features = []
    for i, geom in enumerate(geoms):
        props = properties[i] if properties is not None else {"Id": i}
        if isinstance(geom, BaseGeometry):
            geom = mapping(geom)
        features.append({"type": "Feature", "properties": props, "geometry": geom})
    doc: dict = {"type": "FeatureCollection"}
    if crs is not None:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    doc["features"] = features
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def make_sn7_root(
    root: str | Path,
    aois: int | Sequence[str] = 2,
    months: int | Sequence[str] = 3,
    size: tuple[int, int] = (128, 128),
    n_buildings: int = 8,
    seed: int = 0,
    *,
    empty_months: Sequence[str] = (),
    blank_months: Sequence[str] = (),
    cloud_months: Sequence[str] = (),
    udm_raster_months: Sequence[str] = (),
    udm_geojson: bool = True,
    images_masked: bool = False,
) -> SyntheticRoot:
    """Write `<root>/train/<AOI>/...` for every AOI x month; return the expected masks.

    aois: a count (tiles beside the first sample AOI) or names (`..._<x>_<y>_13` places them).
    months: a count (from 2018_01) or "YYYY_MM" strings. size: (height, width) of every image.
    n_buildings: buildings per AOI in the last month; earlier months hold a growing prefix of them
    (a building keeps its `Id` across months, as in `labels_match`).
    empty_months: no buildings at all (every label file an empty FeatureCollection).
    blank_months: the right quarter of the image has alpha = 0 (outside the mosaic).
    cloud_months: a UDM polygon over the top-left third, in `labels/<stem>_UDM.geojson`.
    udm_raster_months: `UDM_masks/<stem>_UDM.tif` flags the bottom-left block as unusable.
    udm_geojson: write `<stem>_UDM.geojson` for every image (empty unless clouded), as SN7 does.
    images_masked: also write `images_masked/`, with the UDM areas blanked.
    """
    root = Path(root)
    height, width = size
    if isinstance(aois, int):
        aois = [aoi_name(_FIRST_TILE[0] + 3 * i, _FIRST_TILE[1] + i) for i in range(aois)]
    month_names = _month_names(months)
    tiles: dict[str, SyntheticTile] = {}
    for a, aoi in enumerate(aois):
        match = _AOI_TILE.search(aoi)
        x, y = (int(match[1]), int(match[2])) if match else (_FIRST_TILE[0] + 3 * a, _FIRST_TILE[1])
        transform = tile_transform(x, y)
        buildings = _place_buildings(np.random.default_rng([seed, a]), height, width, n_buildings)
        for m, month in enumerate(month_names):
            n_now = (
                0 if month in empty_months else math.ceil(n_buildings * (m + 1) / len(month_names))
            )
            gt = _write_tile(
                root / "train" / aoi,
                aoi,
                month,
                transform,
                buildings[:n_now],
                np.random.default_rng([seed, a, m]),
                (height, width),
                blank=month in blank_months,
                cloud=month in cloud_months,
                udm_raster=month in udm_raster_months,
                udm_geojson=udm_geojson,
                images_masked=images_masked,
            )
            tiles[gt.key] = gt
    return SyntheticRoot(root, dict(sorted(tiles.items())))


def make_every_case_root(
    root: str | Path,
    aois: int = 2,
    months: int = 3,
    size: tuple[int, int] = (64, 64),
    n_buildings: int = 4,
    *,
    empty_month: bool = False,
) -> SyntheticRoot:
    """`make_sn7_root` with every special case a mask must handle, on the last months.

    The second-to-last month has the alpha = 0 strip and a `UDM_masks` raster, the last month a
    UDM cloud polygon; with `empty_month` (4 months or more) the month before those has no
    buildings. Earlier months are clear. With 4 months: 2018_02 empty, 2018_03 blank + UDM raster,
    2018_04 clouded.
    """
    names = _month_names(months)
    if len(names) < (4 if empty_month else 3):
        raise ValueError(f"{len(names)} months leave no clear month before the special ones")
    return make_sn7_root(
        root,
        aois=aois,
        months=names,
        size=size,
        n_buildings=n_buildings,
        empty_months=[names[-3]] if empty_month else [],
        blank_months=[names[-2]],
        udm_raster_months=[names[-2]],
        cloud_months=[names[-1]],
    )


def _month_names(months: int | Sequence[str]) -> list[str]:
    if not isinstance(months, int):
        return list(months)
    return [f"{2018 + i // 12}_{i % 12 + 1:02d}" for i in range(months)]


def _place_buildings(rng, height: int, width: int, n: int) -> list[list[Rect]]:
    """n buildings, each one or two rectangles (an L) inside its own 16-px cell."""
    rows, cols = height // _CELL, width // _CELL
    if n > rows * cols:
        raise ValueError(f"{n} buildings do not fit a {height}x{width} tile ({rows * cols} max)")
    buildings = []
    for cell in rng.choice(rows * cols, size=n, replace=False):
        r0 = cell // cols * _CELL + int(rng.integers(1, 4))
        c0 = cell % cols * _CELL + int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(4, _CELL - 4, size=2))
        if rng.random() < 0.5:  # L-shape: full-width top half + left part of the bottom half
            buildings.append(
                [(r0, c0, r0 + h // 2, c0 + w), (r0 + h // 2, c0, r0 + h, c0 + w // 2)]
            )
        else:
            buildings.append([(r0, c0, r0 + h, c0 + w)])
    return buildings


def _polygon(rects: list[Rect]) -> Polygon:
    if len(rects) == 1:
        r0, c0, r1, c1 = rects[0]
        return box(c0, r0, c1, r1)
    (r0, c0, rm, c1), (_, _, r1, cm) = rects
    return Polygon([(c0, r0), (c1, r0), (c1, rm), (cm, rm), (cm, r1), (c0, r1)])


def _write_tile(
    aoi_dir: Path,
    aoi: str,
    month: str,
    transform: Affine,
    buildings: list[list[Rect]],
    rng,
    shape: tuple[int, int],
    *,
    blank: bool,
    cloud: bool,
    udm_raster: bool,
    udm_geojson: bool,
    images_masked: bool,
) -> SyntheticTile:
    height, width = shape
    stem = f"global_monthly_{month}_mosaic_{aoi}"
    building = np.zeros(shape, bool)
    for rects in buildings:
        for r0, c0, r1, c1 in rects:
            building[r0:r1, c0:c1] = True
    rgb = rng.integers(40, 100, size=(3, *shape), dtype=np.uint8)
    rgb[:, building] = rng.integers(180, 235, size=(3, int(building.sum())), dtype=np.uint8)
    alpha = np.full(shape, 255, np.uint8)
    if blank:
        alpha[:, width - width // 4 :] = 0
        rgb[:, alpha == 0] = 0
    cloud_block = (slice(0, height // 3), slice(0, width // 3))
    udm_block = (slice(height - height // 4, height), slice(0, width // 2))
    unusable = np.zeros(shape, bool)
    if cloud:
        unusable[cloud_block] = True
    if udm_raster:
        unusable[udm_block] = True

    image = aoi_dir / "images" / f"{stem}.tif"
    _write_geotiff(image, np.concatenate([rgb, alpha[None]]), transform)
    if images_masked:
        masked = np.concatenate([rgb, alpha[None]])
        masked[:, unusable] = 0
        _write_geotiff(aoi_dir / "images_masked" / f"{stem}.tif", masked, transform)

    polygons = [_polygon(rects) for rects in buildings]
    ids = [{"Id": i} for i in range(len(polygons))]
    areas = [p.area for p in polygons]
    name = f"{stem}_Buildings.geojson"
    write_feature_collection(
        aoi_dir / "labels" / name, pixels_to_crs(polygons, transform, "OGC:CRS84"), CRS84, ids
    )
    write_feature_collection(
        aoi_dir / "labels_match" / name,
        pixels_to_crs(polygons, transform, "EPSG:3857"),
        EPSG3857,
        [{**i, "area": a * PIXEL_SIZE**2} for i, a in zip(ids, areas, strict=True)],
    )
    write_feature_collection(
        aoi_dir / "labels_match_pix" / name,
        polygons,
        None,
        [{**i, "area": a, "image_fname": image.name} for i, a in zip(ids, areas, strict=True)],
    )
    if udm_geojson or cloud:
        rows, cols = cloud_block
        clouds = [box(0.25, 0.25, cols.stop - 0.25, rows.stop - 0.25)] if cloud else []
        write_feature_collection(
            aoi_dir / "labels" / f"{stem}_UDM.geojson",
            pixels_to_crs(clouds, transform, "OGC:CRS84"),
            CRS84,
        )
    if udm_raster:
        flags = np.zeros((1, *shape), np.uint8)
        flags[0][udm_block] = 255
        _write_geotiff(aoi_dir / "UDM_masks" / f"{stem}_UDM.tif", flags, transform)

    mask = building.astype(np.uint8)
    mask[(alpha == 0) | unusable] = 255
    return SyntheticTile(aoi, stem, month, image, transform, tuple(polygons), mask)


def _write_geotiff(path: Path, data: np.ndarray, transform: Affine) -> None:
    """Uncompressed, striped, EPSG:3857: the layout of the real SN7 mosaics."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype="uint8",
        crs="EPSG:3857",
        transform=transform,
    ) as dst:
        dst.write(data)
        if count == 4:
            dst.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            ]


if __name__ == "__main__":
    out = make_sn7_root(sys.argv[1] if len(sys.argv) > 1 else "synthetic_sn7")
    print(f"wrote {len(out.tiles)} images under {out.root}")
