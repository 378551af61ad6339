"""Evaluation reports: metrics.json, metrics.md (tables a person reads), per_tile.csv, pr_curve.png,
and the copy of the small artifacts into results/<name>/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from sn7.utils.atomic import write_json_atomic, write_text_atomic
from sn7.utils.console import console
from sn7.viz.plots import pr_curve_figure, save_figure


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _md_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            f"{v:.2f}" if col == "threshold" and isinstance(v, float) else _fmt(v)
            for col, v in zip(columns, row, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metrics_markdown(m: dict, table: list[dict], sweep: list[dict]) -> str:
    best, b = m["pixel"]["best"], m["building"]
    model = ", ".join(f"{k}={v}" for k, v in m["model"].items() if k != "_target_")
    parts = [
        f"# Evaluation: {Path(m['checkpoint']).name}",
        "",
        f"- checkpoint: `{m['checkpoint']}`",
        f"- model: {m['model'].get('_target_', '?').rsplit('.', 1)[-1]} ({model})",
        f"- data: `{m['data_root']}`, split **{m['split']}**: {m['n_tiles']} full tiles of "
        f"AOI(s) {', '.join(m['aois'])}",
        f"- threshold: {best['threshold']:.2f} ({m['threshold_mode'].replace('_', ' ')}); "
        f"{m['seconds_per_tile']:.1f} s per tile",
        "",
        "## Full-tile pixel metrics",
        "",
        _md_table(
            ["", "threshold", "IoU", "precision", "recall", "F1"],
            [
                [
                    "best IoU" if m["threshold_mode"] == "best_iou" else "fixed",
                    *[best[k] for k in ("threshold", "iou", "precision", "recall", "f1")],
                ],
                [
                    "best F1",
                    *[
                        m["pixel"]["best_f1"][k]
                        for k in ("threshold", "iou", "precision", "recall", "f1")
                    ],
                ],
            ],
        ),
        "",
        f"## Buildings (one-to-one, IoU >= {b['iou_match']}, predictions >= {b['min_area']} px)",
        "",
        _md_table(
            ["threshold", "TP", "FP", "FN", "precision", "recall", "F1", "matches IoU>0.25"],
            [
                [
                    b["threshold"],
                    b["tp"],
                    b["fp"],
                    b["fn"],
                    b["precision"],
                    b["recall"],
                    b["f1"],
                    b["matched_iou_0_25"],
                ]
            ],
        ),
    ]
    if m["building_sweep"]:
        parts += [
            "",
            "## Buildings vs threshold",
            "",
            _md_table(
                ["threshold", "TP", "FP", "FN", "precision", "recall", "F1", "matches IoU>0.25"],
                [
                    [
                        r[k]
                        for k in (
                            "threshold",
                            "tp",
                            "fp",
                            "fn",
                            "precision",
                            "recall",
                            "f1",
                            "matched_iou_0_25",
                        )
                    ]
                    for r in m["building_sweep"]
                ],
            ),
        ]
    if m["crop"]:
        parts += [
            "",
            "## Full tiles vs training crops",
            "",
            _md_table(
                ["measured on", "threshold", "IoU"],
                [
                    ["full tiles (sliding window)", best["threshold"], best["iou"]],
                    ["grid crops (as in training)", m["crop"]["threshold"], m["crop"]["iou"]],
                ],
            ),
        ]
    parts += [
        "",
        "## Threshold sweep (one pass)",
        "",
        _md_table(
            ["threshold", "IoU", "precision", "recall", "F1"],
            [[r["threshold"], r["iou"], r["precision"], r["recall"], r["f1"]] for r in sweep],
        ),
        "",
        "## Per tile",
        "",
        _md_table(
            ["tile", "IoU", "P", "R", "F1", "bldg TP", "bldg FP", "bldg FN", "bldg F1"],
            [
                [
                    f"{t['aoi']} {t['date']}",
                    t["iou"],
                    t["precision"],
                    t["recall"],
                    t["f1"],
                    t["building_tp"],
                    t["building_fp"],
                    t["building_fn"],
                    t["building_f1"],
                ]
                for t in table
            ],
        ),
        "",
    ]
    return "\n".join(parts)


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
