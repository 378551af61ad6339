"""sn7.viz.series_table gathers series runs into one table: a row per AOI and a mean row."""

from __future__ import annotations

import json
from pathlib import Path

from sn7.viz.series_table import main


def _run(folder: Path, degrade: str, mode: str, scot: float, chosen: str | None = None) -> None:
    r = {"scot": scot, "tracking": 0.9, "change": 0.5, "change_tp": 3, "change_fp": 1,
         "change_fn": 2, "mismatches": 0, "seconds": 1.5}  # fmt: skip
    folder.mkdir(parents=True)
    metrics = {
        "degrade": {"name": degrade},
        "track": {"mode": mode},
        "track_chosen": chosen,
        "footprints": {"threshold": 0.5},
        "per_aoi": {"L15-0001E-x": r, "L15-0002E-y": {**r, "scot": scot / 2}},
        "mean": {**r, "scot": 0.75 * scot},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_a_row_per_aoi_and_a_mean_per_run(tmp_path, capsys):
    _run(tmp_path / "sweep" / "0_mild_winner", "mild", "winner", 0.8)
    _run(tmp_path / "sweep" / "1_none_match", "none", "match", 1.0)
    _run(tmp_path / "auto", "mild", "winner", 0.6, chosen="chosen on X")
    out = tmp_path / "table.md"
    assert main([str(tmp_path / "sweep"), str(tmp_path / "auto"), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 + 3 * 3
    assert lines[2].startswith("| mild | auto: winner @ 0.50 | L15-0001E | 0.6000")
    assert "| none | match @ 0.50 | **mean** | 0.7500 |" in out.read_text()
    assert main([str(tmp_path / "nothing")]) == 1
    assert "sn7 error" in capsys.readouterr().err
