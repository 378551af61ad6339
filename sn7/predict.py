"""Stage 4, predict: GeoTIFF(s) -> probability and mask GeoTIFFs, building GeoJSON, gallery.

Outputs line up with the input in a GIS: same CRS, transform and size; invalid input pixels
(alpha = 0) are nodata. Bad inputs are reported by name at the end; the other tiles are still
written.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
from omegaconf import DictConfig

from sn7.checks import check_infer, check_predict
from sn7.constants import IGNORE
from sn7.data.layout import image_files_of
from sn7.data.masks import RasterizeSettings, rasterize_tile
from sn7.data.raster_io import write_geotiff
from sn7.data.vector_io import apply_affine, area_m2, write_geojson
from sn7.errors import DataError, SN7Error
from sn7.inference.checkpoint import LoadedModel, load_model
from sn7.inference.postprocess import clean_mask
from sn7.inference.sliding_window import predictor_for
from sn7.inference.tiles import read_tile
from sn7.inference.vectorize import vectorize
from sn7.metrics.pixel import sweep_rows, tile_counts
from sn7.utils.console import console, progress_bar
from sn7.utils.hardware import configure_threads
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


def resolve_threshold(value, loaded: LoadedModel) -> float:
    """A number, or what evaluate stored for this checkpoint: `auto` the best pixel-IoU
    threshold, `auto_buildings` the best building-F1 one (when evaluate swept it)."""
    if value not in AUTO_THRESHOLDS:
        return float(value)
    if loaded.threshold_file.is_file():
        stored = json.loads(loaded.threshold_file.read_text())
        key = "building_threshold" if value == "auto_buildings" else "threshold"
        if stored.get(key) is None:
            key = "threshold"
            console.print(
                "[yellow]warning: evaluate did not sweep building thresholds "
                "(eval.building_thresholds); using the best pixel-IoU one[/yellow]"
            )
        log.info("threshold %.2f (%s) from %s", stored[key], key, loaded.threshold_file)
        return float(stored[key])
    console.print(
        f"[yellow]warning: no evaluated threshold for {loaded.path.name} "
        f"(run evaluate.py first); using 0.5[/yellow]"
    )
    return 0.5


def buildings_frame(components, prob, info, out_crs: str) -> gpd.GeoDataFrame:
    geoms = gpd.GeoSeries(apply_affine(components.polygons, info.transform), crs=info.crs)
    geoms = geoms.make_valid()
    frame = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(geoms) + 1),
            "area_m2": np.round(area_m2(geoms), 2),
            "area_px": [round(p.area) for p in components.polygons],
            "mean_prob": np.round(components.mean_of(prob), 4),
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


def predict_one(path: Path, loaded, predictor, threshold, cfg, out_dir: Path, gallery) -> dict:
    p = cfg.predict
    tile_in = read_tile(path, loaded.spec)
    prob = predictor(tile_in.model_input)
    valid = tile_in.valid
    pred = clean_mask((prob >= threshold) & valid, **cfg.post)
    stem = path.stem
    if p.prob_dtype == "float32":
        write_geotiff(
            out_dir / f"{stem}_prob.tif",
            np.where(valid, prob, np.nan).astype(np.float32),
            tile_in.info,
            nodata=float("nan"),
        )
    else:
        prob8 = np.round(prob * 255).astype(np.uint8)
        write_geotiff(out_dir / f"{stem}_prob.tif", prob8, tile_in.info, valid=valid)
    mask = np.where(valid, pred, IGNORE).astype(np.uint8)
    write_geotiff(out_dir / f"{stem}_mask.tif", mask, tile_in.info, nodata=IGNORE)
    components = vectorize(pred, p.min_area)
    frame = buildings_frame(components, prob, tile_in.info, p.crs)
    write_geojson(out_dir / f"{stem}_buildings.geojson", frame)
    if gallery is not None:
        tile = image_files_of(path, cfg.data.label_source)
        truth = iou = None
        if tile is not None:
            settings = RasterizeSettings(cfg.data.alpha_band, cfg.data.all_touched)
            truth = rasterize_tile(tile, settings).mask
            iou = sweep_rows([threshold], tile_counts(prob, truth, [threshold]))[0]["iou"]
        rgb = rgb_preview(tile_in.pixels, loaded.spec.rgb_channels)
        gallery.add(stem, rgb, prob, threshold, truth, iou)
    return {"tile": stem, "buildings": len(frame)}


def predict(cfg: DictConfig) -> list[dict]:
    configure_threads(cfg.get("threads"))
    p = cfg.predict
    check_predict(p)
    check_infer(cfg.infer)
    loaded = load_model(cfg.ckpt_path, cfg.get("trusted_models") or ())
    inputs = list_inputs(str(cfg.input))
    threshold = resolve_threshold(p.threshold, loaded)
    predictor = predictor_for(cfg, loaded)
    out_dir = Path(p.out_dir or cfg.paths.run_dir)
    gallery = Gallery(out_dir / "gallery") if p.gallery else None
    done, failed = [], {}
    with progress_bar() as bar:
        task = bar.add_task("tiles", total=len(inputs))
        for path in inputs:
            try:
                done.append(predict_one(path, loaded, predictor, threshold, cfg, out_dir, gallery))
            except SN7Error as exc:
                failed[str(path)] = str(exc)
                console.print(f"[red]skipped[/red] {exc}")
            bar.advance(task)
    if gallery is not None:
        gallery.finish()
    console.print(
        f"predicted {len(done)} tile(s) at threshold {threshold:.2f} into {out_dir} "
        f"({sum(d['buildings'] for d in done)} buildings)"
        + (f"; gallery: {out_dir / 'gallery' / 'index.png'}" if gallery and done else "")
    )
    if failed:
        raise DataError(
            f"{len(failed)} of {len(inputs)} input(s) could not be predicted:\n"
            + "\n".join(f"  - {msg}" for msg in failed.values())
        )
    return done
