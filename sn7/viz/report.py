"""Evaluation reports: metrics.json, metrics.md (tables a person reads), per_tile.csv, pr_curve.png,
and the copy of the small artifacts into results/<name>/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from sn7.utils.atomic import write_json_atomic, write_text_atomic
from sn7.utils.console import console
from sn7.utils.markdown import markdown_table
from sn7.viz.gallery import INDEX_NAME
from sn7.viz.plots import pr_curve_figure, save_figure

_PIXEL_KEYS = ("threshold", "iou", "precision", "recall", "f1")
_BUILDING_KEYS = ("tp", "fp", "fn", "precision", "recall", "f1")
_SN7_KEYS = ("tp_sn7", "fp_sn7", "fn_sn7", "precision_sn7", "recall_sn7", "f1_sn7")
_BUILDING_COLUMNS = ["rule", "threshold", "TP", "FP", "FN", "precision", "recall", "F1"]


def _table(columns: list[str], rows: list[list]) -> str:
    return markdown_table(columns, rows, formats={"threshold": ".2f"})


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def _where(d: dict) -> str:
    if d.get("split") == "given":
        return "given on the command line (eval.threshold)"
    kind = {"time": "last month(s) of the training AOIs", "aoi": "AOIs of its own"}.get(
        d.get("kind"), ""
    )
    months = d.get("months") or []
    span = f"{months[0]}..{months[-1]}" if len(months) > 1 else "".join(months)
    return (
        f"split **{d.get('split')}** ({d.get('role')}{', ' + kind if kind else ''}): "
        f"{d.get('n_images')} images of {', '.join(d.get('aois') or [])} ({span})"
    )


def header_section(m: dict) -> str:
    model = ", ".join(f"{k}={v}" for k, v in m["model"].items() if k != "_target_")
    held = (
        "**held out**: nothing was chosen or trained on these images"
        if m["held_out"]
        else "**not held out**: these images overlap what the checkpoint was trained or "
        "thresholds were chosen on"
    )
    return "\n".join(
        [
            f"# Evaluation: {Path(m['checkpoint']).name}",
            "",
            f"- checkpoint: `{m['checkpoint']}`",
            f"- model: {m['model'].get('_target_', '?').rsplit('.', 1)[-1]} ({model})",
            f"- data: `{m['data_root']}`",
            f"- reported on: {_where(m['reported_on'])}; {held}",
            f"- thresholds chosen on: {_where(m['selected_on'])}: pixel "
            f"{m['thresholds']['pixel']:.2f}, building {m['thresholds']['building']:.2f}",
            f"- buildings: {footprints_text(m)}; {m['seconds_per_tile']:.1f} s per tile",
        ]
    )


def footprints_text(m: dict) -> str:
    """The settings the reported footprints were cut and tracked with (metrics.json's
    `footprints` and `track`), in one line."""
    fp, track = m["footprints"], dict(m["track"])
    mode = track.pop("mode")
    on = {
        "aggregate": "the temporal mean map",
        "winner": "the collapsed map (each pixel's mean over its months above the floor)",
    }.get(mode, "each month")
    post = ", ".join(f"{k}={v}" for k, v in fp["post"].items())
    options = ", ".join(f"{k}={v}" for k, v in track.items())
    head = f"`track={mode}`" + (f" ({options})" if options else "")
    if m.get("track_chosen"):
        head += f", set by track=auto: {m['track_chosen']}"
    return (
        f"{head}, footprints cut from {on} at threshold {fp['threshold']:.2f}, post ({post}), "
        f"min_area {fp['min_area']:g} px"
    )


def pixel_section(m: dict) -> str:
    head, oracle = m["pixel"]["headline"], m["pixel"]["oracle"]
    rows = [
        ["**headline** (threshold from the selection split)", *[head[k] for k in _PIXEL_KEYS]],
        ["oracle (best on this split itself; not held out)", *[oracle[k] for k in _PIXEL_KEYS]],
    ]
    tracked = m.get("tracked_mask")
    if tracked:
        rows.append(["tracked footprints as masks", "-", *[tracked[k] for k in _PIXEL_KEYS[1:]]])
    return _section(
        "Full-tile pixel metrics",
        _table(["", "threshold", "IoU", "precision", "recall", "F1"], rows),
    )


def buildings_section(m: dict) -> str | None:
    b = m.get("building")
    if not b:
        return None
    rows = [
        ["SN7: IoU > 0.25, optimal one-to-one", b["threshold"], *[b[k] for k in _SN7_KEYS]],
        [
            f"SpaceNet: IoU >= {b.get('iou_match', 0.5):g}",
            b["threshold"],
            *[b[k] for k in _BUILDING_KEYS],
        ],
    ]
    title = f"Buildings (tracked footprints, predictions >= {b['min_area']} px)"
    return _section(title, _table(_BUILDING_COLUMNS, rows))


def scot_section(m: dict) -> str | None:
    scot = m.get("scot")
    if not scot:
        skipped = m.get("scot_skipped")
        if skipped:
            return _section("SCOT", f"not computed: no persistent ids (labels_match) for {skipped}")
        return None
    rows = [
        [aoi, r["scot"], r["track_score"], r["change_score"], r["mismatches"], r["n_months"]]
        for aoi, r in scot["per_aoi"].items()
    ]
    rows.append(["**mean over AOIs**", scot["scot"], scot["track_score"], scot["change_score"],
                 "", ""])  # fmt: skip
    text = (
        "SpaceNet 7's time-series metric: tracking F1 (ids kept across months; an id switch is a "
        "mismatch) and change F1 (new buildings found in the month they appear), combined with "
        "beta = 2; matching IoU > 0.25. SN7 test-set anchors: baseline 0.17, winner 0.41.\n\n"
    )
    columns = ["AOI", "SCOT", "tracking", "change", "mismatches", "months"]
    return _section(f"SCOT (track={m['track'].get('mode')})", text + _table(columns, rows))


def crop_section(m: dict) -> str | None:
    crop = m.get("crop")
    if not crop:
        return None
    head = m["pixel"]["headline"]
    rows = [
        ["full tiles (sliding window)", head["threshold"], head["iou"]],
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
    rows = [
        [f"{t['aoi']} {t['date']}", *[t[k] for k in keys], t["building_f1"], t["building_f1_sn7"]]
        for t in table
    ]
    columns = ["tile", "IoU", "P", "R", "F1", "bldg TP", "bldg FP", "bldg FN", "bldg F1",
               "bldg F1 (SN7)"]  # fmt: skip
    return _section("Per tile", _table(columns, rows))


def metrics_markdown(m: dict, table: list[dict], sweep: list[dict]) -> str:
    """metrics.md: one block per section, in reading order; a section whose data the metrics
    lack (no building sweep, no crop metrics, ...) is left out. A new section is one more
    builder returning a string (or None) added to this list."""
    sections = [
        header_section(m),
        pixel_section(m),
        buildings_section(m),
        scot_section(m),
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


def publish(out_dir: Path, target: Path, gallery: int | None = None) -> None:
    """Copy the small, human-facing artifacts into results/<name>/ (committed to the repo).

    gallery: how many tile pictures to copy, the last by name (a tile's latest month), without the
    contact sheet of them all; None: the whole gallery. The full gallery stays in out_dir, so a
    committed run need not carry every month's picture."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.md", "metrics.json", "pr_curve.png"):
        shutil.copyfile(out_dir / name, target / name)
    for folder in ("gallery", "change_maps"):
        pictures = sorted((out_dir / folder).glob("*.png"))
        if folder == "gallery" and gallery is not None:
            tiles = [path for path in pictures if path.name != INDEX_NAME]
            pictures = tiles[-gallery:] if gallery else []
        if pictures:
            (target / folder).mkdir(exist_ok=True)
            for path in pictures:
                shutil.copyfile(path, target / folder / path.name)
    console.print(f"published to {target}")


def print_summary(m: dict, out_dir: Path) -> None:
    head, b, scot = m["pixel"]["headline"], m["building"], m.get("scot")
    held = "held out" if m["held_out"] else "NOT held out"
    console.print(
        f"[bold]{m['split']}[/bold] ({m['n_tiles']} tiles, {held}; thresholds chosen on "
        f"{m['selected_on'].get('split')}): pixel IoU {head['iou']:.4f} "
        f"P {head['precision']:.4f} R {head['recall']:.4f} @ {head['threshold']:.2f} | "
        f"building F1 {b['f1_sn7']:.4f} (IoU>0.25) {b['f1']:.4f} (IoU>={b.get('iou_match', 0.5):g})"
        + (
            f" | SCOT {scot['scot']:.4f} (tracking {scot['track_score']:.4f}, change "
            f"{scot['change_score']:.4f}, track={m['track'].get('mode')})"
            if scot
            else ""
        )
        + (f" | crop IoU {m['crop']['iou']:.4f}" if m["crop"] else "")
    )
    console.print(f"wrote {out_dir}/metrics.json, metrics.md, per_tile.csv, pr_curve.png")
