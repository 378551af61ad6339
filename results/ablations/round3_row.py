"""Append a finished round-3 run's row to results/ablations/round3.md (numbers from its files).

    python results/ablations/round3_row.py LEVER FOLD SEED

Reads the run's published metrics.json (results/ablations/round3/LEVER/foldF_seedS/) and its
outputs/round3/LEVER/foldF_seedS/train_summary.json (copied beside the metrics).
"""

import json
import os
import sys
from pathlib import Path

from sn7.utils.hardware import cpu_flags, cpu_model, has_native_bf16

lever, fold, seed = sys.argv[1], sys.argv[2], sys.argv[3]
repo = Path(__file__).resolve().parents[2]
pub = repo / f"results/ablations/round3/{lever}/fold{fold}_seed{seed}"
run = repo / f"outputs/round3/{lever}/fold{fold}_seed{seed}"
m = json.loads((pub / "metrics.json").read_text())
summary = json.loads((run / "train_summary.json").read_text())
(pub / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
b, p = m["building"], m["pixel"]
scot = m["scot"]["scot"] if m["scot"] else float("nan")
minutes = summary["metrics"]["train/minutes"]
flags = cpu_flags()
kind = "AMX" if "amx_bf16" in flags else "avx512_bf16" if has_native_bf16() else "AVX2, fp32"
machine = f"{cpu_model()} ({kind}), {os.cpu_count()} cores"
cells = [
    lever, fold, seed,
    f"{p['headline']['iou']:.3f} ({m['thresholds']['pixel']:.2f})",
    f"{p['oracle']['iou']:.3f}", f"{b['f1_sn7']:.3f}", f"{b['f1']:.3f}", f"{scot:.3f}",
    summary["steps"], f"{60 * minutes:.0f}", machine,
]  # fmt: skip
row = "| " + " | ".join(map(str, cells)) + " |"
doc = repo / "results/ablations/round3.md"
doc.write_text(doc.read_text().rstrip("\n") + "\n" + row + "\n")
print(row)
