"""What loading the labels had to do (null geometries, repairs, polygons outside the tile) is
carried from the mask build through the cache index to prepare's summary."""

from __future__ import annotations

from shapely.geometry import Polygon, box

from sn7.data.layout import discover_images
from sn7.data.masks import RasterizeSettings, rasterize_tile
from sn7.data.prepared import label_repairs_text
from sn7.data.raster_io import raster_info
from sn7.prepare import prepare
from sn7.testing.synthetic import make_sn7_root, pixels_to_crs, write_feature_collection

BOW_TIE = Polygon([(10, 20), (22, 28), (22, 20), (10, 28)])  # self-intersecting: repaired


def _root_with_odd_labels(path):
    """Two 64 px tiles; the first one has 2 null geometries, a bow tie and a polygon outside."""
    make_sn7_root(path, aois=1, months=2, size=(64, 64), n_buildings=2, udm_geojson=False)
    tiles = discover_images(path)
    pixel = [box(2, 2, 8, 8), BOW_TIE, box(100, 100, 110, 110)]
    geoms = pixels_to_crs(pixel, raster_info(tiles[0].image).transform, "OGC:CRS84")
    write_feature_collection(tiles[0].labels, [None, *geoms, None])
    return tiles


def test_rasterize_tile_reports_the_label_repairs(tmp_path):
    odd, plain = _root_with_odd_labels(tmp_path)
    assert rasterize_tile(odd, RasterizeSettings()).label_repairs == {
        "n_null": 2,
        "n_repaired": 1,
        "n_outside": 1,
    }
    assert set(rasterize_tile(plain, RasterizeSettings()).label_repairs.values()) == {0}


def test_prepare_sums_them_and_prints_only_what_happened(tmp_path, prepare_cfg, capsys):
    _root_with_odd_labels(tmp_path / "root")
    cfg = prepare_cfg(tmp_path / "root", tmp_path / "work")
    prepared = prepare(cfg)
    assert prepared.label_repairs == {"n_null": 2, "n_repaired": 1, "n_outside": 1}
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "labels: 2 null or non-polygonal geometries skipped, 1 repaired (invalid, make_valid), "
        "1 outside the tile" in out
    )
    assert prepare(cfg).label_repairs == prepared.label_repairs  # the second run: from the index


def test_nothing_to_say_when_nothing_happened():
    assert label_repairs_text({"n_null": 0, "n_repaired": 0, "n_outside": 0}) == ""
    assert label_repairs_text({"n_outside": 3}) == "3 outside the tile"
