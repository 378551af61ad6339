"""Stage 3, evaluate: full-tile metrics of a checkpoint on a split of an SN7 root.

Full tiles are predicted by overlapping sliding windows; one pass accumulates pixel counts for a
whole threshold grid; building-level F1 is computed at the chosen threshold. Model and input
settings come from the checkpoint; data root, split and subset default to those it was trained on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sn7.checks import check_data, check_eval, check_infer
from sn7.constants import BUILDING, IGNORE
from sn7.data.datasets import GridCropDataset
from sn7.data.footprints import load_footprints
from sn7.data.layout import discover_images
from sn7.data.prepared import prepare
from sn7.data.raster_io import read_png
from sn7.errors import ConfigError
from sn7.inference.checkpoint import LoadedModel, load_model
from sn7.inference.postprocess import clean_mask
from sn7.inference.sliding_window import predictor_for
from sn7.inference.tiles import read_tile
from sn7.inference.vectorize import vectorize
from sn7.metrics.buildings import BuildingCounts, match_buildings
from sn7.metrics.pixel import (
    best_row,
    counts_from,
    sweep_metric,
    sweep_rows,
    threshold_grid,
    tile_counts,
)
from sn7.utils.atomic import write_json_atomic
from sn7.utils.config import to_container
from sn7.utils.console import progress_bar
from sn7.utils.hardware import configure_threads
from sn7.viz.gallery import Gallery
from sn7.viz.panels import rgb_preview
from sn7.viz.report import print_summary, publish, write_outputs

log = logging.getLogger(__name__)
INPUT_KEYS = ("bands", "mean", "std", "alpha_band", "crop_size", "normalization")


def command_line_keys() -> set[str]:
    """Config keys the user set on the command line (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return set()
    keys = set()
    for override in HydraConfig.get().overrides.task:
        keys.add(override.lstrip("+~").split("=", 1)[0])
    return keys


def check_against_checkpoint(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> None:
    """Model and input settings come from the checkpoint; a contradicting override is an error."""
    conflicts = []
    for key, value in (cfg.get("model") or {}).items():
        if value is not None and loaded.model_config.get(key) != value:
            conflicts.append(f"model.{key}={value} (checkpoint: {loaded.model_config.get(key)})")
    spec = loaded.spec.to_dict()
    for key in INPUT_KEYS:
        if f"data.{key}" in given:
            value = to_container(cfg.data[key])
            if value != spec[key]:
                conflicts.append(f"data.{key}={value} (checkpoint: {spec[key]})")
    if conflicts:
        raise ConfigError(
            "override(s) contradict the checkpoint, which defines the model and its input: "
            + "; ".join(conflicts)
            + ". Drop them: evaluate and predict read these settings from the checkpoint",
            loaded.path,
        )


def data_config(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> DictConfig:
    """data/split/subset/seed for prepare: command line > checkpoint's training config > default."""
    trained = loaded.run_config
    merged = {g: to_container(cfg[g]) for g in ("data", "split", "subset")} | {"seed": cfg.seed}
    for group in ("data", "split", "subset"):
        for key, value in (trained.get(group) or {}).items():
            if f"{group}.{key}" not in given and group not in given:
                merged[group][key] = value
    if "seed" not in given and "seed" in trained:
        merged["seed"] = trained["seed"]
        for group in ("split", "subset"):  # checkpoints from before split/subset had own seeds
            if group in trained and "seed" not in trained[group] and f"{group}.seed" not in given:
                merged[group]["seed"] = trained["seed"]
    if "data.root" in given and "data.work_dir" not in given:
        merged["data"]["work_dir"] = to_container(cfg.data.work_dir)  # derived from the new root
    merged["data"].update({k: v for k, v in loaded.spec.to_dict().items()})
    return OmegaConf.create(merged)


def truth_footprints(tile, info, min_area: float) -> list:
    """True building polygons (pixel space) of at least `min_area` pixels."""
    geoms = load_footprints(tile.labels, tile.label_space, info).geoms
    return [g for g in geoms if g.area >= min_area]


def scored_buildings(preds: list, truths: list, mask: np.ndarray) -> tuple[list, list]:
    """The predicted and true buildings that building metrics compare, on valid pixels only.

    A true building counts when at most half of it is ignored (alpha = 0, UDM), and only its
    valid part: predictions are made on valid pixels, so a perfect one matches it with IoU 1.
    A prediction lying mostly on a true building that does not count is not scored either,
    else the visible sliver of a clouded building would be a false positive.
    """
    if not truths or not (mask == IGNORE).any():
        return preds, truths
    ignored = shapely.union_all(vectorize(mask == IGNORE).polygons)
    kept, dropped = [], []
    for g in truths:
        hidden = g.intersection(ignored).area
        if hidden > 0.5 * g.area:
            dropped.append(g)
        else:
            kept.append(g.difference(ignored) if hidden > 0 else g)
    if dropped:
        off = shapely.union_all(dropped)
        preds = [p for p in preds if p.intersection(off).area <= 0.5 * p.area]
    return preds, kept


def crop_counts(loaded, predictor, rows: pd.DataFrame, thresholds: list[float]) -> np.ndarray:
    """Sweep counts over the grid crops training validates on (crop size of the checkpoint)."""
    dataset = GridCropDataset(rows, loaded.spec, loaded.spec.crop_size)
    metric = sweep_metric(thresholds)
    for batch in DataLoader(dataset, batch_size=predictor.batch_size):
        metric.update(predictor.forward(batch["image"]), batch["mask"].long())
    return counts_from(metric)


def evaluate(cfg: DictConfig, given: set[str] | frozenset = frozenset()) -> dict:
    """Evaluate cfg.ckpt_path. `given`: config keys the user set explicitly (they win over the
    checkpoint's training config; the CLI passes its command-line keys)."""
    configure_threads(cfg.get("threads"))
    ev = cfg.eval
    check_eval(ev)
    check_infer(cfg.infer)
    loaded = load_model(cfg.ckpt_path)
    given = set(given) | set(cfg.get("given_keys") or [])
    check_against_checkpoint(cfg, loaded, given)
    prep_cfg = data_config(cfg, loaded, given)
    check_data(prep_cfg.data)
    prepared = prepare(prep_cfg, quiet=True)
    rows = prepared.rows(ev.split)
    if rows.empty:
        raise ConfigError(f"eval.split={ev.split} has no images in {prep_cfg.data.root}")
    tiles = {
        t.stem: t
        for t in discover_images(
            prep_cfg.data.root, prep_cfg.data.image_dir, prep_cfg.data.label_source
        )
    }
    predictor = predictor_for(cfg, loaded)
    fixed = ev.threshold is not None
    thresholds = [float(ev.threshold)] if fixed else threshold_grid(**ev.thresholds)
    out_dir = Path(cfg.paths.run_dir)
    start = time.perf_counter()

    n_gallery = int(ev.gallery)
    per_tile_counts, probs, masks, infos, previews = [], [], [], [], []
    with progress_bar() as bar:
        task = bar.add_task("tiles", total=len(rows))
        for i, row in enumerate(rows.itertuples()):
            tile_in = read_tile(row.image, loaded.spec)
            prob = predictor(tile_in.model_input)
            mask = read_png(row.mask)
            per_tile_counts.append(tile_counts(prob, mask, thresholds))
            probs.append(prob)
            masks.append(mask)
            infos.append(tile_in.info)
            if i < n_gallery:
                previews.append(rgb_preview(tile_in.pixels, loaded.spec.rgb_channels))
            bar.advance(task)
    seconds = time.perf_counter() - start
    sweep = sweep_rows(thresholds, np.sum(per_tile_counts, axis=0))
    best, best_f1 = best_row(sweep, "iou"), best_row(sweep, "f1")
    chosen = sweep[0] if fixed else best
    t_index = thresholds.index(chosen["threshold"])

    truths = [
        truth_footprints(tiles[row.stem], infos[i], ev.min_truth_area)
        for i, row in enumerate(rows.itertuples())
    ]

    def building_counts(i: int, threshold: float) -> BuildingCounts:
        pred = clean_mask((probs[i] >= threshold) & (masks[i] != IGNORE), **cfg.post)
        preds = vectorize(pred, ev.min_area).polygons
        return match_buildings(*scored_buildings(preds, truths[i], masks[i]), ev.iou_match)

    building_sweep = []
    for t in ev.building_thresholds or []:
        total = BuildingCounts()
        for i in range(len(rows)):
            total += building_counts(i, float(t))
        building_sweep.append({"threshold": float(t), **total.as_dict()})

    buildings = BuildingCounts()
    table = []
    gallery = Gallery(out_dir / "gallery")
    for i, row in enumerate(rows.itertuples()):
        valid = masks[i] != IGNORE
        counts = building_counts(i, chosen["threshold"])
        buildings += counts
        pix = sweep_rows([chosen["threshold"]], per_tile_counts[i][t_index : t_index + 1])[0]
        table.append(
            {
                "aoi": row.aoi,
                "date": row.date,
                "stem": row.stem,
                "iou": pix["iou"],
                "precision": pix["precision"],
                "recall": pix["recall"],
                "f1": pix["f1"],
                "building_tp": counts.tp,
                "building_fp": counts.fp,
                "building_fn": counts.fn,
                "building_f1": counts.as_dict()["f1"],
                "truth_frac": float((masks[i] == BUILDING).sum() / max(valid.sum(), 1)),
            }
        )
        if i < n_gallery:
            gallery.add(row.stem, previews[i], probs[i], chosen["threshold"], masks[i], pix["iou"])
    gallery.finish()

    crop = None
    if ev.crop_metrics:
        crop_sweep = sweep_rows(thresholds, crop_counts(loaded, predictor, rows, thresholds))
        crop = {"threshold": chosen["threshold"], "iou": crop_sweep[t_index]["iou"]}
        if 0.5 in thresholds:
            crop["iou_at_0_5"] = crop_sweep[thresholds.index(0.5)]["iou"]

    def public(r):
        return {k: r[k] for k in ("threshold", "iou", "precision", "recall", "f1")}

    metrics = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": ev.split,
        "n_tiles": len(rows),
        "data_root": str(Path(prep_cfg.data.root).resolve()),
        "aois": sorted(rows["aoi"].unique().tolist()),
        "model": loaded.model_config,
        "pixel": {
            "best": public(chosen),
            "best_f1": public(best_f1),
            "sweep": [public(r) for r in sweep],
        },
        "building": {
            "threshold": chosen["threshold"],
            "iou_match": ev.iou_match,
            "min_area": ev.min_area,
            **buildings.as_dict(),
        },
        "building_sweep": building_sweep,
        "crop": crop,
        "seconds_per_tile": seconds / len(rows),
        "threshold_mode": "fixed" if fixed else "best_iou",
    }
    write_outputs(out_dir, metrics, table, sweep, chosen)
    if not fixed:
        write_json_atomic(
            loaded.threshold_file,
            {
                "threshold": chosen["threshold"],
                "iou": chosen["iou"],
                "building_threshold": max(
                    building_sweep, key=lambda r: r["f1"], default={"threshold": None}
                )["threshold"],
                "split": ev.split,
                "data_root": metrics["data_root"],
                "metrics": str(out_dir / "metrics.json"),
            },
        )
    if ev.publish:
        publish(out_dir, Path(ev.publish))
    print_summary(metrics, out_dir)
    return metrics
