"""Stage 3, evaluate: full-tile metrics of a checkpoint, chosen on one split, reported on another.

Thresholds (pixel and building) are chosen on the checkpoint's *selection* split and stored with
their provenance beside it; the headline is the *report* split scored at those thresholds, so
nothing reported was chosen on the images it describes. The best threshold on the report split is
shown too, labelled as an oracle. Model and input settings come from the checkpoint; data root,
split and subset default to those it was trained with, except that a foreign data root never
inherits the training split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sn7.checks import check_eval
from sn7.constants import BUILDING, IGNORE
from sn7.data.datasets import GridCropDataset
from sn7.errors import CheckpointError
from sn7.evaluation.error_profile import combine, id_raster, measure, preset_steps
from sn7.evaluation.prob_cache import CachedPredictor, cache_salt
from sn7.evaluation.scope import Scope, held_out, report_scope, selection_scope
from sn7.evaluation.scoring import FootprintSweep, SplitScore, score_split
from sn7.evaluation.thresholds import (
    SelectedThresholds,
    candidates,
    file_sha256,
    mismatch,
    read_selected,
)
from sn7.inference.checkpoint import check_against_checkpoint, load_model
from sn7.inference.footprints import FootprintSettings, PostSettings
from sn7.inference.sliding_window import InferSettings, predictor_for
from sn7.inference.track_choice import building_threshold_for
from sn7.inference.tracking import TrackedMonths, TrackSettings
from sn7.metrics.pixel import (
    best_row,
    counts_from,
    scores,
    sweep_metric,
    sweep_rows,
    threshold_grid,
)
from sn7.metrics.scot import scot_mean
from sn7.utils.atomic import write_json_atomic
from sn7.utils.cli import command_line
from sn7.utils.console import console, progress_bar
from sn7.utils.hardware import configure_threads
from sn7.viz.pictures import Pictures
from sn7.viz.report import print_summary, publish, write_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """What evaluate needs from conf/evaluate.yaml's eval, post and track nodes, checked once."""

    threshold: float | None  # fixed for both thresholds, else chosen on the selection split
    pixel_grid: list[float]
    building_grid: list[float]
    footprint: FootprintSettings  # threshold: a placeholder until one is chosen
    track: TrackSettings
    iou_match: float
    min_truth_area: float
    crop_metrics: bool
    gallery: int
    publish: str | None
    publish_gallery: int | None  # gallery pictures copied when publishing (the latest); None: all
    prob_cache: str | None  # folder of cached probabilities (null: off)
    error_profile: bool  # measure how the network errs per AOI (a `degrade` preset's numbers)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EvalSettings:
        ev = cfg.eval
        check_eval(ev)
        pixel_grid = threshold_grid(**ev.thresholds)
        building_grid = candidates(ev.building_thresholds or []) or pixel_grid
        return cls(
            threshold=None if ev.threshold is None else float(ev.threshold),
            pixel_grid=pixel_grid,
            building_grid=building_grid,
            footprint=FootprintSettings(
                building_grid[0], PostSettings.from_config(cfg.post), float(ev.min_area)
            ),
            track=TrackSettings.from_config(cfg.track),
            iou_match=float(ev.iou_match),
            min_truth_area=float(ev.min_truth_area),
            crop_metrics=bool(ev.crop_metrics),
            gallery=int(ev.gallery),
            publish=ev.publish,
            publish_gallery=None if ev.get("publish_gallery") is None else int(ev.publish_gallery),
            prob_cache=ev.get("prob_cache"),
            error_profile=bool(ev.get("error_profile", False)),
        )

    def sweep(self, thresholds) -> FootprintSweep:
        return FootprintSweep(self.track, self.footprint, tuple(thresholds), self.iou_match)

    def stored_settings(self) -> dict:
        """The footprint settings thresholds are stored and compared with."""
        return {
            "post": self.footprint.post.as_dict(),
            "min_area": self.footprint.min_area,
            "track": self.track.as_dict(),
        }


def choose_thresholds(settings: EvalSettings, cfg, loaded, predictor, given) -> SelectedThresholds:
    """Thresholds chosen on the selection split: stored ones when they still apply, else chosen
    now (and stored). The building threshold is the one whose tracked footprints (the footprints
    evaluate reports and predict writes) score the best SN7 building F1 there. A fixed
    eval.threshold is used as given."""
    stored_settings = {**settings.stored_settings(), "tta": bool(getattr(predictor, "tta", False))}
    if settings.threshold is not None:
        t = settings.threshold
        return SelectedThresholds(t, t, {"split": "given", "role": "eval.threshold"},
                                  stored_settings["post"], settings.footprint.min_area, "",
                                  track=stored_settings["track"])  # fmt: skip
    sha = file_sha256(loaded.path)
    grids = (settings.pixel_grid, settings.building_grid)
    stored = read_selected_or_none(loaded.path)
    if stored is not None:
        why = mismatch(stored, sha, **stored_settings, grids=grids)
        if why is None:
            return stored
        console.print(f"[yellow]note: stored thresholds not used: {why}[/yellow]")
    scope = selection_scope(cfg, loaded, given)
    console.print(
        f"choosing thresholds on the selection split ({len(scope.rows())} images of "
        f"{', '.join(scope.describe()['aois'])}) ..."
    )
    score = run_scoring(
        scope, loaded, predictor, settings.pixel_grid,
        footprints=settings.sweep(settings.building_grid), min_truth_area=settings.min_truth_area,
    )  # fmt: skip
    pixel = best_row(sweep_rows(settings.pixel_grid, score.pixel_counts), "iou")
    building_t, building = max(
        score.tracked.items(), key=lambda kv: (kv[1].buildings.as_dict()["f1_sn7"], -kv[0])
    )
    selected = SelectedThresholds(
        pixel=pixel["threshold"],
        building=building_t,
        selected_on=scope.describe(),
        post=stored_settings["post"],
        min_area=settings.footprint.min_area,
        checkpoint_sha256=sha,
        track=stored_settings["track"],
        tta=stored_settings["tta"],
        pixel_iou=pixel["iou"],
        building_f1=building.buildings.as_dict()["f1_sn7"],
        pixel_grid=candidates(settings.pixel_grid),
        building_grid=candidates(settings.building_grid),
    )
    path = selected.save(loaded.path)
    log.info("thresholds chosen on the selection split stored in %s", path)
    return selected


def building_threshold(settings: EvalSettings, selected: SelectedThresholds) -> float:
    """The selection split's building threshold, unless track=auto's choice was made on maps
    imitating a model (a `network` preset): then its threshold, scaled by this checkpoint's
    selection-split pixel threshold over that model's (a model half as confident is cut at half
    the threshold). Either way nothing comes from the report split; a given eval.threshold is
    used as given."""
    if settings.threshold is not None:
        return selected.building
    chosen = settings.track.chosen
    building = building_threshold_for(chosen, selected.pixel, selected.building)
    if building != selected.building:
        console.print(
            f"building threshold {building:.3f} = {chosen.threshold:.2f} (track=auto) x pixel "
            f"threshold {selected.pixel:.2f} / {chosen.reference_threshold:.2f} (the model its "
            "choice imitated)"
        )
    return building


def read_selected_or_none(path: Path) -> SelectedThresholds | None:
    """Stored thresholds; an unreadable or old file is replaced by choosing again (with a note)."""
    try:
        return read_selected(path)
    except CheckpointError as exc:
        console.print(f"[yellow]note: {exc}; choosing thresholds again[/yellow]")
        return None


def run_scoring(scope: Scope, loaded, predictor, grid, **kwargs) -> SplitScore:
    rows = scope.rows()
    with progress_bar() as bar:
        task = bar.add_task(f"{scope.split} tiles", total=len(rows))
        return score_split(
            rows, scope.files(), loaded.spec, predictor, grid,
            on_tile_done=lambda: bar.advance(task), **kwargs,
        )  # fmt: skip


def truth_tracks(truths) -> TrackedMonths | None:
    """The true buildings of an AOI's months as tracks (their persistent ids), if they have ids."""
    if not all(t.ids is not None for t in truths):
        return None
    return TrackedMonths.of_truth(truths)


def evaluate(cfg: DictConfig, given: set[str] | frozenset = frozenset()) -> dict:
    """Evaluate cfg.ckpt_path. `given`: config keys the user set explicitly (they win over the
    checkpoint's training config; the CLI passes its command-line keys)."""
    configure_threads(cfg.get("threads"))
    settings = EvalSettings.from_config(cfg)
    infer = InferSettings.from_config(cfg)
    loaded = load_model(cfg.ckpt_path, cfg.get("trusted_models") or ())
    given = set(given)
    check_against_checkpoint(cfg, loaded, given)
    scope = report_scope(cfg, loaded, given)
    predictor = predictor_for(infer, loaded)
    if settings.prob_cache:  # trackers and thresholds compared again never re-run the network
        salt = cache_salt(file_sha256(loaded.path), infer)
        predictor = CachedPredictor(predictor, Path(settings.prob_cache), salt)
    selected = choose_thresholds(settings, cfg, loaded, predictor, given)
    grid = sorted(set(settings.pixel_grid) | {selected.pixel})
    footprint = settings.footprint.at(building_threshold(settings, selected))
    out_dir = Path(cfg.paths.run_dir)
    pictures = Pictures(out_dir, loaded.spec.rgb_channels, settings.gallery)
    table: list[dict] = []

    def on_month(month) -> None:
        row = tile_row(month, grid.index(selected.pixel), footprint.threshold)
        table.append(row)
        pictures.add_month(month.row.stem, month.tile.pixels, month.prob, selected.pixel,
                           month.mask, row["iou"])  # fmt: skip

    profiles: dict[str, dict] = {}

    def on_aoi(aoi, months, tracked, truths) -> None:
        names = [m.row.date for m in months]
        shape = months[0].prob.shape
        pictures.add_aoi(aoi, tracked[footprint.threshold], truth_tracks(truths), names, shape)
        if settings.error_profile:
            profiles[aoi] = aoi_error_profile(aoi, months, truths, selected.pixel)

    score = run_scoring(
        scope, loaded, predictor, grid, footprints=settings.sweep([footprint.threshold]),
        min_truth_area=settings.min_truth_area, on_month=on_month, on_aoi=on_aoi,
    )  # fmt: skip
    pictures.finish()
    crop = None
    if settings.crop_metrics:
        crop = crop_metrics(loaded, predictor, scope.rows(), selected.pixel)
    metrics = assemble_metrics(cfg, loaded, scope, selected, score, crop, pictures, given,
                               settings, footprint)  # fmt: skip
    sweep = sweep_rows(grid, score.pixel_counts)
    if profiles:
        write_error_profile(out_dir / "error_profile.json", profiles, cfg, loaded, selected)
    write_outputs(out_dir, metrics, table, sweep, metrics["pixel"]["headline"])
    if settings.publish:
        publish(out_dir, Path(settings.publish), settings.publish_gallery)
    print_summary(metrics, out_dir)
    return metrics


def aoi_error_profile(aoi: str, months, truths, threshold: float) -> dict | None:
    """How the network errs on one AOI's months (sn7.evaluation.error_profile); None without
    persistent ids in its labels (dropout and misses follow a building across months)."""
    if any(t.ids is None for t in truths):
        console.print(f"[yellow]note: error profile: {aoi} has no persistent ids; skipped[/yellow]")
        return None
    shape = months[0].prob.shape
    index: dict = {}
    ids = np.stack([id_raster(t.geoms, t.ids, index, shape) for t in truths])
    probs = np.stack([m.prob for m in months])
    valid = np.stack([m.mask != IGNORE for m in months])
    return measure(probs, ids, valid, threshold)


def write_error_profile(path: Path, profiles: dict, cfg, loaded, selected) -> None:
    """error_profile.json: per AOI and combined, with the `degrade` steps that imitate it."""
    found = {aoi: p for aoi, p in profiles.items() if p is not None}
    if not found:
        return
    profile = combine(list(found.values()))
    write_json_atomic(path, {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "checkpoint_sha256": file_sha256(loaded.path),
        "command": command_line() or "evaluate() from Python",
        "aois": sorted(found),
        "thresholds_selected_on": selected.selected_on,
        "per_aoi": found,
        "profile": profile,
        "steps": preset_steps(profile),
    })  # fmt: skip
    console.print(f"error profile: {path} (python -m sn7.evaluation.error_profile {path} "
                  "--out conf/degrade/network.yaml makes it a degrade preset)")  # fmt: skip


def tile_row(month, t_index: int, building_threshold: float) -> dict:
    """One row of per_tile.csv: pixel scores at the selected threshold, tracked buildings."""
    pix = sweep_rows([0.0], month.pixel_counts[t_index : t_index + 1])[0]
    valid = month.mask != IGNORE
    counts = month.buildings.get(building_threshold)
    b = counts.as_dict() if counts is not None else {}
    return {
        "aoi": month.row.aoi,
        "date": month.row.date,
        "stem": month.row.stem,
        **{k: pix[k] for k in ("iou", "precision", "recall", "f1")},
        "building_tp": b.get("tp"),
        "building_fp": b.get("fp"),
        "building_fn": b.get("fn"),
        "building_f1": b.get("f1"),
        "building_f1_sn7": b.get("f1_sn7"),
        "truth_frac": float((month.mask == BUILDING).sum() / max(valid.sum(), 1)),
    }


def crop_counts(loaded, predictor, rows: pd.DataFrame, thresholds: list[float]):
    """Sweep counts over the grid crops training validates on (crop size of the checkpoint)."""
    dataset = GridCropDataset(rows, loaded.spec, loaded.spec.crop_size)
    metric = sweep_metric(thresholds)
    for batch in DataLoader(dataset, batch_size=predictor.batch_size):
        metric.update(predictor.forward(batch["image"]), batch["mask"].long())
    return counts_from(metric)


def crop_metrics(loaded, predictor, rows: pd.DataFrame, threshold: float) -> dict:
    """IoU on the training-style crops at the selected threshold and at 0.5 (training's val/iou)."""
    grid = sorted({threshold, 0.5})
    crop = sweep_rows(grid, crop_counts(loaded, predictor, rows, grid))
    return {
        "threshold": threshold,
        "iou": crop[grid.index(threshold)]["iou"],
        "iou_at_0_5": crop[grid.index(0.5)]["iou"],
    }


def assemble_metrics(
    cfg, loaded, scope, selected, score: SplitScore, crop, pictures, given, settings, footprint
):
    grid = score.thresholds
    sweep = sweep_rows(grid, score.pixel_counts)
    headline = sweep[grid.index(selected.pixel)]
    oracle = best_row(sweep, "iou")
    reported = scope.describe()
    is_held_out = held_out(cfg, loaded, scope, selected, given)
    tracked = score.tracked[footprint.threshold]
    tracked_pixel = scores(*tracked.tracked_counts[:3].tolist())
    scot = None
    if tracked.scot:
        scot = scot_mean(tracked.scot)
        scot["per_aoi"] = {aoi: r.as_dict() for aoi, r in sorted(tracked.scot.items())}
    return {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": scope.split,
        "n_tiles": score.n_tiles,
        "data_root": reported["data_root"],
        "aois": reported["aois"],
        "model": loaded.model_config,
        "selected_on": selected.selected_on,
        "reported_on": reported,
        "held_out": is_held_out,
        "track": settings.track.as_dict(),
        "track_chosen": None if settings.track.chosen is None else settings.track.chosen.where(),
        "footprints": footprint.as_dict(),
        "thresholds": {"pixel": selected.pixel, "building": footprint.threshold},
        "pixel": {
            "headline": _public(headline),
            "oracle": _public(oracle) | {"note": "best on the reported split itself"},
            "sweep": [_public(r) for r in sweep],
        },
        "building": {
            "threshold": footprint.threshold,
            "min_area": footprint.min_area,
            "iou_match": settings.iou_match,
            **tracked.buildings.as_dict(),
        },
        "tracked_mask": {k: tracked_pixel[k] for k in ("iou", "precision", "recall", "f1")},
        "scot": scot,
        "scot_skipped": score.no_ids or None,
        "crop": crop,
        "seconds_per_tile": score.seconds / max(score.n_tiles, 1),
        "change_maps": [str(p) for p in pictures.change_maps],
    }


def _public(r: dict) -> dict:
    return {k: r[k] for k in ("threshold", "iou", "precision", "recall", "f1")}
