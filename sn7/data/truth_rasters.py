"""One month's true buildings in pixel space, polygons and id raster, cached on disk.

Projecting and rasterising thousands of polygons for ~25 months is what a series run spends most
on, and a search over trackers or degradations reads the same truth again and again; so each
month is stored once as `<cache_dir>/<stem>.npz`, keyed by the label file's size and mtime and
the grid, and read back when the key still holds (anything else re-renders it).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from shapely.geometry.base import BaseGeometry

from sn7.data.footprints import load_footprints
from sn7.data.raster_io import RasterInfo
from sn7.utils.atomic import atomic_path

CACHE_VERSION = 1


@dataclass
class TruthMonth:
    """ids[k] is the persistent `Id` of geoms[k]; raster holds k + 1 on its pixels (0: none)."""

    ids: list[int | str]
    geoms: list[BaseGeometry]
    raster: np.ndarray  # (H, W) uint32, pixel-centre rule; a later polygon wins an overlap


def cache_key(path: Path, info: RasterInfo) -> str:
    stat = path.stat()
    grid = [info.width, info.height, *tuple(info.transform)[:6], str(info.crs)]
    return json.dumps([CACHE_VERSION, stat.st_size, stat.st_mtime_ns, grid])


def render_month(path: Path, info: RasterInfo) -> TruthMonth:
    """Read labels_match footprints (with ids) into pixel space and burn their index raster."""
    fp = load_footprints(path, "geo", info, with_ids=True)
    raster = np.zeros((info.height, info.width), np.uint32)
    if fp.geoms:
        raster = features.rasterize(
            [(g, k + 1) for k, g in enumerate(fp.geoms)],
            out_shape=raster.shape,
            transform=Affine.identity(),
            dtype="uint32",
        )
    return TruthMonth(list(fp.ids), list(fp.geoms), raster)


def _save(target: Path, key: str, month: TruthMonth) -> None:
    wkb = shapely.to_wkb(np.asarray(month.geoms, dtype=object)) if month.geoms else []
    lengths = np.array([len(b) for b in wkb], np.int64)
    blob = np.frombuffer(b"".join(wkb), np.uint8)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, key=np.array(key), ids=np.array(json.dumps(month.ids)),
                            raster=month.raster, wkb=blob, lengths=lengths)  # fmt: skip


def _load(target: Path, key: str) -> TruthMonth | None:
    try:
        with np.load(target) as z:
            if str(z["key"]) != key:
                return None
            blob, lengths = z["wkb"].tobytes(), z["lengths"]
            ends = np.cumsum(lengths)
            wkb = [blob[e - n : e] for e, n in zip(ends, lengths, strict=True)]
            geoms = list(shapely.from_wkb(wkb)) if wkb else []
            return TruthMonth(json.loads(str(z["ids"])), geoms, z["raster"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, shapely.errors.GEOSException):
        return None  # unreadable or old: rendered again and replaced


def truth_month(path: str | Path, info: RasterInfo, cache_dir: str | Path) -> TruthMonth:
    """The month's truth from `cache_dir` when its key still holds, else rendered and stored."""
    path = Path(path)
    key = cache_key(path, info)
    target = Path(cache_dir) / f"{path.name.removesuffix('.geojson')}.npz"
    if target.is_file():
        cached = _load(target, key)
        if cached is not None:
            return cached
    month = render_month(path, info)
    _save(target, key, month)
    return month
