"""One markdown table from many series runs (python series.py -m ...): AOI x degradation x tracker.

    python -m sn7.viz.series_table outputs/series/ceiling1 outputs/series/body1 \
        --out results/series/ceiling_table.md

A run is any folder holding a series `metrics.json`; sweep dirs are searched one level down. Rows
are grouped by degradation, then tracker (with its threshold), then AOI, and each group ends with
the mean over its AOIs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sn7.errors import SN7Error
from sn7.utils.atomic import write_text_atomic
from sn7.utils.markdown import markdown_table

COLUMNS = ["degradation", "tracker", "AOI", "SCOT", "tracking", "change", "change TP",
           "change FP", "change FN", "mismatches", "s / AOI"]  # fmt: skip


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for path in paths:
        if (path / "metrics.json").is_file():
            runs.append(path)
        else:
            runs += sorted(p.parent for p in path.glob("*/metrics.json"))
    if not runs:
        raise SN7Error(f"no series metrics.json in {[str(p) for p in paths]}")
    return runs


def tracker_name(m: dict) -> str:
    track = dict(m["track"])
    mode = track.pop("mode")
    name = f"{mode} @ {m['footprints']['threshold']:.2f}"
    return f"auto: {name}" if m.get("track_chosen") else name


def rows_of(runs: list[Path]) -> list[list]:
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    metrics.sort(key=lambda m: (m["degrade"]["name"], tracker_name(m)))
    rows = []
    for m in metrics:
        head = [m["degrade"]["name"], tracker_name(m)]
        counts = ("change_tp", "change_fp", "change_fn", "mismatches")
        for aoi, r in sorted(m["per_aoi"].items()):
            rows.append([*head, aoi[:9], r["scot"], r["tracking"], r["change"],
                         *[r[k] for k in counts], r["seconds"]])  # fmt: skip
        mean = m["mean"]
        rows.append([*head, "**mean**", mean["scot"], mean["tracking"], mean["change"],
                     *[f"{mean[k]:.1f}" for k in counts], mean["seconds"]])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        table = markdown_table(COLUMNS, rows_of(find_runs(args.paths)),
                               formats={"s / AOI": ".1f"})  # fmt: skip
    except SN7Error as exc:
        print(f"sn7 error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        write_text_atomic(args.out, table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
