"""One markdown table from many evaluated training runs (an ablation grid or a multirun sweep).

    python -m sn7.viz.ablation_table outputs/ablation/fold0 [more run dirs or sweep dirs] \
        --out results/cpu_best/ablations.md

A run dir is any folder holding `evaluate/metrics.json` (written by evaluate_after_training);
sweep dirs are searched one level down. Rows keep the order given, sweep subfolders sorted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from sn7.errors import SN7Error
from sn7.utils.atomic import write_text_atomic
from sn7.utils.markdown import markdown_table

IGNORED_OVERRIDES = (
    "data.root",
    "callbacks.",
    "trainer.enable_progress_bar",
    "evaluate_after_training",
    "eval_overrides",
    "paths.",
    "hydra.",
    "experiment",
    "split.",
    "trainer.max_epochs",
)


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for path in paths:
        if (path / "evaluate" / "metrics.json").is_file():
            runs.append(path)
        else:
            found = sorted(p.parent.parent for p in path.glob("*/evaluate/metrics.json"))
            if not found:
                raise SN7Error(f"{path}: no evaluate/metrics.json in it or one level down")
            runs.extend(found)
    return runs


def knob(run: Path) -> str:
    """What this row changed: the ablation choice, else the run's own command-line overrides."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    for o in overrides:
        if o.startswith("ablation="):
            return o.split("=", 1)[1]
    kept = [o for o in overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)]
    return " ".join(kept) or "(reference)"


def training_minutes(run: Path) -> str:
    summary = run / "train_summary.json"
    if summary.is_file():
        return f"{json.loads(summary.read_text())['metrics']['train/minutes']:.1f}"
    # runs from before train_summary.json: wall time between the first and last logged train step
    events = sorted((run / "tensorboard").glob("**/events.out.tfevents.*"))
    if events:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/loss" in acc.Tags()["scalars"]:
            steps = acc.Scalars("train/loss")
            return f"≈{(steps[-1].wall_time - steps[0].wall_time) / 60:.1f}"
    return "?"


def row(run: Path) -> list[str]:
    m = json.loads((run / "evaluate" / "metrics.json").read_text())
    # metrics of sn7 before the selection split carry only the best threshold of the split itself
    head = m["pixel"].get("headline") or m["pixel"]["best"]
    chosen = "selection" if "headline" in m["pixel"] else "reported AOI"
    b, scot = m["building"], m.get("scot") or {}
    return [
        run.name,
        knob(run),
        ", ".join(a.split("_")[0] for a in m["aois"]),
        f"{head['threshold']:.2f} ({chosen})",
        *(f"{head[k]:.3f}" for k in ("iou", "precision", "recall", "f1")),
        f"{b['f1_sn7']:.3f}" if "f1_sn7" in b else "–",
        f"{b['f1']:.3f}",
        f"{scot['scot']:.3f}" if scot else "–",
        training_minutes(run),
    ]


COLUMNS = [
    "run",
    "change",
    "report AOI",
    "threshold (chosen on)",
    "IoU",
    "P",
    "R",
    "F1",
    "bldg F1@0.25",
    "bldg F1@0.5",
    "SCOT",
    "train min",
]


def ablation_table(runs: list[Path]) -> str:
    return markdown_table(COLUMNS, [row(r) for r in runs]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs or sweep dirs")
    parser.add_argument("--out", type=Path, help="write the table here (default: print it)")
    args = parser.parse_args(argv)
    try:
        table = ablation_table(find_runs(args.paths))
    except SN7Error as exc:
        sys.exit(f"sn7 error: {exc}")
    if args.out:
        write_text_atomic(args.out, table)
    print(table, end="")


if __name__ == "__main__":
    main()
