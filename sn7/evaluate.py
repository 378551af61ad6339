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
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sn7.checks import check_eval, check_infer
from sn7.constants import BUILDING, IGNORE
from sn7.data.datasets import GridCropDataset
from sn7.inference.checkpoint import check_against_checkpoint, load_model
from sn7.inference.scope import Scope, held_out, report_scope, selection_scope
from sn7.inference.scoring import ReportSettings, SplitScore, score_split
from sn7.inference.sliding_window import predictor_for
from sn7.inference.thresholds import (
    SelectedThresholds,
    candidates,
    file_sha256,
    mismatch,
    read_selected,
)
from sn7.inference.tracking import TrackedMonths
from sn7.metrics.pixel import (
    best_row,
    counts_from,
    scores,
    sweep_metric,
    sweep_rows,
    threshold_grid,
)
from sn7.metrics.scot import scot_mean
from sn7.utils.config import to_container
from sn7.utils.console import console, progress_bar
from sn7.utils.hardware import configure_threads
from sn7.viz.change_map import change_map
from sn7.viz.gallery import Gallery
from sn7.viz.panels import rgb_preview
from sn7.viz.report import print_summary, publish, write_outputs

log = logging.getLogger(__name__)


def choose_thresholds(cfg, loaded, predictor, grid: list[float], given) -> SelectedThresholds:
    """Thresholds chosen on the selection split: stored ones when they still apply, else chosen
    now (and stored). A fixed eval.threshold is used as given."""
    ev = cfg.eval
    post = to_container(cfg.post)
    if ev.threshold is not None:
        t = float(ev.threshold)
        return SelectedThresholds(t, t, {"split": "given", "role": "eval.threshold"}, post,
                                  ev.min_area, "")  # fmt: skip
    sha = file_sha256(loaded.path)
    building_grid = [float(t) for t in (ev.building_thresholds or [])] or grid
    grids = (grid, building_grid)
    stored = read_selected_or_none(loaded.path)
    if stored is not None:
        why = mismatch(stored, sha, post, ev.min_area, grids)
        if why is None:
            return stored
        console.print(f"[yellow]note: stored thresholds not used: {why}[/yellow]")
    scope = selection_scope(cfg, loaded, given)
    console.print(
        f"choosing thresholds on the selection split ({len(scope.rows())} images of "
        f"{', '.join(scope.describe()['aois'])}) ..."
    )
    score = run_scoring(
        scope, loaded, predictor, grid, sweep_buildings=building_grid, sweep_post=post,
        sweep_min_area=ev.min_area, min_truth_area=ev.min_truth_area,
    )  # fmt: skip
    pixel = best_row(sweep_rows(grid, score.pixel_counts), "iou")
    building_t, building = max(
        score.building_sweep.items(), key=lambda kv: (kv[1].as_dict()["f1_sn7"], -kv[0])
    )
    selected = SelectedThresholds(
        pixel=pixel["threshold"],
        building=building_t,
        selected_on=scope.describe(),
        post=post,
        min_area=float(ev.min_area),
        checkpoint_sha256=sha,
        pixel_iou=pixel["iou"],
        building_f1=building.as_dict()["f1_sn7"],
        pixel_grid=candidates(grid),
        building_grid=candidates(building_grid),
    )
    path = selected.save(loaded.path)
    log.info("thresholds chosen on the selection split stored in %s", path)
    return selected


def read_selected_or_none(path: Path) -> SelectedThresholds | None:
    """Stored thresholds; an unreadable or old file is replaced by choosing again (with a note)."""
    from sn7.errors import CheckpointError

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


class Pictures:
    """Gallery tiles and per-AOI change maps, drawn while the report split streams by."""

    def __init__(self, out_dir: Path, n_gallery: int, spec, threshold: float):
        self.gallery = Gallery(out_dir / "gallery")
        self.change_dir = out_dir / "change_maps"
        self.n_gallery, self.spec, self.threshold = n_gallery, spec, threshold
        self.n_drawn = 0
        self.change_maps: list[Path] = []

    def on_month(self, month, iou: float) -> None:
        if self.n_drawn < self.n_gallery:
            rgb = rgb_preview(month.tile.pixels, self.spec.rgb_channels)
            self.gallery.add(month.row.stem, rgb, month.prob, self.threshold, month.mask, iou)
            self.n_drawn += 1

    def on_aoi(self, aoi, months, tracked, truths) -> None:
        if tracked is None or len(months) < 2:
            return
        truth = None
        if all(t.ids is not None for t in truths):
            truth = TrackedMonths([list(zip(t.ids, t.geoms, strict=True)) for t in truths])
        path = self.change_dir / f"{aoi}.png"
        names = [m.row.date for m in months]
        change_map(tracked, truth, names, months[0].prob.shape, path, title=aoi)
        self.change_maps.append(path)

    def finish(self) -> None:
        self.gallery.finish()


def evaluate(cfg: DictConfig, given: set[str] | frozenset = frozenset()) -> dict:
    """Evaluate cfg.ckpt_path. `given`: config keys the user set explicitly (they win over the
    checkpoint's training config; the CLI passes its command-line keys)."""
    configure_threads(cfg.get("threads"))
    ev = cfg.eval
    check_eval(ev)
    check_infer(cfg.infer)
    loaded = load_model(cfg.ckpt_path, cfg.get("trusted_models") or ())
    given = set(given)
    check_against_checkpoint(cfg, loaded, given)
    scope = report_scope(cfg, loaded, given)
    predictor = predictor_for(cfg, loaded)
    grid = threshold_grid(**ev.thresholds)
    selected = choose_thresholds(cfg, loaded, predictor, grid, given)
    grid = sorted(set(grid) | {selected.pixel})
    out_dir = Path(cfg.paths.run_dir)
    pictures = Pictures(out_dir, int(ev.gallery), loaded.spec, selected.pixel)
    report = ReportSettings(
        to_container(cfg.track), selected.building, to_container(cfg.post), ev.min_area
    )
    table: list[dict] = []

    def on_month(month) -> None:
        row = tile_row(month, grid.index(selected.pixel))
        table.append(row)
        pictures.on_month(month, row["iou"])

    score = run_scoring(
        scope, loaded, predictor, grid, min_truth_area=ev.min_truth_area, report=report,
        on_month=on_month, on_aoi=pictures.on_aoi,
    )  # fmt: skip
    pictures.finish()
    crop = None
    if ev.crop_metrics:
        crop = crop_metrics(loaded, predictor, scope.rows(), selected.pixel)
    metrics = assemble_metrics(cfg, loaded, scope, selected, score, crop, pictures, given)
    sweep = sweep_rows(grid, score.pixel_counts)
    write_outputs(out_dir, metrics, table, sweep, metrics["pixel"]["headline"])
    if ev.publish:
        publish(out_dir, Path(ev.publish))
    print_summary(metrics, out_dir)
    return metrics


def tile_row(month, t_index: int) -> dict:
    """One row of per_tile.csv: pixel scores at the selected threshold, tracked buildings."""
    pix = sweep_rows([0.0], month.pixel_counts[t_index : t_index + 1])[0]
    valid = month.mask != IGNORE
    b = month.buildings.as_dict() if month.buildings is not None else {}
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


def assemble_metrics(cfg, loaded, scope, selected, score: SplitScore, crop, pictures, given):
    ev = cfg.eval
    grid = score.thresholds
    sweep = sweep_rows(grid, score.pixel_counts)
    headline = sweep[grid.index(selected.pixel)]
    oracle = best_row(sweep, "iou")
    reported = scope.describe()
    is_held_out = held_out(cfg, loaded, scope, selected, given)
    tracked_pixel = scores(*score.tracked_counts[:3].tolist())
    scot = None
    if score.scot:
        scot = scot_mean(score.scot)
        scot["per_aoi"] = {aoi: r.as_dict() for aoi, r in sorted(score.scot.items())}
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
        "track": to_container(cfg.track),
        "thresholds": {"pixel": selected.pixel, "building": selected.building},
        "pixel": {
            "headline": _public(headline),
            "oracle": _public(oracle) | {"note": "best on the reported split itself"},
            "sweep": [_public(r) for r in sweep],
        },
        "building": {
            "threshold": selected.building,
            "min_area": ev.min_area,
            **score.buildings.as_dict(),
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
