"""GeoTIFF reading and writing with errors that name the file.

Everything that touches raster files goes through here, so a truncated or non-TIFF input is reported
as `DataError("<file>: ...")` instead of a GDAL traceback, and every write is atomic.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from sn7.errors import DataError
from sn7.utils.atomic import atomic_path


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: Any  # rasterio CRS or None
    transform: Any  # affine.Affine
    profile: dict


def open_dataset(path: str | Path) -> rasterio.io.DatasetReader:
    """Open a raster for reading (caller closes it); failures become a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("image file not found", path)
    if path.stat().st_size == 0:
        raise DataError("image file is empty (0 bytes); re-download it", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise DataError(f"not a readable GeoTIFF ({_first_line(exc)})", path) from exc


@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator[rasterio.io.DatasetReader]:
    """`open_dataset` as a context manager that also reports read failures as DataError."""
    src = open_dataset(path)
    try:
        yield src
    except RasterioError as exc:
        raise DataError(f"GeoTIFF is corrupt or truncated ({_first_line(exc)})", path) from exc
    finally:
        src.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def raster_info(path: str | Path) -> RasterInfo:
    with open_raster(path) as src:
        return info_of(src, Path(path))


def info_of(src, path: Path) -> RasterInfo:
    return RasterInfo(
        path=path,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=src.dtypes[0],
        crs=src.crs,
        transform=src.transform,
        profile=dict(src.profile),
    )


def read_raster(
    path: str | Path,
    bands: Sequence[int] | None = None,
    window: Window | None = None,
    src=None,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read `bands` (1-based, default all) as (C, H, W); `window` reads only that block,
    `out_shape` (h, w) a decimated copy (nearest).

    Pass an already open `src` (from `open_raster`) to avoid re-opening the file per crop.
    """
    if src is not None:
        return _read(src, Path(path), bands, window, out_shape)
    with open_raster(path) as opened:
        return _read(opened, Path(path), bands, window, out_shape)


def read_valid(
    path: str | Path, alpha_band: int | None, src=None, out_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """(H, W) bool, True where the image has data: alpha > 0 (SN7's band 4 is 0 outside the
    mosaic); all True when there is no alpha band (`alpha_band` None). `src` and `out_shape` as
    in `read_raster`."""
    if src is None:
        with open_raster(path) as opened:
            return read_valid(path, alpha_band, opened, out_shape)
    if alpha_band is None:
        return np.ones(out_shape or (src.height, src.width), bool)
    return _read(src, Path(path), [alpha_band], None, out_shape)[0] > 0


def _read(src, path: Path, bands, window, out_shape=None) -> np.ndarray:
    indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
    if max(indexes) > src.count:
        raise DataError(
            f"has {src.count} band(s) but bands {indexes} are needed "
            "(SN7 images have 4: R, G, B, alpha; models read the bands they were trained on)",
            path,
        )
    try:
        shape = None if out_shape is None else (len(indexes), *out_shape)
        return src.read(indexes, window=window, boundless=False, out_shape=shape)
    except RasterioError as exc:
        raise DataError(f"GeoTIFF is corrupt or truncated ({_first_line(exc)})", path) from exc


def _profile(like: RasterInfo, count: int, dtype: str, nodata: float | None) -> dict:
    """Tiled (256 px), deflate-compressed GeoTIFF with `like`'s size and georeferencing."""
    profile = {
        "driver": "GTiff",
        "width": like.width,
        "height": like.height,
        "count": count,
        "dtype": dtype,
        "crs": like.crs,
        "transform": like.transform,
        "compress": "deflate",
        "predictor": 2 if np.dtype(dtype).kind in "ui" else 3,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


@contextlib.contextmanager
def open_geotiff(
    path: str | Path, like: RasterInfo, dtype: str, *, nodata: float | None = None,
    compress_level: int | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:  # fmt: skip
    """Open a one-band GeoTIFF for writing by windows (`dst.write(a, window=...)`, and
    `dst.write_mask` for an internal mask band) with write_geotiff's layout. Not atomic by itself:
    open it on a temp path (`sn7.utils.atomic.atomic_path`)."""
    profile = _profile(like, 1, dtype, nodata)
    if compress_level is not None:
        profile["zlevel"] = compress_level
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            yield dst


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    like: RasterInfo,
    *,
    nodata: float | None = None,
    valid: np.ndarray | None = None,
) -> None:
    """Write (C, H, W) or (H, W) `array` with the georeferencing of `like`, atomically.

    `valid` (H, W bool) is stored as the GeoTIFF's internal mask band, which GIS tools read as
    nodata when every value of the dtype is meaningful (e.g. a uint8 probability 0-255).
    """
    data = array[None] if array.ndim == 2 else array
    profile = _profile(like, data.shape[0], data.dtype.name, nodata)
    with (
        atomic_path(path) as tmp,
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if valid is not None:
                dst.write_mask(valid.astype(np.uint8) * 255)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a single-band uint8 PNG atomically (the mask cache format)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(tmp, "PNG")


def read_png(path: str | Path) -> np.ndarray:
    """Read a single-band PNG as (H, W) uint8; unreadable files become a DataError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.array(img)  # a writable copy
    except FileNotFoundError as exc:
        raise DataError("mask file not found; run `python prepare.py`", path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"mask PNG is unreadable ({exc}); re-run prepare", path) from exc
