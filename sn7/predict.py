"""Stage 4, predict: GeoTIFF(s) -> probability and mask GeoTIFFs, building GeoJSON with ids that
persist across months, tracks table, SN7 challenge CSV, gallery and change maps.

Inputs are grouped by AOI (from SN7 file names) and each AOI's months are tracked together
(`track=`), so a building keeps its `building_id` from the month it first appears. Outputs line up
with the input in a GIS: same CRS, transform and size; invalid input pixels (alpha = 0) are nodata.
Bad inputs are reported by name at the end; the other tiles are still written.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine
from omegaconf import DictConfig
from rasterio import features
from scipy import ndimage

from sn7.checks import check_infer, check_predict
from sn7.constants import IGNORE
from sn7.data.layout import aoi_of, date_of, image_files_of
from sn7.data.masks import RasterizeSettings, rasterize_tile
from sn7.data.raster_io import write_geotiff
from sn7.data.vector_io import apply_affine, area_m2, write_geojson
from sn7.errors import ConfigError, DataError, SN7Error
from sn7.inference.checkpoint import LoadedModel, check_against_checkpoint, load_model
from sn7.inference.postprocess import clean_mask
from sn7.inference.sliding_window import predictor_for
from sn7.inference.thresholds import file_sha256, mismatch, read_selected
from sn7.inference.tiles import TileInput, read_tile
from sn7.inference.tracking import track_aoi
from sn7.metrics.pixel import sweep_rows, tile_counts
from sn7.utils.atomic import write_text_atomic
from sn7.utils.config import to_container
from sn7.utils.console import console, progress_bar
from sn7.utils.hardware import configure_threads
from sn7.viz.change_map import change_map
from sn7.viz.gallery import Gallery
from sn7.viz.panels import rgb_preview

log = logging.getLogger(__name__)
_TIF = (".tif", ".tiff")
AUTO_THRESHOLDS = ("auto", "auto_buildings")


def list_inputs(spec: str) -> list[Path]:
    """A GeoTIFF, a folder of them, or a glob pattern -> sorted paths."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _TIF)
        if not files:
            raise DataError("folder holds no .tif/.tiff files", path)
        return files
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)))
        if not files:
            raise DataError(f"no file matches the pattern {spec!r}")
        return files
    return [path]  # a single file; a missing one is reported when it is read


def resolve_threshold(value, loaded: LoadedModel, post: dict, min_area: float) -> float:
    """A number, or what evaluate chose on this checkpoint's selection split: `auto` its pixel
    threshold, `auto_buildings` its building one. Only thresholds stored for this very file
    and chosen with these post-processing settings are used; anything else is a one-line error."""
    if value not in AUTO_THRESHOLDS:
        return float(value)
    stored = read_selected(loaded.path)
    fix = (
        f"run `python evaluate.py ckpt_path={loaded.path}` (it chooses thresholds on the "
        "checkpoint's selection split) or give predict.threshold=<number>"
    )
    if stored is None:
        raise ConfigError(
            f"no thresholds chosen on a selection split are stored; {fix}", loaded.path
        )
    why = mismatch(stored, file_sha256(loaded.path), post, min_area)
    if why is not None:
        raise ConfigError(f"stored thresholds do not apply: {why}; {fix}", loaded.path)
    threshold = stored.building if value == "auto_buildings" else stored.pixel
    where = stored.selected_on
    log.info(
        "threshold %.2f (%s) chosen on split %s (%s) of %s",
        threshold, value, where.get("split"), ", ".join(where.get("aois") or []),
        where.get("data_root"),
    )  # fmt: skip
    return threshold


def aoi_groups(paths: list[Path]) -> list[tuple[str | None, list[Path]]]:
    """Inputs grouped by SN7 AOI (months in date order) so buildings can be tracked; a file
    whose name is not an SN7 monthly mosaic is a group of its own."""
    groups: dict[str, list[Path]] = {}
    singles = []
    for path in paths:
        aoi = aoi_of(path.stem)
        if aoi is None:
            singles.append((None, [path]))
        else:
            groups.setdefault(aoi, []).append(path)
    by_aoi = [
        (aoi, sorted(group, key=lambda p: (date_of(p.stem), p.name)))
        for aoi, group in groups.items()
    ]
    return sorted(by_aoi, key=lambda g: g[0]) + singles


def month_label(stem: str, index: int) -> str:
    """YYYY_MM of an SN7 mosaic, else the month's position in its group."""
    date = date_of(stem)
    return date.replace("-", "_") if date else f"month_{index}"


def buildings_frame(
    polygons, ids, prob, info, out_crs: str, first_seen: list[str], is_new: list[bool]
) -> gpd.GeoDataFrame:
    geoms = gpd.GeoSeries(apply_affine(polygons, info.transform), crs=info.crs)
    geoms = geoms.make_valid()
    frame = gpd.GeoDataFrame(
        {
            "building_id": np.asarray(ids, dtype=np.int64),
            "first_seen": first_seen,
            "is_new": np.asarray(is_new, dtype=bool),
            "area_m2": np.round(area_m2(geoms), 2),
            "area_px": [round(p.area) for p in polygons],
            "mean_prob": np.round(mean_inside(polygons, prob), 4),
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


def mean_inside(polygons, values: np.ndarray) -> np.ndarray:
    """Mean of `values` inside each pixel-space polygon (e.g. its mean probability)."""
    if not polygons:
        return np.zeros(0, np.float32)
    labels = features.rasterize(
        [(p, i + 1) for i, p in enumerate(polygons)], out_shape=values.shape,
        transform=Affine.identity(), dtype="int32",
    )  # fmt: skip
    return np.nan_to_num(np.asarray(ndimage.mean(values, labels, np.arange(1, len(polygons) + 1))))


@dataclass
class Month:
    path: Path
    tile: TileInput
    prob: np.ndarray


def predict_month(path: Path, loaded, predictor, threshold, cfg, out_dir: Path) -> Month:
    """Probability and mask GeoTIFFs of one image (the buildings come once its AOI is tracked)."""
    tile_in = read_tile(path, loaded.spec)
    prob = predictor(tile_in.model_input)
    valid = tile_in.valid
    stem = path.stem
    if cfg.predict.prob_dtype == "float32":
        write_geotiff(
            out_dir / f"{stem}_prob.tif",
            np.where(valid, prob, np.nan).astype(np.float32),
            tile_in.info,
            nodata=float("nan"),
        )
    else:
        prob8 = np.round(prob * 255).astype(np.uint8)
        write_geotiff(out_dir / f"{stem}_prob.tif", prob8, tile_in.info, valid=valid)
    pred = clean_mask((prob >= threshold) & valid, **cfg.post)
    mask = np.where(valid, pred, IGNORE).astype(np.uint8)
    write_geotiff(out_dir / f"{stem}_mask.tif", mask, tile_in.info, nodata=IGNORE)
    return Month(path, tile_in, prob)


def write_aoi_buildings(
    aoi, months: list[Month], threshold, cfg, out_dir: Path, gallery, rgb
) -> int:
    """Track the AOI's buildings over its months and write them: per month a GeoJSON, per AOI the
    tracks table, the SN7 challenge CSV and a change map. Returns the number of buildings."""
    p = cfg.predict
    track = to_container(cfg.track) if len(months) >= 2 else {"mode": "none"}
    probs = np.stack([m.prob for m in months])
    valids = np.stack([m.tile.valid for m in months])
    tracked = track_aoi(track, probs, valids, threshold, to_container(cfg.post), p.min_area)
    del probs, valids
    labels = [month_label(m.path.stem, i) for i, m in enumerate(months)]
    for t, month in enumerate(months):
        ids, polygons = tracked.ids(t), tracked.polygons(t)
        first = [labels[tracked.first_seen[i]] for i in ids]
        new = [tracked.first_seen[i] == t and t > 0 for i in ids]
        frame = buildings_frame(polygons, ids, month.prob, month.tile.info, p.crs, first, new)
        write_geojson(out_dir / f"{month.path.stem}_buildings.geojson", frame)
        if gallery is not None:
            add_to_gallery(gallery, month, threshold, cfg, rgb)
    if len(months) >= 2:
        name = aoi or months[0].path.stem
        write_text_atomic(
            out_dir / f"{name}_tracks.csv", tracks_table(tracked, labels).to_csv(index=False)
        )
        write_text_atomic(
            out_dir / f"{name}_sn7.csv", sn7_csv(tracked, [m.path.stem for m in months])
        )
        if gallery is not None:
            change_map(
                tracked,
                None,
                labels,
                months[0].prob.shape,
                out_dir / "change_maps" / f"{name}.png",
                title=name,
            )
    return len(tracked.footprints())


def tracks_table(tracked, labels: list[str]) -> pd.DataFrame:
    """One row per building: id, first month, months present, last footprint's area (px)."""
    present: dict[int, int] = {}
    for t in range(len(tracked)):
        for i in tracked.ids(t):
            present[i] = present.get(i, 0) + 1
    last = tracked.footprints()
    rows = [
        {
            "building_id": i,
            "first_seen": labels[tracked.first_seen[i]],
            "months_present": present[i],
            "area_px": round(last[i].area),
        }
        for i in sorted(present)
    ]
    return pd.DataFrame(rows, columns=["building_id", "first_seen", "months_present", "area_px"])


def sn7_csv(tracked, stems: list[str]) -> str:
    """The SN7 challenge's submission format: filename,id,geometry with pixel-coordinate WKT, one
    row per building per month (a month without buildings gets one POLYGON EMPTY row)."""
    rows = []
    for t, stem in enumerate(stems):
        items = tracked.months[t]
        if not items:
            rows.append({"filename": stem, "id": -1, "geometry": "POLYGON EMPTY"})
        for i, polygon in items:
            rows.append({"filename": stem, "id": i, "geometry": polygon.wkt})
    return pd.DataFrame(rows, columns=["filename", "id", "geometry"]).to_csv(index=False)


def add_to_gallery(gallery, month: Month, threshold, cfg, rgb_channels) -> None:
    tile = image_files_of(month.path, cfg.data.label_source)
    truth = iou = None
    if tile is not None:
        settings = RasterizeSettings(cfg.data.alpha_band, cfg.data.all_touched)
        truth = rasterize_tile(tile, settings).mask
        iou = sweep_rows([threshold], tile_counts(month.prob, truth, [threshold]))[0]["iou"]
    rgb = rgb_preview(month.tile.pixels, rgb_channels)
    gallery.add(month.path.stem, rgb, month.prob, threshold, truth, iou)


def predict(cfg: DictConfig, given: set[str] | frozenset = frozenset()) -> list[dict]:
    configure_threads(cfg.get("threads"))
    p = cfg.predict
    check_predict(p)
    check_infer(cfg.infer)
    loaded = load_model(cfg.ckpt_path, cfg.get("trusted_models") or ())
    check_against_checkpoint(cfg, loaded, set(given))
    inputs = list_inputs(str(cfg.input))
    threshold = resolve_threshold(p.threshold, loaded, to_container(cfg.post), p.min_area)
    predictor = predictor_for(cfg, loaded)
    out_dir = Path(p.out_dir or cfg.paths.run_dir)
    gallery = Gallery(out_dir / "gallery") if p.gallery else None
    done, failed = [], {}
    with progress_bar() as bar:
        task = bar.add_task("tiles", total=len(inputs))
        for aoi, paths in aoi_groups(inputs):
            months = []
            for path in paths:
                try:
                    months.append(predict_month(path, loaded, predictor, threshold, cfg, out_dir))
                except SN7Error as exc:
                    failed[str(path)] = str(exc)
                    console.print(f"[red]skipped[/red] {exc}")
                bar.advance(task)
            if months:
                n = write_aoi_buildings(
                    aoi, months, threshold, cfg, out_dir, gallery, loaded.spec.rgb_channels
                )
                done.append({"aoi": aoi, "tiles": [m.path.stem for m in months], "buildings": n})
    if gallery is not None:
        gallery.finish()
    n_tiles = sum(len(d["tiles"]) for d in done)
    mode = cfg.track.mode
    console.print(
        f"predicted {n_tiles} tile(s) at threshold {threshold:.2f} into {out_dir} "
        f"({sum(d['buildings'] for d in done)} buildings, track={mode})"
        + (f"; gallery: {out_dir / 'gallery' / 'index.png'}" if gallery and done else "")
    )
    if failed:
        raise DataError(
            f"{len(failed)} of {len(inputs)} input(s) could not be predicted:\n"
            + "\n".join(f"  - {msg}" for msg in failed.values())
        )
    return done
