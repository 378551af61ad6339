"""predict on a scene larger than `predict.max_scene_px`: read, predicted and written window by
window (sn7.inference.scene) in memory bounded by the scene's width, as a one-month AOI."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.windows import Window

from sn7.building_frames import buildings_frame, month_label
from sn7.constants import IGNORE
from sn7.data.raster_io import info_of, open_geotiff, open_raster, raster_info
from sn7.data.tile_stats import tile_stats
from sn7.errors import ConfigError
from sn7.inference.footprints import FootprintSettings
from sn7.inference.scene import (
    BLOCK_ROWS,
    alpha_of,
    clean_rows,
    predict_strips,
    read_valid_rows,
    scene_footprints,
)
from sn7.inference.tracking import TrackSettings, temporal_mean
from sn7.utils.atomic import atomic_path

if TYPE_CHECKING:  # annotations only: predict imports this module
    from sn7.predict import PredictSettings


def is_large(path: Path, max_scene_px: int) -> bool:
    """Does the scene take the windowed path (more than `predict.max_scene_px` pixels)?"""
    info = raster_info(path)
    return info.width * info.height > max_scene_px


def scene_month_map(track: TrackSettings):
    """(map of one month's probabilities, separate?, keep?) as `track_aoi` cuts a one-month AOI:
    aggregate cuts the temporal mean (the month where valid) always separating buildings and keeps
    a footprint whose valid mean reaches presence_threshold; none/match cut the month (blended by
    `refine` with its own temporal mean) and keep every footprint."""
    options = track.options
    if track.mode == "aggregate":
        presence, min_valid = float(options["presence_threshold"]), float(options["min_valid"])

        def keep(f) -> bool:
            return f.evidence and np.float64(f.score) >= presence

        return (lambda raw, valid: temporal_mean(raw[None], valid[None])), True, keep, min_valid
    if track.mode in ("none", "match"):
        refine = float(options.get("refine", 0.0))

        def blend(raw, valid):
            if refine <= 0:
                return raw
            probs = raw[None]
            return (refine * temporal_mean(probs, valid[None]) + (1 - refine) * probs)[0]

        return blend, None, (lambda f: True), 0.5
    raise ConfigError(
        f"track={track.mode} cannot run on a windowed scene (more than predict.max_scene_px "
        "pixels); use track=aggregate, match or none, or raise predict.max_scene_px"
    )


class GeoJSONStream:
    """A GeoJSON FeatureCollection written block by block into a temp file beside the target
    (renamed over it by the caller's atomic_path): GDAL writes each block's features, one per
    line, so the file reads back exactly as write_geojson's would."""

    def __init__(self, tmp: Path, layer: str, empty: gpd.GeoDataFrame):
        self.tmp, self.layer, self.n = tmp, layer, 0
        self.fh = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        header = self._gdal_lines(empty)
        self.fh.write("".join(header[: header.index('"features": [\n') + 1]))

    def _gdal_lines(self, frame: gpd.GeoDataFrame) -> list[str]:
        part = self.tmp.with_name(self.tmp.name + ".part.geojson")
        try:
            frame.to_file(part, driver="GeoJSON", layer=self.layer)
            return part.read_text(encoding="utf-8").splitlines(keepends=True)
        finally:
            part.unlink(missing_ok=True)

    def add(self, frame: gpd.GeoDataFrame) -> None:
        if len(frame) == 0:
            return
        for line in self._gdal_lines(frame):
            if line.startswith('{ "type": "Feature"'):
                self.fh.write((",\n" if self.n else "") + line.rstrip().rstrip(","))
                self.n += 1

    def close(self) -> None:
        self.fh.write("\n]\n}\n")
        self.fh.close()


SCENE_GDAL_CACHE_MB = 64


def predict_scene(
    path: Path, loaded, predictor, mask_threshold: float, footprint: FootprintSettings,
    settings: PredictSettings,
) -> int:  # fmt: skip
    """`_predict_scene` with GDAL's block cache capped: by default it may take 5 % of the RAM, and
    a scene's scratch and output GeoTIFFs fill it, so the memory grew with the scene's area."""
    with rasterio.Env(GDAL_CACHEMAX=SCENE_GDAL_CACHE_MB):
        return _predict_scene(path, loaded, predictor, mask_threshold, footprint, settings)


def _predict_scene(
    path: Path, loaded, predictor, mask_threshold: float, footprint: FootprintSettings,
    settings: PredictSettings,
) -> int:  # fmt: skip
    """A scene larger than predict.max_scene_px, window by window in bounded memory: rows of
    probabilities as the predictor's windows finish them (into a scratch float32 GeoTIFF beside
    the outputs), then blocks of rows for the prob and mask GeoTIFFs and the buildings. Outputs are
    those of a one-month AOI, written atomically (temp files renamed when complete). Returns the
    number of buildings."""
    spec, out_dir, stem = loaded.spec, settings.out_dir, path.stem
    month_map, separate, keep, min_valid = scene_month_map(settings.track)
    separate = footprint.post.separate if separate is None else separate
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_raster(path) as src, tempfile.TemporaryDirectory(prefix="sn7-scene-") as scratch_dir:
        info = info_of(src, path)
        height, width = info.height, info.width
        alpha = alpha_of(spec, src.count)
        stats = tile_stats(path, spec) if spec.per_tile else None  # 1/16 of the scene's pixels
        scratch = Path(scratch_dir) / "prob.tif"
        with open_geotiff(scratch, info, "float32", compress_level=1) as dst:
            for top, prob, _ in predict_strips(src, path, spec, predictor, stats):
                dst.write(prob[None], window=Window(0, top, width, prob.shape[0]))
        with contextlib.ExitStack() as stack:
            probs = stack.enter_context(open_raster(scratch))

            def read(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
                raw = probs.read(1, window=Window(0, a, width, b - a))
                return raw, read_valid_rows(src, path, alpha, a, b - a)

            float_prob = settings.prob_dtype == "float32"
            prob_tmp = stack.enter_context(atomic_path(out_dir / f"{stem}_prob.tif"))
            mask_tmp = stack.enter_context(atomic_path(out_dir / f"{stem}_mask.tif"))
            json_path = out_dir / f"{stem}_buildings.geojson"
            json_tmp = stack.enter_context(atomic_path(json_path))
            nodata = float("nan") if float_prob else None
            prob_dst = stack.enter_context(
                open_geotiff(prob_tmp, info, "float32" if float_prob else "uint8", nodata=nodata)
            )
            mask_dst = stack.enter_context(open_geotiff(mask_tmp, info, "uint8", nodata=IGNORE))
            for r0 in range(0, height, BLOCK_ROWS):
                r1 = min(r0 + BLOCK_ROWS, height)
                window = Window(0, r0, width, r1 - r0)
                raw, valid = read(r0, r1)
                if float_prob:
                    prob_dst.write(np.where(valid, raw, np.nan).astype(np.float32)[None],
                                   window=window)  # fmt: skip
                else:
                    prob_dst.write(np.round(raw * 255).astype(np.uint8)[None], window=window)
                    prob_dst.write_mask(valid.astype(np.uint8) * 255, window=window)
                post = settings.post
                pred = clean_rows(read, height, r0, r1, mask_threshold, post, lambda p, v: p)
                mask = np.where(valid, pred, IGNORE).astype(np.uint8)
                mask_dst.write(mask[None], window=window)
            first = month_label(stem, 0)
            empty = buildings_frame([], [], None, info, settings.crs, [], [], np.zeros(0))
            stream = GeoJSONStream(json_tmp, json_path.stem, empty)
            n = 0
            for _, found in scene_footprints(read, height, footprint, separate, month_map,
                                             min_valid):  # fmt: skip
                kept = [f for f in found if keep(f)]
                ids = list(range(n + 1, n + len(kept) + 1))
                n += len(kept)
                stream.add(buildings_frame(
                    [f.polygon for f in kept], ids, None, info, settings.crs,
                    [first] * len(kept), [False] * len(kept), [f.mean_prob for f in kept],
                ))  # fmt: skip
            stream.close()
    return n
