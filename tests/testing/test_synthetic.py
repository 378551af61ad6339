"""The synthetic SN7 generator (sn7.testing.synthetic) as a time series: building ids persist across
months and buildings appear mid-stack, as in labels_match, so SCOT can be tested on it."""

from __future__ import annotations

import pytest

from sn7.data.footprints import load_footprints
from sn7.data.layout import discover_images
from sn7.data.raster_io import raster_info
from sn7.metrics.scot import scot_aoi
from sn7.testing.synthetic import make_every_case_root, make_sn7_root


def test_ids_persist_and_new_buildings_appear(tmp_path):
    root = make_sn7_root(tmp_path, aois=1, months=3, size=(64, 64), n_buildings=6)
    tiles = discover_images(tmp_path, label_source="labels_match")
    assert [t.stem[15:22] for t in tiles] == ["2018_01", "2018_02", "2018_03"]
    months = []
    for tile in tiles:
        found = load_footprints(tile.labels, "geo", raster_info(tile.image), with_ids=True)
        months.append((found.ids, found.geoms))
    # ceil(6 * m / 3) buildings in month m = 1, 2, 3: a growing prefix, Id = index
    assert [ids for ids, _ in months] == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]
    first = dict(zip(*months[0], strict=True))
    last = dict(zip(*months[-1], strict=True))
    for i, geom in first.items():  # a building keeps its footprint along with its Id
        assert geom.symmetric_difference(last[i]).area < 1e-6
    expected = next(iter(root.tiles.values())).buildings
    for geom, building in zip(months[0][1], expected, strict=True):  # the first month's tile
        assert geom.symmetric_difference(building).area < 1e-6

    # truth against itself: 2 + 2 new buildings found on time (change TP 4), no mismatch
    r = scot_aoi(months, months)
    assert (r.change_tp, r.change_fp, r.change_fn, r.mismatches) == (4, 0, 0, 0)
    assert r.scot == 1.0


def test_every_case_root_puts_the_special_cases_on_the_last_months(tmp_path):
    root = make_every_case_root(tmp_path, aois=1, months=4, size=(64, 64), empty_month=True)
    by_month = {t.month: t for t in root.tiles.values()}
    assert list(by_month) == ["2018_01", "2018_02", "2018_03", "2018_04"]
    assert [m for m, t in by_month.items() if not t.buildings] == ["2018_02"]  # empty
    udm_rasters = {t.date: t.udm_raster for t in discover_images(tmp_path)}
    assert [d for d, udm in udm_rasters.items() if udm is not None] == ["2018-03"]
    assert (by_month["2018_03"].mask == 255).any()  # the alpha = 0 strip (and the UDM raster)
    assert (by_month["2018_04"].mask == 255).any()  # the cloud
    assert not (by_month["2018_01"].mask == 255).any()  # clear
    with pytest.raises(ValueError, match="no clear month"):
        make_every_case_root(tmp_path / "short", months=3, empty_month=True)
