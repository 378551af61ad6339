"""sn7.viz.strength_plot: SCOT against degradation strength, a line per tracker, a panel per AOI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sn7.viz.strength_plot import curves, main


def _run(folder: Path, strength: float, mode: str, scot: float, degrade: str = "network") -> None:
    folder.mkdir(parents=True)
    r = {"scot": scot}
    node = {"name": degrade, **({} if strength == 1.0 else {"strength": strength})}
    metrics = {"degrade": node, "track": {"mode": mode}, "footprints": {"threshold": 0.2},
               "per_aoi": {"L15-0001E-x": r, "L15-0002E-y": {"scot": scot / 2}},
               "mean": {"scot": 0.75 * scot}}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_points_are_sorted_by_strength_per_tracker_and_panel(tmp_path, capsys):
    for k, (s, mode, scot) in enumerate([(1.0, "winner", 0.3), (0.0, "winner", 0.9),
                                          (0.5, "winner", 0.6), (0.0, "match", 1.0)]):  # fmt: skip
        _run(tmp_path / "sweep" / f"{k}_network_{mode}", s, mode, scot)
    name, data = curves(sorted((tmp_path / "sweep").iterdir()))
    assert name == "network"
    xs, ys = zip(*data["mean"]["winner @ 0.20"], strict=True)
    assert xs == (0.0, 0.5, 1.0) and ys == pytest.approx((0.675, 0.45, 0.225))
    assert data["L15-0002E"]["match @ 0.20"] == [(0.0, 0.5)]
    out = tmp_path / "strength.png"
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _run(tmp_path / "sweep" / "9_mild", 1.0, "winner", 0.5, degrade="mild")
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 1  # one degradation per plot
    assert "one degradation" in capsys.readouterr().err
