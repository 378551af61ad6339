"""SCOT against degradation strength, one line per tracker (and a panel per AOI), from series
runs of one degradation at several strengths:

    python series.py -m data.root=../shared/sn7_label_series degrade=network \
        degrade.strength=0,0.25,0.5,0.75,1 track=auto,winner hydra.sweep.dir=outputs/strength
    python -m sn7.viz.strength_plot outputs/strength --out results/series/strength.png

A run is any folder holding a series `metrics.json` (sweep dirs are searched one level down).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sn7.errors import SN7Error
from sn7.utils.atomic import atomic_path
from sn7.viz.series_table import find_runs, tracker_name


def curves(runs: list[Path]) -> tuple[str, dict[str, dict[str, list[tuple[float, float]]]]]:
    """(degradation name, {AOI or "mean": {tracker: [(strength, SCOT), ...] by strength}})."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    names = set()
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        names.add(m["degrade"]["name"])
        strength = float(m["degrade"].get("strength", 1.0))
        tracker = tracker_name(m)
        for aoi, r in m["per_aoi"].items():
            out[aoi[:9]][tracker].append((strength, r["scot"]))
        out["mean"][tracker].append((strength, m["mean"]["scot"]))
    if len(names) != 1:
        raise SN7Error(f"strength plot: runs of one degradation, got {sorted(names)}")
    for panel in out.values():
        for points in panel.values():
            points.sort()
    return names.pop(), out


def plot(name: str, data: dict, out: Path) -> Path:
    panels = [*sorted(k for k in data if k != "mean"), "mean"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), sharey=True)
    for ax, panel in zip(list(getattr(axes, "flat", [axes])), panels, strict=True):
        for tracker, points in sorted(data[panel].items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=tracker)
        ax.set_title(panel)
        ax.set_xlabel(f"{name} strength (0 = truth)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes_list = list(getattr(axes, "flat", [axes]))
    axes_list[0].set_ylabel("SCOT")
    axes_list[-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        name, data = curves(find_runs(args.paths))
    except SN7Error as exc:
        print(f"sn7 error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {plot(name, data, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
