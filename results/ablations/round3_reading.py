"""Read round 3's grid from its published runs: per-lever means, the gain rule, calibration.

    python results/ablations/round3_reading.py > /tmp/reading.md

Reads every results/ablations/round3/<lever>/fold<F>_seed<S>/metrics.json (report AOIs; checkpoint
and thresholds chosen on the selection split) and prints two markdown tables:

1. mean ± half-range over seeds per lever and fold, and the issue's rule: a metric is a *gain* on
   a fold when the lever's mean beats the baseline's by more than both half-ranges (each one),
   a *loss* when it trails by as much; a lever counts only with a gain on both folds.
2. calibration: the pixel threshold chosen on the selection split against the oracle threshold
   (best on the report split itself, a diagnostic only) and the IoU gap between the two.

A lever with fewer than two seeds on a fold is listed as incomplete and gets no verdict.
"""

import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "round3"
BASELINE = "baseline"
METRICS = {  # column name -> how to read it from metrics.json
    "pixel IoU": lambda m: m["pixel"]["headline"]["iou"],
    "F1@0.25": lambda m: m["building"]["f1_sn7"],
    "F1@0.5": lambda m: m["building"]["f1"],
    "SCOT": lambda m: m["scot"]["scot"] if m.get("scot") else float("nan"),
}
SAME_MAPS = {"track_auto", "match", "refine"}  # evaluation-only trackers: pixel maps = baseline's


def load_runs(root: Path = ROOT) -> dict[str, dict[int, list[dict]]]:
    """{lever: {fold: [metrics.json of each seed]}} from the published runs."""
    runs: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.glob("*/fold*_seed*/metrics.json")):
        fold = int(path.parent.name.split("_")[0].removeprefix("fold"))
        runs[path.parent.parent.name][fold].append(json.loads(path.read_text()))
    return runs


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and half-range."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def verdict(lever: tuple[float, float], base: tuple[float, float]) -> str:
    """'+' gain, '-' loss, '=' neither, by the issue's rule (beyond each of the two spreads)."""
    diff, bar = lever[0] - base[0], max(lever[1], base[1])
    return "+" if diff > bar else "-" if -diff > bar else "="


def reading_table(runs) -> str:
    """Markdown: mean ± half-range per lever, fold and metric, with the verdict against baseline."""
    head = "| lever | fold | seeds | " + " | ".join(METRICS) + " | verdict |"
    lines = [head, "|" + "---|" * (len(METRICS) + 4)]
    for lever in [BASELINE, *sorted(k for k in runs if k != BASELINE)]:
        for fold in sorted(runs[lever]):
            seeds, base = runs[lever][fold], runs[BASELINE].get(fold, [])
            row = f"| {lever} | {fold} | {len(seeds)} | "
            if len(seeds) < 2:
                lines.append(row + "incomplete | " * len(METRICS) + " |")
                continue
            cells, marks = [], []
            for name, read in METRICS.items():
                m = spread([read(s) for s in seeds])
                same_map = name == "pixel IoU" and lever in SAME_MAPS
                if lever == BASELINE or len(base) < 2 or same_map:
                    mark = ""
                else:
                    mark = verdict(m, spread([read(s) for s in base]))
                    marks.append(f"{name} {mark}")
                cells.append(f"{m[0]:.3f} ± {m[1]:.3f}{' ' + mark if mark else ''}")
            gains = sum(mk.endswith("+") for mk in marks)
            losses = sum(mk.endswith("-") for mk in marks)
            note = "" if lever == BASELINE else f"{gains} gain(s), {losses} loss(es)"
            lines.append(row + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines)


def calibration_table(runs) -> str:
    """Markdown: selection vs oracle pixel threshold and IoU gap, per lever and fold."""
    lines = [
        "| lever | fold | selection thr (per seed) | oracle thr (per seed) | IoU gap, mean (max) |",
        "|---|---|---|---|---|",
    ]
    for lever in [BASELINE, *sorted(k for k in runs if k not in (BASELINE, *SAME_MAPS))]:
        for fold in sorted(runs[lever]):
            seeds = runs[lever][fold]
            sel = [s["thresholds"]["pixel"] for s in seeds]
            ora = [s["pixel"]["oracle"]["threshold"] for s in seeds]
            gaps = [s["pixel"]["oracle"]["iou"] - s["pixel"]["headline"]["iou"] for s in seeds]
            sel_txt, ora_txt = (", ".join(f"{t:.2f}" for t in ts) for ts in (sel, ora))
            gap_txt = f"{sum(gaps) / len(gaps):.3f} ({max(gaps):.3f})"
            lines.append(f"| {lever} | {fold} | {sel_txt} | {ora_txt} | {gap_txt} |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs = load_runs()
    print(reading_table(runs))
    print()
    print(calibration_table(runs))
