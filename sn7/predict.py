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

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from sn7.building_frames import buildings_frame, month_label
from sn7.checks import check_predict
from sn7.constants import IGNORE
from sn7.data.layout import TIF_SUFFIXES, aoi_of, date_of, image_files_of
from sn7.data.masks import RasterizeSettings, rasterize_tile
from sn7.data.raster_io import write_geotiff
from sn7.data.vector_io import write_geojson
from sn7.errors import ConfigError, DataError, SN7Error
from sn7.evaluation.thresholds import file_sha256, mismatch, read_selected
from sn7.inference.checkpoint import LoadedModel, check_against_checkpoint, load_model
from sn7.inference.footprints import FootprintSettings, PostSettings
from sn7.inference.sliding_window import InferSettings, predictor_for
from sn7.inference.tiles import TileInput, read_tile
from sn7.inference.track_choice import building_threshold_for
from sn7.inference.tracking import TrackedMonths, TrackSettings, track_aoi
from sn7.metrics.pixel import sweep_rows, tile_counts
from sn7.predict_scene import is_large, predict_scene
from sn7.utils.atomic import write_text_atomic
from sn7.utils.console import console, progress_bar
from sn7.utils.hardware import configure_threads
from sn7.viz.pictures import Pictures

log = logging.getLogger(__name__)

AUTO_THRESHOLDS = ("auto", "auto_buildings")


@dataclass(frozen=True)
class PredictSettings:
    """conf/predict.yaml's predict, post and track nodes, checked once when predict starts."""

    out_dir: Path
    threshold: str | float  # auto | auto_buildings | a number
    prob_dtype: str
    crs: str
    gallery: bool
    post: PostSettings
    min_area: float
    track: TrackSettings
    label_source: str  # where SN7 inputs' truth is drawn from, for the gallery
    rasterize: RasterizeSettings
    max_scene_px: int = 4 * 1024 * 1024  # larger inputs are predicted window by window

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PredictSettings:
        p = cfg.predict
        check_predict(p)
        threshold = p.threshold if p.threshold in AUTO_THRESHOLDS else float(p.threshold)
        return cls(
            out_dir=Path(p.out_dir or cfg.paths.run_dir),
            threshold=threshold,
            prob_dtype=p.prob_dtype,
            crs=p.crs,
            gallery=bool(p.gallery),
            post=PostSettings.from_config(cfg.post),
            min_area=float(p.min_area),
            track=TrackSettings.from_config(cfg.track),
            label_source=cfg.data.label_source,
            rasterize=RasterizeSettings(cfg.data.alpha_band, cfg.data.all_touched),
            max_scene_px=int(p.get("max_scene_px", cls.max_scene_px)),
        )


def list_inputs(spec: str) -> list[Path]:
    """A GeoTIFF, a folder of them, or a glob pattern -> sorted paths."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in TIF_SUFFIXES)
        if not files:
            raise DataError("folder holds no .tif/.tiff files", path)
        return files
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)))
        if not files:
            raise DataError(f"no file matches the pattern {spec!r}")
        return files
    return [path]  # a single file; a missing one is reported when it is read


def resolve_thresholds(
    settings: PredictSettings, loaded: LoadedModel, tta: bool = False
) -> tuple[float, float]:
    """(mask threshold, building threshold). A number is both; `auto` takes what evaluate chose
    on this checkpoint's selection split (pixel threshold for the mask GeoTIFF, building threshold
    for the footprints, so predict writes the footprints evaluate scored); `auto_buildings` the
    building threshold for both. Stored thresholds are used only when they were chosen for this
    very file with these footprint settings (post, min_area, track); anything else is a one-line
    error."""
    value = settings.threshold
    if value not in AUTO_THRESHOLDS:
        return float(value), float(value)
    fix = (
        f"run `python evaluate.py ckpt_path={loaded.path}` (it chooses thresholds on the "
        "checkpoint's selection split) or give predict.threshold=<number>"
    )
    stored = read_selected(loaded.path)
    if stored is None:
        raise ConfigError(
            f"no thresholds chosen on a selection split are stored; {fix}", loaded.path
        )
    why = mismatch(stored, file_sha256(loaded.path), settings.post.as_dict(), settings.min_area,
                   settings.track.as_dict(), tta=tta)  # fmt: skip
    if why is not None:
        raise ConfigError(f"stored thresholds do not apply: {why}; {fix}", loaded.path)
    building = building_threshold_for(settings.track.chosen, stored.pixel, stored.building)
    mask = building if value == "auto_buildings" else stored.pixel
    where = stored.selected_on
    scaled = "" if building == stored.building else " (track=auto's, relative to the pixel one)"
    log.info(
        "thresholds (%s): mask %.2f, buildings %.3f%s, chosen on split %s (%s) of %s",
        value, mask, building, scaled, where.get("split"), ", ".join(where.get("aois") or []),
        where.get("data_root"),
    )  # fmt: skip
    return mask, building


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


@dataclass
class Month:
    path: Path
    tile: TileInput
    prob: np.ndarray


def predict_month(
    path: Path, loaded, predictor, mask_threshold: float, settings: PredictSettings
) -> Month:
    """Probability and mask GeoTIFFs of one image (the buildings come once its AOI is tracked)."""
    tile_in = read_tile(path, loaded.spec)
    prob = predictor(tile_in.model_input)
    valid = tile_in.valid
    out_dir, stem = settings.out_dir, path.stem
    if settings.prob_dtype == "float32":
        write_geotiff(
            out_dir / f"{stem}_prob.tif",
            np.where(valid, prob, np.nan).astype(np.float32),
            tile_in.info,
            nodata=float("nan"),
        )
    else:
        prob8 = np.round(prob * 255).astype(np.uint8)
        write_geotiff(out_dir / f"{stem}_prob.tif", prob8, tile_in.info, valid=valid)
    pred = settings.post.clean((prob >= mask_threshold) & valid)
    mask = np.where(valid, pred, IGNORE).astype(np.uint8)
    write_geotiff(out_dir / f"{stem}_mask.tif", mask, tile_in.info, nodata=IGNORE)
    return Month(path, tile_in, prob)


def write_aoi_buildings(
    aoi, months: list[Month], footprint: FootprintSettings, settings: PredictSettings
) -> TrackedMonths:
    """Track the AOI's buildings over its months (the function evaluate scores) and write them:
    per month a GeoJSON, per AOI the tracks table and the SN7 challenge CSV."""
    tracked = track_aoi(
        settings.track, [m.prob for m in months], [m.tile.valid for m in months], footprint
    )
    labels = [month_label(m.path.stem, i) for i, m in enumerate(months)]
    for t, month in enumerate(months):
        ids, polygons = tracked.ids(t), tracked.polygons(t)
        first = [labels[tracked.first_seen[i]] for i in ids]
        frame = buildings_frame(polygons, ids, month.prob, month.tile.info, settings.crs, first,
                                tracked.is_new(t))  # fmt: skip
        write_geojson(settings.out_dir / f"{month.path.stem}_buildings.geojson", frame)
    if len(months) >= 2:
        name = aoi or months[0].path.stem
        write_text_atomic(
            settings.out_dir / f"{name}_tracks.csv",
            tracks_table(tracked, labels).to_csv(index=False),
        )
        write_text_atomic(
            settings.out_dir / f"{name}_sn7.csv", sn7_csv(tracked, [m.path.stem for m in months])
        )
    return tracked


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


def draw_month(pictures: Pictures, month: Month, threshold: float, settings: PredictSettings):
    """A gallery tile; SN7 inputs whose labels are found get their truth and IoU beside it."""
    tile = image_files_of(month.path, settings.label_source)
    truth = iou = None
    if tile is not None:
        truth = rasterize_tile(tile, settings.rasterize).mask
        iou = sweep_rows([threshold], tile_counts(month.prob, truth, [threshold]))[0]["iou"]
    pictures.add_month(month.path.stem, month.tile.pixels, month.prob, threshold, truth, iou)


def predict(cfg: DictConfig, given: set[str] | frozenset = frozenset()) -> list[dict]:
    configure_threads(cfg.get("threads"))
    settings = PredictSettings.from_config(cfg)
    infer = InferSettings.from_config(cfg)
    loaded = load_model(cfg.ckpt_path, cfg.get("trusted_models") or ())
    check_against_checkpoint(cfg, loaded, set(given))
    inputs = list_inputs(str(cfg.input))
    mask_threshold, building_threshold = resolve_thresholds(settings, loaded, infer.tta)
    footprint = FootprintSettings(building_threshold, settings.post, settings.min_area)
    predictor = predictor_for(infer, loaded)
    out_dir = settings.out_dir
    pictures = Pictures(out_dir, loaded.spec.rgb_channels) if settings.gallery else None
    done, failed = [], {}
    with progress_bar() as bar:
        task = bar.add_task("tiles", total=len(inputs))
        for aoi, paths in aoi_groups(inputs):
            months = []
            for path in paths:
                try:
                    if is_large(path, settings.max_scene_px):
                        if len(paths) > 1:
                            log.warning(
                                "%s: larger than predict.max_scene_px, so predicted window by "
                                "window and its buildings cut from this month alone (ids of its "
                                "own, not tracked with the AOI's other months)",
                                path.name,
                            )
                        n = predict_scene(path, loaded, predictor, mask_threshold, footprint,
                                          settings)  # fmt: skip
                        done.append({"aoi": aoi, "tiles": [path.stem], "buildings": n})
                    else:
                        months.append(
                            predict_month(path, loaded, predictor, mask_threshold, settings)
                        )
                except SN7Error as exc:
                    failed[str(path)] = str(exc)
                    console.print(f"[red]skipped[/red] {exc}")
                bar.advance(task)
            if not months:
                continue
            tracked = write_aoi_buildings(aoi, months, footprint, settings)
            if pictures is not None:
                for month in months:
                    draw_month(pictures, month, mask_threshold, settings)
                names = [month_label(m.path.stem, i) for i, m in enumerate(months)]
                pictures.add_aoi(aoi or months[0].path.stem, tracked, None, names,
                                 months[0].prob.shape)  # fmt: skip
            n_buildings = len(tracked.footprints())
            done.append({"aoi": aoi, "tiles": [m.path.stem for m in months],
                         "buildings": n_buildings})  # fmt: skip
    if pictures is not None:
        pictures.finish()
    n_tiles = sum(len(d["tiles"]) for d in done)
    console.print(
        f"predicted {n_tiles} tile(s) into {out_dir}: masks at threshold {mask_threshold:.2f}, "
        f"{sum(d['buildings'] for d in done)} buildings (track={settings.track.describe()}, "
        f"threshold {building_threshold:.2f})"
        + (f"; gallery: {out_dir / 'gallery' / 'index.png'}" if pictures and done else "")
    )
    if failed:
        raise DataError(
            f"{len(failed)} of {len(inputs)} input(s) could not be predicted:\n"
            + "\n".join(f"  - {msg}" for msg in failed.values())
        )
    return done
