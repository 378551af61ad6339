"""The series harness (series.py, sn7/series.py) on tiny hand-made label series.

A series is <root>/<AOI>/labels_match/*.geojson (EPSG:3857, persistent `Id`) + grid.json: a
64 x 64 px grid of 1 m pixels whose top-left corner is (0, 64), so pixel (col, row) is the point
(col, 64 - row). Four 6 x 6 px buildings stand from the first month; building 5 appears in the
third month. Truth rendered as input and tracked by track=match is found exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sn7.data.truth_rasters as truth_rasters
from sn7.data.label_series import discover_label_series
from sn7.errors import ConfigError, DataError
from sn7.evaluation.degrade import Degradation
from sn7.evaluation.series import id_rasters
from sn7.series import degradation_named, series

REPO = Path(__file__).resolve().parents[1]
LABEL_SERIES = REPO.parent / "shared" / "sn7_label_series"
AOI = "L15-0000E-0000N_0000_0000_13"
CORNERS = {1: (4, 4), 2: (20, 4), 3: (4, 30), 4: (40, 40), 5: (30, 12)}  # id -> (col, row)
NEW_ID, NEW_MONTH = 5, 2


def _feature(building_id: int) -> dict:
    c, r = CORNERS[building_id]
    ring = [(c, r), (c + 6, r), (c + 6, r + 6), (c, r + 6), (c, r)]
    return {
        "type": "Feature",
        "properties": {"Id": building_id, "area": 36.0, "iou_score": 1.0},
        "geometry": {"type": "Polygon", "coordinates": [[[x, 64 - y] for x, y in ring]]},
    }


def write_series(root: Path, months=("2018_01", "2018_02", "2018_03", "2018_04")) -> Path:
    """A label-series root of one AOI; building NEW_ID stands from months[NEW_MONTH] on."""
    aoi = root / AOI
    (aoi / "labels_match").mkdir(parents=True)
    grid = {"crs": "EPSG:3857", "width": 64, "height": 64, "transform": [1, 0, 0, 0, -1, 64]}
    (aoi / "grid.json").write_text(json.dumps(grid))
    for t, month in enumerate(months):
        ids = [1, 2, 3, 4] + ([NEW_ID] if t >= NEW_MONTH else [])
        doc = {
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
            "features": [_feature(i) for i in ids],
        }
        path = aoi / "labels_match" / f"global_monthly_{month}_mosaic_{AOI}_Buildings.geojson"
        path.write_text(json.dumps(doc))
    return root


@pytest.fixture
def run_series(compose_config, tmp_path):
    """run_series(root, *overrides) -> metrics; outputs in tmp_path/run, cache in tmp_path/cache."""

    def run(root: Path, *overrides: str) -> dict:
        paths = [f"paths.run_dir={tmp_path / 'run'}", f"series.cache_dir={tmp_path / 'cache'}"]
        return series(compose_config("series", [f"data.root={root}", *paths, *overrides]))

    return run


def test_truth_tracked_by_match_scores_one(tmp_path, run_series):
    metrics = run_series(write_series(tmp_path / "root"), "degrade=none", "track=match")
    m = metrics["per_aoi"][AOI]
    assert (m["scot"], m["tracking"], m["change"]) == (1.0, 1.0, 1.0)
    assert (m["change_tp"], m["change_fp"], m["change_fn"], m["mismatches"]) == (1, 0, 0, 0)
    assert [p["change_tp"] for p in m["per_month"]] == [0, 0, 1, 0]
    assert m["n_new"] == 1 and m["missing_months"] == []
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["mean"]["scot"] == 1.0
    md = (run / "metrics.md").read_text()
    assert "degrade=none" in md and "mode=match" in md and "seed=0" in md and AOI in md
    assert (run / "change_maps" / f"{AOI}.png").is_file()


def test_missed_new_building_is_a_change_fn(tmp_path, run_series):
    root = write_series(tmp_path / "root")
    # the seed under which `missed` (one id of five) hides the new building
    (s,) = discover_label_series(root)
    ids, true_ids = id_rasters([truth_rasters.render_month(m.path, s.info) for m in s.months])
    missed = Degradation.from_config({"steps": [{"kind": "missed", "share": 0.2}]})
    new_index = true_ids.index(NEW_ID) + 1
    seed = next(k for k in range(100) if not (missed.apply(ids, k, AOI)[0] == new_index).any())
    metrics = run_series(root, "degrade=missed", "degrade.steps=[{kind:missed,share:0.2}]",
                         "track=match", f"series.seed={seed}")  # fmt: skip
    m = metrics["per_aoi"][AOI]
    assert (m["change_tp"], m["change_fp"], m["change_fn"]) == (0, 0, 1)
    assert [p["change_fn"] for p in m["per_month"]] == [0, 0, 1, 0]
    assert m["change"] == 0.0 and m["scot"] == 0.0
    assert m["tracking"] == pytest.approx(16 / 17)  # 16 matches, 2 of 18 truths missed: FN 2


def test_a_missing_month_is_a_gap_the_tracker_does_not_see(tmp_path, run_series):
    root = write_series(tmp_path / "root", months=("2018_01", "2018_02", "2018_04", "2018_05"))
    m = run_series(root, "track=match")["per_aoi"][AOI]
    assert m["months"] == ["2018-01", "2018-02", "2018-04", "2018-05"]
    assert m["missing_months"] == ["2018-03"]
    assert m["scot"] == 1.0 and [p["change_tp"] for p in m["per_month"]] == [0, 0, 1, 0]
    assert "1 missing" in (tmp_path / "run" / "metrics.md").read_text()


def test_series_months_and_aois_choose(tmp_path, run_series):
    root = write_series(tmp_path / "root")
    m = run_series(root, "track=match", "series.months=2", f"series.aois=[{AOI}]")
    assert m["per_aoi"][AOI]["months"] == ["2018-01", "2018-02"]
    m = run_series(root, "track=match", "series.months=[2018-02,2018_04]")
    assert m["per_aoi"][AOI]["months"] == ["2018-02", "2018-04"]


def test_the_rendered_truth_is_cached(tmp_path, run_series, monkeypatch):
    root = write_series(tmp_path / "root")
    calls = []
    render = truth_rasters.render_month
    monkeypatch.setattr(truth_rasters, "render_month", lambda *a: calls.append(a) or render(*a))
    first = run_series(root, "track=match")
    assert len(calls) == 4 and len(list((tmp_path / "cache").rglob("*.npz"))) == 4
    second = run_series(root, "track=aggregate", "degrade=mild")  # another tracker, input
    assert len(calls) == 4  # ...read from the cache, nothing rendered again
    assert first["per_aoi"][AOI]["n_new"] == second["per_aoi"][AOI]["n_new"] == 1
    label = next((root / AOI / "labels_match").glob("*2018_03*"))
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the label file changed
    run_series(root, "track=match")
    assert len(calls) == 5  # only that month is rendered again


def test_cached_truth_equals_rendered_truth(tmp_path):
    root = write_series(tmp_path / "root")
    (s,) = discover_label_series(root)
    month = s.months[NEW_MONTH]
    fresh = truth_rasters.truth_month(month.path, s.info, tmp_path / "c")
    cached = truth_rasters.truth_month(month.path, s.info, tmp_path / "c")
    assert cached.ids == fresh.ids == [1, 2, 3, 4, 5]
    assert all(a.equals(b) for a, b in zip(cached.geoms, fresh.geoms, strict=True))
    assert np.array_equal(cached.raster, fresh.raster) and cached.raster.dtype == np.uint32
    assert (cached.raster == 5).sum() == 36 and cached.raster[12, 30] == 5  # row 12, col 30


def test_bad_roots_and_grids_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no AOI folder with monthly labels_match"):
        discover_label_series(tmp_path)
    root = write_series(tmp_path / "root")
    (root / AOI / "grid.json").write_text('{"crs": "EPSG:3857", "width": 64}')
    with pytest.raises(DataError, match=r"grid\.json: not a usable grid"):
        discover_label_series(root)


def _cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "series.py", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_cli_root_without_labels_match_is_one_error_line(tmp_path):
    (tmp_path / "root" / "some_aoi" / "labels").mkdir(parents=True)
    result = _cli(f"data.root={tmp_path / 'root'}", f"hydra.run.dir={tmp_path / 'run'}",
                  f"series.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sn7 error: {tmp_path / 'root'}: no AOI folder")


def test_cli_multirun_sweeps_degradations(tmp_path):
    root = write_series(tmp_path / "root")
    result = _cli("-m", f"data.root={root}", "degrade=none,mild", "track=match",
                  f"paths.output_dir={tmp_path / 'out'}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = sorted((tmp_path / "out" / "series" / "multirun").glob("*/*/*/metrics.json"))
    assert [p.parent.name for p in found] == ["0_none_match", "1_mild_match"]
    assert [json.loads(p.read_text())["degrade"]["name"] for p in found] == ["none", "mild"]
    assert len(list((tmp_path / "out" / "series_cache").rglob("*.npz"))) == 4  # rendered once
    assert "series: degrade=mild" in result.stdout


@pytest.mark.shared
def test_real_label_series_with_its_gap(tmp_path, run_series):
    if not LABEL_SERIES.is_dir():
        pytest.skip(f"SN7 label series not found at {LABEL_SERIES}")
    gap_aoi = "L15-1138E-1216N_4553_3325_13"  # 2018_07 is missing
    m = run_series(LABEL_SERIES, "track=match", f"series.aois=[{gap_aoi}]",
                   "series.months=[2018-06,2018-08]", "series.change_maps=false")  # fmt: skip
    m = m["per_aoi"][gap_aoi]
    assert m["missing_months"] == ["2018-07"] and m["n_new"] > 0
    assert m["scot"] > 0.8


# --- search=track and track=auto --------------------------------------------------------------


def test_search_stores_the_best_tracker_and_track_auto_uses_it(tmp_path, run_series):
    """On truth, track=none renumbers every month (tracking mismatches, change 0) while match
    is exact: the search stores match with where it was chosen; track=auto then runs match at the
    stored threshold and says where it came from."""
    root = write_series(tmp_path / "root")
    choice = tmp_path / "track.json"
    result = run_series(
        root, "search=track", "search.degradations=[none]", "search.thresholds=[0.5,0.6]",
        "search.tracks=[{mode:none},{mode:match}]", f"search.out={choice}",
    )  # fmt: skip
    stored = json.loads(choice.read_text())
    assert stored["track"]["mode"] == "match" and stored["threshold"] == 0.5  # ties: the first
    assert stored["selected_on"]["aois"] == [AOI] and stored["selected_on"]["degradations"] == [
        "none"
    ]
    assert result["mean"]["scot"] == stored["score"] == 1.0
    assert len(stored["candidates"]) == 4
    assert (tmp_path / "run" / "search.md").is_file()

    metrics = run_series(root, "track=auto", f"track.file={choice}", "series.threshold=0.9")
    assert metrics["track"]["mode"] == "match" and metrics["footprints"]["threshold"] == 0.5
    assert AOI in metrics["track_chosen"] and "none" in metrics["track_chosen"]
    assert metrics["mean"]["scot"] == 1.0


def test_track_auto_without_a_choice_is_one_error_line(tmp_path, run_series):
    from sn7.errors import ConfigError

    with pytest.raises(ConfigError, match="search=track"):
        run_series(write_series(tmp_path / "root"), "track=auto", f"track.file={tmp_path}/x.json")


def test_search_on_a_network_preset_stores_its_reference_threshold(tmp_path, run_series):
    """Degradations that imitate a model (reference_threshold) make the choice relative: a model
    whose selection split chose half the pixel threshold is cut at half the building threshold."""
    from sn7.evaluation.track_search import search
    from sn7.inference.track_choice import read_choice

    root = write_series(tmp_path / "root")
    choice = tmp_path / "track.json"
    run_series(
        root, "search=track", "search.degradations=[network]", "search.thresholds=[0.2]",
        "search.tracks=[{mode:match}]", f"search.out={choice}",
    )  # fmt: skip
    stored = read_choice(choice)
    network = degradation_named("network")
    assert stored.reference_threshold == network.reference_threshold is not None
    ref = stored.reference_threshold
    assert stored.building_threshold(ref) == pytest.approx(0.2)
    assert stored.building_threshold(ref / 2) == pytest.approx(0.1)
    assert stored.building_threshold(ref * 100) == 0.99  # clipped into (0, 1)
    stored.reference_threshold = None
    assert stored.building_threshold(0.3) is None  # absolute: the selection split decides
    with pytest.raises(ConfigError, match="different pixel thresholds"):
        search([], [network, degradation_named("mild")], [], None, 4, 0, tmp_path, root)
