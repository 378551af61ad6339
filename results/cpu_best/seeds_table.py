"""The cpu_best re-publication's table: one row per fold and seed, then mean ± half-range per fold.

    python results/cpu_best/seeds_table.py > /tmp/seeds.md

Reads results/cpu_best/fold<F>_seed<S>/metrics.json (published by `python train.py
experiment=cpu_best split.fold=F seed=S`) and the train_summary.json copied beside it (steps,
minutes, speed_fit's choice). Report AOIs; checkpoint and thresholds chosen on the selection split.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ablations"))
from round3_reading import METRICS, spread  # noqa: E402  (the grid's metrics and spread)


def scot_parts(m: dict) -> str:
    """SCOT with its tracking / change terms."""
    s = m.get("scot")
    return f"{s['scot']:.3f} ({s['track_score']:.3f} / {s['change_score']:.3f})" if s else "—"


def speed_fit_choice(fit: dict | None) -> str:
    """'recipe (2.80 s/step)' or the fallback's overrides; '—' where speed_fit did not run."""
    if not fit:
        return "—"
    chosen = ", ".join(f"{k}={v}" for k, v in fit["chosen"].items()) or "recipe"
    timed = next((m for m in fit["measured"] if m["overrides"] == fit["chosen"]), None)
    return f"{chosen} ({timed['s_per_step']:.2f} s/step)" if timed else chosen


def main() -> None:
    print("| fold | report AOI | seed | pixel IoU (thr) | oracle IoU | F1@0.25 | F1@0.5 | "
          "SCOT (tracking / change) | steps | s | speed_fit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    by_fold: dict[int, list[tuple[int, dict, dict]]] = defaultdict(list)
    for path in sorted(HERE.glob("fold*_seed*/metrics.json")):
        fold, seed = (int(x) for x in path.parent.name.removeprefix("fold").split("_seed"))
        summary = json.loads((path.parent / "train_summary.json").read_text())
        by_fold[fold].append((seed, json.loads(path.read_text()), summary))
    for fold, runs in sorted(by_fold.items()):
        for seed, m, summary in runs:
            cells = [
                fold, m["reported_on"]["aois"][0][:15], seed,
                f"{m['pixel']['headline']['iou']:.3f} ({m['thresholds']['pixel']:.2f})",
                f"{m['pixel']['oracle']['iou']:.3f}",
                f"{m['building']['f1_sn7']:.3f}", f"{m['building']['f1']:.3f}", scot_parts(m),
                summary["steps"], f"{60 * summary['metrics']['train/minutes']:.0f}",
                speed_fit_choice(summary.get("speed_fit")),
            ]  # fmt: skip
            print("| " + " | ".join(map(str, cells)) + " |")
        if len(runs) < 2:
            continue
        metrics = [m for _, m, _ in runs]
        means = (spread([read(m) for m in metrics]) for read in METRICS.values())
        cells = [f"{a:.3f} ± {b:.3f}" for a, b in means]
        print(f"| **{fold}** |  | mean ± half-range ({len(runs)} seeds) | **{cells[0]}** |  | "
              f"**{cells[1]}** | **{cells[2]}** | **{cells[3]}** |  |  |  |")  # fmt: skip


if __name__ == "__main__":
    main()
