"""Evaluation reports: metrics.json, metrics.md (tables a person reads), per_tile.csv, pr_curve.png,
and the copy of the small artifacts into results/<name>/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from sn7.utils.atomic import write_json_atomic, write_text_atomic
from sn7.utils.console import console
from sn7.utils.markdown import markdown_table
from sn7.viz.plots import pr_curve_figure, save_figure

_PIXEL_KEYS = ("threshold", "iou", "precision", "recall", "f1")
_BUILDING_KEYS = ("threshold", "tp", "fp", "fn", "precision", "recall", "f1", "matched_iou_0_25")
_BUILDING_COLUMNS = ["threshold", "TP", "FP", "FN", "precision", "recall", "F1", "matches IoU>0.25"]


def _table(columns: list[str], rows: list[list]) -> str:
    return markdown_table(columns, rows, formats={"threshold": ".2f"})


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def header_section(m: dict) -> str:
    best = m["pixel"]["best"]
    model = ", ".join(f"{k}={v}" for k, v in m["model"].items() if k != "_target_")
    return "\n".join(
        [
            f"# Evaluation: {Path(m['checkpoint']).name}",
            "",
            f"- checkpoint: `{m['checkpoint']}`",
            f"- model: {m['model'].get('_target_', '?').rsplit('.', 1)[-1]} ({model})",
            f"- data: `{m['data_root']}`, split **{m['split']}**: {m['n_tiles']} full tiles of "
            f"AOI(s) {', '.join(m['aois'])}",
            f"- threshold: {best['threshold']:.2f} ({m['threshold_mode'].replace('_', ' ')}); "
            f"{m['seconds_per_tile']:.1f} s per tile",
        ]
    )


def pixel_section(m: dict) -> str:
    best, best_f1 = m["pixel"]["best"], m["pixel"]["best_f1"]
    chosen = "best IoU" if m["threshold_mode"] == "best_iou" else "fixed"
    rows = [
        [chosen, *[best[k] for k in _PIXEL_KEYS]],
        ["best F1", *[best_f1[k] for k in _PIXEL_KEYS]],
    ]
    return _section(
        "Full-tile pixel metrics",
        _table(["", "threshold", "IoU", "precision", "recall", "F1"], rows),
    )


def buildings_section(m: dict) -> str | None:
    b = m.get("building")
    if not b:
        return None
    title = f"Buildings (one-to-one, IoU >= {b['iou_match']}, predictions >= {b['min_area']} px)"
    return _section(title, _table(_BUILDING_COLUMNS, [[b[k] for k in _BUILDING_KEYS]]))


def building_sweep_section(m: dict) -> str | None:
    sweep = m.get("building_sweep")
    if not sweep:
        return None
    rows = [[r[k] for k in _BUILDING_KEYS] for r in sweep]
    return _section("Buildings vs threshold", _table(_BUILDING_COLUMNS, rows))


def crop_section(m: dict) -> str | None:
    crop = m.get("crop")
    if not crop:
        return None
    best = m["pixel"]["best"]
    rows = [
        ["full tiles (sliding window)", best["threshold"], best["iou"]],
        ["grid crops (as in training)", crop["threshold"], crop["iou"]],
    ]
    return _section(
        "Full tiles vs training crops", _table(["measured on", "threshold", "IoU"], rows)
    )


def threshold_sweep_section(sweep: list[dict]) -> str | None:
    if not sweep:
        return None
    rows = [[r[k] for k in _PIXEL_KEYS] for r in sweep]
    return _section(
        "Threshold sweep (one pass)",
        _table(["threshold", "IoU", "precision", "recall", "F1"], rows),
    )


def per_tile_section(table: list[dict]) -> str | None:
    if not table:
        return None
    keys = ("iou", "precision", "recall", "f1", "building_tp", "building_fp", "building_fn")
    rows = [[f"{t['aoi']} {t['date']}", *[t[k] for k in keys], t["building_f1"]] for t in table]
    columns = ["tile", "IoU", "P", "R", "F1", "bldg TP", "bldg FP", "bldg FN", "bldg F1"]
    return _section("Per tile", _table(columns, rows))


def metrics_markdown(m: dict, table: list[dict], sweep: list[dict]) -> str:
    """metrics.md: one block per section, in reading order; a section whose data the metrics
    lack (no building sweep, no crop metrics, ...) is left out. A new section is one more
    builder returning a string (or None) added to this list."""
    sections = [
        header_section(m),
        pixel_section(m),
        buildings_section(m),
        building_sweep_section(m),
        crop_section(m),
        threshold_sweep_section(sweep),
        per_tile_section(table),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def write_outputs(out_dir: Path, metrics: dict, table: list[dict], sweep: list, chosen: dict):
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "metrics.md", metrics_markdown(metrics, table, sweep))
    write_text_atomic(out_dir / "per_tile.csv", pd.DataFrame(table).to_csv(index=False))
    title = f"{Path(metrics['checkpoint']).name}: {metrics['split']} ({metrics['n_tiles']} tiles)"
    save_figure(pr_curve_figure(sweep, chosen, title), out_dir / "pr_curve.png")


def publish(out_dir: Path, target: Path) -> None:
    """Copy the small, human-facing artifacts into results/<name>/ (committed to the repo)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.md", "metrics.json", "pr_curve.png"):
        shutil.copyfile(out_dir / name, target / name)
    gallery = sorted((out_dir / "gallery").glob("*.png"))
    if gallery:
        (target / "gallery").mkdir(exist_ok=True)
        for path in gallery:
            shutil.copyfile(path, target / "gallery" / path.name)
    console.print(f"published to {target}")


def print_summary(m: dict, out_dir: Path) -> None:
    best, b = m["pixel"]["best"], m["building"]
    console.print(
        f"[bold]{m['split']}[/bold] ({m['n_tiles']} tiles): pixel IoU {best['iou']:.4f} "
        f"P {best['precision']:.4f} R {best['recall']:.4f} F1 {best['f1']:.4f} "
        f"@ {best['threshold']:.2f} | building F1 {b['f1']:.4f} "
        f"(TP {b['tp']} FP {b['fp']} FN {b['fn']})"
        + (f" | crop IoU {m['crop']['iou']:.4f}" if m["crop"] else "")
    )
    console.print(f"wrote {out_dir}/metrics.json, metrics.md, per_tile.csv, pr_curve.png")
